#if canImport(Glibc)
  import Glibc
#endif

/// The per-trainer state of a weighting method: its configuration, MW-Net/GDW's weighting network
/// and optimizer, and the buffers of the meta step (kept between steps, so a step allocates nothing).
public final class WeightingState: @unchecked Sendable {
  /// The configuration.
  public let config: WeightingConfig
  /// V (MW-Net, GDW).
  public let weightNet: WeightNet?
  /// V's optimizer.
  public let weightNetOptimizer: Optimizer?
  /// Per-example weights of the last step (n).
  public internal(set) var weights = FloatBuffer(count: 0)
  /// GDW's class-level weights ω′ of the last step (n × C); empty for other methods.
  public internal(set) var classWeights = FloatBuffer(count: 0)
  /// Generator for the random-weights baseline.
  var rng: RNG
  /// The meta batch's tape (MW-Net and GDW); nil when the meta pass runs in the trainer's
  /// train-batch tape (L2RW). It always shares the train tape's scratch areas, and with
  /// `memory = .low` it is laid over the train tape's dead activations (`TapePlanner`).
  var metaTape: NetworkTape?
  /// The train tape `metaTape` was made against.
  private var metaTapeBase: NetworkTape?
  // The virtual step's gradient and v = ∇L_meta live in the trainer's gradient buffer, which
  // is free until the real backward pass (the last pass of a step) overwrites it.
  let thetaHat: FloatBuffer  // θ̂ (MW-Net, GDW)
  var jvp = FloatBuffer(count: 0)  // ⟨v, ∂z_ic/∂θ⟩ (n × C)
  var logitGrad = FloatBuffer(count: 0)  // n × C
  var omega = FloatBuffer(count: 0)  // n × C
  var g = FloatBuffer(count: 0)  // n × C
  var tmpA = FloatBuffer(count: 0)  // n
  var tmpB = FloatBuffer(count: 0)  // n
  var metaLosses = FloatBuffer(count: 0)
  var metaProbs = FloatBuffer(count: 0)
  var metaCoef = FloatBuffer(count: 0)
  var metaLabels: [Int32] = []
  let classTable: [Float]

  /// Creates the state for `network`.
  /// - Throws: `MetaweightError.invalidArgument` for invalid options.
  public init(config: WeightingConfig, network: Network, seed: UInt64) throws {
    try config.validate(classes: network.classes)
    if config.method == .gdw && !config.detachLoss {
      throw MetaweightError.invalidArgument("detach_loss: GDW feeds V the detached loss (as its official code); got False")
    }
    self.config = config
    var seeder = RNG(seed: seed ^ 0x5EED_0F5E_ED00)
    if config.method.hasWeightNet {
      weightNet = WeightNet(hidden: config.weightNetHidden, seed: seeder.next())
      weightNetOptimizer = Optimizer(config: config.weightNetOptimizer, count: 3 * config.weightNetHidden + 1)
    } else {
      weightNet = nil
      weightNetOptimizer = nil
    }
    rng = RNG(seed: seeder.next())
    thetaHat = FloatBuffer(count: config.method == .mwnet || config.method == .gdw ? network.params.count : 0)
    // Class weights for class-balanced / inverse-frequency, normalised to sum to C.
    let c = network.classes
    var table = [Float](repeating: 1, count: c)
    if config.method == .classBalanced || config.method == .inverseFrequency {
      for k in 0..<c {
        let nk = Double(config.classCounts[k])
        let beta = Double(config.classBalancedBeta)
        table[k] = config.method == .classBalanced ? Float((1 - beta) / (1 - pow(beta, nk))) : Float(1 / nk)
      }
      let s = table.reduce(0, +)
      table = table.map { $0 * Float(c) / s }
    }
    classTable = table
  }

  /// Whether the meta batch has a tape of its own (MW-Net, GDW) rather than running in the train
  /// batch's (L2RW, whose look-ahead point θ does not depend on the train batch).
  var hasMetaTape: Bool { config.method == .mwnet || config.method == .gdw }

  /// Sizes the buffers for a train batch of `n` and a meta batch of `m`. The meta tape shares the
  /// scratch areas of `sharing` (the trainer's tape) and, with `memory = .low`, is laid over its
  /// dead activations.
  func reserve(n: Int, m: Int, classes c: Int, network: Network, sharing: NetworkTape? = nil) {
    if weights.count < n {
      weights = FloatBuffer(count: n)
      tmpA = FloatBuffer(count: n)
      tmpB = FloatBuffer(count: n)
    }
    if config.method.needsMeta {
      if logitGrad.count < max(n, m) * c { logitGrad = FloatBuffer(count: max(n, m) * c) }
      if jvp.count < n * c {
        jvp = FloatBuffer(count: n * c)
        omega = FloatBuffer(count: n * c)
        g = FloatBuffer(count: max(n * c, n))
      }
      if hasMetaTape && ((metaTape?.capacity ?? 0) < m || metaTapeBase !== sharing) {
        metaTape = nil  // release the old one first
        if let base = sharing, config.memory == .low {
          metaTape = network.makeTape(batch: m, overlaying: base)
        } else {
          metaTape = network.makeTape(batch: m, sharing: sharing)
        }
        metaTapeBase = sharing
      }
      if metaLosses.count < m {
        metaLosses = FloatBuffer(count: m)
        metaProbs = FloatBuffer(count: m * c)
        metaCoef = FloatBuffer(count: m)
      }
    }
    if config.method == .gdw && classWeights.count < n * c { classWeights = FloatBuffer(count: n * c) }
  }

  /// Saves V, its optimizer and the random generator into `ck`.
  public func save(into ck: inout Checkpoint) {
    ck.ints["weighting.method"] = [Int64(config.method.rawValue)]
    ck.ints["weighting.rng"] = rng.stateWords.map { Int64(bitPattern: $0) }
    if let wn = weightNet, let opt = weightNetOptimizer {
      ck.floats["weighting.net"] = wn.params.array
      ck.floats["weighting.opt.first"] = opt.first.array
      ck.floats["weighting.opt.second"] = opt.second.array
      ck.ints["weighting.opt.steps"] = [opt.steps]
    }
  }

  /// Checks that `ck` holds this method's state (throws naming the mismatch).
  public func validate(_ ck: Checkpoint) throws {
    let m = try ck.requireInts("weighting.method", count: 1)[0]
    guard m == Int64(config.method.rawValue) else {
      throw MetaweightError.io("checkpoint: weighting method mismatch (file has method \(m), trainer has \(config.method))")
    }
    _ = try ck.requireInts("weighting.rng", count: 4)
    if let wn = weightNet, let opt = weightNetOptimizer {
      _ = try ck.requireFloats("weighting.net", count: wn.params.count)
      _ = try ck.requireFloats("weighting.opt.first", count: opt.first.count)
      _ = try ck.requireFloats("weighting.opt.second", count: opt.second.count)
      _ = try ck.requireInts("weighting.opt.steps", count: 1)
    }
  }

  /// Restores from `ck` (validated first, so nothing changes on failure).
  public func restore(_ ck: Checkpoint) throws {
    try validate(ck)
    rng = RNG(state: try ck.requireInts("weighting.rng", count: 4).map { UInt64(bitPattern: $0) })
    if let wn = weightNet, let opt = weightNetOptimizer {
      let p = try ck.requireFloats("weighting.net", count: wn.params.count)
      wn.params.pointer.update(from: p, count: p.count)
      let f = try ck.requireFloats("weighting.opt.first", count: opt.first.count)
      opt.first.pointer.update(from: f, count: f.count)
      let s = try ck.requireFloats("weighting.opt.second", count: opt.second.count)
      opt.second.pointer.update(from: s, count: s.count)
      opt.steps = try ck.requireInts("weighting.opt.steps", count: 1)[0]
    }
  }
}

/// GDW's zero-mean constraint on the class-level weights of one batch (p detached and clamped at
/// `prob_clamp` as in the official code): ω_it = Σ_{c≠t} ω_ic min(p_ic, clamp) / (1 − min(p_it, clamp)).
public enum GDWConstraint {
  /// The constraint's denominator 1 − min(p_t, clamp) for one row of probabilities, computed as
  /// max(Σ_{c≠t} p_c, 1 − clamp).
  ///
  /// With Σ_c p_c = 1 the two are equal in exact arithmetic: Σ_{c≠t} p_c = 1 − p_t, and
  /// max(1 − p_t, 1 − clamp) = 1 − min(p_t, clamp) because x ↦ 1 − x is decreasing. In float32
  /// the sum has no cancellation: 1 − p_t at p_t ≈ 0.999 loses about three digits (relative
  /// error ~1e-4 against float64), the sum of the small off-target probabilities keeps ~1e-7.
  public static func denominator(_ probs: UnsafePointer<Float>, label t: Int, classes c: Int, clamp: Float) -> Float {
    var rest: Float = 0
    for k in 0..<c where k != t { rest += probs[k] }
    return max(rest, 1 - clamp)
  }

  /// Sets ω_it of each of `n` rows of `omega` (n × classes) from its off-target entries and the
  /// probabilities `probs` (n × classes), in place.
  public static func apply(
    omega: UnsafeMutablePointer<Float>, probs: UnsafePointer<Float>, labels: UnsafePointer<Int32>, n: Int, classes c: Int,
    clamp: Float
  ) {
    for i in 0..<n {
      let t = Int(labels[i])
      let row = probs + i * c
      var s: Float = 0
      for k in 0..<c where k != t { s += omega[i * c + k] * min(row[k], clamp) }
      omega[i * c + t] = s / denominator(row, label: t, classes: c, clamp: clamp)
    }
  }
}

extension Trainer {
  /// The virtual step size α and the factor ∂d/∂g of the virtual direction (1 + μ for Nesterov).
  func virtualStepSize(_ ws: WeightingState) -> (alpha: Float, factor: Float) {
    let alpha = ws.config.virtualLR > 0 ? ws.config.virtualLR : currentLearningRate
    let o = optimizer.config
    let factor: Float = ws.config.virtualStepMomentum && o.kind == .sgd && o.nesterov ? 1 + o.momentum : 1
    return (alpha, factor)
  }

  /// θ̂ = θ − α·d(g) with g the virtual gradient in `grads` (plain SGD, or the optimizer's
  /// momentum and weight decay when configured).
  func takeVirtualStep(_ ws: WeightingState, alpha: Float) {
    let count = network.params.count
    let theta = UnsafePointer(network.params.pointer)
    if ws.config.virtualStepMomentum {
      optimizer.peekDirection(params: theta, grads: grads.pointer, out: ws.thetaHat.pointer, count: count)
      Elementwise.step(theta, -alpha, UnsafePointer(ws.thetaHat.pointer), into: ws.thetaHat.pointer, count: count)
    } else {
      Elementwise.step(theta, -alpha, UnsafePointer(grads.pointer), into: ws.thetaHat.pointer, count: count)
    }
  }

  /// Mean cross-entropy of the meta batch at `params` (batch statistics, running statistics
  /// untouched) and its gradient v = ∇L_meta into `grads`. Runs in `ws.metaTape`, or in
  /// the train batch's tape when there is none (its contents are then overwritten).
  func metaPass(
    _ ws: WeightingState, params: UnsafePointer<Float>, x: UnsafePointer<Float>, m: Int, labels: UnsafePointer<Int64>
  ) -> Double {
    if ws.metaTape == nil { reserve(batch: m) }
    let tape = ws.metaTape ?? self.tape
    let c = network.classes
    network.forward(x, batch: m, tape: tape, mode: .virtualTrain, rng: dropoutRNG, params: params)
    if ws.metaLabels.count != m { ws.metaLabels = [Int32](repeating: 0, count: m) }
    for i in 0..<m { ws.metaLabels[i] = Int32(truncatingIfNeeded: labels[i]) }
    var loss: Double = 0
    let dl = ws.logitGrad
    ws.metaLabels.withUnsafeBufferPointer { lp in
      CrossEntropy.forward(
        logits: tape.logits.pointer, labels: lp.baseAddress!, n: m, c: c, losses: ws.metaLosses.pointer,
        probs: ws.metaProbs.pointer)
      for i in 0..<m {
        loss += Double(ws.metaLosses[i])
        ws.metaCoef[i] = 1 / Float(m)
      }
      CrossEntropy.backward(
        probs: ws.metaProbs.pointer, labels: lp.baseAddress!, n: m, c: c, coefficients: ws.metaCoef.pointer,
        dlogits: dl.pointer)
    }
    network.backward(tape: tape, dlogits: UnsafePointer(dl.pointer), grads: grads.pointer)
    return loss / Double(m)
  }

  /// JVP of the train logits along v (in `grads`, from `metaPass`), then qᵢ = Σ_c (p_ic − y_ic)·JVP_ic into `out`.
  func projectedGradients(_ ws: WeightingState, n: Int, out: UnsafeMutablePointer<Float>) {
    let c = network.classes
    let jvp = ws.jvp.pointer, pr = probs.pointer
    network.jvp(tape: tape, direction: grads.pointer, out: jvp)
    labels32.withUnsafeBufferPointer { lp in
      for i in 0..<n {
        var s: Float = 0
        let t = Int(lp[i])
        for k in 0..<c { s += (pr[i * c + k] - (k == t ? 1 : 0)) * jvp[i * c + k] }
        out[i] = s
      }
    }
  }

  /// One step of the configured weighting method (one optimizer update of θ; MW-Net and GDW also
  /// update V once). `xMeta`/`labelsMeta` are required exactly when the method needs a meta batch.
  /// - Throws: `MetaweightError.nonFinite` when a loss, weight or gradient is NaN/Inf (θ untouched);
  ///   `MetaweightError.invalidState` when a meta batch is missing.
  public func weightedStep(
    _ ws: WeightingState, x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>,
    xMeta: UnsafePointer<Float>?, m: Int, labelsMeta: UnsafePointer<Int64>?
  ) throws -> StepResult {
    try withStateRollback {
      try weightedStepBody(ws, x: x, n: n, labels: labels, xMeta: xMeta, m: m, labelsMeta: labelsMeta)
    }
  }

  private func weightedStepBody(
    _ ws: WeightingState, x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>,
    xMeta: UnsafePointer<Float>?, m: Int, labelsMeta: UnsafePointer<Int64>?
  ) throws -> StepResult {
    let c = network.classes
    let method = ws.config.method
    if method.needsMeta {
      guard xMeta != nil, labelsMeta != nil, m > 0 else {
        throw MetaweightError.invalidState("\(method): every step needs a meta batch (x_meta, y_meta)")
      }
    }
    // The train tape also holds the meta batch with L2RW; in low-memory mode its dead buffers
    // hold the meta batch's activations, so they are sized for the larger batch.
    reserve(batch: method == .l2rw || (ws.hasMetaTape && ws.config.memory == .low) ? max(n, m) : n)
    ws.reserve(n: n, m: m, classes: c, network: network, sharing: tape)
    var result = StepResult()
    let w = ws.weights.pointer
    switch method {
    case .l2rw:
      guard let xm = xMeta, let ym = labelsMeta else { break }
      // 1. v = ∇L_meta(θ) (ε = 0, so θ̂ = θ), in the tape the train batch then uses.
      result.metaLoss = metaPass(ws, params: UnsafePointer(network.params.pointer), x: xm, m: m, labels: ym)
      // 2. Train forward at θ (updates running statistics once, as the real step's forward).
      (result.loss, result.accuracy) = forwardTrainBatch(x: x, n: n, labels: labels)
      try checkLoss(result.loss)
      // 3. uᵢ = ⟨v, ∇lᵢ⟩ through one JVP; w = normalised max(u, 0).
      projectedGradients(ws, n: n, out: ws.tmpA.pointer)
      var sum: Double = 0
      for i in 0..<n {
        w[i] = max(ws.tmpA[i], 0)
        sum += Double(w[i])
      }
      for i in 0..<n { w[i] = sum > 0 ? Float(Double(w[i]) / sum) : 0 }
      try checkFiniteValues(UnsafePointer(w), n)
      backwardWeighted(coefficients: w)
    case .mwnet:
      guard let xm = xMeta, let ym = labelsMeta, let wn = ws.weightNet, let wopt = ws.weightNetOptimizer else { break }
      (result.loss, result.accuracy) = forwardTrainBatch(x: x, n: n, labels: labels)
      try checkLoss(result.loss)
      let l = UnsafePointer(losses.pointer)
      let (alpha, factor) = virtualStepSize(ws)
      // 1–2. vᵢ = V(lᵢ); θ̂ = θ − α Σ cᵢ ∇lᵢ.
      wn.forward(l, n: n, out: w)
      let coef = ws.tmpB.pointer
      let sumV = mwnetCoefficients(ws, v: UnsafePointer(w), losses: l, n: n, out: coef)
      backwardWeighted(coefficients: coef)
      takeVirtualStep(ws, alpha: alpha)
      // 3. Meta loss at θ̂, v = ∇L_meta(θ̂), qᵢ = ⟨v, ∇lᵢ⟩, dL/dcᵢ = −α qᵢ.
      result.metaLoss = metaPass(ws, params: UnsafePointer(ws.thetaHat.pointer), x: xm, m: m, labels: ym)
      projectedGradients(ws, n: n, out: ws.tmpA.pointer)
      let q = ws.tmpA.pointer
      for i in 0..<n { q[i] *= -alpha * factor }  // now dL/dcᵢ
      if ws.config.detachLoss {
        mwnetChain(ws, v: UnsafePointer(w), dLdc: q, n: n, sumV: sumV)  // → dL/d(V-output) in place
        wn.backward(l, dv: q, n: n)
      } else if !ws.config.normalizeWeights {
        mwnetChain(ws, v: UnsafePointer(w), dLdc: q, n: n, sumV: sumV)  // cᵢ = (vᵢ + ℓᵢv′ᵢ)/n
        wn.backwardUndetached(l, dc: q, n: n)
      } else {
        // cᵢ = (vᵢ + ℓᵢv′ᵢ)/S − A v′ᵢ/S² also depends on every vⱼ and v′ᵢ through S and A.
        let dp = mwnetChainNormalizedUndetached(ws, v: UnsafePointer(w), losses: l, dLdc: q, n: n, sumV: sumV)
        wn.backward(l, dv: q, dvPrime: dp, n: n)
      }
      try checkFiniteValues(UnsafePointer(wn.grads.pointer), wn.grads.count, what: "weight-net gradient")
      wopt.update(params: wn.params.pointer, grads: wn.grads.pointer, count: wn.params.count, lr: ws.config.weightNetLR)
      // 4. Recompute vᵢ with the new Θ and take the real step.
      wn.forward(l, n: n, out: w)
      try checkFiniteValues(UnsafePointer(w), n)
      _ = mwnetCoefficients(ws, v: UnsafePointer(w), losses: l, n: n, out: coef)
      backwardWeighted(coefficients: coef)
    case .gdw:
      guard let xm = xMeta, let ym = labelsMeta, let wn = ws.weightNet, let wopt = ws.weightNetOptimizer else { break }
      (result.loss, result.accuracy) = forwardTrainBatch(x: x, n: n, labels: labels)
      try checkLoss(result.loss)
      result.metaLoss = try gdwStep(ws, wn: wn, wopt: wopt, xm: xm, m: m, ym: ym, n: n)
    default:
      (result.loss, result.accuracy) = forwardTrainBatch(x: x, n: n, labels: labels)
      try checkLoss(result.loss)
      baselineGradients(ws, n: n)
    }
    guard Elementwise.allFinite(grads.pointer, count: grads.count) else {
      throw MetaweightError.nonFinite("step \(stepCount + 1): a gradient is NaN or infinite; parameters were not updated")
    }
    // V's outputs for the saturation statistics: MW-Net's weights are V(ℓ) (after V's update),
    // GDW's first-stage V(ℓ) is in tmpB; other methods have no V.
    let unit: UnsafePointer<Float>? =
      method == .mwnet ? UnsafePointer(w) : method == .gdw ? UnsafePointer(ws.tmpB.pointer) : nil
    result.diagnostics = stepDiagnostics(weights: UnsafePointer(w), unit: unit, n: n)
    result.learningRate = Double(applyUpdate())
    result.step = stepCount
    return result
  }

  private func checkLoss(_ loss: Double) throws {
    guard loss.isFinite else {
      throw MetaweightError.nonFinite("step \(stepCount + 1): the training loss is \(loss); parameters were not updated")
    }
  }

  private func checkFiniteValues(_ p: UnsafePointer<Float>, _ n: Int, what: String = "example weight") throws {
    guard Elementwise.allFinite(p, count: n) else {
      throw MetaweightError.nonFinite("step \(stepCount + 1): a \(what) is NaN or infinite; parameters were not updated")
    }
  }

  /// MW-Net's step coefficients cᵢ from vᵢ: vᵢ/n (or vᵢ/Σv), plus the V′ term when the loss is
  /// not detached (cᵢ = d(vᵢℓᵢ)/dℓᵢ / n). Returns Σv.
  private func mwnetCoefficients(
    _ ws: WeightingState, v: UnsafePointer<Float>, losses l: UnsafePointer<Float>, n: Int, out: UnsafeMutablePointer<Float>
  ) -> Float {
    var sumV: Float = 0
    for i in 0..<n { sumV += v[i] }
    let denom = ws.config.normalizeWeights ? max(sumV, 1e-12) : Float(n)
    for i in 0..<n { out[i] = v[i] / denom }
    if !ws.config.detachLoss, let wn = ws.weightNet {
      let dv = ws.g.pointer  // scratch (≥ n)
      wn.inputDerivative(l, n: n, out: dv)
      if ws.config.normalizeWeights {
        var lw: Float = 0
        for i in 0..<n { lw += v[i] * l[i] }
        lw /= denom
        for i in 0..<n { out[i] += (dv[i] * l[i] - lw * dv[i]) / denom }
      } else {
        for i in 0..<n { out[i] += dv[i] * l[i] / denom }
      }
    }
    return sumV
  }

  /// Turns dL/dcᵢ into the gradient with respect to V's outputs (in place): divide by n, or for
  /// normalised weights cᵢ = vᵢ/S, dL/dvᵢ = (dL/dcᵢ − Σⱼ cⱼ dL/dcⱼ)/S.
  private func mwnetChain(
    _ ws: WeightingState, v: UnsafePointer<Float>, dLdc: UnsafeMutablePointer<Float>, n: Int, sumV: Float
  ) {
    if ws.config.normalizeWeights {
      let s = max(sumV, 1e-12)
      var mean: Float = 0
      for i in 0..<n { mean += v[i] / s * dLdc[i] }
      for i in 0..<n { dLdc[i] = (dLdc[i] - mean) / s }
    } else {
      for i in 0..<n { dLdc[i] /= Float(n) }
    }
  }

  /// For normalised weights with the loss not detached, cᵢ = (vᵢ + ℓᵢv′ᵢ)/S − A v′ᵢ/S² with
  /// S = Σv, A = Σ vⱼℓⱼ, v′ = dV/dℓ. Turns dL/dcᵢ = qᵢ into dL/dvₖ (in place) and returns dL/dv′ₖ
  /// (in `ws.omega`): with Q₁ = Σ qᵢ(vᵢ + ℓᵢv′ᵢ), Q₂ = Σ qᵢv′ᵢ,
  ///     dL/dvₖ = (qₖ − Q₁/S − (ℓₖ − 2A/S) Q₂/S)/S,   dL/dv′ₖ = qₖ (ℓₖ − A/S)/S.
  private func mwnetChainNormalizedUndetached(
    _ ws: WeightingState, v: UnsafePointer<Float>, losses l: UnsafePointer<Float>, dLdc q: UnsafeMutablePointer<Float>,
    n: Int, sumV: Float
  ) -> UnsafePointer<Float> {
    guard let wn = ws.weightNet else { return UnsafePointer(ws.omega.pointer) }
    let s = max(sumV, 1e-12)
    let dv = ws.g.pointer  // v′ (scratch, ≥ n)
    let dp = ws.omega.pointer  // dL/dv′ (scratch, ≥ n)
    wn.inputDerivative(l, n: n, out: dv)
    var a: Float = 0, q1: Float = 0, q2: Float = 0
    for i in 0..<n {
      a += v[i] * l[i]
      q1 += q[i] * (v[i] + l[i] * dv[i])
      q2 += q[i] * dv[i]
    }
    let lw = a / s
    for k in 0..<n {
      dp[k] = q[k] * (l[k] - lw) / s
      q[k] = (q[k] - q1 / s - (l[k] - 2 * lw) * q2 / s) / s
    }
    return UnsafePointer(dp)
  }

  /// GDW: class-level weights, the virtual step on the manipulated logit gradient, V's update
  /// through all C columns, the second-stage correction and the real step. Returns the meta loss.
  private func gdwStep(
    _ ws: WeightingState, wn: WeightNet, wopt: Optimizer, xm: UnsafePointer<Float>, m: Int,
    ym: UnsafePointer<Int64>, n: Int
  ) throws -> Double {
    let c = network.classes
    let cfg = ws.config
    let pc = cfg.gdwProbClamp
    let l = UnsafePointer(losses.pointer)
    let v = ws.tmpB.pointer
    let omega = ws.omega.pointer, gmat = ws.g.pointer, lg = ws.logitGrad.pointer
    let pr = probs.pointer
    let (alpha, factor) = virtualStepSize(ws)
    let invN = 1 / Float(n)
    let labels = labels32
    // Zero-mean constraint (p detached, clamped): ω_it = Σ_{c≠t} ω_ic p_ic / (1 − p_it), with
    // 1 − p_it computed without cancellation (`GDWConstraint.denominator`).
    func constrain() {
      labels.withUnsafeBufferPointer { lp in
        GDWConstraint.apply(omega: omega, probs: UnsafePointer(pr), labels: lp.baseAddress!, n: n, classes: c, clamp: pc)
      }
    }
    // G_ic = ω_ic (p_ic − y_ic)/n.
    func logitGradient() {
      for i in 0..<n {
        let t = Int(labels[i])
        for k in 0..<c { lg[i * c + k] = omega[i * c + k] * (min(pr[i * c + k], pc) - (k == t ? 1 : 0)) * invN }
      }
    }
    // 1. ω_i = V(l_i)·1, constrained.
    wn.forward(l, n: n, out: v)
    for i in 0..<n { for k in 0..<c { omega[i * c + k] = v[i] } }
    constrain()
    // 2. Virtual step on G.
    logitGradient()
    backwardLogits(UnsafePointer(lg))
    takeVirtualStep(ws, alpha: alpha)
    // 3. Meta loss at θ̂ and g_ic = ∂L_meta/∂ω_ic = −α (p_ic − y_ic) JVP_ic / n.
    let metaLoss = metaPass(ws, params: UnsafePointer(ws.thetaHat.pointer), x: xm, m: m, labels: ym)
    let jvp = ws.jvp.pointer
    network.jvp(tape: tape, direction: grads.pointer, out: jvp)
    var gnorm: Double = 0
    for i in 0..<n {
      let t = Int(labels[i])
      for k in 0..<c {
        let gv = -alpha * factor * (min(pr[i * c + k], pc) - (k == t ? 1 : 0)) * jvp[i * c + k] * invN
        gmat[i * c + k] = gv
        gnorm += Double(abs(gv))
      }
    }
    // V's gradient through the constraint: ∂L/∂vᵢ = Σ_{c≠t} (g_ic + g_it p_ic / (1 − p_it)).
    let dv = ws.tmpA.pointer
    for i in 0..<n {
      let t = Int(labels[i])
      let git = gmat[i * c + t] / GDWConstraint.denominator(UnsafePointer(pr + i * c), label: t, classes: c, clamp: pc)
      var s: Float = 0
      for k in 0..<c where k != t { s += gmat[i * c + k] + git * min(pr[i * c + k], pc) }
      dv[i] = s
    }
    wn.backward(l, dv: UnsafePointer(dv), n: n)
    try checkFiniteValues(UnsafePointer(wn.grads.pointer), wn.grads.count, what: "weight-net gradient")
    wopt.update(params: wn.params.pointer, grads: wn.grads.pointer, count: wn.params.count, lr: cfg.weightNetLR)
    // 4. ω′ = clamp(ω − clamp(η g/‖g‖₁, ±clip), [min, max]), constrained again.
    let eta = cfg.eta(classes: c)
    let scale = gnorm > 0 ? Float(Double(eta) / gnorm) : 0
    for idx in 0..<(n * c) {
      let upd = min(max(scale * gmat[idx], -cfg.gdwClip), cfg.gdwClip)
      omega[idx] = min(max(omega[idx] - upd, cfg.gdwMin), cfg.gdwMax)
    }
    constrain()
    try checkFiniteValues(UnsafePointer(omega), n * c, what: "class-level weight")
    ws.classWeights.pointer.update(from: omega, count: n * c)
    for i in 0..<n { ws.weights[i] = omega[i * c + Int(labels[i])] }
    // 5. Real step from G′_ic = ω′_ic (p_ic − y_ic)/n.
    logitGradient()
    backwardLogits(UnsafePointer(lg))
    return metaLoss
  }

  /// The baselines: weights or logit gradients computed from the train batch alone.
  private func baselineGradients(_ ws: WeightingState, n: Int) {
    let c = network.classes
    let cfg = ws.config
    let w = ws.weights.pointer
    let invN = 1 / Float(n)
    switch cfg.method {
    case .focal, .bootstrapSoft, .bootstrapHard:
      // These change the loss itself: write dL/dz directly (mean over the batch).
      let lg = dlogits.pointer
      for i in 0..<n {
        let t = Int(labels32[i])
        let p = probs.pointer + i * c
        w[i] = 1
        switch cfg.method {
        case .focal:
          // FL = −(1−p_t)^γ log p_t;  dFL/dz_k = (y_k − p_k)[γ(1−p_t)^{γ−1} p_t log p_t − (1−p_t)^γ].
          let ptv = max(p[t], 1e-12)
          let gam = cfg.focalGamma
          let one = max(1 - ptv, 0)
          let a = (gam > 0 ? gam * powf(one, gam - 1) * ptv * logf(ptv) : 0) - powf(one, gam)
          for k in 0..<c { lg[i * c + k] = ((k == t ? 1 : 0) - p[k]) * a * invN }
        case .bootstrapSoft:
          // L = −Σ_k (β y_k + (1−β) q_k) log q_k = β CE + (1−β) H(q);
          // dL/dz_k = β (q_k − y_k) − (1−β) q_k (log q_k + H).
          var h: Float = 0
          for k in 0..<c where p[k] > 0 { h -= p[k] * logf(p[k]) }
          let b = cfg.bootstrapBeta
          for k in 0..<c {
            let lq = p[k] > 0 ? logf(p[k]) : 0
            lg[i * c + k] = (b * (p[k] - (k == t ? 1 : 0)) - (1 - b) * p[k] * (lq + h)) * invN
          }
        default:
          // Hard: target β y + (1−β) onehot(argmax q) (the argmax is not differentiated).
          var best = 0
          for k in 1..<max(c, 1) where p[k] > p[best] { best = k }
          let b = cfg.bootstrapBeta
          for k in 0..<c {
            let target = b * (k == t ? 1 : 0) + (1 - b) * (k == best ? 1 : 0)
            lg[i * c + k] = (p[k] - target) * invN
          }
        }
      }
      backwardLogits(UnsafePointer(lg))
      return
    case .classBalanced, .inverseFrequency:
      for i in 0..<n { w[i] = ws.classTable[Int(labels32[i])] }
    case .hardMining:
      let k = max(1, Int((cfg.hardFraction * Float(n)).rounded(.up)))
      let order = (0..<n).sorted { losses[$0] > losses[$1] || (losses[$0] == losses[$1] && $0 < $1) }
      for i in 0..<n { w[i] = 0 }
      for j in 0..<min(k, n) { w[order[j]] = Float(n) / Float(k) }
    case .randomGaussian:
      var sum: Float = 0
      for i in 0..<n {
        w[i] = max(ws.rng.normal(), 0)
        sum += w[i]
      }
      for i in 0..<n { w[i] = sum > 0 ? w[i] / sum * Float(n) : 0 }
    case .selfPaced:
      let growths = Float(stepCount / cfg.selfPacedInterval)
      let base = cfg.selfPacedThreshold > 0 ? cfg.selfPacedThreshold : 1.3 * logf(Float(c))
      let lambda = base * powf(cfg.selfPacedGrowth, growths)
      for i in 0..<n { w[i] = losses[i] < lambda ? 1 : 0 }
    default:
      for i in 0..<n { w[i] = 1 }
    }
    for i in 0..<n { coefficients[i] = w[i] * invN }
    backwardWeighted(coefficients: coefficients.pointer)
  }
}
