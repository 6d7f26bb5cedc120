import MetaweightTensor
import MetaweightLayers
import MetaweightOptim

/// Cheap statistics of one step that tell whether a weighting method still distinguishes examples
/// and whether training has collapsed. They cost O(n·C) on numbers the step already computed (the
/// batch's losses, probabilities and weights) and never change what the step does.
///
///     ess            = (Σᵢ wᵢ)² / (n Σᵢ wᵢ²)         1 = uniform weights, 1/n = one example
///     saturatedLow   = #{ V(ℓᵢ) < 0.05 } / n         MW-Net/GDW; else #{ wᵢ ≤ 0.01·mean(w) } / n
///     saturatedHigh  = #{ V(ℓᵢ) > 0.95 } / n         MW-Net/GDW (V's sigmoid output); else 0
///     majority       = maxₖ #{ argmax pᵢ = k } / n   1 = one class predicted for every input
///     labelMajority  = maxₖ #{ yᵢ = k } / n          the same for the batch's labels
///     correlation    = Pearson(ℓ, w) over the batch  < 0: high-loss examples weigh less
public struct StepDiagnostics: Sendable, Equatable {
  /// The weights' effective sample size relative to the batch, (Σw)²/(nΣw²) ∈ [0, 1]; 0 when
  /// every weight is 0.
  public var effectiveSampleSize: Double = .nan
  /// Fraction of the batch whose weight is saturated near 0 (see the type's summary).
  public var saturatedLow: Double = .nan
  /// Fraction of the batch whose weight-net output is saturated near 1 (MW-Net, GDW; else 0).
  public var saturatedHigh: Double = .nan
  /// Fraction of the batch predicted as the batch's most frequently predicted class.
  public var predictionMajority: Double = .nan
  /// Fraction of the batch carrying the batch's most frequent label.
  public var labelMajority: Double = .nan
  /// Pearson correlation of the examples' weights with their losses (NaN when either is constant).
  public var weightLossCorrelation: Double = .nan
  /// All statistics NaN (no step taken).
  public init() {}
}

extension Trainer {
  /// The diagnostics of the step just taken on the last train forward pass (its losses, probs and
  /// labels): `weights` are the per-example weights the step used (nil = uniform), `unit` the
  /// weight net's outputs V(ℓᵢ) ∈ (0, 1) when the method has one.
  public func stepDiagnostics(
    weights: UnsafePointer<Float>?, unit: UnsafePointer<Float>?, n: Int
  ) -> StepDiagnostics {
    var d = StepDiagnostics()
    guard n > 0 else { return d }
    let c = network.classes
    let pr = probs.pointer, l = losses.pointer
    // Weights: effective sample size, saturation, correlation with the loss.
    var sw: Double = 0, sww: Double = 0
    for i in 0..<n {
      let w = Double(weights?[i] ?? 1)
      sw += w
      sww += w * w
    }
    d.effectiveSampleSize = sww > 0 ? min(1, sw * sw / (Double(n) * sww)) : 0
    var low = 0, high = 0
    if let u = unit {
      for i in 0..<n {
        if u[i] < 0.05 { low += 1 }
        if u[i] > 0.95 { high += 1 }
      }
    } else if let w = weights {
      let cut = 0.01 * sw / Double(n)
      for i in 0..<n where Double(w[i]) <= cut { low += 1 }
    }
    d.saturatedLow = Double(low) / Double(n)
    d.saturatedHigh = Double(high) / Double(n)
    if let w = weights {
      let mw = sw / Double(n)
      var ml: Double = 0
      for i in 0..<n { ml += Double(l[i]) }
      ml /= Double(n)
      var cov: Double = 0, vw: Double = 0, vl: Double = 0
      for i in 0..<n {
        let a = Double(w[i]) - mw, b = Double(l[i]) - ml
        cov += a * b
        vw += a * a
        vl += b * b
      }
      // Relative thresholds: float32 weights that differ only by rounding count as constant.
      let constW = vw <= 1e-12 * max(sww, .leastNormalMagnitude)
      d.weightLossCorrelation = constW || vl <= 0 ? .nan : max(-1, min(1, cov / (vw * vl).squareRoot()))
    }
    // Predictions and labels: the share of the batch in the most frequent class of each.
    var predicted = [Int32](repeating: 0, count: c)
    var labelled = [Int32](repeating: 0, count: c)
    labels32.withUnsafeBufferPointer { lp in
      for i in 0..<min(n, lp.count) {
        let row = pr + i * c
        var best = 0
        for k in 1..<max(c, 1) where row[k] > row[best] { best = k }
        predicted[best] += 1
        let t = Int(lp[i])
        if t >= 0 && t < c { labelled[t] += 1 }
      }
    }
    d.predictionMajority = Double(predicted.max() ?? 0) / Double(n)
    d.labelMajority = Double(labelled.max() ?? 0) / Double(n)
    return d
  }
}
