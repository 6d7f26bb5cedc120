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

  /// Checks every range.
  /// - Throws: `MetaweightError.invalidArgument` naming the key, the expected range and the value.
  public func validate() throws {
    func check(_ ok: Bool, _ key: String, _ expected: String, _ got: Any) throws {
      if !ok { throw MetaweightError.invalidArgument("\(key): expected \(expected), got \(got)") }
    }
    func finite(_ v: Float) -> Bool { v.isFinite }
    try check(stages >= 1 && stages <= 10_000, "stages", "1 <= stages <= 10000", stages)
    try check(warmupStages >= 0 && warmupStages < stages, "warmup_stages", "0 <= warmup_stages < stages (\(stages))", warmupStages)
    try check(parallel >= 1 && parallel <= 256, "parallel", "1 <= parallel <= 256", parallel)
    try check(epochs >= 1 && epochs <= 100_000, "epochs", "1 <= epochs <= 100000", epochs)
    try check(batchSize >= 1 && batchSize <= 1 << 20, "batch_size", "1 <= batch_size <= 2^20", batchSize)
    try check(finite(lr) && lr > 0, "lr", "a finite value > 0", lr)
    try check(finite(momentum) && momentum >= 0 && momentum < 1, "momentum", "0 <= momentum < 1", momentum)
    try check(finite(weightDecay) && weightDecay >= 0, "weight_decay", "a finite value >= 0", weightDecay)
    try check(lrMilestones.allSatisfy { $0.isFinite && $0 > 0 && $0 < 1 }, "lr_milestones", "fractions of the run in (0, 1)", lrMilestones)
    try check(lrMilestones.count <= 100, "lr_milestones", "at most 100 entries", lrMilestones.count)
    try check(finite(lrDecay) && lrDecay > 0, "lr_decay", "a finite value > 0", lrDecay)
    try check(cropPadding >= 0 && cropPadding <= 64, "crop_padding", "0 <= crop_padding <= 64", cropPadding)
    try check(finite(actionScale) && actionScale > 0 && actionScale <= 100, "action_scale", "0 < action_scale <= 100", actionScale)
    try check(finite(stateEMA) && stateEMA >= 0 && stateEMA < 1, "state_ema", "0 <= state_ema < 1", stateEMA)
    try check(embeddingDim >= 1 && embeddingDim <= 4096, "embedding_dim", "1 <= embedding_dim <= 4096", embeddingDim)
    try check(finite(embeddingStd) && embeddingStd >= 0 && embeddingStd <= 100, "embedding_std", "0 <= embedding_std <= 100", embeddingStd)
    try check(actorHidden >= 1 && actorHidden <= 4096, "actor_hidden", "1 <= actor_hidden <= 4096", actorHidden)
    try check(criticHidden >= 1 && criticHidden <= 4096, "critic_hidden", "1 <= critic_hidden <= 4096", criticHidden)
    try check(finite(actorLR) && actorLR > 0, "actor_lr", "a finite value > 0", actorLR)
    try check(finite(criticLR) && criticLR > 0, "critic_lr", "a finite value > 0", criticLR)
    try check(finite(actorL2) && actorL2 >= 0, "actor_l2", "a finite value >= 0", actorL2)
    try check(finite(gamma) && gamma >= 0 && gamma < 1, "gamma", "0 <= gamma < 1", gamma)
    try check(finite(tau) && tau > 0 && tau <= 1, "tau", "0 < tau <= 1", tau)
    try check(finite(noise) && noise >= 0, "noise", "a finite value >= 0", noise)
    try check(finite(noiseDecay) && noiseDecay > 0 && noiseDecay <= 1, "noise_decay", "0 < noise_decay <= 1", noiseDecay)
    try check(finite(noiseCorrelation) && noiseCorrelation >= 0 && noiseCorrelation <= 1, "noise_correlation", "0 <= noise_correlation <= 1", noiseCorrelation)
    try check(bufferSize >= 1 && bufferSize <= 10_000_000, "buffer_size", "1 <= buffer_size <= 10^7", bufferSize)
    try check(fduEpochs >= 1 && fduEpochs <= 10_000, "fdu_epochs", "1 <= fdu_epochs <= 10000", fduEpochs)
    try check(fduBatch >= 1 && fduBatch <= 1 << 20, "fdu_batch", "1 <= fdu_batch <= 2^20", fduBatch)
    try check(finite(rewardK) && abs(rewardK) <= 50, "reward_k", "a finite value in [-50, 50]", rewardK)
    try check(finite(rewardScale) && rewardScale > 0, "reward_scale", "a finite value > 0", rewardScale)
  }

  /// r_w = exp(k · epoch/epochs) · s at the (fractional) epoch `epoch`.
  public func rewardWeight(epoch: Double) -> Double {
    exp(Double(rewardK) * epoch / Double(epochs)) * Double(rewardScale)
  }

  /// The keys `parse` accepts.
  public static let keys = [
    "stages", "warmup_stages", "parallel", "epochs", "batch_size", "optimizer", "lr", "momentum",
    "weight_decay", "lr_milestones", "lr_decay", "crop_padding", "flip", "label_encoding", "density",
    "action_scale", "state_ema", "normalize_weights", "embedding_dim", "embedding_std", "actor_hidden", "critic_hidden", "actor_lr",
    "critic_lr", "actor_l2", "gamma", "tau", "noise", "noise_decay", "noise_correlation", "buffer_size", "fdu_epochs", "fdu_batch",
    "reward_k", "reward_scale",
  ]

  /// Parses `key=value, key=value, ...` (keys in `keys`; lists as `0.5x0.8` or `none`), starting
  /// from the defaults, and validates the result.
  /// - Throws: `MetaweightError.invalidArgument` naming the unknown key or bad value.
  public static func parse(_ spec: String) throws -> LAWConfig {
    var c = LAWConfig()
    for rawPart in spec.split(separator: ",", omittingEmptySubsequences: true) {
      let part = lawTrim(String(rawPart))
      if part.isEmpty { continue }
      let kv = part.split(separator: "=", maxSplits: 1).map { lawTrim(String($0)) }
      guard kv.count == 2, !kv[0].isEmpty else {
        throw MetaweightError.invalidArgument("law config: expected key=value, got '\(part)'")
      }
      let key = kv[0].lowercased(), raw = kv[1]
      func int() throws -> Int {
        guard let v = Int(raw) else { throw MetaweightError.invalidArgument("\(key): expected an integer, got '\(raw)'") }
        return v
      }
      func num() throws -> Float {
        guard let v = Double(raw), v.isFinite, abs(v) <= Double(Float.greatestFiniteMagnitude) else {
          throw MetaweightError.invalidArgument("\(key): expected a finite number, got '\(raw)'")
        }
        return Float(v)
      }
      func flag() throws -> Bool {
        switch raw.lowercased() {
        case "1", "true", "yes": return true
        case "0", "false", "no": return false
        default: throw MetaweightError.invalidArgument("\(key): expected 0/1 or true/false, got '\(raw)'")
        }
      }
      switch key {
      case "stages": c.stages = try int()
      case "warmup_stages": c.warmupStages = try int()
      case "parallel": c.parallel = try int()
      case "epochs": c.epochs = try int()
      case "batch_size": c.batchSize = try int()
      case "optimizer":
        switch raw.lowercased() {
        case "sgd": c.optimizer = .sgd
        case "adam": c.optimizer = .adam
        default: throw MetaweightError.invalidArgument("optimizer: expected 'sgd' or 'adam', got '\(raw)'")
        }
      case "lr": c.lr = try num()
      case "momentum": c.momentum = try num()
      case "weight_decay": c.weightDecay = try num()
      case "lr_milestones":
        if raw.lowercased() == "none" || raw.isEmpty {
          c.lrMilestones = []
        } else {
          c.lrMilestones = try raw.split(separator: "x").map {
            guard let v = Double(lawTrim(String($0))), v.isFinite else {
              throw MetaweightError.invalidArgument("lr_milestones: expected fractions like 0.5x0.75, got '\(raw)'")
            }
            return v
          }
        }
      case "lr_decay": c.lrDecay = try num()
      case "crop_padding": c.cropPadding = try int()
      case "flip": c.flip = try flag()
      case "label_encoding":
        switch raw.lowercased() {
        case "onehot", "one_hot": c.labelEncoding = .oneHot
        case "scalar": c.labelEncoding = .scalar
        default: throw MetaweightError.invalidArgument("label_encoding: expected 'onehot' or 'scalar', got '\(raw)'")
        }
      case "density":
        switch raw.lowercased() {
        case "cosine": c.density = .cosine
        case "dot": c.density = .dot
        default: throw MetaweightError.invalidArgument("density: expected 'cosine' or 'dot', got '\(raw)'")
        }
      case "action_scale": c.actionScale = try num()
      case "state_ema": c.stateEMA = try num()
      case "normalize_weights": c.normalizeWeights = try flag()
      case "embedding_dim": c.embeddingDim = try int()
      case "embedding_std": c.embeddingStd = try num()
      case "actor_hidden": c.actorHidden = try int()
      case "critic_hidden": c.criticHidden = try int()
      case "actor_lr": c.actorLR = try num()
      case "critic_lr": c.criticLR = try num()
      case "actor_l2": c.actorL2 = try num()
      case "gamma": c.gamma = try num()
      case "tau": c.tau = try num()
      case "noise": c.noise = try num()
      case "noise_decay": c.noiseDecay = try num()
      case "noise_correlation": c.noiseCorrelation = try num()
      case "buffer_size": c.bufferSize = try int()
      case "fdu_epochs": c.fduEpochs = try int()
      case "fdu_batch": c.fduBatch = try int()
      case "reward_k": c.rewardK = try num()
      case "reward_scale": c.rewardScale = try num()
      default:
        throw MetaweightError.invalidArgument("law config: unknown key '\(key)'; expected one of \(keys.joined(separator: ", "))")
      }
    }
    try c.validate()
    return c
  }

  /// The spec string that parses back to this configuration.
  public var spec: String {
    func f(_ v: Float) -> String { "\(v)" }
    let ms = lrMilestones.isEmpty ? "none" : lrMilestones.map { "\($0)" }.joined(separator: "x")
    return [
      "stages=\(stages)", "warmup_stages=\(warmupStages)", "parallel=\(parallel)", "epochs=\(epochs)",
      "batch_size=\(batchSize)", "optimizer=\(optimizer == .sgd ? "sgd" : "adam")", "lr=\(f(lr))",
      "momentum=\(f(momentum))", "weight_decay=\(f(weightDecay))", "lr_milestones=\(ms)", "lr_decay=\(f(lrDecay))",
      "crop_padding=\(cropPadding)", "flip=\(flip ? 1 : 0)",
      "label_encoding=\(labelEncoding == .oneHot ? "onehot" : "scalar")",
      "density=\(density == .cosine ? "cosine" : "dot")", "action_scale=\(f(actionScale))",
        "state_ema=\(f(stateEMA))", "normalize_weights=\(normalizeWeights ? 1 : 0)", "embedding_dim=\(embeddingDim)", "embedding_std=\(f(embeddingStd))", "actor_hidden=\(actorHidden)",
      "critic_hidden=\(criticHidden)", "actor_lr=\(f(actorLR))", "critic_lr=\(f(criticLR))", "actor_l2=\(f(actorL2))",
      "gamma=\(f(gamma))", "tau=\(f(tau))", "noise=\(f(noise))", "noise_decay=\(f(noiseDecay))", "noise_correlation=\(f(noiseCorrelation))",
      "buffer_size=\(bufferSize)", "fdu_epochs=\(fduEpochs)", "fdu_batch=\(fduBatch)",
      "reward_k=\(f(rewardK))", "reward_scale=\(f(rewardScale))",
    ].joined(separator: ", ")
  }
}

/// Strips spaces and tabs at both ends (no Foundation).
func lawTrim(_ s: String) -> String {
  var sub = Substring(s)
  while let f = sub.first, f == " " || f == "\t" || f == "\n" { sub = sub.dropFirst() }
  while let l = sub.last, l == " " || l == "\t" || l == "\n" { sub = sub.dropLast() }
  return String(sub)
}
