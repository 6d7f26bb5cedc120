import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining

/// Meta-Weight-Net (Shu et al. 2019; ALGORITHMS.md, "MW-Net"): a weighting net V(ℓ; Θ), an MLP
/// from an example's loss to its weight, learned by the look-ahead.
///
/// 1. vᵢ = V(lᵢ(θ); Θ).
/// 2. θ̂(Θ) = θ − α Σᵢ cᵢ ∇lᵢ(θ) with cᵢ = vᵢ/n (or vᵢ/Σv with `normalizeWeights`; plus the V′
///    term when the loss fed to V is not detached).
/// 3. The meta loss at θ̂, v = ∇L_meta(θ̂), qᵢ = ⟨v, ∇lᵢ⟩ through one JVP, dL/dcᵢ = −α qᵢ; chained
///    through cᵢ into V's gradient, and one update of Θ with V's optimizer.
/// 4. vᵢ recomputed with the new Θ, and the real step on Σᵢ cᵢ lᵢ.
public final class MWNet: LookAheadWeighting, @unchecked Sendable {
  /// The options.
  public let config: WeightingConfig
  /// The look-ahead (at θ̂, with a meta tape of its own).
  public let meta: MetaStep
  /// V.
  public let net: WeightNet
  /// V's optimizer.
  public let optimizer: Optimizer
  /// Per-example weights of the last step: V(ℓᵢ) after V's update (n).
  public private(set) var weights = FloatBuffer(count: 0)
  private var q = FloatBuffer(count: 0)  // qᵢ, then dL/dcᵢ, then dL/dvᵢ (n)
  private var coef = FloatBuffer(count: 0)  // cᵢ (n)
  private var dv = FloatBuffer(count: 0)  // v′ᵢ = dV/dℓ (n)
  private var dvPrime = FloatBuffer(count: 0)  // dL/dv′ᵢ (n)
  /// V(ℓᵢ) before V's update, kept only when `recordsRaw` (n).
  private var before = FloatBuffer(count: 0)
  /// Whether steps are recorded for `rawDiagnostic` (V's outputs before its update are copied).
  public var recordsRaw = false
  /// Rows of the last recorded step (0: none).
  private var rawRows = 0
  /// The section's generator (saved for the checkpoint layout; MW-Net draws nothing).
  public var rng: RNG

  /// MW-Net for `network`, V initialised from `seed`.
  /// - Throws: `MetaweightError.invalidArgument` for invalid options.
  public init(config: WeightingConfig, network: Network, seed: UInt64) throws {
    try WeightingSection.check(config, is: [.mwnet], network: network)
    self.config = config
    let s = WeightingSection.seeds(config: config, seed: seed)
    guard let wn = s.weightNet, let opt = s.optimizer else {
      throw MetaweightError.invalidArgument("mwnet: no weighting net")
    }
    net = wn
    optimizer = opt
    rng = s.rng
    meta = MetaStep(config: config, network: network, takesVirtualStep: true)
  }

  /// V.
  public var weightNet: WeightNet? { net }
  /// V's optimizer.
  public var weightNetOptimizer: Optimizer? { optimizer }
  /// V(ℓᵢ) after V's update: the step's weights.
  public var unitOutputs: UnsafePointer<Float>? { UnsafePointer(weights.pointer) }

  /// See `StepWeighting`.
  public func reserve(trainer: Trainer, n: Int, m: Int) {
    if weights.count < n {
      weights = FloatBuffer(count: n)
      q = FloatBuffer(count: n)
      coef = FloatBuffer(count: n)
      dv = FloatBuffer(count: n)
      dvPrime = FloatBuffer(count: n)
    }
    if recordsRaw && before.count < n { before = FloatBuffer(count: n) }
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
    (result.loss, result.accuracy) = try trainer.forwardCheckedTrainBatch(x: x, n: n, labels: labels)
    let l = UnsafePointer(trainer.losses.pointer)
    let (alpha, factor) = meta.virtualStepSize(trainer)
    // 1–2. vᵢ = V(lᵢ); θ̂ = θ − α Σ cᵢ ∇lᵢ.
    net.forward(l, n: n, out: w)
    if recordsRaw { before.pointer.update(from: w, count: n) }
    let c = coef.pointer
    let sumV = try coefficients(trainer, v: UnsafePointer(w), losses: l, n: n, out: c)
    trainer.backwardWeighted(coefficients: c)
    try trainer.synchronize(trainer.grads.pointer, count: trainer.grads.count, at: .virtualGradient)
    meta.takeVirtualStep(trainer, alpha: alpha)
    // 3. Meta loss at θ̂, v = ∇L_meta(θ̂), qᵢ = ⟨v, ∇lᵢ⟩, dL/dcᵢ = −α qᵢ.
    result.metaLoss = try meta.synchronizedMetaPass(trainer, params: UnsafePointer(meta.thetaHat.pointer), x: xm, m: m, labels: ym)
    meta.projectedGradients(trainer, n: n, out: q.pointer)
    let q = self.q.pointer
    for i in 0..<n { q[i] *= -alpha * factor }  // now dL/dcᵢ
    if config.detachLoss {
      try chain(trainer, v: UnsafePointer(w), dLdc: q, n: n, sumV: sumV)  // → dL/d(V-output) in place
      net.backward(l, dv: q, n: n)
    } else if !config.normalizeWeights {
      try chain(trainer, v: UnsafePointer(w), dLdc: q, n: n, sumV: sumV)  // cᵢ = (vᵢ + ℓᵢv′ᵢ)/n
      net.backwardUndetached(l, dc: q, n: n)
    } else {
      // cᵢ = (vᵢ + ℓᵢv′ᵢ)/S − A v′ᵢ/S² also depends on every vⱼ and v′ᵢ through S and A.
      let dp = try chainNormalizedUndetached(trainer, v: UnsafePointer(w), losses: l, dLdc: q, n: n, sumV: sumV)
      net.backward(l, dv: q, dvPrime: dp, n: n)
    }
    try trainer.synchronize(net.grads.pointer, count: net.grads.count, at: .weightNetGradient)
    try trainer.checkFiniteValues(UnsafePointer(net.grads.pointer), net.grads.count, what: "weight-net gradient")
    optimizer.update(
      params: net.params.pointer, grads: net.grads.pointer, count: net.params.count, lr: config.weightNetLR)
    // 4. Recompute vᵢ with the new Θ and take the real step.
    net.forward(l, n: n, out: w)
    try trainer.checkFiniteValues(UnsafePointer(w), n)
    _ = try coefficients(trainer, v: UnsafePointer(w), losses: l, n: n, out: c)
    trainer.backwardWeighted(coefficients: c)
    if recordsRaw { rawRows = n }
    return result
  }

  /// Exact under data parallelism (the virtual gradient, v, the batch sums of normalised weights,
  /// V's gradient and the real gradient are all-reduced).
  public var supportsDataParallel: Bool { true }

  /// "v_before": V(ℓᵢ) before V's update (n); "v_after": after it, the step's weights (n).
  public var rawNames: [String] { ["v_before", "v_after"] }

  /// See `StepWeighting`.
  public func rawDiagnostic(_ name: String) -> (values: UnsafePointer<Float>, count: Int, rows: Int)? {
    guard rawRows > 0 else { return nil }
    switch name {
    case "v_before": return (UnsafePointer(before.pointer), rawRows, rawRows)
    case "v_after": return (UnsafePointer(weights.pointer), rawRows, rawRows)
    default: return nil
    }
  }

  /// The step coefficients cᵢ from vᵢ: vᵢ/N (or vᵢ/Σv), plus the V′ term when the loss is not
  /// detached (cᵢ = d(vᵢℓᵢ)/dℓᵢ / N). N and the sums are over the global batch
  /// (`SyncPoint.weightSums` when data-parallel). Returns Σv.
  private func coefficients(
    _ trainer: Trainer, v: UnsafePointer<Float>, losses l: UnsafePointer<Float>, n: Int,
    out: UnsafeMutablePointer<Float>
  ) throws -> Float {
    var sumV: Float = 0
    for i in 0..<n { sumV += v[i] }
    var lw: Float = 0
    if config.normalizeWeights && !config.detachLoss {
      for i in 0..<n { lw += v[i] * l[i] }
    }
    if config.normalizeWeights && trainer.isDistributed {
      let s = try trainer.synchronize([Double(sumV), Double(lw)], at: .weightSums)
      (sumV, lw) = (Float(s[0]), Float(s[1]))
    }
    let denom = config.normalizeWeights ? max(sumV, 1e-12) : Float(trainer.globalBatch(n))
    for i in 0..<n { out[i] = v[i] / denom }
    if !config.detachLoss {
      let dv = self.dv.pointer
      net.inputDerivative(l, n: n, out: dv)
      if config.normalizeWeights {
        lw /= denom
        for i in 0..<n { out[i] += (dv[i] * l[i] - lw * dv[i]) / denom }
      } else {
        for i in 0..<n { out[i] += dv[i] * l[i] / denom }
      }
    }
    return sumV
  }

  /// Turns dL/dcᵢ into the gradient with respect to V's outputs (in place): divide by N, or for
  /// normalised weights cᵢ = vᵢ/S, dL/dvᵢ = (dL/dcᵢ − Σⱼ cⱼ dL/dcⱼ)/S (the sum over the global
  /// batch: `SyncPoint.chainSums` when data-parallel).
  private func chain(
    _ trainer: Trainer, v: UnsafePointer<Float>, dLdc: UnsafeMutablePointer<Float>, n: Int, sumV: Float
  ) throws {
    if config.normalizeWeights {
      let s = max(sumV, 1e-12)
      var mean: Float = 0
      for i in 0..<n { mean += v[i] / s * dLdc[i] }
      if trainer.isDistributed { mean = Float(try trainer.synchronize([Double(mean)], at: .chainSums)[0]) }
      for i in 0..<n { dLdc[i] = (dLdc[i] - mean) / s }
    } else {
      for i in 0..<n { dLdc[i] /= Float(trainer.globalBatch(n)) }
    }
  }

  /// For normalised weights with the loss not detached, cᵢ = (vᵢ + ℓᵢv′ᵢ)/S − A v′ᵢ/S² with
  /// S = Σv, A = Σ vⱼℓⱼ, v′ = dV/dℓ. Turns dL/dcᵢ = qᵢ into dL/dvₖ (in place) and returns dL/dv′ₖ
  /// (in `dvPrime`): with Q₁ = Σ qᵢ(vᵢ + ℓᵢv′ᵢ), Q₂ = Σ qᵢv′ᵢ,
  ///     dL/dvₖ = (qₖ − Q₁/S − (ℓₖ − 2A/S) Q₂/S)/S,   dL/dv′ₖ = qₖ (ℓₖ − A/S)/S.
  private func chainNormalizedUndetached(
    _ trainer: Trainer, v: UnsafePointer<Float>, losses l: UnsafePointer<Float>, dLdc q: UnsafeMutablePointer<Float>,
    n: Int, sumV: Float
  ) throws -> UnsafePointer<Float> {
    let s = max(sumV, 1e-12)
    let dv = self.dv.pointer  // v′
    let dp = dvPrime.pointer  // dL/dv′
    net.inputDerivative(l, n: n, out: dv)
    var a: Float = 0, q1: Float = 0, q2: Float = 0
    for i in 0..<n {
      a += v[i] * l[i]
      q1 += q[i] * (v[i] + l[i] * dv[i])
      q2 += q[i] * dv[i]
    }
    if trainer.isDistributed {  // the three sums over the global batch
      let g = try trainer.synchronize([Double(a), Double(q1), Double(q2)], at: .chainSums)
      (a, q1, q2) = (Float(g[0]), Float(g[1]), Float(g[2]))
    }
    let lw = a / s
    for k in 0..<n {
      dp[k] = q[k] * (l[k] - lw) / s
      q[k] = (q[k] - q1 / s - (l[k] - 2 * lw) * q2 / s) / s
    }
    return UnsafePointer(dp)
  }

}
