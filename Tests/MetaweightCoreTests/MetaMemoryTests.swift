// The memory modes of the meta-weighting methods: MW-Net and GDW with `memory = .low` run the meta
// pass in the train batch's tape and recompute the train forward pass afterwards; that must give
// the same steps as `memory = .fast` (a separate meta tape), update the batch-norm running
// statistics once, and keep dropout masks, augmentation and every generator in step. L2RW always
// shares one tape.
import XCTest

@testable import MetaweightCore

private struct MMBatch {
  let x: FloatBuffer
  let y: [Int64]
  let xm: FloatBuffer
  let ym: [Int64]
}

/// A trainer with a weighting method on a small network, fed the same seeded batches.
private final class MMRun {
  let network: Network
  let trainer: Trainer
  let ws: WeightingState
  var results: [MethodStepResult] = []

  init(
    spec: String, input: Layout, method: WeightingConfig.Method, memory: WeightingConfig.Memory, augment: Bool,
    share: Float = 0.25
  ) throws {
    network = try Network(try SpecParser.parse(spec, input: input), seed: 3)
    var opt = OptimizerConfig()
    opt.momentum = 0.9
    opt.weightDecay = 5e-4
    trainer = try Trainer(network: network, optimizer: opt, schedule: Schedule(baseLR: 0.1), seed: 11)
    if augment {
      trainer.augmentation.cropPadding = 1
      trainer.augmentation.horizontalFlip = true
    }
    var cfg = WeightingConfig()
    cfg.method = method
    cfg.memory = memory
    cfg.lowMemoryShare = share
    ws = try WeightingState(config: cfg, network: network, seed: 5)
    trainer.weighting = ws
  }

  func step(_ b: MMBatch) throws {
    let r = try b.y.withUnsafeBufferPointer { y in
      try b.ym.withUnsafeBufferPointer { ym in
        try trainer.weightedStep(
          ws, x: b.x.pointer, n: b.y.count, labels: y.baseAddress!, xMeta: b.xm.pointer, m: b.ym.count,
          labelsMeta: ym.baseAddress!)
      }
    }
    results.append(r)
  }
}

final class MetaMemoryTests: XCTestCase {
  private static let cases: [(String, Layout)] = [
    ("conv2d(out=4,k=3,p=1);batchnorm;relu;dropout(p=0.3);maxpool(k=2);flatten;linear(out=6);dropout(p=0.2);linear(out=3)",
     .image(c: 2, h: 6, w: 6)),
    ("resnet(classes=3,n=1)", .image(c: 3, h: 8, w: 8)),
    ("linear(out=12);batchnorm;relu;dropout(p=0.5);linear(out=4)", .flat(7)),
    ("linear(out=12);relu;linear(out=12);relu;linear(out=4)", .flat(7)),
  ]

  private func batches(_ input: Layout, classes: Int, n: Int, m: Int, count: Int) -> [MMBatch] {
    var rng = RNG(seed: 77)
    return (0..<count).map { _ in
      MMBatch(
        x: FloatBuffer((0..<(n * input.size)).map { _ in rng.normal() }),
        y: (0..<n).map { _ in Int64(rng.int(below: classes)) },
        xm: FloatBuffer((0..<(m * input.size)).map { _ in rng.normal() }),
        ym: (0..<m).map { _ in Int64(rng.int(below: classes)) })
    }
  }

  /// Low-memory MW-Net and GDW steps equal the fast mode's: parameters, running statistics,
  /// weights (and GDW's class-level weights), V and its optimizer, losses and every generator,
  /// over several steps with dropout, batch norm, augmentation and a meta batch larger than the
  /// train batch; with the default share of layers held apart, none (the whole train forward
  /// recomputed) and all but the first.
  func testLowMemoryModeTakesTheSameStepsAsFastMode() throws {
    for (spec, input) in Self.cases {
      for (method, share) in [(WeightingConfig.Method.mwnet, Float(0.25)), (.gdw, 0.25), (.mwnet, 0), (.gdw, 0), (.mwnet, 0.9)] {
        let image: Bool
        if case .image = input { image = true } else { image = false }
        let fast = try MMRun(spec: spec, input: input, method: method, memory: .fast, augment: image)
        let low = try MMRun(spec: spec, input: input, method: method, memory: .low, augment: image, share: share)
        let label = "\(spec) \(method) share \(share)"
        for b in batches(input, classes: fast.network.classes, n: 6, m: 9, count: 3) {
          try fast.step(b)
          try low.step(b)
        }
        XCTAssertEqual(fast.ws.metaSharedLayers, 0, "\(label): fast mode shares no activations")
        XCTAssertGreaterThan(low.ws.metaSharedLayers, 0, "\(label): low-memory mode shares no activations")
        if share == 0 {
          XCTAssertEqual(low.ws.metaSharedLayers, low.network.root.spineCount - 1, "\(label): share 0 shares all but the last layer")
        }
        let pf = fast.network.params.array, pl = low.network.params.array
        XCTAssertEqual(pf.count, pl.count)
        let scale = max(pf.map(abs).max() ?? 1, 1)
        let diff = zip(pf, pl).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(diff, 1e-6 * scale, "\(label): parameters differ by \(diff)")
        XCTAssertEqual(fast.network.state.array, low.network.state.array, "\(label): running statistics")
        XCTAssertEqual(fast.ws.weights.array, low.ws.weights.array, "\(label): example weights")
        XCTAssertEqual(fast.ws.classWeights.array, low.ws.classWeights.array, "\(label): class-level weights")
        XCTAssertEqual(fast.ws.weightNet?.params.array, low.ws.weightNet?.params.array, "\(label): V")
        XCTAssertEqual(fast.ws.weightNetOptimizer?.first.array, low.ws.weightNetOptimizer?.first.array, "\(label): V's optimizer")
        XCTAssertEqual(fast.trainer.optimizer.first.array, low.trainer.optimizer.first.array, "\(label): momentum")
        XCTAssertEqual(fast.trainer.dropoutRNG.rng.stateWords, low.trainer.dropoutRNG.rng.stateWords, "\(label): dropout generator")
        XCTAssertEqual(fast.trainer.dataRNG.stateWords, low.trainer.dataRNG.stateWords, "\(label): data generator")
        for (a, b) in zip(fast.results, low.results) {
          XCTAssertEqual(a.loss, b.loss, "\(label): loss")
          XCTAssertEqual(a.accuracy, b.accuracy, "\(label): accuracy")
          XCTAssertEqual(a.metaLoss, b.metaLoss, "\(label): meta loss")
        }
      }
    }
  }

  /// L2RW keeps one activation tape; MW-Net/GDW's meta tape shares the train tape's scratch
  /// areas, and with `memory = .low` the first layers' activations (and the input copy) too,
  /// holding apart at most the configured share of the train tape's activation bytes.
  func testMetaTapeSharesTheTrainTapesStorageAsConfigured() throws {
    let (spec, input) = Self.cases[1]
    let b = batches(input, classes: 3, n: 5, m: 4, count: 1)[0]
    for (method, memory, hasTape) in [
      (WeightingConfig.Method.l2rw, WeightingConfig.Memory.fast, false), (.l2rw, .low, false), (.mwnet, .fast, true),
      (.mwnet, .low, true), (.gdw, .fast, true), (.gdw, .low, true),
    ] {
      let run = try MMRun(spec: spec, input: input, method: method, memory: memory, augment: false)
      try run.step(b)
      let label = "\(method) \(memory)"
      XCTAssertEqual(run.ws.metaTape != nil, hasTape, "\(label): meta tape")
      guard let mt = run.ws.metaTape else { continue }
      let train = run.trainer.tape
      XCTAssertTrue(mt.buffers === train.buffers, "\(label): meta tape has its own buffers")
      XCTAssertTrue(mt.scratch === train.scratch, "\(label): meta tape has its own scratch")
      XCTAssertEqual(mt.input === train.input, memory == .low, "\(label): input copy shared")
      let total = run.network.layerBytes(train)
      if memory == .low {
        // Held apart: the unshared layers' bytes (for m ≤ n examples), within the share.
        let apart = run.network.spineBytes(mt)[run.ws.metaSharedLayers...].reduce(0, +)
        XCTAssertLessThanOrEqual(Double(apart), 0.25 * Double(total) + 1, "\(label): held apart \(apart) of \(total)")
        XCTAssertGreaterThan(run.ws.metaSharedLayers, 0, "\(label)")
      } else {
        XCTAssertEqual(run.ws.metaSharedLayers, 0, "\(label)")
      }
    }
  }

  /// A layer that keeps no state and whose output only a ReLU reads (which uses its own output)
  /// is not run again: on a 7-12-12-4 MLP the meta batch holds the last ReLU's output apart,
  /// shares the first three layers, and only the first Linear and ReLU are recomputed.
  func testLowMemoryModeSkipsRecomputingALinearWhoseOutputOnlyAReLUReads() throws {
    let (spec, input) = Self.cases[3]
    let run = try MMRun(spec: spec, input: input, method: .mwnet, memory: .low, augment: false)
    try run.step(batches(input, classes: 4, n: 6, m: 6, count: 1)[0])
    XCTAssertEqual(run.network.root.spineCount, 5)
    XCTAssertEqual(run.ws.metaSharedLayers, 3, "shared spine layers")
    XCTAssertEqual(run.ws.metaRecomputedLayers, 2, "recomputed spine layers")
  }

  /// `memory=low|fast` in a method spec sets the mode (default low); other values are rejected.
  func testMethodSpecParsesTheMemoryOption() throws {
    XCTAssertEqual(try MethodSpec.parse("mwnet").memory, .low)
    XCTAssertEqual(try MethodSpec.parse("mwnet(memory=low)").memory, .low)
    XCTAssertEqual(try MethodSpec.parse("gdw(eta=100, memory=FAST)").memory, .fast)
    XCTAssertThrowsError(try MethodSpec.parse("gdw(memory=small)")) { error in
      guard case MetaweightError.invalidArgument(let msg) = error else { return XCTFail("wrong error \(error)") }
      XCTAssertTrue(msg.contains("memory") && msg.contains("small"), msg)
    }
  }
}
