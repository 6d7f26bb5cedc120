import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting

#if canImport(Glibc)
  import Glibc
#endif

/// Where stages begin: a run of `total` optimizer steps is split uniformly into `stages` stages,
/// stage T covering steps ⌊T·total/N′⌋ ..< ⌊(T+1)·total/N′⌋ (3SM).
public enum LAWStages {
  /// First step of stage `t`.
  public static func start(ofStage t: Int, total: Int64, stages: Int) -> Int64 {
    Int64(t) * total / Int64(stages)
  }

  /// The stage step `step` (0-based) belongs to; steps past the end stay in the last stage.
  public static func stage(ofStep step: Int64, total: Int64, stages: Int) -> Int {
    guard total > 0 else { return stages - 1 }
    let t = ((step + 1) * Int64(stages) - 1) / total
    return Int(min(max(t, 0), Int64(stages - 1)))
  }
}

/// Computes LAW features and weights K for the batch a trainer has just forwarded.
public final class LAWBatchWeigher: @unchecked Sendable {
  /// Feature settings.
  public let settings: LAWFeatureSettings
  /// Features of the last batch [n × F].
  public private(set) var features = FloatBuffer(count: 0)
  /// Weights of the last batch [n].
  public private(set) var weights = FloatBuffer(count: 0)
  private var scratch = FloatBuffer(count: 0)
  /// Examples in the last batch.
  public private(set) var count = 0

  /// Creates a weigher.
  public init(settings: LAWFeatureSettings) { self.settings = settings }

  private func reserve(_ n: Int) {
    if weights.count < n {
      features = FloatBuffer(count: n * settings.featureCount)
      weights = FloatBuffer(count: n)
      scratch = FloatBuffer(count: 3 * n)
    }
  }

  /// K for the trainer's last forward pass of `n` examples with `action` ([θ, b]); all ones when
  /// `action` is nil (warm-up). The features are computed either way.
  @discardableResult
  public func compute(trainer: Trainer, n: Int, action: [Float]?) -> UnsafePointer<Float> {
    reserve(n)
    count = n
    trainer.labels32.withUnsafeBufferPointer { lp in
      LAWFeatures.compute(
        settings: settings, logits: UnsafePointer(trainer.tape.logits.pointer), probs: UnsafePointer(trainer.probs.pointer),
        losses: UnsafePointer(trainer.losses.pointer), labels: lp.baseAddress!, n: n, out: features.pointer,
        scratch: scratch.pointer)
    }
    if let a = action {
      a.withUnsafeBufferPointer { ap in
        LAWFeatures.weights(
          features: UnsafePointer(features.pointer), n: n, featureCount: settings.featureCount, action: ap.baseAddress!,
          out: weights.pointer, normalize: settings.normalizeWeights)
      }
    } else {
      weights.pointer.update(repeating: 1, count: n)
    }
    return UnsafePointer(weights.pointer)
  }
}

/// A learned LAW weighting strategy: the actor μ (MLP + stage embedding) and the settings needed
/// to apply it (feature encoding, number of stages, warm-up stages, state smoothing). Applying it
/// is deterministic: no exploration noise.
///
/// Saved as a `Checkpoint` (atomic write, CRC-32, format version) with sections `law.kind`
/// ("law-strategy"), `law.format` (1), `law.dims`, `law.floats`, `law.actor`, `law.embedding`
/// and `law.config` (the search settings, for the record).
public final class LAWStrategy: @unchecked Sendable {
  /// Version of the strategy file layout inside the checkpoint.
  public static let formatVersion: Int64 = 1
  /// μ.
  public let actor: LAWActor
  /// Feature settings (C, label encoding, density).
  public let features: LAWFeatureSettings
  /// Stages trained unweighted at the start of a run.
  public let warmupStages: Int
  /// β of the state's EMA.
  public let stateEMA: Float
  /// The spec of the search configuration that produced it.
  public let configSpec: String

  /// Wraps a copy of `actor`.
  public init(actor: LAWActor, features: LAWFeatureSettings, warmupStages: Int, stateEMA: Float, configSpec: String) {
    self.actor = actor.copy()
    self.features = features
    self.warmupStages = warmupStages
    self.stateEMA = stateEMA
    self.configSpec = configSpec
  }

  /// N′.
  public var stages: Int { actor.stages }

  /// A deep copy (its own scratch, safe to use from another thread).
  public func copy() -> LAWStrategy {
    LAWStrategy(actor: actor, features: features, warmupStages: warmupStages, stateEMA: stateEMA, configSpec: configSpec)
  }

  /// θ_T = μ(s_T) ([θ (F), b]).
  public func action(for state: LAWStageState) -> [Float] { actor.action(state) }

  /// Weights K for a batch given its logits [n × C] and labels, in state `state` (all ones in the
  /// warm-up stages).
  public func weights(
    logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, n: Int, state: LAWStageState,
    out: UnsafeMutablePointer<Float>
  ) {
    if state.stage < warmupStages {
      out.update(repeating: 1, count: n)
      return
    }
    let c = features.classes
    let probs = FloatBuffer(count: n * c)
    let losses = FloatBuffer(count: n)
    CrossEntropy.forward(logits: logits, labels: labels, n: n, c: c, losses: losses.pointer, probs: probs.pointer)
    let f = FloatBuffer(count: n * features.featureCount)
    let scratch = FloatBuffer(count: 3 * n)
    LAWFeatures.compute(
      settings: features, logits: logits, probs: UnsafePointer(probs.pointer), losses: UnsafePointer(losses.pointer),
      labels: labels, n: n, out: f.pointer, scratch: scratch.pointer)
    let a = action(for: state)
    a.withUnsafeBufferPointer {
      LAWFeatures.weights(
        features: UnsafePointer(f.pointer), n: n, featureCount: features.featureCount, action: $0.baseAddress!, out: out,
        normalize: features.normalizeWeights)
    }
  }

  /// The strategy as checkpoint sections.
  public func checkpoint() -> Checkpoint {
    var ck = Checkpoint()
    ck.setString("law.kind", "law-strategy")
    ck.ints["law.format"] = [LAWStrategy.formatVersion]
    ck.ints["law.dims"] = [
      Int64(actor.stages), Int64(actor.embeddingDim), Int64(actor.mlp.widths[1]), Int64(actor.actionCount),
      Int64(features.classes), Int64(features.labelEncoding.rawValue), Int64(features.density.rawValue),
      Int64(warmupStages), features.normalizeWeights ? 1 : 0,
    ]
    ck.floats["law.floats"] = [actor.scale, stateEMA]
    ck.floats["law.actor"] = actor.mlp.params.array
    ck.floats["law.embedding"] = actor.embedding.array
    ck.setString("law.config", configSpec)
    return ck
  }

  /// Rebuilds a strategy from checkpoint sections, checking kind, version, sizes and values.
  /// - Throws: `MetaweightError.io` naming what is missing or inconsistent.
  public convenience init(checkpoint ck: Checkpoint) throws {
    guard ck.string("law.kind") == "law-strategy" else {
      throw MetaweightError.io("strategy: the file is a metaweight checkpoint but not a LAW strategy")
    }
    try ck.validateValues()  // every float finite (the actor, its embedding, scale and EMA)
    let format = try ck.requireInts("law.format", count: 1)[0]
    guard format == LAWStrategy.formatVersion else {
      throw MetaweightError.io("strategy: format version \(format) is not supported (expected \(LAWStrategy.formatVersion))")
    }
    let d = try ck.requireInts("law.dims", count: 9)
    let fl = try ck.requireFloats("law.floats", count: 2)
    let stages = Int(clamping: d[0]), emb = Int(clamping: d[1]), hidden = Int(clamping: d[2])
    let actions = Int(clamping: d[3]), classes = Int(clamping: d[4]), warm = Int(clamping: d[7])
    guard stages >= 1, stages <= 10_000, emb >= 1, emb <= 4096, hidden >= 1, hidden <= 4096, classes >= 1,
      classes <= 1 << 20, warm >= 0, warm < stages
    else {
      throw MetaweightError.io("strategy: invalid dimensions \(d) (corrupted file?)")
    }
    guard let enc = LAWLabelEncoding(rawValue: Int32(clamping: d[5])), let dens = LAWDensity(rawValue: Int32(clamping: d[6])) else {
      throw MetaweightError.io("strategy: unknown label encoding or density code in \(d)")
    }
    guard d[8] == 0 || d[8] == 1 else { throw MetaweightError.io("strategy: invalid normalisation flag \(d[8])") }
    let feats = LAWFeatureSettings(classes: classes, labelEncoding: enc, density: dens, normalizeWeights: d[8] == 1)
    guard feats.actionCount == actions else {
      throw MetaweightError.io("strategy: action size \(actions) does not match the features (\(feats.actionCount))")
    }
    let scale = fl[0], ema = fl[1]
    guard scale.isFinite, scale > 0, ema.isFinite, ema >= 0, ema < 1 else {
      throw MetaweightError.io("strategy: invalid action scale \(scale) or state EMA \(ema)")
    }
    let actor = LAWActor(stages: stages, embeddingDim: emb, hidden: hidden, actionCount: actions, scale: scale, seed: 0)
    let p = try ck.requireFloats("law.actor", count: actor.mlp.parameterCount)
    let e = try ck.requireFloats("law.embedding", count: actor.embedding.count)
    guard p.allSatisfy({ $0.isFinite }), e.allSatisfy({ $0.isFinite }) else {
      throw MetaweightError.io("strategy: non-finite parameters (corrupted file?)")
    }
    actor.mlp.params.pointer.update(from: p, count: p.count)
    actor.embedding.pointer.update(from: e, count: e.count)
    self.init(actor: actor, features: feats, warmupStages: warm, stateEMA: ema, configSpec: ck.string("law.config") ?? "")
  }

  /// Writes the strategy atomically to `path`.
  public func save(to path: String) throws { try checkpoint().write(to: path) }

  /// Reads a strategy file.
  public static func load(from path: String) throws -> LAWStrategy {
    try LAWStrategy(checkpoint: try Checkpoint.read(from: path))
  }
}

/// The step of a LAW-weighted trainer, shared by an applied strategy (`LAWStrategyWeighting`) and a
/// search episode's target (`LAWEpisodeWeighting`): the train forward pass, K for the batch from
/// the stage's action (all ones without one), and the backward pass of Σᵢ Kᵢlᵢ / n into
/// `trainer.grads` (checked finite before the caller commits anything).
extension LAWBatchWeigher {
  /// Runs the forward pass and returns (mean loss, accuracy); `weigh` then supplies the stage's
  /// action from them (nil = K = 1) and the backward pass follows. Throws before `commit` is
  /// called when the loss or a gradient is not finite, so the caller's running state only moves
  /// on a step that the trainer will apply.
  func step(
    trainer: Trainer, x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>,
    action: (Double, Double) throws -> [Float]?, commit: () -> Void
  ) throws -> StepResult {
    var result = StepResult()
    (result.loss, result.accuracy) = try trainer.forwardCheckedTrainBatch(x: x, n: n, labels: labels)
    let w = compute(trainer: trainer, n: n, action: try action(result.loss, result.accuracy))
    let coef = trainer.coefficients.pointer
    let inv = 1 / Float(n)
    for i in 0..<n { coef[i] = w[i] * inv }
    trainer.backwardWeighted(coefficients: UnsafePointer(coef))
    guard Elementwise.allFinite(trainer.grads.pointer, count: trainer.grads.count) else {
      throw MetaweightError.nonFinite(
        "step \(trainer.stepCount + 1): a gradient is NaN or infinite; parameters were not updated")
    }
    commit()
    return result
  }
}

/// Applies a strategy as a trainer's weighting (`Trainer.weighting`, so its steps are
/// `Trainer.weightedStep` like every other method's): the run of `totalSteps` optimizer steps is
/// split into the strategy's N′ stages; at each stage start the state is advanced (EMA of the
/// stage's mean training loss and of the validation accuracy; the mean training-batch accuracy
/// when no validation set was given) and θ_T = μ(s_T) is computed once; every step of the stage
/// weights its batch with K = 1 + tanh(θ_T·f + b) (K = 1 during the warm-up stages).
/// Deterministic: no noise. Its checkpoint section is `law_strategy.*`.
public final class LAWStrategyWeighting: StepWeighting, @unchecked Sendable {
  /// The strategy (a private copy).
  public let strategy: LAWStrategy
  /// Steps of the whole run.
  public let totalSteps: Int64
  let valX: FloatBuffer?
  let valY: [Int64]
  /// State of the current stage (nil before the first step).
  public private(set) var state: LAWStageState?
  /// θ_T of the current stage.
  public private(set) var action: [Float] = []
  let weigher: LAWBatchWeigher
  var stageLoss: Double = 0
  var stageAcc: Double = 0
  var stageSteps = 0

  /// Creates the weighting for a run of `totalSteps` steps, with an optional validation set
  /// (`valX` holds `valY.count` examples in the network's input layout).
  public init(strategy: LAWStrategy, totalSteps: Int64, valX: [Float]?, valY: [Int64]) {
    self.strategy = strategy.copy()
    self.totalSteps = totalSteps
    self.valX = valX.map { FloatBuffer($0) }
    self.valY = valY
    weigher = LAWBatchWeigher(settings: strategy.features)
  }

  /// "law".
  public var methodName: String { "law" }
  /// A strategy needs no meta batch.
  public var needsMeta: Bool { false }
  /// K of the last step (its first `lastWeights.count` values).
  public var weights: FloatBuffer { weigher.weights }
  /// No weighting net.
  public var unitOutputs: UnsafePointer<Float>? { nil }

  /// Weights of the last step and their count.
  public var lastWeights: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: weigher.weights.pointer, count: weigher.count) }

  func validationAccuracy(_ trainer: Trainer) -> Double? {
    guard let x = valX, !valY.isEmpty else { return nil }
    return LAWEvaluation.accuracy(trainer: trainer, x: UnsafePointer(x.pointer), labels: valY)
  }

  /// See `StepWeighting`.
  public func reserve(trainer: Trainer, n: Int, m: Int) { trainer.reserve(batch: n) }

  /// See `StepWeighting`: the forward pass, the stage's state and action (advanced at a stage
  /// start, measured after this batch's forward pass), K and the backward pass. The stage state
  /// and running sums change only when the step succeeds.
  public func step(
    trainer: Trainer, x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>,
    xMeta: UnsafePointer<Float>?, m: Int, labelsMeta: UnsafePointer<Int64>?
  ) throws -> StepResult {
    var next = (state: state, action: action, loss: stageLoss, acc: stageAcc, steps: stageSteps)
    return try weigher.step(
      trainer: trainer, x: x, n: n, labels: labels,
      action: { loss, accuracy in
        let stages = strategy.stages
        let t = LAWStages.stage(ofStep: trainer.stepCount, total: totalSteps, stages: stages)
        if next.state == nil {
          let acc0 = validationAccuracy(trainer) ?? accuracy
          let s = LAWStageState(stage: 0, lossSmooth: 1, accSmooth: Float(acc0))
          next.state = s
          next.action = strategy.action(for: s)
        }
        if var s = next.state, s.stage < t {
          let meanLoss = next.steps > 0 ? next.loss / Double(next.steps) : loss
          let acc = validationAccuracy(trainer) ?? (next.steps > 0 ? next.acc / Double(next.steps) : accuracy)
          while s.stage < t {
            s = s.advanced(meanLoss: meanLoss, accuracy: acc, beta: strategy.stateEMA, classes: strategy.features.classes)
          }
          next.state = s
          next.action = strategy.action(for: s)
          next.loss = 0
          next.acc = 0
          next.steps = 0
        }
        next.loss += loss
        next.acc += accuracy
        next.steps += 1
        return t < strategy.warmupStages ? nil : next.action
      },
      commit: {
        (state, action, stageLoss, stageAcc, stageSteps) = (next.state, next.action, next.loss, next.acc, next.steps)
      })
  }

  /// A fingerprint of the strategy, the run length and the validation set (to refuse restoring
  /// the state into a trainer with a different strategy attached).
  var identity: [Int64] {
    var bytes: [UInt8] = []
    strategy.actor.mlp.params.array.withUnsafeBytes { bytes += $0 }
    strategy.actor.embedding.array.withUnsafeBytes { bytes += $0 }
    return [Int64(CRC32.checksum(bytes)), totalSteps, Int64(valY.count)]
  }

  /// Saves the weighting's running state (stage state, action, the stage's running sums).
  public func save(into ck: inout Checkpoint) {
    ck.ints["law_strategy.identity"] = identity
    ck.ints["law_strategy.stage"] = [Int64(state?.stage ?? -1), Int64(stageSteps)]
    ck.floats["law_strategy.state"] = [state?.lossSmooth ?? 0, state?.accSmooth ?? 0]
    ck.floats["law_strategy.action"] = action
    ck.setDoubles("law_strategy.sums", [stageLoss, stageAcc])
  }

  /// Checks that `ck` holds this weighting's state (same strategy, run length, validation set).
  /// - Throws: `MetaweightError.io` naming the mismatch.
  public func validate(_ ck: Checkpoint) throws {
    guard let id = ck.ints["law_strategy.identity"] else {
      throw MetaweightError.io(
        "checkpoint: the file was saved without a LAW strategy, but this trainer has one attached; detach it or load a file saved with it")
    }
    guard id == identity else {
      throw MetaweightError.io(
        "checkpoint: LAW strategy mismatch (the file was saved with a different strategy, total_steps or validation set; file \(id), trainer \(identity))")
    }
    _ = try ck.requireInts("law_strategy.stage", count: 2)
    _ = try ck.requireFloats("law_strategy.state", count: 2)
    _ = try ck.requireFloats("law_strategy.action")
    _ = try ck.requireDoubles("law_strategy.sums", count: 2)
  }

  /// Restores the state saved by `save(into:)` (call `validate` first).
  public func restore(_ ck: Checkpoint) throws {
    try validate(ck)
    let st = try ck.requireInts("law_strategy.stage", count: 2)
    let sv = try ck.requireFloats("law_strategy.state", count: 2)
    let sums = try ck.requireDoubles("law_strategy.sums", count: 2)
    state = st[0] < 0 ? nil : LAWStageState(stage: Int(st[0]), lossSmooth: sv[0], accSmooth: sv[1])
    stageSteps = Int(st[1])
    action = try ck.requireFloats("law_strategy.action")
    stageLoss = sums[0]
    stageAcc = sums[1]
  }
}

/// Validation accuracy helpers.
public enum LAWEvaluation {
  /// Eval-mode accuracy of the trainer's network on `labels.count` examples of `x`, in chunks of
  /// the capacity of `tape` (a tape of the trainer's network, reused between calls to avoid
  /// allocating one per evaluation) or of 500.
  public static func accuracy(
    trainer: Trainer, x: UnsafePointer<Float>, labels: [Int64], logits: FloatBuffer? = nil, tape: NetworkTape? = nil
  ) -> Double {
    let n = labels.count
    guard n > 0 else { return 0 }
    let net = trainer.network
    let c = net.classes
    let out: FloatBuffer
    if let l = logits, l.count >= n * c { out = l } else { out = FloatBuffer(count: n * c) }
    if let t = tape, t.capacity > 0 {
      let size = net.inputLayout.size
      var start = 0
      while start < n {
        let cnt = min(t.capacity, n - start)
        net.forward(x + start * size, batch: cnt, tape: t, mode: .eval, rng: trainer.dropoutRNG)
        (out.pointer + start * c).update(from: t.logits.pointer, count: cnt * c)
        start += cnt
      }
    } else {
      trainer.predict(x: x, n: n, out: out.pointer)
    }
    var correct = 0
    for i in 0..<n {
      let row = out.pointer + i * c
      var best = 0
      for j in 1..<max(c, 1) where row[j] > row[best] { best = j }
      if Int64(best) == labels[i] { correct += 1 }
    }
    return Double(correct) / Double(n)
  }
}
