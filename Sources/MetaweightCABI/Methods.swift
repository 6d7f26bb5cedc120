import CMetaweight
import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting
import MetaweightLAW

// MARK: - Weighting methods

/// The C step result of a step (`StepResult`, any method).
func cStepResult(_ r: StepResult) -> mw_step_result {
  let d = r.diagnostics
  return mw_step_result(
    loss: r.loss, accuracy: r.accuracy, lr: r.learningRate, step: r.step, meta_loss: r.metaLoss,
    weight_ess: d.effectiveSampleSize, saturated_low: d.saturatedLow, saturated_high: d.saturatedHigh,
    prediction_majority: d.predictionMajority, label_majority: d.labelMajority,
    weight_loss_corr: d.weightLossCorrelation)
}

@_cdecl("mw_trainer_set_method")
public func _mw_trainer_set_method(_ h: mw_trainer, _ spec: UnsafePointer<CChar>?, _ seed: UInt64) -> mw_status {
  guarded {
    let s = String(cString: try require(spec, "method"))
    let cfg = try MethodSpec.parse(s)
    try using(h, as: Trainer.self, "trainer") { tr in
      tr.weighting = try makeStepWeighting(config: cfg, network: tr.network, seed: seed)
    }
  }
}

@_cdecl("mw_trainer_method")
public func _mw_trainer_method(_ h: mw_trainer, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int64, _ len: UnsafeMutablePointer<Int64>?) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in
      writeString(tr.method?.name ?? "erm", buf, cap, len)
    }
  }
}

/// One training step of the trainer's method, or a plain (optionally sample-weighted, or
/// LAW-strategy-weighted) step without one: the one step entry of the C ABI (metaweight.h). Every
/// caller array is copied into core-owned memory once and checked there (the only check of the
/// values); only the copies are used.
@_cdecl("mw_trainer_step")
public func _mw_trainer_step(
  _ h: mw_trainer, _ x: UnsafePointer<Float>?, _ shape: UnsafePointer<Int64>?, _ rank: Int32,
  _ y: UnsafePointer<Int64>?, _ ny: Int64, _ sw: UnsafePointer<Float>?, _ nsw: Int64,
  _ xm: UnsafePointer<Float>?, _ mshape: UnsafePointer<Int64>?, _ mrank: Int32, _ ym: UnsafePointer<Int64>?,
  _ nym: Int64, _ out: UnsafeMutablePointer<mw_step_result>?, _ wout: UnsafeMutablePointer<Float>?, _ wcount: Int64,
  _ cwout: UnsafeMutablePointer<Float>?, _ cwcount: Int64
) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in
      let net = tr.network
      let n = try batchSize(x, shape, rank, net)
      guard let xp = x else { return }
      let xc = try copyBatch(xp, n: n, net.inputLayout, "x")
      let labels = try checkLabels(y, ny, n: n, classes: net.classes)
      let ws = tr.method
      let name = ws?.name ?? "erm"
      var m = 0
      var metaLabels: [Int64]? = nil
      var xmc: FloatBuffer? = nil
      if ws?.needsMeta ?? false {
        guard xm != nil, ym != nil else {
          throw ABIError.argument("x_meta, y_meta: the '\(name)' method needs a meta batch in every step")
        }
        m = try batchSize(xm, mshape, mrank, net, "x_meta")
        if let p = xm { xmc = try copyBatch(p, n: m, net.inputLayout, "x_meta") }
        metaLabels = try checkLabels(ym, nym, n: m, classes: net.classes, "y_meta")
      } else if xm != nil || ym != nil {
        throw ABIError.argument("x_meta, y_meta: the '\(name)' method takes no meta batch; pass None")
      }
      var wc: FloatBuffer? = nil
      if let w = sw {
        guard ws == nil else { throw ABIError.argument("sample_weights: the '\(name)' method computes its own weights") }
        guard nsw == Int64(n) else {
          throw ABIError.shape("sample_weights: expected \(n) weights (one per example), got \(nsw)")
        }
        let c = try copyFinite(w, n, "sample_weights")
        for i in 0..<n where c[i] < 0 {
          throw ABIError.argument("sample_weights: expected non-negative weights, got \(c[i]) at index \(i)")
        }
        wc = c
      }
      if wout != nil, wcount != Int64(n) {
        throw ABIError.shape("weights_out: expected \(n) floats, got \(wcount)")
      }
      if cwout != nil {
        guard ws?.hasClassWeights ?? false else { throw ABIError.argument("class_weights_out: only GDW has class-level weights") }
        guard cwcount == Int64(n * net.classes) else {
          throw ABIError.shape("class_weights_out: expected \(n * net.classes) floats (N × classes), got \(cwcount)")
        }
      }
      let r: StepResult
      if let state = ws {
        r = try labels.withUnsafeBufferPointer { lp in
          try (metaLabels ?? []).withUnsafeBufferPointer { mp in
            try tr.weightedStep(
              state, x: xc.pointer, n: n, labels: try require(lp.baseAddress, "y"), xMeta: xmc.map { UnsafePointer($0.pointer) },
              m: m, labelsMeta: metaLabels == nil ? nil : mp.baseAddress)
          }
        }
        if let o = wout { o.update(from: state.weights.pointer, count: n) }
        if let o = cwout { o.update(from: state.classWeights.pointer, count: n * net.classes) }
      } else {
        var strategyWeighted = false
        r = try labels.withUnsafeBufferPointer { lp in
          let yp = try require(lp.baseAddress, "y")
          // Without sample weights an attached LAW strategy weights the step (its K are the step's weights).
          if wc == nil, let r = try lawStrategyStep(tr, x: xc.pointer, n: n, labels: yp) {
            strategyWeighted = true
            return r
          }
          return try tr.step(x: xc.pointer, n: n, labels: yp, sampleWeights: wc.map { UnsafePointer($0.pointer) })
        }
        if let o = wout {
          if let c = wc {
            o.update(from: c.pointer, count: n)
          } else if strategyWeighted, let sws = tr.weighting {
            o.update(from: sws.weights.pointer, count: n)
          } else {
            o.update(repeating: 1, count: n)
          }
        }
      }
      if let o = out {
        o.pointee = cStepResult(r)
      }
    }
  }
}

@_cdecl("mw_trainer_weight_function")
public func _mw_trainer_weight_function(
  _ h: mw_trainer, _ losses: UnsafePointer<Float>?, _ n: Int64, _ out: UnsafeMutablePointer<Float>?
) -> mw_status {
  guarded {
    let l = try require(losses, "losses")
    let o = try require(out, "out")
    guard n >= 0, n <= 1 << 28 else { throw ABIError.shape("losses: expected 0..2^28 values, got \(n)") }
    let lc = try copyFinite(l, Int(n), "losses")  // read the caller's memory once
    try using(h, as: Trainer.self, "trainer") { tr in
      guard let wn = tr.method?.weightNet else {
        throw ABIError(code: MW_E_STATE, message: "weight_function: only MW-Net and GDW have a weighting function")
      }
      wn.forward(lc.pointer, n: Int(n), out: o)
    }
  }
}

// MARK: - The weighting net V in the open

/// The trainer's weighting net V, or MW_E_STATE naming the call and the trainer's method.
private func requireWeightNet(_ tr: Trainer, _ call: String) throws -> WeightNet {
  guard let wn = tr.method?.weightNet else {
    let name = tr.method?.name ?? "erm"
    throw ABIError(
      code: MW_E_STATE,
      message: "\(call): the trainer's method '\(name)' has no weighting net (only MW-Net and GDW learn one)")
  }
  return wn
}

/// "linear1.weight[j]" ... "linear2.bias[0]" for flat index `i` of Θ = [W1 (h), b1 (h), W2 (h), b2 (1)]
/// (PyTorch's names for the official VNet).
private func weightNetEntryName(_ i: Int, hidden h: Int) -> String {
  let blocks = ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]
  let b = min(i / max(h, 1), 3)
  return "\(blocks[b])[\(i - b * h)]"
}

/// MW-Net/GDW: V's hidden width and its 3h+1 parameters [W1, b1, W2, b2] (metaweight.h).
@_cdecl("mw_trainer_weight_net_get")
public func _mw_trainer_weight_net_get(
  _ h: mw_trainer, _ hidden: UnsafeMutablePointer<Int64>?, _ out: UnsafeMutablePointer<Float>?, _ count: Int64
) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in
      let wn = try requireWeightNet(tr, "mw_trainer_weight_net_get")
      let size = wn.params.count
      if let o = out {
        guard count == Int64(size) else {
          throw ABIError.shape("out: expected \(size) floats (3 × hidden \(wn.hidden) + 1), got \(count)")
        }
        o.update(from: wn.params.pointer, count: size)
      }
      hidden?.pointee = Int64(wn.hidden)
    }
  }
}

/// MW-Net/GDW: sets V's 3h+1 parameters from a checked core copy, keeping V's optimizer state
/// (metaweight.h).
@_cdecl("mw_trainer_weight_net_set")
public func _mw_trainer_weight_net_set(_ h: mw_trainer, _ params: UnsafePointer<Float>?, _ count: Int64) -> mw_status {
  guarded {
    let p = try require(params, "params")
    guard count >= 0, count <= 1 << 28 else { throw ABIError.shape("params: expected 0..2^28 floats, got \(count)") }
    // Read the caller's memory once, into core memory; everything below checks and uses the copy.
    let copy = try FloatBuffer(allocating: Int(count), what: "params")
    copy.pointer.update(from: p, count: Int(count))
    try using(h, as: Trainer.self, "trainer") { tr in
      let wn = try requireWeightNet(tr, "mw_trainer_weight_net_set")
      let size = wn.params.count
      guard count == Int64(size) else {
        throw ABIError.shape("params: expected \(size) floats (3 × hidden \(wn.hidden) + 1), got \(count)")
      }
      if !Elementwise.allFinite(copy.pointer, count: size) {
        var i = 0
        while i < size && copy[i].isFinite { i += 1 }
        throw ABIError.nonFinite(
          "params: expected finite values, got \(copy[i]) at flat index \(i) (\(weightNetEntryName(i, hidden: wn.hidden)))")
      }
      // Θ only: V's optimizer state (Adam moments / momentum buffer and step count) is kept.
      wn.params.pointer.update(from: copy.pointer, count: size)
    }
  }
}

// MARK: - Raw step diagnostics (opt-in)

/// Turns the recording of the method's raw step arrays on or off (metaweight.h).
@_cdecl("mw_trainer_set_step_diagnostics")
public func _mw_trainer_set_step_diagnostics(_ h: mw_trainer, _ on: Int32) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in
      tr.method?.recordsRaw = on != 0
    }
  }
}

/// The last recorded step's raw array `name` (metaweight.h).
@_cdecl("mw_trainer_step_diagnostics")
public func _mw_trainer_step_diagnostics(
  _ h: mw_trainer, _ name: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<Float>?, _ count: Int64,
  _ length: UnsafeMutablePointer<Int64>?, _ rows: UnsafeMutablePointer<Int64>?
) -> mw_status {
  guarded {
    let key = String(cString: try require(name, "name"))
    try using(h, as: Trainer.self, "trainer") { tr in
      let method = tr.method?.name ?? "erm"
      let names = tr.method?.rawNames ?? []
      guard names.contains(key) else {
        throw ABIError.argument(
          "name: the method '\(method)' has raw step arrays \(names), got '\(key)'")
      }
      guard let ws = tr.method, let raw = ws.rawDiagnostic(key) else {
        throw ABIError(
          code: MW_E_STATE,
          message: "mw_trainer_step_diagnostics: the last step was not recorded (turn step diagnostics on before the step)")
      }
      if let o = out {
        guard count == Int64(raw.count) else {
          throw ABIError.shape("out: expected \(raw.count) floats for '\(key)', got \(count)")
        }
        o.update(from: raw.values, count: raw.count)
      }
      length?.pointee = Int64(raw.count)
      rows?.pointee = Int64(raw.rows)
    }
  }
}
