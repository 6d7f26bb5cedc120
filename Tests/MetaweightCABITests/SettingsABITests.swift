import CMetaweight
import Foundation
@testable import MetaweightCABI
import MetaweightLAW
import MetaweightWeighting
import XCTest

/// mw_settings_table and mw_spec_check (the settings tables and the one spec grammar through the C
/// ABI), and mw_trainer_step as the one step entry for plain, sample-weighted and method steps.
final class SettingsABITests: XCTestCase {
  private func lastError() -> String { String(cString: mw_last_error()) }

  private func text(_ call: (UnsafeMutablePointer<CChar>?, Int64, UnsafeMutablePointer<Int64>) -> mw_status) -> (mw_status, String) {
    var len: Int64 = 0
    let st = call(nil, 0, &len)
    guard st == MW_OK else { return (st, lastError()) }
    var buf = [CChar](repeating: 0, count: Int(len) + 1)
    let st2 = call(&buf, len + 1, &len)
    return (st2, String(cString: buf))
  }

  func testSettingsTablesAreTheCoresJSON() {
    let (s1, methods) = text { mw_settings_table("methods", $0, $1, $2) }
    XCTAssertEqual(s1, MW_OK)
    XCTAssertEqual(methods, MethodSpec.tableJSON)
    let (s2, law) = text { mw_settings_table("law", $0, $1, $2) }
    XCTAssertEqual(s2, MW_OK)
    XCTAssertEqual(law, LAWConfig.tableJSON)
    let (s3, msg) = text { mw_settings_table("nets", $0, $1, $2) }
    XCTAssertEqual(s3, MW_E_ARGUMENT)
    XCTAssertTrue(msg.contains("kind: expected 'methods' or 'law', got 'nets'"), msg)
    var len: Int64 = 0
    XCTAssertEqual(mw_settings_table(nil, nil, 0, &len), MW_E_ARGUMENT)
    // A buffer too small gets a truncated, NUL-terminated prefix and the needed length.
    var small = [CChar](repeating: 1, count: 8)
    XCTAssertEqual(mw_settings_table("law", &small, 8, &len), MW_OK)
    XCTAssertEqual(String(cString: small), String(LAWConfig.tableJSON.prefix(7)))
    XCTAssertEqual(len, Int64(LAWConfig.tableJSON.utf8.count))
  }

  func testSpecCheckReturnsTheCanonicalSpecOrNamesTheKey() {
    let (s1, gdw) = text { mw_spec_check("method", "GDW(eta=100)", $0, $1, $2) }
    XCTAssertEqual(s1, MW_OK, gdw)
    XCTAssertTrue(gdw.hasPrefix("gdw(virtual_momentum=0, virtual_lr=none, normalize=0"), gdw)
    XCTAssertTrue(gdw.contains("eta=100.0"), gdw)
    let (s2, bad) = text { mw_spec_check("method", "gdw(clip=0)", $0, $1, $2) }
    XCTAssertEqual(s2, MW_E_ARGUMENT)
    XCTAssertEqual(bad, "clip: expected a finite value > 0, got 0.0")
    let (s3, gdwNorm) = text { mw_spec_check("method", "gdw(normalize=1)", $0, $1, $2) }
    XCTAssertEqual(s3, MW_E_ARGUMENT)
    XCTAssertTrue(gdwNorm.hasPrefix("normalize:"), gdwNorm)
    let (s4, law) = text { mw_spec_check("law", "law(stages=4, warmup_stages=1)", $0, $1, $2) }
    XCTAssertEqual(s4, MW_OK, law)
    XCTAssertTrue(law.hasPrefix("stages=4, warmup_stages=1, "), law)
    let (s5, lawBad) = text { mw_spec_check("law", "stages=4, warmup_stages=4", $0, $1, $2) }
    XCTAssertEqual(s5, MW_E_ARGUMENT)
    XCTAssertTrue(lawBad.hasPrefix("warmup_stages:"), lawBad)
    var len: Int64 = 0
    XCTAssertEqual(mw_spec_check("method", nil, nil, 0, &len), MW_E_ARGUMENT)
  }

  private func trainer(method: String?) throws -> (mw_network, mw_trainer) {
    var shape: [Int64] = [4]
    var net: mw_network = 0
    XCTAssertEqual(mw_network_create("mlp(hidden=8, classes=3)", &shape, 1, 1, &net), MW_OK, lastError())
    var o = mw_optimizer_config()
    o.lr = 0.1
    o.beta1 = 0.9
    o.beta2 = 0.999
    o.eps = 1e-8
    var tr: mw_trainer = 0
    guard mw_trainer_create(net, &o, nil, 7, &tr) == MW_OK else { throw XCTSkip(lastError()) }
    if let m = method { XCTAssertEqual(mw_trainer_set_method(tr, m, 3), MW_OK, lastError()) }
    return (net, tr)
  }

  func testOneStepEntryForPlainWeightedAndMethodSteps() throws {
    var x: [Float] = (0..<24).map { Float(sin(Double($0))) }
    var shape: [Int64] = [6, 4]
    var y: [Int64] = [0, 1, 2, 0, 1, 2]
    var w: [Float] = [1, 0.5, 2, 0, 1, 3]
    var out = [Float](repeating: -1, count: 6)
    var r = mw_step_result()
    let (net, erm) = try trainer(method: nil)
    // erm: the sample weights are the step's weights; their count is checked, as their values.
    XCTAssertEqual(mw_trainer_step(erm, &x, &shape, 2, &y, 6, &w, 6, nil, nil, 0, nil, 0, &r, &out, 6, nil, 0), MW_OK, lastError())
    XCTAssertEqual(out, w)
    XCTAssertEqual(r.step, 1)
    XCTAssertEqual(mw_trainer_step(erm, &x, &shape, 2, &y, 6, &w, 5, nil, nil, 0, nil, 0, &r, nil, 0, nil, 0), MW_E_SHAPE)
    XCTAssertTrue(lastError().contains("sample_weights: expected 6 weights"), lastError())
    XCTAssertEqual(mw_trainer_step(erm, &x, &shape, 2, &y, 6, nil, 0, &x, &shape, 2, &y, 6, &r, nil, 0, nil, 0), MW_E_ARGUMENT)
    XCTAssertTrue(lastError().contains("takes no meta batch"), lastError())
    XCTAssertEqual(mw_trainer_step(erm, &x, &shape, 2, &y, 6, nil, 0, nil, nil, 0, nil, 0, &r, &out, 6, nil, 0), MW_OK)
    XCTAssertEqual(out, [Float](repeating: 1, count: 6))
    x[9] = .nan
    XCTAssertEqual(mw_trainer_step(erm, &x, &shape, 2, &y, 6, nil, 0, nil, nil, 0, nil, 0, &r, nil, 0, nil, 0), MW_E_NONFINITE)
    XCTAssertTrue(lastError().contains("x: expected finite values, got nan at index (2, 1) (flat index 9)"), lastError())
    x[9] = 0
    _ = mw_trainer_free(erm)
    // A meta method: needs the meta batch, refuses sample weights.
    let (net2, l2rw) = try trainer(method: "l2rw")
    XCTAssertEqual(mw_trainer_step(l2rw, &x, &shape, 2, &y, 6, nil, 0, nil, nil, 0, nil, 0, &r, nil, 0, nil, 0), MW_E_ARGUMENT)
    XCTAssertTrue(lastError().contains("x_meta, y_meta: the 'l2rw' method needs a meta batch"), lastError())
    XCTAssertEqual(mw_trainer_step(l2rw, &x, &shape, 2, &y, 6, &w, 6, &x, &shape, 2, &y, 6, &r, nil, 0, nil, 0), MW_E_ARGUMENT)
    XCTAssertTrue(lastError().contains("sample_weights: the 'l2rw' method computes its own weights"), lastError())
    XCTAssertEqual(mw_trainer_step(l2rw, &x, &shape, 2, &y, 6, nil, 0, &x, &shape, 2, &y, 6, &r, &out, 6, nil, 0), MW_OK, lastError())
    XCTAssertEqual(Double(out.reduce(0, +)), 1, accuracy: 1e-5)  // L2RW's weights sum to 1 per batch
    _ = mw_trainer_free(l2rw)
    _ = mw_network_free(net)
    _ = mw_network_free(net2)
  }
}
