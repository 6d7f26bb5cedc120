import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining

/// Learning to Reweight (Ren et al. 2018; ALGORITHMS.md, "L2RW"): each example's weight is the
/// normalised positive part of how much a step on it would lower the meta loss.
///
/// 1. ε = 0, so θ̂ = θ: v = ∇L_meta(θ) at the current parameters (its meta pass runs first, in
///    the tape the train batch then uses).
/// 2. uᵢ = ⟨v, ∇lᵢ(θ)⟩ = Σ_c (p_ic − y_ic)·JVP_ic.
/// 3. w̃ᵢ = max(uᵢ, 0); wᵢ = w̃ᵢ / Σₖ w̃ₖ, and w = 0 for the batch when Σₖ w̃ₖ = 0.
/// 4. The real step on Σᵢ wᵢ lᵢ(θ) with the configured optimizer.
public final class L2RW: LookAheadWeighting, @unchecked Sendable {
  /// The options.
  public let config: WeightingConfig
  /// The look-ahead (at θ, in the train batch's tape).
  public let meta: MetaStep
  /// Per-example weights of the last step (n).
  public private(set) var weights = FloatBuffer(count: 0)
  /// uᵢ (n).
  private var u = FloatBuffer(count: 0)
  /// Whether steps are recorded for `rawDiagnostic` (u is kept anyway).
  public var recordsRaw = false
  /// Rows of the last recorded step (0: none).
  private var rawRows = 0
  /// The section's generator (saved for the checkpoint layout; L2RW draws nothing).
  public var rng: RNG

  /// L2RW for `network`.
  /// - Throws: `MetaweightError.invalidArgument` for invalid options.
  public init(config: WeightingConfig, network: Network, seed: UInt64) throws {
    try WeightingSection.check(config, is: [.l2rw], network: network)
    self.config = config
    rng = WeightingSection.seeds(config: config, seed: seed).rng
    meta = MetaStep(config: config, network: network, takesVirtualStep: false)
  }

  /// See `StepWeighting`.
  public func reserve(trainer: Trainer, n: Int, m: Int) {
    if weights.count < n {
      weights = FloatBuffer(count: n)
      u = FloatBuffer(count: n)
    }
    meta.reserve(trainer: trainer, n: n, m: m)
  }

  /// See `StepWeighting`.
  public func step(
    trainer: Trainer, x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>,
    xMeta: UnsafePointer<Float>?, m: Int, labelsMeta: UnsafePointer<Int64>?
  ) throws -> StepResult {
    var result = StepResult()
    rawRows = 0
    guard let xm = xMeta, let ym = labelsMeta else { return result }
    let w = weights.pointer
    // 1. v = ∇L_meta(θ) (ε = 0, so θ̂ = θ), in the tape the train batch then uses.
    result.metaLoss = try meta.synchronizedMetaPass(
      trainer, params: UnsafePointer(trainer.network.params.pointer), x: xm, m: m, labels: ym)
    // 2. Train forward at θ (updates running statistics once, as the real step's forward).
    (result.loss, result.accuracy) = try trainer.forwardCheckedTrainBatch(x: x, n: n, labels: labels)
    // 3. uᵢ = ⟨v, ∇lᵢ⟩ through one JVP; w = normalised max(u, 0).
    meta.projectedGradients(trainer, n: n, out: u.pointer)
    var sum: Double = 0
    for i in 0..<n {
      w[i] = max(u[i], 0)
      sum += Double(w[i])
    }
    sum = try trainer.synchronize([sum], at: .l2rwNormalizer)[0]
    for i in 0..<n { w[i] = sum > 0 ? Float(Double(w[i]) / sum) : 0 }
    try trainer.checkFiniteValues(UnsafePointer(w), n)
    // 4. The real step's gradient Σ wᵢ ∇lᵢ.
    trainer.backwardWeighted(coefficients: w)
    if recordsRaw { rawRows = n }
    return result
  }

  /// Exact under data parallelism (v, the normaliser and the real gradient are all-reduced).
  public var supportsDataParallel: Bool { true }

  /// "u": the raw scores uᵢ (n), negative ones included, before max(u, 0) and normalisation.
  public var rawNames: [String] { ["u"] }

  /// See `StepWeighting`.
  public func rawDiagnostic(_ name: String) -> (values: UnsafePointer<Float>, count: Int, rows: Int)? {
    guard rawRows > 0, name == "u" else { return nil }
    return (UnsafePointer(u.pointer), rawRows, rawRows)
  }

}
