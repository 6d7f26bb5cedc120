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

/// mw_trainer_set_step_diagnostics / mw_trainer_step_diagnostics: the opt-in raw step arrays of
/// L2RW, MW-Net and GDW, their checks, and bit-identical steps with recording on or off.
final class StepDiagnosticsABITests: XCTestCase {
  private func lastError() -> String { String(cString: mw_last_error()) }

  private func makeTrainer(method: String) throws -> (mw_network, mw_trainer) {
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
    XCTAssertEqual(mw_trainer_set_method(tr, method, 3), MW_OK, lastError())
    return (net, tr)
  }

  /// One step on a fixed batch of 6 (the meta batch is the same 6); returns the weights.
  private func step(_ tr: mw_trainer, seed: Int, classWeights: Bool = false) -> [Float] {
    var x: [Float] = (0..<24).map { Float(sin(Double($0 + 7 * seed))) }
    var shape: [Int64] = [6, 4]
    var y: [Int64] = [0, 1, 2, 0, 1, 2]
    var xm: [Float] = (0..<24).map { Float(cos(Double($0 + 3 * seed))) }
    var sm = shape, ym: [Int64] = [2, 1, 0, 0, 1, 2]
    var r = mw_step_result()
    var w = [Float](repeating: .nan, count: 6)
    XCTAssertEqual(
      mw_trainer_step(tr, &x, &shape, 2, &y, 6, nil, 0, &xm, &sm, 2, &ym, 6, &r, &w, 6, nil, 0), MW_OK, lastError())
    return w
  }

  private func raw(_ tr: mw_trainer, _ name: String) -> (values: [Float], rows: Int64) {
    var length: Int64 = -1, rows: Int64 = -1
    XCTAssertEqual(mw_trainer_step_diagnostics(tr, name, nil, 0, &length, &rows), MW_OK, lastError())
    var out = [Float](repeating: .nan, count: max(Int(length), 0))
    XCTAssertEqual(mw_trainer_step_diagnostics(tr, name, &out, length, nil, nil), MW_OK, lastError())
    return (out, rows)
  }

  func testRawArraysOfEachMethodAndTheirRelationToTheWeights() throws {
    // L2RW: w = max(u, 0)/Σ max(u, 0).
    do {
      let (net, tr) = try makeTrainer(method: "l2rw")
      defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
      XCTAssertEqual(mw_trainer_set_step_diagnostics(tr, 1), MW_OK)
      let w = step(tr, seed: 1)
      let (u, rows) = raw(tr, "u")
      XCTAssertEqual(rows, 6)
      XCTAssertEqual(u.count, 6)
      let pos = u.map { Double(max($0, 0)) }
      let s = pos.reduce(0, +)
      for i in 0..<6 { XCTAssertEqual(Double(w[i]), s > 0 ? pos[i] / s : 0, accuracy: 1e-6) }
    }
    // MW-Net: "v_after" is the step's weights.
    do {
      let (net, tr) = try makeTrainer(method: "mwnet(hidden=5)")
      defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
      XCTAssertEqual(mw_trainer_set_step_diagnostics(tr, 1), MW_OK)
      let w = step(tr, seed: 2)
      XCTAssertEqual(raw(tr, "v_after").values, w)
      let before = raw(tr, "v_before").values
      XCTAssertEqual(before.count, 6)
      XCTAssertTrue(before.allSatisfy { $0 > 0 && $0 < 1 })
    }
    // GDW: n × C arrays; ω′ at the label is the weight.
    do {
      let (net, tr) = try makeTrainer(method: "gdw(hidden=5)")
      defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
      XCTAssertEqual(mw_trainer_set_step_diagnostics(tr, 1), MW_OK)
      let w = step(tr, seed: 3)
      let labels = [0, 1, 2, 0, 1, 2]
      for name in ["g", "omega", "omega_prime"] {
        let (a, rows) = raw(tr, name)
        XCTAssertEqual(rows, 6)
        XCTAssertEqual(a.count, 18, name)
        XCTAssertTrue(a.allSatisfy(\.isFinite), name)
      }
      let wp = raw(tr, "omega_prime").values
      for i in 0..<6 { XCTAssertEqual(wp[i * 3 + labels[i]], w[i]) }
    }
  }

  func testChecksNamesStateAndLengths() throws {
    let (net, tr) = try makeTrainer(method: "mwnet(hidden=5)")
    defer { _ = mw_trainer_free(tr); _ = mw_network_free(net) }
    var length: Int64 = 0
    XCTAssertEqual(mw_trainer_step_diagnostics(tr, "v_before", nil, 0, &length, nil), MW_E_STATE)  // no step yet
    _ = step(tr, seed: 1)
    XCTAssertEqual(mw_trainer_step_diagnostics(tr, "v_before", nil, 0, &length, nil), MW_E_STATE)  // not recorded
    XCTAssertTrue(lastError().contains("not recorded"), lastError())
    XCTAssertEqual(mw_trainer_step_diagnostics(tr, "u", nil, 0, &length, nil), MW_E_ARGUMENT)
    XCTAssertTrue(lastError().contains("v_before") && lastError().contains("mwnet"), lastError())
    XCTAssertEqual(mw_trainer_step_diagnostics(tr, nil, nil, 0, &length, nil), MW_E_ARGUMENT)
    XCTAssertEqual(mw_trainer_set_step_diagnostics(tr, 1), MW_OK)
    _ = step(tr, seed: 2)
    var small = [Float](repeating: 0, count: 5)
    XCTAssertEqual(mw_trainer_step_diagnostics(tr, "v_after", &small, 5, nil, nil), MW_E_SHAPE)
    XCTAssertEqual(mw_trainer_set_step_diagnostics(tr, 0), MW_OK)
    _ = step(tr, seed: 3)
    XCTAssertEqual(mw_trainer_step_diagnostics(tr, "v_after", nil, 0, &length, nil), MW_E_STATE)
    // ERM and baselines: no names; the switch is a no-op.
    let (net2, tr2) = try makeTrainer(method: "focal")
    defer { _ = mw_trainer_free(tr2); _ = mw_network_free(net2) }
    XCTAssertEqual(mw_trainer_set_step_diagnostics(tr2, 1), MW_OK)
    XCTAssertEqual(mw_trainer_step_diagnostics(tr2, "u", nil, 0, &length, nil), MW_E_ARGUMENT)
  }

  func testRecordingLeavesTheStepsBitIdentical() throws {
    for method in ["l2rw", "mwnet(hidden=5)", "gdw(hidden=5)"] {
      let (na, a) = try makeTrainer(method: method)
      let (nb, b) = try makeTrainer(method: method)
      defer { _ = mw_trainer_free(a); _ = mw_network_free(na); _ = mw_trainer_free(b); _ = mw_network_free(nb) }
      XCTAssertEqual(mw_trainer_set_step_diagnostics(b, 1), MW_OK)
      for s in 0..<4 {
        XCTAssertEqual(step(a, seed: s), step(b, seed: s), method)
      }
      var ea: Trainer? = nil, eb: Trainer? = nil
      try using(a, as: Trainer.self, "trainer") { ea = $0 }
      try using(b, as: Trainer.self, "trainer") { eb = $0 }
      XCTAssertEqual(try XCTUnwrap(ea).network.params.array, try XCTUnwrap(eb).network.params.array, method)
    }
  }
}
