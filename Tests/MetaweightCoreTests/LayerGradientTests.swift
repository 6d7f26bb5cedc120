import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

/// Reverse mode (`backward`) against central finite differences of L = Σ r·y, for every
/// parameter and every input element of each layer (dL/dθ and dL/dx).
final class LayerGradientTests: XCTestCase {
  /// Step for smooth layers; composite blocks with ReLUs after batch norm use a smaller one so
  /// that a step rarely crosses a kink.
  let h: Float = 1e-2
  let hKinked: Float = 1e-3
  /// Cap on the derived tolerance (see `LayerHarness.checkGradients`): the derived bound is the
  /// tolerance wherever it is tighter, which it is for every smooth layer.
  let tol = 1e-2

  func testLinearWithBiasGradientsMatchFiniteDifferences() throws {
    try LayerCases.linear(bias: true).checkGradients(step: h, tolerance: tol)
  }

  func testLinearWithoutBiasGradientsMatchFiniteDifferences() throws {
    try LayerCases.linear(bias: false).checkGradients(step: h, tolerance: tol)
  }

  func testReLUInputGradientMatchesFiniteDifferences() {
    LayerCases.relu().checkGradients(step: h, tolerance: tol)
  }

  func testFlattenInputGradientMatchesFiniteDifferences() {
    LayerCases.flatten().checkGradients(step: h, tolerance: tol)
  }

  func testConv2D3x3Pad1GradientsMatchFiniteDifferences() throws {
    try LayerCases.conv3x3Pad1().checkGradients(step: h, tolerance: tol)
  }

  func testConv2D3x3Stride2GradientsMatchFiniteDifferences() throws {
    try LayerCases.conv3x3Stride2().checkGradients(step: h, tolerance: tol)
  }

  func testConv2D5x5NoPaddingWithBiasGradientsMatchFiniteDifferences() throws {
    try LayerCases.conv5x5NoPadBias().checkGradients(step: h, tolerance: tol)
  }

  func testConv2D1x1Stride1GradientsMatchFiniteDifferences() throws {
    try LayerCases.conv1x1().checkGradients(step: h, tolerance: tol)
  }

  func testConv2D1x1Stride2GradientsMatchFiniteDifferences() throws {
    try LayerCases.conv1x1Stride2().checkGradients(step: h, tolerance: tol)
  }

  func testConv2DChunkedBatchGradientsMatchFiniteDifferences() throws {
    try LayerCases.conv3x3Pad1Chunked().checkGradients(step: h, tolerance: tol)
  }

  func testConv2DStridedChunkedBatchWithBiasGradientsMatchFiniteDifferences() throws {
    try LayerCases.conv5x5Stride2Chunked().checkGradients(step: h, tolerance: tol)
  }

  func testBatchNormTrainingImageGradientsMatchFiniteDifferences() {
    LayerCases.batchNormImage(.train).checkGradients(step: h, tolerance: tol)
  }

  func testBatchNormTrainingFlatGradientsMatchFiniteDifferences() {
    LayerCases.batchNormFlat(.train).checkGradients(step: h, tolerance: tol)
  }

  func testBatchNormVirtualTrainGradientsMatchFiniteDifferences() {
    LayerCases.batchNormImage(.virtualTrain).checkGradients(step: h, tolerance: tol)
  }

  func testBatchNormEvalImageGradientsMatchFiniteDifferences() {
    LayerCases.batchNormImage(.eval).checkGradients(step: h, tolerance: tol)
  }

  func testBatchNormEvalFlatGradientsMatchFiniteDifferences() {
    LayerCases.batchNormFlat(.eval).checkGradients(step: h, tolerance: tol)
  }

  func testMaxPoolInputGradientMatchesFiniteDifferences() throws {
    try LayerCases.maxPool().checkGradients(step: h, tolerance: tol)
  }

  func testOverlappingMaxPoolInputGradientMatchesFiniteDifferences() throws {
    try LayerCases.maxPoolOverlapping().checkGradients(step: h, tolerance: tol)
  }

  func testAvgPoolInputGradientMatchesFiniteDifferences() throws {
    try LayerCases.avgPool().checkGradients(step: h, tolerance: tol)
  }

  func testOverlappingAvgPoolInputGradientMatchesFiniteDifferences() throws {
    try LayerCases.avgPoolOverlapping().checkGradients(step: h, tolerance: tol)
  }

  func testGlobalAvgPoolInputGradientMatchesFiniteDifferences() throws {
    try LayerCases.globalAvgPool().checkGradients(step: h, tolerance: tol)
  }

  func testDropoutInputGradientWithFixedMaskMatchesFiniteDifferences() throws {
    try LayerCases.dropout().checkGradients(step: h, tolerance: tol)
  }

  func testShortcutAStride2InputGradientMatchesFiniteDifferences() throws {
    try LayerCases.shortcutA(stride: 2).checkGradients(step: h, tolerance: tol)
  }

  func testShortcutAStride1InputGradientMatchesFiniteDifferences() throws {
    try LayerCases.shortcutA(stride: 1).checkGradients(step: h, tolerance: tol)
  }

  func testResidualIdentityGradientsMatchFiniteDifferences() throws {
    try LayerCases.residualIdentity().checkGradients(step: hKinked, tolerance: tol)
  }

  func testResidualProjectionGradientsMatchFiniteDifferences() throws {
    try LayerCases.residualProjection().checkGradients(step: hKinked, tolerance: tol)
  }

  func testResNetBasicBlockGradientsMatchFiniteDifferences() throws {
    try LayerCases.basicBlock(stride: 1).checkGradients(step: hKinked, tolerance: tol)
  }

  func testDownsamplingResNetBasicBlockGradientsMatchFiniteDifferences() throws {
    try LayerCases.basicBlock(stride: 2).checkGradients(step: hKinked, tolerance: tol)
  }

  func testDownsamplingResNetBasicBlockWithProjectionGradientsMatchFiniteDifferences() throws {
    try LayerCases.basicBlock(stride: 2, optionA: false).checkGradients(step: hKinked, tolerance: tol)
  }

  // MARK: - Behaviour beyond the derivatives

  func testDropoutSameSeedGivesSameMaskAndEvalIsIdentity() throws {
    let t = try LayerCases.dropout()
    let a = t.output()
    let b = t.output()
    XCTAssertEqual(a, b, "the same generator seed must give the same mask")
    let dropped = a.filter { $0 == 0 }.count
    XCTAssertGreaterThan(dropped, 0, "rate 0.4 should drop something")
    XCTAssertLessThan(dropped, a.count, "rate 0.4 should keep something")
    for i in 0..<a.count where a[i] != 0 {
      XCTAssertEqual(a[i], t.x[i] / 0.6, accuracy: 1e-5 * max(1, abs(a[i])), "kept values are scaled by 1/(1-p)")
    }
    let other = LayerHarness(t.layer, batch: t.batch, mode: .train, dropoutSeed: 12)
    other.x = t.x
    XCTAssertNotEqual(other.output(), a, "a different seed must give a different mask")
    let eval = LayerHarness(t.layer, batch: t.batch, mode: .eval)
    eval.x = t.x
    XCTAssertEqual(eval.output(), t.x, "dropout is the identity in eval mode")
  }

  func testBatchNormTrainModeUpdatesRunningStatisticsWithUnbiasedVariance() throws {
    let t = LayerCases.batchNormFlat(.train)
    let d = 5, n = t.batch
    let pass = t.forward()
    let after = pass.state.array
    for c in 0..<d {
      let col = (0..<n).map { Double(t.x[$0 * d + c]) }
      let mean = col.reduce(0, +) / Double(n)
      let unbiased = col.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n - 1)
      XCTAssertEqual(Double(after[c]), 0.9 * Double(t.state[c]) + 0.1 * mean, accuracy: 1e-5, "running_mean[\(c)]")
      XCTAssertEqual(
        Double(after[d + c]), 0.9 * Double(t.state[d + c]) + 0.1 * unbiased, accuracy: 1e-5, "running_var[\(c)]")
    }
    for mode in [Mode.virtualTrain, .eval] {
      let u = LayerHarness(t.layer, batch: n, mode: mode)
      u.state = t.state
      u.x = t.x
      XCTAssertEqual(u.forward().state.array, t.state, "\(mode) must not touch the running statistics")
    }
  }

  func testBatchNormTrainingOutputIsNormalisedPerChannel() {
    let t = LayerCases.batchNormImage(.train)
    let y = t.output()
    let m = t.batch * 9
    for c in 0..<3 {
      let g = Double(t.params[c]), b = Double(t.params[3 + c])
      let xhat = (0..<m).map { (Double(y[c * m + $0]) - b) / g }
      let mean = xhat.reduce(0, +) / Double(m)
      let variance = xhat.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(m)
      XCTAssertEqual(mean, 0, accuracy: 1e-4, "channel \(c) mean")
      XCTAssertEqual(variance, 1, accuracy: 1e-3, "channel \(c) variance (biased, plus ε)")
    }
  }

  // MARK: - Softmax cross-entropy

  func testCrossEntropyLossAndProbabilitiesMatchDirectFormula() {
    var rng = RNG(seed: 4)
    let n = 5, c = 7
    var z = rng.gaussianArray(n * c, scale: 3)
    z[3] = 80  // large logits must not overflow
    let labels: [Int32] = (0..<n).map { _ in Int32(rng.int(below: c)) }
    var losses = [Float](repeating: .nan, count: n)
    var probs = [Float](repeating: .nan, count: n * c)
    CrossEntropy.forward(logits: z, labels: labels, n: n, c: c, losses: &losses, probs: &probs)
    for i in 0..<n {
      let row = (0..<c).map { Double(z[i * c + $0]) }
      let mx = row.max()!
      let lse = mx + log(row.map { exp($0 - mx) }.reduce(0, +))
      XCTAssertEqual(Double(losses[i]), lse - row[Int(labels[i])], accuracy: 1e-4, "loss[\(i)]")
      var s: Double = 0
      for j in 0..<c {
        XCTAssertEqual(Double(probs[i * c + j]), exp(row[j] - lse), accuracy: 1e-6, "p[\(i), \(j)]")
        s += Double(probs[i * c + j])
      }
      XCTAssertEqual(s, 1, accuracy: 1e-5, "row \(i) sums to one")
    }
  }

  func testCrossEntropyWeightedGradientMatchesFiniteDifferences() {
    var rng = RNG(seed: 8)
    let n = 4, c = 6
    let z = rng.gaussianArray(n * c, scale: 2)
    let labels: [Int32] = (0..<n).map { _ in Int32(rng.int(below: c)) }
    let coef = rng.uniformArray(n, -0.5, 1.5)
    func loss(_ z: [Float]) -> Double {
      var l = [Float](repeating: 0, count: n)
      var p = [Float](repeating: 0, count: n * c)
      CrossEntropy.forward(logits: z, labels: labels, n: n, c: c, losses: &l, probs: &p)
      return (0..<n).map { Double(coef[$0]) * Double(l[$0]) }.reduce(0, +)
    }
    var l = [Float](repeating: 0, count: n)
    var p = [Float](repeating: 0, count: n * c)
    var dz = [Float](repeating: .nan, count: n * c)
    CrossEntropy.forward(logits: z, labels: labels, n: n, c: c, losses: &l, probs: &p)
    CrossEntropy.backward(probs: p, labels: labels, n: n, c: c, coefficients: coef, dlogits: &dz)
    let hz: Float = 1e-2
    var fd: [Double] = []
    for i in 0..<(n * c) {
      var plus = z, minus = z
      plus[i] += hz
      minus[i] -= hz
      fd.append((loss(plus) - loss(minus)) / Double(plus[i] - minus[i]))
    }
    Check.vectorsClose(Vec.doubles(dz), fd, tolerance: 1e-2, "dL/dlogits of Σ coefᵢ·lᵢ")
    for i in 0..<n {
      let rowSum = (0..<c).map { Double(dz[i * c + $0]) }.reduce(0, +)
      XCTAssertEqual(rowSum, 0, accuracy: 1e-5, "softmax gradient rows sum to zero")
    }
  }
}
