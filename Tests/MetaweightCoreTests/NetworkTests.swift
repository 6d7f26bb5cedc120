import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

/// Whole networks: `Network.jvp` and `Network.backward` against finite differences and each
/// other, batch-norm state handling, model sizes and the spec language.
final class NetworkTests: XCTestCase {
  // MARK: - Models under test

  private func mlp(batchNorm: Bool) throws -> NetworkHarness {
    try NetworkHarness(Models.mlp(widths: [6, 10, 8, 4], batchNorm: batchNorm), batch: 5)
  }

  // With thousands of ReLUs (and batch norm putting their inputs around zero) some unit always
  // sits within ~1e-5 of its kink along a random direction, so the kink-free differences need
  // steps of ~1e-5 or less, where float32 rounding alone costs ~1e-3 relative error. The seeds
  // pick points whose nearest kinks leave a margin (with seed 5, for example, a LeNet unit sits
  // 7e-6 from its kink with slope 48 along the test direction: no float32 step is both kink-free
  // and accurate there).

  private func lenet() throws -> NetworkHarness {
    try NetworkHarness(Models.lenet5(input: .image(c: 1, h: 28, w: 28), classes: 10), batch: 2, seed: 4)
  }

  private func smallResNet(mode: Mode = .virtualTrain) throws -> NetworkHarness {
    try NetworkHarness(
      Models.cifarResNet(input: .image(c: 3, h: 8, w: 8), classes: 5, blocksPerStage: 1), batch: 2, mode: mode,
      seed: 2)
  }

  // MARK: - Checks

  /// `Network.jvp` of the logits vs central differences along random parameter directions.
  /// Differences are kink-free: a step whose ends switch a ReLU or a max-pool arg-max is
  /// replaced by a smaller one (see `KinkPattern`). The tolerance is the differences' derived
  /// error bound (`NetworkHarness.bound`) capped at `tolerance`, as in `LayerHarness.checkGradients`.
  private func checkJVP(
    _ t: NetworkHarness, step h: Float, tolerance: Double = 1e-2, file: StaticString = #filePath, line: UInt = #line
  ) {
    var rng = RNG(seed: 41)
    for k in 0..<2 {
      let v = rng.gaussianArray(t.net.params.count)
      let jvp = Vec.doubles(t.jvp(v))
      guard let (fd, fine) = t.logitsEstimates(v, step: h) else {
        XCTFail("direction \(k): every step crosses a kink", file: file, line: line)
        continue
      }
      let dz = t.logitsRounding()
      let scale = jvp.map { abs($0) }.max() ?? 0
      let bounds = (0..<fd.count).map { t.bound(fd[$0], fine[$0], valueRounding: dz, analyticScale: scale) }
      let values = fd.map { $0.value }
      let derived = FiniteDifference.relativeTolerance(bounds: bounds, jvp, values)
      Check.vectorsClose(
        jvp, values, tolerance: min(derived, tolerance),
        "network JVP of the logits along direction \(k) (derived bound \(derived))", file: file, line: line)
    }
  }

  /// ∇ mean cross-entropy (`Network.backward`) vs kink-free central differences: along three
  /// random directions, and coordinate by coordinate on a random subset of parameters.
  private func checkGradient(
    _ t: NetworkHarness, step h: Float, coordinateStep hc: Float, coordinates: Int, tolerance: Double = 1e-2,
    file: StaticString = #filePath, line: UInt = #line
  ) {
    let g = t.gradient()
    XCTAssertTrue(g.allSatisfy { $0.isFinite }, "backward left gradients unwritten", file: file, line: line)
    var rng = RNG(seed: 42)
    var analytic: [Double] = [], numeric: [Double] = [], bounds: [Double] = []
    let dl = t.lossRounding()
    let gScale = g.map { Double(abs($0)) }.max() ?? 0
    for _ in 0..<3 {
      let v = rng.gaussianArray(g.count)
      guard let (d, fine) = t.lossEstimates(v, step: h) else { continue }
      let gv = Vec.dot(g, v)
      analytic.append(gv)
      numeric.append(d.value)
      bounds.append(t.bound(d, fine, valueRounding: dl, analyticScale: Vec.dot(g.map { abs($0) }, v.map { abs($0) })))
    }
    XCTAssertEqual(analytic.count, 3, "directions on kinks", file: file, line: line)
    var derived = FiniteDifference.relativeTolerance(bounds: bounds, analytic, numeric)
    Check.vectorsClose(
      analytic, numeric, tolerance: min(derived, tolerance), "directional derivatives of the loss (derived bound \(derived))",
      file: file, line: line)
    analytic = []
    numeric = []
    bounds = []
    let idx = Array(rng.permutation(g.count).prefix(coordinates))
    for i in idx {
      var e = [Float](repeating: 0, count: g.count)
      e[i] = 1
      guard let (d, fine) = t.lossEstimates(e, step: hc) else { continue }
      analytic.append(Double(g[i]))
      numeric.append(d.value)
      bounds.append(t.bound(d, fine, valueRounding: dl, analyticScale: gScale))
    }
    XCTAssertLessThanOrEqual(idx.count - analytic.count, idx.count / 10, "coordinates on kinks", file: file, line: line)
    derived = FiniteDifference.relativeTolerance(bounds: bounds, analytic, numeric)
    Check.vectorsClose(
      analytic, numeric, tolerance: min(derived, tolerance), "loss gradient coordinates (derived bound \(derived))",
      file: file, line: line)
  }

  /// ⟨u, J·v⟩ = ⟨Jᵀ·u, v⟩ for J = ∂logits/∂θ: `Network.jvp` against `Network.backward`.
  private func checkAdjoint(_ t: NetworkHarness, file: StaticString = #filePath, line: UInt = #line) {
    var rng = RNG(seed: 43)
    let u = rng.gaussianArray(t.batch * t.net.classes)
    let v = rng.gaussianArray(t.net.params.count)
    let jv = t.jvp(v)
    let jtu = t.gradient(dlogits: u)
    let lhs = Vec.dot(u, jv), rhs = Vec.dot(jtu, v)
    let scale = Vec.norm(u) * Vec.norm(jv)
    XCTAssertGreaterThan(scale, 0, file: file, line: line)
    XCTAssertLessThanOrEqual(abs(lhs - rhs), 1e-4 * scale, "⟨u, J·v⟩ = \(lhs), ⟨Jᵀ·u, v⟩ = \(rhs)", file: file, line: line)
  }

  // MARK: - MLP

  func testMLPJVPMatchesFiniteDifferencesOfLogits() throws {
    checkJVP(try mlp(batchNorm: false), step: 1e-3)
  }

  func testMLPGradientMatchesFiniteDifferencesOfMeanCrossEntropy() throws {
    checkGradient(try mlp(batchNorm: false), step: 1e-3, coordinateStep: 1e-3, coordinates: 24)
  }

  func testMLPJVPIsAdjointToBackward() throws {
    checkAdjoint(try mlp(batchNorm: false))
  }

  func testMLPWithBatchNormJVPMatchesFiniteDifferencesOfLogits() throws {
    checkJVP(try mlp(batchNorm: true), step: 1e-3)
  }

  func testMLPWithBatchNormGradientMatchesFiniteDifferencesOfMeanCrossEntropy() throws {
    checkGradient(try mlp(batchNorm: true), step: 1e-3, coordinateStep: 1e-3, coordinates: 24)
  }

  func testMLPWithBatchNormJVPIsAdjointToBackward() throws {
    checkAdjoint(try mlp(batchNorm: true))
  }

  // MARK: - LeNet-5

  func testLeNet5JVPMatchesFiniteDifferencesOfLogits() throws {
    checkJVP(try lenet(), step: 1e-3)
  }

  func testLeNet5GradientMatchesFiniteDifferencesOfMeanCrossEntropy() throws {
    checkGradient(try lenet(), step: 1e-3, coordinateStep: 1e-3, coordinates: 16)
  }

  func testLeNet5JVPIsAdjointToBackward() throws {
    checkAdjoint(try lenet())
  }

  // MARK: - CIFAR ResNet (one block per stage, batch norm with batch statistics)

  /// Central differences of the logits need an accurate forward pass. Through F(4×4) Winograd (the
  /// default from 16 channels) its rounding, ~2e-6 of Σ|w||x| per convolution, divided by the step,
  /// moves the differences by up to 1.4e-2 of the JVP's scale under the AVX-512 kernels: within
  /// their derived bound (0.17), above the 1e-2 cap. So the differences run with GEMM
  /// convolutions, and the default (Winograd) network's JVP must equal that one's to 1e-4
  /// (measured 2e-6).
  func testSmallResNetJVPMatchesFiniteDifferencesOfLogits() throws {
    let gemm = try smallResNet()
    XCTAssertEqual(gemm.net.root.setConvolutionAlgorithm(.gemm), 7)
    checkJVP(gemm, step: 1e-3)
    let wino = try smallResNet()
    XCTAssertEqual(wino.net.root.convolutionAlgorithms.filter { $0 == .winograd }.count, 4)
    var rng = RNG(seed: 41)
    for k in 0..<2 {
      let v = rng.gaussianArray(wino.net.params.count)
      Check.vectorsClose(
        Vec.doubles(wino.jvp(v)), Vec.doubles(gemm.jvp(v)), tolerance: 1e-4, "Winograd vs GEMM JVP, direction \(k)")
    }
  }

  func testSmallResNetGradientMatchesFiniteDifferencesOfMeanCrossEntropy() throws {
    checkGradient(try smallResNet(), step: 1e-3, coordinateStep: 1e-3, coordinates: 16)
  }

  func testSmallResNetJVPIsAdjointToBackward() throws {
    checkAdjoint(try smallResNet())
  }

  func testSmallResNetInTrainModeJVPIsAdjointToBackward() throws {
    checkAdjoint(try smallResNet(mode: .train))
  }

  // MARK: - Modes and state

  private func bits(_ b: FloatBuffer) -> [UInt32] { b.array.map(\.bitPattern) }

  func testVirtualTrainLeavesStateBitIdenticalWhileTrainChangesIt() throws {
    let t = try smallResNet()
    XCTAssertGreaterThan(t.net.state.count, 0)
    let before = bits(t.net.state)
    let virtualLogits = t.logits()
    XCTAssertEqual(bits(t.net.state), before, ".virtualTrain must not touch the running statistics")
    let evalT = try NetworkHarness(t.net.root, batch: t.batch, mode: .eval, seed: t.seed)
    let evalBefore = bits(evalT.net.state)
    _ = evalT.logits()
    XCTAssertEqual(bits(evalT.net.state), evalBefore, ".eval must not touch the running statistics")
    let trainT = try NetworkHarness(t.net.root, batch: t.batch, mode: .train, seed: t.seed)
    trainT.net.params.copy(from: t.net.params)
    trainT.net.state.copy(from: t.net.state)
    let trainLogits = trainT.logits()
    XCTAssertEqual(trainLogits, virtualLogits, "train and virtualTrain use the same batch statistics")
    let after = bits(trainT.net.state)
    XCTAssertNotEqual(after, before, ".train must update the running statistics")
    let changed = zip(after, before).filter { $0 != $1 }.count
    XCTAssertEqual(changed, t.net.state.count, "every running mean and variance moves")
  }

  func testEvalModeUsesRunningStatisticsAndLeavesThemUntouched() throws {
    let t = try NetworkHarness(Models.mlp(widths: [6, 10, 4], batchNorm: true), batch: 5, mode: .eval)
    let before = bits(t.net.state)
    let full = t.logits()
    XCTAssertEqual(bits(t.net.state), before)
    // With running statistics, each example's logits are independent of the rest of the batch.
    let single = try NetworkHarness(t.net.root, batch: 1, mode: .eval)
    single.net.params.copy(from: t.net.params)
    single.net.state.copy(from: t.net.state)
    let one = Array(t.input[0..<6]).withUnsafeBufferPointer { xin -> [Float] in
      single.net.forward(xin.baseAddress!, batch: 1, tape: single.tape, mode: .eval, rng: RNGBox(RNG(seed: 1)))
      return single.tape.logits.array
    }
    Check.elementsClose(one, Array(full[0..<4]), "eval logits of example 0 alone vs in the batch")
  }

  func testNetworkTakesImagesInNCHWLayout() throws {
    let input: Layout = .image(c: 2, h: 3, w: 2)
    let root = try Sequential([Flatten(input), try Linear(12, 3)])
    let t = try NetworkHarness(root, batch: 4)
    let z = t.logits()
    let w = Array(t.params[0..<36]), b = Array(t.params[36..<39])
    for n in 0..<4 {
      for j in 0..<3 {
        var s = Double(b[j])
        for i in 0..<12 { s += Double(w[j * 12 + i]) * Double(t.input[n * 12 + i]) }
        XCTAssertEqual(Double(z[n * 3 + j]), s, accuracy: 1e-5, "logit[\(n), \(j)]")
      }
    }
  }

  func testForwardWithExplicitParametersDoesNotUseStoredOnes() throws {
    let t = try mlp(batchNorm: false)
    let z0 = t.logits()
    var rng = RNG(seed: 2)
    let other = Vec.axpy(t.params, 1, rng.gaussianArray(t.params.count, scale: 0.1))
    let z1 = t.logits(other)
    XCTAssertNotEqual(z0, z1)
    XCTAssertEqual(t.logits(), z0, "θ itself is unchanged by a pass at another parameter vector")
  }

  // MARK: - Sizes, tables and big models

  /// The table's blocks tile [0, count) exactly once, in order, with unique names.
  private func checkTable(
    _ table: [(name: String, offset: Int, shape: [Int])], count: Int, _ what: String,
    file: StaticString = #filePath, line: UInt = #line
  ) {
    var next = 0
    for entry in table.sorted(by: { $0.offset < $1.offset }) {
      XCTAssertEqual(entry.offset, next, "\(what): \(entry.name) starts at \(entry.offset), expected \(next)", file: file, line: line)
      XCTAssertGreaterThan(entry.shape.reduce(1, *), 0, "\(what): \(entry.name) is empty", file: file, line: line)
      next = entry.offset + entry.shape.reduce(1, *)
    }
    XCTAssertEqual(next, count, "\(what): the blocks must cover the whole buffer", file: file, line: line)
    XCTAssertEqual(Set(table.map(\.name)).count, table.count, "\(what): names must be unique", file: file, line: line)
  }

  func testParameterTableCoversTheFlatVectorExactlyOnce() throws {
    let nets: [(String, Sequential)] = [
      ("mlp", try Models.mlp(widths: [6, 10, 8, 4], batchNorm: true)),
      ("lenet5", try Models.lenet5(input: .image(c: 1, h: 28, w: 28), classes: 10)),
      ("resnet", try Models.cifarResNet(input: .image(c: 3, h: 8, w: 8), classes: 5, blocksPerStage: 2)),
      ("wrn", try Models.wideResNet(input: .image(c: 3, h: 8, w: 8), classes: 4, depth: 10, widen: 1)),
    ]
    for (name, root) in nets {
      let net = try Network(root, seed: 1)
      XCTAssertEqual(net.params.count, root.parameterCount, name)
      checkTable(net.parameterTable, count: net.params.count, "\(name) parameters")
      checkTable(net.stateTable, count: net.state.count, "\(name) state")
    }
    let resnet = try Network(Models.cifarResNet(input: .image(c: 3, h: 8, w: 8), classes: 5, blocksPerStage: 1), seed: 1)
    XCTAssertEqual(resnet.parameterTable.first?.name, "0.conv2d.weight")
    XCTAssertEqual(resnet.parameterTable.first?.shape, [16, 3, 3, 3])
    XCTAssertEqual(resnet.parameterTable.last?.name, "\(resnet.root.layers.count - 1).linear.bias")
    XCTAssertEqual(resnet.parameterTable.last?.shape, [5])
  }

  func testResNet32HasThePublishedParameterCount() throws {
    let root = try Models.cifarResNet(input: .image(c: 3, h: 32, w: 32), classes: 10, blocksPerStage: 5)
    XCTAssertEqual(root.parameterCount, 464_154)
    // 31 convolutions + 1 linear layer carry weights: depth 32.
    func leaves(_ l: Layer) -> [Layer] { l.children.isEmpty ? [l] : l.children.flatMap(leaves) }
    let all = leaves(root)
    XCTAssertEqual(all.filter { $0 is Conv2D }.count + all.filter { $0 is Linear }.count, 32)
    XCTAssertEqual(root.outputLayout, .flat(10))
  }

  func testWRN28x10CanBeDefinedWithThePublishedParameterCount() throws {
    let root = try Models.wideResNet(input: .image(c: 3, h: 32, w: 32), classes: 10, depth: 28, widen: 10)
    // 36.5M for 10 classes, as in the reference implementation.
    XCTAssertEqual(root.parameterCount, 36_479_194)
    XCTAssertEqual(root.outputLayout, .flat(10))
  }

  func testWRN16x2ForwardAndBackwardRunOnATinyBatch() throws {
    let root = try Models.wideResNet(input: .image(c: 3, h: 8, w: 8), classes: 10, depth: 16, widen: 2)
    let t = try NetworkHarness(root, batch: 2, mode: .train)
    let before = t.net.state.array
    let (loss, _) = t.loss()
    XCTAssertTrue(loss.isFinite && loss > 0, "loss \(loss)")
    XCTAssertNotEqual(t.net.state.array, before, "train mode updates running statistics")
    let g = t.gradient()
    XCTAssertTrue(g.allSatisfy { $0.isFinite }, "every gradient entry is written and finite")
    XCTAssertGreaterThan(Vec.norm(g), 0)
    // Directional derivatives at virtual-train (consistent repeated passes).
    let v = NetworkHarness.direction(count: g.count, seed: 3)
    let vt = try NetworkHarness(root, batch: 2, mode: .virtualTrain)
    vt.net.params.copy(from: t.net.params)
    let gVirtual = vt.gradient()
    let n = FiniteDifference.accumulation(root, batch: 2)
    // gᵀv and (∂L/∂z)ᵀ(J·v) are both exact derivatives computed in float32; they differ by the
    // rounding of the backward and the tangent pass, each a chain of ~n multiply-adds.
    func analyticRounding(_ v: [Float]) -> Double {
      2 * FiniteDifference.roundingError(scale: Vec.dot(gVirtual.map { abs($0) }, v.map { abs($0) }), accumulation: n)
    }
    // The loss's directional derivative along a direction over every parameter, by reverse mode
    // against forward mode (`Network.jvp`, an independent pass).
    let gv = Vec.dot(gVirtual, v)
    let jv = Vec.dot(vt.loss().dlogits, vt.jvp(v))
    XCTAssertLessThan(analyticRounding(v), 0.05 * abs(gv), "the rounding bound must be tight enough to check something")
    XCTAssertEqual(gv, jv, accuracy: analyticRounding(v), "directional derivative of the loss: backward vs JVP")
    // Finite differences: with ~10⁴ ReLUs some unit sits within ~1e-5 of its kink along any
    // direction over all parameters, and at such steps the float32 rounding of the loss (which
    // depends on the OpenBLAS kernels' summation order) is no longer small against the step: a
    // fixed 1% tolerance missed by 1.25% with SkylakeX/Cooperlake kernels, and the derived bound
    // is ~100%. Along the classifier's parameters (after the last ReLU) the loss is smooth, the
    // step stays at 1e-3 and the derived bound is tight.
    guard let head = root.layers.last as? Linear else { return XCTFail("WRN ends in a linear layer") }
    var vHead = [Float](repeating: 0, count: v.count)
    for i in head.paramOffset..<(head.paramOffset + head.parameterCount) { vHead[i] = v[i] }
    let gvHead = Vec.dot(gVirtual, vHead)
    let (fd, fine) = try XCTUnwrap(vt.lossEstimates(vHead, step: 1e-3), "every step crosses a kink")
    let tolerance =
      FiniteDifference.errorBound(coarse: fd, fine: fine, valueRounding: vt.lossRounding()) + analyticRounding(vHead)
    XCTAssertLessThan(tolerance, 0.01 * abs(gvHead), "the derived tolerance must be tight enough to check something")
    XCTAssertEqual(gvHead, fd.value, accuracy: tolerance, "directional derivative of the loss along the classifier")
  }

  // MARK: - Spec language

  func testSpecParserBuildsTheLayersTheSpecNames() throws {
    let spec = "conv(out=4,k=3,p=1,bias=1); bn; relu; maxpool(k=2); conv2d(out=6, k=3, s=2, p=1); "
      + "avgpool(k=2); flatten; dropout(p=0.25); linear(out=10, bias=0)"
    let root = try SpecParser.parse(spec, input: .image(c: 3, h: 8, w: 8))
    XCTAssertEqual(
      root.layers.map(\.kind),
      ["conv2d", "batchnorm", "relu", "maxpool2d", "conv2d", "avgpool2d", "flatten", "dropout", "linear"])
    let c1 = try XCTUnwrap(root.layers[0] as? Conv2D)
    XCTAssertEqual([c1.outChannels, c1.kernel, c1.stride, c1.padding], [4, 3, 1, 1])
    XCTAssertTrue(c1.hasBias)
    let c2 = try XCTUnwrap(root.layers[4] as? Conv2D)
    XCTAssertEqual([c2.inChannels, c2.outChannels, c2.kernel, c2.stride, c2.padding], [4, 6, 3, 2, 1])
    XCTAssertFalse(c2.hasBias)
    XCTAssertEqual(root.layers[3].outputLayout, .image(c: 4, h: 4, w: 4))
    XCTAssertEqual(root.layers[5].outputLayout, .image(c: 6, h: 1, w: 1))
    XCTAssertEqual(try XCTUnwrap(root.layers[7] as? Dropout).rate, 0.25)
    let fc = try XCTUnwrap(root.layers[8] as? Linear)
    XCTAssertEqual([fc.inFeatures, fc.outFeatures], [6, 10])
    XCTAssertFalse(fc.hasBias)
    XCTAssertEqual(root.outputLayout, .flat(10))
  }

  func testSpecParserBuildsResidualsAndModels() throws {
    let spec = "conv(out=4,k=3,p=1); residual{conv(out=4,k=3,p=1);bn;relu;conv(out=4,k=3,p=1)}; "
      + "residual{conv(out=8,k=3,s=2,p=1) | shortcut_a(out=8,s=2)}; gap; linear(out=3)"
    let root = try SpecParser.parse(spec, input: .image(c: 3, h: 8, w: 8))
    let r1 = try XCTUnwrap(root.layers[1] as? Residual)
    XCTAssertNil(r1.shortcut)
    XCTAssertEqual(r1.body.layers.map(\.kind), ["conv2d", "batchnorm", "relu", "conv2d"])
    let r2 = try XCTUnwrap(root.layers[2] as? Residual)
    XCTAssertEqual((r2.shortcut as? Sequential)?.layers.map(\.kind), ["shortcut_a"])
    XCTAssertEqual(r2.outputLayout, .image(c: 8, h: 4, w: 4))
    XCTAssertEqual(root.outputLayout, .flat(3))

    let resnet = try SpecParser.parse("resnet32(classes=10)", input: .image(c: 3, h: 32, w: 32))
    XCTAssertEqual(resnet.parameterCount, 464_154)
    let small = try SpecParser.parse("resnet(n=1, classes=7)", input: .image(c: 3, h: 8, w: 8))
    XCTAssertEqual(
      small.parameterCount,
      try Models.cifarResNet(input: .image(c: 3, h: 8, w: 8), classes: 7, blocksPerStage: 1).parameterCount)
    let m = try SpecParser.parse("mlp(hidden=16x8, classes=3, bn=1)", input: .flat(5))
    let inner = try XCTUnwrap(m.layers.first as? Sequential)
    XCTAssertEqual(inner.layers.map(\.kind), ["linear", "batchnorm", "relu", "linear", "batchnorm", "relu", "linear"])
    XCTAssertEqual(m.parameterCount, (5 * 16 + 16) + 32 + (16 * 8 + 8) + 16 + (8 * 3 + 3))
    let lenet = try SpecParser.parse("lenet5(classes=10)", input: .image(c: 1, h: 28, w: 28))
    XCTAssertEqual(lenet.parameterCount, 61_706)
    let wrn = try SpecParser.parse("wrn(depth=16, widen=2, classes=10)", input: .image(c: 3, h: 32, w: 32))
    XCTAssertEqual(
      wrn.parameterCount,
      try Models.wideResNet(input: .image(c: 3, h: 32, w: 32), classes: 10, depth: 16, widen: 2).parameterCount)
  }

  func testSpecParserRejectsBadSpecsWithInvalidArgument() {
    let image: Layout = .image(c: 3, h: 8, w: 8)
    let flat: Layout = .flat(6)
    let bad: [(String, Layout, String)] = [
      ("foo", image, "unknown layer"),
      ("conv(out=4,k=3); pooling(k=2)", image, "unknown layer later on"),
      ("conv(k=3)", image, "missing out"),
      ("linear", flat, "missing out for linear"),
      ("maxpool", image, "missing k"),
      ("lenet5", .image(c: 1, h: 28, w: 28), "missing classes"),
      ("linear(out=10)", image, "flat layer on an image"),
      ("conv(out=4,k=3)", flat, "image layer on a flat input"),
      ("gap", flat, "global pooling on a flat input"),
      ("mlp(hidden=4, classes=2)", image, "mlp on an image"),
      ("linear(out=3, zzz=1)", flat, "unknown argument"),
      ("conv(out=4.5,k=3)", image, "non-integer argument"),
      ("linear(out=abc)", flat, "non-numeric argument"),
      ("linear(out=0)", flat, "zero width"),
      ("dropout(p=1)", flat, "dropout rate 1"),
      ("conv(out=4,k=11)", image, "kernel larger than the input"),
      ("linear(out=3", flat, "missing ')'"),
      ("relu;", flat, "trailing ';'"),
      ("relu relu", flat, "junk after the spec"),
      ("", flat, "empty spec"),
      ("residual{relu", flat, "missing '}'"),
      ("residual{conv(out=8,k=3,s=2,p=1)}", image, "identity shortcut with mismatched layouts"),
      ("residual{conv(out=8,k=3,p=1) | conv(out=4,k=1)}", image, "shortcut with mismatched layouts"),
      ("shortcut_a(out=4)", image, "odd channel difference"),
    ]
    for (spec, input, why) in bad {
      Check.invalidArgument("'\(spec)' (\(why))") { try SpecParser.parse(spec, input: input) }
    }
    Check.invalidArgument("network whose output is an image") {
      try Network(try SpecParser.parse("conv(out=2,k=1)", input: image), seed: 0)
    }
    Check.invalidArgument("sequential with mismatched layouts") {
      try Sequential([try Linear(4, 3), try Linear(5, 2)])
    }
  }
}

extension NetworkHarness {
  /// A seeded N(0, 1) direction.
  static func direction(count: Int, seed: UInt64) -> [Float] {
    var rng = RNG(seed: seed)
    return rng.gaussianArray(count)
  }
}
