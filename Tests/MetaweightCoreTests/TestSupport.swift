import XCTest

@testable import MetaweightCore

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

  /// Reverse mode vs central differences of L = Σ r·y, coordinate by coordinate, for every
  /// parameter and every input element (or `maxCoordinates` of each, chosen at random).
  func checkGradients(
    step h: Float, tolerance: Double, maxCoordinates: Int? = nil, seed: UInt64 = 99,
    file: StaticString = #filePath, line: UInt = #line
  ) {
    var rng = RNG(seed: seed)
    let r = rng.gaussianArray(outputCount)
    let pass = forward()
    XCTAssertTrue(pass.output.allSatisfy { $0.isFinite }, "forward output is not finite", file: file, line: line)
    let (gp, gx) = backward(pass, dy: r)
    func loss(_ p: [Float], _ xv: [Float]) -> Double { Vec.dot(r, output(params: p, x: xv)) }
    func pick(_ n: Int) -> [Int] {
      guard let m = maxCoordinates, m < n else { return Array(0..<n) }
      return Array(rng.permutation(n).prefix(m)).sorted()
    }
    if paramCount > 0 {
      let idx = pick(paramCount)
      var fd: [Double] = []
      for i in idx {
        var plus = params, minus = params
        plus[i] += h
        minus[i] -= h
        fd.append((loss(plus, x) - loss(minus, x)) / Double(plus[i] - minus[i]))
      }
      Check.vectorsClose(
        idx.map { Double(gp[$0]) }, fd, tolerance: tolerance, "\(layer.kind): dL/dθ vs finite differences",
        file: file, line: line)
      XCTAssertTrue(gp.allSatisfy { $0.isFinite }, "\(layer.kind): backward left parameter gradients unwritten", file: file, line: line)
    }
    let idx = pick(inputCount)
    var fd: [Double] = []
    for i in idx {
      var plus = x, minus = x
      plus[i] += h
      minus[i] -= h
      fd.append((loss(params, plus) - loss(params, minus)) / Double(plus[i] - minus[i]))
    }
    Check.vectorsClose(
      idx.map { Double(gx[$0]) }, fd, tolerance: tolerance, "\(layer.kind): dL/dx vs finite differences",
      file: file, line: line)
    XCTAssertTrue(gx.allSatisfy { $0.isFinite }, "\(layer.kind): backward left dx unwritten", file: file, line: line)
  }

  /// (y(θ + h·tθ, x + h·tx) − y(θ − h·tθ, x − h·tx)) / 2h.
  func centralDifference(params tp: [Float]?, input tx: [Float]?, step h: Float) -> [Double] {
    let pp = tp.map { Vec.axpy(params, h, $0) } ?? params
    let pm = tp.map { Vec.axpy(params, -h, $0) } ?? params
    let xp = tx.map { Vec.axpy(x, h, $0) } ?? x
    let xm = tx.map { Vec.axpy(x, -h, $0) } ?? x
    let yp = output(params: pp, x: xp)
    let ym = output(params: pm, x: xm)
    return (0..<outputCount).map { (Double(yp[$0]) - Double(ym[$0])) / (2 * Double(h)) }
  }

  /// Forward mode vs central differences along a random parameter direction, a random input
  /// direction and both at once; a zero direction must give a zero tangent.
  func checkTangent(
    step h: Float, tolerance: Double, seed: UInt64 = 123, file: StaticString = #filePath, line: UInt = #line
  ) {
    var rng = RNG(seed: seed)
    let tp = rng.gaussianArray(paramCount)
    let tx = rng.gaussianArray(inputCount)
    let pass = forward()
    if paramCount > 0 {
      let jvp = tangent(pass, params: tp, input: nil)
      Check.vectorsClose(
        Vec.doubles(jvp), centralDifference(params: tp, input: nil, step: h), tolerance: tolerance,
        "\(layer.kind): JVP along a parameter direction", file: file, line: line)
    }
    let jx = tangent(pass, params: nil, input: tx)
    Check.vectorsClose(
      Vec.doubles(jx), centralDifference(params: nil, input: tx, step: h), tolerance: tolerance,
      "\(layer.kind): JVP along an input direction", file: file, line: line)
    let both = tangent(pass, params: paramCount > 0 ? tp : nil, input: tx)
    Check.vectorsClose(
      Vec.doubles(both), centralDifference(params: paramCount > 0 ? tp : nil, input: tx, step: h),
      tolerance: tolerance, "\(layer.kind): JVP along a joint direction", file: file, line: line)
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

// MARK: - Networks

/// A network with a fixed random batch, for network-level gradient and JVP checks.
final class NetworkHarness {
  let net: Network
  let batch: Int
  let mode: Mode
  let input: [Float]
  let labels: [Int32]
  let tape: NetworkTape

  init(_ root: Sequential, batch: Int, mode: Mode = .virtualTrain, seed: UInt64 = 5) throws {
    net = try Network(root, seed: seed)
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

  /// Mean cross-entropy at θ (or `p`), with the dlogits of the mean.
  func loss(_ p: [Float]? = nil) -> (loss: Double, dlogits: [Float]) {
    let z = logits(p)
    let c = net.classes
    var losses = [Float](repeating: 0, count: batch)
    var probs = [Float](repeating: 0, count: batch * c)
    var dl = [Float](repeating: 0, count: batch * c)
    let coef = [Float](repeating: 1 / Float(batch), count: batch)
    CrossEntropy.forward(logits: z, labels: labels, n: batch, c: c, losses: &losses, probs: &probs)
    CrossEntropy.backward(probs: probs, labels: labels, n: batch, c: c, coefficients: coef, dlogits: &dl)
    return (losses.reduce(0) { $0 + Double($1) } / Double(batch), dl)
  }

  /// ∂(Σ u·logits)/∂θ at θ via `Network.backward` (a forward pass is run first).
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

  /// Central difference of the logits along `v`.
  func logitsDifference(_ v: [Float], step h: Float) -> [Double] {
    let p = params
    let plus = logits(Vec.axpy(p, h, v))
    let minus = logits(Vec.axpy(p, -h, v))
    return (0..<plus.count).map { (Double(plus[$0]) - Double(minus[$0])) / (2 * Double(h)) }
  }

  /// Central difference of the mean cross-entropy along `v`.
  func lossDifference(_ v: [Float], step h: Float) -> Double {
    let p = params
    return (loss(Vec.axpy(p, h, v)).loss - loss(Vec.axpy(p, -h, v)).loss) / (2 * Double(h))
  }
}
