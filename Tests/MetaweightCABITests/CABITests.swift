import CMetaweight
import Foundation
@testable import MetaweightCABI  // the Swift implementations of the C entry points (linked through this import)
import XCTest

/// The exported C functions, called through the `CMetaweight` header: bad input returns the
/// documented status code and a message naming the argument, and never traps.
final class MetaweightCABITests: XCTestCase {
  static let features: Int64 = 4
  static let classes: Int64 = 3
  static let spec = "mlp(hidden=8, classes=3)"

  private var directory: URL!

  override func setUpWithError() throws {
    directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("metaweight-cabi-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    if let d = directory { try? FileManager.default.removeItem(at: d) }
  }

  private func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

  // MARK: - Helpers

  private func lastError() -> String { String(cString: mw_last_error()) }

  /// Asserts `status == code` and that the thread's last error mentions every `needles` entry.
  private func expect(
    _ status: mw_status, _ code: mw_status, naming needles: String..., file: StaticString = #filePath, line: UInt = #line
  ) {
    let msg = lastError()
    XCTAssertEqual(status, code, "status (message: '\(msg)')", file: file, line: line)
    XCTAssertFalse(msg.isEmpty, "a failing call must set mw_last_error()", file: file, line: line)
    for n in needles {
      XCTAssertTrue(msg.contains(n), "message '\(msg)' should mention '\(n)'", file: file, line: line)
    }
  }

  private func ok(_ status: mw_status, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(status, MW_OK, "failed: \(lastError())", file: file, line: line)
  }

  private func makeNetwork(_ spec: String = MetaweightCABITests.spec, seed: UInt64 = 1) throws -> mw_network {
    var shape: [Int64] = [Self.features]
    var net: mw_network = 0
    let st = mw_network_create(spec, &shape, 1, seed, &net)
    guard st == MW_OK else { throw XCTSkip("mw_network_create failed: \(lastError())") }
    XCTAssertNotEqual(net, 0)
    return net
  }

  private func sgd(lr: Float = 0.1, momentum: Float = 0.9) -> mw_optimizer_config {
    var o = mw_optimizer_config()
    o.kind = 0
    o.lr = lr
    o.momentum = momentum
    o.weight_decay = 5e-4
    o.beta1 = 0.9
    o.beta2 = 0.999
    o.eps = 1e-8
    return o
  }

  private func makeTrainer(_ net: mw_network, opt: mw_optimizer_config? = nil, seed: UInt64 = 7) throws -> mw_trainer {
    var o = opt ?? sgd()
    var tr: mw_trainer = 0
    let st = mw_trainer_create(net, &o, nil, seed, &tr)
    guard st == MW_OK else { throw XCTSkip("mw_trainer_create failed: \(lastError())") }
    return tr
  }

  /// A deterministic batch of n examples.
  private func batch(_ n: Int, seed: Int = 0) -> (x: [Float], shape: [Int64], y: [Int64]) {
    let x = (0..<(n * Int(Self.features))).map { Float(sin(Double($0 * 7 + seed))) }
    let y = (0..<n).map { Int64(($0 + seed) % Int(Self.classes)) }
    return (x, [Int64(n), Self.features], y)
  }

  private func step(_ tr: mw_trainer, _ x: [Float], _ shape: [Int64], _ y: [Int64], weights: [Float]? = nil,
                    rank: Int32? = nil, nLabels: Int64? = nil) -> (mw_status, mw_step_result) {
    var r = mw_step_result()
    let st: mw_status
    if let w = weights {
      st = mw_trainer_step(tr, x, shape, rank ?? Int32(shape.count), y, nLabels ?? Int64(y.count), w, Int64(weights?.count ?? 0), nil, nil, 0, nil, 0, &r, nil, 0, nil, 0)
    } else {
      st = mw_trainer_step(tr, x, shape, rank ?? Int32(shape.count), y, nLabels ?? Int64(y.count), nil, 0, nil, nil, 0, nil, 0, &r, nil, 0, nil, 0)
    }
    return (st, r)
  }

  private func params(_ tr: mw_trainer) -> [Float] {
    var net: mw_network = 0
    XCTAssertEqual(mw_trainer_network(tr, &net), MW_OK)
    defer { _ = mw_network_free(net) }
    var count: Int64 = 0
    XCTAssertEqual(mw_network_info(net, &count, nil, nil, nil, nil), MW_OK)
    var out = [Float](repeating: .nan, count: Int(count))
    XCTAssertEqual(mw_network_get_flat(net, 0, &out, count), MW_OK)
    return out
  }

  private func steps(_ tr: mw_trainer) -> Int64 {
    var s: Int64 = -1
    XCTAssertEqual(mw_trainer_state(tr, &s, nil), MW_OK)
    return s
  }

  // MARK: - Success path

  func testCreateStepPredictSaveLoadFreeSucceeds() throws {
    XCTAssertEqual(String(cString: mw_version()), "0.1.0")
    let net = try makeNetwork()
    var np: Int64 = 0, ns: Int64 = -1, nc: Int64 = 0, nb: Int64 = 0, nsb: Int64 = -1
    ok(mw_network_info(net, &np, &ns, &nc, &nb, &nsb))
    let expectedParams: Int64 = 4 * 8 + 8 + 8 * 3 + 3
    XCTAssertEqual(np, expectedParams)
    XCTAssertEqual(ns, 0)
    XCTAssertEqual(nc, Self.classes)
    XCTAssertEqual(nb, 4)
    var ishape = [Int64](repeating: 0, count: 3)
    var irank: Int32 = 0
    ok(mw_network_input_shape(net, &ishape, &irank))
    XCTAssertEqual(irank, 1)
    XCTAssertEqual(ishape[0], Self.features)

    let tr = try makeTrainer(net)
    let b = batch(10)
    let (st, r) = step(tr, b.x, b.shape, b.y)
    ok(st)
    XCTAssertEqual(r.step, 1)
    XCTAssertEqual(r.lr, 0.1, accuracy: 1e-7)
    XCTAssertTrue(r.loss.isFinite && r.loss > 0)
    XCTAssertTrue((0...1).contains(r.accuracy))
    ok(step(tr, b.x, b.shape, b.y, weights: [Float](repeating: 0.5, count: 10)).0)
    XCTAssertEqual(steps(tr), 2)

    var logits = [Float](repeating: .nan, count: 10 * Int(Self.classes))
    ok(mw_trainer_predict(tr, b.x, b.shape, 2, &logits, Int64(logits.count)))
    XCTAssertTrue(logits.allSatisfy(\.isFinite))

    var losses = [Float](repeating: .nan, count: 10)
    ok(mw_trainer_losses(tr, b.x, b.shape, 2, b.y, 10, &losses))
    XCTAssertTrue(losses.allSatisfy { $0.isFinite && $0 >= 0 })

    let file = path("trainer.mwckpt")
    ok(mw_trainer_save(tr, file))
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["trainer.mwckpt"])
    let saved = params(tr)
    ok(step(tr, b.x, b.shape, b.y).0)
    XCTAssertEqual(steps(tr), 3)
    XCTAssertNotEqual(params(tr), saved)

    ok(mw_trainer_load(tr, file))
    XCTAssertEqual(steps(tr), 2)
    XCTAssertEqual(params(tr), saved)
    var again = [Float](repeating: .nan, count: logits.count)
    ok(mw_trainer_predict(tr, b.x, b.shape, 2, &again, Int64(again.count)))
    XCTAssertEqual(again, logits)

    // A fresh trainer of the same architecture loads the file too.
    let net2 = try makeNetwork(seed: 99)
    let tr2 = try makeTrainer(net2, seed: 99)
    ok(mw_trainer_load(tr2, file))
    XCTAssertEqual(params(tr2), saved)

    ok(mw_trainer_free(tr))
    ok(mw_trainer_free(tr2))
    ok(mw_network_free(net))
    ok(mw_network_free(net2))
  }

  func testTrainerKeepsTheNetworkAliveAfterTheNetworkHandleIsFreed() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    ok(mw_network_free(net))
    let b = batch(4)
    ok(step(tr, b.x, b.shape, b.y).0)
    ok(mw_trainer_free(tr))
  }

  // MARK: - NULL pointers

  func testNullPointersReturnArgumentErrorNamingTheArgument() throws {
    var shape: [Int64] = [Self.features]
    var out: mw_network = 0
    expect(mw_network_create(nil, &shape, 1, 0, &out), MW_E_ARGUMENT, naming: "spec", "NULL")
    expect(mw_network_create(Self.spec, nil, 1, 0, &out), MW_E_ARGUMENT, naming: "input_shape", "NULL")
    expect(mw_network_create(Self.spec, &shape, 1, 0, nil), MW_E_ARGUMENT, naming: "out", "NULL")
    XCTAssertEqual(out, 0, "out must not be written on failure")

    let net = try makeNetwork()
    defer { _ = mw_network_free(net) }
    var o = sgd()
    var tr: mw_trainer = 0
    expect(mw_trainer_create(net, nil, nil, 0, &tr), MW_E_ARGUMENT, naming: "optimizer")
    expect(mw_trainer_create(net, &o, nil, 0, nil), MW_E_ARGUMENT, naming: "out")
    ok(mw_trainer_create(net, &o, nil, 0, &tr))
    defer { _ = mw_trainer_free(tr) }

    let b = batch(3)
    var r = mw_step_result()
    expect(mw_trainer_step(tr, nil, b.shape, 2, b.y, 3, nil, 0, nil, nil, 0, nil, 0, &r, nil, 0, nil, 0), MW_E_ARGUMENT, naming: "x", "NULL")
    expect(mw_trainer_step(tr, b.x, nil, 2, b.y, 3, nil, 0, nil, nil, 0, nil, 0, &r, nil, 0, nil, 0), MW_E_ARGUMENT, naming: "x shape", "NULL")
    expect(mw_trainer_step(tr, b.x, b.shape, 2, nil, 3, nil, 0, nil, nil, 0, nil, 0, &r, nil, 0, nil, 0), MW_E_ARGUMENT, naming: "y", "NULL")
    ok(mw_trainer_step(tr, b.x, b.shape, 2, b.y, 3, nil, 0, nil, nil, 0, nil, 0, nil, nil, 0, nil, 0))  // the result pointer is optional

    expect(mw_trainer_predict(tr, nil, b.shape, 2, nil, 9), MW_E_ARGUMENT, naming: "x")
    expect(mw_trainer_predict(tr, b.x, b.shape, 2, nil, 9), MW_E_ARGUMENT, naming: "out")
    expect(mw_trainer_losses(tr, b.x, b.shape, 2, b.y, 3, nil), MW_E_ARGUMENT, naming: "losses_out")
    expect(mw_trainer_save(tr, nil), MW_E_ARGUMENT, naming: "path")
    expect(mw_trainer_load(tr, nil), MW_E_ARGUMENT, naming: "path")
    expect(mw_trainer_permutation(tr, 5, nil), MW_E_ARGUMENT, naming: "out")
    expect(mw_trainer_network(tr, nil), MW_E_ARGUMENT, naming: "out")
    expect(mw_trainer_set_method(tr, nil, 0), MW_E_ARGUMENT, naming: "method")
    expect(mw_network_get_flat(net, 0, nil, 0), MW_E_ARGUMENT, naming: "out")
    expect(mw_network_set_flat(net, 0, nil, 0), MW_E_ARGUMENT, naming: "values")
    expect(mw_network_input_shape(net, nil, nil), MW_E_ARGUMENT, naming: "shape")
    expect(mw_network_activation_bytes(net, 4, nil), MW_E_ARGUMENT, naming: "bytes")
    XCTAssertEqual(steps(tr), 1)
  }

  // MARK: - Shapes

  func testWrongRankReturnsShapeError() throws {
    var shape2: [Int64] = [2, 2]
    var out: mw_network = 0
    expect(mw_network_create(Self.spec, &shape2, 2, 0, &out), MW_E_SHAPE, naming: "input_shape", "rank")
    var zero: [Int64] = [0]
    expect(mw_network_create(Self.spec, &zero, 1, 0, &out), MW_E_SHAPE, naming: "input_shape")

    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    let b = batch(2)
    expect(step(tr, b.x, [2, 2, 2], b.y).0, MW_E_SHAPE, naming: "x", "2-d", "3-d")
    expect(step(tr, b.x, [8], b.y).0, MW_E_SHAPE, naming: "x", "1-d")
    expect(step(tr, b.x, b.shape, b.y, rank: 0).0, MW_E_SHAPE, naming: "x")
    expect(step(tr, b.x, b.shape, b.y, rank: -1).0, MW_E_SHAPE, naming: "x")
    var logits = [Float](repeating: 0, count: 6)
    expect(mw_trainer_predict(tr, b.x, [2, 2, 2], 3, &logits, 6), MW_E_SHAPE, naming: "x")
    XCTAssertEqual(steps(tr), 0)
  }

  func testWrongPerExampleShapeReturnsShapeError() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    let x = [Float](repeating: 0.5, count: 10)
    expect(step(tr, x, [2, 5], [0, 1]).0, MW_E_SHAPE, naming: "x", "per-example", "(4)", "(5)")
    expect(step(tr, x, [2, -4], [0, 1]).0, MW_E_SHAPE, naming: "x", "per-example")
    var logits = [Float](repeating: 0, count: 6)
    expect(mw_trainer_predict(tr, x, [2, 5], 2, &logits, 6), MW_E_SHAPE, naming: "per-example")
    // out of the wrong size
    let b = batch(2)
    expect(mw_trainer_predict(tr, b.x, b.shape, 2, &logits, 5), MW_E_SHAPE, naming: "out", "6")
    XCTAssertEqual(steps(tr), 0)
  }

  func testEmptyOrNegativeBatchReturnsShapeError() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    let x: [Float] = [0]
    let y: [Int64] = [0]
    expect(step(tr, x, [0, Self.features], y, nLabels: 0).0, MW_E_SHAPE, naming: "x", "empty")
    expect(step(tr, x, [-3, Self.features], y, nLabels: -3).0, MW_E_SHAPE, naming: "x")
    var logits: [Float] = [0]
    expect(mw_trainer_predict(tr, x, [0, Self.features], 2, &logits, 0), MW_E_SHAPE, naming: "empty")
    XCTAssertEqual(steps(tr), 0)
  }

  func testLabelCountMismatchReturnsShapeError() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    let b = batch(3)
    expect(step(tr, b.x, b.shape, b.y, nLabels: 2).0, MW_E_SHAPE, naming: "y", "3", "2")
    XCTAssertEqual(steps(tr), 0)
  }

  // MARK: - Values

  func testLabelsOutOfRangeOrNegativeReturnLabelError() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    let before = params(tr)
    let b = batch(3)
    expect(step(tr, b.x, b.shape, [0, Self.classes, 1]).0, MW_E_LABEL, naming: "y", "\(Self.classes)", "index 1")
    expect(step(tr, b.x, b.shape, [0, 1, -1]).0, MW_E_LABEL, naming: "y", "-1", "index 2")
    expect(step(tr, b.x, b.shape, [Int64.max, 0, 0]).0, MW_E_LABEL, naming: "y")
    expect(step(tr, b.x, b.shape, [Int64.min, 0, 0]).0, MW_E_LABEL, naming: "y")
    var losses = [Float](repeating: 0, count: 3)
    expect(mw_trainer_losses(tr, b.x, b.shape, 2, [0, 7, 0], 3, &losses), MW_E_LABEL, naming: "y", "7")
    XCTAssertEqual(params(tr), before)
    XCTAssertEqual(steps(tr), 0)
  }

  func testNonFiniteInputsReturnNonFiniteErrorAndLeaveParametersUnchanged() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    let before = params(tr)
    for bad: Float in [.nan, .infinity, -.infinity] {
      var b = batch(3)
      b.x[5] = bad
      expect(step(tr, b.x, b.shape, b.y).0, MW_E_NONFINITE, naming: "x", "index 5")
      var logits = [Float](repeating: 0, count: 9)
      expect(mw_trainer_predict(tr, b.x, b.shape, 2, &logits, 9), MW_E_NONFINITE, naming: "x")
    }
    XCTAssertEqual(params(tr), before)
    XCTAssertEqual(steps(tr), 0)

    var values = before
    values[0] = .nan
    expect(mw_network_set_flat(net, 0, values, Int64(values.count)), MW_E_NONFINITE, naming: "values")
    XCTAssertEqual(params(tr), before)
  }

  func testBadSampleWeightsAreRejected() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    let before = params(tr)
    let b = batch(3)
    expect(step(tr, b.x, b.shape, b.y, weights: [1, -0.5, 1]).0, MW_E_ARGUMENT, naming: "sample_weights", "-0.5", "index 1")
    expect(step(tr, b.x, b.shape, b.y, weights: [1, 1, .nan]).0, MW_E_NONFINITE, naming: "sample_weights")
    expect(step(tr, b.x, b.shape, b.y, weights: [.infinity, 1, 1]).0, MW_E_NONFINITE, naming: "sample_weights")
    XCTAssertEqual(params(tr), before)
    XCTAssertEqual(steps(tr), 0)
    ok(step(tr, b.x, b.shape, b.y, weights: [0, 0, 0]).0)  // zero weights are allowed
  }

  // MARK: - Handles

  func testFreedHandleReturnsHandleError() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    ok(mw_trainer_free(tr))
    let b = batch(2)
    expect(step(tr, b.x, b.shape, b.y).0, MW_E_HANDLE, naming: "trainer", "\(tr)")
    var s: Int64 = 0
    expect(mw_trainer_state(tr, &s, nil), MW_E_HANDLE, naming: "trainer")
    expect(mw_trainer_save(tr, path("x.mwckpt")), MW_E_HANDLE, naming: "trainer")
    XCTAssertFalse(FileManager.default.fileExists(atPath: path("x.mwckpt")))
    ok(mw_network_free(net))
    var np: Int64 = 0
    expect(mw_network_info(net, &np, nil, nil, nil, nil), MW_E_HANDLE, naming: "network", "\(net)")
  }

  func testUnknownAndWrongKindHandlesReturnHandleError() throws {
    var np: Int64 = 0
    expect(mw_network_info(0, &np, nil, nil, nil, nil), MW_E_HANDLE, naming: "network")
    expect(mw_network_info(UInt64.max, &np, nil, nil, nil, nil), MW_E_HANDLE, naming: "network")
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    var s: Int64 = 0
    expect(mw_trainer_state(net, &s, nil), MW_E_HANDLE, naming: "trainer", "not a")
    expect(mw_network_info(tr, &np, nil, nil, nil, nil), MW_E_HANDLE, naming: "network", "not a")
    expect(mw_network_free(tr), MW_E_HANDLE, naming: "mw_network_free")
    expect(mw_trainer_free(net), MW_E_HANDLE, naming: "mw_trainer_free")
    ok(mw_trainer_state(tr, &s, nil))  // both still alive
    ok(mw_network_info(net, &np, nil, nil, nil, nil))
  }

  func testDoubleFreeReturnsHandleError() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    ok(mw_trainer_free(tr))
    expect(mw_trainer_free(tr), MW_E_HANDLE, naming: "mw_trainer_free", "\(tr)")
    ok(mw_network_free(net))
    expect(mw_network_free(net), MW_E_HANDLE, naming: "mw_network_free", "\(net)")
  }

  func testTrainerFromFreedNetworkHandleReturnsHandleError() throws {
    let net = try makeNetwork()
    ok(mw_network_free(net))
    var o = sgd()
    var tr: mw_trainer = 0
    expect(mw_trainer_create(net, &o, nil, 0, &tr), MW_E_HANDLE, naming: "network", "\(net)")
    XCTAssertEqual(tr, 0)
  }

  // MARK: - Specs and settings

  func testBadSpecStringsReturnArgumentErrorNamingTheProblem() {
    var shape: [Int64] = [Self.features]
    // (spec, what the message must name): the spec itself for syntax errors, else the layer.
    let bad: [(String, String)] = [
      ("", "spec"), ("   ", "spec"), ("mlp(hidden=8, classes=3", "spec"), ("mlp(hidden=8 classes=3)", "spec"),
      ("nosuchlayer", "nosuchlayer"), ("mlp(hidden=8, classes=3, bogus=1)", "bogus"), ("mlp(hidden=8)", "classes"),
      ("mlp(hidden=0, classes=3)", "hidden"), ("mlp(hidden=8.5, classes=3)", "hidden"),
      ("mlp(hidden=8, classes=abc)", "spec"), ("linear(out=-3)", "linear"), ("linear(out=1e30)", "linear.out"),
      ("linear(out=3);;", "spec"), ("conv2d(out=4, k=3)", "conv2d"), ("residual{linear(out=4)", "residual"),
      ("linear(out=3) linear(out=2)", "spec"), ("mlp(hidden=8x, classes=3)", "spec"),
      ("dropout(p=nan); linear(out=3)", "spec"), ("linear(out=3)#", "spec"),
    ]
    for (s, needle) in bad {
      var out: mw_network = 0
      let st = mw_network_create(s, &shape, 1, 0, &out)
      XCTAssertEqual(st, MW_E_ARGUMENT, "spec '\(s)' (message '\(lastError())')")
      XCTAssertTrue(lastError().contains(needle), "spec '\(s)': message '\(lastError())' should name '\(needle)'")
      XCTAssertEqual(out, 0, "spec '\(s)' wrote a handle")
    }
  }

  func testBadOptimizerSettingsReturnArgumentError() throws {
    let net = try makeNetwork()
    defer { _ = mw_network_free(net) }
    func create(_ o: mw_optimizer_config, _ s: mw_schedule_config? = nil) -> mw_status {
      var opt = o
      var tr: mw_trainer = 0
      let st: mw_status
      if var sched = s {
        st = mw_trainer_create(net, &opt, &sched, 0, &tr)
      } else {
        st = mw_trainer_create(net, &opt, nil, 0, &tr)
      }
      if st == MW_OK { _ = mw_trainer_free(tr) } else { XCTAssertEqual(tr, 0) }
      return st
    }
    expect(create(sgd(momentum: 1.5)), MW_E_ARGUMENT, naming: "momentum", "1.5")
    expect(create(sgd(momentum: -0.1)), MW_E_ARGUMENT, naming: "momentum")
    expect(create(sgd(lr: -0.1)), MW_E_ARGUMENT, naming: "lr", "-0.1")
    expect(create(sgd(lr: .nan)), MW_E_ARGUMENT, naming: "lr")
    var kind = sgd()
    kind.kind = 7
    expect(create(kind), MW_E_ARGUMENT, naming: "optimizer.kind", "7")
    var nest = sgd(momentum: 0)
    nest.nesterov = 1
    expect(create(nest), MW_E_ARGUMENT, naming: "nesterov")
    var wd = sgd()
    wd.weight_decay = -1
    expect(create(wd), MW_E_ARGUMENT, naming: "weight_decay")
    var adam = sgd(lr: 1e-3, momentum: 0)
    adam.kind = 1
    adam.beta1 = 1
    expect(create(adam), MW_E_ARGUMENT, naming: "beta1")
    adam.beta1 = 0.9
    adam.eps = 0
    expect(create(adam), MW_E_ARGUMENT, naming: "eps")
    adam.eps = 1e-8
    ok(create(adam))
  }

  func testBadScheduleSettingsReturnArgumentError() throws {
    let net = try makeNetwork()
    defer { _ = mw_network_free(net) }
    func create(_ s: mw_schedule_config) -> mw_status {
      var opt = sgd()
      var sched = s
      var tr: mw_trainer = 0
      let st = mw_trainer_create(net, &opt, &sched, 0, &tr)
      if st == MW_OK { _ = mw_trainer_free(tr) } else { XCTAssertEqual(tr, 0) }
      return st
    }
    var cosine = mw_schedule_config()
    cosine.kind = 2
    cosine.gamma = 0.1
    cosine.total_steps = 0
    expect(create(cosine), MW_E_ARGUMENT, naming: "total_steps", "cosine")
    cosine.total_steps = 100
    ok(create(cosine))

    var kind = mw_schedule_config()
    kind.kind = 9
    kind.gamma = 0.1
    expect(create(kind), MW_E_ARGUMENT, naming: "schedule.kind", "9")

    var multi = mw_schedule_config()
    multi.kind = 1
    multi.gamma = 0.1
    multi.n_milestones = 2
    multi.milestones = nil
    expect(create(multi), MW_E_ARGUMENT, naming: "schedule.milestones", "NULL")
    multi.n_milestones = -1
    expect(create(multi), MW_E_ARGUMENT, naming: "schedule.milestones")
    let ms: [Int64] = [10, -5]
    let st = ms.withUnsafeBufferPointer { p -> mw_status in
      multi.n_milestones = 2
      multi.milestones = p.baseAddress
      return create(multi)
    }
    expect(st, MW_E_ARGUMENT, naming: "milestones", "-5")

    var gamma = mw_schedule_config()
    gamma.kind = 1
    gamma.gamma = 0
    expect(create(gamma), MW_E_ARGUMENT, naming: "gamma")
    var warm = mw_schedule_config()
    warm.gamma = 0.1
    warm.warmup_steps = -1
    expect(create(warm), MW_E_ARGUMENT, naming: "warmup_steps")
    var floor = mw_schedule_config()
    floor.kind = 2
    floor.gamma = 0.1
    floor.total_steps = 10
    floor.min_lr = -1
    expect(create(floor), MW_E_ARGUMENT, naming: "min_lr")
  }

  func testOtherBadArgumentsReturnArgumentError() throws {
    expect(mw_set_threads(0), MW_E_ARGUMENT, naming: "threads")
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    expect(mw_trainer_set_augmentation(tr, 2, 1), MW_E_ARGUMENT, naming: "augmentation")
    ok(mw_trainer_set_augmentation(tr, 0, 0))
    var perm = [Int64](repeating: 0, count: 1)
    expect(mw_trainer_permutation(tr, -1, &perm), MW_E_ARGUMENT, naming: "n")
    expect(mw_trainer_set_method(tr, "nosuchmethod(x=1)", 0), MW_E_ARGUMENT)
    expect(mw_trainer_save(tr, ""), MW_E_ARGUMENT, naming: "path")
    var bytes: Int64 = 0
    expect(mw_network_activation_bytes(net, 0, &bytes), MW_E_ARGUMENT, naming: "batch")
    var np: Int64 = 0
    ok(mw_network_info(net, &np, nil, nil, nil, nil))
    var buf = [Float](repeating: 0, count: Int(np) + 1)
    expect(mw_network_get_flat(net, 0, &buf, np + 1), MW_E_SHAPE, naming: "out", "\(np)")
    var shape = [Int64](repeating: 0, count: 8)
    var rank: Int32 = 0
    var offset: Int64 = 0
    expect(mw_network_block(net, 0, 99, nil, 0, &offset, &shape, &rank), MW_E_ARGUMENT, naming: "index", "99")
    expect(mw_network_block(net, 0, -1, nil, 0, &offset, &shape, &rank), MW_E_ARGUMENT, naming: "index")
  }

  // MARK: - Checkpoints

  func testLoadOfMissingFileReturnsIOErrorNamingThePath() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    let before = params(tr)
    let p = path("missing.mwckpt")
    expect(mw_trainer_load(tr, p), MW_E_IO, naming: p)
    expect(mw_trainer_load(tr, ""), MW_E_IO)
    XCTAssertEqual(params(tr), before)
  }

  func testLoadOfCorruptOrTruncatedFileReturnsIOErrorAndChangesNothing() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    let good = path("good.mwckpt")
    ok(mw_trainer_save(tr, good))
    let b = batch(4)
    ok(step(tr, b.x, b.shape, b.y).0)
    let before = params(tr)
    let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: good)))

    let garbage = path("garbage.mwckpt")
    try Data("this is not a checkpoint at all, just some text".utf8).write(to: URL(fileURLWithPath: garbage))
    expect(mw_trainer_load(tr, garbage), MW_E_IO, naming: "magic")

    let truncated = path("truncated.mwckpt")
    try Data(data.prefix(data.count / 2)).write(to: URL(fileURLWithPath: truncated))
    expect(mw_trainer_load(tr, truncated), MW_E_IO, naming: "truncated")

    var flipped = data
    flipped[flipped.count / 2] ^= 0xFF
    let corrupt = path("corrupt.mwckpt")
    try Data(flipped).write(to: URL(fileURLWithPath: corrupt))
    expect(mw_trainer_load(tr, corrupt), MW_E_IO, naming: "checksum")

    let empty = path("empty.mwckpt")
    try Data().write(to: URL(fileURLWithPath: empty))
    expect(mw_trainer_load(tr, empty), MW_E_IO, naming: "truncated")

    expect(mw_trainer_load(tr, directory.path), MW_E_IO)

    XCTAssertEqual(params(tr), before)
    XCTAssertEqual(steps(tr), 1)
  }

  func testLoadFromDifferentArchitectureReturnsIOErrorAndChangesNothing() throws {
    let small = try makeNetwork("mlp(hidden=8, classes=3)")
    let large = try makeNetwork("mlp(hidden=16, classes=3)")
    let a = try makeTrainer(small)
    let b = try makeTrainer(large)
    defer {
      _ = mw_trainer_free(a); _ = mw_trainer_free(b)
      _ = mw_network_free(small); _ = mw_network_free(large)
    }
    let p = path("small.mwckpt")
    ok(mw_trainer_save(a, p))
    let before = params(b)
    expect(mw_trainer_load(b, p), MW_E_IO, naming: "architecture")
    XCTAssertEqual(params(b), before)
  }

  func testSaveIntoMissingDirectoryReturnsIOError() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    expect(mw_trainer_save(tr, path("no/such/dir/x.mwckpt")), MW_E_IO, naming: "no/such/dir")
  }

  // MARK: - One lock per underlying object

  func testHandlesSharingANetworkShareOneLockAndRefuseWithANamedBusyError() throws {
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    var net2: mw_network = 0
    ok(mw_trainer_network(tr, &net2))
    defer {
      _ = mw_network_free(net2)
      _ = mw_trainer_free(tr)
      _ = mw_network_free(net)
    }
    XCTAssertEqual(Registry.shared.sharers(tr), 3, "network, trainer and trainer_network handles share one lock")
    let other = try makeNetwork()
    defer { _ = mw_network_free(other) }
    XCTAssertEqual(Registry.shared.sharers(other), 1)

    // Hold the network's lock as a running call on `net` would; every handle on it is refused.
    guard let entry = Registry.shared.entry(net) else { return XCTFail("no entry for the network handle") }
    XCTAssertTrue(entry.busy.tryLock())
    entry.shared.holder = "mw_trainer_step on trainer \(tr)"
    let b = batch(4)
    var np: Int64 = 0
    expect(mw_network_info(net2, &np, nil, nil, nil, nil), MW_E_BUSY, naming: "mw_network_info", "network \(net2)", "mw_trainer_step on trainer")
    expect(step(tr, b.x, b.shape, b.y).0, MW_E_BUSY, naming: "mw_trainer_step", "trainer \(tr)", "its network")
    expect(mw_trainer_free(tr), MW_E_BUSY, naming: "mw_trainer_free")
    XCTAssertEqual(mw_network_info(other, &np, nil, nil, nil, nil), MW_OK, "an unrelated network is not affected")
    entry.shared.holder = ""
    entry.busy.unlock()

    XCTAssertEqual(step(tr, b.x, b.shape, b.y).0, MW_OK, "free again afterwards")
    XCTAssertEqual(steps(tr), 1)
  }

  func testConcurrentStepsAndReadsThroughTwoHandlesAreSerialised() throws {
    final class Box: @unchecked Sendable {
      var okSteps = 0
      var badStatus: [mw_status] = []
      var finite = true
    }
    let net = try makeNetwork()
    let tr = try makeTrainer(net)
    var net2: mw_network = 0
    ok(mw_trainer_network(tr, &net2))
    defer {
      _ = mw_network_free(net2)
      _ = mw_trainer_free(tr)
      _ = mw_network_free(net)
    }
    var count: Int64 = 0
    ok(mw_network_info(net, &count, nil, nil, nil, nil))
    let reader = net2
    let box = Box()
    let b = batch(64)
    let group = DispatchGroup()
    let n = Int(count)
    DispatchQueue.global().async(group: group) {
      var r = mw_step_result()
      for _ in 0..<200 {
        let st = mw_trainer_step(tr, b.x, b.shape, 2, b.y, Int64(b.y.count), nil, 0, nil, nil, 0, nil, 0, &r, nil, 0, nil, 0)
        if st == MW_OK { box.okSteps += 1 } else if st != MW_E_BUSY { box.badStatus.append(st) }
      }
    }
    DispatchQueue.global().async(group: group) {
      var out = [Float](repeating: 0, count: n)
      for _ in 0..<400 {
        let st = mw_network_get_flat(reader, 0, &out, Int64(n))
        if st == MW_OK { box.finite = box.finite && out.allSatisfy { $0.isFinite } } else if st != MW_E_BUSY { box.badStatus.append(st) }
      }
    }
    XCTAssertEqual(group.wait(timeout: .now() + 120), .success)
    XCTAssertEqual(box.badStatus, [], "every call works or is MW_E_BUSY")
    XCTAssertTrue(box.finite)
    XCTAssertEqual(steps(tr), Int64(box.okSteps), "every accepted step took exactly one step")
  }

  // MARK: - Thread-local error

  func testLastErrorIsThreadLocal() {
    final class Box: @unchecked Sendable {
      var seenOnStart = "unset"
      var ownError = ""
      var status: mw_status = -1
    }
    var out: mw_network = 0
    expect(mw_network_create(nil, nil, 1, 0, &out), MW_E_ARGUMENT, naming: "spec")
    let mainMessage = lastError()

    let box = Box()
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
      box.seenOnStart = String(cString: mw_last_error())
      var np: Int64 = 0
      box.status = mw_network_info(0, &np, nil, nil, nil, nil)
      box.ownError = String(cString: mw_last_error())
      done.signal()
    }
    thread.start()
    XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
    XCTAssertEqual(box.seenOnStart, "", "a new thread must not see another thread's error")
    XCTAssertEqual(box.status, MW_E_HANDLE)
    XCTAssertTrue(box.ownError.contains("handle"), box.ownError)
    XCTAssertEqual(lastError(), mainMessage, "another thread's failure must not overwrite this thread's error")

    mw_set_last_error("custom message")
    XCTAssertEqual(lastError(), "custom message")
    mw_set_last_error(nil)
    XCTAssertEqual(lastError(), "")
  }
}
