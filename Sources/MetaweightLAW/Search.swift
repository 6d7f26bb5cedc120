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
  public internal(set) var buffer: LAWReplayBuffer
  /// Index of the current (or next) episode round.
  public internal(set) var round = 0
  /// The stage the next `runStage` runs.
  public internal(set) var nextStage = 0
  /// Logs of the current round's episodes (or the last completed round's, until the next round
  /// starts).
  public var episodeLogs: [LAWEpisodeLog] { episodes.map { $0.log } }
  /// Rounds completed.
  public internal(set) var roundsCompleted = 0
  package var data: LAWData?
  var episodes: [LAWEpisode] = []
  /// The driver's side of the current round's episodes (noise, state), one per slot.
  var slots: [LAWEpisodeSlot] = []
  /// Whether the current round's episodes run outside this search (`Remote.swift`).
  package internal(set) var remote = false
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
    slots = []
    remote = false
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
  ///
  /// The phases are those a remote driver calls one by one (`Remote.swift`): the round's episodes
  /// are made and measured at stage 0 (`startRound`), the stage's actions drawn from the shared
  /// actor and each slot's noise (`drawActions`), the episodes run the stage (here: one thread
  /// each), and `finishStage` appends their transitions in slot order and runs the FDU.
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
    guard !remote else {
      throw MetaweightError.invalidState(
        "law: a remote round is in progress (its episodes run elsewhere); finish it through the remote calls")
    }
    let clock0 = LAWClock.now()
    let t = nextStage
    let na = config.parallel
    let actions: [[Float]?]
    if let started = pendingActions {
      actions = started  // continuing an interrupted stage
    } else {
      if cancellation.isSet { throw LAWCancelledError() }
      if t == 0 {
        var made: [LAWEpisode] = []
        for slot in 0..<na { made.append(try makeEpisode(round: round, slot: slot, data: d)) }
        episodes = made
        try runParallel(na) { made[$0].begin() }
        startRound(states: made.map { $0.state })
      }
      actions = drawActions()
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
    for ep in eps { ep.completed = nil }
    return finishStage(outcomes: outcomes.map { $0! }, clock0: clock0)
  }

  /// Episode `slot` of round `round` on `d`, seeded from the search seed and its global index.
  package func makeEpisode(round: Int, slot: Int, data d: LAWData) throws -> LAWEpisode {
    let index = round * config.parallel + slot
    return try LAWEpisode(
      index: index, round: round, slot: slot, config: config, spec: networkSpec, input: inputLayout,
      features: features, data: d, seed: episodeSeed(index))
  }

  /// Starts the round's driver slots (each episode's exploration noise generator and state) from
  /// the episodes' initial states (ā₀ measured by `LAWEpisode.begin`).
  func startRound(states: [LAWStageState]) {
    slots = states.enumerated().map { slot, s in
      let index = round * config.parallel + slot
      return LAWEpisodeSlot(index: index, noiseRNG: LAWEpisode.seeds(episodeSeed(index)).noise, state: s)
    }
  }

  /// The actions of stage `nextStage` for every slot (nil in warm-up stages): μ(s) of the slot's
  /// state plus its noise, clipped to ±action_scale; kept as `pendingActions` until the stage is
  /// finished (drawn once: a continued stage reuses them).
  func drawActions() -> [[Float]?] {
    if let started = pendingActions { return started }
    let warm = nextStage < config.warmupStages
    let sigma = noiseSigma(round: round)
    var drawn: [[Float]?] = []
    for slot in slots {
      if warm {
        drawn.append(nil)
        continue
      }
      var a = agent.actor.action(slot.state)
      let s = config.actionScale
      let eps = slot.nextNoise(count: a.count, sigma: sigma, rho: config.noiseCorrelation)
      for k in 0..<a.count { a[k] = min(max(a[k] + eps[k], -s), s) }
      drawn.append(a)
    }
    pendingActions = drawn
    return drawn
  }

  /// Ends stage `nextStage` with every slot's outcome (slot order): the stage log, the transitions
  /// appended to the buffer in slot order, the FDU (after the warm-up), the slots' new states and
  /// the counters (a new round after the last stage).
  func finishStage(outcomes: [LAWStageOutcome], clock0: Double) -> LAWStageLog {
    let t = nextStage
    let na = config.parallel
    let warm = t < config.warmupStages
    let sigma = noiseSigma(round: round)
    let actions = pendingActions ?? [[Float]?](repeating: nil, count: na)
    pendingActions = nil
    var log = LAWStageLog()
    log.round = round
    log.stage = t
    log.warmup = warm
    log.parallel = na
    log.noiseSigma = warm ? 0 : Double(sigma)
    var cor: Double = 0, nCor = 0, clean: Double = 0, nClean = 0
    for (i, o) in outcomes.enumerated() {
      log.reward += o.reward / Double(na)
      log.targetAcc += o.targetAcc / Double(na)
      log.referenceAcc += o.referenceAcc / Double(na)
      log.lossGap += o.lossGap / Double(na)
      if !o.weightCorrupted.isNaN { cor += o.weightCorrupted; nCor += 1 }
      if !o.weightClean.isNaN { clean += o.weightClean; nClean += 1 }
      if i < slots.count { slots[i].state = o.after }
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
      remote = false
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

/// The driver's side of one episode of a round: its exploration noise ε (AR(1) across stages,
/// drawn from the episode's noise generator) and its state, which the stage actions are
/// computed from. The episode itself (networks, batches) may run in this process or elsewhere.
final class LAWEpisodeSlot {
  /// Global episode index.
  let index: Int
  var noiseRNG: RNG
  /// ε; empty until the first weighted stage.
  var noise: [Float] = []
  /// The episode's state at the start of the next stage.
  var state: LAWStageState

  init(index: Int, noiseRNG: RNG, state: LAWStageState) {
    self.index = index
    self.noiseRNG = noiseRNG
    self.state = state
  }

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
}
