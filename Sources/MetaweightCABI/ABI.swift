import CMetaweight
import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting
import MetaweightLAW

#if canImport(Glibc)
  import Glibc
#endif

// MARK: - Library

@_cdecl("mw_version")
public func _mw_version() -> UnsafePointer<CChar>? { UnsafePointer(StaticStrings.shared.version) }

@_cdecl("mw_blas_core")
public func _mw_blas_core() -> UnsafePointer<CChar>? { UnsafePointer(StaticStrings.shared.core) }

@_cdecl("mw_blas_config")
public func _mw_blas_config() -> UnsafePointer<CChar>? { UnsafePointer(StaticStrings.shared.config) }

@_cdecl("mw_set_threads")
public func _mw_set_threads(_ n: Int32) -> mw_status {
  guarded {
    guard n >= 1, n <= 1024 else { throw ABIError.argument("threads: expected 1 <= n <= 1024, got \(n)") }
    Parallel.threads = Int(n)
    BLAS.setThreads(Int(n))
  }
}

@_cdecl("mw_get_threads")
public func _mw_get_threads() -> Int32 { Int32(Parallel.threads) }

/// The most handle calls running at once since the last reset (see `InFlight`).
@_cdecl("mw_calls_in_flight_peak")
public func _mw_calls_in_flight_peak(_ reset: Int32) -> Int64 { Int64(InFlight.shared.peak(reset: reset != 0)) }

@_cdecl("mw_live_handles")
public func _mw_live_handles(_ out: UnsafeMutablePointer<Int64>?) -> mw_status {
  guarded { try require(out, "out").pointee = Int64(Registry.shared.count) }
}

// MARK: - Networks

@_cdecl("mw_network_create")
public func _mw_network_create(
  _ spec: UnsafePointer<CChar>?, _ shape: UnsafePointer<Int64>?, _ rank: Int32, _ seed: UInt64,
  _ out: UnsafeMutablePointer<mw_network>?
) -> mw_status {
  guarded {
    let s = String(cString: try require(spec, "spec"))
    let o = try require(out, "out")
    let layout = try inputLayout(shape, rank)
    let root = try SpecParser.parse(s, input: layout)
    let net = try Network(root, seed: seed)
    o.pointee = Registry.shared.add(net)
  }
}

@_cdecl("mw_network_free")
public func _mw_network_free(_ net: mw_network) -> mw_status {
  guarded { try free(net, as: Network.self, "mw_network_free") }
}

@_cdecl("mw_network_info")
public func _mw_network_info(
  _ h: mw_network, _ np: UnsafeMutablePointer<Int64>?, _ ns: UnsafeMutablePointer<Int64>?,
  _ nc: UnsafeMutablePointer<Int64>?, _ nb: UnsafeMutablePointer<Int64>?, _ nsb: UnsafeMutablePointer<Int64>?
) -> mw_status {
  guarded {
    try using(h, as: Network.self, "network") { net in
      np?.pointee = Int64(net.params.count)
      ns?.pointee = Int64(net.state.count)
      nc?.pointee = Int64(net.classes)
      nb?.pointee = Int64(net.parameterTable.count)
      nsb?.pointee = Int64(net.stateTable.count)
    }
  }
}

@_cdecl("mw_network_input_shape")
public func _mw_network_input_shape(_ h: mw_network, _ shape: UnsafeMutablePointer<Int64>?, _ rank: UnsafeMutablePointer<Int32>?) -> mw_status {
  guarded {
    let s = try require(shape, "shape")
    let r = try require(rank, "rank")
    try using(h, as: Network.self, "network") { net in
      switch net.inputLayout {
      case .flat(let d):
        s[0] = Int64(d)
        r.pointee = 1
      case .image(let c, let hh, let w):
        s[0] = Int64(c); s[1] = Int64(hh); s[2] = Int64(w)
        r.pointee = 3
      }
    }
  }
}

@_cdecl("mw_network_block")
public func _mw_network_block(
  _ h: mw_network, _ isState: Int32, _ index: Int64, _ name: UnsafeMutablePointer<CChar>?, _ cap: Int64,
  _ offset: UnsafeMutablePointer<Int64>?, _ shape: UnsafeMutablePointer<Int64>?, _ rank: UnsafeMutablePointer<Int32>?
) -> mw_status {
  guarded {
    try using(h, as: Network.self, "network") { net in
      let table = isState != 0 ? net.stateTable : net.parameterTable
      guard index >= 0, index < Int64(table.count) else {
        throw ABIError.argument("index: expected 0 <= index < \(table.count), got \(index)")
      }
      let e = table[Int(index)]
      writeString(e.name, name, cap, nil)
      offset?.pointee = Int64(e.offset)
      if let s = shape { for (i, d) in e.shape.prefix(8).enumerated() { s[i] = Int64(d) } }
      rank?.pointee = Int32(min(e.shape.count, 8))
    }
  }
}

@_cdecl("mw_network_get_flat")
public func _mw_network_get_flat(_ h: mw_network, _ isState: Int32, _ out: UnsafeMutablePointer<Float>?, _ count: Int64) -> mw_status {
  guarded {
    let o = try require(out, "out")
    try using(h, as: Network.self, "network") { net in
      let buf = isState != 0 ? net.state : net.params
      guard count == Int64(buf.count) else { throw ABIError.shape("out: expected \(buf.count) floats, got \(count)") }
      o.update(from: buf.pointer, count: buf.count)
    }
  }
}

@_cdecl("mw_network_set_flat")
public func _mw_network_set_flat(_ h: mw_network, _ isState: Int32, _ values: UnsafePointer<Float>?, _ count: Int64) -> mw_status {
  guarded {
    let v = try require(values, "values")
    try using(h, as: Network.self, "network") { net in
      let buf = isState != 0 ? net.state : net.params
      guard count == Int64(buf.count) else { throw ABIError.shape("values: expected \(buf.count) floats, got \(count)") }
      let c = try copyFinite(v, buf.count, "values")  // read the caller's memory once
      buf.pointer.update(from: c.pointer, count: buf.count)
    }
  }
}

@_cdecl("mw_network_summary")
public func _mw_network_summary(_ h: mw_network, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int64, _ len: UnsafeMutablePointer<Int64>?) -> mw_status {
  guarded {
    try using(h, as: Network.self, "network") { net in
      var lines: [String] = ["input \(net.inputLayout)"]
      func walk(_ l: Layer, _ indent: String) {
        let params = l.parameterSpecs.reduce(0) { $0 + $1.count }
        lines.append("\(indent)\(l.kind) \(l.inputLayout) -> \(l.outputLayout)\(params > 0 ? "  params=\(params)" : "")")
        for c in l.children { walk(c, indent + "  ") }
      }
      for l in net.root.layers { walk(l, "") }
      lines.append("total params=\(net.params.count) state=\(net.state.count)")
      writeString(lines.joined(separator: "\n"), buf, cap, len)
    }
  }
}

@_cdecl("mw_network_set_conv_algorithm")
public func _mw_network_set_conv_algorithm(_ h: mw_network, _ algorithm: Int32, _ count: UnsafeMutablePointer<Int64>?) -> mw_status {
  guarded {
    guard let a = Conv2D.Algorithm(rawValue: algorithm) else {
      throw ABIError.argument("algorithm: expected 0 (auto), 1 (gemm) or 2 (winograd), got \(algorithm)")
    }
    try using(h, as: Network.self, "network") { net in
      let n = net.root.setConvolutionAlgorithm(a)
      count?.pointee = Int64(n)
    }
  }
}

@_cdecl("mw_network_conv_algorithms")
public func _mw_network_conv_algorithms(
  _ h: mw_network, _ out: UnsafeMutablePointer<Int32>?, _ capacity: Int64, _ count: UnsafeMutablePointer<Int64>?
) -> mw_status {
  guarded {
    let c = try require(count, "count")
    try using(h, as: Network.self, "network") { net in
      let algorithms = net.root.convolutionAlgorithms
      c.pointee = Int64(algorithms.count)
      if let out {
        for (i, a) in algorithms.prefix(Int(max(0, capacity))).enumerated() { out[i] = a.rawValue }
      }
    }
  }
}

@_cdecl("mw_network_activation_bytes")
public func _mw_network_activation_bytes(_ h: mw_network, _ batch: Int64, _ bytes: UnsafeMutablePointer<Int64>?) -> mw_status {
  guarded {
    let b = try require(bytes, "bytes")
    guard batch > 0, batch <= 1 << 20 else { throw ABIError.argument("batch: expected 1..2^20, got \(batch)") }
    try using(h, as: Network.self, "network") { net in
      guard Int(batch) <= maxActivationFloats / max(net.activationFloatsPerExample, 1) else {
        throw ABIError.argument("batch: \(batch) examples would need more than 16 GiB of activations")
      }
      b.pointee = Int64(net.makeTape(batch: Int(batch)).bytes)
    }
  }
}

@_cdecl("mw_network_signature")
public func _mw_network_signature(_ h: mw_network, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int64, _ len: UnsafeMutablePointer<Int64>?) -> mw_status {
  guarded {
    try using(h, as: Network.self, "network") { net in writeString(net.signature, buf, cap, len) }
  }
}

// MARK: - Trainers

func makeOptimizer(_ c: mw_optimizer_config) throws -> (OptimizerConfig, Float) {
  var o = OptimizerConfig()
  switch c.kind {
  case 0: o.kind = .sgd
  case 1: o.kind = .adam
  default: throw ABIError.argument("optimizer.kind: expected 0 (SGD) or 1 (Adam), got \(c.kind)")
  }
  o.momentum = c.momentum
  o.nesterov = c.nesterov != 0
  o.weightDecay = c.weight_decay
  o.decoupled = c.decoupled != 0
  o.beta1 = c.beta1
  o.beta2 = c.beta2
  o.epsilon = c.eps
  try o.validate()
  return (o, c.lr)
}

func makeSchedule(_ c: mw_schedule_config?, lr: Float) throws -> Schedule {
  var s = Schedule(baseLR: lr)
  if let c = c {
    switch c.kind {
    case 0: s.kind = .constant
    case 1: s.kind = .multiStep
    case 2: s.kind = .cosine
    default: throw ABIError.argument("schedule.kind: expected 0 (constant), 1 (multi-step) or 2 (cosine), got \(c.kind)")
    }
    guard c.n_milestones >= 0, c.n_milestones <= 10_000 else {
      throw ABIError.argument("schedule.milestones: expected 0..10000 entries, got \(c.n_milestones)")
    }
    if c.n_milestones > 0 {
      let m = try require(c.milestones, "schedule.milestones")
      s.milestones = (0..<Int(c.n_milestones)).map { m[$0] }
    }
    s.gamma = c.gamma
    s.totalSteps = c.total_steps
    s.minLR = c.min_lr
    s.warmupSteps = c.warmup_steps
  }
  try s.validate()
  return s
}

@_cdecl("mw_trainer_create")
public func _mw_trainer_create(
  _ h: mw_network, _ opt: UnsafePointer<mw_optimizer_config>?, _ sched: UnsafePointer<mw_schedule_config>?,
  _ seed: UInt64, _ out: UnsafeMutablePointer<mw_trainer>?
) -> mw_status {
  guarded {
    let o = try require(opt, "optimizer")
    let outp = try require(out, "out")
    let (config, lr) = try makeOptimizer(o.pointee)
    let schedule = try makeSchedule(sched?.pointee, lr: lr)
    try using(h, as: Network.self, "network") { net in
      let tr = try Trainer(network: net, optimizer: config, schedule: schedule, seed: seed)
      outp.pointee = Registry.shared.add(tr)
    }
  }
}

@_cdecl("mw_trainer_set_schedule")
public func _mw_trainer_set_schedule(_ h: mw_trainer, _ sched: UnsafePointer<mw_schedule_config>?) -> mw_status {
  guarded {
    let c = try require(sched, "schedule").pointee
    try using(h, as: Trainer.self, "trainer") { tr in
      // Validated in full before the trainer's schedule is replaced: nothing changes on an error.
      tr.schedule = try makeSchedule(c, lr: tr.schedule.baseLR)
    }
  }
}

@_cdecl("mw_trainer_free")
public func _mw_trainer_free(_ tr: mw_trainer) -> mw_status {
  guarded { try free(tr, as: Trainer.self, "mw_trainer_free") }
}

@_cdecl("mw_trainer_set_augmentation")
public func _mw_trainer_set_augmentation(_ h: mw_trainer, _ pad: Int32, _ flip: Int32) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in
      guard case .image(_, let hh, let w) = tr.network.inputLayout else {
        if pad == 0 && flip == 0 { return }
        throw ABIError.argument("augmentation: crop and flip need image inputs (C, H, W); this network takes flat inputs")
      }
      guard pad >= 0, Int(pad) < max(hh, w) else {
        throw ABIError.argument("crop_padding: expected 0 <= padding < \(max(hh, w)), got \(pad)")
      }
      var a = Augmentation()
      a.cropPadding = Int(pad)
      a.horizontalFlip = flip != 0
      tr.augmentation = a
    }
  }
}

@_cdecl("mw_trainer_predict")
public func _mw_trainer_predict(
  _ h: mw_trainer, _ x: UnsafePointer<Float>?, _ shape: UnsafePointer<Int64>?, _ rank: Int32,
  _ out: UnsafeMutablePointer<Float>?, _ count: Int64
) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in
      let n = try batchSize(x, shape, rank, tr.network)
      guard let xp = x else { return }
      let o = try require(out, "out")
      guard count == Int64(n * tr.network.classes) else {
        throw ABIError.shape("out: expected \(n * tr.network.classes) floats (N × classes), got \(count)")
      }
      let xc = try copyBatch(xp, n: n, tr.network.inputLayout, "x")  // read the caller's memory once
      tr.predict(x: xc.pointer, n: n, out: o)
    }
  }
}

@_cdecl("mw_trainer_losses")
public func _mw_trainer_losses(
  _ h: mw_trainer, _ x: UnsafePointer<Float>?, _ shape: UnsafePointer<Int64>?, _ rank: Int32,
  _ y: UnsafePointer<Int64>?, _ ny: Int64, _ out: UnsafeMutablePointer<Float>?
) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in
      let n = try batchSize(x, shape, rank, tr.network)
      guard let xp = x else { return }
      let o = try require(out, "losses_out")
      let xc = try copyBatch(xp, n: n, tr.network.inputLayout, "x")
      let labels = try checkLabels(y, ny, n: n, classes: tr.network.classes)
      let c = tr.network.classes
      let logits = try FloatBuffer(allocating: n * c, what: "logits")
      tr.predict(x: xc.pointer, n: n, out: logits.pointer)
      let probs = try FloatBuffer(allocating: n * c, what: "probabilities")
      let l32 = labels.map { Int32(truncatingIfNeeded: $0) }  // checked: 0 <= label < classes
      try l32.withUnsafeBufferPointer {
        CrossEntropy.forward(logits: logits.pointer, labels: try require($0.baseAddress, "y"), n: n, c: c, losses: o, probs: probs.pointer)
      }
    }
  }
}

@_cdecl("mw_trainer_permutation")
public func _mw_trainer_permutation(_ h: mw_trainer, _ n: Int64, _ out: UnsafeMutablePointer<Int64>?) -> mw_status {
  guarded {
    let o = try require(out, "out")
    guard n >= 0, n <= 1 << 31 else { throw ABIError.argument("n: expected 0 <= n <= 2^31, got \(n)") }
    try using(h, as: Trainer.self, "trainer") { tr in
      let p = tr.permutation(Int(n))
      for i in 0..<Int(n) { o[i] = Int64(p[i]) }
    }
  }
}

@_cdecl("mw_trainer_state")
public func _mw_trainer_state(_ h: mw_trainer, _ steps: UnsafeMutablePointer<Int64>?, _ lr: UnsafeMutablePointer<Double>?) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in
      steps?.pointee = tr.stepCount
      lr?.pointee = Double(tr.currentLearningRate)
    }
  }
}

@_cdecl("mw_trainer_network")
public func _mw_trainer_network(_ h: mw_trainer, _ out: UnsafeMutablePointer<mw_network>?) -> mw_status {
  guarded {
    let o = try require(out, "out")
    try using(h, as: Trainer.self, "trainer") { tr in o.pointee = Registry.shared.add(tr.network) }
  }
}

@_cdecl("mw_trainer_save")
public func _mw_trainer_save(_ h: mw_trainer, _ path: UnsafePointer<CChar>?) -> mw_status {
  guarded {
    let p = String(cString: try require(path, "path"))
    guard !p.isEmpty else { throw ABIError.argument("path: expected a file path, got an empty string") }
    try using(h, as: Trainer.self, "trainer") { tr in try tr.checkpoint().write(to: p) }
  }
}

@_cdecl("mw_trainer_load")
public func _mw_trainer_load(_ h: mw_trainer, _ path: UnsafePointer<CChar>?) -> mw_status {
  guarded {
    let p = String(cString: try require(path, "path"))
    try using(h, as: Trainer.self, "trainer") { tr in try tr.restore(try Checkpoint.read(from: p)) }
  }
}
