import XCTest

@testable import MetaweightLAW
@testable import MetaweightLayers
@testable import MetaweightTensor
@testable import MetaweightWeighting

/// The settings tables (`WeightingConfig.settings`, `LAWConfig.table`) and the one spec grammar
/// (`SpecScanner`/`SpecGrammar`) that method, LAW and network specs share.
final class SettingsTests: XCTestCase {
  private func message(_ body: () throws -> Void) -> String {
    do {
      try body()
    } catch MetaweightError.invalidArgument(let m) {
      return m
    } catch {
      return "wrong error \(error)"
    }
    return "no error"
  }

  func testGrammarParsesCallsArgumentsAndReportsPositions() throws {
    let c = try SpecGrammar.call("  GDW ( eta = 100 ,clip=0.5, ) ", context: "method")
    XCTAssertEqual(c.name, "gdw")
    XCTAssertEqual(c.arguments, [SpecArgument(key: "eta", value: "100"), SpecArgument(key: "clip", value: "0.5")])
    XCTAssertEqual(c.text, "gdw(eta=100, clip=0.5)")
    XCTAssertEqual(try SpecGrammar.call("erm", context: "method").arguments, [])
    XCTAssertEqual(try SpecGrammar.arguments("", context: "law"), [])
    XCTAssertEqual(try SpecGrammar.arguments("a=1x2, b=none", context: "law").map(\.value), ["1x2", "none"])
    XCTAssertEqual(message { _ = try SpecGrammar.call("gdw(eta=1", context: "method") },
                   "method: expected ')' closing gdw at position 9")
    XCTAssertEqual(message { _ = try SpecGrammar.call("gdw(eta)", context: "method") },
                   "method: expected '=' after 'eta' at position 7")
    XCTAssertEqual(message { _ = try SpecGrammar.call("gdw(eta=)", context: "method") },
                   "method: eta: expected a value, got ')' at position 8")
    XCTAssertTrue(message { _ = try SpecGrammar.call("gdw(eta=1, eta=2)", context: "method") }.contains("'eta' given twice"))
    XCTAssertTrue(message { _ = try SpecGrammar.call("gdw() junk", context: "method") }.contains("unexpected text"))
  }

  func testEveryMethodsDefaultsRoundTripThroughTheCanonicalSpec() throws {
    for m in WeightingConfig.Method.allCases {
      let defaults = WeightingConfig.defaults(for: m)
      let canonical = MethodSpec.canonical(defaults)
      XCTAssertEqual(try MethodSpec.parse(canonical), defaults, canonical)
      XCTAssertEqual(try MethodSpec.parse(MethodSpec.name(of: m)), defaults, "\(m)")
      try defaults.validateSettings()
    }
    var c = try MethodSpec.parse("gdw(eta=100, clamp=0.001x10, memory=FAST, wn_lr=0.01)")
    XCTAssertEqual(c.gdwEta, 100)
    XCTAssertEqual(c.gdwMin, 0.001)
    XCTAssertEqual(c.gdwMax, 10)
    XCTAssertEqual(c.memory, .fast)
    XCTAssertEqual(c.weightNetLR, 0.01)
    c = try MethodSpec.parse("class_balanced(counts=5x3, beta=0.5)")
    XCTAssertEqual(c.classCounts, [5, 3])
    XCTAssertEqual(c.classBalancedBeta, 0.5)
    XCTAssertEqual(try MethodSpec.parse("bootstrap_hard").bootstrapBeta, 0.8)
    XCTAssertEqual(try MethodSpec.parse("gdw(eta=none)").gdwEta, 0)
  }

  func testOutOfRangeValuesAndUnknownKeysAreRefusedNamingTheKey() {
    XCTAssertEqual(message { _ = try MethodSpec.parse("gdw(eta=-1)") }, "eta: expected a finite value > 0, got -1.0")
    XCTAssertEqual(message { _ = try MethodSpec.parse("mwnet(hidden=0)") }, "hidden: expected 1 <= hidden <= 100000, got 0")
    XCTAssertEqual(message { _ = try MethodSpec.parse("mwnet(hidden=1.5)") }, "hidden: expected an integer, got '1.5'")
    XCTAssertEqual(message { _ = try MethodSpec.parse("mwnet(normalize=maybe)") }, "normalize: expected 0/1 or true/false, got 'maybe'")
    XCTAssertEqual(message { _ = try MethodSpec.parse("focal(eta=1)") }, "method focal: unknown option 'eta'; expected one of gamma")
    XCTAssertEqual(message { _ = try MethodSpec.parse("erm(x=1)") }, "method erm: unknown option 'x' (it has none)")
    XCTAssertTrue(message { _ = try MethodSpec.parse("gdw(clamp=2x1)") }.hasPrefix("clamp: expected 2 values"))
    XCTAssertTrue(message { _ = try MethodSpec.parse("gdw(clamp=1)") }.hasPrefix("clamp: expected 2 values"))
    XCTAssertTrue(message { _ = try MethodSpec.parse("nope") }.hasPrefix("method: expected one of"))
    var gdw = WeightingConfig.defaults(for: .gdw)
    gdw.normalizeWeights = true
    XCTAssertTrue(message { try gdw.validateSettings() }.hasPrefix("normalize: GDW does not normalise"))
    XCTAssertEqual(message { _ = try LAWConfig.parse("stages=0") }, "stages: expected 1 <= stages <= 10000, got 0")
    XCTAssertTrue(message { _ = try LAWConfig.parse("bogus=1") }.hasPrefix("law config: unknown key 'bogus'"))
  }

  func testLAWSpecIsTheTablesArgumentListAndAcceptsTheCallForm() throws {
    let c = try LAWConfig.parse("law(stages=10, flip=1, lr_milestones=0.3x0.6)")
    XCTAssertEqual(c.stages, 10)
    XCTAssertTrue(c.flip)
    XCTAssertEqual(c.lrMilestones, [0.3, 0.6])
    XCTAssertEqual(try LAWConfig.parse(c.spec), c)
    XCTAssertEqual(LAWConfig.keys.count, LAWConfig.table.settings.count)
    XCTAssertTrue(LAWConfig().spec.hasPrefix("stages=20, warmup_stages=2, parallel=2, epochs=10, batch_size=128, optimizer=sgd"))
  }

  func testTablesPublishJSONWithTypesDefaultsAndRanges() {
    let methods = MethodSpec.tableJSON
    XCTAssertTrue(methods.hasPrefix("{\"kind\": \"methods\", \"methods\": ["), methods)
    XCTAssertTrue(methods.contains(
      "{\"name\": \"eta\", \"type\": \"float\", \"default\": null, \"doc\": \"Outer step of GDW's second stage\""), methods)
    XCTAssertTrue(methods.contains("\"name\": \"clamp\", \"type\": \"floats\", \"default\": [1e-06, 1000000.0]"), methods)
    let law = LAWConfig.tableJSON
    XCTAssertTrue(law.contains(
      "{\"name\": \"stages\", \"type\": \"int\", \"default\": 20, \"doc\": \"N': stages a training run is split into (uniformly by optimizer steps)\", \"expected\": \"1 <= stages <= 10000\", \"minimum\": 1, \"minimum_inclusive\": true, \"maximum\": 10000, \"maximum_inclusive\": true, \"none\": null}"),
      law)
    XCTAssertTrue(law.contains("\"choices\": [\"onehot\", \"scalar\"]"), law)
  }

  func testNetworkSpecsUseTheSameGrammar() throws {
    let net = try SpecParser.parse(" MLP ( hidden = 4x3 , classes = 2 ) ", input: .flat(5))
    XCTAssertEqual(net.outputLayout.size, 2)
    XCTAssertTrue(message { _ = try SpecParser.parse("linear(out=3, out=4)", input: .flat(5)) }.contains("'out' given twice"))
    XCTAssertEqual(message { _ = try SpecParser.parse("linear(out=abc)", input: .flat(5)) },
                   "spec: linear.out: expected a number, got 'abc'")
  }
}
