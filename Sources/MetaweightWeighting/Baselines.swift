import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining

#if canImport(Glibc)
import Glibc
#endif

/// The baselines that change the loss itself (focal loss, soft and hard bootstrapping): each
/// writes dL/dz of the batch's mean loss directly and back-propagates it. Their per-example
/// weights are all 1.
public final class LossBaseline: WeightingMethod, @unchecked Sendable {
  /// The method (`.focal`, `.bootstrapSoft`, `.bootstrapHard`) and its options.
  public let config: WeightingConfig
  /// Per-example weights of the last step (all 1).
  public private(set) var weights = FloatBuffer(count: 0)
  /// The section's generator (saved for the checkpoint layout; nothing is drawn).
  public var rng: RNG

  /// The baseline of `config` for `network`.
  /// - Throws: `MetaweightError.invalidArgument` for invalid options.
  public init(config: WeightingConfig, network: Network, seed: UInt64) throws {
    try WeightingSection.check(config, is: [.focal, .bootstrapSoft, .bootstrapHard], network: network)
    self.config = config
    rng = WeightingSection.seeds(config: config, seed: seed).rng
  }

  /// See `StepWeighting`.
  public func reserve(trainer: Trainer, n: Int, m: Int) {
    trainer.reserve(batch: n)
    if weights.count < n { weights = FloatBuffer(count: n) }
  }

  /// See `StepWeighting`.
  public func step(
    trainer: Trainer, x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>,
    xMeta: UnsafePointer<Float>?, m: Int, labelsMeta: UnsafePointer<Int64>?
  ) throws -> StepResult {
    var result = StepResult()
    (result.loss, result.accuracy) = try trainer.forwardCheckedTrainBatch(x: x, n: n, labels: labels)
    let c = trainer.network.classes
    let cfg = config
    let w = weights.pointer
    let invN = 1 / Float(n)
    let lg = trainer.dlogits.pointer
    for i in 0..<n {
      let t = Int(trainer.labels32[i])
      let p = trainer.probs.pointer + i * c
      w[i] = 1
      switch cfg.method {
      case .focal:
        // FL = −(1−p_t)^γ log p_t;  dFL/dz_k = (y_k − p_k)[γ(1−p_t)^{γ−1} p_t log p_t − (1−p_t)^γ].
        let ptv = max(p[t], 1e-12)
        let gam = cfg.focalGamma
        let one = max(1 - ptv, 0)
        let a = (gam > 0 ? gam * powf(one, gam - 1) * ptv * logf(ptv) : 0) - powf(one, gam)
        for k in 0..<c { lg[i * c + k] = ((k == t ? 1 : 0) - p[k]) * a * invN }
      case .bootstrapSoft:
        // L = −Σ_k (β y_k + (1−β) q_k) log q_k = β CE + (1−β) H(q);
        // dL/dz_k = β (q_k − y_k) − (1−β) q_k (log q_k + H).
        var h: Float = 0
        for k in 0..<c where p[k] > 0 { h -= p[k] * logf(p[k]) }
        let b = cfg.bootstrapBeta
        for k in 0..<c {
          let lq = p[k] > 0 ? logf(p[k]) : 0
          lg[i * c + k] = (b * (p[k] - (k == t ? 1 : 0)) - (1 - b) * p[k] * (lq + h)) * invN
        }
      default:
        // Hard: target β y + (1−β) onehot(argmax q) (the argmax is not differentiated).
        var best = 0
        for k in 1..<max(c, 1) where p[k] > p[best] { best = k }
        let b = cfg.bootstrapBeta
        for k in 0..<c {
          let target = b * (k == t ? 1 : 0) + (1 - b) * (k == best ? 1 : 0)
          lg[i * c + k] = (p[k] - target) * invN
        }
      }
    }
    trainer.backwardLogits(UnsafePointer(lg))
    return result
  }

}

/// The baselines that weight examples from the train batch alone, the real step being on
/// Σᵢ wᵢ lᵢ / n:
/// - class-balanced (effective number, β) and inverse frequency: w = a per-class table
///   normalised to sum to C;
/// - hard mining: the ⌈fraction·n⌉ highest-loss examples weigh n/k, the rest 0;
/// - random: rectified Gaussian weights normalised to mean 1 (L2RW's random baseline);
/// - self-paced: examples with loss below λ = base·growth^⌊step/interval⌋ weigh 1, the rest 0.
public final class WeightBaseline: WeightingMethod, @unchecked Sendable {
  /// The method and its options.
  public let config: WeightingConfig
  /// Per-example weights of the last step (n).
  public private(set) var weights = FloatBuffer(count: 0)
  /// Per-class weights (class-balanced, inverse frequency; all 1 otherwise), summing to C.
  let classTable: [Float]
  /// Generator for the random-weights baseline.
  public var rng: RNG

  /// The baseline of `config` for `network`.
  /// - Throws: `MetaweightError.invalidArgument` for invalid options.
  public init(config: WeightingConfig, network: Network, seed: UInt64) throws {
    try WeightingSection.check(
      config, is: [.classBalanced, .inverseFrequency, .hardMining, .randomGaussian, .selfPaced], network: network)
    self.config = config
    rng = WeightingSection.seeds(config: config, seed: seed).rng
    // Class weights for class-balanced / inverse-frequency, normalised to sum to C.
    let c = network.classes
    var table = [Float](repeating: 1, count: c)
    if config.method == .classBalanced || config.method == .inverseFrequency {
      for k in 0..<c {
        let nk = Double(config.classCounts[k])
        let beta = Double(config.classBalancedBeta)
        table[k] = config.method == .classBalanced ? Float((1 - beta) / (1 - pow(beta, nk))) : Float(1 / nk)
      }
      let s = table.reduce(0, +)
      table = table.map { $0 * Float(c) / s }
    }
    classTable = table
  }

  /// See `StepWeighting`.
  public func reserve(trainer: Trainer, n: Int, m: Int) {
    trainer.reserve(batch: n)
    if weights.count < n { weights = FloatBuffer(count: n) }
  }

  /// See `StepWeighting`.
  public func step(
    trainer: Trainer, x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>,
    xMeta: UnsafePointer<Float>?, m: Int, labelsMeta: UnsafePointer<Int64>?
  ) throws -> StepResult {
    var result = StepResult()
    (result.loss, result.accuracy) = try trainer.forwardCheckedTrainBatch(x: x, n: n, labels: labels)
    let c = trainer.network.classes
    let cfg = config
    let w = weights.pointer
    let losses = trainer.losses
    switch cfg.method {
    case .classBalanced, .inverseFrequency:
      for i in 0..<n { w[i] = classTable[Int(trainer.labels32[i])] }
    case .hardMining:
      let k = max(1, Int((cfg.hardFraction * Float(n)).rounded(.up)))
      let order = (0..<n).sorted { losses[$0] > losses[$1] || (losses[$0] == losses[$1] && $0 < $1) }
      for i in 0..<n { w[i] = 0 }
      for j in 0..<min(k, n) { w[order[j]] = Float(n) / Float(k) }
    case .randomGaussian:
      var sum: Float = 0
      for i in 0..<n {
        w[i] = max(rng.normal(), 0)
        sum += w[i]
      }
      for i in 0..<n { w[i] = sum > 0 ? w[i] / sum * Float(n) : 0 }
    case .selfPaced:
      let growths = Float(trainer.stepCount / cfg.selfPacedInterval)
      let base = cfg.selfPacedThreshold > 0 ? cfg.selfPacedThreshold : 1.3 * logf(Float(c))
      let lambda = base * powf(cfg.selfPacedGrowth, growths)
      for i in 0..<n { w[i] = losses[i] < lambda ? 1 : 0 }
    default:
      for i in 0..<n { w[i] = 1 }
    }
    let invN = 1 / Float(n)
    let coefficients = trainer.coefficients
    for i in 0..<n { coefficients[i] = w[i] * invN }
    trainer.backwardWeighted(coefficients: coefficients.pointer)
    return result
  }

}
