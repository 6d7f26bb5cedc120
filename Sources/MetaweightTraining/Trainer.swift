import MetaweightTensor
import MetaweightLayers
import MetaweightOptim

/// Random crop (with zero padding) and horizontal flip of NCHW image batches.
public struct Augmentation: Sendable, Equatable {
  /// Zero padding on each side before a random crop back to the original size (0 = no crop).
  public var cropPadding: Int = 0
  /// Flip each image horizontally with probability 1/2.
  public var horizontalFlip: Bool = false
  /// No augmentation.
  public init() {}
  /// Whether anything is applied.
  public var isIdentity: Bool { cropPadding == 0 && !horizontalFlip }

  /// Writes an augmented copy of `x` [n, c, h, w] into `out`, drawing from `rng`.
  public func apply(
    _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, n: Int, c: Int, h: Int, w: Int,
    rng: inout RNG
  ) {
    let p = cropPadding
    for b in 0..<n {
      let dy = p > 0 ? rng.int(below: 2 * p + 1) - p : 0
      let dx = p > 0 ? rng.int(below: 2 * p + 1) - p : 0
      let flip = horizontalFlip && rng.int(below: 2) == 1
      for ch in 0..<c {
        let src = x + (b * c + ch) * h * w
        let dst = out + (b * c + ch) * h * w
        for i in 0..<h {
          let si = i + dy
          let drow = dst + i * w
          if si < 0 || si >= h {
            drow.update(repeating: 0, count: w)
            continue
          }
          let srow = src + si * w
          for j in 0..<w {
            let jj = flip ? w - 1 - j : j
            let sj = jj + dx
            drow[j] = (sj >= 0 && sj < w) ? srow[sj] : 0
          }
        }
      }
    }
  }
}

/// Result of one training step, of any method (ERM, a baseline, L2RW, MW-Net, GDW, a LAW strategy).
public struct StepResult: Sendable {
  /// Mean (unweighted) cross-entropy of the batch.
  public var loss: Double = 0
  /// Training accuracy of the batch (before the update).
  public var accuracy: Double = 0
  /// Meta loss: L2RW at θ, MW-Net/GDW at the look-ahead θ̂ (0 for methods without a meta batch).
  public var metaLoss: Double = 0
  /// Learning rate used.
  public var learningRate: Double = 0
  /// Number of updates taken so far (after this one).
  public var step: Int64 = 0
  /// Collapse and saturation statistics of the step.
  public var diagnostics = StepDiagnostics()
  /// Creates a zero result.
  public init() {}
}

/// Holds a network, its optimizer, schedule and randomness, and takes training steps.
///
/// Buffers for the train batch (tape, losses, probabilities, logit gradients) are kept between
/// steps; the weighting methods reuse them for their virtual passes.
public final class Trainer: @unchecked Sendable {
  /// The network trained.
  public let network: Network
  /// The optimizer and its state.
  public private(set) var optimizer: Optimizer
  /// The learning-rate schedule.
  public var schedule: Schedule
  /// Dropout randomness.
  public let dropoutRNG: RNGBox
  /// Shuffling and augmentation randomness.
  public var dataRNG: RNG
  /// Augmentation applied inside `step` to image batches.
  public var augmentation = Augmentation()
  /// ∂L/∂θ of the last step.
  public let grads: FloatBuffer
  /// Train-batch tape.
  public private(set) var tape: NetworkTape
  /// Per-example losses of the last forward pass.
  public private(set) var losses: FloatBuffer
  /// Softmax probabilities of the last forward pass.
  public private(set) var probs: FloatBuffer
  /// Logit gradients.
  public private(set) var dlogits: FloatBuffer
  /// Per-example coefficients.
  public private(set) var coefficients: FloatBuffer
  /// Labels of the last batch as Int32.
  public private(set) var labels32: [Int32] = []
  let augmented = Scratch()
  /// Copy of the batch-norm running statistics taken before each step, restored when it fails.
  lazy var stateBackup = FloatBuffer(count: network.state.count)
  /// The weighting method (nil = plain ERM); its steps are `weightedStep(_:…)`.
  public var weighting: StepWeighting?
  /// The collective of a data-parallel worker (`AllReduce.swift`); nil = a single process (the
  /// steps then take exactly the single-process path).
  public var allReduce: AllReduce?
  /// The global train batch size N of the current step (n without `allReduce`).
  public internal(set) var globalBatch = 0
  /// The global meta batch size M of the current step (m without `allReduce`).
  public internal(set) var globalMetaBatch = 0
  /// Synchronised batch norm in data-parallel steps: batch statistics (and their derivatives) of
  /// the global batch instead of each worker's shard (`AllReduce.swift`); off by default.
  public var synchronizedBatchNorm = false
  /// The batch-norm layers' collective while `synchronizedBatchNorm` is on.
  lazy var batchNormReduce = BatchNormAllReduce(trainer: self)

  /// Bytes a new trainer for `network` allocates before its first step: the gradient, the
  /// optimizer's moment buffers and a one-example training tape (activations, input, logits).
  public static func initialBytes(network: Network, optimizer: OptimizerConfig) -> (partialValue: Int, overflow: Bool) {
    let p = network.params.count
    let moments = (optimizer.kind == .adam ? 2 : optimizer.kind == .sgd && optimizer.momentum == 0 ? 0 : 1)
    var total = (partialValue: 0, overflow: false)
    for floats in [p, moments * p, network.activationFloatsPerExample, network.inputLayout.size, 3 * network.classes] {
      let b = floats.multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
      let t = total.partialValue.addingReportingOverflow(b.partialValue)
      total = (t.partialValue, total.overflow || b.overflow || t.overflow)
    }
    return total
  }

  /// Creates a trainer.
  /// - Throws: `MetaweightError.invalidArgument` for invalid settings; `MetaweightError.resource`
  ///   when the gradient, optimizer and one-example activation memory it would allocate
  ///   (`initialBytes`) is over `Memory.maxAllocationBytes` or cannot be allocated.
  public init(network: Network, optimizer: OptimizerConfig, schedule: Schedule, seed: UInt64) throws {
    try optimizer.validate()
    try schedule.validate()
    try Memory.check(
      bytes: Trainer.initialBytes(network: network, optimizer: optimizer),
      what: "trainer (gradient, optimizer state and activations for one example)")
    grads = try FloatBuffer(allocating: network.params.count, what: "trainer gradient")
    self.network = network
    self.optimizer = Optimizer(config: optimizer, count: network.params.count)
    self.schedule = schedule
    var seeder = RNG(seed: seed)
    dropoutRNG = RNGBox(RNG(seed: seeder.next()))
    dataRNG = RNG(seed: seeder.next())
    tape = network.makeTape(batch: 1)
    losses = FloatBuffer(count: 1)
    probs = FloatBuffer(count: network.classes)
    dlogits = FloatBuffer(count: network.classes)
    coefficients = FloatBuffer(count: 1)
  }

  /// Number of updates taken.
  public var stepCount: Int64 { optimizer.steps }
  /// Learning rate the next update will use.
  public var currentLearningRate: Float { schedule.learningRate(at: optimizer.steps) }

  /// Makes sure buffers fit `n` examples.
  public func reserve(batch n: Int) {
    if tape.capacity < n {
      tape = network.makeTape(batch: n)
      losses = FloatBuffer(count: n)
      probs = FloatBuffer(count: n * network.classes)
      dlogits = FloatBuffer(count: n * network.classes)
      coefficients = FloatBuffer(count: n)
    }
  }

  /// Forward pass of a train batch in `mode` (augmenting image batches when configured) and the
  /// per-example losses and probabilities. Returns (mean loss, accuracy).
  @discardableResult
  public func forwardTrainBatch(
    x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>, mode: Mode = .train,
    params: UnsafePointer<Float>? = nil
  ) -> (Double, Double) {
    reserve(batch: n)
    // Refill the label buffer in place (no allocation once it has the batch's size).
    if labels32.count != n { labels32 = [Int32](repeating: 0, count: n) }
    labels32.withUnsafeMutableBufferPointer { l in
      for i in 0..<n { l[i] = Int32(truncatingIfNeeded: labels[i]) }
    }
    var input = x
    if !augmentation.isIdentity, case .image(let c, let h, let w) = network.inputLayout {
      let buf = augmented.pointer(count: n * c * h * w)
      augmentation.apply(x, buf, n: n, c: c, h: h, w: w, rng: &dataRNG)
      input = UnsafePointer(buf)
    }
    network.forward(input, batch: n, tape: tape, mode: mode, rng: dropoutRNG, params: params)
    if mode == .train && network.state.count > 0
      && !Elementwise.allFinite(network.state.pointer, count: network.state.count)
    {
      // A batch-norm running statistic overflowed (e.g. the variance of finite inputs near
      // Float.greatestFiniteMagnitude). Reporting a NaN loss makes every step's finite-loss
      // check fail the step, whose rollback then restores the statistics.
      runningStatisticsOverflowed = true
      return (.nan, 0)
    }
    let c = network.classes
    labels32.withUnsafeBufferPointer { lp in
      CrossEntropy.forward(
        logits: tape.logits.pointer, labels: lp.baseAddress!, n: n, c: c, losses: losses.pointer,
        probs: probs.pointer)
    }
    var sum: Double = 0
    var correct = 0
    for i in 0..<n {
      sum += Double(losses[i])
      let row = tape.logits.pointer + i * c
      var best = 0
      for j in 1..<max(c, 1) where row[j] > row[best] { best = j }
      if best == Int(labels32[i]) { correct += 1 }
    }
    return (sum / Double(n), Double(correct) / Double(n))
  }

  /// Back-propagates Σᵢ coefᵢ·lᵢ of the last train forward pass into `grads` (or `into`).
  public func backwardWeighted(coefficients coef: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>? = nil) {
    let n = tape.batch
    labels32.withUnsafeBufferPointer { lp in
      CrossEntropy.backward(
        probs: probs.pointer, labels: lp.baseAddress!, n: n, c: network.classes,
        coefficients: coef, dlogits: dlogits.pointer)
    }
    network.backward(tape: tape, dlogits: dlogits.pointer, grads: out ?? grads.pointer)
  }

  /// Back-propagates an arbitrary logit gradient [n, classes] into `grads` (or `into`).
  public func backwardLogits(_ g: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>? = nil) {
    network.backward(tape: tape, dlogits: g, grads: out ?? grads.pointer)
  }

  /// Applies the optimizer to `grads` with the scheduled learning rate; returns it.
  @discardableResult
  public func applyUpdate() -> Float {
    let lr = currentLearningRate
    optimizer.update(params: network.params.pointer, grads: grads.pointer, count: grads.count, lr: lr)
    return lr
  }

  /// Set by a training forward pass whose batch-norm running statistics became NaN or infinite
  /// (it then reports a NaN loss); cleared at the start of each step.
  var runningStatisticsOverflowed = false

  /// Runs a step body; if it throws, the batch-norm running statistics its forward pass updated
  /// and the dropout and data generators it drew from are restored, so a failed step leaves
  /// parameters, optimizer, statistics and randomness unchanged (a retried step draws the same).
  func withStateRollback<T>(_ body: () throws -> T) throws -> T {
    stateBackup.copy(from: network.state)
    let generators = (dropout: dropoutRNG.rng, data: dataRNG)
    runningStatisticsOverflowed = false
    do {
      return try body()
    } catch {
      network.state.copy(from: stateBackup)
      dropoutRNG.rng = generators.dropout
      dataRNG = generators.data
      if runningStatisticsOverflowed, case .nonFinite = error as? MetaweightError {
        runningStatisticsOverflowed = false
        throw MetaweightError.nonFinite(
          "step \(stepCount + 1): a batch-norm running statistic would become NaN or infinite (inputs too large?); "
            + "parameters, optimizer state and running statistics were not updated")
      }
      throw error
    }
  }

  /// One ERM step on (x, labels): mean cross-entropy, or Σ wᵢ lᵢ / n with `sampleWeights`.
  /// - Throws: `MetaweightError.nonFinite` if the loss or a gradient is NaN/Inf (parameters,
  ///   optimizer state and batch-norm statistics untouched).
  public func step(
    x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>, sampleWeights: UnsafePointer<Float>? = nil
  ) throws -> StepResult {
    try withStateRollback { try stepBody(x: x, n: n, labels: labels, sampleWeights: sampleWeights) }
  }

  private func stepBody(
    x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>, sampleWeights: UnsafePointer<Float>?
  ) throws -> StepResult {
    try synchronizeCounts(n: n, m: 0)
    defer { network.batchNormSync = nil }
    let (loss, acc) = forwardTrainBatch(x: x, n: n, labels: labels)
    guard loss.isFinite else {
      throw MetaweightError.nonFinite("step \(stepCount + 1): the training loss is \(loss); parameters were not updated")
    }
    let inv = 1 / Float(globalBatch(n))
    for i in 0..<n { coefficients[i] = (sampleWeights?[i] ?? 1) * inv }
    backwardWeighted(coefficients: coefficients.pointer)
    try synchronize(grads.pointer, count: grads.count, at: .gradient)
    guard Elementwise.allFinite(grads.pointer, count: grads.count) else {
      throw MetaweightError.nonFinite("step \(stepCount + 1): a gradient is NaN or infinite; parameters were not updated")
    }
    var r = StepResult()
    r.loss = loss
    r.accuracy = acc
    try synchronizeMetrics(&r, n: n, m: 0)
    let lr = applyUpdate()
    r.learningRate = Double(lr)
    r.step = stepCount
    r.diagnostics = stepDiagnostics(weights: UnsafePointer(coefficients.pointer), unit: nil, n: n)
    return r
  }

  /// Eval-mode logits for `n` examples, in chunks of `chunk`, into `out` [n, classes].
  public func predict(x: UnsafePointer<Float>, n: Int, out: UnsafeMutablePointer<Float>, chunk: Int = 500) {
    let evalTape = network.makeTape(batch: min(n, chunk))
    let size = network.inputLayout.size, c = network.classes
    var start = 0
    while start < n {
      let cnt = min(chunk, n - start)
      network.forward(x + start * size, batch: cnt, tape: evalTape, mode: .eval, rng: dropoutRNG)
      (out + start * c).update(from: evalTape.logits.pointer, count: cnt * c)
      start += cnt
    }
  }

  /// A permutation of 0..<n drawn from the data generator (for shuffling epochs).
  public func permutation(_ n: Int) -> [Int] { dataRNG.permutation(n) }

  /// Everything needed to resume exactly: parameters, state, optimizer, schedule position, RNGs.
  public func checkpoint() -> Checkpoint {
    var ck = Checkpoint()
    ck.setString("network.signature", network.signature)
    ck.floats["network.params"] = network.params.array
    ck.floats["network.state"] = network.state.array
    ck.floats["optimizer.first"] = optimizer.first.array
    ck.floats["optimizer.second"] = optimizer.second.array
    ck.ints["optimizer.kind"] = [Int64(optimizer.config.kind.rawValue)]
    ck.ints["optimizer.steps"] = [optimizer.steps]
    ck.ints["rng.dropout"] = dropoutRNG.rng.stateWords.map { Int64(bitPattern: $0) }
    ck.ints["rng.data"] = dataRNG.stateWords.map { Int64(bitPattern: $0) }
    weighting?.save(into: &ck)
    return ck
  }

  /// Restores from a checkpoint made by a trainer of the same architecture and optimizer kind.
  /// - Throws: `MetaweightError.io` naming the mismatch; nothing is changed on failure.
  public func restore(_ ck: Checkpoint) throws {
    guard let sig = ck.string("network.signature") else { throw MetaweightError.io("checkpoint: missing network signature") }
    guard sig == network.signature else {
      throw MetaweightError.io("checkpoint: architecture mismatch (the file was saved from a different network)")
    }
    // Values first (finite floats, Adam moments >= 0, counters in 0...2^53), before any change.
    try ck.validateValues()
    let p = try ck.requireFloats("network.params", count: network.params.count)
    let s = try ck.requireFloats("network.state", count: network.state.count)
    let kind = try ck.requireInts("optimizer.kind", count: 1)[0]
    guard kind == Int64(optimizer.config.kind.rawValue) else {
      throw MetaweightError.io("checkpoint: optimizer mismatch (file has kind \(kind), trainer has \(optimizer.config.kind))")
    }
    let f = try ck.requireFloats("optimizer.first", count: optimizer.first.count)
    let sec = try ck.requireFloats("optimizer.second", count: optimizer.second.count)
    let steps = try ck.requireInts("optimizer.steps", count: 1)[0]
    let r1 = try ck.requireInts("rng.dropout", count: 4).map { UInt64(bitPattern: $0) }
    let r2 = try ck.requireInts("rng.data", count: 4).map { UInt64(bitPattern: $0) }
    if let ws = weighting {
      try ws.validate(ck)
    } else if ck.ints["weighting.method"] != nil {
      throw MetaweightError.io("checkpoint: the file holds a weighting method's state but the trainer uses ERM")
    } else if ck.ints["law_strategy.identity"] != nil {
      throw MetaweightError.io(
        "checkpoint: the file holds the state of an attached LAW strategy; attach the same strategy (Strategy.attach) before loading")
    }
    network.params.pointer.update(from: p, count: p.count)
    network.state.pointer.update(from: s, count: s.count)
    optimizer.first.pointer.update(from: f, count: f.count)
    optimizer.second.pointer.update(from: sec, count: sec.count)
    optimizer.steps = steps
    dropoutRNG.rng = RNG(state: r1)
    dataRNG = RNG(state: r2)
    try weighting?.restore(ck)
  }
}
