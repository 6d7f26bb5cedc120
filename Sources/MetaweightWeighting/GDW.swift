import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining

/// Generalized Data Weighting (Chen et al. 2021; ALGORITHMS.md, "GDW"): class-level weights
/// ωᵢ ∈ R^C, first stage ωᵢ = V(lᵢ; φ)·1 (MW-Net's V cloned C times), corrected in a second stage
/// by the meta gradient.
///
/// 1. The zero-mean constraint on ωᵢ with p detached (`GDWConstraint`).
/// 2. A virtual step with the manipulated logit gradient G_ic = ω_ic (p_ic − y_ic)/n.
/// 3. The meta loss at θ̂; g_ic = ∂L_meta/∂ω_ic = −α (p_ic − y_ic) JVP_ic / n; V's update through
///    all C columns (and through the constraint).
/// 4. The second stage ω′ = clamp(ω − clamp(η g/‖g‖₁, ±clip), [min, max]), constrained again.
/// 5. The real step: back-propagate G′_ic = ω′_ic (p_ic − y_ic)/n from the logits.
///
/// p is clamped at `gdwProbClamp` wherever it enters (as the official code does).
public final class GDW: LookAheadWeighting, @unchecked Sendable {
  /// The options.
  public let config: WeightingConfig
  /// The look-ahead (at θ̂, with a meta tape of its own).
  public let meta: MetaStep
  /// V.
  public let net: WeightNet
  /// V's optimizer.
  public let optimizer: Optimizer
  /// Per-example weights of the last step: ω′ at each example's label (n).
  public private(set) var weights = FloatBuffer(count: 0)
  /// Class-level weights ω′ of the last step (n × C).
  public private(set) var classWeights = FloatBuffer(count: 0)
  private var v = FloatBuffer(count: 0)  // first-stage V(ℓᵢ) (n)
  private var dv = FloatBuffer(count: 0)  // ∂L/∂vᵢ (n)
  private var omega = FloatBuffer(count: 0)  // ω (n × C)
  /// g_ic = ∂L_meta/∂ω_ic of the last step (n × C).
  private(set) var g = FloatBuffer(count: 0)
  /// ω before the second stage (after the first constraint), kept only when `recordsRaw` (n × C).
  private var omegaBefore = FloatBuffer(count: 0)
  /// Whether steps are recorded for `rawDiagnostic` (ω before the second stage is copied).
  public var recordsRaw = false
  /// Rows and columns of the last recorded step (rows 0: none).
  private var rawRows = 0, rawColumns = 0
  /// The section's generator (saved for the checkpoint layout; GDW draws nothing).
  public var rng: RNG

  /// GDW for `network`, V initialised from `seed`.
  /// - Throws: `MetaweightError.invalidArgument` for invalid options, or `detachLoss` false.
  public init(config: WeightingConfig, network: Network, seed: UInt64) throws {
    try WeightingSection.check(config, is: [.gdw], network: network)
    if !config.detachLoss {
      throw MetaweightError.invalidArgument(
        "detach_loss: GDW feeds V the detached loss (as its official code); got False")
    }
    self.config = config
    let s = WeightingSection.seeds(config: config, seed: seed)
    guard let wn = s.weightNet, let opt = s.optimizer else {
      throw MetaweightError.invalidArgument("gdw: no weighting net")
    }
    net = wn
    optimizer = opt
    rng = s.rng
    meta = MetaStep(config: config, network: network, takesVirtualStep: true)
  }

  /// Class-level weights.
  public var hasClassWeights: Bool { true }
  /// V.
  public var weightNet: WeightNet? { net }
  /// V's optimizer.
  public var weightNetOptimizer: Optimizer? { optimizer }
  /// The first stage's V(ℓᵢ).
  public var unitOutputs: UnsafePointer<Float>? { UnsafePointer(v.pointer) }

  /// See `StepWeighting`.
  public func reserve(trainer: Trainer, n: Int, m: Int) {
    let c = trainer.network.classes
    if weights.count < n {
      weights = FloatBuffer(count: n)
      v = FloatBuffer(count: n)
      dv = FloatBuffer(count: n)
    }
    if omega.count < n * c {
      omega = FloatBuffer(count: n * c)
      g = FloatBuffer(count: n * c)
      classWeights = FloatBuffer(count: n * c)
    }
    if recordsRaw && omegaBefore.count < n * c { omegaBefore = FloatBuffer(count: n * c) }
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
    (result.loss, result.accuracy) = try trainer.forwardCheckedTrainBatch(x: x, n: n, labels: labels)
    let c = trainer.network.classes
    let cfg = config
    let pc = cfg.gdwProbClamp
    let l = UnsafePointer(trainer.losses.pointer)
    let v = self.v.pointer
    let omega = self.omega.pointer, gmat = g.pointer, lg = meta.logitGrad.pointer
    let pr = trainer.probs.pointer
    let (alpha, factor) = meta.virtualStepSize(trainer)
    let invN = 1 / Float(trainer.globalBatch(n))
    let labels = trainer.labels32
    // Zero-mean constraint (p detached, clamped): ω_it = Σ_{c≠t} ω_ic p_ic / (1 − p_it), with
    // 1 − p_it computed without cancellation (`GDWConstraint.denominator`).
    func constrain() {
      labels.withUnsafeBufferPointer { lp in
        GDWConstraint.apply(
          omega: omega, probs: UnsafePointer(pr), labels: lp.baseAddress!, n: n, classes: c, clamp: pc)
      }
    }
    // G_ic = ω_ic (p_ic − y_ic)/n.
    func logitGradient() {
      for i in 0..<n {
        let t = Int(labels[i])
        for k in 0..<c { lg[i * c + k] = omega[i * c + k] * (min(pr[i * c + k], pc) - (k == t ? 1 : 0)) * invN }
      }
    }
    // 1. ω_i = V(l_i)·1, constrained.
    net.forward(l, n: n, out: v)
    for i in 0..<n { for k in 0..<c { omega[i * c + k] = v[i] } }
    constrain()
    // 2. Virtual step on G.
    logitGradient()
    trainer.backwardLogits(UnsafePointer(lg))
    try trainer.synchronize(trainer.grads.pointer, count: trainer.grads.count, at: .virtualGradient)
    meta.takeVirtualStep(trainer, alpha: alpha)
    // 3. Meta loss at θ̂ and g_ic = ∂L_meta/∂ω_ic = −α (p_ic − y_ic) JVP_ic / n.
    result.metaLoss = try meta.synchronizedMetaPass(trainer, params: UnsafePointer(meta.thetaHat.pointer), x: xm, m: m, labels: ym)
    let jvp = meta.tangents(trainer)
    var gnorm: Double = 0
    for i in 0..<n {
      let t = Int(labels[i])
      for k in 0..<c {
        let gv = -alpha * factor * (min(pr[i * c + k], pc) - (k == t ? 1 : 0)) * jvp[i * c + k] * invN
        gmat[i * c + k] = gv
        gnorm += Double(abs(gv))
      }
    }
    gnorm = try trainer.synchronize([gnorm], at: .gradientNorm)[0]
    // V's gradient through the constraint: ∂L/∂vᵢ = Σ_{c≠t} (g_ic + g_it p_ic / (1 − p_it)).
    let dv = self.dv.pointer
    for i in 0..<n {
      let t = Int(labels[i])
      let git = gmat[i * c + t] / GDWConstraint.denominator(UnsafePointer(pr + i * c), label: t, classes: c, clamp: pc)
      var s: Float = 0
      for k in 0..<c where k != t { s += gmat[i * c + k] + git * min(pr[i * c + k], pc) }
      dv[i] = s
    }
    net.backward(l, dv: UnsafePointer(dv), n: n)
    try trainer.synchronize(net.grads.pointer, count: net.grads.count, at: .weightNetGradient)
    try trainer.checkFiniteValues(UnsafePointer(net.grads.pointer), net.grads.count, what: "weight-net gradient")
    optimizer.update(params: net.params.pointer, grads: net.grads.pointer, count: net.params.count, lr: cfg.weightNetLR)
    // 4. ω′ = clamp(ω − clamp(η g/‖g‖₁, ±clip), [min, max]), constrained again.
    if recordsRaw { omegaBefore.pointer.update(from: omega, count: n * c) }
    let eta = cfg.eta(classes: c)
    let scale = gnorm > 0 ? Float(Double(eta) / gnorm) : 0
    for idx in 0..<(n * c) {
      let upd = min(max(scale * gmat[idx], -cfg.gdwClip), cfg.gdwClip)
      omega[idx] = min(max(omega[idx] - upd, cfg.gdwMin), cfg.gdwMax)
    }
    constrain()
    try trainer.checkFiniteValues(UnsafePointer(omega), n * c, what: "class-level weight")
    classWeights.pointer.update(from: omega, count: n * c)
    for i in 0..<n { weights[i] = omega[i * c + Int(labels[i])] }
    // 5. Real step from G′_ic = ω′_ic (p_ic − y_ic)/n.
    logitGradient()
    trainer.backwardLogits(UnsafePointer(lg))
    if recordsRaw { (rawRows, rawColumns) = (n, c) }
    return result
  }

  /// Exact under data parallelism (the virtual gradient, v, ‖g‖₁, V's gradient and the real
  /// gradient are all-reduced).
  public var supportsDataParallel: Bool { true }

  /// "g": g = ∂L_meta/∂ω (n × C); "omega": ω before the second stage, after the first zero-mean
  /// constraint (n × C); "omega_prime": ω′, the class-level weights used (n × C).
  public var rawNames: [String] { ["g", "omega", "omega_prime"] }

  /// See `StepWeighting`.
  public func rawDiagnostic(_ name: String) -> (values: UnsafePointer<Float>, count: Int, rows: Int)? {
    guard rawRows > 0 else { return nil }
    let count = rawRows * rawColumns
    switch name {
    case "g": return (UnsafePointer(g.pointer), count, rawRows)
    case "omega": return (UnsafePointer(omegaBefore.pointer), count, rawRows)
    case "omega_prime": return (UnsafePointer(classWeights.pointer), count, rawRows)
    default: return nil
    }
  }

}

/// GDW's zero-mean constraint on the class-level weights of one batch (p detached and clamped at
/// `prob_clamp` as in the official code): ω_it = Σ_{c≠t} ω_ic min(p_ic, clamp) / (1 − min(p_it, clamp)).
public enum GDWConstraint {
  /// The constraint's denominator 1 − min(p_t, clamp) for one row of probabilities, computed as
  /// max(Σ_{c≠t} p_c, 1 − clamp).
  ///
  /// With Σ_c p_c = 1 the two are equal in exact arithmetic: Σ_{c≠t} p_c = 1 − p_t, and
  /// max(1 − p_t, 1 − clamp) = 1 − min(p_t, clamp) because x ↦ 1 − x is decreasing. In float32
  /// the sum has no cancellation: 1 − p_t at p_t ≈ 0.999 loses about three digits (relative
  /// error ~1e-4 against float64), the sum of the small off-target probabilities keeps ~1e-7.
  public static func denominator(_ probs: UnsafePointer<Float>, label t: Int, classes c: Int, clamp: Float) -> Float {
    var rest: Float = 0
    for k in 0..<c where k != t { rest += probs[k] }
    return max(rest, 1 - clamp)
  }

  /// Sets ω_it of each of `n` rows of `omega` (n × classes) from its off-target entries and the
  /// probabilities `probs` (n × classes), in place.
  public static func apply(
    omega: UnsafeMutablePointer<Float>, probs: UnsafePointer<Float>, labels: UnsafePointer<Int32>, n: Int,
    classes c: Int,
    clamp: Float
  ) {
    for i in 0..<n {
      let t = Int(labels[i])
      let row = probs + i * c
      var s: Float = 0
      for k in 0..<c where k != t { s += omega[i * c + k] * min(row[k], clamp) }
      omega[i * c + t] = s / denominator(row, label: t, classes: c, clamp: clamp)
    }
  }
}
