import CMetaweight
import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting
import MetaweightLAW

// MARK: - LAW (learning to auto weight): searches and strategies

/// Validates an array of examples against `layout` and returns N (as `batchSize` does for networks).
func lawExamples(_ x: UnsafePointer<Float>?, _ shape: UnsafePointer<Int64>?, _ rank: Int32, _ layout: Layout, _ name: String) throws -> Int {
  _ = try require(x, name)
  let s = try require(shape, "\(name) shape")
  let expected: [Int]
  switch layout {
  case .flat(let d): expected = [d]
  case .image(let c, let h, let w): expected = [c, h, w]
  }
  let want = expected.map(String.init).joined(separator: ", ")
  guard Int(rank) == expected.count + 1 else {
    throw ABIError.shape("\(name): expected a \(expected.count + 1)-d array (N, \(want)), got \(rank)-d")
  }
  let dims = (0..<Int(rank)).map { Int(s[$0]) }
  guard dims[0] > 0 else { throw ABIError.shape("\(name): expected at least one example, got an empty array (N = \(dims[0]))") }
  guard Array(dims[1...]) == expected else {
    throw ABIError.shape("\(name): expected per-example shape (\(want)), got (\(dims[1...].map(String.init).joined(separator: ", ")))")
  }
  guard dims[0] <= maxElements / max(layout.size, 1) else { throw ABIError.shape("\(name): \(dims[0]) examples are too many") }
  return dims[0]
}

func lawPath(_ path: UnsafePointer<CChar>?) throws -> String {
  let p = String(cString: try require(path, "path"))
  guard !p.isEmpty else { throw ABIError.argument("path: expected a file path, got an empty string") }
  return p
}

@_cdecl("mw_law_create")
public func _mw_law_create(
  _ config: UnsafePointer<CChar>?, _ spec: UnsafePointer<CChar>?, _ shape: UnsafePointer<Int64>?, _ rank: Int32,
  _ seed: UInt64, _ out: UnsafeMutablePointer<mw_law>?
) -> mw_status {
  guarded {
    let c = config.map { String(cString: $0) } ?? ""
    let s = String(cString: try require(spec, "network_spec"))
    let o = try require(out, "out")
    let layout = try inputLayout(shape, rank)
    let cfg = try LAWConfig.parse(c)
    let search = try LAWSearch(config: cfg, networkSpec: s, inputLayout: layout, seed: seed)
    o.pointee = Registry.shared.add(search)
  }
}

@_cdecl("mw_law_free")
public func _mw_law_free(_ h: mw_law) -> mw_status {
  guarded { try free(h, as: LAWSearch.self, "mw_law_free") }
}

@_cdecl("mw_law_info")
public func _mw_law_info(
  _ h: mw_law, _ stages: UnsafeMutablePointer<Int64>?, _ parallel: UnsafeMutablePointer<Int64>?,
  _ classes: UnsafeMutablePointer<Int64>?, _ actions: UnsafeMutablePointer<Int64>?, _ rounds: UnsafeMutablePointer<Int64>?,
  _ next: UnsafeMutablePointer<Int64>?, _ buffer: UnsafeMutablePointer<Int64>?
) -> mw_status {
  guarded {
    try using(h, as: LAWSearch.self, "law") { s in
      stages?.pointee = Int64(s.config.stages)
      parallel?.pointee = Int64(s.config.parallel)
      classes?.pointee = Int64(s.classes)
      actions?.pointee = Int64(s.features.actionCount)
      rounds?.pointee = Int64(s.roundsCompleted)
      next?.pointee = Int64(s.nextStage)
      buffer?.pointee = Int64(s.buffer.count)
    }
  }
}

@_cdecl("mw_law_config")
public func _mw_law_config(_ h: mw_law, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int64, _ len: UnsafeMutablePointer<Int64>?) -> mw_status {
  guarded {
    try using(h, as: LAWSearch.self, "law") { s in writeString(s.config.spec, buf, cap, len) }
  }
}

@_cdecl("mw_law_set_data")
public func _mw_law_set_data(
  _ h: mw_law, _ x: UnsafePointer<Float>?, _ shape: UnsafePointer<Int64>?, _ rank: Int32,
  _ y: UnsafePointer<Int64>?, _ ny: Int64, _ corrupted: UnsafePointer<UInt8>?, _ ncor: Int64,
  _ xv: UnsafePointer<Float>?, _ vshape: UnsafePointer<Int64>?, _ vrank: Int32,
  _ yv: UnsafePointer<Int64>?, _ nyv: Int64
) -> mw_status {
  guarded {
    try using(h, as: LAWSearch.self, "law") { s in
      let layout = s.inputLayout
      let n = try lawExamples(x, shape, rank, layout, "x")
      let m = try lawExamples(xv, vshape, vrank, layout, "x_val")
      guard let xp = x, let xvp = xv else { return }
      // Copied into core-owned memory first, then checked; only the copies are used.
      let xs = try copyIn(xp, n * layout.size, "x")
      try xs.withUnsafeBufferPointer { try checkFinite(try require($0.baseAddress, "x"), xs.count, "x") }
      let xvs = try copyIn(xvp, m * layout.size, "x_val")
      try xvs.withUnsafeBufferPointer { try checkFinite(try require($0.baseAddress, "x_val"), xvs.count, "x_val") }
      let labels = try checkLabels(y, ny, n: n, classes: s.classes, "y")
      let vlabels = try checkLabels(yv, nyv, n: m, classes: s.classes, "y_val")
      var mask: [Bool]? = nil
      if let c = corrupted {
        guard ncor == Int64(n) else { throw ABIError.shape("corrupted: expected \(n) flags (one per example of x), got \(ncor)") }
        mask = try copyIn(c, n, "corrupted").map { $0 != 0 }
      } else if ncor != 0 {
        throw ABIError.argument("corrupted: got a count of \(ncor) but no array")
      }
      let d = LAWData(x: xs, y: labels, corrupted: mask, valX: xvs, valY: vlabels)
      try s.setData(d)
    }
  }
}

@_cdecl("mw_law_run_stage")
public func _mw_law_run_stage(_ h: mw_law, _ out: UnsafeMutablePointer<mw_law_stage_log>?) -> mw_status {
  guarded {
    try using(h, as: LAWSearch.self, "law") { s in
      let l: LAWStageLog
      do {
        l = try s.runStage()
      } catch is LAWCancelledError {
        throw ABIError(
          code: MW_E_INTERRUPTED,
          message: "law: interrupted (mw_law_cancel) at a step boundary of stage \(s.nextStage) of round \(s.round); the next mw_law_run_stage continues it")
      }
      if let o = out {
        o.pointee = mw_law_stage_log(
          round: Int64(l.round), stage: Int32(l.stage), round_done: l.roundDone ? 1 : 0, warmup: l.warmup ? 1 : 0,
          parallel: Int32(l.parallel), reward: l.reward, target_acc: l.targetAcc, reference_acc: l.referenceAcc,
          loss_gap: l.lossGap, weight_corrupted: l.weightCorrupted, weight_clean: l.weightClean,
          noise_sigma: l.noiseSigma, critic_loss: l.criticLoss, actor_q: l.actorQ, fdu_updates: Int64(l.fduUpdates),
          buffer_size: Int64(l.bufferSize), seconds: l.seconds, fdu_seconds: l.fduSeconds)
      }
    }
  }
}

@_cdecl("mw_law_cancel")
public func _mw_law_cancel(_ h: mw_law, _ on: Int32) -> mw_status {
  guarded {
    // No object lock: this is called from another thread while mw_law_run_stage holds it.
    guard let e = Registry.shared.entry(h), let s = e.object as? LAWSearch else {
      throw ABIError(code: MW_E_HANDLE, message: "law: handle \(h) is closed, freed or was never created")
    }
    s.cancellation.set(on != 0)
  }
}

@_cdecl("mw_law_save")
public func _mw_law_save(_ h: mw_law, _ path: UnsafePointer<CChar>?) -> mw_status {
  guarded {
    let p = try lawPath(path)
    try using(h, as: LAWSearch.self, "law") { s in try s.save(to: p) }
  }
}

@_cdecl("mw_law_load")
public func _mw_law_load(_ h: mw_law, _ path: UnsafePointer<CChar>?) -> mw_status {
  guarded {
    let p = try lawPath(path)
    let ck = try Checkpoint.read(from: p)
    try using(h, as: LAWSearch.self, "law") { s in try s.restore(ck) }
  }
}

/// The log of episode `slot` of the search's current round.
func lawEpisode(_ s: LAWSearch, _ slot: Int32) throws -> LAWEpisodeLog {
  let logs = s.episodeLogs
  guard !logs.isEmpty else {
    throw ABIError(code: MW_E_STATE, message: "episode log: no episode has run yet (or the last round was abandoned)")
  }
  guard slot >= 0, Int(slot) < logs.count else {
    throw ABIError.argument("slot: expected 0 <= slot < \(logs.count) (parallel episodes), got \(slot)")
  }
  return logs[Int(slot)]
}

@_cdecl("mw_law_episode_log")
public func _mw_law_episode_log(
  _ h: mw_law, _ slot: Int32, _ episode: UnsafeMutablePointer<Int64>?, _ round: UnsafeMutablePointer<Int64>?,
  _ done: UnsafeMutablePointer<Int64>?, _ out: UnsafeMutablePointer<Double>?, _ count: Int64
) -> mw_status {
  guarded {
    try using(h, as: LAWSearch.self, "law") { s in
      let log = try lawEpisode(s, slot)
      episode?.pointee = Int64(log.episode)
      round?.pointee = Int64(log.round)
      done?.pointee = Int64(log.stagesDone)
      if let o = out {
        guard count == Int64(log.table.count) else {
          throw ABIError.shape("out: expected \(log.table.count) doubles (stages x \(LAWEpisodeLog.columns.count)), got \(count)")
        }
        for i in 0..<log.table.count { o[i] = log.table[i] }
      }
    }
  }
}

@_cdecl("mw_law_episode_actions")
public func _mw_law_episode_actions(_ h: mw_law, _ slot: Int32, _ out: UnsafeMutablePointer<Float>?, _ count: Int64) -> mw_status {
  guarded {
    let o = try require(out, "out")
    try using(h, as: LAWSearch.self, "law") { s in
      let log = try lawEpisode(s, slot)
      guard count == Int64(log.actions.count) else {
        throw ABIError.shape("out: expected \(log.actions.count) floats (stages x action_dim), got \(count)")
      }
      for i in 0..<log.actions.count { o[i] = log.actions[i] }
    }
  }
}

@_cdecl("mw_law_episode_weights")
public func _mw_law_episode_weights(_ h: mw_law, _ slot: Int32, _ out: UnsafeMutablePointer<Float>?, _ count: Int64) -> mw_status {
  guarded {
    let o = try require(out, "out")
    try using(h, as: LAWSearch.self, "law") { s in
      let log = try lawEpisode(s, slot)
      guard count == Int64(log.exampleWeights.count) else {
        throw ABIError.shape("out: expected \(log.exampleWeights.count) floats (stages x training examples), got \(count)")
      }
      log.exampleWeights.withUnsafeBufferPointer { if let b = $0.baseAddress { o.update(from: b, count: $0.count) } }
    }
  }
}

@_cdecl("mw_law_save_strategy")
public func _mw_law_save_strategy(_ h: mw_law, _ path: UnsafePointer<CChar>?) -> mw_status {
  guarded {
    let p = try lawPath(path)
    try using(h, as: LAWSearch.self, "law") { s in try s.strategy().save(to: p) }
  }
}

@_cdecl("mw_law_load_strategy")
public func _mw_law_load_strategy(_ h: mw_law, _ path: UnsafePointer<CChar>?) -> mw_status {
  guarded {
    let p = try lawPath(path)
    let strategy = try LAWStrategy.load(from: p)
    try using(h, as: LAWSearch.self, "law") { s in try s.loadStrategy(strategy) }
  }
}

@_cdecl("mw_law_strategy")
public func _mw_law_strategy(_ h: mw_law, _ out: UnsafeMutablePointer<mw_strategy>?) -> mw_status {
  guarded {
    let o = try require(out, "out")
    try using(h, as: LAWSearch.self, "law") { s in o.pointee = Registry.shared.add(s.strategy()) }
  }
}

@_cdecl("mw_strategy_load")
public func _mw_strategy_load(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<mw_strategy>?) -> mw_status {
  guarded {
    let p = try lawPath(path)
    let o = try require(out, "out")
    o.pointee = Registry.shared.add(try LAWStrategy.load(from: p))
  }
}

@_cdecl("mw_strategy_save")
public func _mw_strategy_save(_ h: mw_strategy, _ path: UnsafePointer<CChar>?) -> mw_status {
  guarded {
    let p = try lawPath(path)
    try using(h, as: LAWStrategy.self, "strategy") { s in try s.save(to: p) }
  }
}

@_cdecl("mw_strategy_free")
public func _mw_strategy_free(_ h: mw_strategy) -> mw_status {
  guarded { try free(h, as: LAWStrategy.self, "mw_strategy_free") }
}

@_cdecl("mw_strategy_info")
public func _mw_strategy_info(
  _ h: mw_strategy, _ stages: UnsafeMutablePointer<Int64>?, _ classes: UnsafeMutablePointer<Int64>?,
  _ actions: UnsafeMutablePointer<Int64>?, _ warm: UnsafeMutablePointer<Int64>?, _ enc: UnsafeMutablePointer<Int32>?,
  _ dens: UnsafeMutablePointer<Int32>?
) -> mw_status {
  guarded {
    try using(h, as: LAWStrategy.self, "strategy") { s in
      stages?.pointee = Int64(s.stages)
      classes?.pointee = Int64(s.features.classes)
      actions?.pointee = Int64(s.features.actionCount)
      warm?.pointee = Int64(s.warmupStages)
      enc?.pointee = s.features.labelEncoding.rawValue
      dens?.pointee = s.features.density.rawValue
    }
  }
}

@_cdecl("mw_strategy_config")
public func _mw_strategy_config(_ h: mw_strategy, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int64, _ len: UnsafeMutablePointer<Int64>?) -> mw_status {
  guarded {
    try using(h, as: LAWStrategy.self, "strategy") { s in writeString(s.configSpec, buf, cap, len) }
  }
}

/// Validates a state given across the ABI.
func lawState(_ s: LAWStrategy, _ stage: Int32, _ loss: Float, _ acc: Float) throws -> LAWStageState {
  guard stage >= 0, Int(stage) < s.stages else {
    throw ABIError.argument("stage: expected 0 <= stage < \(s.stages), got \(stage)")
  }
  guard loss.isFinite, acc.isFinite else {
    throw ABIError.nonFinite("state: expected finite loss_smooth and acc_smooth, got \(loss), \(acc)")
  }
  return LAWStageState(stage: Int(stage), lossSmooth: loss, accSmooth: acc)
}

@_cdecl("mw_strategy_action")
public func _mw_strategy_action(
  _ h: mw_strategy, _ stage: Int32, _ loss: Float, _ acc: Float, _ out: UnsafeMutablePointer<Float>?, _ count: Int64
) -> mw_status {
  guarded {
    let o = try require(out, "out")
    try using(h, as: LAWStrategy.self, "strategy") { s in
      let st = try lawState(s, stage, loss, acc)
      guard count == Int64(s.features.actionCount) else {
        throw ABIError.shape("out: expected \(s.features.actionCount) floats (action_dim), got \(count)")
      }
      let a = s.action(for: st)
      for i in 0..<a.count { o[i] = a[i] }
    }
  }
}

@_cdecl("mw_strategy_weights")
public func _mw_strategy_weights(
  _ h: mw_strategy, _ stage: Int32, _ loss: Float, _ acc: Float, _ logits: UnsafePointer<Float>?, _ n: Int64,
  _ classes: Int64, _ labels: UnsafePointer<Int64>?, _ out: UnsafeMutablePointer<Float>?
) -> mw_status {
  guarded {
    let l = try require(logits, "logits")
    let o = try require(out, "out")
    try using(h, as: LAWStrategy.self, "strategy") { s in
      let st = try lawState(s, stage, loss, acc)
      guard classes == Int64(s.features.classes) else {
        throw ABIError.shape("logits: expected \(s.features.classes) classes per row (the strategy's), got \(classes)")
      }
      guard n >= 1, n <= Int64(maxElements) / max(classes, 1) else {
        throw ABIError.shape("logits: expected at least one row, got \(n)")
      }
      let count = Int(n)
      let lc = try copyFinite(l, count * Int(classes), "logits")
      let y = try checkLabels(labels, n, n: count, classes: Int(classes), "labels")
      let y32 = y.map { Int32(truncatingIfNeeded: $0) }  // checked: 0 <= label < classes
      try y32.withUnsafeBufferPointer {
        s.weights(logits: lc.pointer, labels: try require($0.baseAddress, "labels"), n: count, state: st, out: o)
      }
    }
  }
}

@_cdecl("mw_trainer_set_strategy")
public func _mw_trainer_set_strategy(
  _ h: mw_trainer, _ sh: mw_strategy, _ total: Int64, _ xv: UnsafePointer<Float>?, _ vshape: UnsafePointer<Int64>?,
  _ vrank: Int32, _ yv: UnsafePointer<Int64>?, _ nyv: Int64
) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in
      if sh == 0 {
        if tr.weighting is LAWStrategyWeighting { tr.weighting = nil }
        return
      }
      if let ws = tr.weighting, !(ws is LAWStrategyWeighting) {
        throw ABIError(
          code: MW_E_STATE, message: "strategy: strategies weight ERM steps; the trainer uses \(ws.methodName)")
      }
      guard total >= 1, total <= 1 << 48 else {
        throw ABIError.argument("total_steps: expected 1 <= total_steps <= 2^48, got \(total)")
      }
      var valX: [Float]? = nil
      var valY: [Int64] = []
      if xv != nil || yv != nil {
        let m = try batchSize(xv, vshape, vrank, tr.network, "x_val")
        guard let p = xv else { return }
        let xs = try copyIn(p, m * tr.network.inputLayout.size, "x_val")
        try xs.withUnsafeBufferPointer { try checkFinite(try require($0.baseAddress, "x_val"), xs.count, "x_val") }
        valX = xs
        valY = try checkLabels(yv, nyv, n: m, classes: tr.network.classes, "y_val")
      }
      try using(sh, as: LAWStrategy.self, "strategy") { s in
        guard s.features.classes == tr.network.classes else {
          throw ABIError.argument(
            "strategy: it was learned for \(s.features.classes) classes but the trainer's network has \(tr.network.classes)")
        }
        tr.weighting = LAWStrategyWeighting(strategy: s, totalSteps: total, valX: valX, valY: valY)
      }
    }
  }
}

@_cdecl("mw_trainer_strategy_state")
public func _mw_trainer_strategy_state(
  _ h: mw_trainer, _ stage: UnsafeMutablePointer<Int32>?, _ loss: UnsafeMutablePointer<Double>?,
  _ acc: UnsafeMutablePointer<Double>?, _ out: UnsafeMutablePointer<Float>?, _ count: Int64, _ nw: UnsafeMutablePointer<Int64>?
) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in
      guard let w = tr.weighting as? LAWStrategyWeighting else {
        throw ABIError(code: MW_E_STATE, message: "strategy state: the trainer has no LAW strategy (mw_trainer_set_strategy)")
      }
      stage?.pointee = Int32(w.state?.stage ?? -1)
      loss?.pointee = Double(w.state?.lossSmooth ?? .nan)
      acc?.pointee = Double(w.state?.accSmooth ?? .nan)
      let last = w.lastWeights
      nw?.pointee = Int64(last.count)
      if let o = out {
        guard count >= Int64(last.count) else {
          throw ABIError.shape("weights_out: expected room for \(last.count) floats, got \(count)")
        }
        for i in 0..<last.count { o[i] = last[i] }
      }
    }
  }
}

/// The step of a trainer with an attached LAW strategy (`Trainer.weightedStep` with it), or nil
/// when none is attached (the caller then takes its plain step).
func lawStrategyStep(_ tr: Trainer, x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>) throws -> StepResult? {
  guard let ws = tr.weighting as? LAWStrategyWeighting else { return nil }
  return try tr.weightedStep(ws, x: x, n: n, labels: labels, xMeta: nil, m: 0, labelsMeta: nil)
}

// MARK: - LAW episodes driven one by one (remote episodes: metaweight.h, "Remote episodes")

/// The C stage log of a `LAWStageLog`.
func cStageLog(_ l: LAWStageLog) -> mw_law_stage_log {
  mw_law_stage_log(
    round: Int64(l.round), stage: Int32(l.stage), round_done: l.roundDone ? 1 : 0, warmup: l.warmup ? 1 : 0,
    parallel: Int32(l.parallel), reward: l.reward, target_acc: l.targetAcc, reference_acc: l.referenceAcc,
    loss_gap: l.lossGap, weight_corrupted: l.weightCorrupted, weight_clean: l.weightClean,
    noise_sigma: l.noiseSigma, critic_loss: l.criticLoss, actor_q: l.actorQ, fdu_updates: Int64(l.fduUpdates),
    buffer_size: Int64(l.bufferSize), seconds: l.seconds, fdu_seconds: l.fduSeconds)
}

@_cdecl("mw_law_remote_begin_round")
public func _mw_law_remote_begin_round(_ h: mw_law, _ out: UnsafeMutablePointer<Int64>?, _ count: Int64) -> mw_status {
  guarded {
    let o = try require(out, "out")
    try using(h, as: LAWSearch.self, "law") { s in
      guard count == Int64(s.config.parallel) else {
        throw ABIError.shape("out: expected \(s.config.parallel) int64 (one per parallel episode), got \(count)")
      }
      for (i, index) in try s.remoteBeginRound().enumerated() { o[i] = Int64(index) }
    }
  }
}

@_cdecl("mw_law_remote_start_round")
public func _mw_law_remote_start_round(_ h: mw_law, _ states: UnsafePointer<Double>?, _ count: Int64) -> mw_status {
  guarded {
    let p = try require(states, "states")
    try using(h, as: LAWSearch.self, "law") { s in
      let na = s.config.parallel
      guard count == Int64(3 * na) else { throw ABIError.shape("states: expected \(3 * na) doubles (3 per episode), got \(count)") }
      let v = try copyIn(p, 3 * na, "states")
      var list: [LAWStageState] = []
      for i in 0..<na {
        guard v[3 * i] == 0 else { throw ABIError.argument("states: episode slot \(i) is at stage \(v[3 * i]), expected 0") }
        list.append(LAWStageState(stage: 0, lossSmooth: Float(v[3 * i + 1]), accSmooth: Float(v[3 * i + 2])))
      }
      try s.remoteStartRound(states: list)
    }
  }
}

@_cdecl("mw_law_remote_actions")
public func _mw_law_remote_actions(
  _ h: mw_law, _ out: UnsafeMutablePointer<Float>?, _ count: Int64, _ mask: UnsafeMutablePointer<UInt8>?, _ mcount: Int64
) -> mw_status {
  guarded {
    let o = try require(out, "out")
    let mk = try require(mask, "mask")
    try using(h, as: LAWSearch.self, "law") { s in
      let na = s.config.parallel, a = s.features.actionCount
      guard count == Int64(na * a), mcount == Int64(na) else {
        throw ABIError.shape("out, mask: expected \(na * a) floats (episodes x action_dim) and \(na) flags, got \(count), \(mcount)")
      }
      for (i, act) in try s.remoteActions().enumerated() {
        mk[i] = act == nil ? 0 : 1
        for k in 0..<a { o[i * a + k] = act?[k] ?? 0 }
      }
    }
  }
}

@_cdecl("mw_law_remote_finish_stage")
public func _mw_law_remote_finish_stage(
  _ h: mw_law, _ outcomes: UnsafePointer<Double>?, _ count: Int64, _ seconds: Double,
  _ out: UnsafeMutablePointer<mw_law_stage_log>?
) -> mw_status {
  guarded {
    let p = try require(outcomes, "outcomes")
    try using(h, as: LAWSearch.self, "law") { s in
      let na = s.config.parallel, w = LAWStageOutcome.valueCount
      guard count == Int64(na * w) else {
        throw ABIError.shape("outcomes: expected \(na * w) doubles (\(w) per episode), got \(count)")
      }
      let v = try copyIn(p, na * w, "outcomes")
      let list = try (0..<na).map { try LAWStageOutcome(values: Array(v[($0 * w)..<(($0 + 1) * w)]), stages: s.config.stages) }
      let l = try s.remoteFinishStage(outcomes: list, seconds: seconds.isFinite ? seconds : 0)
      out?.pointee = cStageLog(l)
    }
  }
}

@_cdecl("mw_law_episode_create")
public func _mw_law_episode_create(_ h: mw_law, _ round: Int64, _ slot: Int32, _ out: UnsafeMutablePointer<mw_law_episode>?) -> mw_status {
  guarded {
    let o = try require(out, "out")
    try using(h, as: LAWSearch.self, "law") { s in
      guard let d = s.data else {
        throw ABIError(code: MW_E_STATE, message: "episode: the search has no data; call mw_law_set_data first")
      }
      guard round >= 0, round < 1 << 40 else { throw ABIError.argument("round: expected 0 <= round < 2^40, got \(round)") }
      guard slot >= 0, Int(slot) < s.config.parallel else {
        throw ABIError.argument("slot: expected 0 <= slot < \(s.config.parallel) (parallel episodes), got \(slot)")
      }
      o.pointee = Registry.shared.add(try s.makeEpisode(round: Int(round), slot: Int(slot), data: d))
    }
  }
}

@_cdecl("mw_law_episode_free")
public func _mw_law_episode_free(_ e: mw_law_episode) -> mw_status {
  guarded { try free(e, as: LAWEpisode.self, "mw_law_episode_free") }
}

@_cdecl("mw_law_episode_begin")
public func _mw_law_episode_begin(_ e: mw_law_episode, _ out: UnsafeMutablePointer<Double>?, _ count: Int64) -> mw_status {
  guarded {
    let o = try require(out, "out")
    guard count == 3 else { throw ABIError.shape("out: expected 3 doubles (stage, loss_smooth, acc_smooth), got \(count)") }
    try using(e, as: LAWEpisode.self, "episode") { ep in
      guard ep.log.stagesDone == 0 else {
        throw ABIError(code: MW_E_STATE, message: "episode: already ran \(ep.log.stagesDone) stages; begin only a new episode")
      }
      ep.begin()
      (o[0], o[1], o[2]) = (Double(ep.state.stage), Double(ep.state.lossSmooth), Double(ep.state.accSmooth))
    }
  }
}

@_cdecl("mw_law_episode_run_stage")
public func _mw_law_episode_run_stage(
  _ e: mw_law_episode, _ stage: Int32, _ action: UnsafePointer<Float>?, _ count: Int64, _ out: UnsafeMutablePointer<Double>?,
  _ ocount: Int64
) -> mw_status {
  guarded {
    let o = try require(out, "out")
    guard ocount == Int64(LAWStageOutcome.valueCount) else {
      throw ABIError.shape("out: expected \(LAWStageOutcome.valueCount) doubles, got \(ocount)")
    }
    try using(e, as: LAWEpisode.self, "episode") { ep in
      let t = Int(stage)
      guard t == ep.log.stagesDone, t < ep.config.stages else {
        throw ABIError(
          code: MW_E_STATE,
          message: "episode: stage \(stage) requested, but the episode has run \(ep.log.stagesDone) of \(ep.config.stages) stages (stages run in order)")
      }
      let warm = t < ep.config.warmupStages
      var act: [Float]? = nil
      if let a = action {
        guard !warm else { throw ABIError.argument("action: stage \(t) is a warm-up stage (K = 1); pass NULL") }
        guard count == Int64(ep.actionCount) else {
          throw ABIError.shape("action: expected \(ep.actionCount) floats, got \(count)")
        }
        let c = try copyIn(a, Int(count), "action")
        guard c.allSatisfy({ $0.isFinite }) else { throw ABIError.nonFinite("action: expected finite values") }
        act = c
      } else if !warm {
        throw ABIError.argument("action: stage \(t) is weighted; expected \(ep.actionCount) floats, got NULL")
      }
      let outcome = try ep.runStage(t, action: act)
      ep.completed = nil
      for (i, v) in outcome.values.enumerated() { o[i] = v }
    }
  }
}

@_cdecl("mw_law_episode_snapshot")
public func _mw_law_episode_snapshot(
  _ e: mw_law_episode, _ out: UnsafeMutablePointer<UInt8>?, _ capacity: Int64, _ length: UnsafeMutablePointer<Int64>?
) -> mw_status {
  guarded {
    try using(e, as: LAWEpisode.self, "episode") { ep in
      let bytes = ep.snapshot().encoded()
      length?.pointee = Int64(bytes.count)
      guard let o = out else { return }
      guard capacity >= Int64(bytes.count) else {
        throw ABIError.shape("out: the snapshot has \(bytes.count) bytes, the buffer \(capacity)")
      }
      bytes.withUnsafeBufferPointer { o.update(from: $0.baseAddress!, count: bytes.count) }
    }
  }
}

@_cdecl("mw_law_episode_restore")
public func _mw_law_episode_restore(_ e: mw_law_episode, _ data: UnsafePointer<UInt8>?, _ length: Int64) -> mw_status {
  guarded {
    let p = try require(data, "data")
    guard length >= 0, length <= Int64(maxElements) else { throw ABIError.shape("data: \(length) bytes are too many") }
    let ck = try Checkpoint(decoding: try copyIn(p, Int(length), "data"))
    try using(e, as: LAWEpisode.self, "episode") { ep in try ep.restore(ck) }
  }
}

@_cdecl("mw_law_episode_info")
public func _mw_law_episode_info(
  _ e: mw_law_episode, _ episode: UnsafeMutablePointer<Int64>?, _ round: UnsafeMutablePointer<Int64>?,
  _ slot: UnsafeMutablePointer<Int64>?, _ done: UnsafeMutablePointer<Int64>?, _ examples: UnsafeMutablePointer<Int64>?
) -> mw_status {
  guarded {
    try using(e, as: LAWEpisode.self, "episode") { ep in
      episode?.pointee = Int64(ep.log.episode)
      round?.pointee = Int64(ep.log.round)
      slot?.pointee = Int64(ep.log.slot)
      done?.pointee = Int64(ep.log.stagesDone)
      examples?.pointee = Int64(ep.log.examples)
    }
  }
}

@_cdecl("mw_law_episode_get_log")
public func _mw_law_episode_get_log(
  _ e: mw_law_episode, _ table: UnsafeMutablePointer<Double>?, _ tcount: Int64, _ actions: UnsafeMutablePointer<Float>?,
  _ acount: Int64, _ weights: UnsafeMutablePointer<Float>?, _ wcount: Int64
) -> mw_status {
  guarded {
    try using(e, as: LAWEpisode.self, "episode") { ep in
      let log = ep.log
      guard table == nil || tcount == Int64(log.table.count), actions == nil || acount == Int64(log.actions.count),
        weights == nil || wcount == Int64(log.exampleWeights.count)
      else {
        throw ABIError.shape(
          "table, actions, weights: expected \(log.table.count) doubles, \(log.actions.count) and \(log.exampleWeights.count) floats, got \(tcount), \(acount), \(wcount)")
      }
      if let t = table { log.table.withUnsafeBufferPointer { t.update(from: $0.baseAddress!, count: $0.count) } }
      if let a = actions { log.actions.withUnsafeBufferPointer { a.update(from: $0.baseAddress!, count: $0.count) } }
      if let w = weights, !log.exampleWeights.isEmpty {
        log.exampleWeights.withUnsafeBufferPointer { w.update(from: $0.baseAddress!, count: $0.count) }
      }
    }
  }
}

@_cdecl("mw_law_remote_abandon_round")
public func _mw_law_remote_abandon_round(_ h: mw_law) -> mw_status {
  guarded {
    try using(h, as: LAWSearch.self, "law") { s in s.remoteAbandonRound() }
  }
}
