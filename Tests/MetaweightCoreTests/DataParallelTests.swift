// Exact synchronous data parallelism in the core (`AllReduce`, `SyncPoint`): K trainers on K
// threads, each stepping on a shard of the train and meta batches and summing at every sync point
// through an in-process all-reduce (rank-ordered sums, so every worker gets the same bits), take
// the single-process step on the concatenated batch up to float32 summation order. Tolerance: a
// reassociated float32 sum of N terms differs by at most (N − 1)·2⁻²⁴·Σ|terms| whatever the order
// (so under any OpenBLAS kernel family); N = 24 here, three steps at lr 0.1 with momentum 0.9:
// ≤ ~1e-6 on parameters of scale ≤ 1 (measured ~3e-8); we allow 2e-6 + 1e-5 relative.
import Foundation
import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting

/// K workers' all-reduce on K threads: the last to arrive sums the parts in rank order.
private final class ThreadSum: @unchecked Sendable {
  let workers: Int
  private let condition = NSCondition()
  private var parts: [[Float]]
  private var points: [SyncPoint?]
  private var result: [Float] = []
  private var arrived = 0
  private var generation = 0
  /// Every sync point rank 0 reached, in order.
  private(set) var trace: [SyncPoint] = []

  init(workers: Int) {
    self.workers = workers
    parts = Array(repeating: [], count: workers)
    points = Array(repeating: nil, count: workers)
  }

  func sum(rank: Int, _ buffer: UnsafeMutablePointer<Float>, count: Int, at point: SyncPoint) {
    condition.lock()
    defer { condition.unlock() }
    let gen = generation
    parts[rank] = Array(UnsafeBufferPointer(start: buffer, count: count))
    points[rank] = point
    if rank == 0 { trace.append(point) }
    arrived += 1
    if arrived == workers {
      precondition(Set(points.compactMap { $0 }).count == 1, "workers at different sync points: \(points)")
      var total = parts[0]
      for r in 1..<workers { for i in 0..<count { total[i] += parts[r][i] } }
      result = total
      arrived = 0
      generation += 1
      condition.broadcast()
    } else {
      while generation == gen { condition.wait() }
    }
    buffer.update(from: result, count: count)
  }
}

/// One worker's hook.
private final class RankReduce: AllReduce {
  let group: ThreadSum
  let rank: Int
  init(_ group: ThreadSum, rank: Int) {
    self.group = group
    self.rank = rank
  }
  func sum(_ buffer: UnsafeMutablePointer<Float>, count: Int, at point: SyncPoint) throws {
    group.sum(rank: rank, buffer, count: count, at: point)
  }
}

/// A hook that fails at its `failAt`-th call.
private final class FailingReduce: AllReduce {
  struct Lost: Error {}
  let failAt: Int
  var calls = 0
  init(failAt: Int) { self.failAt = failAt }
  func sum(_ buffer: UnsafeMutablePointer<Float>, count: Int, at point: SyncPoint) throws {
    calls += 1
    if calls - 1 == failAt { throw Lost() }
  }
}

private struct DPBatch {
  let x: [Float], y: [Int64], xm: [Float], ym: [Int64]
  let d: Int

  /// Rank r's strided shard (examples r, r + K, ...).
  func shard(_ r: Int, of k: Int) -> DPBatch {
    func rows(_ a: [Float], _ n: Int) -> [Float] {
      stride(from: r, to: n, by: k).flatMap { a[($0 * d)..<(($0 + 1) * d)] }
    }
    return DPBatch(
      x: rows(x, y.count), y: stride(from: r, to: y.count, by: k).map { y[$0] },
      xm: rows(xm, ym.count), ym: stride(from: r, to: ym.count, by: k).map { ym[$0] }, d: d)
  }
}

private final class DPWorker: @unchecked Sendable {
  let network: Network
  let trainer: Trainer
  let ws: WeightingMethod?
  var results: [StepResult] = []
  var weights: [Float] = []

  /// A worker of `method`; MW-Net normalises its weights by their batch sum (the Python default)
  /// unless `normalize` is false, and feeds V the detached loss unless `detach` is false.
  init(method: WeightingConfig.Method, normalize: Bool = true, detach: Bool = true, batchNorm: Bool = false) throws {
    let spec = batchNorm ? "linear(out=32);batchnorm;relu;linear(out=5)" : "linear(out=32);relu;linear(out=5)"
    network = try Network(try SpecParser.parse(spec, input: .flat(16)), seed: 3)
    var opt = OptimizerConfig()
    opt.momentum = 0.9
    opt.weightDecay = 5e-4
    trainer = try Trainer(network: network, optimizer: opt, schedule: Schedule(baseLR: 0.1), seed: 11)
    var cfg = WeightingConfig()
    cfg.method = method
    if method == .mwnet {
      cfg.normalizeWeights = normalize
      cfg.detachLoss = detach
    }
    ws = try makeStepWeighting(config: cfg, network: network, seed: 5)
    trainer.weighting = ws
  }

  func step(_ b: DPBatch) throws {
    let r = try b.y.withUnsafeBufferPointer { y in
      try b.ym.withUnsafeBufferPointer { ym in
        try b.x.withUnsafeBufferPointer { x in
          try b.xm.withUnsafeBufferPointer { xm in
            if let ws = ws {
              return try trainer.weightedStep(
                ws, x: x.baseAddress!, n: b.y.count, labels: y.baseAddress!, xMeta: xm.baseAddress!, m: b.ym.count,
                labelsMeta: ym.baseAddress!)
            }
            return try trainer.step(x: x.baseAddress!, n: b.y.count, labels: y.baseAddress!)
          }
        }
      }
    }
    results.append(r)
    weights = ws.map { Array(UnsafeBufferPointer(start: $0.weights.pointer, count: b.y.count)) } ?? []
  }

  /// θ, the running statistics and (MW-Net, GDW) V's parameters.
  var state: [Float] { network.params.array + network.state.array + (ws?.weightNet?.params.array ?? []) }
}

final class DataParallelTests: XCTestCase {
  private let methods: [WeightingConfig.Method] = [.erm, .l2rw, .mwnet, .gdw]
  /// Every method, and MW-Net's three chains (normalised, normalised with the loss not detached,
  /// not normalised).
  private let variants: [(WeightingConfig.Method, Bool, Bool)] = [
    (.erm, true, true), (.l2rw, true, true), (.mwnet, true, true), (.mwnet, true, false), (.mwnet, false, true),
    (.gdw, true, true),
  ]

  private func batch(seed: UInt64) -> DPBatch {
    var rng = RNG(seed: seed)
    let n = 24, m = 12, d = 16
    return DPBatch(
      x: (0..<(n * d)).map { _ in rng.normal() }, y: (0..<n).map { _ in Int64(rng.int(below: 5)) },
      xm: (0..<(m * d)).map { _ in rng.normal() }, ym: (0..<m).map { _ in Int64(rng.int(below: 5)) }, d: d)
  }

  /// Runs `body(rank)` on K threads at once and waits.
  private func onThreads(_ k: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
    final class Errors: @unchecked Sendable {
      let lock = NSLock()
      var all: [String] = []
    }
    let errors = Errors()
    let group = DispatchGroup()
    for r in 0..<k {
      group.enter()
      Thread {
        do { try body(r) } catch {
          errors.lock.lock()
          errors.all.append("\(error)")
          errors.lock.unlock()
        }
        group.leave()
      }.start()
    }
    XCTAssertEqual(group.wait(timeout: .now() + 300), .success)
    XCTAssertEqual(errors.all, [])
  }

  func testKWorkerStepsEqualTheSingleProcessStepsOnTheConcatenatedBatch() throws {
    let batches = (0..<3).map { batch(seed: 100 + UInt64($0)) }
    for (method, normalize, detach) in variants {
      let single = try DPWorker(method: method, normalize: normalize, detach: detach)
      for b in batches { try single.step(b) }
      for k in [2, 3] {
        let group = ThreadSum(workers: k)
        let workers = try (0..<k).map { _ in try DPWorker(method: method, normalize: normalize, detach: detach) }
        for (r, w) in workers.enumerated() { w.trainer.allReduce = RankReduce(group, rank: r) }
        try onThreads(k) { r in for b in batches { try workers[r].step(b.shard(r, of: k)) } }
        for w in workers {
          XCTAssertEqual(w.state, workers[0].state, "\(method) K=\(k): workers differ")
          XCTAssertEqual(w.trainer.stepCount, 3)
        }
        let (a, b) = (workers[0].state, single.state)
        for i in 0..<a.count {
          XCTAssertEqual(a[i], b[i], accuracy: 2e-6 + 1e-5 * abs(b[i]), "\(method) K=\(k) parameter \(i)")
        }
        // The last step's weights, interleaved back, are the single step's; the reported loss is global.
        for (r, w) in workers.enumerated() {
          for (j, v) in w.weights.enumerated() {
            XCTAssertEqual(v, single.weights[r + j * k], accuracy: 1e-7 + 1e-4 * abs(single.weights[r + j * k]))
          }
          XCTAssertEqual(w.results[2].loss, single.results[2].loss, accuracy: 1e-6 * single.results[2].loss)
          XCTAssertEqual(w.results[2].metaLoss, single.results[2].metaLoss, accuracy: 1e-6 * max(single.results[2].metaLoss, 1))
          XCTAssertEqual(w.results[2].accuracy, single.results[2].accuracy, accuracy: 1e-9)
        }
      }
    }
  }

  func testWithSynchronisedBatchNormKWorkerStepsEqualTheConcatenatedStep() throws {
    // Batch norm with the global batch's statistics (`Trainer.synchronizedBatchNorm`): the same
    // equality for a network with batch norm, running statistics included.
    let batches = (0..<3).map { batch(seed: 200 + UInt64($0)) }
    for method in methods {
      let single = try DPWorker(method: method, batchNorm: true)
      for b in batches { try single.step(b) }
      for k in [2, 3] {
        let group = ThreadSum(workers: k)
        let workers = try (0..<k).map { _ in try DPWorker(method: method, batchNorm: true) }
        for (r, w) in workers.enumerated() {
          w.trainer.allReduce = RankReduce(group, rank: r)
          w.trainer.synchronizedBatchNorm = true
        }
        try onThreads(k) { r in for b in batches { try workers[r].step(b.shard(r, of: k)) } }
        XCTAssertTrue(group.trace.contains(.batchNormStatistics) && group.trace.contains(.batchNormGradient))
        XCTAssertEqual(group.trace.contains(.batchNormTangent), method != .erm)  // the JVP's
        for w in workers { XCTAssertEqual(w.state, workers[0].state, "\(method) K=\(k): workers differ") }
        for (a, b) in zip(workers[0].state, single.state) {
          XCTAssertEqual(a, b, accuracy: 2e-6 + 1e-5 * abs(b), "\(method) K=\(k)")
        }
      }
    }
  }

  func testSyncPointsOfEachMethodInOrder() throws {
    let expected: [WeightingConfig.Method: [SyncPoint]] = [
      .erm: [.counts, .gradient, .metrics],
      .l2rw: [.counts, .metaGradient, .l2rwNormalizer, .gradient, .metrics],
      .mwnet: [.counts, .weightSums, .virtualGradient, .metaGradient, .chainSums, .weightNetGradient, .weightSums,
               .gradient, .metrics],
      .gdw: [.counts, .virtualGradient, .metaGradient, .gradientNorm, .weightNetGradient, .gradient, .metrics],
    ]
    for method in methods {
      let group = ThreadSum(workers: 1)
      let w = try DPWorker(method: method)
      w.trainer.allReduce = RankReduce(group, rank: 0)
      try w.step(batch(seed: 1))
      XCTAssertEqual(group.trace, expected[method], "\(method)")
    }
  }

  func testAFailureAtAnySyncPointLeavesTheTrainerAndVUnchanged() throws {
    for (method, normalize, detach) in variants {
      let probe = try DPWorker(method: method, normalize: normalize, detach: detach)
      let trace = ThreadSum(workers: 1)
      probe.trainer.allReduce = RankReduce(trace, rank: 0)
      try probe.step(batch(seed: 2))
      for failAt in 0..<trace.trace.count {
        let w = try DPWorker(method: method, normalize: normalize, detach: detach)
        try w.step(batch(seed: 1))  // V and the optimizer have state to lose
        let before = w.trainer.checkpoint()
        w.trainer.allReduce = FailingReduce(failAt: failAt)
        XCTAssertThrowsError(try w.step(batch(seed: 2)), "\(method) failing at call \(failAt)") { error in
          guard case .invalidState(let m) = error as? MetaweightError else { return XCTFail("\(error)") }
          XCTAssertTrue(m.contains("sync point"), m)
        }
        let after = w.trainer.checkpoint()
        XCTAssertEqual(after.floats, before.floats, "\(method) failing at call \(failAt)")
        XCTAssertEqual(after.ints, before.ints, "\(method) failing at call \(failAt)")
      }
    }
  }

  func testAOneWorkerGroupTakesTheSingleProcessStep() throws {
    // K = 1 sums nothing; only the scalars (L2RW's normaliser, GDW's ‖g‖₁) pass the hook as
    // float32 instead of staying float64: ERM and MW-Net keep every bit, L2RW and GDW a ~1e-7
    // relative rounding of one scalar.
    for (method, normalize, detach) in variants {
      let plain = try DPWorker(method: method, normalize: normalize, detach: detach)
      let hooked = try DPWorker(method: method, normalize: normalize, detach: detach)
      hooked.trainer.allReduce = RankReduce(ThreadSum(workers: 1), rank: 0)
      for s in 0..<2 {
        try plain.step(batch(seed: UInt64(s)))
        try hooked.step(batch(seed: UInt64(s)))
      }
      if method == .erm || method == .mwnet {  // (MW-Net's sums are float32 already)
        XCTAssertEqual(plain.state, hooked.state, "\(method)")
      } else {
        for (a, b) in zip(hooked.state, plain.state) { XCTAssertEqual(a, b, accuracy: 1e-7 + 1e-6 * abs(b), "\(method)") }
      }
    }
  }
}
