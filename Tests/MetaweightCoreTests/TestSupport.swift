import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

// Shared helpers for the layer, loss, network and kernel tests: seeded random data, layout
// transposes written independently of the library, vector comparisons, and `LayerHarness`, which
// runs one layer's forward / backward / tangent passes on plain arrays so that central finite
// differences, analytic gradients and JVPs can be compared on one scalar loss L = Σ r·y.

// MARK: - Random data

extension RNG {
  /// `count` samples of N(0, scale²).
  mutating func gaussianArray(_ count: Int, scale: Float = 1) -> [Float] {
    (0..<count).map { _ in normal() * scale }
  }

  /// `count` samples of U(lo, hi).
  mutating func uniformArray(_ count: Int, _ lo: Float, _ hi: Float) -> [Float] {
    (0..<count).map { _ in lo + (hi - lo) * uniform() }
  }

  /// `count` values with |v| ≥ `margin`, so a ReLU kink is never within a finite-difference step.
  mutating func awayFromZeroArray(_ count: Int, margin: Float = 0.2) -> [Float] {
    (0..<count).map { _ in
      let v = normal()
      return v >= 0 ? v + margin : v - margin
    }
  }

  /// `count` distinct values spaced `gap` apart in random order (no max-pool ties).
  mutating func distinctArray(_ count: Int, gap: Float = 0.05) -> [Float] {
    let p = permutation(count)
    let mid = Float(count) * gap / 2
    return p.map { Float($0) * gap - mid }
  }
}

// MARK: - Vector arithmetic in double precision, and layouts

/// Vector helpers (namespaced so they cannot clash with other test files' helpers).
enum Vec {
  static func dot(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "dot: \(a.count) vs \(b.count)")
    var s: Double = 0
    for i in 0..<a.count { s += Double(a[i]) * Double(b[i]) }
    return s
  }

  static func dot(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "dot: \(a.count) vs \(b.count)")
    var s: Double = 0
    for i in 0..<a.count { s += a[i] * b[i] }
    return s
  }

  static func norm(_ a: [Double]) -> Double { Vec.dot(a, a).squareRoot() }
  static func norm(_ a: [Float]) -> Double { Vec.dot(a, a).squareRoot() }

  static func doubles(_ a: [Float]) -> [Double] { a.map(Double.init) }

  /// a + t·b.
  static func axpy(_ a: [Float], _ t: Float, _ b: [Float]) -> [Float] {
    precondition(a.count == b.count, "axpy: \(a.count) vs \(b.count)")
    return (0..<a.count).map { a[$0] + t * b[$0] }
  }

  /// ‖a − b‖ / max(‖a‖, ‖b‖, floor): one number for how far two vectors disagree.
  static func relativeError(_ a: [Double], _ b: [Double], floor: Double = 1e-12) -> Double {
    precondition(a.count == b.count, "relativeError: \(a.count) vs \(b.count)")
    var d: Double = 0
    for i in 0..<a.count { d += (a[i] - b[i]) * (a[i] - b[i]) }
    return d.squareRoot() / max(Vec.norm(a), Vec.norm(b), floor)
  }

  /// [N, C, HW] → [C, N, HW].
  static func toChannelMajor(_ x: [Float], n: Int, c: Int, hw: Int) -> [Float] {
    var y = [Float](repeating: 0, count: x.count)
    for b in 0..<n { for ch in 0..<c { for i in 0..<hw { y[(ch * n + b) * hw + i] = x[(b * c + ch) * hw + i] } } }
    return y
  }

  /// [C, N, HW] → [N, C, HW].
  static func toBatchMajor(_ x: [Float], n: Int, c: Int, hw: Int) -> [Float] {
    var y = [Float](repeating: 0, count: x.count)
    for b in 0..<n { for ch in 0..<c { for i in 0..<hw { y[(b * c + ch) * hw + i] = x[(ch * n + b) * hw + i] } } }
    return y
  }
}

// MARK: - Assertions

/// Assertion helpers.
enum Check {
  /// Asserts that `actual` matches `expected` to a norm-relative tolerance, and that the vectors
  /// are not trivially zero (a check of 0 against 0 proves nothing).
  static func vectorsClose(
    _ actual: [Double], _ expected: [Double], tolerance: Double, _ what: String,
    allowZero: Bool = false, file: StaticString = #filePath, line: UInt = #line
  ) {
    XCTAssertEqual(actual.count, expected.count, "\(what): length", file: file, line: line)
    guard actual.count == expected.count else { return }
    XCTAssertTrue(actual.allSatisfy { $0.isFinite }, "\(what): non-finite analytic values", file: file, line: line)
    XCTAssertTrue(expected.allSatisfy { $0.isFinite }, "\(what): non-finite reference values", file: file, line: line)
    if !allowZero {
      XCTAssertGreaterThan(Vec.norm(expected), 1e-8, "\(what): the reference is zero, the check is vacuous", file: file, line: line)
    }
    let err = Vec.relativeError(actual, expected)
    XCTAssertLessThanOrEqual(err, tolerance, "\(what): relative error \(err)", file: file, line: line)
  }

  /// Asserts elementwise |a − b| ≤ atol + rtol·|b|.
  static func elementsClose(
    _ actual: [Float], _ expected: [Float], rtol: Float = 1e-5, atol: Float = 1e-5, _ what: String,
    file: StaticString = #filePath, line: UInt = #line
  ) {
    XCTAssertEqual(actual.count, expected.count, "\(what): length", file: file, line: line)
    guard actual.count == expected.count else { return }
    var worst = 0
    var bad = 0
    for i in 0..<actual.count {
      let tol = atol + rtol * abs(expected[i])
      if !(abs(actual[i] - expected[i]) <= tol) {
        if bad == 0 { worst = i }
        bad += 1
      }
    }
    XCTAssertEqual(
      bad, 0,
      "\(what): \(bad) of \(actual.count) elements differ; first at \(worst): \(bad > 0 ? actual[worst] : 0) vs \(bad > 0 ? expected[worst] : 0)",
      file: file, line: line)
  }

  /// Asserts that `body` throws `MetaweightError.invalidArgument`.
  static func invalidArgument<T>(
    _ what: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T
  ) {
    do {
      _ = try body()
      XCTFail("\(what): expected MetaweightError.invalidArgument, nothing was thrown", file: file, line: line)
    } catch let e as MetaweightError {
      guard case .invalidArgument(let message) = e else {
        XCTFail("\(what): expected invalidArgument, got \(e)", file: file, line: line)
        return
      }
      XCTAssertFalse(message.isEmpty, "\(what): empty error message", file: file, line: line)
    } catch {
      XCTFail("\(what): expected MetaweightError.invalidArgument, got \(error)", file: file, line: line)
    }
  }
}

// MARK: - Running a single layer on arrays

/// Every buffer of one forward pass, kept alive for the matching backward and tangent passes.
final class LayerPass {
  let params: FloatBuffer
  let state: FloatBuffer
  let x: FloatBuffer
  let y: FloatBuffer
  let tape: LayerTape
  let scratch = Scratch()
  init(params: FloatBuffer, state: FloatBuffer, x: FloatBuffer, y: FloatBuffer, tape: LayerTape) {
    self.params = params
    self.state = state
    self.x = x
    self.y = y
    self.tape = tape
  }
  var output: [Float] { y.array }
}

/// Drives one layer (possibly composite) on small random data.
///
/// Parameters are initialised with the layer's own initialisers and then perturbed (so batch-norm
/// γ, β and biases are not trivial); running statistics are random (mean ~ N(0, 0.3²), variance
/// in [0.5, 1.5]). Every forward pass starts from the same state and the same dropout generator,
/// so the layer is a deterministic function of (θ, x) and finite differences are meaningful.
final class LayerHarness {
  let layer: Layer
  let batch: Int
  let mode: Mode
  let dropoutSeed: UInt64
  var params: [Float]
  var state: [Float]
  var x: [Float]
  var paramCount: Int { params.count }
  var inputCount: Int { x.count }
  var outputCount: Int { batch * layer.outputLayout.size }

  init(
    _ layer: Layer, batch: Int, mode: Mode = .train, seed: UInt64 = 7, dropoutSeed: UInt64 = 11,
    input: ((inout RNG, Int) -> [Float])? = nil
  ) {
    self.layer = layer
    self.batch = batch
    self.mode = mode
    self.dropoutSeed = dropoutSeed
    var p = 0
    var s = 0
    layer.assignOffsets(param: &p, state: &s)
    var rng = RNG(seed: seed)
    var params = [Float](repeating: 0, count: p)
    var state = [Float](repeating: 0, count: s)
    func walk(_ l: Layer) {
      var o = l.paramOffset
      for spec in l.parameterSpecs {
        params.withUnsafeMutableBufferPointer { spec.initializer.fill($0.baseAddress! + o, count: spec.count, rng: &rng) }
        for i in o..<(o + spec.count) { params[i] += 0.2 * rng.normal() }
        o += spec.count
      }
      var so = l.stateOffset
      for spec in l.stateSpecs {
        for i in so..<(so + spec.count) {
          state[i] = spec.name.contains("var") ? 0.5 + rng.uniform() : 0.3 * rng.normal()
        }
        so += spec.count
      }
      for c in l.children { walk(c) }
    }
    walk(layer)
    self.params = params
    self.state = state
    let count = batch * layer.inputLayout.size
    x = input.map { $0(&rng, count) } ?? rng.gaussianArray(count)
  }

  private func context(_ pass: LayerPass) -> PassContext {
    PassContext(
      batch: batch, params: UnsafePointer(pass.params.pointer), state: pass.state.pointer, mode: mode,
      rng: RNGBox(RNG(seed: dropoutSeed)), scratch: pass.scratch)
  }

  /// Forward pass at (θ, x) (defaults: the harness's own).
  func forward(params p: [Float]? = nil, x xin: [Float]? = nil) -> LayerPass {
    let pass = LayerPass(
      params: FloatBuffer(p ?? params), state: FloatBuffer(state), x: FloatBuffer(xin ?? x),
      y: FloatBuffer(count: outputCount), tape: layer.makeTape(batch: batch))
    pass.y.fill(.nan)
    var ctx = context(pass)
    layer.forward(UnsafePointer(pass.x.pointer), pass.y.pointer, &ctx, pass.tape)
    return pass
  }

  /// Output at (θ, x).
  func output(params p: [Float]? = nil, x xin: [Float]? = nil) -> [Float] { forward(params: p, x: xin).output }

  /// (∂L/∂θ, ∂L/∂x) for L = Σ dy·y at the point of `pass`. The buffers are pre-filled with NaN,
  /// so anything `backward` fails to overwrite shows up.
  func backward(_ pass: LayerPass, dy: [Float]) -> (params: [Float], input: [Float]) {
    let grads = FloatBuffer(count: paramCount)
    grads.fill(.nan)
    let dx = FloatBuffer(count: inputCount)
    dx.fill(.nan)
    let dyb = FloatBuffer(dy)
    var ctx = context(pass)
    ctx.grads = grads.pointer
    layer.backward(
      UnsafePointer(pass.x.pointer), UnsafePointer(pass.y.pointer), UnsafePointer(dyb.pointer), dx.pointer,
      &ctx, pass.tape)
    return (grads.array, dx.array)
  }

  /// Forward-mode derivative of y at the point of `pass` along (tθ, tx) (nil = zero).
  func tangent(_ pass: LayerPass, params tp: [Float]?, input tx: [Float]?) -> [Float] {
    let tpb = tp.map { FloatBuffer($0) }
    let txb = tx.map { FloatBuffer($0) }
    let ty = FloatBuffer(count: outputCount)
    ty.fill(.nan)
    var ctx = context(pass)
    ctx.paramTangent = tpb.map { UnsafePointer($0.pointer) }
    layer.tangent(
      UnsafePointer(pass.x.pointer), UnsafePointer(pass.y.pointer), txb.map { UnsafePointer($0.pointer) }, ty.pointer,
      &ctx, pass.tape)
    return withExtendedLifetime((tpb, txb)) { ty.array }
  }

  // MARK: Checks

  /// The kink pattern (ReLU signs, max-pool arg-maxes) of a recorded pass.
  func pattern(_ pass: LayerPass) -> [Int32] {
    KinkPattern.collect(
      layer, input: UnsafePointer(pass.x.pointer), output: UnsafePointer(pass.y.pointer), tape: pass.tape, batch: batch)
  }

  /// Central difference of f along a path, at the first step of `FiniteDifference.steps(from:)`
  /// whose two ends keep the centre's kink pattern (so no ReLU or max-pool switch lies between);
  /// nil when every step crosses one (the point sits on a kink).
  private func kinkFreeDifference(
    from h: Float, base: [Int32], _ at: (Float) -> LayerPass, _ f: (LayerPass) -> [Double]
  ) -> (values: [Double], step: Double)? {
    for step in FiniteDifference.steps(from: h) {
      let plus = at(step), minus = at(-step)
      guard pattern(plus) == base, pattern(minus) == base else { continue }
      let fp = f(plus), fm = f(minus)
      return ((0..<fp.count).map { (fp[$0] - fm[$0]) / (2 * Double(step)) }, Double(step))
    }
    return nil
  }

  /// The kink-free difference from `h`, and the same from half the step it used (for the
  /// Richardson truncation estimate of `FiniteDifference.elementBounds`).
  private func kinkFreePair(
    from h: Float, base: [Int32], _ at: (Float) -> LayerPass, _ f: (LayerPass) -> [Double]
  ) -> (coarse: [Double], fine: [Double], step: Double, fineStep: Double)? {
    guard let c = kinkFreeDifference(from: h, base: base, at, f),
      let d = kinkFreeDifference(from: Float(c.step / 2), base: base, at, f)
    else { return nil }
    return (c.values, d.values, c.step, d.step)
  }

  /// Longest float32 accumulation in this layer's forward pass (see `FiniteDifference.accumulation`).
  var accumulation: Int { FiniteDifference.accumulation(layer, batch: batch) }

  /// Largest |value| among the parameters and inputs: the scale of the rounding of θ ± s·v.
  var pointScale: Double { Double((params + x).map { abs($0) }.max() ?? 0) }

  /// Reverse mode vs central differences of L = Σ r·y, coordinate by coordinate, for every
  /// parameter and every input element (or `maxCoordinates` of each, chosen at random).
  /// Coordinates whose every step crosses a kink are skipped; at most a tenth may be.
  ///
  /// The comparison's tolerance is the derived error bound of the differences
  /// (`FiniteDifference.elementBound`: Richardson truncation from the step and half of it, float32
  /// rounding of L over the step, rounding of the perturbed point and of the analytic side), capped
  /// at `tolerance`. The cap only binds for blocks with batch norm and ReLUs, whose kink-free steps
  /// are ≤ 1e-3: there the rounding part of the bound (a 3σ model) comes to 1–4% while the measured
  /// errors stay below 0.1% under every OpenBLAS kernel family CI runs, so the cap keeps those
  /// checks as strict as they were.
  func checkGradients(
    step h: Float, tolerance: Double, maxCoordinates: Int? = nil, seed: UInt64 = 99,
    file: StaticString = #filePath, line: UInt = #line
  ) {
    var rng = RNG(seed: seed)
    let r = rng.gaussianArray(outputCount)
    let pass = forward()
    XCTAssertTrue(pass.output.allSatisfy { $0.isFinite }, "forward output is not finite", file: file, line: line)
    let base = pattern(pass)
    let (gp, gx) = backward(pass, dy: r)
    XCTAssertTrue(gp.allSatisfy { $0.isFinite }, "\(layer.kind): backward left parameter gradients unwritten", file: file, line: line)
    XCTAssertTrue(gx.allSatisfy { $0.isFinite }, "\(layer.kind): backward left dx unwritten", file: file, line: line)
    func pick(_ n: Int) -> [Int] {
      guard let m = maxCoordinates, m < n else { return Array(0..<n) }
      return Array(rng.permutation(n).prefix(m)).sorted()
    }
    // L = Σ r·y is summed in double from float32 outputs that each carry the rounding of the
    // layer's accumulation: δL ≈ roundingError(‖r∘y‖₂) (independent errors add in quadrature).
    let ry = zip(r, pass.output).map { Double($0) * Double($1) }
    let valueRounding = FiniteDifference.roundingError(scale: Vec.norm(ry), accumulation: accumulation)
    func compare(_ what: String, _ count: Int, _ analytic: [Float], _ at: (Int, Float) -> LayerPass) {
      var a: [Double] = [], fd: [Double] = [], fine: [Double] = [], steps: [(Double, Double)] = []
      let idx = pick(count)
      for i in idx {
        guard let d = kinkFreePair(from: h, base: base, { at(i, $0) }, { [Vec.dot(r, $0.output)] }) else { continue }
        a.append(Double(analytic[i]))
        fd.append(d.coarse[0])
        fine.append(d.fine[0])
        steps.append((d.step, d.fineStep))
      }
      XCTAssertLessThanOrEqual(
        idx.count - a.count, idx.count / 10, "\(layer.kind): too many coordinates on kinks for \(what)", file: file, line: line)
      let bounds = (0..<a.count).map { k in
        FiniteDifference.elementBound(
          coarse: fd[k], fine: fine[k], step: steps[k].0, fineStep: steps[k].1, valueRounding: valueRounding,
          pointScale: pointScale, analytic: a, accumulation: accumulation + batch * layer.outputLayout.size)
      }
      let derived = FiniteDifference.relativeTolerance(bounds: bounds, a, fd)
      Check.vectorsClose(
        a, fd, tolerance: min(derived, tolerance), "\(layer.kind): \(what) vs finite differences (derived bound \(derived))",
        file: file, line: line)
    }
    if paramCount > 0 {
      compare("dL/dθ", paramCount, gp) { i, s in
        var p = self.params
        p[i] += s
        return self.forward(params: p)
      }
    }
    compare("dL/dx", inputCount, gx) { i, s in
      var xv = self.x
      xv[i] += s
      return self.forward(x: xv)
    }
  }

  /// Kink-free central difference of y along (tθ, tx), starting from step `h`, and the same from
  /// half the step it used.
  func centralDifference(
    params tp: [Float]?, input tx: [Float]?, step h: Float
  ) -> (coarse: [Double], fine: [Double], step: Double, fineStep: Double)? {
    let base = pattern(forward())
    return kinkFreePair(from: h, base: base, { s in
      self.forward(
        params: tp.map { Vec.axpy(self.params, s, $0) } ?? self.params, x: tx.map { Vec.axpy(self.x, s, $0) } ?? self.x)
    }, { Vec.doubles($0.output) })
  }

  /// Forward mode vs central differences along a random parameter direction, a random input
  /// direction and both at once; a zero direction must give a zero tangent. The tolerance is the
  /// derived bound capped at `tolerance`, as in `checkGradients`.
  func checkTangent(
    step h: Float, tolerance: Double, seed: UInt64 = 123, file: StaticString = #filePath, line: UInt = #line
  ) {
    var rng = RNG(seed: seed)
    let tp = rng.gaussianArray(paramCount)
    let tx = rng.gaussianArray(inputCount)
    let pass = forward()
    func check(_ p: [Float]?, _ x: [Float]?, _ what: String) {
      let jvp = tangent(pass, params: p, input: x)
      guard let d = centralDifference(params: p, input: x, step: h) else {
        XCTFail("\(layer.kind): every step crosses a kink along \(what); change the seed", file: file, line: line)
        return
      }
      // Each output carries the rounding of the layer's accumulation at the outputs' scale.
      let y = pass.output
      let valueRounding = FiniteDifference.roundingError(
        scale: Double(y.map { abs($0) }.max() ?? 0), accumulation: accumulation)
      let a = Vec.doubles(jvp)
      let bounds = (0..<a.count).map { k in
        FiniteDifference.elementBound(
          coarse: d.coarse[k], fine: d.fine[k], step: d.step, fineStep: d.fineStep, valueRounding: valueRounding,
          pointScale: pointScale, analytic: a, accumulation: accumulation)
      }
      let derived = FiniteDifference.relativeTolerance(bounds: bounds, a, d.coarse)
      Check.vectorsClose(
        a, d.coarse, tolerance: min(derived, tolerance), "\(layer.kind): JVP along \(what) (derived bound \(derived))",
        file: file, line: line)
    }
    if paramCount > 0 {
      check(tp, nil, "a parameter direction")
      check(tp, tx, "a joint direction")
    }
    check(nil, tx, "an input direction")
    let zero = tangent(pass, params: nil, input: nil)
    XCTAssertTrue(zero.allSatisfy { $0 == 0 }, "\(layer.kind): a zero direction must give a zero tangent", file: file, line: line)
  }

  /// ⟨u, J·v⟩ = ⟨Jᵀ·u, v⟩ with J the Jacobian of y in (θ, x), J·v from `tangent` and Jᵀ·u from
  /// `backward`, for random u and v. Both sides are exact, so the tolerance is at float rounding.
  func checkAdjoint(
    tolerance: Double = 1e-4, seed: UInt64 = 321, file: StaticString = #filePath, line: UInt = #line
  ) {
    var rng = RNG(seed: seed)
    let u = rng.gaussianArray(outputCount)
    let vp = rng.gaussianArray(paramCount)
    let vx = rng.gaussianArray(inputCount)
    let pass = forward()
    let jv = tangent(pass, params: paramCount > 0 ? vp : nil, input: vx)
    let (gp, gx) = backward(pass, dy: u)
    let lhs = Vec.dot(u, jv)
    let rhs = Vec.dot(gp, vp) + Vec.dot(gx, vx)
    let scale = Vec.norm(u) * Vec.norm(jv)
    XCTAssertGreaterThan(scale, 0, "\(layer.kind): J·v is zero, the check is vacuous", file: file, line: line)
    XCTAssertLessThanOrEqual(
      abs(lhs - rhs), tolerance * max(scale, 1e-12),
      "\(layer.kind): ⟨u, J·v⟩ = \(lhs) but ⟨Jᵀ·u, v⟩ = \(rhs)", file: file, line: line)
  }
}

// MARK: - Kinks

/// Step sizes for central differences through piecewise-smooth functions.
enum FiniteDifference {
  /// `h`, then successively smaller steps to try when a step crosses a kink.
  static func steps(from h: Float) -> [Float] { (0..<6).map { h / Float(1 << (2 * $0)) } }

  /// Unit roundoff of float32, u = 2⁻²⁴.
  static let unitRoundoff = 0x1p-24

  /// Rounding error of a float32 value built from `accumulation` chained multiply-adds of terms
  /// of size ≲ `scale`. Each rounding adds at most u·|partial result|; treated as independent
  /// (Higham, *Accuracy and Stability of Numerical Algorithms*, §2.8 and §3.1) their sum has a
  /// standard deviation of about √n·u·scale, and we take three of them. This is the part of the
  /// error that depends on the order of the sums, i.e. on which OpenBLAS kernels run (the worst
  /// case n·u·scale is orders of magnitude looser and would make every check vacuous).
  static func roundingError(scale: Double, accumulation n: Int) -> Double {
    3 * Double(max(n, 1)).squareRoot() * unitRoundoff * scale
  }

  /// Longest chain of float32 additions from a layer's input to its output, for a batch of
  /// `batch`: the fan-in Cin·k·k of a convolution, the in-features of a linear layer, the
  /// batch·H·W values a batch norm's statistics sum, the window of a pooling layer; summed along
  /// a sequence, the longer branch of a residual block.
  static func accumulation(_ layer: Layer, batch: Int = 1) -> Int {
    if let c = layer as? Conv2D { return c.inChannels * c.kernel * c.kernel }
    if let l = layer as? Linear { return l.inFeatures }
    if let b = layer as? BatchNorm { return batch * b.layout.size / max(b.channels, 1) }
    if let s = layer as? Sequential { return s.layers.map { accumulation($0, batch: batch) }.reduce(0, +) }
    if let r = layer as? Residual {
      return max(accumulation(r.body, batch: batch), r.shortcut.map { accumulation($0, batch: batch) } ?? 0)
    }
    if !layer.children.isEmpty { return layer.children.map { accumulation($0, batch: batch) }.reduce(0, +) }
    return max(1, layer.inputLayout.size / max(layer.outputLayout.size, 1))
  }

  /// Error bound of one element of a finite-difference vector `coarse` = D(s) against the exact
  /// derivative, with `fine` = D(s′) the same at a smaller step s′:
  ///
  /// - truncation, by Richardson: D(s) = f′ + c·s² + O(s⁴), so c·s² ≈ (D(s) − D(s′))·s²/(s² − s′²);
  ///   twice that, since the estimate itself carries rounding;
  /// - rounding of f: each of f(±s) off by δf gives δf/s;
  /// - rounding of the point: θ ± s·v is rounded to float32, moving each end by up to
  ///   u·|θ| (`pointScale`), a relative error of 3u·|θ|/s in the step (three σ again);
  /// - rounding of the analytic side: a float32 accumulation of the analytic vector's scale.
  static func elementBound(
    coarse: Double, fine: Double, step s: Double, fineStep sf: Double, valueRounding df: Double, pointScale: Double,
    analytic: [Double], accumulation n: Int
  ) -> Double {
    let truncation = sf < s ? 2 * abs(coarse - fine) * s * s / (s * s - sf * sf) : abs(coarse - fine)
    let point = 3 * unitRoundoff * pointScale / s * abs(coarse)
    let analyticScale = analytic.map { abs($0) }.max() ?? 0
    return truncation + df / s + point + roundingError(scale: analyticScale, accumulation: n)
  }

  /// The norm-relative tolerance that `Check.vectorsClose` compares with: the norm of the element
  /// bounds over the larger of the two vectors' norms.
  static func relativeTolerance(bounds: [Double], _ a: [Double], _ b: [Double]) -> Double {
    Vec.norm(bounds) / max(Vec.norm(a), Vec.norm(b), 1e-300)
  }

  /// Error bound of a finite-difference derivative `coarse` = D(s) (central, or the second-order
  /// one-sided difference), given the same difference `fine` = D(s′) at a smaller step s′ < s and
  /// the rounding error `valueRounding` = δf of one evaluation of f:
  ///
  /// - truncation: D(s) = f′ + c·s² + O(s⁴) for both differences, so c·s² is estimated from the two
  ///   steps by Richardson, (D(s) − D(s′))·s²/(s² − s′²); twice that, since the estimate itself
  ///   carries rounding;
  /// - rounding: f(±s) each off by δf give δf/s for the central difference, and
  ///   (3 + 4 + 1)·δf/(2s) = 4·δf/s for (−3f(0) + 4f(s) − f(2s))/2s.
  static func errorBound(coarse: Estimate, fine: Estimate, valueRounding df: Double) -> Double {
    let s = coarse.step, sf = fine.step
    let truncation = sf < s ? 2 * abs(coarse.value - fine.value) * s * s / (s * s - sf * sf) : abs(coarse.value - fine.value)
    return truncation + (coarse.central ? 1 : 4) * df / s
  }

  /// A finite-difference derivative with the step it used and its kind.
  struct Estimate {
    var value: Double
    var step: Double
    var central: Bool
  }
}

/// The discrete choices a forward pass made: the sign of every ReLU input and the arg-max of
/// every max-pool window, read from the layer tapes. Within one pattern the function is smooth,
/// so a central difference whose two ends share the centre's pattern crosses no kink, and
/// finite differences stay meaningful for ReLU networks with thousands of units.
///
/// A ReLU's sign is read from its output ([y > 0] = [x > 0] exactly): a batch norm fused with the
/// ReLU after it stores no output (`Sequential.Tape.stores`), so the ReLU's input is not kept.
enum KinkPattern {
  static func collect(
    _ layer: Layer, input: UnsafePointer<Float>, output: UnsafePointer<Float>, tape: LayerTape, batch: Int
  ) -> [Int32] {
    var out: [Int32] = []
    walk(layer, input, output, tape, batch, &out)
    return out
  }

  private static func walk(
    _ layer: Layer, _ input: UnsafePointer<Float>, _ output: UnsafePointer<Float>, _ tape: LayerTape, _ batch: Int,
    _ out: inout [Int32]
  ) {
    if let s = layer as? Sequential, let t = tape as? Sequential.Tape {
      for (i, l) in s.layers.enumerated() {
        let x = i == 0 ? input : UnsafePointer(t.acts[i - 1].pointer)
        let y = i == s.layers.count - 1 ? output : UnsafePointer(t.acts[i].pointer)
        walk(l, x, y, t.tapes[i], batch, &out)
      }
    } else if let r = layer as? Residual, let t = tape as? Residual.Tape {
      walk(r.body, input, UnsafePointer(t.bodyOut.pointer), t.body, batch, &out)
      if let s = r.shortcut, let st = t.short, let so = t.shortOut { walk(s, input, UnsafePointer(so.pointer), st, batch, &out) }
    } else if let relu = layer as? ReLU {
      for i in 0..<(batch * relu.layout.size) { out.append(output[i] > 0 ? 1 : 0) }
    } else if let mp = layer as? MaxPool2D,
      case .image(let c, let h, let w) = mp.inputLayout, case .image(_, let oh, let ow) = mp.outputLayout
    {
      let k = mp.kernel, s = mp.stride
      for p in 0..<(c * batch) {
        for i in 0..<oh {
          for j in 0..<ow {
            var best = -Float.infinity, bi: Int32 = -1
            for a in 0..<k {
              for b in 0..<k {
                let idx = (i * s + a) * w + j * s + b
                if input[p * h * w + idx] > best { best = input[p * h * w + idx]; bi = Int32(idx) }
              }
            }
            out.append(bi)
          }
        }
      }
    }
  }
}

// MARK: - Networks

/// A network with a fixed random batch, for network-level gradient and JVP checks.
final class NetworkHarness {
  let net: Network
  let batch: Int
  let mode: Mode
  let input: [Float]
  let labels: [Int32]
  let tape: NetworkTape
  /// Seed of the initialisation, data and labels.
  let seed: UInt64

  init(_ root: Sequential, batch: Int, mode: Mode = .virtualTrain, seed: UInt64 = 5) throws {
    net = try Network(root, seed: seed)
    self.seed = seed
    self.batch = batch
    self.mode = mode
    var rng = RNG(seed: seed &+ 1)
    let network = net
    input = rng.gaussianArray(batch * network.inputLayout.size)
    labels = (0..<batch).map { _ in Int32(rng.int(below: network.classes)) }
    tape = net.makeTape(batch: batch)
    // Perturb the initialisation so batch-norm γ, β and biases are not at their trivial values.
    for i in 0..<net.params.count { net.params[i] += 0.05 * rng.normal() }
  }

  var params: [Float] { net.params.array }

  /// Logits at θ (or `p`); the tape then holds this pass.
  func logits(_ p: [Float]? = nil) -> [Float] {
    let pb = p.map { FloatBuffer($0) }
    input.withUnsafeBufferPointer { xin in
      net.forward(
        xin.baseAddress!, batch: batch, tape: tape, mode: mode, rng: RNGBox(RNG(seed: 3)),
        params: pb.map { UnsafePointer($0.pointer) })
    }
    return withExtendedLifetime(pb) { tape.logits.array }
  }

  /// The kink pattern of the pass in the tape.
  func pattern() -> [Int32] {
    KinkPattern.collect(
      net.root, input: tape.inputPointer, output: UnsafePointer(tape.logits.pointer), tape: tape.root, batch: batch)
  }

  /// Mean cross-entropy of `logits` (evaluated in double precision from the float logits, so
  /// differences of it carry only the logits' rounding) with the library's dlogits of the mean.
  func crossEntropy(_ z: [Float]) -> (loss: Double, dlogits: [Float]) {
    let c = net.classes
    var losses = [Float](repeating: 0, count: batch)
    var probs = [Float](repeating: 0, count: batch * c)
    var dl = [Float](repeating: 0, count: batch * c)
    let coef = [Float](repeating: 1 / Float(batch), count: batch)
    CrossEntropy.forward(logits: z, labels: labels, n: batch, c: c, losses: &losses, probs: &probs)
    CrossEntropy.backward(probs: probs, labels: labels, n: batch, c: c, coefficients: coef, dlogits: &dl)
    var total: Double = 0
    for i in 0..<batch {
      let row = (0..<c).map { Double(z[i * c + $0]) }
      let mx = row.max() ?? 0
      total += mx + log(row.reduce(0) { $0 + exp($1 - mx) }) - row[Int(labels[i])]
    }
    return (total / Double(batch), dl)
  }

  /// Mean cross-entropy at θ (or `p`), with the dlogits of the mean.
  func loss(_ p: [Float]? = nil) -> (loss: Double, dlogits: [Float]) { crossEntropy(logits(p)) }

  /// ∂(Σ u·logits)/∂θ at θ via `Network.backward` (u defaults to the mean cross-entropy's dlogits).
  func gradient(dlogits u: [Float]? = nil) -> [Float] {
    let dl: [Float]
    if let u = u {
      _ = logits()
      dl = u
    } else {
      dl = loss().dlogits
    }
    let g = FloatBuffer(count: net.params.count)
    g.fill(.nan)
    dl.withUnsafeBufferPointer { net.backward(tape: tape, dlogits: $0.baseAddress!, grads: g.pointer) }
    return g.array
  }

  /// `Network.jvp` of the logits at θ along `v`.
  func jvp(_ v: [Float]) -> [Float] {
    _ = logits()
    let out = FloatBuffer(count: batch * net.classes)
    out.fill(.nan)
    v.withUnsafeBufferPointer { net.jvp(tape: tape, direction: $0.baseAddress!, out: out.pointer) }
    return out.array
  }

  /// The derivative of f(logits at θ + t·v) at t = 0 by finite differences that cross no kink:
  /// for each step s from `h` down, the central difference when both θ ± s·v keep θ's kink
  /// pattern, otherwise the second-order one-sided difference (−3f(0) + 4f(±s) − f(±2s)) / ±2s on
  /// a side whose two points keep it (a unit right next to its kink blocks only one side).
  /// nil when every step crosses a kink on both sides.
  private func kinkFreeDifference(_ v: [Float], step h: Float, _ f: ([Float]) -> [Double]) -> [Double]? {
    kinkFreeEstimate(v, step: h, f)?.values
  }

  /// `kinkFreeDifference` with the step it used and whether it is central.
  private func kinkFreeEstimate(
    _ v: [Float], step h: Float, _ f: ([Float]) -> [Double]
  ) -> (values: [Double], step: Double, central: Bool)? {
    let p = params
    let f0 = f(logits())
    let base = pattern()
    func at(_ t: Float) -> [Double]? {
      let value = f(logits(Vec.axpy(p, t, v)))
      return pattern() == base ? value : nil
    }
    for s in FiniteDifference.steps(from: h) {
      let plus = at(s), minus = at(-s)
      if let fp = plus, let fm = minus {
        return ((0..<fp.count).map { (fp[$0] - fm[$0]) / (2 * Double(s)) }, Double(s), true)
      }
      for (sign, near) in [(Float(1), plus), (-1, minus)] {
        guard let f1 = near, let f2 = at(2 * sign * s) else { continue }
        return ((0..<f1.count).map { (-3 * f0[$0] + 4 * f1[$0] - f2[$0]) / (2 * Double(sign * s)) }, Double(s), false)
      }
    }
    return nil
  }

  /// Kink-free central difference of the logits along the parameter direction `v`.
  func logitsDifference(_ v: [Float], step h: Float) -> [Double]? {
    kinkFreeDifference(v, step: h) { Vec.doubles($0) }
  }

  /// Kink-free central difference of the mean cross-entropy along the parameter direction `v`.
  func lossDifference(_ v: [Float], step h: Float) -> Double? {
    kinkFreeDifference(v, step: h) { [self.crossEntropy($0).loss] }?.first
  }

  /// The kink-free difference of the mean cross-entropy along `v` starting from step `h`, and the
  /// same at half the step it used, for `FiniteDifference.errorBound`.
  func lossEstimates(_ v: [Float], step h: Float) -> (coarse: FiniteDifference.Estimate, fine: FiniteDifference.Estimate)? {
    let f: ([Float]) -> [Double] = { [self.crossEntropy($0).loss] }
    guard let c = kinkFreeEstimate(v, step: h, f), let d = kinkFreeEstimate(v, step: Float(c.step / 2), f) else { return nil }
    return (.init(value: c.values[0], step: c.step, central: c.central), .init(value: d.values[0], step: d.step, central: d.central))
  }

  /// The kink-free difference of the logits along `v` from step `h`, and the same from half the
  /// step it used, one estimate per logit.
  func logitsEstimates(
    _ v: [Float], step h: Float
  ) -> (coarse: [FiniteDifference.Estimate], fine: [FiniteDifference.Estimate])? {
    let f: ([Float]) -> [Double] = { Vec.doubles($0) }
    guard let c = kinkFreeEstimate(v, step: h, f), let d = kinkFreeEstimate(v, step: Float(c.step / 2), f) else { return nil }
    return (
      c.values.map { .init(value: $0, step: c.step, central: c.central) },
      d.values.map { .init(value: $0, step: d.step, central: d.central) }
    )
  }

  /// Longest float32 accumulation from the input to the logits.
  var accumulation: Int { FiniteDifference.accumulation(net.root, batch: batch) }

  /// Largest |θ|: the scale of the rounding of θ ± s·v.
  var pointScale: Double { Double(params.map { abs($0) }.max() ?? 0) }

  /// Rounding error δz of one float32 evaluation of the logits.
  func logitsRounding() -> Double {
    FiniteDifference.roundingError(scale: Double(logits().map { abs($0) }.max() ?? 0), accumulation: accumulation)
  }

  /// Error bound of one difference against the exact derivative: `FiniteDifference.errorBound`,
  /// plus the rounding of the perturbed point (3u·|θ|/s relative) and of the analytic side.
  func bound(
    _ coarse: FiniteDifference.Estimate, _ fine: FiniteDifference.Estimate, valueRounding: Double, analyticScale: Double
  ) -> Double {
    FiniteDifference.errorBound(coarse: coarse, fine: fine, valueRounding: valueRounding)
      + 3 * FiniteDifference.unitRoundoff * pointScale / coarse.step * abs(coarse.value)
      + FiniteDifference.roundingError(scale: analyticScale, accumulation: 2 * accumulation)
  }

  /// Rounding error δL of one float32 evaluation of the mean cross-entropy: the logits carry
  /// `FiniteDifference.roundingError` at the network's accumulation length and their own scale,
  /// and ‖∂L/∂z‖₁ = (1/B)·Σᵢ ‖pᵢ − yᵢ‖₁ ≤ 2 carries it into L.
  func lossRounding() -> Double {
    let z = logits()
    let scale = z.map { Double(abs($0)) }.max() ?? 0
    return 2 * FiniteDifference.roundingError(
      scale: scale, accumulation: FiniteDifference.accumulation(net.root, batch: batch))
  }
}
