import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting

#if canImport(Glibc)
  import Glibc
#endif

/// How the label enters an example's feature vector.
public enum LAWLabelEncoding: Int32, Sendable {
  /// C columns, 1 at the label and 0 elsewhere (not standardised).
  case oneHot = 0
  /// One column c/(C−1) (0 when C = 1).
  case scalar = 1
}

/// The similarity behind the density feature.
public enum LAWDensity: Int32, Sendable {
  /// Cosine similarity of logit vectors (a zero vector has similarity 0 with everything).
  case cosine = 0
  /// Dot product of logit vectors, the paper's Lo·Loᵀ without normalisation.
  case dot = 1
}

/// Every setting of a LAW search (Li et al. 2020). Defaults and the reasons for them are listed in
/// `LAW/README.md`; the paper fixes N′ = 20, the 4-layer actor/critic and their Adam learning
/// rates, the rest is left open.
///
/// Parsed from a spec string `key=value, key=value, ...` (see `parse(_:)`), which is what the C ABI
/// and the Python `LAWConfig` pass.
public struct LAWConfig: Sendable, Equatable {
  // MARK: 3SM and the episodes
  /// N′: stages a training run is split into (uniformly, by optimizer steps).
  public var stages = 20
  /// W: the first W stages train unweighted (K = 1) and store no transitions.
  public var warmupStages = 2
  /// N_a: episodes run in parallel, one thread each.
  public var parallel = 2
  /// E: epochs over the training set per episode.
  public var epochs = 10
  /// Classifier batch size.
  public var batchSize = 128

  // MARK: the classifier's optimizer and schedule
  /// SGD (default, as the paper) or Adam.
  public var optimizer = OptimizerConfig.Kind.sgd
  /// Base learning rate of the classifier.
  public var lr: Float = 0.1
  /// SGD momentum.
  public var momentum: Float = 0.9
  /// L2 weight decay (the paper: 2e-5).
  public var weightDecay: Float = 2e-5
  /// Points of the run (fractions in (0, 1) of its steps) where the learning rate is multiplied by
  /// `lrDecay`; the paper divides by 10 at stages 10, 13 and 16 of 20.
  public var lrMilestones: [Double] = [0.5, 0.65, 0.8]
  /// Learning-rate factor at each milestone.
  public var lrDecay: Float = 0.1
  /// Random-crop padding for image inputs (0 = none); the same draws feed both networks.
  public var cropPadding = 0
  /// Random horizontal flip for image inputs.
  public var flip = false

  // MARK: features and the weighting function
  /// Label feature encoding.
  public var labelEncoding = LAWLabelEncoding.oneHot
  /// Similarity of the density feature.
  public var density = LAWDensity.cosine
  /// The actor's output is `actionScale · tanh(·)`, so every entry of (θ_T, b) lies in ±scale.
  public var actionScale: Float = 1
  /// β of the stage-level EMA that smooths the state's training loss and validation accuracy.
  public var stateEMA: Float = 0.5
  /// Divide each batch's weights by their mean (so a strategy can only redistribute weight, not
  /// change the effective learning rate). The paper does not normalise: off by default.
  public var normalizeWeights = false

  // MARK: DDPG
  /// d: size of the learned stage embedding e_T.
  public var embeddingDim = 8
  /// Standard deviation of the embedding's Gaussian initialisation. Small values start every stage
  /// from nearly the same state (so what is learned for one stage carries over to the others until
  /// the embedding separates them); 1 makes the stages independent from the start.
  public var embeddingStd: Float = 0.1
  /// Hidden width of the actor's three hidden layers.
  public var actorHidden = 64
  /// Hidden width of the critic's three hidden layers.
  public var criticHidden = 64
  /// Adam learning rate of the actor and the stage embedding (paper: 1e-5).
  public var actorLR: Float = 1e-5
  /// Adam learning rate of the critic (paper: 1e-4).
  public var criticLR: Float = 1e-4
  /// λ of an L2 penalty λ·mean‖o‖² on the actor's pre-tanh outputs, added to its loss: keeps
  /// actions off the tanh bounds (where gradients vanish) and pulls actions the critic has no
  /// opinion about back toward 0 (K ≈ 1).
  public var actorL2: Float = 0.1
  /// γ: discount of the stage-level returns.
  public var gamma: Float = 0.9
  /// τ: soft-update rate of the target actor, embedding and critic after every FDU minibatch
  /// (τ = 1 copies, i.e. the paper's eq. (12) without target networks).
  public var tau: Float = 0.01
  /// σ₀: standard deviation of the Gaussian exploration noise added to the action.
  public var noise: Float = 0.3
  /// σ is multiplied by this after every episode round (σ_r = σ₀·decay^r).
  public var noiseDecay: Float = 0.95
  /// ρ: correlation of an episode's noise between consecutive stages, ε_T = ρ·ε_{T−1} +
  /// √(1−ρ²)·σ·ξ_T (a Gaussian AR(1), i.e. discretised Ornstein–Uhlenbeck, process with stationary
  /// std σ); 0 = independent Gaussian noise per stage, 1 = one draw per episode.
  public var noiseCorrelation: Float = 0.5
  /// Replay buffer capacity (transitions); the oldest are overwritten.
  public var bufferSize = 10_000
  /// En: epochs over the whole buffer at every stage end (FDU).
  public var fduEpochs = 5
  /// FDU minibatch size.
  public var fduBatch = 64

  // MARK: DNR reward
  /// k in r_w = exp(k · epoch/epochs) · s.
  public var rewardK: Float = 1
  /// s in r_w = exp(k · epoch/epochs) · s.
  public var rewardScale: Float = 10

  /// The defaults.
  public init() {}

  /// Checks every range (the settings table), and that the warm-up is shorter than the run.
  /// - Throws: `MetaweightError.invalidArgument` naming the key, the expected range and the value.
  public func validate() throws {
    try Self.table.check(self)
    if warmupStages >= stages {
      throw MetaweightError.invalidArgument(
        "warmup_stages: expected 0 <= warmup_stages < stages (\(stages)), got \(warmupStages)")
    }
  }

  /// r_w = exp(k · epoch/epochs) · s at the (fractional) epoch `epoch`.
  public func rewardWeight(epoch: Double) -> Double {
    exp(Double(rewardK) * epoch / Double(epochs)) * Double(rewardScale)
  }

  /// The settings table: one declaration per setting (name, type, range, key path, doc); the
  /// defaults are the fields' initial values. Parsing, validation, the spec and
  /// `mw_settings_table("law")` read it; the order is the spec's.
  public static let table = SettingsTable<LAWConfig>([
    .int("stages", \.stages, min: 1, max: 10_000, "N': stages a training run is split into (uniformly by optimizer steps)"),
    .int("warmup_stages", \.warmupStages, min: 0, max: 9_999,
         "The first stages train unweighted (K = 1) and store no transitions; fewer than stages"),
    .int("parallel", \.parallel, min: 1, max: 256, "N_a: episodes run at once on threads (each single-threaded while N_a > 1)"),
    .int("epochs", \.epochs, min: 1, max: 100_000, "Epochs over the training set per episode"),
    .int("batch_size", \.batchSize, min: 1, max: 1_048_576, "Classifier batch size"),
    .choice("optimizer", \.optimizer, [("sgd", .sgd), ("adam", .adam)], "Classifier optimizer"),
    .float("lr", \.lr, min: 0, minInclusive: false, "Classifier base learning rate"),
    .float("momentum", \.momentum, min: 0, max: 1, maxInclusive: false, "SGD momentum"),
    .float("weight_decay", \.weightDecay, min: 0, "Classifier L2 weight decay (the paper: 2e-5)"),
    .floats("lr_milestones", \.lrMilestones, min: 0, max: 1, minInclusive: false, maxInclusive: false, maxCount: 100,
            "Fractions of the run where the learning rate is multiplied by lr_decay (the paper: stages 10, 13, 16 of 20)"),
    .float("lr_decay", \.lrDecay, min: 0, minInclusive: false, "Learning-rate factor at each milestone"),
    .int("crop_padding", \.cropPadding, min: 0, max: 64,
         "Random-crop padding for image inputs (the same draws for both networks; 0 = none)"),
    .bool("flip", \.flip, "Random horizontal flips for image inputs"),
    .choice("label_encoding", \.labelEncoding, [("onehot", .oneHot), ("one_hot", .oneHot), ("scalar", .scalar)],
            "Label feature: onehot (C columns) or scalar (c/(C-1))"),
    .choice("density", \.density, [("cosine", .cosine), ("dot", .dot)],
            "Similarity of the density feature: cosine, or dot (the paper's Lo Lo^T)"),
    .float("action_scale", \.actionScale, min: 0, max: 100, minInclusive: false,
           "The actor outputs action_scale tanh(.), bounding every entry of (theta, b)"),
    .float("state_ema", \.stateEMA, min: 0, max: 1, maxInclusive: false,
           "beta of the EMA (over stages) of the state's loss and validation accuracy"),
    .bool("normalize_weights", \.normalizeWeights,
          "Divide each batch's weights by their mean, so a strategy only redistributes weight (the paper does not)"),
    .int("embedding_dim", \.embeddingDim, min: 1, max: 4096, "d: size of the learned stage embedding"),
    .float("embedding_std", \.embeddingStd, min: 0, max: 100,
           "Std of the embedding's Gaussian initialisation (small: stages start alike and share what is learned)"),
    .int("actor_hidden", \.actorHidden, min: 1, max: 4096, "Hidden width of the actor's three hidden layers"),
    .int("critic_hidden", \.criticHidden, min: 1, max: 4096, "Hidden width of the critic's three hidden layers"),
    .float("actor_lr", \.actorLR, min: 0, minInclusive: false, "Adam learning rate of the actor and the embedding (paper: 1e-5)"),
    .float("critic_lr", \.criticLR, min: 0, minInclusive: false, "Adam learning rate of the critic (paper: 1e-4)"),
    .float("actor_l2", \.actorL2, min: 0,
           "L2 penalty on the actor's pre-tanh outputs (keeps actions off the tanh bounds, pulls them toward K = 1)"),
    .float("gamma", \.gamma, min: 0, max: 1, maxInclusive: false, "Discount of the stage-level returns"),
    .float("tau", \.tau, min: 0, max: 1, minInclusive: false,
           "Soft-update rate of the target actor, embedding and critic after every FDU minibatch (1 = copy)"),
    .float("noise", \.noise, min: 0, "sigma_0 of the Gaussian exploration noise on the action"),
    .float("noise_decay", \.noiseDecay, min: 0, max: 1, minInclusive: false,
           "sigma is multiplied by this after every episode round"),
    .float("noise_correlation", \.noiseCorrelation, min: 0, max: 1,
           "rho of the noise between consecutive stages (AR(1); 0 = independent, 1 = one draw per episode)"),
    .int("buffer_size", \.bufferSize, min: 1, max: 10_000_000, "Replay buffer capacity (the oldest are overwritten)"),
    .int("fdu_epochs", \.fduEpochs, min: 1, max: 10_000, "En: passes over the whole buffer at every stage end (FDU)"),
    .int("fdu_batch", \.fduBatch, min: 1, max: 1_048_576, "FDU minibatch size"),
    .float("reward_k", \.rewardK, min: -50, max: 50, "k in the reward weight r_w = exp(k epoch/epochs) s"),
    .float("reward_scale", \.rewardScale, min: 0, minInclusive: false, "s in the reward weight r_w = exp(k epoch/epochs) s"),
  ])

  /// The keys `parse` accepts.
  public static var keys: [String] { table.settings.map(\.name) }

  /// Parses `law(key=value, ...)` or the bare `key=value, ...` (the core's spec grammar; lists as
  /// `0.5x0.8` or `none`), starting from the defaults, and validates the result.
  /// - Throws: `MetaweightError.invalidArgument` naming the unknown key or bad value.
  public static func parse(_ spec: String) throws -> LAWConfig {
    let trimmed = lawTrim(spec)
    let args: [SpecArgument]
    if trimmed.lowercased().hasPrefix("law"), lawTrim(String(trimmed.dropFirst(3))).hasPrefix("(") {
      args = try SpecGrammar.call(trimmed, context: "law config").arguments
    } else {
      args = try SpecGrammar.arguments(trimmed, context: "law config")
    }
    var c = LAWConfig()
    try table.apply(args, to: &c) { key in
      .invalidArgument("law config: unknown key '\(key)'; expected one of \(keys.joined(separator: ", "))")
    }
    try c.validate()
    return c
  }

  /// The spec string that parses back to this configuration: `key=value, ...` in table order.
  public var spec: String {
    Self.table.arguments(self).map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
  }

  /// The settings table as JSON (`mw_settings_table("law")`).
  public static var tableJSON: String {
    var o = JSONObject()
    o.add("kind", JSON.string("law"))
    o.add("settings", table.json(defaults: LAWConfig()))
    return o.text
  }
}

/// Strips spaces and tabs at both ends (no Foundation).
func lawTrim(_ s: String) -> String {
  var sub = Substring(s)
  while let f = sub.first, f == " " || f == "\t" || f == "\n" { sub = sub.dropFirst() }
  while let l = sub.last, l == " " || l == "\t" || l == "\n" { sub = sub.dropLast() }
  return String(sub)
}
