import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

/// `StepDiagnostics`: each statistic against its definition, computed here in Double from the
/// step's own losses, probabilities and weights.
final class StepDiagnosticsTests: XCTestCase {
  private let n = 12

  private func trainer() throws -> Trainer {
    let net = try Network(Models.mlp(widths: [4, 16, 3], batchNorm: false), seed: 1)
    return try Trainer(network: net, optimizer: OptimizerConfig(), schedule: Schedule(baseLR: 0.01), seed: 2)
  }

  private func step(_ tr: Trainer, weights: [Float]?) throws -> StepResult {
    var rng = RNG(seed: 5)
    let x = (0..<(4 * n)).map { _ in 2 * rng.uniform() - 1 }
    let y: [Int64] = (0..<n).map { Int64($0 % 3) }
    return try x.withUnsafeBufferPointer { xp in
      try y.withUnsafeBufferPointer { yp in
        if let w = weights {
          return try w.withUnsafeBufferPointer { wp in
            try tr.step(x: xp.baseAddress!, n: n, labels: yp.baseAddress!, sampleWeights: wp.baseAddress!)
          }
        }
        return try tr.step(x: xp.baseAddress!, n: n, labels: yp.baseAddress!)
      }
    }
  }

  func testUniformWeightsHaveFullEffectiveSampleSizeAndNoCorrelation() throws {
    let d = try step(try trainer(), weights: nil).diagnostics
    XCTAssertEqual(d.effectiveSampleSize, 1, accuracy: 1e-12)
    XCTAssertEqual(d.saturatedLow, 0)
    XCTAssertEqual(d.saturatedHigh, 0)
    XCTAssertTrue(d.weightLossCorrelation.isNaN)
    XCTAssertEqual(d.labelMajority, 4.0 / 12.0, accuracy: 1e-12)
  }

  func testStatisticsMatchTheirDefinitions() throws {
    let tr = try trainer()
    let w: [Float] = [3, 0, 1, 0.5, 0, 2, 0, 0, 1, 4, 0.001, 1]
    let d = try step(tr, weights: w).diagnostics
    let wd = w.map(Double.init)
    let sw = wd.reduce(0, +), sww = wd.map { $0 * $0 }.reduce(0, +)
    // The core reads the float32 coefficients wᵢ/n; each carries a relative rounding of at most
    // 2⁻²⁴, so the ratio (Σw)²/(nΣw²) moves by at most ~4·2⁻²⁴ ≈ 2.4e-7 relative.
    XCTAssertEqual(d.effectiveSampleSize, sw * sw / (Double(n) * sww), accuracy: 1e-6)
    let cut = 0.01 * sw / Double(n)
    XCTAssertEqual(d.saturatedLow, Double(wd.filter { $0 <= cut }.count) / Double(n), accuracy: 1e-12)
    // The step's forward pass left its losses and probabilities in the trainer.
    let l = (0..<n).map { Double(tr.losses[$0]) }
    let ml = l.reduce(0, +) / Double(n), mw = sw / Double(n)
    var cov = 0.0, vw = 0.0, vl = 0.0
    for i in 0..<n {
      cov += (wd[i] - mw) * (l[i] - ml)
      vw += (wd[i] - mw) * (wd[i] - mw)
      vl += (l[i] - ml) * (l[i] - ml)
    }
    // The core correlates the float32 coefficients wᵢ/n: equal to float32 rounding (2⁻²⁴ relative).
    XCTAssertEqual(d.weightLossCorrelation, cov / (vw * vl).squareRoot(), accuracy: 1e-5)
    var counts = [0, 0, 0]
    for i in 0..<n {
      let p = (0..<3).map { tr.probs[i * 3 + $0] }
      counts[p.firstIndex(of: p.max()!)!] += 1
    }
    XCTAssertEqual(d.predictionMajority, Double(counts.max()!) / Double(n), accuracy: 1e-12)
  }

  func testAllZeroWeightsHaveZeroEffectiveSampleSize() throws {
    let d = try step(try trainer(), weights: [Float](repeating: 0, count: n)).diagnostics
    XCTAssertEqual(d.effectiveSampleSize, 0)
    XCTAssertEqual(d.saturatedLow, 1)
  }

  func testOneWeightedExampleHasEffectiveSampleSizeOneOverN() throws {
    var w = [Float](repeating: 0, count: n)
    w[3] = 7
    let d = try step(try trainer(), weights: w).diagnostics
    XCTAssertEqual(d.effectiveSampleSize, 1 / Double(n), accuracy: 1e-12)
    XCTAssertEqual(d.saturatedLow, Double(n - 1) / Double(n), accuracy: 1e-12)
  }
}
