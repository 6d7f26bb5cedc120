// The memory modes of the meta-weighting methods: MW-Net and GDW with `memory = .low` lay the meta
// batch's tape over the train tape's dead activations (`TapePlanner`); that must give the same
// steps as `memory = .fast` (a separate meta tape), update the batch-norm running statistics once,
// and keep dropout masks, augmentation and every generator in step. It rests on every layer's
// `derivativesReadInput`/`derivativesReadOutput` being true to its backward and tangent passes,
// checked here by poisoning the activations declared dead. L2RW always shares one tape.
import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

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
  let ws: WeightingMethod
  var results: [StepResult] = []
  /// The method's meta tape (MW-Net, GDW), nil without one.
  var metaTape: NetworkTape? { (ws as? LookAheadWeighting)?.meta.tape }

  init(
    spec: String, input: Layout, method: WeightingConfig.Method, memory: WeightingConfig.Memory, augment: Bool
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
    ws = try XCTUnwrap(makeStepWeighting(config: cfg, network: network, seed: 5))
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
    // The second linear layer's output is dead (batch norm's, fused with its ReLU, is not stored).
    ("linear(out=12);batchnorm;relu;dropout(p=0.5);linear(out=12);relu;linear(out=4)", .flat(7)),
    ("linear(out=12);relu;linear(out=12);relu;linear(out=4)", .flat(7)),
    ("wrn(classes=3,depth=10,widen=1,dropout=0.3)", .image(c: 3, h: 8, w: 8)),
    ("conv2d(out=4,k=3,p=1);relu;avgpool(k=2);conv2d(out=6,k=3,p=1);batchnorm;relu;gap;linear(out=3)", .image(c: 2, h: 6, w: 6)),
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
  /// over several steps with dropout, batch norm, augmentation, residual blocks with both kinds of
  /// shortcut, and a meta batch larger than the train batch as well as a smaller one.
  func testLowMemoryModeTakesTheSameStepsAsFastMode() throws {
    for (spec, input) in Self.cases {
      for (method, n, m) in [(WeightingConfig.Method.mwnet, 6, 9), (.gdw, 6, 9), (.mwnet, 7, 4), (.gdw, 7, 4)] {
        let image: Bool
        if case .image = input { image = true } else { image = false }
        let fast = try MMRun(spec: spec, input: input, method: method, memory: .fast, augment: image)
        let low = try MMRun(spec: spec, input: input, method: method, memory: .low, augment: image)
        let label = "\(spec) \(method) n \(n) m \(m)"
        for b in batches(input, classes: fast.network.classes, n: n, m: m, count: 3) {
          try fast.step(b)
          try low.step(b)
        }
        XCTAssertEqual(fast.metaTape?.borrowed.count, 0, "\(label): fast mode borrows no activations")
        XCTAssertGreaterThan(low.metaTape?.borrowed.count ?? 0, 0, "\(label): low-memory mode borrows no activations")
        let pf = fast.network.params.array, pl = low.network.params.array
        XCTAssertEqual(pf.count, pl.count)
        XCTAssertEqual(pf, pl, "\(label): parameters")
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
  /// areas, and with `memory = .low` borrows only the train tape's dead activation buffers (never
  /// one a later pass reads, never its input copy), each at most once, keeps its own dead
  /// activations in the shared gradient/tangent pool, and on a small ResNet allocates under half
  /// the activation bytes a tape of its own would (47%: the batch norms, and the identity blocks'
  /// sums, fused with their ReLUs store no output, in either tape, so the train tape lends fewer
  /// dead buffers; the two tapes together hold no more than unfused: `BatchNormReLUFusionTests`).
  func testLowMemoryMetaTapeBorrowsOnlyDeadTrainActivations() throws {
    let (spec, input) = Self.cases[1]
    let b = batches(input, classes: 3, n: 5, m: 5, count: 1)[0]
    for (method, memory, hasTape) in [
      (WeightingConfig.Method.l2rw, WeightingConfig.Memory.fast, false), (.l2rw, .low, false), (.mwnet, .fast, true),
      (.mwnet, .low, true), (.gdw, .fast, true), (.gdw, .low, true),
    ] {
      let run = try MMRun(spec: spec, input: input, method: method, memory: memory, augment: false)
      try run.step(b)
      let label = "\(method) \(memory)"
      XCTAssertEqual(run.metaTape != nil, hasTape, "\(label): meta tape")
      guard let mt = run.metaTape else { continue }
      let train = run.trainer.tape
      XCTAssertTrue(mt.buffers === train.buffers, "\(label): meta tape has its own buffers")
      XCTAssertTrue(mt.scratch === train.scratch, "\(label): meta tape has its own scratch")
      XCTAssertFalse(mt.input === train.input, "\(label): input copy shared")
      let own = run.network.activationBytes(train)
      if memory == .fast {
        XCTAssertTrue(mt.borrowed.isEmpty, label)
        XCTAssertEqual(mt.ownedActivationBytes, own, label)
        continue
      }
      var dead: [FloatBuffer] = []
      deadActivations(of: run.network.root, train.root, into: &dead)
      let deadIDs = Set(dead.map { ObjectIdentifier($0) })
      let borrowedIDs = mt.borrowed.map { ObjectIdentifier($0) }
      XCTAssertEqual(Set(borrowedIDs).count, borrowedIDs.count, "\(label): a buffer borrowed twice")
      XCTAssertTrue(borrowedIDs.allSatisfy { deadIDs.contains($0) }, "\(label): borrowed a live buffer")
      let laneIDs = mt.lanes.map { ObjectIdentifier($0) }
      XCTAssertFalse(laneIDs.isEmpty, "\(label): no lanes in the pool")
      XCTAssertEqual(Set(laneIDs).count, laneIDs.count, "\(label): a pool buffer used for two lanes")
      XCTAssertTrue(Set(laneIDs).isDisjoint(with: Set(borrowedIDs)), "\(label): a lane is also a borrowed buffer")
      XCTAssertLessThan(Double(mt.ownedActivationBytes), Double(own) / 2, "\(label): owns \(mt.ownedActivationBytes) of \(own)")
    }
  }

  /// On a 7-12-12-4 MLP the meta batch's live activations are the two ReLU outputs, which take
  /// the train tape's two dead buffers (its Linear outputs), and its dead ones (the two hidden
  /// Linear outputs) share one lane in the gradient pool: nothing is allocated.
  func testLowMemoryMetaTapeOnAnMLPAllocatesNothing() throws {
    let (spec, input) = Self.cases[3]
    let run = try MMRun(spec: spec, input: input, method: .mwnet, memory: .low, augment: false)
    try run.step(batches(input, classes: 4, n: 6, m: 6, count: 1)[0])
    let mt = try XCTUnwrap(run.metaTape)
    XCTAssertEqual(mt.borrowed.count, 2)
    XCTAssertEqual(mt.lanes.count, 1)
    XCTAssertEqual(mt.ownedActivationBytes, 0)
  }

  /// The meta batch's dead activations live in the gradient/tangent pool without growing it: after
  /// three steps every slot holds exactly what `poolSlotSizes` predicts for the passes, in both
  /// modes (so the prediction the lanes rely on is right, and the lanes cost nothing).
  func testLanesUseThePoolAtTheSizesItsPassesNeed() throws {
    for (spec, input) in Self.cases {
      for (n, m) in [(6, 9), (7, 4)] {
        var slots: [[Int]] = []
        for memory in [WeightingConfig.Memory.fast, .low] {
          let run = try MMRun(spec: spec, input: input, method: .mwnet, memory: memory, augment: false)
          for b in batches(input, classes: run.network.classes, n: n, m: m, count: 3) { try run.step(b) }
          var predicted: [Int: Int] = [:]
          poolSlotSizes(of: run.network.root, depth: 0, batch: max(n, m), into: &predicted)
          let held = run.trainer.tape.buffers.slotBytes
          let expected = (0..<held.count).map { 4 * (predicted[$0] ?? 0) }
          XCTAssertEqual(held, expected, "\(spec) \(memory) n \(n) m \(m): pool slots")
          if memory == .low { XCTAssertFalse(run.metaTape?.lanes.isEmpty ?? true, "\(spec): no pooled lanes") }
          slots.append(held)
        }
        XCTAssertEqual(slots[0], slots[1], "\(spec): low mode grew the pool")
      }
    }
  }

  /// Every layer's derivatives read no activation its flags declare unread: after a training
  /// forward pass, filling every dead activation buffer with NaN leaves the backward pass's
  /// parameter gradients and the JVP bit for bit unchanged (every layer kind, composites included).
  func testBackwardAndTangentIgnoreDeadActivations() throws {
    let lenet = ("lenet5(classes=3)", Layout.image(c: 1, h: 28, w: 28))
    for (spec, input) in Self.cases + [lenet] {
      let net = try Network(try SpecParser.parse(spec, input: input), seed: 9)
      let n = 4
      var rng = RNG(seed: 21)
      let x = FloatBuffer((0..<(n * input.size)).map { _ in rng.normal() })
      let dl = FloatBuffer((0..<(n * net.classes)).map { _ in rng.normal() })
      let dir = FloatBuffer((0..<net.params.count).map { _ in rng.normal() })
      let tape = net.makeTape(batch: n)
      var dead: [FloatBuffer] = []
      deadActivations(of: net.root, tape.root, into: &dead)
      XCTAssertFalse(dead.isEmpty, spec)
      var results: [([Float], [Float])] = []
      for poison in [false, true] {
        net.forward(x.pointer, batch: n, tape: tape, mode: .virtualTrain, rng: RNGBox(RNG(seed: 4)))
        if poison { for d in dead { d.pointer.update(repeating: .nan, count: d.count) } }
        let g = FloatBuffer(count: net.params.count)
        net.backward(tape: tape, dlogits: dl.pointer, grads: g.pointer)
        let j = FloatBuffer(count: n * net.classes)
        net.jvp(tape: tape, direction: dir.pointer, out: j.pointer)
        results.append((g.array, j.array))
      }
      XCTAssertTrue(results[1].0.allSatisfy { $0.isFinite }, "\(spec): gradient read a dead activation")
      XCTAssertEqual(results[0].0, results[1].0, "\(spec): gradients")
      XCTAssertEqual(results[0].1, results[1].1, "\(spec): JVP")
    }
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
