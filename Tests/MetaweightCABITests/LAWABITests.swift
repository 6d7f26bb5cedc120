import CMetaweight
import Foundation
import MetaweightCABI
import XCTest

/// The LAW entry points of the C ABI: a small search end to end, strategy files and trainer
/// attachment, and bad input returning status codes (never trapping).
final class LAWABITests: XCTestCase {
  private var directory: URL!

  override func setUpWithError() throws {
    directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("metaweight-law-abi-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    if let d = directory { try? FileManager.default.removeItem(at: d) }
  }

  private func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
  private func lastError() -> String { String(cString: mw_last_error()) }

  private func expect(_ status: mw_status, _ code: mw_status, naming needle: String, file: StaticString = #filePath, line: UInt = #line) {
    let msg = lastError()
    XCTAssertEqual(status, code, "message: '\(msg)'", file: file, line: line)
    XCTAssertTrue(msg.contains(needle), "message '\(msg)' should mention '\(needle)'", file: file, line: line)
  }

  private func ok(_ status: mw_status, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(status, MW_OK, "failed: \(lastError())", file: file, line: line)
  }

  private let config = "stages=4, warmup_stages=1, epochs=2, batch_size=8, parallel=2, fdu_epochs=2, fdu_batch=4, actor_hidden=8, critic_hidden=8"

  /// 40 training and 12 validation examples of 4 features, 3 classes.
  private func data() -> (x: [Float], y: [Int64], cor: [UInt8], xv: [Float], yv: [Int64]) {
    var x: [Float] = [], y: [Int64] = [], cor: [UInt8] = [], xv: [Float] = [], yv: [Int64] = []
    for i in 0..<40 {
      let c = i % 3
      for j in 0..<4 { x.append(Float(j == c ? 2 : 0) + Float((i * 7 + j) % 5) * 0.1) }
      y.append(Int64(i % 7 == 0 ? (c + 1) % 3 : c))
      cor.append(i % 7 == 0 ? 1 : 0)
    }
    for i in 0..<12 {
      let c = i % 3
      for j in 0..<4 { xv.append(Float(j == c ? 2 : 0)) }
      yv.append(Int64(c))
    }
    return (x, y, cor, xv, yv)
  }

  func testSearchStrategyAndTrainerEndToEnd() throws {
    var shape: [Int64] = [4]
    var law: mw_law = 0
    ok(mw_law_create(config, "mlp(hidden=8, classes=3)", &shape, 1, 7, &law))
    var stages: Int64 = 0, parallel: Int64 = 0, classes: Int64 = 0, actions: Int64 = 0
    ok(mw_law_info(law, &stages, &parallel, &classes, &actions, nil, nil, nil))
    XCTAssertEqual([stages, parallel, classes, actions], [4, 2, 3, 3 + 3 + 1])
    var log = mw_law_stage_log()
    expect(mw_law_run_stage(law, &log), MW_E_STATE, naming: "set_data")
    let d = data()
    var xs: [Int64] = [40, 4], vs: [Int64] = [12, 4]
    ok(mw_law_set_data(law, d.x, &xs, 2, d.y, 40, d.cor, 40, d.xv, &vs, 2, d.yv, 12))
    for t in 0..<4 {
      ok(mw_law_run_stage(law, &log))
      XCTAssertEqual(Int(log.stage), t)
      XCTAssertEqual(log.warmup, t == 0 ? 1 : 0)
    }
    XCTAssertEqual(log.round_done, 1)
    XCTAssertEqual(log.buffer_size, 6)
    XCTAssertEqual(log.fdu_updates, 2 * 2)  // ceil(6 / 4) minibatches × 2 epochs
    var table = [Double](repeating: 0, count: 4 * Int(MW_LAW_LOG_COLUMNS))
    var episode: Int64 = -1, round: Int64 = -1, done: Int64 = -1
    ok(mw_law_episode_log(law, 1, &episode, &round, &done, &table, Int64(table.count)))
    XCTAssertEqual([episode, round, done], [1, 0, 4])
    var weights = [Float](repeating: 0, count: 4 * 40)
    ok(mw_law_episode_weights(law, 0, &weights, Int64(weights.count)))
    XCTAssertTrue(weights[0..<40].allSatisfy { $0 == 1 || $0.isNaN })  // warm-up
    expect(mw_law_episode_log(law, 2, nil, nil, nil, nil, 0), MW_E_ARGUMENT, naming: "slot")
    expect(mw_law_episode_actions(law, 0, &weights, 5), MW_E_SHAPE, naming: "action_dim")
    // Strategy files.
    let file = path("s.law")
    ok(mw_law_save_strategy(law, file))
    var s: mw_strategy = 0
    ok(mw_strategy_load(file, &s))
    var a1 = [Float](repeating: 0, count: 7), a2 = a1
    var fromSearch: mw_strategy = 0
    ok(mw_law_strategy(law, &fromSearch))
    ok(mw_strategy_action(s, 2, 0.5, 0.9, &a1, 7))
    ok(mw_strategy_action(fromSearch, 2, 0.5, 0.9, &a2, 7))
    XCTAssertEqual(a1, a2)
    expect(mw_strategy_action(s, 9, 0.5, 0.9, &a1, 7), MW_E_ARGUMENT, naming: "stage")
    expect(mw_strategy_action(s, 1, .nan, 0.9, &a1, 7), MW_E_NONFINITE, naming: "loss_smooth")
    let logits: [Float] = [1, 2, 3, 0, 0, 1]
    let labels: [Int64] = [2, 0]
    var w = [Float](repeating: 0, count: 2)
    ok(mw_strategy_weights(s, 0, 1, 0.5, logits, 2, 3, labels, &w))
    XCTAssertEqual(w, [1, 1])  // warm-up stage
    expect(mw_strategy_weights(s, 1, 1, 0.5, logits, 3, 2, labels, &w), MW_E_SHAPE, naming: "classes")
    expect(mw_strategy_weights(s, 1, 1, 0.5, logits, 2, 3, [5, 0], &w), MW_E_LABEL, naming: "labels")
    // A trainer weighted by the strategy.
    var net: mw_network = 0
    ok(mw_network_create("mlp(hidden=5, classes=3)", &shape, 1, 3, &net))
    var opt = mw_optimizer_config()
    opt.kind = 0
    opt.lr = 0.1
    opt.beta1 = 0.9
    opt.beta2 = 0.999
    opt.eps = 1e-8
    var tr: mw_trainer = 0
    ok(mw_trainer_create(net, &opt, nil, 1, &tr))
    var stage: Int32 = 0, ls: Double = 0, acc: Double = 0, nw: Int64 = 0
    expect(mw_trainer_strategy_state(tr, &stage, &ls, &acc, nil, 0, &nw), MW_E_STATE, naming: "no LAW strategy")
    ok(mw_trainer_set_strategy(tr, s, 8, d.xv, &vs, 2, d.yv, 12))
    var bs: [Int64] = [8, 4]
    var r = mw_step_result()
    for k in 0..<8 {
      let xb = Array(d.x[(k % 5) * 32..<((k % 5) * 32 + 32)])
      let yb = Array(d.y[(k % 5) * 8..<((k % 5) * 8 + 8)])
      ok(mw_trainer_step(tr, xb, &bs, 2, yb, 8, nil, 0, nil, nil, 0, nil, 0, &r, nil, 0, nil, 0))
    }
    var last = [Float](repeating: 0, count: 8)
    ok(mw_trainer_strategy_state(tr, &stage, &ls, &acc, &last, 8, &nw))
    XCTAssertEqual(stage, 3)
    XCTAssertEqual(nw, 8)
    XCTAssertTrue(last.allSatisfy { $0 > 0 && $0 < 2 })
    expect(mw_trainer_strategy_state(tr, &stage, &ls, &acc, &last, 2, &nw), MW_E_SHAPE, naming: "weights_out")
    ok(mw_trainer_set_strategy(tr, 0, 1, nil, nil, 0, nil, 0))
    expect(mw_trainer_strategy_state(tr, &stage, &ls, &acc, nil, 0, &nw), MW_E_STATE, naming: "no LAW strategy")
    var net10: mw_network = 0
    ok(mw_network_create("mlp(hidden=5, classes=10)", &shape, 1, 3, &net10))
    var tr10: mw_trainer = 0
    ok(mw_trainer_create(net10, &opt, nil, 1, &tr10))
    expect(mw_trainer_set_strategy(tr10, s, 8, nil, nil, 0, nil, 0), MW_E_ARGUMENT, naming: "3 classes")
    expect(mw_trainer_set_strategy(tr, s, 0, nil, nil, 0, nil, 0), MW_E_ARGUMENT, naming: "total_steps")
    // Freed handles.
    ok(mw_strategy_free(s))
    expect(mw_strategy_action(s, 0, 1, 1, &a1, 7), MW_E_HANDLE, naming: "handle")
    expect(mw_strategy_free(s), MW_E_HANDLE, naming: "handle")
    expect(mw_strategy_info(tr, nil, nil, nil, nil, nil, nil), MW_E_HANDLE, naming: "not a")
    for h in [fromSearch] { ok(mw_strategy_free(h)) }
    for h in [tr, tr10] { ok(mw_trainer_free(h)) }
    for h in [net, net10] { ok(mw_network_free(h)) }
    ok(mw_law_free(law))
    expect(mw_law_run_stage(law, &log), MW_E_HANDLE, naming: "handle")
  }

  func testBadArgumentsReturnStatusCodes() {
    var shape: [Int64] = [4]
    var law: mw_law = 0
    expect(mw_law_create("stages=0", "mlp(hidden=8, classes=3)", &shape, 1, 1, &law), MW_E_ARGUMENT, naming: "stages")
    expect(mw_law_create("bogus=1", "mlp(hidden=8, classes=3)", &shape, 1, 1, &law), MW_E_ARGUMENT, naming: "bogus")
    expect(mw_law_create("", "mlp(hidden=8)", &shape, 1, 1, &law), MW_E_ARGUMENT, naming: "classes")
    expect(mw_law_create("", nil, &shape, 1, 1, &law), MW_E_ARGUMENT, naming: "network_spec")
    expect(mw_law_create("", "mlp(hidden=8, classes=3)", &shape, 2, 1, &law), MW_E_SHAPE, naming: "input_shape")
    expect(mw_law_create("", "mlp(hidden=8, classes=3)", &shape, 1, 1, nil), MW_E_ARGUMENT, naming: "out")
    ok(mw_law_create(nil, "mlp(hidden=8, classes=3)", &shape, 1, 1, &law))  // NULL config = defaults
    let d = data()
    var xs: [Int64] = [40, 4], vs: [Int64] = [12, 4], bad: [Int64] = [40, 5]
    expect(mw_law_set_data(law, d.x, &bad, 2, d.y, 40, nil, 0, d.xv, &vs, 2, d.yv, 12), MW_E_SHAPE, naming: "x")
    expect(mw_law_set_data(law, d.x, &xs, 2, d.y, 39, nil, 0, d.xv, &vs, 2, d.yv, 12), MW_E_SHAPE, naming: "y")
    expect(mw_law_set_data(law, d.x, &xs, 2, d.y, 40, d.cor, 39, d.xv, &vs, 2, d.yv, 12), MW_E_SHAPE, naming: "corrupted")
    var badLabels = d.yv
    badLabels[3] = 3
    expect(mw_law_set_data(law, d.x, &xs, 2, d.y, 40, nil, 0, d.xv, &vs, 2, badLabels, 12), MW_E_LABEL, naming: "y_val")
    var nanX = d.x
    nanX[5] = .nan
    expect(mw_law_set_data(law, nanX, &xs, 2, d.y, 40, nil, 0, d.xv, &vs, 2, d.yv, 12), MW_E_NONFINITE, naming: "x")
    // 2 epochs of 40 examples in batches of 128: 2 steps < 20 stages.
    expect(mw_law_set_data(law, d.x, &xs, 2, d.y, 40, nil, 0, d.xv, &vs, 2, d.yv, 12), MW_E_ARGUMENT, naming: "stages")
    expect(mw_law_save_strategy(law, ""), MW_E_ARGUMENT, naming: "path")
    expect(mw_law_load_strategy(law, path("missing.law")), MW_E_IO, naming: "missing.law")
    expect(mw_law_episode_log(law, 0, nil, nil, nil, nil, 0), MW_E_STATE, naming: "no episode")
    var s: mw_strategy = 0
    expect(mw_strategy_load(path("none.law"), &s), MW_E_IO, naming: "none.law")
    expect(mw_strategy_load(nil, &s), MW_E_ARGUMENT, naming: "path")
    ok(mw_law_free(law))
    expect(mw_law_free(law), MW_E_HANDLE, naming: "handle")
    expect(mw_law_info(12345, nil, nil, nil, nil, nil, nil, nil), MW_E_HANDLE, naming: "handle")
  }
}
