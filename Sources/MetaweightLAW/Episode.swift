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

/// What one episode's stage produced: the state before and after it, the DNR reward and the
/// stage's means (what the search's driver needs for the transition and the stage log).
package struct LAWStageOutcome: Sendable, Equatable {
  package var before: LAWStageState
  package var after: LAWStageState
  package var reward: Double
  package var targetAcc: Double
  package var referenceAcc: Double
  package var lossGap: Double
  package var weightCorrupted: Double
  package var weightClean: Double

  /// Number of values of `values` (the C ABI's outcome array).
  package static let valueCount = 12

  /// [before (stage, ℓ̄, ā), after (stage, ℓ̄, ā), reward, target acc, reference acc, loss gap,
  /// K corrupted, K clean] as doubles (the states' floats convert exactly).
  package var values: [Double] {
    [
      Double(before.stage), Double(before.lossSmooth), Double(before.accSmooth), Double(after.stage),
      Double(after.lossSmooth), Double(after.accSmooth), reward, targetAcc, referenceAcc, lossGap, weightCorrupted,
      weightClean,
    ]
  }

  /// The outcome of `values` (as written by `values`).
  /// - Throws: `MetaweightError.invalidArgument` for a wrong count, stage indices outside
  ///   0...`stages`, or non-finite states.
  package init(values v: [Double], stages: Int) throws {
    guard v.count == LAWStageOutcome.valueCount else {
      throw MetaweightError.invalidArgument("outcome: expected \(LAWStageOutcome.valueCount) values, got \(v.count)")
    }
    guard v[0] >= 0, v[0] <= Double(stages), v[3] >= 0, v[3] <= Double(stages), v[0] == v[0].rounded(),
      v[3] == v[3].rounded(), [v[1], v[2], v[4], v[5]].allSatisfy({ $0.isFinite })
    else {
      throw MetaweightError.invalidArgument("outcome: invalid states \(Array(v[0..<6])) for \(stages) stages")
    }
    before = LAWStageState(stage: Int(v[0]), lossSmooth: Float(v[1]), accSmooth: Float(v[2]))
    after = LAWStageState(stage: Int(v[3]), lossSmooth: Float(v[4]), accSmooth: Float(v[5]))
    (reward, targetAcc, referenceAcc, lossGap, weightCorrupted, weightClean) = (v[6], v[7], v[8], v[9], v[10], v[11])
  }

  init(
    before: LAWStageState, after: LAWStageState, reward: Double, targetAcc: Double, referenceAcc: Double,
    lossGap: Double, weightCorrupted: Double, weightClean: Double
  ) {
    (self.before, self.after, self.reward, self.targetAcc, self.referenceAcc) = (before, after, reward, targetAcc, referenceAcc)
    (self.lossGap, self.weightCorrupted, self.weightClean) = (lossGap, weightCorrupted, weightClean)
  }
}

/// The weighting of an episode's target network: K from the stage's action (with the search's
/// exploration noise; nil in warm-up stages: K = 1), set by the episode at each stage start. The
/// target's steps are `Trainer.weightedStep` with it, the same entry point as every method's and
/// an applied strategy's; it keeps no checkpoint section (the episode snapshot holds the action
/// of a stage in progress in its search's checkpoint).
final class LAWEpisodeWeighting: StepWeighting, @unchecked Sendable {
  let weigher: LAWBatchWeigher
  /// θ_T of the stage being run (nil = K = 1).
  var action: [Float]?

  init(settings: LAWFeatureSettings) { weigher = LAWBatchWeigher(settings: settings) }

  var methodName: String { "law" }
  var needsMeta: Bool { false }
  var weights: FloatBuffer { weigher.weights }
  var unitOutputs: UnsafePointer<Float>? { nil }
  func reserve(trainer: Trainer, n: Int, m: Int) { trainer.reserve(batch: n) }
  func step(
    trainer: Trainer, x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>,
    xMeta: UnsafePointer<Float>?, m: Int, labelsMeta: UnsafePointer<Int64>?
  ) throws -> StepResult {
    try weigher.step(trainer: trainer, x: x, n: n, labels: labels, action: { _, _ in self.action }, commit: {})
  }
  func save(into ck: inout Checkpoint) {}
  func validate(_ ck: Checkpoint) throws {}
  func restore(_ ck: Checkpoint) throws {}
}

/// One episode: a target and a reference classifier with identical architecture, initial
/// parameters, batches (order and augmentation draws) and dropout draws (DNR). Runs on one thread:
/// in a search's thread, or on its own (a remote episode driven through the C ABI).
///
/// Both networks take their steps through the trainer's step entry points: the target
/// `Trainer.weightedStep` with the stage's `LAWEpisodeWeighting`, the reference the plain
/// `Trainer.step`. The exploration noise is the driver's (`LAWEpisodeSlot`), not the episode's.
package final class LAWEpisode: @unchecked Sendable {
  package let index: Int
  package let config: LAWConfig
  let data: LAWData
  let target: Trainer
  let reference: Trainer
  var dataRNG: RNG
  let stepsPerEpoch: Int
  let totalSteps: Int64
  package private(set) var state: LAWStageState
  package private(set) var log: LAWEpisodeLog
  let weighting: LAWEpisodeWeighting
  /// A, the size of an action.
  package var actionCount: Int { weighting.weigher.settings.actionCount }
  var referenceSynced = false
  var perm: [Int] = []
  let xb: FloatBuffer
  let aug: FloatBuffer
  var yb: [Int64]
  let valLogits: FloatBuffer
  let targetEvalTape: NetworkTape
  let referenceEvalTape: NetworkTape
  var exSum: [Float]
  var exCount: [Int32]
  /// The running sums of an interrupted stage (nil between stages).
  var progress: LAWStageProgress?
  /// The outcome of the current stage once this episode finished it (cleared when the search
  /// finishes the stage; kept when other episodes were interrupted).
  package var completed: LAWStageOutcome?

  /// The generators an episode seed gives, in draw order: networks' initialisation, the
  /// trainers' seed, the batch order and augmentation, the driver's exploration noise.
  static func seeds(_ seed: UInt64) -> (network: UInt64, trainer: UInt64, data: RNG, noise: RNG) {
    var seeder = RNG(seed: seed)
    let netSeed = seeder.next(), trainerSeed = seeder.next()
    let data = RNG(seed: seeder.next())
    return (netSeed, trainerSeed, data, RNG(seed: seeder.next()))
  }

  init(
    index: Int, round: Int, slot: Int, config: LAWConfig, spec: String, input: Layout, features: LAWFeatureSettings,
    data: LAWData, seed: UInt64
  ) throws {
    self.index = index
    self.config = config
    self.data = data
    let seeds = LAWEpisode.seeds(seed)
    let netSeed = seeds.network, trainerSeed = seeds.trainer
    dataRNG = seeds.data
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
    weighting = LAWEpisodeWeighting(settings: features)
    log = LAWEpisodeLog(
      episode: index, round: round, slot: slot, stages: config.stages, actionCount: features.actionCount, examples: n)
    let b = min(config.batchSize, n)
    xb = FloatBuffer(count: b * input.size)
    aug = FloatBuffer(count: (config.cropPadding > 0 || config.flip) ? b * input.size : 0)
    yb = [Int64](repeating: 0, count: b)
    valLogits = FloatBuffer(count: data.valY.count * features.classes)
    let evalBatch = max(1, min(data.valY.count, 500))
    targetEvalTape = targetNet.makeTape(batch: evalBatch)
    referenceEvalTape = referenceNet.makeTape(batch: evalBatch)
    exSum = [Float](repeating: 0, count: n)
    exCount = [Int32](repeating: 0, count: n)
    state = LAWStageState(stage: 0, lossSmooth: 1, accSmooth: 0)
  }

  /// Measures the untrained network's validation accuracy: ā₀.
  package func begin() {
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
  /// One optimizer step of `tr` on the gathered batch of `m` examples through the trainer's step
  /// entry points (the target weighted by `weighting`, the reference unweighted); returns the
  /// batch's mean loss measured before the update. A failure names the episode and stage.
  private func trainStep(_ tr: Trainer, _ x: UnsafePointer<Float>, _ m: Int, stage: Int, weighted: Bool) throws -> Double {
    do {
      return try yb.withUnsafeBufferPointer { yp in
        let labels = yp.baseAddress!
        if weighted {
          return try tr.weightedStep(weighting, x: x, n: m, labels: labels, xMeta: nil, m: 0, labelsMeta: nil).loss
        }
        return try tr.step(x: x, n: m, labels: labels).loss
      }
    } catch MetaweightError.nonFinite(let message) {
      throw MetaweightError.nonFinite("LAW episode \(index), stage \(stage): \(message)")
    }
  }

  /// Runs stage `t` with action `action` (nil: warm-up, K = 1). Checks `cancel` before every
  /// optimizer step: when it is set, the stage's progress is kept and `LAWCancelledError` is
  /// thrown; the next call continues at the same step (so an interrupted and resumed stage gives
  /// bit-identical results). A stage that already finished returns its stored outcome.
  package func runStage(_ t: Int, action: [Float]?, cancel: LAWCancellation? = nil) throws -> LAWStageOutcome {
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
      weighting.action = action
      let lt = try trainStep(target, input, m, stage: t, weighted: true)
      let w = UnsafePointer(weighting.weights.pointer)
      var lr = lt
      if !warm { lr = try trainStep(reference, input, m, stage: t, weighted: false) }
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

  /// Everything that evolves during the episode: both trainers, the episode's batch generator,
  /// its state and log, and the progress of an interrupted stage (the exploration noise is the
  /// driver's: `LAWEpisodeSlot`).
  package func snapshot() -> Checkpoint {
    var ck = Checkpoint()
    ck.merge(target.checkpoint(), prefix: "target.")
    ck.merge(reference.checkpoint(), prefix: "reference.")
    ck.ints["rng.data"] = dataRNG.stateWords.map { Int64(bitPattern: $0) }
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
  /// - Throws: `MetaweightError.io` naming a missing or mis-sized section; the episode is then
  ///   unchanged.
  package func restore(_ ck: Checkpoint) throws {
    let n = data.count
    let dr = try ck.requireInts("rng.data", count: 4).map { UInt64(bitPattern: $0) }
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
    // The reference is checked by restoring it; if that fails, the target goes back to where it
    // was, so a refused snapshot changes nothing.
    let targetBefore = target.checkpoint()
    try target.restore(ck.extract(prefix: "target."))
    do {
      try reference.restore(ck.extract(prefix: "reference."))
    } catch {
      try? target.restore(targetBefore)
      throw error
    }
    dataRNG = RNG(state: dr)
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

