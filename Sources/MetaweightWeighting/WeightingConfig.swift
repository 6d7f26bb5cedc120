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
    /// Whether it has class-level weights (GDW).
    public var hasClassWeights: Bool { self == .gdw }
    /// Whether a step takes user-given per-example weights (ERM).
    public var takesSampleWeights: Bool { self == .erm }
    /// One line saying what the method does (the settings table's `doc`).
    public var summary: String {
      switch self {
      case .erm: return "Empirical risk minimisation: the mean cross-entropy, optionally weighted by user sample weights"
      case .l2rw: return "Learning to Reweight (Ren et al. 2018): per-step example weights from the meta gradient"
      case .mwnet: return "Meta-Weight-Net (Shu et al. 2019): a learned loss -> weight function V"
      case .gdw: return "Generalized Data Weighting (Chen et al. 2021): class-level weights from V and a second stage"
      case .focal: return "Focal loss (Lin et al. 2017): -(1 - p_t)^gamma log p_t"
      case .classBalanced: return "Class-balanced loss (Cui et al. 2019) by the effective number of examples"
      case .inverseFrequency: return "Inverse class-frequency weights 1/n_c, normalised to sum to C"
      case .hardMining: return "Hard-example mining: only the highest-loss fraction of each batch counts"
      case .randomGaussian: return "Random weights from a rectified Gaussian, normalised per batch (L2RW's baseline)"
      case .selfPaced: return "Self-paced learning (Kumar et al. 2010): examples below a growing loss threshold count"
      case .bootstrapSoft: return "Reed et al. (2015) soft bootstrapping: the target mixes the label and the prediction"
      case .bootstrapHard: return "Reed et al. (2015) hard bootstrapping: the target mixes the label and the arg-max prediction"
      }
    }
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

  /// MW-Net/GDW's weighting-net optimizer kind (the `optimizer` setting).
  public var weightNetOptimizerKind: OptimizerConfig.Kind {
    get { weightNetOptimizer.kind }
    set { weightNetOptimizer.kind = newValue }
  }
  /// GDW's clamp range of ω′ as `[low, high]` (the `clamp` setting).
  public var gdwClamp: [Float] {
    get { [gdwMin, gdwMax] }
    set {
      if newValue.count == 2 {
        gdwMin = newValue[0]
        gdwMax = newValue[1]
      }
    }
  }

  /// Validates the options for a network with `classes` classes: every setting of the method's
  /// table (`WeightingConfig.table(for:)`), then what depends on the network.
  /// - Throws: `MetaweightError.invalidArgument` naming the option.
  public func validate(classes: Int) throws {
    try validateSettings()
    if method == .classBalanced || method == .inverseFrequency {
      guard classCounts.count == classes else {
        throw MetaweightError.invalidArgument(
          "class_counts: expected \(classes) per-class training counts, got \(classCounts.count)")
      }
    }
  }

  /// Validates what does not depend on the network: every setting of the method's table, and
  /// the conditions between settings.
  /// - Throws: `MetaweightError.invalidArgument` naming the option.
  public func validateSettings() throws {
    try Self.table(for: method).check(self)
    if method == .gdw && normalizeWeights {
      throw MetaweightError.invalidArgument("normalize: GDW does not normalise its weights (it uses 1/n); got 1")
    }
    if method.hasWeightNet { try weightNetOptimizer.validate() }
  }

  /// A method's settings table: one declaration per setting (name, type, range, key path, doc)
  /// with the methods it applies to. Defaults are the fields' initial values, adjusted per method
  /// by `defaults(for:)`. Parsing, range checks, canonical specs and `mw_settings_table` read it.
  public static let settings: [(setting: Setting<WeightingConfig>, methods: [Method])] = {
    let look: [Method] = [.l2rw, .mwnet, .gdw]
    let v: [Method] = [.mwnet, .gdw]
    return [
      (.bool("virtual_momentum", \.virtualStepMomentum,
             "Include the classifier optimizer's momentum and weight decay in the look-ahead step"), look),
      (.float("virtual_lr", \.virtualLR, min: 0, minInclusive: false,
              none: (0, "the classifier's current learning rate"), "Look-ahead step size"), look),
      (.bool("normalize", \.normalizeWeights,
             "Normalise the weights by their batch sum (the imbalance script) instead of dividing by n (GDW: never)"), v),
      (.bool("detach_loss", \.detachLoss, aliases: ["detach"], "Feed V the detached loss (GDW: always)"), v),
      (.int("hidden", \.weightNetHidden, min: 1, max: 100_000, "Hidden width of the weighting net V"), v),
      (.choice("optimizer", \.weightNetOptimizerKind, [("adam", .adam), ("sgd", .sgd)], aliases: ["wn_opt"],
               "V's optimizer: adam (the noisy-label code) or sgd (the imbalance code)"), v),
      (.float("lr", \.weightNetLR, min: 0, aliases: ["wn_lr"], "V's learning rate"), v),
      (.float("weight_decay", \.weightNetOptimizer.weightDecay, min: 0, aliases: ["wn_wd"], "V's weight decay"), v),
      (.float("momentum", \.weightNetOptimizer.momentum, min: 0, max: 1, maxInclusive: false, aliases: ["wn_momentum"],
              "V's SGD momentum"), v),
      (.choice("memory", \.memory, [("low", .low), ("fast", .fast)],
               "Meta batch activations: low (over the train batch's dead ones) or fast (a tape of their own); same steps"), v),
      (.float("eta", \.gdwEta, min: 0, minInclusive: false, none: (0, "100 for up to 10 classes, 1000 above"),
              "Outer step of GDW's second stage"), [.gdw]),
      (.float("clip", \.gdwClip, min: 0, minInclusive: false, "Clip of the second-stage update"), [.gdw]),
      (.floats("clamp", \.gdwClamp, min: 0, minInclusive: false, count: 2, note: "low < high",
               valid: { $0.count == 2 && $0[0] < $0[1] }, "Range [low, high] the class-level weights are clamped to"),
       [.gdw]),
      (.float("prob_clamp", \.gdwProbClamp, min: 0, max: 1, minInclusive: false, maxInclusive: false,
              "Probabilities are clamped to at most this in p - y and the constraint"), [.gdw]),
      (.float("gamma", \.focalGamma, min: 0, "Focusing parameter (0 is cross-entropy)"), [.focal]),
      (.float("beta", \.classBalancedBeta, min: 0, max: 1, maxInclusive: false,
              "Class weights (1 - beta)/(1 - beta^n_c); 0.9999 is the paper's usual choice"), [.classBalanced]),
      (.ints("class_counts", \.classCounts, min: 1, aliases: ["counts"],
             "Per-class training counts n_c (e.g. numpy.bincount(y_train)); required"),
       [.classBalanced, .inverseFrequency]),
      (.float("fraction", \.hardFraction, min: 0, max: 1, minInclusive: false, "Fraction of the batch kept"),
       [.hardMining]),
      (.float("threshold", \.selfPacedThreshold, min: 0, minInclusive: false,
              none: (0, "1.3 ln C, a little above the loss of a uniform prediction"), "Initial loss threshold"),
       [.selfPaced]),
      (.float("growth", \.selfPacedGrowth, min: 1, "The threshold is multiplied by this every interval steps"),
       [.selfPaced]),
      (.int("interval", \.selfPacedInterval, min: 1, max: 1e15, "Steps between threshold growths"), [.selfPaced]),
      (.float("beta", \.bootstrapBeta, min: 0, max: 1, "Weight of the given label in the target"),
       [.bootstrapSoft, .bootstrapHard]),
    ]
  }()

  /// The settings of `method`, in table order.
  public static func table(for method: Method) -> SettingsTable<WeightingConfig> {
    SettingsTable(settings.filter { $0.methods.contains(method) }.map(\.setting))
  }

  /// The defaults of `method` (its settings' defaults where they differ between methods).
  public static func defaults(for method: Method) -> WeightingConfig {
    var cfg = WeightingConfig()
    cfg.method = method
    // MW-Net normalises its weights by their batch sum unless told otherwise (README, "Choosing the
    // defaults": un-normalised weights let Adam turn V into an increasing function under noise).
    if method == .mwnet { cfg.normalizeWeights = true }
    if method == .bootstrapHard { cfg.bootstrapBeta = 0.8 }
    return cfg
  }
}
