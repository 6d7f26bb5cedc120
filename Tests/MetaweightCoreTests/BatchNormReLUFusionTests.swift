// Batch norm fused with the ReLU after it: `Sequential` runs a `BatchNorm` → `ReLU` pair as one
// step (one sweep after the statistics writes max(0, γ x̂ + β) into the ReLU's output; the
// backward and tangent sweeps apply the ReLU's mask on the fly) and stores no batch-norm output.
// A `Residual` → `ReLU` pair likewise (its sum writes max(0, body + shortcut); its backward pass
// runs on dz·[z > 0], its tangent is masked in place) and stores no pre-ReLU sum.
// Checked here against the two layers run apart (`Sequential.fusesReLU = false` when the
// tape is made), against finite differences and the adjoint identity, and for memory.
//
// Tolerance of the fused-vs-separate comparisons: zero (bit-for-bit). The fused sweep performs the
// same float32 operations on the same operands in the same order as the separate layers (the
// affine value v = x·a + b, then max(v, 0) or dz·[z > 0] through the same `ReLU.rectify` and
// `ReLU.gate`; the projections Σ dy, Σ dy·x̂ in the same double-precision lanes), and neither layer
// calls BLAS; the convolutions around the pair make identical OpenBLAS calls on identical inputs
// in both routes. So the results agree exactly under every OpenBLAS kernel family, and any
// difference is a bug, not rounding.
import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers

/// A one-worker `BatchNormSync`: its sums are already the global ones, so the synchronised passes
/// run (with their own formulas) on the local batch.
private final class OneWorkerSync: BatchNormSync {
  var calls = 0
  func sum(_ values: UnsafeMutablePointer<Float>, count: Int, pass: BatchNormSyncPass) -> Bool {
    calls += 1
    return true
  }
}

/// Everything one forward, backward and three tangent passes of a layer produce.
private struct Round: Equatable {
  var y: [Float]
  var dx: [Float]?
  var grads: [Float]
  /// Tangents along (tθ, tx), (tθ, 0) and (0, tx).
  var tangents: [[Float]]
  /// The state (running statistics) after the forward pass.
  var state: [Float]
}

final class BatchNormReLUFusionTests: XCTestCase {
  private static let modes: [Mode] = [.train, .virtualTrain, .eval]

  /// Sets `fusesReLU` on every `Sequential` in `layer`.
  private func setFusion(_ layer: Layer, _ on: Bool) {
    if let s = layer as? Sequential { s.fusesReLU = on }
    for c in layer.children { setFusion(c, on) }
  }

  /// The fused pairs of the tape `layer` made (`tape`), as (batch-norm index, floats not stored).
  private func fusedPairs(_ layer: Layer, _ tape: LayerTape, batch: Int) -> [Int] {
    var out: [Int] = []
    if let s = layer as? Sequential, let t = tape as? Sequential.Tape {
      for step in t.steps where step.fused != nil { out.append(batch * s.layers[step.first].outputLayout.size) }
      for (i, c) in s.layers.enumerated() { out += fusedPairs(c, t.tapes[i], batch: batch) }
    } else if let r = layer as? Residual, let t = tape as? Residual.Tape {
      out += fusedPairs(r.body, t.body, batch: batch)
      if let sc = r.shortcut, let st = t.short { out += fusedPairs(sc, st, batch: batch) }
    }
    return out
  }

  /// Runs `layer` once on a tape made with fusion on or off: forward (from `state`), backward
  /// (with the input gradient unless `inputGradient` is false) and tangents along (tθ, tx), (tθ, 0)
  /// and (0, tx). Every output buffer starts as NaN, so anything left unwritten shows.
  private func round(
    _ layer: Layer, fused: Bool, batch: Int, mode: Mode, params: [Float], state: [Float], x: [Float],
    dy: [Float], tp: [Float], tx: [Float], inputGradient: Bool = true, sync: BatchNormSync? = nil
  ) -> Round {
    setFusion(layer, fused)
    defer { setFusion(layer, true) }
    let tape = layer.makeTape(batch: batch)
    let p = FloatBuffer(params), s = FloatBuffer(state), xb = FloatBuffer(x), dyb = FloatBuffer(dy)
    let tpb = FloatBuffer(tp), txb = FloatBuffer(tx)
    let y = FloatBuffer(count: batch * layer.outputLayout.size)
    y.fill(.nan)
    var ctx = PassContext(
      batch: batch, params: UnsafePointer(p.pointer), state: s.pointer, mode: mode, rng: RNGBox(RNG(seed: 1)),
      scratch: Scratch())
    ctx.batchNormSync = sync
    layer.forward(UnsafePointer(xb.pointer), y.pointer, &ctx, tape)
    let g = FloatBuffer(count: params.count)
    g.fill(.nan)
    let dx = FloatBuffer(count: x.count)
    dx.fill(.nan)
    ctx.grads = g.pointer
    layer.backward(
      UnsafePointer(xb.pointer), UnsafePointer(y.pointer), UnsafePointer(dyb.pointer), inputGradient ? dx.pointer : nil,
      &ctx, tape)
    ctx.grads = nil
    var tangents: [[Float]] = []
    for (withParams, withInput) in [(true, true), (true, false), (false, true)] {
      let ty = FloatBuffer(count: y.count)
      ty.fill(.nan)
      ctx.paramTangent = withParams ? UnsafePointer(tpb.pointer) : nil
      layer.tangent(
        UnsafePointer(xb.pointer), UnsafePointer(y.pointer), withInput ? UnsafePointer(txb.pointer) : nil, ty.pointer,
        &ctx, tape)
      tangents.append(ty.array)
    }
    return Round(
      y: y.array, dx: inputGradient ? dx.array : nil, grads: g.array, tangents: tangents, state: s.array)
  }

  /// Fused and separate rounds of `layer` in every mode agree bit for bit, the fused tape has at
  /// least one fused pair, and the ReLU's mask is not trivial (some outputs zero, some positive).
  private func checkFusedEqualsSeparate(
    _ layer: Layer, batch: Int, inputGradient: Bool = true, sync: Bool = false,
    file: StaticString = #filePath, line: UInt = #line
  ) {
    var p = 0, s = 0
    layer.assignOffsets(param: &p, state: &s)
    var rng = RNG(seed: 41)
    // Perturbed parameters (γ, β away from 1, 0) and non-trivial running statistics.
    let params = (0..<p).map { _ in 0.5 * rng.normal() + 0.5 }
    let state = (0..<s).map { i in i % 2 == 0 ? 0.3 * rng.normal() : 0.5 + rng.uniform() }
    let n = batch * layer.inputLayout.size
    let x = rng.gaussianArray(n), tx = rng.gaussianArray(n), tp = rng.gaussianArray(p)
    let dy = rng.gaussianArray(batch * layer.outputLayout.size)
    let probe = layer.makeTape(batch: batch)
    XCTAssertFalse(fusedPairs(layer, probe, batch: batch).isEmpty, "\(layer.kind): nothing fused", file: file, line: line)
    for mode in Self.modes {
      let syncs: [OneWorkerSync?] = sync ? [OneWorkerSync(), OneWorkerSync()] : [nil, nil]
      let separate = round(
        layer, fused: false, batch: batch, mode: mode, params: params, state: state, x: x, dy: dy, tp: tp, tx: tx,
        inputGradient: inputGradient, sync: syncs[0])
      let fused = round(
        layer, fused: true, batch: batch, mode: mode, params: params, state: state, x: x, dy: dy, tp: tp, tx: tx,
        inputGradient: inputGradient, sync: syncs[1])
      let label = "\(mode)\(sync ? " synchronised" : "")"
      XCTAssertEqual(fused.y, separate.y, "\(label): forward output", file: file, line: line)
      XCTAssertEqual(fused.dx, separate.dx, "\(label): input gradient", file: file, line: line)
      XCTAssertEqual(fused.grads, separate.grads, "\(label): parameter gradients", file: file, line: line)
      XCTAssertEqual(fused.tangents, separate.tangents, "\(label): tangents", file: file, line: line)
      XCTAssertEqual(fused.state, separate.state, "\(label): running statistics", file: file, line: line)
      XCTAssertTrue(fused.y.allSatisfy { $0.isFinite }, "\(label): output not finite", file: file, line: line)
      XCTAssertTrue(fused.grads.allSatisfy { $0.isFinite }, "\(label): gradient unwritten", file: file, line: line)
      XCTAssertTrue((fused.dx ?? []).allSatisfy { $0.isFinite }, "\(label): dx unwritten", file: file, line: line)
      XCTAssertTrue(fused.tangents.joined().allSatisfy { $0.isFinite }, "\(label): tangent unwritten", file: file, line: line)
      XCTAssertNotEqual(fused.state == state, mode == .train, "\(label): running statistics", file: file, line: line)
      if sync {
        XCTAssertEqual(syncs[0]?.calls, syncs[1]?.calls, "\(label): collectives", file: file, line: line)
        XCTAssertEqual((syncs[1]?.calls ?? 0) > 0, mode != .eval, "\(label): synchronised path not taken", file: file, line: line)
      }
    }
  }

  /// A ResNet basic block [Residual(conv → bn → relu → conv → bn, shortcut), ReLU] on 2×4×4 images,
  /// with an identity shortcut or a 1×1 projection to three channels (which is not fused).
  private func residualPair(projection: Bool) throws -> Sequential {
    let l: Layout = .image(c: 2, h: 4, w: 4)
    let channels = projection ? 3 : 2
    let c1 = try Conv2D(input: l, outChannels: channels, kernel: 3, padding: 1)
    let o = c1.outputLayout
    let body = try Sequential([
      c1, BatchNorm(o), ReLU(o), try Conv2D(input: o, outChannels: channels, kernel: 3, padding: 1), BatchNorm(o),
    ])
    let shortcut: Layer? = projection ? try Conv2D(input: l, outChannels: channels, kernel: 1) : nil
    return try Sequential([try Residual(body: body, shortcut: shortcut), ReLU(o)])
  }

  /// A [BatchNorm, ReLU] pair alone (first and last step of its sequence), its ReLU's mask checked
  /// to be non-trivial.
  private func pair(_ layout: Layout) throws -> Sequential {
    try Sequential([BatchNorm(layout), ReLU(layout)])
  }

  // MARK: - Fused equals separate

  /// conv → bn → relu → conv on images [C, N, H, W] (100 values per channel: 16-lane sweeps plus
  /// a tail, 8-lane projections plus a tail), in train, virtual-train and eval modes.
  func testFusedImageBlockEqualsSeparateLayersInEveryMode() throws {
    let l: Layout = .image(c: 2, h: 5, w: 5)
    let c1 = try Conv2D(input: l, outChannels: 3, kernel: 3, padding: 1)
    let o = c1.outputLayout
    let c2 = try Conv2D(input: o, outChannels: 2, kernel: 3, padding: 1)
    checkFusedEqualsSeparate(try Sequential([c1, BatchNorm(o), ReLU(o), c2]), batch: 4)
  }

  /// linear → bn → relu → linear on flat [N, D] batches, in every mode.
  func testFusedFlatBlockEqualsSeparateLayersInEveryMode() throws {
    checkFusedEqualsSeparate(
      try Sequential([try Linear(7, 12), BatchNorm(.flat(12)), ReLU(.flat(12)), try Linear(12, 4)]), batch: 6)
  }

  /// A pair that is the whole sequence (its input gradient is the caller's, its output the
  /// caller's), with and without an input gradient, image and flat; the ReLU's mask is mixed.
  func testFusedPairAloneEqualsSeparateLayersWithAndWithoutInputGradient() throws {
    for layout in [Layout.image(c: 3, h: 3, w: 7), .flat(5)] {
      let s = try pair(layout)
      checkFusedEqualsSeparate(s, batch: 5)
      checkFusedEqualsSeparate(s, batch: 5, inputGradient: false)
      var rng = RNG(seed: 3)
      let h = LayerHarness(s, batch: 5)
      let y = h.output(x: rng.gaussianArray(h.inputCount))
      XCTAssertTrue(y.contains { $0 == 0 } && y.contains { $0 > 0 }, "\(layout): the ReLU's mask is trivial")
    }
  }

  /// The synchronised (data-parallel) batch norm keeps its unfused route inside a fused step (the
  /// ReLU in place on its output, the mask in place on the gradient, in the scratch area when no
  /// input gradient is asked for): same results as the separate layers with the same collective.
  func testFusedPairWithSynchronisedBatchNormEqualsSeparateLayers() throws {
    let l: Layout = .image(c: 2, h: 5, w: 5)
    let c1 = try Conv2D(input: l, outChannels: 3, kernel: 3, padding: 1)
    let o = c1.outputLayout
    checkFusedEqualsSeparate(try Sequential([c1, BatchNorm(o), ReLU(o), try Conv2D(input: o, outChannels: 2, kernel: 1)]), batch: 3, sync: true)
    for layout in [Layout.image(c: 2, h: 4, w: 4), .flat(6)] {
      checkFusedEqualsSeparate(try pair(layout), batch: 4, sync: true)
      checkFusedEqualsSeparate(try pair(layout), batch: 4, inputGradient: false, sync: true)
    }
  }

  /// An identity residual block followed by a ReLU runs as one step (the block's sum is not
  /// stored), and its fused forward, backward (with and without the input gradient) and tangents
  /// equal the two layers run apart bit for bit in every mode; the fused tangent and backward pass
  /// are adjoint. A block with a projection shortcut keeps two steps (its inner batch norm still
  /// fuses), with the same results.
  func testFusedResidualBlockEqualsSeparateLayersInEveryMode() throws {
    for projection in [false, true] {
      let s = try residualPair(projection: projection)
      let tape = s.makeTape(batch: 4) as! Sequential.Tape
      XCTAssertEqual(tape.steps.count, projection ? 2 : 1, "projection \(projection): steps")
      XCTAssertEqual(tape.steps.first?.fused is Residual, !projection, "projection \(projection): residual fused")
      XCTAssertEqual(tape.stores(0), projection, "projection \(projection): the pre-ReLU sum stored")
      checkFusedEqualsSeparate(s, batch: 4)
      checkFusedEqualsSeparate(s, batch: 4, inputGradient: false)
      for mode in Self.modes { LayerHarness(s, batch: 3, mode: mode).checkAdjoint() }
    }
  }

  /// Whole networks (ResNet with both shortcut kinds' blocks, a WRN with pre-activation blocks
  /// and a bn-relu stem, an MLP with batch norm): logits, the parameter gradient, the JVP and the
  /// running statistics of a fused tape equal those of a separate tape, in train and eval modes;
  /// the parameter layout, names and signature do not depend on the fusion.
  func testFusedNetworksEqualSeparateLayers() throws {
    let cases: [(String, Layout)] = [
      ("resnet(classes=3,n=1)", .image(c: 3, h: 8, w: 8)),
      ("wrn(classes=3,depth=10,widen=1)", .image(c: 3, h: 8, w: 8)),
      ("linear(out=12);batchnorm;relu;linear(out=12);batchnorm;relu;linear(out=4)", .flat(7)),
      // Pairs that end a residual body and a shortcut (their output is the block's branch buffer).
      ("conv(out=4,k=3,p=1);residual{conv(out=4,k=3,p=1);batchnorm;relu | conv(out=4,k=1);batchnorm;relu};gap;linear(out=3)",
       .image(c: 2, h: 6, w: 6)),
    ]
    for (spec, input) in cases {
      let unfusedRoot = try SpecParser.parse(spec, input: input)
      setFusion(unfusedRoot, false)
      let unfusedNet = try Network(unfusedRoot, seed: 4)
      let net = try Network(try SpecParser.parse(spec, input: input), seed: 4)
      XCTAssertEqual(net.signature, unfusedNet.signature, spec)
      XCTAssertEqual(net.parameterTable.map(\.name), unfusedNet.parameterTable.map(\.name), spec)
      XCTAssertEqual(net.stateTable.map(\.name), unfusedNet.stateTable.map(\.name), spec)
      let batch = 5
      var rng = RNG(seed: 8)
      let x = rng.gaussianArray(batch * input.size)
      let u = rng.gaussianArray(batch * net.classes)
      let v = rng.gaussianArray(net.params.count)
      let state0 = net.state.array
      for mode in [Mode.train, .eval] {
        var results: [[[Float]]] = []
        for (network, fused) in [(unfusedNet, false), (net, true)] {
          network.state.pointer.update(from: state0, count: state0.count)
          let tape = network.makeTape(batch: batch)
          XCTAssertEqual(fusedPairs(network.root, tape.root, batch: batch).isEmpty, !fused, spec)
          x.withUnsafeBufferPointer {
            network.forward($0.baseAddress!, batch: batch, tape: tape, mode: mode, rng: RNGBox(RNG(seed: 2)))
          }
          let g = FloatBuffer(count: network.params.count)
          u.withUnsafeBufferPointer { network.backward(tape: tape, dlogits: $0.baseAddress!, grads: g.pointer) }
          let j = FloatBuffer(count: batch * network.classes)
          v.withUnsafeBufferPointer { network.jvp(tape: tape, direction: $0.baseAddress!, out: j.pointer) }
          results.append([tape.logits.array, g.array, j.array, network.state.array])
        }
        for (k, what) in ["logits", "gradient", "JVP", "running statistics"].enumerated() {
          XCTAssertEqual(results[1][k], results[0][k], "\(spec) \(mode): \(what)")
        }
        XCTAssertTrue(results[1][1].contains { $0 != 0 }, "\(spec): zero gradient, the check is vacuous")
      }
    }
  }

  /// The fused passes are reproducible and independent of the thread count: ResNet's logits,
  /// gradient and JVP are the same bits on 1 and 3 threads.
  func testFusedPassesAreIndependentOfThreadCount() throws {
    let saved = Parallel.threads
    defer { Parallel.threads = saved }
    let input: Layout = .image(c: 3, h: 8, w: 8)
    var rng = RNG(seed: 9)
    let batch = 6
    let x = rng.gaussianArray(batch * input.size)
    var results: [[[Float]]] = []
    for threads in [1, 3, 1] {
      Parallel.threads = threads
      let net = try Network(try SpecParser.parse("resnet(classes=3,n=1)", input: input), seed: 4)
      let tape = net.makeTape(batch: batch)
      x.withUnsafeBufferPointer { net.forward($0.baseAddress!, batch: batch, tape: tape, mode: .train, rng: RNGBox(RNG(seed: 2))) }
      let u = [Float](repeating: 0.1, count: batch * net.classes)
      let g = FloatBuffer(count: net.params.count)
      u.withUnsafeBufferPointer { net.backward(tape: tape, dlogits: $0.baseAddress!, grads: g.pointer) }
      let j = FloatBuffer(count: batch * net.classes)
      net.params.array.withUnsafeBufferPointer { net.jvp(tape: tape, direction: $0.baseAddress!, out: j.pointer) }
      results.append([tape.logits.array, g.array, j.array, net.state.array])
    }
    XCTAssertEqual(results[0], results[1], "1 vs 3 threads")
    XCTAssertEqual(results[0], results[2], "repeat on 1 thread")
  }

  // MARK: - Derivatives of the fused pair

  /// Reverse mode through a fused pair (training statistics and eval mode, image and flat) against
  /// central finite differences that cross no kink (step 1e-3 and the tolerance cap 1e-2, as for
  /// the other blocks with a ReLU after batch norm in `LayerGradientTests`).
  func testFusedPairGradientsMatchFiniteDifferences() throws {
    for layout in [Layout.image(c: 2, h: 3, w: 3), .flat(4)] {
      for mode in [Mode.train, .eval] {
        let h = LayerHarness(try pair(layout), batch: 4, mode: mode)
        XCTAssertFalse(fusedPairs(h.layer, h.forward().tape, batch: 4).isEmpty)
        h.checkGradients(step: 1e-3, tolerance: 1e-2)
      }
    }
  }

  /// Forward mode through a fused pair against central finite differences, same settings.
  func testFusedPairTangentMatchesFiniteDifferences() throws {
    for layout in [Layout.image(c: 2, h: 3, w: 3), .flat(4)] {
      for mode in [Mode.train, .eval] {
        LayerHarness(try pair(layout), batch: 4, mode: mode).checkTangent(step: 1e-3, tolerance: 1e-2)
      }
    }
  }

  /// ⟨u, J·v⟩ = ⟨Jᵀ·u, v⟩ through fused pairs (alone and inside conv → bn → relu → conv): the
  /// fused tangent and the fused backward pass are adjoint. Both sides are exact, so the tolerance
  /// is float32 rounding of the two dot products (1e-4 relative, `checkAdjoint`'s default).
  func testFusedPairTangentAndBackwardAreAdjoint() throws {
    for mode in Self.modes {
      for layout in [Layout.image(c: 3, h: 4, w: 4), .flat(6)] {
        LayerHarness(try pair(layout), batch: 5, mode: mode).checkAdjoint()
      }
      let l: Layout = .image(c: 2, h: 4, w: 4)
      let c1 = try Conv2D(input: l, outChannels: 3, kernel: 3, padding: 1)
      let o = c1.outputLayout
      let block = try Sequential([c1, BatchNorm(o), ReLU(o), try Conv2D(input: o, outChannels: 2, kernel: 3, padding: 1)])
      LayerHarness(block, batch: 3, mode: mode).checkAdjoint()
    }
  }

  // MARK: - Memory

  /// A fused tape stores no batch-norm output and no identity block's sum that a ReLU follows: on
  /// ResNet, WRN and a batch-norm MLP its activation bytes are those of the separate tape less
  /// exactly one output per fused pair, and the gradient/tangent pool its passes need
  /// (`poolSlotSizes`) is no larger, and equal to what the passes actually hold.
  func testFusedTapeHoldsLessActivationMemory() throws {
    let cases: [(String, Layout)] = [
      ("resnet(classes=3,n=2)", .image(c: 3, h: 8, w: 8)),
      ("wrn(classes=3,depth=10,widen=1)", .image(c: 3, h: 8, w: 8)),
      ("linear(out=12);batchnorm;relu;linear(out=4)", .flat(7)),
    ]
    let batch = 7
    for (spec, input) in cases {
      let unfused = try Network(try SpecParser.parse(spec, input: input), seed: 1)
      setFusion(unfused.root, false)
      let fused = try Network(try SpecParser.parse(spec, input: input), seed: 1)
      var poolSizes: [[Int: Int]] = []
      var held: [[Int]] = []
      for net in [unfused, fused] {
        var sizes: [Int: Int] = [:]
        poolSlotSizes(of: net.root, depth: 0, batch: batch, into: &sizes)
        poolSizes.append(sizes)
        let tape = net.makeTape(batch: batch)
        var rng = RNG(seed: 2)
        let x = rng.gaussianArray(batch * input.size)
        x.withUnsafeBufferPointer { net.forward($0.baseAddress!, batch: batch, tape: tape, mode: .train, rng: RNGBox(RNG(seed: 2))) }
        let u = rng.gaussianArray(batch * net.classes)
        let g = FloatBuffer(count: net.params.count)
        u.withUnsafeBufferPointer { net.backward(tape: tape, dlogits: $0.baseAddress!, grads: g.pointer) }
        let j = FloatBuffer(count: batch * net.classes)
        net.params.array.withUnsafeBufferPointer { net.jvp(tape: tape, direction: $0.baseAddress!, out: j.pointer) }
        held.append(tape.buffers.slotBytes)
        XCTAssertEqual(held.last, (0..<(held.last?.count ?? 0)).map { 4 * (sizes[$0] ?? 0) }, "\(spec): pool slots")
      }
      let tu = unfused.makeTape(batch: batch), tf = fused.makeTape(batch: batch)
      let saved = fusedPairs(fused.root, tf.root, batch: batch)
      XCTAssertFalse(saved.isEmpty, spec)
      XCTAssertTrue(fusedPairs(unfused.root, tu.root, batch: batch).isEmpty, spec)
      XCTAssertEqual(fused.activationBytes(tf), unfused.activationBytes(tu) - 4 * saved.reduce(0, +), spec)
      XCTAssertEqual(tf.ownedActivationBytes, fused.activationBytes(tf), spec)
      XCTAssertLessThan(tf.bytes, tu.bytes, spec)
      for (slot, size) in poolSizes[1] {
        XCTAssertLessThanOrEqual(size, poolSizes[0][slot] ?? 0, "\(spec): pool slot \(slot) grew")
      }
      XCTAssertLessThan(
        tf.bytes + held[1].reduce(0, +), tu.bytes + held[0].reduce(0, +), "\(spec): tape and pool together")
    }
  }

  /// MW-Net's and GDW's low-memory meta tape over a fused train tape: it requests no batch-norm
  /// output, borrows only dead buffers, and the two tapes together own no more activation memory
  /// than the separate layers' two tapes. Its passes equal a meta tape of its own, and leave every
  /// later pass over the train tape unchanged.
  func testLowMemoryOverlayOfFusedTapesOwnsNoMoreAndKeepsTheTrainPasses() throws {
    let cases: [(String, Layout)] = [
      ("resnet(classes=3,n=1)", .image(c: 3, h: 8, w: 8)),
      ("wrn(classes=3,depth=10,widen=1)", .image(c: 3, h: 8, w: 8)),
      ("linear(out=12);batchnorm;relu;linear(out=4)", .flat(7)),
      ("conv(out=4,k=3,p=1);residual{conv(out=4,k=3,p=1);batchnorm;relu | conv(out=4,k=1);batchnorm;relu};gap;linear(out=3)",
       .image(c: 2, h: 6, w: 6)),
    ]
    for (spec, input) in cases {
      var totals: [Int] = []
      for fused in [false, true] {
        let net = try Network(try SpecParser.parse(spec, input: input), seed: 1)
        setFusion(net.root, fused)
        let (n, m) = (6, 4)
        var rng = RNG(seed: 5)
        let x = rng.gaussianArray(n * input.size), xm = rng.gaussianArray(m * input.size)
        let u = rng.gaussianArray(n * net.classes), um = rng.gaussianArray(m * net.classes)
        let v = rng.gaussianArray(net.params.count)
        func passes(_ tape: NetworkTape, _ dl: [Float]) -> [[Float]] {
          let g = FloatBuffer(count: net.params.count)
          dl.withUnsafeBufferPointer { net.backward(tape: tape, dlogits: $0.baseAddress!, grads: g.pointer) }
          let j = FloatBuffer(count: tape.batch * net.classes)
          v.withUnsafeBufferPointer { net.jvp(tape: tape, direction: $0.baseAddress!, out: j.pointer) }
          return [tape.logits.array, g.array, j.array]
        }
        func forward(_ tape: NetworkTape, _ xs: [Float], _ b: Int) {
          xs.withUnsafeBufferPointer { net.forward($0.baseAddress!, batch: b, tape: tape, mode: .virtualTrain, rng: RNGBox(RNG(seed: 2))) }
        }
        let train = net.makeTape(batch: n)
        forward(train, x, n)
        let trainBefore = passes(train, u)
        let own = net.makeTape(batch: m, sharing: train)
        forward(own, xm, m)
        let metaOwn = passes(own, um)
        let meta = net.makeTape(batch: m, overlaying: train)
        forward(train, x, n)
        forward(meta, xm, m)
        XCTAssertEqual(passes(meta, um), metaOwn, "\(spec) fused \(fused): overlaid meta passes")
        XCTAssertEqual(passes(train, u), trainBefore, "\(spec) fused \(fused): train passes after the meta pass")
        XCTAssertEqual(fusedPairs(net.root, meta.root, batch: m).isEmpty, !fused, spec)
        var dead: [FloatBuffer] = []
        deadActivations(of: net.root, train.root, into: &dead)
        XCTAssertTrue(dead.allSatisfy { $0.count > 0 }, "\(spec): an unstored buffer listed as dead")
        let deadIDs = Set(dead.map { ObjectIdentifier($0) })
        XCTAssertTrue(meta.borrowed.allSatisfy { deadIDs.contains(ObjectIdentifier($0)) }, "\(spec): borrowed a live buffer")
        totals.append(net.activationBytes(train) + meta.ownedActivationBytes)
      }
      XCTAssertLessThanOrEqual(totals[1], totals[0], "\(spec): fused train + meta activation bytes")
    }
  }
}
