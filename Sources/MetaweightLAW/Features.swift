import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting

#if canImport(Glibc)
  import Glibc
#endif

/// What a LAW feature vector holds: f = [loss, entropy, density, label…], and therefore the size
/// of the action (θ_T, b).
public struct LAWFeatureSettings: Sendable, Equatable {
  /// Number of classes C.
  public var classes: Int
  /// How the label is encoded.
  public var labelEncoding: LAWLabelEncoding
  /// Which similarity the density uses.
  public var density: LAWDensity
  /// Whether each batch's weights are divided by their mean.
  public var normalizeWeights: Bool

  /// Creates the settings.
  public init(classes: Int, labelEncoding: LAWLabelEncoding, density: LAWDensity, normalizeWeights: Bool = false) {
    self.classes = classes
    self.labelEncoding = labelEncoding
    self.density = density
    self.normalizeWeights = normalizeWeights
  }

  /// F: 3 + C (one-hot label) or 4 (scalar label).
  public var featureCount: Int { 3 + (labelEncoding == .oneHot ? classes : 1) }
  /// F + 1: the action is θ_T ∈ R^F followed by the bias b.
  public var actionCount: Int { featureCount + 1 }
}

/// LAW's per-example features and weighting function (eq. 3 and 6 of the paper).
///
/// Within a batch of n examples with logits zᵢ, probabilities pᵢ and losses lᵢ:
/// - loss lᵢ, entropy Hᵢ = −Σ_c p_ic log p_ic and density
///   ρᵢ = (1/(n−1)) Σ_{j≠i} sim(zᵢ, zⱼ), sim = cosine (default) or dot product, ρ = 0 when n = 1,
///   are each standardised over the batch, (v − mean)/std with the population std
///   (a column with std < 1e-6 becomes 0);
/// - the label is one-hot (C columns of 0/1) or the scalar c/(C−1), not standardised.
/// The weight is K(f) = 1 + tanh(θ·f + b) ∈ (0, 2).
public enum LAWFeatures {
  /// Density ρᵢ of each row of `logits` [n × c] (see the type's documentation).
  /// Computed as ρᵢ = (ẑᵢ·Σⱼẑⱼ − ẑᵢ·ẑᵢ)/(n−1), which equals the mean of row i of the Gram matrix
  /// ẐẐᵀ without its diagonal (ẑ = z/‖z‖ for cosine, z for dot).
  public static func density(
    logits: UnsafePointer<Float>, n: Int, c: Int, kind: LAWDensity, out: UnsafeMutablePointer<Float>
  ) {
    if n <= 1 {
      for i in 0..<n { out[i] = 0 }
      return
    }
    var norm = [Double](repeating: 1, count: n)
    if kind == .cosine {
      for i in 0..<n {
        var s: Double = 0
        for j in 0..<c { s += Double(logits[i * c + j]) * Double(logits[i * c + j]) }
        let r = s.squareRoot()
        norm[i] = r > 0 ? 1 / r : 0
      }
    }
    var total = [Double](repeating: 0, count: c)
    for i in 0..<n {
      for j in 0..<c { total[j] += Double(logits[i * c + j]) * norm[i] }
    }
    for i in 0..<n {
      var dotTotal: Double = 0
      var self2: Double = 0
      for j in 0..<c {
        let v = Double(logits[i * c + j]) * norm[i]
        dotTotal += v * total[j]
        self2 += v * v
      }
      out[i] = Float((dotTotal - self2) / Double(n - 1))
    }
  }

  /// Standardises `v` [n] in place: (v − mean)/std, population std; all zeros when std < 1e-6.
  public static func standardize(_ v: UnsafeMutablePointer<Float>, n: Int) {
    guard n > 0 else { return }
    var mean: Double = 0
    for i in 0..<n { mean += Double(v[i]) }
    mean /= Double(n)
    var varSum: Double = 0
    for i in 0..<n {
      let d = Double(v[i]) - mean
      varSum += d * d
    }
    let std = (varSum / Double(n)).squareRoot()
    if !(std >= 1e-6) {
      for i in 0..<n { v[i] = 0 }
      return
    }
    let inv = 1 / std
    for i in 0..<n { v[i] = Float((Double(v[i]) - mean) * inv) }
  }

  /// Writes the features f [n × F] of a batch (row-major) into `out`.
  /// - Parameters:
  ///   - logits: [n × C]; probs: softmax of the logits [n × C]; losses: [n]; labels: [n] in 0..<C.
  ///   - scratch: at least 3n floats.
  public static func compute(
    settings: LAWFeatureSettings, logits: UnsafePointer<Float>, probs: UnsafePointer<Float>,
    losses: UnsafePointer<Float>, labels: UnsafePointer<Int32>, n: Int,
    out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>
  ) {
    let c = settings.classes
    let f = settings.featureCount
    let loss = scratch, ent = scratch + n, dens = scratch + 2 * n
    for i in 0..<n { loss[i] = losses[i] }
    CrossEntropy.entropy(probs: probs, n: n, c: c, out: ent)
    density(logits: logits, n: n, c: c, kind: settings.density, out: dens)
    standardize(loss, n: n)
    standardize(ent, n: n)
    standardize(dens, n: n)
    for i in 0..<n {
      let row = out + i * f
      row[0] = loss[i]
      row[1] = ent[i]
      row[2] = dens[i]
      let y = Int(labels[i])
      switch settings.labelEncoding {
      case .oneHot:
        for k in 0..<c { row[3 + k] = k == y ? 1 : 0 }
      case .scalar:
        row[3] = c > 1 ? Float(y) / Float(c - 1) : 0
      }
    }
  }

  /// K = 1 + tanh(θ·f + b) for each of `n` feature rows; `action` is [θ (F), b]. With
  /// `normalize`, K is then divided by its batch mean.
  public static func weights(
    features: UnsafePointer<Float>, n: Int, featureCount f: Int, action: UnsafePointer<Float>,
    out: UnsafeMutablePointer<Float>, normalize: Bool = false
  ) {
    let b = action[f]
    var total: Double = 0
    for i in 0..<n {
      let row = features + i * f
      var s: Float = b
      for k in 0..<f { s += action[k] * row[k] }
      out[i] = 1 + tanhf(s)
      total += Double(out[i])
    }
    if normalize && total > 0 {
      let scale = Float(Double(n) / total)
      for i in 0..<n { out[i] *= scale }
    }
  }
}

/// The state fed to the actor and critic, without the stage embedding: s_T = [e_T, ℓ̄, ā].
///
/// ℓ̄ is an EMA over stages of the target network's mean training loss divided by ln C (so 1 is
/// the loss of a uniform prediction, whatever the number of classes); ā is an EMA over stages of
/// its validation accuracy. Both start from the untrained network: ℓ̄₀ = 1, ā₀ = its validation
/// accuracy; after stage T, x ← β·x + (1 − β)·(value measured over / at the end of stage T).
public struct LAWStageState: Sendable, Equatable {
  /// Stage index T (0-based).
  public var stage: Int
  /// ℓ̄: smoothed, ln C-normalised training loss.
  public var lossSmooth: Float
  /// ā: smoothed validation accuracy.
  public var accSmooth: Float
  /// Creates a state.
  public init(stage: Int, lossSmooth: Float, accSmooth: Float) {
    self.stage = stage
    self.lossSmooth = lossSmooth
    self.accSmooth = accSmooth
  }

  /// The state after a stage whose mean training loss was `meanLoss` and whose end validation
  /// accuracy is `accuracy`, with EMA factor `beta` and `classes` classes.
  public func advanced(meanLoss: Double, accuracy: Double, beta: Float, classes: Int) -> LAWStageState {
    let norm = log(Double(max(classes, 2)))
    let l = Float(meanLoss / norm)
    let lossValue = l.isFinite ? l : lossSmooth
    return LAWStageState(
      stage: stage + 1, lossSmooth: beta * lossSmooth + (1 - beta) * lossValue,
      accSmooth: beta * accSmooth + (1 - beta) * Float(accuracy))
  }
}
