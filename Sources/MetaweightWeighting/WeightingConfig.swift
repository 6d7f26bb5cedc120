import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining

/// Which weighting method a trainer uses, and every option of it (defaults from ALGORITHMS.md).
public struct WeightingConfig: Sendable, Equatable {
  /// The method.
  public enum Method: Int32, Sendable, CaseIterable {
    /// Plain (optionally sample-weighted) empirical risk minimisation.
    case erm = 0
    /// Learning to Reweight (Ren et al. 2018).
    case l2rw = 1
    /// Meta-Weight-Net (Shu et al. 2019).
    case mwnet = 2
    /// Generalized Data Weighting (Chen et al. 2021).
    case gdw = 3
    /// Focal loss (Lin et al. 2017), γ = `focalGamma`.
    case focal = 4
    /// Class-balanced loss by effective number (Cui et al. 2019), β = `classBalancedBeta`.
    case classBalanced = 5
    /// Inverse class-frequency ("proportion") weights.
    case inverseFrequency = 6
    /// Hard-example mining: only the `hardFraction` highest-loss examples of a batch count.
    case hardMining = 7
    /// Random weights from a rectified Gaussian, normalised per batch (L2RW's random baseline).
    case randomGaussian = 8
    /// Self-paced learning: examples with loss below a growing threshold count.
    case selfPaced = 9
    /// Reed et al.'s soft bootstrapping, β = `bootstrapBeta`.
    case bootstrapSoft = 10
    /// Reed et al.'s hard bootstrapping, β = `bootstrapBeta`.
    case bootstrapHard = 11

    /// Whether the method needs a meta (clean) batch in every step.
    public var needsMeta: Bool { self == .l2rw || self == .mwnet || self == .gdw }
    /// Whether it has a weighting network.
    public var hasWeightNet: Bool { self == .mwnet || self == .gdw }
  }

  /// Where MW-Net and GDW keep the meta batch's activations while the train batch's stay valid
  /// for the JVP and the real backward pass. Both modes run the same passes and take the same
  /// steps; they differ in memory only.
  public enum Memory: Int32, Sendable, CaseIterable {
    /// A second activation tape of its own for the meta batch (peak: two tapes).
    case fast = 0
    /// The meta batch's tape is laid over the train tape's dead activations, those no later pass
    /// reads (a batch norm's output read only by a ReLU, which keeps its own output; a linear or
    /// convolution output read only by a batch norm or a ReLU; residual branch outputs and
    /// sums); the meta batch's own dead activations share the gradient/tangent scratch slots,
    /// and it allocates only what does not fit (see `TapePlanner`). Nothing is recomputed.
    case low = 1
  }

  /// The method.
  public var method: Method = .erm
  /// MW-Net/GDW: where the meta batch's activations live (default `.low`: over the train tape's
  /// dead activations; `.fast`: a tape of their own, kept to cross-check). L2RW always runs its
  /// meta pass and train batch in one tape (its look-ahead point θ̂ = θ does not need the train
  /// batch).
  public var memory: Memory = .low
  /// Include the optimizer's momentum and weight decay in the virtual step (default: plain SGD).
  public var virtualStepMomentum = false
  /// Virtual step size α; ≤ 0 means the classifier's current learning rate (default).
  public var virtualLR: Float = 0
  /// MW-Net: normalise the weights by their batch sum (the imbalance script; `MethodSpec` makes it
  /// MW-Net's default). GDW never normalises. The noisy-label script does not normalise.
  public var normalizeWeights = false
  /// MW-Net/GDW: detach the loss fed to V (default yes).
  public var detachLoss = true
  /// MW-Net/GDW: hidden width of V.
  public var weightNetHidden = 100
  /// MW-Net/GDW: optimizer of V (default Adam, weight decay 1e-4).
  public var weightNetOptimizer: OptimizerConfig = {
    var o = OptimizerConfig()
    o.kind = .adam
    o.weightDecay = 1e-4
    return o
  }()
  /// MW-Net/GDW: learning rate of V (default 1e-3).
  public var weightNetLR: Float = 1e-3
  /// GDW: outer step η; ≤ 0 means 100 for up to 10 classes and 1000 above (default).
  public var gdwEta: Float = 0
  /// GDW: clip of the second-stage update (default 0.2).
  public var gdwClip: Float = 0.2
  /// GDW: clamp range of ω′ (default [1e-6, 1e6]).
  public var gdwMin: Float = 1e-6
  /// Upper clamp of ω′.
  public var gdwMax: Float = 1e6
  /// GDW: probabilities are clamped to at most this in p − y and the constraint (default 0.999).
  public var gdwProbClamp: Float = 0.999
  /// Focal γ.
  public var focalGamma: Float = 2
  /// Class-balanced β.
  public var classBalancedBeta: Float = 0.9999
  /// Per-class training counts (class-balanced and inverse-frequency weights).
  public var classCounts: [Int64] = []
  /// Hard mining: fraction of the batch kept.
  public var hardFraction: Float = 0.5
  /// Self-paced: initial loss threshold λ₀; ≤ 0 means 1.3·ln(C), a little above the loss of a uniform prediction
  /// (default), so training starts from nearly every example and drops those it cannot fit.
  public var selfPacedThreshold: Float = 0
  /// Self-paced: λ is multiplied by this every `selfPacedInterval` steps.
  public var selfPacedGrowth: Float = 1.1
  /// Self-paced: steps between threshold growth.
  public var selfPacedInterval: Int64 = 100
  /// Bootstrapping β (Reed: 0.95 soft, 0.8 hard).
  public var bootstrapBeta: Float = 0.95

  /// The default configuration (ERM).
  public init() {}

  /// GDW's η for `classes` classes.
  public func eta(classes: Int) -> Float { gdwEta > 0 ? gdwEta : (classes <= 10 ? 100 : 1000) }

  /// Validates the options for a network with `classes` classes.
  /// - Throws: `MetaweightError.invalidArgument` naming the option.
  public func validate(classes: Int) throws {
    func check(_ ok: Bool, _ msg: String) throws { if !ok { throw MetaweightError.invalidArgument(msg) } }
    try check(virtualLR.isFinite, "virtual_lr: expected a finite number, got \(virtualLR)")
    try check(weightNetHidden > 0 && weightNetHidden <= 100_000, "weight_net_hidden: expected 1..100000, got \(weightNetHidden)")
    try weightNetOptimizer.validate()
    try check(weightNetLR.isFinite && weightNetLR >= 0, "weight_net_lr: expected a finite value >= 0, got \(weightNetLR)")
    try check(gdwEta.isFinite, "eta: expected a finite number, got \(gdwEta)")
    try check(gdwClip.isFinite && gdwClip > 0, "clip: expected > 0, got \(gdwClip)")
    try check(gdwMin.isFinite && gdwMax.isFinite && gdwMin > 0 && gdwMin < gdwMax,
              "clamp: expected 0 < min < max, got [\(gdwMin), \(gdwMax)]")
    try check(gdwProbClamp > 0 && gdwProbClamp < 1, "prob_clamp: expected 0 < value < 1, got \(gdwProbClamp)")
    try check(focalGamma.isFinite && focalGamma >= 0, "gamma: expected a finite value >= 0, got \(focalGamma)")
    try check(classBalancedBeta >= 0 && classBalancedBeta < 1, "beta: expected 0 <= beta < 1, got \(classBalancedBeta)")
    if method == .classBalanced || method == .inverseFrequency {
      try check(classCounts.count == classes,
                "class_counts: expected \(classes) per-class training counts, got \(classCounts.count)")
      try check(classCounts.allSatisfy { $0 > 0 }, "class_counts: expected positive counts, got \(classCounts)")
    }
    try check(hardFraction > 0 && hardFraction <= 1, "fraction: expected 0 < fraction <= 1, got \(hardFraction)")
    try check(selfPacedThreshold.isFinite, "threshold: expected a finite number, got \(selfPacedThreshold)")
    try check(selfPacedGrowth.isFinite && selfPacedGrowth >= 1, "growth: expected >= 1, got \(selfPacedGrowth)")
    try check(selfPacedInterval > 0, "interval: expected > 0 steps, got \(selfPacedInterval)")
    try check(bootstrapBeta >= 0 && bootstrapBeta <= 1, "beta: expected 0 <= beta <= 1, got \(bootstrapBeta)")
  }
}
