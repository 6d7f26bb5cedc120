import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting
import Dispatch
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The data a search trains and validates on (copied in).
public struct LAWData: @unchecked Sendable {
  /// Training features [n × input size], in the user layout.
  public let x: FloatBuffer
  /// Training labels.
  public let y: [Int64]
  /// Known-corrupted flags of the training examples (diagnostics only; never used for training).
  public let corrupted: [Bool]?
  /// Validation features.
  public let valX: FloatBuffer
  /// Validation labels.
  public let valY: [Int64]
  /// Number of training examples.
  public var count: Int { y.count }

  /// Wraps copies of the arrays.
  public init(x: [Float], y: [Int64], corrupted: [Bool]?, valX: [Float], valY: [Int64]) {
    self.x = FloatBuffer(x)
    self.y = y
    self.corrupted = corrupted
    self.valX = FloatBuffer(valX)
    self.valY = valY
  }
}

/// Per-stage record of one episode (NaN for stages not run yet).
public struct LAWEpisodeLog: Sendable {
  /// Columns of `table`, in order.
  public static let columns = [
    "reward", "target_acc", "reference_acc", "loss_gap", "weight_corrupted", "weight_clean", "weight_mean",
    "target_loss", "reference_loss", "state_loss", "state_acc",
  ]
  /// Global episode index (round · N_a + slot).
  public let episode: Int
  /// Episode round.
  public let round: Int
  /// Thread slot within the round.
  public let slot: Int
  /// N′.
  public let stages: Int
  /// A.
  public let actionCount: Int
  /// Training examples.
  public let examples: Int
  /// Stages run so far.
  public internal(set) var stagesDone = 0
  /// [stages × columns.count], see `columns`: reward; target and reference validation accuracy at
  /// the stage end; mean train-batch loss gap target − reference over the stage (both measured on
  /// the same batch before their updates); mean K of known-corrupted / clean / all examples; mean
  /// train-batch loss of target and reference; the state's ℓ̄ and ā at the stage start.
  public internal(set) var table: [Double]
  /// Action applied in each stage (with noise), [stages × A]; zeros in warm-up stages.
  public internal(set) var actions: [Float]
  /// Mean K each training example received in each stage, [stages × examples]; NaN where the
  /// example was not drawn in that stage.
  public internal(set) var exampleWeights: [Float]

  init(episode: Int, round: Int, slot: Int, stages: Int, actionCount: Int, examples: Int) {
    self.episode = episode
    self.round = round
    self.slot = slot
    self.stages = stages
    self.actionCount = actionCount
    self.examples = examples
    table = [Double](repeating: .nan, count: stages * LAWEpisodeLog.columns.count)
    actions = [Float](repeating: 0, count: stages * actionCount)
    exampleWeights = [Float](repeating: .nan, count: stages * examples)
  }

  /// The value of column `name` for stage `stage`.
  public func value(_ name: String, stage: Int) -> Double {
    guard let c = LAWEpisodeLog.columns.firstIndex(of: name), stage >= 0, stage < stages else { return .nan }
    return table[stage * LAWEpisodeLog.columns.count + c]
  }
}

/// Summary of one `LAWSearch.runStage` call (all parallel episodes of one stage + the FDU).
public struct LAWStageLog: Sendable {
  /// Episode round (its episodes are round·N_a ..< (round+1)·N_a).
  public var round = 0
  /// Stage run (0-based).
  public var stage = 0
  /// Whether this stage ended the round.
  public var roundDone = false
  /// Whether the stage was a warm-up stage (K = 1, no transitions, no FDU).
  public var warmup = false
  /// N_a.
  public var parallel = 0
  /// Means over the parallel episodes.
  public var reward: Double = 0
  /// Mean target validation accuracy.
  public var targetAcc: Double = 0
  /// Mean reference validation accuracy.
  public var referenceAcc: Double = 0
  /// Mean train-batch loss gap target − reference.
  public var lossGap: Double = 0
  /// Mean K of known-corrupted examples (NaN without a mask).
  public var weightCorrupted: Double = .nan
  /// Mean K of clean examples (NaN without a mask).
  public var weightClean: Double = .nan
  /// σ of the exploration noise used.
  public var noiseSigma: Double = 0
  /// Mean critic loss over the FDU's last epoch (NaN when no update).
  public var criticLoss: Double = .nan
  /// Mean Q(s, μ(s)) over the FDU's last epoch (NaN when no update).
  public var actorQ: Double = .nan
  /// FDU minibatch updates made.
  public var fduUpdates = 0
  /// Transitions in the buffer after this stage.
  public var bufferSize = 0
  /// Wall-clock seconds of the call.
  public var seconds: Double = 0
  /// Of which the FDU (strategy-model training) took this long.
  public var fduSeconds: Double = 0
  /// Creates an empty log.
  public init() {}
}

/// What one episode's stage produced.
struct LAWStageOutcome {
  var before: LAWStageState
  var after: LAWStageState
  var reward: Double
  var targetAcc: Double
  var referenceAcc: Double
  var lossGap: Double
  var weightCorrupted: Double
  var weightClean: Double
}

/// One episode: a target and a reference classifier with identical architecture, initial
/// parameters, batches (order and augmentation draws) and dropout draws (DNR). Runs on one thread.
final class LAWEpisode: @unchecked Sendable {
  let index: Int
  let config: LAWConfig
  let data: LAWData
  let target: Trainer
  let reference: Trainer
  var dataRNG: RNG
  var noiseRNG: RNG
  let stepsPerEpoch: Int
  let totalSteps: Int64
  var state: LAWStageState
  var log: LAWEpisodeLog
  let weigher: LAWBatchWeigher
  var referenceSynced = false
  var perm: [Int] = []
  let xb: FloatBuffer
  let aug: FloatBuffer
  var yb: [Int64]
  let coef: FloatBuffer
  let valLogits: FloatBuffer
  let targetEvalTape: NetworkTape
  let referenceEvalTape: NetworkTape
  var exSum: [Float]
  var exCount: [Int32]
  /// The episode's exploration noise ε (AR(1) across stages); empty until the first weighted stage.
  var noise: [Float] = []
  /// The running sums of an interrupted stage (nil between stages).
  var progress: LAWStageProgress?
  /// The outcome of the current stage once this episode finished it (cleared when the search
  /// finishes the stage; kept when other episodes were interrupted).
  var completed: LAWStageOutcome?

  /// Advances ε: ε ← ρ·ε + √(1−ρ²)·σ·ξ (ε ← σ·ξ at the first weighted stage).
  func nextNoise(count: Int, sigma: Float, rho: Float) -> [Float] {
    if noise.count != count {
      noise = (0..<count).map { _ in sigma * noiseRNG.normal() }
    } else {
      let fresh = (1 - rho * rho).squareRoot() * sigma
      for k in 0..<count { noise[k] = rho * noise[k] + fresh * noiseRNG.normal() }
    }
    return noise
  }

  init(
    index: Int, round: Int, slot: Int, config: LAWConfig, spec: String, input: Layout, features: LAWFeatureSettings,
    data: LAWData, seed: UInt64
  ) throws {
    self.index = index
    self.config = config
    self.data = data
    var seeder = RNG(seed: seed)
    let netSeed = seeder.next(), trainerSeed = seeder.next()
    dataRNG = RNG(seed: seeder.next())
    noiseRNG = RNG(seed: seeder.next())
    let n = data.count
    let perEpoch = (n + config.batchSize - 1) / config.batchSize
    let total = Int64(config.epochs) * Int64(perEpoch)
    stepsPerEpoch = perEpoch
    totalSteps = total
    var opt = OptimizerConfig()
    opt.kind = config.optimizer
    opt.momentum = config.optimizer == .sgd ? config.momentum : 0
    opt.weightDecay = config.weightDecay
    var schedule = Schedule(baseLR: config.lr)
    if !config.lrMilestones.isEmpty {
      schedule.kind = .multiStep
      schedule.milestones = Array(Set(config.lrMilestones.map { Int64(($0 * Double(total)).rounded()) })).sorted()
      schedule.gamma = config.lrDecay
    }
    let targetNet = try Network(try SpecParser.parse(spec, input: input), seed: netSeed)
    let referenceNet = try Network(try SpecParser.parse(spec, input: input), seed: netSeed)
    referenceNet.params.copy(from: targetNet.params)
    referenceNet.state.copy(from: targetNet.state)
    target = try Trainer(network: targetNet, optimizer: opt, schedule: schedule, seed: trainerSeed)
    reference = try Trainer(network: referenceNet, optimizer: opt, schedule: schedule, seed: trainerSeed)
    weigher = LAWBatchWeigher(settings: features)
    log = LAWEpisodeLog(
      episode: index, round: round, slot: slot, stages: config.stages, actionCount: features.actionCount, examples: n)
    let b = min(config.batchSize, n)
    xb = FloatBuffer(count: b * input.size)
    aug = FloatBuffer(count: (config.cropPadding > 0 || config.flip) ? b * input.size : 0)
    yb = [Int64](repeating: 0, count: b)
    coef = FloatBuffer(count: b)
    valLogits = FloatBuffer(count: data.valY.count * features.classes)
    let evalBatch = max(1, min(data.valY.count, 500))
    targetEvalTape = targetNet.makeTape(batch: evalBatch)
    referenceEvalTape = referenceNet.makeTape(batch: evalBatch)
    exSum = [Float](repeating: 0, count: n)
    exCount = [Int32](repeating: 0, count: n)
    state = LAWStageState(stage: 0, lossSmooth: 1, accSmooth: 0)
  }

  /// Measures the untrained network's validation accuracy: ā₀.
  func begin() {
    let acc = accuracy(target)
    state = LAWStageState(stage: 0, lossSmooth: 1, accSmooth: Float(acc))
  }

  func accuracy(_ tr: Trainer) -> Double {
    let tape = tr === target ? targetEvalTape : referenceEvalTape
    return LAWEvaluation.accuracy(
      trainer: tr, x: UnsafePointer(data.valX.pointer), labels: data.valY, logits: valLogits, tape: tape)
  }

  /// One optimizer step of `tr` on the current batch with coefficients `coef`; returns the batch's
  /// mean loss measured before the step.
  private func forward(_ tr: Trainer, _ x: UnsafePointer<Float>, _ m: Int, stage: Int) throws -> Double {
    let (loss, _) = yb.withUnsafeBufferPointer { tr.forwardTrainBatch(x: x, n: m, labels: $0.baseAddress!) }
    guard loss.isFinite else {
      throw MetaweightError.nonFinite("LAW episode \(index), stage \(stage): the training loss is \(loss)")
    }
    return loss
  }

  private func update(_ tr: Trainer, stage: Int) throws {
    tr.backwardWeighted(coefficients: UnsafePointer(coef.pointer))
    guard Elementwise.allFinite(tr.grads.pointer, count: tr.grads.count) else {
      throw MetaweightError.nonFinite("LAW episode \(index), stage \(stage): a gradient is NaN or infinite")
    }
    tr.applyUpdate()
  }

  /// Runs stage `t` with action `action` (nil: warm-up, K = 1). Checks `cancel` before every
  /// optimizer step: when it is set, the stage's progress is kept and `LAWCancelledError` is
  /// thrown; the next call continues at the same step (so an interrupted and resumed stage gives
  /// bit-identical results). A stage that already finished returns its stored outcome.
  func runStage(_ t: Int, action: [Float]?, cancel: LAWCancellation? = nil) throws -> LAWStageOutcome {
    if let done = completed { return done }
    let warm = action == nil
    if !warm && !referenceSynced {
      // Warm-up trains both networks identically, so only the target was trained: copy it.
      try reference.restore(target.checkpoint())
      referenceSynced = true
    }
    let n = data.count
    let size = target.network.inputLayout.size
    let b = config.batchSize
    let start = LAWStages.start(ofStage: t, total: totalSteps, stages: config.stages)
    let end = LAWStages.start(ofStage: t + 1, total: totalSteps, stages: config.stages)
    if progress == nil {
      for i in 0..<n {
        exSum[i] = 0
        exCount[i] = 0
      }
      progress = LAWStageProgress(step: start)
    }
    guard var p = progress else { throw MetaweightError.invalidState("law: lost the stage's progress") }
    while p.step < end {
      if let c = cancel, c.isSet {
        progress = p
        throw LAWCancelledError()
      }
      let step = p.step
      let within = Int(step % Int64(stepsPerEpoch))
      if within == 0 || perm.isEmpty { perm = dataRNG.permutation(n) }
      let lo = within * b, hi = min(lo + b, n)
      let m = hi - lo
      for i in 0..<m {
        let src = perm[lo + i]
        (xb.pointer + i * size).update(from: data.x.pointer + src * size, count: size)
        yb[i] = data.y[src]
      }
      var input = UnsafePointer(xb.pointer)
      if aug.count > 0, case .image(let c, let h, let w) = target.network.inputLayout {
        var a = Augmentation()
        a.cropPadding = config.cropPadding
        a.horizontalFlip = config.flip
        a.apply(input, aug.pointer, n: m, c: c, h: h, w: w, rng: &dataRNG)
        input = UnsafePointer(aug.pointer)
      }
      let lt = try forward(target, input, m, stage: t)
      let w = weigher.compute(trainer: target, n: m, action: action)
      let inv = 1 / Float(m)
      for i in 0..<m { coef[i] = w[i] * inv }
      try update(target, stage: t)
      var lr = lt
      if !warm {
        lr = try forward(reference, input, m, stage: t)
        for i in 0..<m { coef[i] = inv }
        try update(reference, stage: t)
      }
      p.gap += lt - lr
      p.tLoss += lt
      p.rLoss += lr
      for i in 0..<m {
        let ex = perm[lo + i]
        let wi = w[i]
        exSum[ex] += wi
        exCount[ex] += 1
        p.wAll += Double(wi)
        if let cm = data.corrupted {
          if cm[ex] {
            p.wCor += Double(wi)
            p.nCor += 1
          } else {
            p.wClean += Double(wi)
            p.nClean += 1
          }
        }
      }
      p.step += 1
    }
    progress = nil
    let gap = p.gap, tLoss = p.tLoss, rLoss = p.rLoss, wCor = p.wCor, wClean = p.wClean, wAll = p.wAll
    let nCor = p.nCor, nClean = p.nClean
    let steps = Double(max(end - start, 1))
    let accT = accuracy(target)
    let accR = warm ? accT : accuracy(reference)
    let epoch = Double(end) / Double(stepsPerEpoch)
    let reward = warm ? 0 : config.rewardWeight(epoch: epoch) * (accT - accR)
    let before = state
    let after = state.advanced(meanLoss: tLoss / steps, accuracy: accT, beta: config.stateEMA, classes: target.network.classes)
    let seen = exCount.reduce(0) { $0 + Int($1) }
    // Log.
    let cols = LAWEpisodeLog.columns.count
    let row: [Double] = [
      reward, accT, accR, gap / steps, nCor > 0 ? wCor / Double(nCor) : .nan, nClean > 0 ? wClean / Double(nClean) : .nan,
      seen > 0 ? wAll / Double(seen) : .nan, tLoss / steps, rLoss / steps, Double(before.lossSmooth), Double(before.accSmooth),
    ]
    for (k, v) in row.enumerated() { log.table[t * cols + k] = v }
    if let a = action {
      for k in 0..<a.count { log.actions[t * log.actionCount + k] = a[k] }
    }
    for i in 0..<n where exCount[i] > 0 { log.exampleWeights[t * n + i] = exSum[i] / Float(exCount[i]) }
    log.stagesDone = t + 1
    state = after
    let outcome = LAWStageOutcome(
      before: before, after: after, reward: reward, targetAcc: accT, referenceAcc: accR, lossGap: gap / steps,
      weightCorrupted: nCor > 0 ? wCor / Double(nCor) : .nan, weightClean: nClean > 0 ? wClean / Double(nClean) : .nan)
    completed = outcome
    return outcome
  }

  /// Everything that evolves during the episode: both trainers, the episode's generators and
  /// exploration noise, its state and log, and the progress of an interrupted stage.
  func snapshot() -> Checkpoint {
    var ck = Checkpoint()
    ck.merge(target.checkpoint(), prefix: "target.")
    ck.merge(reference.checkpoint(), prefix: "reference.")
    ck.ints["rng.data"] = dataRNG.stateWords.map { Int64(bitPattern: $0) }
    ck.ints["rng.noise"] = noiseRNG.stateWords.map { Int64(bitPattern: $0) }
    ck.floats["noise"] = noise
    ck.ints["state.stage"] = [Int64(state.stage)]
    ck.floats["state.values"] = [state.lossSmooth, state.accSmooth]
    ck.ints["synced"] = [referenceSynced ? 1 : 0]
    ck.ints["perm"] = perm.map { Int64($0) }
    ck.ints["log.stages_done"] = [Int64(log.stagesDone)]
    ck.setDoubles("log.table", log.table)
    ck.floats["log.actions"] = log.actions
    ck.floats["log.example_weights"] = log.exampleWeights
    if let p = progress {
      ck.ints["progress.step"] = [p.step, Int64(p.nCor), Int64(p.nClean)]
      ck.setDoubles("progress.sums", [p.gap, p.tLoss, p.rLoss, p.wCor, p.wClean, p.wAll])
      ck.floats["progress.ex_sum"] = exSum
      ck.ints["progress.ex_count"] = exCount.map { Int64($0) }
    }
    if let o = completed {
      ck.ints["completed.stages"] = [Int64(o.before.stage), Int64(o.after.stage)]
      ck.floats["completed.states"] = [o.before.lossSmooth, o.before.accSmooth, o.after.lossSmooth, o.after.accSmooth]
      ck.setDoubles(
        "completed.values",
        [o.reward, o.targetAcc, o.referenceAcc, o.lossGap, o.weightCorrupted, o.weightClean])
    }
    return ck
  }

  /// Restores a `snapshot()` of an episode with the same index, data and settings.
  /// - Throws: `MetaweightError.io` naming a missing or mis-sized section.
  func restore(_ ck: Checkpoint) throws {
    let n = data.count
    let dr = try ck.requireInts("rng.data", count: 4).map { UInt64(bitPattern: $0) }
    let nr = try ck.requireInts("rng.noise", count: 4).map { UInt64(bitPattern: $0) }
    let nz = try ck.requireFloats("noise")
    let st = try ck.requireInts("state.stage", count: 1)[0]
    let sv = try ck.requireFloats("state.values", count: 2)
    let synced = try ck.requireInts("synced", count: 1)[0] != 0
    let pm = try ck.requireInts("perm").map { Int($0) }
    guard pm.isEmpty || (pm.count == n && pm.allSatisfy { $0 >= 0 && $0 < n }) else {
      throw MetaweightError.io("checkpoint: an episode's batch order does not match the data (\(pm.count) entries, \(n) examples)")
    }
    let done = try ck.requireInts("log.stages_done", count: 1)[0]
    // Stage indices select embedding rows and schedule positions: in range or refused.
    let k = Int64(config.stages)
    guard st >= 0, st <= k, done >= 0, done <= k, sv.allSatisfy({ $0.isFinite }) else {
      throw MetaweightError.io("checkpoint: an episode's stage state is out of range (stage \(st), done \(done), \(config.stages) stages)")
    }
    if let cs = ck.ints["completed.stages"], cs.count == 2, !cs.allSatisfy({ $0 >= 0 && $0 <= k }) {
      throw MetaweightError.io("checkpoint: an episode's completed stages \(cs) are outside 0...\(config.stages)")
    }
    let table = try ck.requireDoubles("log.table", count: log.table.count)
    let acts = try ck.requireFloats("log.actions", count: log.actions.count)
    let ew = try ck.requireFloats("log.example_weights", count: log.exampleWeights.count)
    var prog: LAWStageProgress? = nil
    var exS: [Float]? = nil, exC: [Int32]? = nil
    if ck.ints["progress.step"] != nil {
      let ps = try ck.requireInts("progress.step", count: 3)
      let sums = try ck.requireDoubles("progress.sums", count: 6)
      var p = LAWStageProgress(step: ps[0])
      p.nCor = Int(ps[1])
      p.nClean = Int(ps[2])
      (p.gap, p.tLoss, p.rLoss, p.wCor, p.wClean, p.wAll) = (sums[0], sums[1], sums[2], sums[3], sums[4], sums[5])
      prog = p
      exS = try ck.requireFloats("progress.ex_sum", count: n)
      exC = try ck.requireInts("progress.ex_count", count: n).map { Int32(truncatingIfNeeded: $0) }
    }
    var comp: LAWStageOutcome? = nil
    if ck.ints["completed.stages"] != nil {
      let cs = try ck.requireInts("completed.stages", count: 2)
      let cf = try ck.requireFloats("completed.states", count: 4)
      let cv = try ck.requireDoubles("completed.values", count: 6)
      comp = LAWStageOutcome(
        before: LAWStageState(stage: Int(cs[0]), lossSmooth: cf[0], accSmooth: cf[1]),
        after: LAWStageState(stage: Int(cs[1]), lossSmooth: cf[2], accSmooth: cf[3]), reward: cv[0], targetAcc: cv[1],
        referenceAcc: cv[2], lossGap: cv[3], weightCorrupted: cv[4], weightClean: cv[5])
    }
    try target.restore(ck.extract(prefix: "target."))
    try reference.restore(ck.extract(prefix: "reference."))
    dataRNG = RNG(state: dr)
    noiseRNG = RNG(state: nr)
    noise = nz
    state = LAWStageState(stage: Int(st), lossSmooth: sv[0], accSmooth: sv[1])
    referenceSynced = synced
    perm = pm
    log.stagesDone = Int(done)
    log.table = table
    log.actions = acts
    log.exampleWeights = ew
    progress = prog
    if let s = exS, let c = exC {
      exSum = s
      exCount = c
    }
    completed = comp
  }
}

/// Running sums of a stage in progress (kept when the stage is interrupted).
struct LAWStageProgress {
  var step: Int64
  var gap: Double = 0, tLoss: Double = 0, rLoss: Double = 0
  var wCor: Double = 0, wClean: Double = 0, wAll: Double = 0
  var nCor = 0, nClean = 0
  init(step: Int64) { self.step = step }
}

/// Thrown by a search stage that stopped because cancellation was requested.
public struct LAWCancelledError: Error, CustomStringConvertible {
  /// Creates the error.
  public init() {}
  /// The message.
  public var description: String { "law: the stage was interrupted (cancel requested)" }
}

/// A flag another thread (or a signal handler's thread) sets to stop a running search stage at
/// the next optimizer step.
public final class LAWCancellation: Sendable {
  private let flag = Atomic<Bool>(false)
  private let countdown = Atomic<Int>(0)
  /// A cleared flag.
  public init() {}
  /// Whether cancellation was requested (each check also advances an armed countdown).
  public var isSet: Bool {
    if flag.load(ordering: .acquiring) { return true }
    if countdown.load(ordering: .relaxed) > 0, countdown.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
      flag.store(true, ordering: .releasing)
      return true
    }
    return false
  }
  /// Requests (true) or clears (false) cancellation (clearing also disarms a countdown).
  public func set(_ on: Bool) {
    if !on { countdown.store(0, ordering: .releasing) }
    flag.store(on, ordering: .releasing)
  }
  /// Sets the flag at the `checks`-th check from now (tests: deterministic interruption points).
  func arm(afterChecks checks: Int) { countdown.store(max(checks, 1), ordering: .releasing) }
}

/// Collects the first error thrown by the bodies of a parallel loop.
final class LAWErrorBox: @unchecked Sendable {
  private var errors: [Int: Error] = [:]
  private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
  init() { pthread_mutex_init(lock, nil) }
  deinit {
    pthread_mutex_destroy(lock)
    lock.deallocate()
  }
  func set(_ i: Int, _ e: Error) {
    pthread_mutex_lock(lock)
    errors[i] = e
    pthread_mutex_unlock(lock)
  }
  /// The error of the lowest slot that failed (a real failure before a cancellation).
  var first: Error? {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    let failed = errors.filter { !($0.value is LAWCancelledError) }
    if let k = failed.keys.min() { return failed[k] }
    return errors.keys.min().flatMap { errors[$0] }
  }
}

/// A LAW search (Li et al. 2020): rounds of N_a parallel episodes, each a training run of E epochs
/// split into N′ stages; after every stage the transitions of all episodes go into one replay
/// buffer and the shared strategy model (DDPG actor + stage embedding, critic) is trained on the
/// whole buffer (FDU).
///
/// `runStage()` runs one stage of every episode of the current round (one thread per episode,
/// each single-threaded while N_a > 1), then the FDU on the caller's thread, and returns a
/// summary; the round's per-episode logs are in `episodeLogs`.
public final class LAWSearch: @unchecked Sendable {
  /// The settings.
  public let config: LAWConfig
  /// The classifier's spec.
  public let networkSpec: String
  /// The classifier's per-example input layout.
  public let inputLayout: Layout
  /// Number of classes.
  public let classes: Int
  /// Feature settings.
  public let features: LAWFeatureSettings
  /// The seed everything derives from.
  public let seed: UInt64
  /// The strategy model.
  public let agent: LAWAgent
  /// The shared replay buffer.
  public private(set) var buffer: LAWReplayBuffer
  /// Index of the current (or next) episode round.
  public private(set) var round = 0
  /// The stage the next `runStage` runs.
  public private(set) var nextStage = 0
  /// Logs of the current round's episodes (or the last completed round's, until the next round
  /// starts).
  public var episodeLogs: [LAWEpisodeLog] { episodes.map { $0.log } }
  /// Rounds completed.
  public private(set) var roundsCompleted = 0
  var data: LAWData?
  var episodes: [LAWEpisode] = []
  var fduRNG: RNG
  /// Set from another thread to stop `runStage` at the next optimizer step (see `runStage`).
  public let cancellation = LAWCancellation()
  /// The actions of the stage `nextStage` once it has started (nil between stages); a stage
  /// interrupted by `cancellation` keeps them so that the next call continues it.
  var pendingActions: [[Float]?]?
  /// Fingerprint of the data set by `setData`.
  var dataFingerprint: UInt64 = 0
  /// Episodes of a round in progress restored from a checkpoint, waiting for `setData` with
  /// the same data (fingerprint) to be rebuilt.
  var pendingEpisodes: (fingerprint: UInt64, snapshot: Checkpoint)?

  /// Creates a search for classifiers built from `networkSpec` (see `SpecParser`).
  /// - Throws: `MetaweightError.invalidArgument` for an invalid spec or configuration.
  public init(config: LAWConfig, networkSpec: String, inputLayout: Layout, seed: UInt64) throws {
    try config.validate()
    let probe = try Network(try SpecParser.parse(networkSpec, input: inputLayout), seed: 0)
    self.config = config
    self.networkSpec = networkSpec
    self.inputLayout = inputLayout
    classes = probe.classes
    features = LAWFeatureSettings(
      classes: classes, labelEncoding: config.labelEncoding, density: config.density,
      normalizeWeights: config.normalizeWeights)
    self.seed = seed
    var seeder = RNG(seed: seed ^ 0x1A57_5EA2_C400_0000)
    agent = LAWAgent(config: config, actionCount: features.actionCount, seed: seeder.next())
    fduRNG = RNG(seed: seeder.next())
    buffer = LAWReplayBuffer(capacity: config.bufferSize)
  }

  /// Optimizer steps per episode for `n` training examples.
  public func totalSteps(examples n: Int) -> Int64 {
    Int64(config.epochs) * Int64((n + config.batchSize - 1) / config.batchSize)
  }

  /// Sets the training and validation data (copied). A round in progress is discarded (its
  /// transitions already in the buffer stay).
  /// - Throws: `MetaweightError.invalidArgument` when the run has fewer steps than stages.
  public func setData(_ d: LAWData) throws {
    guard d.count > 0, !d.valY.isEmpty else {
      throw MetaweightError.invalidArgument("data: expected at least one training and one validation example")
    }
    let total = totalSteps(examples: d.count)
    guard total >= Int64(config.stages) else {
      throw MetaweightError.invalidArgument(
        "stages: a run of \(config.epochs) epochs of \(d.count) examples in batches of \(config.batchSize) has \(total) steps, fewer than the \(config.stages) stages; use more epochs, a smaller batch or fewer stages")
    }
    let fp = LAWSearch.fingerprint(d)
    if let pending = pendingEpisodes {
      pendingEpisodes = nil
      if pending.fingerprint == fp {
        data = d
        dataFingerprint = fp
        try rebuildEpisodes(pending.snapshot)
        return
      }
      discardRound()
    } else if nextStage != 0 || pendingActions != nil {
      // The same data again (e.g. after restoring a checkpoint): the round goes on.
      if data != nil && fp == dataFingerprint {
        data = d
        return
      }
      discardRound()
    }
    data = d
    dataFingerprint = fp
  }

  /// Abandons the round in progress (its transitions already in the buffer stay).
  func discardRound() {
    episodes = []
    nextStage = 0
    pendingActions = nil
    round += 1
  }

  /// A 64-bit fingerprint of every value of the data (to recognise it after a restore).
  static func fingerprint(_ d: LAWData) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    @inline(__always) func mix(_ v: UInt64) { h = (h ^ v) &* 0x0000_0100_0000_01B3 }
    func floats(_ b: FloatBuffer) {
      mix(UInt64(b.count))
      for i in 0..<b.count { mix(UInt64(b[i].bitPattern)) }
    }
    floats(d.x)
    floats(d.valX)
    mix(UInt64(d.y.count))
    for v in d.y { mix(UInt64(bitPattern: v)) }
    mix(UInt64(d.valY.count))
    for v in d.valY { mix(UInt64(bitPattern: v)) }
    if let c = d.corrupted {
      mix(1)
      for v in c { mix(v ? 1 : 0) }
    }
    return h
  }

  /// σ of the exploration noise in round `r`: σ₀ · decay^r.
  public func noiseSigma(round r: Int) -> Float { config.noise * pow(config.noiseDecay, Float(r)) }

  func episodeSeed(_ index: Int) -> UInt64 {
    var r = RNG(seed: seed &+ 0x9E37_79B9_7F4A_7C15 &* UInt64(index + 1))
    return r.next()
  }

  /// Runs `body(i)` for i in 0..<count, on `count` threads when count > 1 with metaweight's
  /// kernels and OpenBLAS single-threaded (restored afterwards); rethrows the lowest slot's error.
  func runParallel(_ count: Int, _ body: (Int) throws -> Void) throws {
    if count == 1 {
      try body(0)
      return
    }
    let saved = Parallel.threads
    Parallel.threads = 1
    BLAS.setThreads(1)
    defer {
      Parallel.threads = saved
      BLAS.setThreads(saved)
    }
    let errors = LAWErrorBox()
    withoutActuallyEscaping(body) { esc in
      let box = UncheckedSendable(esc)
      DispatchQueue.concurrentPerform(iterations: count) { i in
        do { try box.value(i) } catch { errors.set(i, error) }
      }
    }
    if let e = errors.first { throw e }
  }

  /// Runs one stage of every episode of the current round, stores their transitions and runs the
  /// FDU (after the warm-up). Starts a new round when the previous one has ended.
  /// - Throws: `MetaweightError.invalidState` before `setData`; `.nonFinite` if a classifier
  ///   diverges (the round is then abandoned and the next call starts a new one).
  public func runStage() throws -> LAWStageLog {
    guard let d = data else {
      throw MetaweightError.invalidState("law: no data; call set_data (or search with data) first")
    }
    guard pendingEpisodes == nil else {
      throw MetaweightError.invalidState(
        "law: the restored round in progress needs its data; call set_data with the same arrays first")
    }
    let clock0 = LAWClock.now()
    let t = nextStage
    let na = config.parallel
    let warm = t < config.warmupStages
    let sigma = noiseSigma(round: round)
    let actions: [[Float]?]
    if let started = pendingActions {
      actions = started  // continuing an interrupted stage
    } else {
      if cancellation.isSet { throw LAWCancelledError() }
      if t == 0 {
        var made: [LAWEpisode] = []
        for slot in 0..<na {
          let index = round * na + slot
          made.append(
            try LAWEpisode(
              index: index, round: round, slot: slot, config: config, spec: networkSpec, input: inputLayout,
              features: features, data: d, seed: episodeSeed(index)))
        }
        episodes = made
        try runParallel(na) { made[$0].begin() }
      }
      var drawn: [[Float]?] = []
      for ep in episodes {
        if warm {
          drawn.append(nil)
          continue
        }
        var a = agent.actor.action(ep.state)
        let s = config.actionScale
        let eps = ep.nextNoise(count: a.count, sigma: sigma, rho: config.noiseCorrelation)
        for k in 0..<a.count { a[k] = min(max(a[k] + eps[k], -s), s) }
        drawn.append(a)
      }
      actions = drawn
      pendingActions = drawn
    }
    let eps = episodes
    var outcomes = [LAWStageOutcome?](repeating: nil, count: na)
    let cancel = cancellation
    do {
      try outcomes.withUnsafeMutableBufferPointer { ob in
        let out = UncheckedSendable(ob)
        try runParallel(na) { i in out.value[i] = try eps[i].runStage(t, action: actions[i], cancel: cancel) }
      }
    } catch let e as LAWCancelledError {
      throw e  // the stage stays in progress; the next call continues it
    } catch {
      discardRound()
      throw error
    }
    pendingActions = nil
    for ep in eps { ep.completed = nil }
    var log = LAWStageLog()
    log.round = round
    log.stage = t
    log.warmup = warm
    log.parallel = na
    log.noiseSigma = warm ? 0 : Double(sigma)
    var cor: Double = 0, nCor = 0, clean: Double = 0, nClean = 0
    for (i, o) in outcomes.enumerated() {
      guard let o = o else { continue }
      log.reward += o.reward / Double(na)
      log.targetAcc += o.targetAcc / Double(na)
      log.referenceAcc += o.referenceAcc / Double(na)
      log.lossGap += o.lossGap / Double(na)
      if !o.weightCorrupted.isNaN { cor += o.weightCorrupted; nCor += 1 }
      if !o.weightClean.isNaN { clean += o.weightClean; nClean += 1 }
      if !warm, let a = actions[i] {
        buffer.append(
          LAWTransition(
            state: o.before, action: a, reward: Float(o.reward),
            next: LAWStageState(stage: min(o.after.stage, config.stages - 1), lossSmooth: o.after.lossSmooth, accSmooth: o.after.accSmooth),
            done: t == config.stages - 1))
      }
    }
    if nCor > 0 { log.weightCorrupted = cor / Double(nCor) }
    if nClean > 0 { log.weightClean = clean / Double(nClean) }
    if !warm {
      let fdu0 = LAWClock.now()
      defer { log.fduSeconds = LAWClock.now() - fdu0 }
      let r = fullDataUpdate(agent: agent, buffer: buffer, epochs: config.fduEpochs, batch: config.fduBatch, rng: &fduRNG)
      log.fduUpdates = r.updates
      log.criticLoss = r.criticLoss
      log.actorQ = r.actorQ
    }
    log.bufferSize = buffer.count
    nextStage = t + 1
    if nextStage == config.stages {
      nextStage = 0
      round += 1
      roundsCompleted += 1
      log.roundDone = true
    }
    log.seconds = LAWClock.now() - clock0
    return log
  }

  /// The current strategy (a deterministic copy of the actor and its settings).
  public func strategy() -> LAWStrategy {
    LAWStrategy(
      actor: agent.actor, features: features, warmupStages: config.warmupStages, stateEMA: config.stateEMA,
      configSpec: config.spec)
  }

  /// Starts from a saved strategy: copies its actor and embedding into the online and target
  /// actor (the critic is untouched).
  /// - Throws: `MetaweightError.invalidArgument` when its sizes differ from this search's.
  public func loadStrategy(_ s: LAWStrategy) throws {
    let a = agent.actor
    guard s.features == features, s.stages == a.stages, s.actor.embeddingDim == a.embeddingDim,
      s.actor.mlp.widths == a.mlp.widths
    else {
      throw MetaweightError.invalidArgument(
        "strategy: its sizes (stages \(s.stages), classes \(s.features.classes), embedding \(s.actor.embeddingDim), actor \(s.actor.mlp.widths)) do not match this search's (stages \(a.stages), classes \(features.classes), embedding \(a.embeddingDim), actor \(a.mlp.widths))")
    }
    a.mlp.params.copy(from: s.actor.mlp.params)
    a.embedding.copy(from: s.actor.embedding)
    agent.targetActor.copy(from: s.actor.mlp.params)
    agent.targetEmbedding.copy(from: s.actor.embedding)
  }
}

extension LAWSearch {
  /// Everything needed to continue the search bit-identically: the strategy model (actor,
  /// critic, targets, their Adam states), the replay buffer, the FDU generator, the round and
  /// stage counters and, when a round is in progress (also mid-stage after an interruption),
  /// every episode's classifiers, generators, noise, log and progress. The data is not saved;
  /// a fingerprint of it is, and the round continues when `setData` gets the same data.
  public func checkpoint() -> Checkpoint {
    var ck = Checkpoint()
    ck.setString("law.kind", "search")
    ck.setString("law.config", config.spec)
    ck.setString("law.network_spec", networkSpec)
    ck.ints["law.identity"] = [Int64(bitPattern: seed), Int64(inputLayout.size), Int64(classes)]
    agent.save(into: &ck)
    buffer.save(into: &ck, prefix: "law.buffer.")
    ck.ints["law.rng.fdu"] = fduRNG.stateWords.map { Int64(bitPattern: $0) }
    ck.ints["law.counters"] = [Int64(round), Int64(nextStage), Int64(roundsCompleted)]
    if let pending = pendingEpisodes {
      ck.merge(pending.snapshot, prefix: "")
      return ck
    }
    let inProgress = nextStage != 0 || pendingActions != nil
    if inProgress {
      var ep = Checkpoint()
      ep.ints["law.round.fingerprint"] = [Int64(bitPattern: dataFingerprint)]
      ep.ints["law.round.examples"] = [Int64(data?.count ?? 0)]
      if let acts = pendingActions {
        ep.ints["law.round.pending"] = acts.map { $0 == nil ? 0 : 1 }
        ep.floats["law.round.pending_actions"] = acts.flatMap { $0 ?? [] }
      }
      for (slot, e) in episodes.enumerated() { ep.merge(e.snapshot(), prefix: "law.episode.\(slot).") }
      ck.merge(ep, prefix: "")
    }
    return ck
  }

  /// Restores a search checkpoint made by a search with the same configuration, network spec,
  /// input layout and seed. A round in progress continues once `setData` gets the same data
  /// (at once when this search already holds it).
  /// - Throws: `MetaweightError.io` naming the mismatch or the bad section; nothing changes then.
  public func restore(_ ck: Checkpoint) throws {
    guard ck.string("law.kind") == "search" else {
      throw MetaweightError.io("checkpoint: not a LAW search checkpoint (a trainer or strategy file?)")
    }
    guard let cfg = ck.string("law.config"), cfg == config.spec else {
      throw MetaweightError.io(
        "checkpoint: LAW configuration mismatch (file: \(ck.string("law.config") ?? "none"); this search: \(config.spec))")
    }
    guard ck.string("law.network_spec") == networkSpec else {
      throw MetaweightError.io(
        "checkpoint: architecture mismatch (file: '\(ck.string("law.network_spec") ?? "none")', this search: '\(networkSpec)')")
    }
    let id = try ck.requireInts("law.identity", count: 3)
    guard id[1] == Int64(inputLayout.size), id[2] == Int64(classes) else {
      throw MetaweightError.io(
        "checkpoint: architecture mismatch (file: input size \(id[1]), \(id[2]) classes; this search: \(inputLayout.size), \(classes))")
    }
    guard UInt64(bitPattern: id[0]) == seed else {
      throw MetaweightError.io("checkpoint: seed mismatch (file: \(UInt64(bitPattern: id[0])), this search: \(seed))")
    }
    let fdu = try ck.requireInts("law.rng.fdu", count: 4).map { UInt64(bitPattern: $0) }
    let counters = try ck.requireInts("law.counters", count: 3)
    guard counters.allSatisfy({ $0 >= 0 }), counters[1] < Int64(config.stages) else {
      throw MetaweightError.io("checkpoint: LAW counters are inconsistent (\(counters))")
    }
    var newBuffer = LAWReplayBuffer(capacity: config.bufferSize)
    // The agent's networks and Adam states, and the replay buffer (logs may hold NaN).
    try ck.validateValues { $0.hasPrefix("law.agent.") || $0.hasPrefix("law.buffer.") }
    try newBuffer.restore(ck, prefix: "law.buffer.", actionWidth: features.actionCount, stages: config.stages)
    // Validate the agent by restoring into a scratch copy first, so a failure changes nothing.
    let scratch = LAWAgent(config: config, actionCount: features.actionCount, seed: 0)
    try scratch.restore(ck)
    let inProgress = ck.ints["law.round.fingerprint"] != nil
    var round: Checkpoint? = nil
    if inProgress {
      var r = Checkpoint()
      for (k, v) in ck.ints where k.hasPrefix("law.round.") || k.hasPrefix("law.episode.") { r.ints[k] = v }
      for (k, v) in ck.floats where k.hasPrefix("law.round.") || k.hasPrefix("law.episode.") { r.floats[k] = v }
      for (k, v) in ck.bytes where k.hasPrefix("law.round.") || k.hasPrefix("law.episode.") { r.bytes[k] = v }
      round = r
    }
    try agent.restore(ck)
    buffer = newBuffer
    fduRNG = RNG(state: fdu)
    self.round = Int(counters[0])
    nextStage = Int(counters[1])
    roundsCompleted = Int(counters[2])
    episodes = []
    pendingActions = nil
    pendingEpisodes = nil
    if let r = round {
      let fp = UInt64(bitPattern: try r.requireInts("law.round.fingerprint", count: 1)[0])
      if data != nil, fp == dataFingerprint {
        try rebuildEpisodes(r)
      } else {
        pendingEpisodes = (fp, r)
      }
    }
  }

  /// Recreates the current round's episodes on the current data and restores their snapshots.
  func rebuildEpisodes(_ r: Checkpoint) throws {
    guard let d = data else { throw MetaweightError.invalidState("law: no data to rebuild the round on") }
    let examples = try r.requireInts("law.round.examples", count: 1)[0]
    guard examples == Int64(d.count) else {
      throw MetaweightError.io("checkpoint: the round in progress was run on \(examples) examples, the data has \(d.count)")
    }
    let na = config.parallel
    var made: [LAWEpisode] = []
    for slot in 0..<na {
      let index = round * na + slot
      let e = try LAWEpisode(
        index: index, round: round, slot: slot, config: config, spec: networkSpec, input: inputLayout,
        features: features, data: d, seed: episodeSeed(index))
      try e.restore(r.extract(prefix: "law.episode.\(slot)."))
      made.append(e)
    }
    var acts: [[Float]?]? = nil
    if let mask = r.ints["law.round.pending"] {
      guard mask.count == na else { throw MetaweightError.io("checkpoint: pending actions for \(mask.count) episodes, expected \(na)") }
      let a = features.actionCount
      let flat = try r.requireFloats("law.round.pending_actions", count: mask.filter { $0 != 0 }.count * a)
      var k = 0
      var list: [[Float]?] = []
      for m in mask {
        if m != 0 {
          list.append(Array(flat[k..<(k + a)]))
          k += a
        } else {
          list.append(nil)
        }
      }
      acts = list
    }
    episodes = made
    pendingActions = acts
  }

  /// Writes `checkpoint()` atomically (temporary file, fsync, rename) with a checksum.
  /// - Throws: `MetaweightError.io` when the file cannot be written.
  public func save(to path: String) throws { try checkpoint().write(to: path) }

  /// Reads a search checkpoint and restores it (see `restore`).
  /// - Throws: `MetaweightError.io` for an unreadable, truncated, corrupt or mismatching file.
  public func load(from path: String) throws { try restore(try Checkpoint.read(from: path)) }
}

/// Monotonic seconds.
enum LAWClock {
  static func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
  }
}
