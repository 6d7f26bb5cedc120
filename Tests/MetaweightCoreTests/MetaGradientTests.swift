// Meta-gradient tests: L2RW, MW-Net and GDW compute their meta-gradients with one forward-mode JVP
// (ALGORITHMS.md: ∂L_meta(θ̂)/∂ω_ic = −α (p_ic − y_ic) ⟨v, ∂z_ic/∂θ⟩). Every test here compares
// what the implementation computes against central finite differences of the meta loss through an
// explicitly formed virtual step θ̂ (per-example gradients / logit Jacobian rows assembled in Double),
// on a small MLP and on small convolutional networks with batch norm in training mode.
//
// Tolerances: the references are float64 paths. Their central differences are of functions
// evaluated in Double (rounding ~1e-16/h, negligible; truncation O(h²) at h ≤ 1e-2 on smooth
// meta losses), so what the tolerances absorb is the float32 rounding of the implementation under
// test (its Jacobian rows and logits come from float32 GEMMs), not the differences.
//
// Helpers are namespaced (MG…) and file-private so they cannot collide with other test files.
import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

// MARK: - Fixture

/// Architectures used: a plain MLP, an MLP with (flat) batch norm, a tiny conv net with batch norm,
/// and a one-block-per-stage CIFAR ResNet (residuals, option-A shortcuts, several BN layers).
private enum MGArch: CustomStringConvertible {
  case mlp, mlpBN, conv, resnet

  var description: String {
    switch self {
    case .mlp: return "mlp 6-8-3"
    case .mlpBN: return "mlp+bn 6-8-3"
    case .conv: return "conv+bn (2x5x5)"
    case .resnet: return "resnet8 (3x8x8)"
    }
  }

  func build() throws -> Sequential {
    switch self {
    case .mlp: return try Models.mlp(widths: [6, 8, 3])
    case .mlpBN: return try Models.mlp(widths: [6, 8, 3], batchNorm: true)
    case .conv:
      return try SpecParser.parse(
        "conv2d(out=3,k=3,p=1);batchnorm;relu;gap;linear(out=3)", input: .image(c: 2, h: 5, w: 5))
    case .resnet: return try Models.cifarResNet(input: .image(c: 3, h: 8, w: 8), classes: 3, blocksPerStage: 1)
    }
  }
}

private final class MGLabels {
  let count: Int
  let pointer: UnsafeMutablePointer<Int64>
  init(_ values: [Int64]) {
    count = values.count
    pointer = .allocate(capacity: max(values.count, 1))
    for (i, v) in values.enumerated() { pointer[i] = v }
  }
  deinit { pointer.deallocate() }
  var array: [Int64] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}

/// A network, its trainer, a noisy train batch (n) and a clean meta batch (m) labelled by a random
/// linear teacher, and an independent meta-loss evaluator.
private final class MGFixture {
  let arch: MGArch
  let network: Network
  let trainer: Trainer
  let n: Int
  let m: Int
  let x: FloatBuffer
  let y: MGLabels
  let xm: FloatBuffer
  let ym: MGLabels
  let metaTape: NetworkTape
  let rngBox = RNGBox(RNG(seed: 99))
  var c: Int { network.classes }
  var p: Int { network.params.count }

  init(
    _ arch: MGArch, n: Int = 5, m: Int = 4, lr: Float = 0.5, optimizer: OptimizerConfig = OptimizerConfig(),
    seed: UInt64 = 1
  ) throws {
    self.arch = arch
    self.n = n
    self.m = m
    network = try Network(try arch.build(), seed: seed)
    trainer = try Trainer(network: network, optimizer: optimizer, schedule: Schedule(baseLR: lr), seed: seed &+ 17)
    let d = network.inputLayout.size
    let classes = network.classes
    var rng = RNG(seed: seed &* 7919 &+ 3)
    let teacher = (0..<(classes * d)).map { _ in rng.normal() }
    func label(_ v: ArraySlice<Float>) -> Int {
      var best = 0, bestScore = -Float.infinity
      for k in 0..<classes {
        var s: Float = 0
        for (j, xv) in v.enumerated() { s += teacher[k * d + j] * xv }
        if s > bestScore { bestScore = s; best = k }
      }
      return best
    }
    let xs = (0..<(n * d)).map { _ in rng.normal() }
    let xms = (0..<(m * d)).map { _ in rng.normal() }
    // Train labels: every other example flipped to another class (noisy); meta labels clean.
    let ys: [Int64] = (0..<n).map { i in
      let t = label(xs[(i * d)..<((i + 1) * d)])
      return Int64(i % 2 == 1 ? (t + 1) % classes : t)
    }
    let yms: [Int64] = (0..<m).map { i in Int64(label(xms[(i * d)..<((i + 1) * d)])) }
    x = FloatBuffer(xs)
    y = MGLabels(ys)
    xm = FloatBuffer(xms)
    ym = MGLabels(yms)
    metaTape = network.makeTape(batch: m)
  }

  var theta: [Double] { network.params.array.map(Double.init) }
  var stateBits: [UInt32] { network.state.array.map(\.bitPattern) }
  var labels: [Int] { y.array.map { Int($0) } }
  var alpha: Double { Double(trainer.currentLearningRate) }

  /// Mean meta cross-entropy at `params`, batch statistics, running statistics untouched;
  /// log-softmax in Double from the network's Float logits.
  func metaLoss(_ params: UnsafePointer<Float>) -> Double {
    network.forward(xm.pointer, batch: m, tape: metaTape, mode: .virtualTrain, rng: rngBox, params: params)
    let z = metaTape.logits.pointer
    var total = 0.0
    for i in 0..<m {
      var mx = -Double.infinity
      for k in 0..<c { mx = max(mx, Double(z[i * c + k])) }
      var s = 0.0
      for k in 0..<c { s += exp(Double(z[i * c + k]) - mx) }
      total += mx + log(s) - Double(z[i * c + Int(ym.pointer[i])])
    }
    return total / Double(m)
  }

  func metaLoss(_ theta: [Double]) -> Double {
    let f = theta.map { Float($0) }
    return f.withUnsafeBufferPointer { metaLoss($0.baseAddress!) }
  }

  /// Meta loss at θ − α·d.
  func lookahead(_ theta: [Double], alpha: Double, direction d: [Double]) -> Double {
    var t = theta
    for k in 0..<t.count { t[k] -= alpha * d[k] }
    return metaLoss(t)
  }

  /// Train forward at θ with batch statistics (running statistics untouched).
  @discardableResult
  func trainForward() -> (Double, Double) {
    trainer.forwardTrainBatch(x: x.pointer, n: n, labels: y.pointer, mode: .virtualTrain)
  }

  var trainLosses: [Double] { (0..<n).map { Double(trainer.losses[$0]) } }
  var trainProbs: [Double] { (0..<(n * c)).map { Double(trainer.probs[$0]) } }

  /// ∇_θ lᵢ(θ) for each train example (batch statistics of the whole train batch), by
  /// `backwardWeighted` with one-hot coefficients.
  func perExampleGradients() -> [[Double]] {
    trainForward()
    let buf = FloatBuffer(count: p)
    let coef = FloatBuffer(count: n)
    var rows: [[Double]] = []
    for i in 0..<n {
      coef.fill(0)
      coef[i] = 1
      trainer.backwardWeighted(coefficients: coef.pointer, into: buf.pointer)
      rows.append(buf.array.map(Double.init))
    }
    return rows
  }

  /// Row i·C + k: ∂z_ik/∂θ, by `backwardLogits` with one-hot logit gradients.
  func logitJacobianRows() -> [[Double]] {
    trainForward()
    let buf = FloatBuffer(count: p)
    let g = FloatBuffer(count: n * c)
    var rows: [[Double]] = []
    for r in 0..<(n * c) {
      g.fill(0)
      g[r] = 1
      trainer.backwardLogits(g.pointer, into: buf.pointer)
      rows.append(buf.array.map(Double.init))
    }
    return rows
  }

  func weightedStep(_ ws: StepWeighting) throws -> StepResult {
    try trainer.weightedStep(ws, x: x.pointer, n: n, labels: y.pointer, xMeta: xm.pointer, m: m, labelsMeta: ym.pointer)
  }

  /// One ERM step on the meta batch (fills the momentum buffer, moves θ and the running statistics).
  func warmUpStep() throws {
    _ = try trainer.step(x: xm.pointer, n: m, labels: ym.pointer)
  }
}

// MARK: - Numerics

private enum MG {
  static func dot(_ a: [Double], _ b: [Double]) -> Double {
    var s = 0.0
    for i in 0..<min(a.count, b.count) { s += a[i] * b[i] }
    return s
  }

  static func norm(_ a: [Double]) -> Double { dot(a, a).squareRoot() }

  static func cosine(_ a: [Double], _ b: [Double]) -> Double {
    let d = norm(a) * norm(b)
    return d > 0 ? dot(a, b) / d : (norm(a) == norm(b) ? 1 : 0)
  }

  /// ‖a − b‖ / ‖b‖.
  static func relError(_ a: [Double], _ b: [Double]) -> Double {
    var s = 0.0
    for i in 0..<b.count { s += (a[i] - b[i]) * (a[i] - b[i]) }
    return s.squareRoot() / max(norm(b), 1e-300)
  }

  /// Σᵢ coefᵢ·rowsᵢ.
  static func combine(_ rows: [[Double]], _ coef: [Double]) -> [Double] {
    var out = [Double](repeating: 0, count: rows.first?.count ?? 0)
    for (r, w) in zip(rows, coef) where w != 0 {
      for k in 0..<out.count { out[k] += w * r[k] }
    }
    return out
  }

  /// Central differences of `f` at `x0`, coordinate by coordinate.
  static func centralDifference(_ x0: [Double], h: Double, _ f: ([Double]) -> Double) -> [Double] {
    var out = [Double](repeating: 0, count: x0.count)
    var x = x0
    for i in 0..<x0.count {
      x[i] = x0[i] + h
      let fp = f(x)
      x[i] = x0[i] - h
      let fm = f(x)
      x[i] = x0[i]
      out[i] = (fp - fm) / (2 * h)
    }
    return out
  }

  /// Asserts cos(impl, ref) > minCos and ‖impl − ref‖/‖ref‖ < maxRel; prints the measured values.
  @discardableResult
  static func assertAgree(
    _ impl: [Double], _ ref: [Double], minCos: Double = 0.999, maxRel: Double = 0.02, _ what: String,
    file: StaticString = #filePath, line: UInt = #line
  ) -> (cos: Double, rel: Double) {
    XCTAssertEqual(impl.count, ref.count, "\(what): length", file: file, line: line)
    XCTAssertGreaterThan(norm(ref), 0, "\(what): the reference is zero, nothing is tested", file: file, line: line)
    XCTAssertTrue(impl.allSatisfy(\.isFinite), "\(what): non-finite implementation values", file: file, line: line)
    let cs = cosine(impl, ref)
    let re = relError(impl, ref)
    print(String(format: "[MetaGradientTests] %@: cos = %.7f, rel = %.2e (|ref| = %.3e)", what, cs, re, norm(ref)))
    XCTAssertGreaterThan(cs, minCos, "\(what): cosine similarity", file: file, line: line)
    XCTAssertLessThan(re, maxRel, "\(what): relative error", file: file, line: line)
    return (cs, re)
  }

  /// A random direction with the same norm as `like`.
  static func randomDirection(count: Int, like: [Double], seed: UInt64) -> [Double] {
    var rng = RNG(seed: seed)
    let d = (0..<count).map { _ in Double(rng.normal()) }
    let s = norm(like) / max(norm(d), 1e-300)
    return d.map { $0 * s }
  }
}

// MARK: - Reference weighting function (Double)

/// V(ℓ; Θ) = σ(b2 + Σⱼ W2ⱼ relu(W1ⱼ ℓ + b1ⱼ)) with Θ = [W1 (h), b1 (h), W2 (h), b2], and dV/dℓ —
/// an independent Double implementation used inside the finite-difference objectives.
private enum MGWeightNet {
  static func eval(_ t: [Double], hidden h: Int, _ l: Double) -> (v: Double, dvdl: Double) {
    var o = t[3 * h]
    var d = 0.0
    for j in 0..<h {
      let a = t[j] * l + t[h + j]
      if a > 0 {
        o += t[2 * h + j] * a
        d += t[2 * h + j] * t[j]
      }
    }
    let v = 1 / (1 + exp(-o))
    return (v, v * (1 - v) * d)
  }

  /// Moves the first-layer biases so no pre-activation W1ⱼℓᵢ + b1ⱼ lies within `margin` of the
  /// ReLU kink (finite differences over Θ must not cross one).
  static func separateKinks(_ wn: WeightNet, losses: [Double], margin: Double) {
    let h = wn.hidden
    let p = wn.params.pointer
    for j in 0..<h {
      for _ in 0..<1000 {
        let near = losses.contains { abs(Double(p[j]) * $0 + Double(p[h + j])) < margin }
        if !near { break }
        p[h + j] += Float(1.7 * margin)
      }
    }
  }

  /// Zero-mean constraint of GDW with p̃ fixed: ω_it = Σ_{c≠t} ω_ic p̃_ic / (1 − p̃_it).
  static func constrain(_ omega: inout [Double], probs pt: [Double], labels: [Int], classes c: Int) {
    for (i, t) in labels.enumerated() {
      var s = 0.0
      for k in 0..<c where k != t { s += omega[i * c + k] * pt[i * c + k] }
      omega[i * c + t] = s / (1 - pt[i * c + t])
    }
  }
}

// MARK: - Tests

final class MetaGradientTests: XCTestCase {
  // MARK: Network-level JVP

  /// `Network.jvp` of train-mode logits equals central differences of the logits along the same
  /// parameter direction, with batch statistics (BN in training mode) differentiated through.
  func testNetworkJVPOfTrainLogitsMatchesFiniteDifferencesWithBatchNormInTrainingMode() throws {
    for arch in [MGArch.mlp, .mlpBN, .conv, .resnet] {
      let fx = try MGFixture(arch)
      let theta = fx.theta
      let tape = fx.network.makeTape(batch: fx.n)
      // Directions: a random one, and the meta gradient v (what the methods use).
      let ws = try L2RW(config: { var c = WeightingConfig(); c.method = .l2rw; return c }(), network: fx.network, seed: 1)
      ws.meta.reserve(n: fx.n, m: fx.m, network: fx.network)
      _ = ws.meta.metaPass(fx.trainer, params: fx.network.params.pointer, x: fx.xm.pointer, m: fx.m, labels: fx.ym.pointer)
      let v = fx.trainer.grads.array.map(Double.init)
      let scale = MG.norm(theta) / max(MG.norm(v), 1e-30)
      let directions: [(String, [Double])] = [
        ("random", MG.randomDirection(count: fx.p, like: theta, seed: 5)),
        ("meta-gradient", v.map { $0 * scale }),
      ]
      for (name, dir) in directions {
        let dirF = dir.map { Float($0) }
        fx.network.forward(fx.x.pointer, batch: fx.n, tape: tape, mode: .train, rng: fx.rngBox)
        let out = FloatBuffer(count: fx.n * fx.c)
        dirF.withUnsafeBufferPointer { fx.network.jvp(tape: tape, direction: $0.baseAddress!, out: out.pointer) }
        let jvp = out.array.map(Double.init)
        // ‖h·dir‖ = 1e-4·‖θ‖: small enough that no ReLU kink is crossed in these fixtures (larger
        // steps give errors flat in h, the signature of kinks, not of a wrong JVP).
        let h = 1e-4
        func logits(_ s: Double) -> [Double] {
          let t = zip(theta, dir).map { Float($0 + s * $1) }
          t.withUnsafeBufferPointer {
            fx.network.forward(fx.x.pointer, batch: fx.n, tape: tape, mode: .virtualTrain, rng: fx.rngBox, params: $0.baseAddress!)
          }
          return tape.logits.array.map(Double.init)
        }
        let zp = logits(h), zm = logits(-h)
        let fd = zip(zp, zm).map { ($0 - $1) / (2 * h) }
        MG.assertAgree(jvp, fd, minCos: 0.9999, maxRel: 0.01, "JVP vs FD of train logits, \(arch), \(name) direction")
      }
    }
  }

  // MARK: L2RW

  /// uᵢ from `metaPass` + `projectedGradients` equals −(1/α)·∂f/∂εᵢ at ε = 0 for
  /// f(ε) = L_meta(θ − α Σ εᵢ ∇lᵢ(θ)), and equals the reverse-mode inner product ⟨v, ∇lᵢ⟩.
  func testL2RWProjectedGradientsMatchFiniteDifferencesOfTheLookaheadMetaLoss() throws {
    for arch in [MGArch.mlp, .conv, .resnet] {
      let fx = try MGFixture(arch)
      var cfg = WeightingConfig()
      cfg.method = .l2rw
      let ws = try L2RW(config: cfg, network: fx.network, seed: 2)
      ws.meta.reserve(n: fx.n, m: fx.m, network: fx.network)
      fx.trainer.reserve(batch: fx.n)
      let theta = fx.theta
      let alpha = fx.alpha
      let grads = fx.perExampleGradients()
      let uFD = MG.centralDifference([Double](repeating: 0, count: fx.n), h: 1e-3) { eps in
        fx.lookahead(theta, alpha: alpha, direction: MG.combine(grads, eps))
      }.map { -$0 / alpha }

      let stateBefore = fx.stateBits
      let metaLoss = ws.meta.metaPass(fx.trainer, params: fx.network.params.pointer, x: fx.xm.pointer, m: fx.m, labels: fx.ym.pointer)
      XCTAssertEqual(metaLoss, fx.metaLoss(theta), accuracy: 1e-5 * max(1, abs(metaLoss)), "\(arch): meta loss at θ")
      fx.trainForward()
      let u = FloatBuffer(count: fx.n)
      ws.meta.projectedGradients(fx.trainer, n: fx.n, out: u.pointer)
      let uImpl = u.array.map(Double.init)
      MG.assertAgree(uImpl, uFD, "L2RW u vs FD of f(eps), \(arch)")
      // The JVP against reverse mode: uᵢ = ⟨∇L_meta(θ), ∇lᵢ(θ)⟩ (tight: no finite differences).
      let v = fx.trainer.grads.array.map(Double.init)
      let uDot = grads.map { MG.dot(v, $0) }
      MG.assertAgree(uImpl, uDot, minCos: 0.99999, maxRel: 1e-3, "L2RW u vs <v, grad l_i> (reverse mode), \(arch)")
      XCTAssertEqual(fx.stateBits, stateBefore, "\(arch): the meta pass and JVP changed BN running statistics")
    }
  }

  /// The public step's weights are max(u, 0)/Σ max(u, 0) with u = −(1/α)·∂f/∂ε from finite
  /// differences, examples with u < 0 get exactly 0, and the real step's gradient is Σ wᵢ ∇lᵢ.
  func testL2RWStepWeightsAreTheNormalisedPositivePartOfTheFiniteDifferenceMetaGradient() throws {
    for arch in [MGArch.mlp, .conv] {
      let fx = try MGFixture(arch)
      var cfg = WeightingConfig()
      cfg.method = .l2rw
      let ws = try XCTUnwrap(makeStepWeighting(config: cfg, network: fx.network, seed: 2))
      let theta = fx.theta
      let alpha = fx.alpha
      let grads = fx.perExampleGradients()
      let uFD = MG.centralDifference([Double](repeating: 0, count: fx.n), h: 1e-3) { eps in
        fx.lookahead(theta, alpha: alpha, direction: MG.combine(grads, eps))
      }.map { -$0 / alpha }
      let umax = uFD.map(abs).max() ?? 0
      XCTAssertTrue(uFD.contains { $0 > 0.05 * umax }, "\(arch): fixture needs a clearly positive u, got \(uFD)")
      XCTAssertTrue(uFD.contains { $0 < -0.05 * umax }, "\(arch): fixture needs a clearly negative u, got \(uFD)")
      let pos = uFD.map { max($0, 0) }
      let s = pos.reduce(0, +)
      let expected = pos.map { $0 / s }

      _ = try fx.weightedStep(ws)
      let w = (0..<fx.n).map { Double(ws.weights[$0]) }
      print("[MetaGradientTests] L2RW weights \(arch): impl \(w.map { String(format: "%.4f", $0) }), FD \(expected.map { String(format: "%.4f", $0) })")
      for i in 0..<fx.n {
        XCTAssertEqual(w[i], expected[i], accuracy: 0.01, "\(arch): weight \(i)")
        if uFD[i] < -0.05 * umax { XCTAssertEqual(w[i], 0, "\(arch): example \(i) has u < 0 but weight \(w[i])") }
      }
      XCTAssertEqual(w.reduce(0, +), 1, accuracy: 1e-5, "\(arch): weights sum")
      MG.assertAgree(w, expected, minCos: 0.999, maxRel: 0.02, "L2RW step weights vs normalised max(u_FD, 0), \(arch)")
      let realGrad = MG.combine(grads, w)
      MG.assertAgree(fx.trainer.grads.array.map(Double.init), realGrad, minCos: 0.99999, maxRel: 1e-4, "L2RW real-step gradient, \(arch)")
    }
  }

  // MARK: MW-Net

  /// Runs one MW-Net step with V frozen (weight-net lr 0) and compares V's gradient with central
  /// differences of F(Θ) = L_meta(θ − α·d(Σ cᵢ(Θ) ∇lᵢ)), cᵢ the configured step coefficients and d
  /// the virtual direction (plain, or the optimizer's momentum and weight decay).
  /// (In both memory modes: a separate meta tape, and one laid over the train tape's dead activations.)
  private func checkMWNet(
    _ arch: MGArch, optimizer: OptimizerConfig = OptimizerConfig(), warmUp: Bool = false, lr: Float = 0.5,
    _ configure: (inout WeightingConfig) -> Void, _ label: String,
    file: StaticString = #filePath, line: UInt = #line
  ) throws {
    for memory in WeightingConfig.Memory.allCases {
      try checkMWNet(
        arch, optimizer: optimizer, warmUp: warmUp, lr: lr, memory: memory, configure, "\(label), memory \(memory)",
        file: file, line: line)
    }
  }

  private func checkMWNet(
    _ arch: MGArch, optimizer: OptimizerConfig, warmUp: Bool, lr: Float, memory: WeightingConfig.Memory,
    _ configure: (inout WeightingConfig) -> Void, _ label: String, file: StaticString, line: UInt
  ) throws {
    let fx = try MGFixture(arch, lr: lr, optimizer: optimizer)
    if warmUp { try fx.warmUpStep() }
    var cfg = WeightingConfig()
    cfg.method = .mwnet
    cfg.memory = memory
    cfg.weightNetHidden = 10
    cfg.weightNetLR = 0
    configure(&cfg)
    let ws = try XCTUnwrap(makeStepWeighting(config: cfg, network: fx.network, seed: 4))
    let wn = try XCTUnwrap(ws.weightNet)
    let h = wn.hidden
    let grads = fx.perExampleGradients()
    let losses = fx.trainLosses
    let fdStep = 1e-3
    MGWeightNet.separateKinks(wn, losses: losses, margin: 20 * fdStep * (1 + losses.map(abs).max()!))
    let phi0 = wn.params.array.map(Double.init)
    let theta = fx.theta
    let alpha = fx.alpha
    let opt = fx.trainer.optimizer.config
    let buffer = fx.trainer.optimizer.first.array.map(Double.init)
    let n = fx.n

    // The reference V agrees with the implementation's forward.
    let vImpl = FloatBuffer(count: n)
    let lf = losses.map { Float($0) }
    lf.withUnsafeBufferPointer { wn.forward($0.baseAddress!, n: n, out: vImpl.pointer) }
    for i in 0..<n {
      XCTAssertEqual(Double(vImpl[i]), MGWeightNet.eval(phi0, hidden: h, losses[i]).v, accuracy: 1e-6, "\(label): V(l_\(i))", file: file, line: line)
    }

    func coefficients(_ phi: [Double]) -> [Double] {
      let e = losses.map { MGWeightNet.eval(phi, hidden: h, $0) }
      if cfg.normalizeWeights {
        let s = e.reduce(0) { $0 + $1.v }
        let a = zip(e, losses).reduce(0) { $0 + $1.0.v * $1.1 }
        // cᵢ = ∂/∂lᵢ of Σⱼ V(lⱼ) lⱼ / Σⱼ V(lⱼ) (V(lᵢ)/S when the loss is detached).
        return (0..<n).map { i in
          cfg.detachLoss ? e[i].v / s : (e[i].v + e[i].dvdl * losses[i]) / s - a * e[i].dvdl / (s * s)
        }
      }
      return (0..<n).map { i in (e[i].v + (cfg.detachLoss ? 0 : e[i].dvdl * losses[i])) / Double(n) }
    }
    func direction(_ g: [Double]) -> [Double] {
      guard cfg.virtualStepMomentum else { return g }
      var d = g
      for k in 0..<g.count {
        let gk = g[k] + Double(opt.weightDecay) * theta[k]
        if opt.kind == .sgd && opt.momentum > 0 {
          let mu = Double(opt.momentum)
          let b = mu * buffer[k] + gk
          d[k] = opt.nesterov ? gk + mu * b : b
        } else {
          d[k] = gk
        }
      }
      return d
    }
    func objective(_ phi: [Double]) -> Double {
      fx.lookahead(theta, alpha: alpha, direction: direction(MG.combine(grads, coefficients(phi))))
    }
    let fd = MG.centralDifference(phi0, h: fdStep, objective)
    let f0 = objective(phi0)

    let result = try fx.weightedStep(ws)
    XCTAssertEqual(wn.params.array.map(Double.init), phi0, "\(label): V changed with weight-net lr 0", file: file, line: line)
    XCTAssertEqual(result.metaLoss, f0, accuracy: 1e-4 * max(1, abs(f0)), "\(label): meta loss at the look-ahead θ̂", file: file, line: line)
    MG.assertAgree(
      wn.grads.array.map(Double.init), fd, minCos: 0.9999, maxRel: 0.01, "MW-Net dL/dTheta vs FD, \(label)", file: file, line: line)
    // The real step uses the same coefficients (V unchanged).
    let real = MG.combine(grads, coefficients(phi0))
    MG.assertAgree(
      fx.trainer.grads.array.map(Double.init), real, minCos: 0.99999, maxRel: 1e-4, "MW-Net real-step gradient, \(label)",
      file: file, line: line)
  }

  func testMWNetWeightNetGradientMatchesFiniteDifferencesOnMLP() throws {
    try checkMWNet(.mlp, { _ in }, "mlp")
  }

  func testMWNetWeightNetGradientMatchesFiniteDifferencesOnConvNetWithBatchNorm() throws {
    try checkMWNet(.conv, { _ in }, "conv+bn")
  }

  func testMWNetNormalisedWeightsGradientMatchesFiniteDifferences() throws {
    try checkMWNet(.mlp, { $0.normalizeWeights = true }, "mlp, normalize")
    try checkMWNet(.conv, { $0.normalizeWeights = true }, "conv+bn, normalize")
  }

  func testMWNetUndetachedLossGradientMatchesFiniteDifferences() throws {
    try checkMWNet(.mlp, { $0.detachLoss = false }, "mlp, detach=false")
    try checkMWNet(.conv, { $0.detachLoss = false }, "conv+bn, detach=false")
  }

  /// cᵢ = ∂/∂ℓᵢ (Σ V(ℓⱼ)ℓⱼ / Σ V(ℓⱼ)) depends on Θ through S, A and V′ together (this combination
  /// once gave a 3.5% gradient error, cos 0.99968, on the MLP fixture).
  func testMWNetNormalisedAndUndetachedGradientMatchesFiniteDifferences() throws {
    try checkMWNet(.mlp, { $0.normalizeWeights = true; $0.detachLoss = false }, "mlp, normalize+detach=false")
    try checkMWNet(.conv, { $0.normalizeWeights = true; $0.detachLoss = false }, "conv+bn, normalize+detach=false")
  }

  func testMWNetVirtualStepWithMomentumAndWeightDecayMatchesFiniteDifferences() throws {
    for nesterov in [false, true] {
      var opt = OptimizerConfig()
      opt.momentum = 0.9
      opt.weightDecay = 5e-3
      opt.nesterov = nesterov
      try checkMWNet(.conv, optimizer: opt, warmUp: true, { $0.virtualStepMomentum = true }, "conv+bn, momentum 0.9 wd, nesterov=\(nesterov)")
    }
  }

  // MARK: GDW

  /// Runs one GDW step (V frozen, small η, large clip) and compares: g = ∂L_meta/∂ω against
  /// central differences of G(ω) = L_meta(θ − α·d(Σ ω_ic (p̃_ic − y_ic)/n ∂z_ic/∂θ)); V's gradient
  /// against central differences of G(constrain(V(l; φ)·1)); the second-stage update's direction;
  /// the constraint on ω′; and the real step's gradient.
  /// (In both memory modes.)
  private func checkGDW(
    _ arch: MGArch, optimizer: OptimizerConfig = OptimizerConfig(), warmUp: Bool = false, lr: Float = 0.5,
    _ configure: (inout WeightingConfig) -> Void, _ label: String,
    file: StaticString = #filePath, line: UInt = #line
  ) throws {
    for memory in WeightingConfig.Memory.allCases {
      try checkGDW(
        arch, optimizer: optimizer, warmUp: warmUp, lr: lr, memory: memory, configure, "\(label), memory \(memory)",
        file: file, line: line)
    }
  }

  private func checkGDW(
    _ arch: MGArch, optimizer: OptimizerConfig, warmUp: Bool, lr: Float, memory: WeightingConfig.Memory,
    _ configure: (inout WeightingConfig) -> Void, _ label: String, file: StaticString, line: UInt
  ) throws {
    let fx = try MGFixture(arch, lr: lr, optimizer: optimizer)
    if warmUp { try fx.warmUpStep() }
    var cfg = WeightingConfig()
    cfg.method = .gdw
    cfg.memory = memory
    cfg.weightNetHidden = 10
    cfg.weightNetLR = 0
    cfg.gdwEta = 0.05
    cfg.gdwClip = 100
    configure(&cfg)
    let ws = try GDW(config: cfg, network: fx.network, seed: 6)
    let wn = try XCTUnwrap(ws.weightNet)
    let h = wn.hidden
    let n = fx.n, c = fx.c
    let jac = fx.logitJacobianRows()
    let losses = fx.trainLosses
    let pc = Double(cfg.gdwProbClamp)
    let pt = fx.trainProbs.map { min($0, pc) }
    let labels = fx.labels
    let phiStep = 1e-3
    MGWeightNet.separateKinks(wn, losses: losses, margin: 20 * phiStep * (1 + losses.map(abs).max()!))
    let phi0 = wn.params.array.map(Double.init)
    let theta = fx.theta
    let alpha = fx.alpha
    let opt = fx.trainer.optimizer.config
    let buffer = fx.trainer.optimizer.first.array.map(Double.init)

    func direction(_ g: [Double]) -> [Double] {
      guard cfg.virtualStepMomentum else { return g }
      var d = g
      for k in 0..<g.count {
        let gk = g[k] + Double(opt.weightDecay) * theta[k]
        if opt.kind == .sgd && opt.momentum > 0 {
          let mu = Double(opt.momentum)
          let b = mu * buffer[k] + gk
          d[k] = opt.nesterov ? gk + mu * b : b
        } else {
          d[k] = gk
        }
      }
      return d
    }
    func logitCoefficients(_ omega: [Double]) -> [Double] {
      (0..<(n * c)).map { r in omega[r] * (pt[r] - (r % c == labels[r / c] ? 1 : 0)) / Double(n) }
    }
    func metaOfOmega(_ omega: [Double]) -> Double {
      fx.lookahead(theta, alpha: alpha, direction: direction(MG.combine(jac, logitCoefficients(omega))))
    }
    func omegaOfPhi(_ phi: [Double]) -> [Double] {
      var omega = [Double](repeating: 0, count: n * c)
      for i in 0..<n {
        let v = MGWeightNet.eval(phi, hidden: h, losses[i]).v
        for k in 0..<c { omega[i * c + k] = v }
      }
      MGWeightNet.constrain(&omega, probs: pt, labels: labels, classes: c)
      return omega
    }
    let omega0 = omegaOfPhi(phi0)
    let gFD = MG.centralDifference(omega0, h: 1e-2, metaOfOmega)
    let phiFD = MG.centralDifference(phi0, h: phiStep) { metaOfOmega(omegaOfPhi($0)) }
    let f0 = metaOfOmega(omega0)

    let result = try fx.weightedStep(ws)
    XCTAssertEqual(wn.params.array.map(Double.init), phi0, "\(label): V changed with weight-net lr 0", file: file, line: line)
    XCTAssertEqual(result.metaLoss, f0, accuracy: 1e-4 * max(1, abs(f0)), "\(label): meta loss at the look-ahead θ̂", file: file, line: line)
    let gImpl = (0..<(n * c)).map { Double(ws.g[$0]) }
    MG.assertAgree(gImpl, gFD, "GDW g = dL/domega vs FD, \(label)", file: file, line: line)
    MG.assertAgree(
      wn.grads.array.map(Double.init), phiFD, minCos: 0.9999, maxRel: 0.01, "GDW dL/dphi vs FD, \(label)", file: file, line: line)

    // Second stage: off the label column ω′_ic = ω_ic − η g_ic/‖g‖₁ (no clip, no clamp active).
    let omegaNew = (0..<(n * c)).map { Double(ws.classWeights[$0]) }
    let g1 = gFD.reduce(0) { $0 + abs($1) }
    let eta = Double(cfg.eta(classes: c))
    var implied: [Double] = [], predicted: [Double] = []
    for i in 0..<n {
      for k in 0..<c where k != labels[i] {
        implied.append(omega0[i * c + k] - omegaNew[i * c + k])
        predicted.append(eta * gFD[i * c + k] / g1)
      }
    }
    MG.assertAgree(implied, predicted, minCos: 0.999, maxRel: 0.03, "GDW second-stage update vs -eta g_FD/|g_FD|_1, \(label)", file: file, line: line)
    // ω′ satisfies the zero-mean constraint and `weights` is its label column.
    var constrained = omegaNew
    MGWeightNet.constrain(&constrained, probs: pt, labels: labels, classes: c)
    for i in 0..<n {
      let t = labels[i]
      XCTAssertEqual(omegaNew[i * c + t], constrained[i * c + t], accuracy: 1e-4 * max(1, abs(constrained[i * c + t])), "\(label): constraint row \(i)", file: file, line: line)
      XCTAssertEqual(Double(ws.weights[i]), omegaNew[i * c + t], "\(label): weights[\(i)] is ω′ at the label", file: file, line: line)
    }
    // Real step: back-propagated G′ = ω′ (p̃ − y)/n.
    MG.assertAgree(
      fx.trainer.grads.array.map(Double.init), MG.combine(jac, logitCoefficients(omegaNew)), minCos: 0.99999, maxRel: 1e-4,
      "GDW real-step gradient, \(label)", file: file, line: line)
  }

  func testGDWClassLevelMetaGradientAndWeightNetGradientMatchFiniteDifferencesOnMLP() throws {
    try checkGDW(.mlp, { _ in }, "mlp")
  }

  func testGDWClassLevelMetaGradientAndWeightNetGradientMatchFiniteDifferencesOnConvNetWithBatchNorm() throws {
    try checkGDW(.conv, { _ in }, "conv+bn")
  }

  func testGDWVirtualStepWithNesterovMomentumAndWeightDecayMatchesFiniteDifferences() throws {
    var opt = OptimizerConfig()
    opt.momentum = 0.9
    opt.weightDecay = 5e-3
    opt.nesterov = true
    try checkGDW(.conv, optimizer: opt, warmUp: true, { $0.virtualStepMomentum = true }, "conv+bn, nesterov 0.9 wd")
  }

  // MARK: BatchNorm running statistics

  /// Meta passes (at θ and at a different θ̂), the virtual train forward and the JVP leave the
  /// running statistics bit-identical.
  func testMetaPassAndJVPLeaveBatchNormRunningStatisticsBitIdentical() throws {
    for arch in [MGArch.mlpBN, .conv, .resnet] {
      let fx = try MGFixture(arch)
      try fx.warmUpStep()  // non-trivial running statistics
      XCTAssertGreaterThan(fx.network.state.count, 0, "\(arch): has BN state")
      var cfg = WeightingConfig()
      cfg.method = .mwnet
      let ws = try MWNet(config: cfg, network: fx.network, seed: 1)
      ws.meta.reserve(n: fx.n, m: fx.m, network: fx.network)
      let before = fx.stateBits
      _ = ws.meta.metaPass(fx.trainer, params: fx.network.params.pointer, x: fx.xm.pointer, m: fx.m, labels: fx.ym.pointer)
      XCTAssertEqual(fx.stateBits, before, "\(arch): metaPass at θ changed running statistics")
      let shifted = fx.network.params.array.map { $0 * 0.9 + 0.01 }
      _ = shifted.withUnsafeBufferPointer {
        ws.meta.metaPass(fx.trainer, params: $0.baseAddress!, x: fx.xm.pointer, m: fx.m, labels: fx.ym.pointer)
      }
      XCTAssertEqual(fx.stateBits, before, "\(arch): metaPass at θ̂ changed running statistics")
      fx.trainForward()
      let out = FloatBuffer(count: fx.n)
      ws.meta.projectedGradients(fx.trainer, n: fx.n, out: out.pointer)
      XCTAssertEqual(fx.stateBits, before, "\(arch): virtual train forward / JVP changed running statistics")
    }
  }

  /// After a full L2RW / MW-Net / GDW step (either memory mode), the running statistics equal
  /// those of a twin network after exactly one ERM `.train` forward of the same batch (so they
  /// were updated exactly once).
  func testWeightedStepUpdatesRunningStatisticsExactlyLikeOneTrainForward() throws {
    for arch in [MGArch.conv, .resnet] {
      for (method, memory) in [
        (WeightingConfig.Method.l2rw, WeightingConfig.Memory.fast), (.mwnet, .fast), (.mwnet, .low), (.gdw, .fast),
        (.gdw, .low),
      ] {
        let a = try MGFixture(arch)
        let b = try MGFixture(arch)
        try a.warmUpStep()
        try b.warmUpStep()
        XCTAssertEqual(a.stateBits, b.stateBits, "\(arch): twins differ")
        let initial = a.stateBits
        var cfg = WeightingConfig()
        cfg.method = method
        cfg.memory = memory
        let ws = try XCTUnwrap(makeStepWeighting(config: cfg, network: a.network, seed: 1))
        _ = try a.weightedStep(ws)
        b.trainer.forwardTrainBatch(x: b.x.pointer, n: b.n, labels: b.y.pointer)
        XCTAssertNotEqual(a.stateBits, initial, "\(arch) \(method) \(memory): the step did not update running statistics")
        XCTAssertEqual(
          a.stateBits, b.stateBits, "\(arch) \(method) \(memory): running statistics differ from one ERM train forward")
      }
    }
  }
}
