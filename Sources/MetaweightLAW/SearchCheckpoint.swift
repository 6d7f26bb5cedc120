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
      for (slot, e) in episodes.enumerated() {
        var snap = e.snapshot()
        if slot < slots.count {
          // The driver's noise, in the episode's section (where format 1 keeps it).
          snap.ints["rng.noise"] = slots[slot].noiseRNG.stateWords.map { Int64(bitPattern: $0) }
          snap.floats["noise"] = slots[slot].noise
        }
        ep.merge(snap, prefix: "law.episode.\(slot).")
      }
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
    slots = []
    remote = false
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
    var madeSlots: [LAWEpisodeSlot] = []
    for slot in 0..<na {
      let e = try makeEpisode(round: round, slot: slot, data: d)
      let section = r.extract(prefix: "law.episode.\(slot).")
      let nr = try section.requireInts("rng.noise", count: 4).map { UInt64(bitPattern: $0) }
      let nz = try section.requireFloats("noise")
      guard nz.isEmpty || nz.count == features.actionCount else {
        throw MetaweightError.io("checkpoint: an episode's noise has \(nz.count) values, expected \(features.actionCount)")
      }
      try e.restore(section)
      made.append(e)
      let s = LAWEpisodeSlot(index: e.index, noiseRNG: RNG(state: nr), state: e.state)
      s.noise = nz
      madeSlots.append(s)
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
    slots = madeSlots
    pendingActions = acts
  }

  /// Writes `checkpoint()` atomically (temporary file, fsync, rename) with a checksum.
  /// - Throws: `MetaweightError.io` when the file cannot be written.
  /// - Throws: `MetaweightError.invalidState` while a remote round is in progress (its episodes
  ///   are elsewhere; save between rounds).
  public func save(to path: String) throws {
    if remote && (nextStage != 0 || pendingActions != nil) {
      throw MetaweightError.invalidState(
        "law: a remote round is in progress (its episodes run elsewhere); save the search between rounds")
    }
    try checkpoint().write(to: path)
  }

  /// Reads a search checkpoint and restores it (see `restore`).
  /// - Throws: `MetaweightError.io` for an unreadable, truncated, corrupt or mismatching file.
  public func load(from path: String) throws { try restore(try Checkpoint.read(from: path)) }
}
