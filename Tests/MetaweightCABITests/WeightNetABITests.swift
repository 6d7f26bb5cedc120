import CMetaweight
import Foundation
@testable import MetaweightCABI
import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting
import MetaweightLAW
import XCTest

/// mw_trainer_weight_net_get / _set: V's parameters read and set through the C ABI, checked
/// (length, finiteness, method) on a core copy, with nothing changed on failure.
final class WeightNetABITests: XCTestCase {
  private func lastError() -> String { String(cString: mw_last_error()) }

  private func expect(
    _ status: mw_status, _ code: mw_status, naming needles: String..., file: StaticString = #filePath, line: UInt = #line
  ) {
    let msg = lastError()
    XCTAssertEqual(status, code, "status (message: '\(msg)')", file: file, line: line)
    for n in needles {
      XCTAssertTrue(msg.contains(n), "message '\(msg)' should mention '\(n)'", file: file, line: line)
    }
  }

  /// A trainer on a small MLP with `method` set (nil: ERM).
  private func makeTrainer(method: String?) throws -> (mw_network, mw_trainer) {
    var shape: [Int64] = [4]
    var net: mw_network = 0
    XCTAssertEqual(mw_network_create("mlp(hidden=8, classes=3)", &shape, 1, 1, &net), MW_OK, lastError())
    var o = mw_optimizer_config()
    o.kind = 0
    o.lr = 0.1
    o.momentum = 0.9
    o.beta1 = 0.9
    o.beta2 = 0.999
    o.eps = 1e-8
    var tr: mw_trainer = 0
    let st = mw_trainer_create(net, &o, nil, 7, &tr)
    guard st == MW_OK else { throw XCTSkip("mw_trainer_create failed: \(lastError())") }
    if let m = method { XCTAssertEqual(mw_trainer_set_method(tr, m, 3), MW_OK, lastError()) }
    return (net, tr)
  }

  private func get(_ tr: mw_trainer) -> [Float] {
    var h: Int64 = -1
    XCTAssertEqual(mw_trainer_weight_net_get(tr, &h, nil, 0), MW_OK, lastError())
    guard h >= 0 else { return [] }
    var out = [Float](repeating: .nan, count: Int(3 * h + 1))
    XCTAssertEqual(mw_trainer_weight_net_get(tr, nil, &out, Int64(out.count)), MW_OK, lastError())
    return out
  }

  func testGetSetRoundTripAndTheWeightFunctionFollowsTheNewParameters() throws {
    for method in ["mwnet(hidden=5)", "gdw(hidden=5)"] {
      let (net, tr) = try makeTrainer(method: method)
      defer {
        _ = mw_trainer_free(tr)
        _ = mw_network_free(net)
      }
      let theta = get(tr)
      XCTAssertEqual(theta.count, 16)
      XCTAssertTrue(theta.allSatisfy(\.isFinite))
      // Θ = [W1, b1, W2, b2]: V(l) = σ(Σ W2ⱼ relu(W1ⱼ l + b1ⱼ) + b2).
      let w1: [Float] = [1, -1, 0.5, 2, 0], b1: [Float] = [0, 1, -0.5, 0.25, 3]
      let w2: [Float] = [0.3, -0.2, 1, 0.1, -0.4], b2: [Float] = [-0.7]
      var new = w1 + b1 + w2 + b2
      XCTAssertEqual(mw_trainer_weight_net_set(tr, &new, 16), MW_OK, lastError())
      XCTAssertEqual(get(tr), new)
      var losses: [Float] = [0, 0.5, 1.7, 4]
      var out = [Float](repeating: 0, count: 4)
      XCTAssertEqual(mw_trainer_weight_function(tr, &losses, 4, &out), MW_OK, lastError())
      for (i, l) in losses.enumerated() {
        var o = Double(b2[0])
        for j in 0..<5 { o += Double(w2[j]) * max(Double(w1[j]) * Double(l) + Double(b1[j]), 0) }
        XCTAssertEqual(Double(out[i]), 1 / (1 + exp(-o)), accuracy: 1e-6, "\(method) V(\(l))")
      }
    }
  }

  func testWrongLengthOrNonFiniteParametersAreRejectedAndChangeNothing() throws {
    let (net, tr) = try makeTrainer(method: "mwnet(hidden=4)")
    defer {
      _ = mw_trainer_free(tr)
      _ = mw_network_free(net)
    }
    let before = get(tr)
    var short = [Float](repeating: 0.5, count: 12)
    expect(mw_trainer_weight_net_set(tr, &short, 12), MW_E_SHAPE, naming: "params", "13", "12")
    var long = [Float](repeating: 0.5, count: 14)
    expect(mw_trainer_weight_net_set(tr, &long, 14), MW_E_SHAPE, naming: "params", "13", "14")
    expect(mw_trainer_weight_net_set(tr, &long, -1), MW_E_SHAPE, naming: "params")
    expect(mw_trainer_weight_net_set(tr, nil, 13), MW_E_ARGUMENT, naming: "params")
    var bad = [Float](repeating: 0.5, count: 13)
    bad[9] = .nan  // W2[1]
    expect(mw_trainer_weight_net_set(tr, &bad, 13), MW_E_NONFINITE, naming: "params", "linear2.weight[1]")
    bad[9] = 0.5
    bad[12] = .infinity
    expect(mw_trainer_weight_net_set(tr, &bad, 13), MW_E_NONFINITE, naming: "linear2.bias[0]")
    XCTAssertEqual(get(tr), before)
    var out = [Float](repeating: 0, count: 5)
    expect(mw_trainer_weight_net_get(tr, nil, &out, 5), MW_E_SHAPE, naming: "out", "13", "5")
  }

  func testMethodsWithoutAWeightNetReturnAStateErrorNamingTheCallAndMethod() throws {
    for method in [nil, "l2rw", "focal"] as [String?] {
      let (net, tr) = try makeTrainer(method: method)
      defer {
        _ = mw_trainer_free(tr)
        _ = mw_network_free(net)
      }
      var h: Int64 = 0
      let name = method ?? "erm"
      expect(mw_trainer_weight_net_get(tr, &h, nil, 0), MW_E_STATE, naming: "mw_trainer_weight_net_get", name, "no weighting net")
      var p = [Float](repeating: 0, count: 301)
      expect(mw_trainer_weight_net_set(tr, &p, 301), MW_E_STATE, naming: "mw_trainer_weight_net_set", name)
    }
  }

  func testSettingVKeepsItsOptimizerStateAndTheCheckpointHoldsTheNewParameters() throws {
    let (net, tr) = try makeTrainer(method: "mwnet(hidden=3)")
    defer {
      _ = mw_trainer_free(tr)
      _ = mw_network_free(net)
    }
    // One step gives V's Adam nonzero moments and a step count.
    var x: [Float] = (0..<24).map { Float(sin(Double($0))) }
    var shape: [Int64] = [6, 4]
    var y: [Int64] = [0, 1, 2, 0, 1, 2]
    var xm = x, sm = shape, ym = y
    var r = mw_step_result()
    XCTAssertEqual(
      mw_trainer_step(tr, &x, &shape, 2, &y, 6, nil, 0, &xm, &sm, 2, &ym, 6, &r, nil, 0, nil, 0), MW_OK, lastError())
    var entry: Trainer? = nil
    try using(tr, as: Trainer.self, "trainer") { entry = $0 }
    let opt = try XCTUnwrap(entry?.method?.weightNetOptimizer)
    let first = opt.first.array, second = opt.second.array, steps = opt.steps
    XCTAssertEqual(steps, 1)
    var theta: [Float] = (0..<10).map { Float($0) * 0.1 - 0.3 }
    XCTAssertEqual(mw_trainer_weight_net_set(tr, &theta, 10), MW_OK, lastError())
    XCTAssertEqual(opt.first.array, first)
    XCTAssertEqual(opt.second.array, second)
    XCTAssertEqual(opt.steps, steps)
    // Save, scramble, load: the set parameters come back.
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("wn-\(UUID().uuidString).ckpt").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    XCTAssertEqual(mw_trainer_save(tr, path), MW_OK, lastError())
    var other = [Float](repeating: 0.25, count: 10)
    XCTAssertEqual(mw_trainer_weight_net_set(tr, &other, 10), MW_OK, lastError())
    XCTAssertEqual(mw_trainer_load(tr, path), MW_OK, lastError())
    XCTAssertEqual(get(tr), theta)
  }
}
