import Foundation
import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

/// LAW (Li et al. 2020): the DDPG pieces (critic regression, actor ascent, MLP gradients), the
/// replay buffer and FDU counts, the DNR reward, the features and weighting function, stage
/// boundaries, strategy files, the trainer hook and the determinism of a search.
final class LAWTests: XCTestCase {
  // MARK: - Helpers

  private var directory: URL!

  override func setUpWithError() throws {
    directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("metaweight-law-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    if let d = directory { try? FileManager.default.removeItem(at: d) }
  }

  private func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

  /// A small config for agent-only tests.
  private func agentConfig(stages: Int = 4, criticLR: Float = 1e-3, actorLR: Float = 1e-3) throws -> LAWConfig {
    var c = LAWConfig()
    c.stages = stages
    c.warmupStages = 0
    c.embeddingDim = 3
    c.actorHidden = 16
    c.criticHidden = 32
    c.criticLR = criticLR
    c.actorLR = actorLR
    try c.validate()
    return c
  }

  /// A synthetic, learnable 3-class problem with flat inputs of size 6 and 30% flipped labels.
  private func syntheticData(n: Int, nVal: Int, seed: UInt64) -> LAWData {
    var rng = RNG(seed: seed)
    func sample(_ count: Int, noise: Bool) -> ([Float], [Int64], [Bool]) {
      var x: [Float] = [], y: [Int64] = [], cor: [Bool] = []
      for _ in 0..<count {
        let c = rng.int(below: 3)
        for j in 0..<6 { x.append(rng.normal() * 0.7 + (j % 3 == c ? 2 : 0)) }
        var label = c
        var flipped = false
        if noise && rng.uniform() < 0.3 {
          label = (c + 1 + rng.int(below: 2)) % 3
          flipped = true
        }
        y.append(Int64(label))
        cor.append(flipped)
      }
      return (x, y, cor)
    }
    let (x, y, cor) = sample(n, noise: true)
    let (vx, vy, _) = sample(nVal, noise: false)
    return LAWData(x: x, y: y, corrupted: cor, valX: vx, valY: vy)
  }

  private func smallSearchConfig(parallel: Int = 1) throws -> LAWConfig {
    var c = LAWConfig()
    c.stages = 4
    c.warmupStages = 1
    c.parallel = parallel
    c.epochs = 2
    c.batchSize = 16
    c.embeddingDim = 4
    c.actorHidden = 16
    c.criticHidden = 16
    c.fduEpochs = 2
    c.fduBatch = 4
    c.actorLR = 1e-3
    c.criticLR = 1e-3
    try c.validate()
    return c
  }

  // MARK: - DenseMLP

  /// Analytic parameter and input gradients of the MLP match central finite differences.
  func testDenseMLPGradientsMatchFiniteDifferences() {
    let mlp = DenseMLP(widths: [3, 5, 4, 2], finalInit: 0.5, seed: 7)
    var rng = RNG(seed: 3)
    let n = 4
    let x = (0..<(n * 3)).map { _ in rng.normal() }
    let r = (0..<(n * 2)).map { _ in rng.normal() }  // L = Σ r·y
    func loss(_ xs: [Float]) -> Double {
      let y = xs.withUnsafeBufferPointer { mlp.forward($0.baseAddress!, n: n) }
      var s: Double = 0
      for i in 0..<(n * 2) { s += Double(r[i]) * Double(y[i]) }
      return s
    }
    _ = loss(x)
    var dx = [Float](repeating: 0, count: n * 3)
    r.withUnsafeBufferPointer { rp in dx.withUnsafeMutableBufferPointer { mlp.backward(rp.baseAddress!, dx: $0.baseAddress!) } }
    let grads = mlp.grads.array
    let eps: Float = 1e-2
    for i in stride(from: 0, to: mlp.parameterCount, by: 3) {
      let old = mlp.params[i]
      mlp.params[i] = old + eps
      let lp = loss(x)
      mlp.params[i] = old - eps
      let lm = loss(x)
      mlp.params[i] = old
      XCTAssertEqual(Double(grads[i]), (lp - lm) / Double(2 * eps), accuracy: 2e-3, "param \(i)")
    }
    for i in 0..<(n * 3) {
      var xp = x, xm = x
      xp[i] += eps
      xm[i] -= eps
      XCTAssertEqual(Double(dx[i]), (loss(xp) - loss(xm)) / Double(2 * eps), accuracy: 2e-3, "input \(i)")
    }
  }

  // MARK: - DDPG

  /// With done = 1 the target is y = r, so the critic regresses Q(s, a) onto the known rewards.
  func testCriticRegressesToKnownReturns() throws {
    let cfg = try agentConfig(criticLR: 3e-3)
    let agent = LAWAgent(config: cfg, actionCount: 3, seed: 11)
    var rng = RNG(seed: 5)
    var transitions: [LAWTransition] = []
    for i in 0..<16 {
      let s = LAWStageState(stage: i % 4, lossSmooth: rng.uniform(), accSmooth: rng.uniform())
      let a = (0..<3).map { _ in rng.uniform() * 2 - 1 }
      let r = 0.8 * a[0] - 0.5 * a[1] + 0.3 * Float(s.stage) - 0.2
      transitions.append(LAWTransition(state: s, action: a, reward: r, next: s, done: true))
    }
    let initial = agent.updateCritic(transitions)
    var last = initial
    for _ in 0..<3000 { last = agent.updateCritic(transitions) }
    XCTAssertLessThan(last, initial * 0.01)
    let q = agent.q(transitions.map { $0.state }, actions: transitions.flatMap { $0.action })
    for (t, qi) in zip(transitions, q) { XCTAssertEqual(qi, t.reward, accuracy: 0.05) }
  }

  /// y = r + γ·Q′(s′, μ′(s′)) when not done: with the critic's output bias set, Q′ is known.
  func testCriticTargetUsesDiscountedTargetCritic() throws {
    var cfg = try agentConfig(criticLR: 1e-9)
    cfg.gamma = 0.5
    let agent = LAWAgent(config: cfg, actionCount: 2, seed: 1)
    // Make Q′ ≡ 4: zero the last layer's weights, bias 4.
    let last = agent.critic.offsets[agent.critic.offsets.count - 1]
    let h = agent.critic.widths[agent.critic.widths.count - 2]
    for i in 0..<h { agent.targetCritic[last + i] = 0 }
    agent.targetCritic[last + h] = 4
    for i in 0..<h { agent.critic.params[last + i] = 0 }
    agent.critic.params[last + h] = 0
    let s = LAWStageState(stage: 0, lossSmooth: 0.5, accSmooth: 0.5)
    let t = LAWTransition(state: s, action: [0.1, 0.2], reward: 1, next: s, done: false)
    // Q ≡ 0, y = 1 + 0.5·4 = 3, loss = 9.
    XCTAssertEqual(agent.updateCritic([t]), 9, accuracy: 1e-4)
    let d = LAWTransition(state: s, action: [0.1, 0.2], reward: 1, next: s, done: true)
    XCTAssertEqual(agent.updateCritic([d]), 1, accuracy: 1e-4)
  }

  /// After fitting the critic to Q(s, a) = −‖a − a*‖², actor steps move μ(s) toward a* and
  /// raise Q(s, μ(s)).
  func testActorMovesTowardHigherQ() throws {
    let cfg = try agentConfig(criticLR: 3e-3, actorLR: 3e-3)
    let agent = LAWAgent(config: cfg, actionCount: 2, seed: 21)
    let target: [Float] = [0.5, -0.4]
    var rng = RNG(seed: 9)
    var fit: [LAWTransition] = []
    let states = (0..<4).map { LAWStageState(stage: $0, lossSmooth: 0.5, accSmooth: 0.5) }
    for i in 0..<256 {
      let a = (0..<2).map { _ in rng.uniform() * 2 - 1 }
      let r = -zip(a, target).map { ($0 - $1) * ($0 - $1) }.reduce(0, +)
      fit.append(LAWTransition(state: states[i % 4], action: a, reward: r, next: states[i % 4], done: true))
    }
    for _ in 0..<1500 {
      let order = rng.permutation(fit.count)
      agent.updateCritic(order[0..<64].map { fit[$0] })
    }
    func distance() -> Float {
      states.map { s -> Float in
        let a = agent.actor.action(s)
        return zip(a, target).map { ($0 - $1) * ($0 - $1) }.reduce(0, +)
      }.reduce(0, +) / Float(states.count)
    }
    let d0 = distance()
    let q0 = agent.updateActor(states: states)
    var q = q0
    for _ in 0..<400 { q = agent.updateActor(states: states) }
    let d1 = distance()
    XCTAssertGreaterThan(q, q0)
    XCTAssertLessThan(d1, d0 * 0.25, "μ(s) should approach a* = \(target): distance \(d0) → \(d1)")
  }

  /// With a critic that has no opinion (Q constant), the L2 penalty on the pre-tanh output pulls
  /// the actions back toward 0 (K ≈ 1); without it they stay put.
  func testActorL2PullsIndifferentActionsToZero() throws {
    for l2: Float in [0, 0.5] {
      var cfg = try agentConfig(actorLR: 1e-2)
      cfg.actorL2 = l2
      let agent = LAWAgent(config: cfg, actionCount: 2, seed: 4)
      let c = agent.critic
      let last = c.offsets[c.offsets.count - 1]
      for i in last..<c.parameterCount { c.params[i] = 0 }  // Q ≡ 0
      let a = agent.actor.mlp
      let alast = a.offsets[a.offsets.count - 1]
      let h = a.widths[a.widths.count - 2]
      a.params[alast + 2 * h] = 2  // biases: outputs ≈ (2, −2)
      a.params[alast + 2 * h + 1] = -2
      let states = (0..<4).map { LAWStageState(stage: $0, lossSmooth: 0.5, accSmooth: 0.5) }
      let before = agent.actor.action(states[0])
      for _ in 0..<300 { agent.updateActor(states: states) }
      let after = agent.actor.action(states[0])
      if l2 == 0 {
        XCTAssertEqual(after, before)
      } else {
        XCTAssertLessThan(abs(after[0]), 0.2 * abs(before[0]))
        XCTAssertLessThan(abs(after[1]), 0.2 * abs(before[1]))
      }
    }
  }

  /// Soft update: θ′ ← τθ + (1 − τ)θ′.
  func testSoftUpdate() throws {
    var cfg = try agentConfig()
    cfg.tau = 0.25
    let agent = LAWAgent(config: cfg, actionCount: 2, seed: 3)
    agent.targetCritic.fill(0)
    agent.critic.params.fill(2)
    agent.softUpdateTargets()
    XCTAssertEqual(agent.targetCritic[0], 0.5, accuracy: 1e-7)
    agent.softUpdateTargets()
    XCTAssertEqual(agent.targetCritic[0], 0.875, accuracy: 1e-7)
  }

  // MARK: - Replay buffer and FDU

  func testReplayBufferCapacityAndWrapAround() {
    var b = LAWReplayBuffer(capacity: 5)
    func t(_ r: Float) -> LAWTransition {
      let s = LAWStageState(stage: 0, lossSmooth: 0, accSmooth: 0)
      return LAWTransition(state: s, action: [r], reward: r, next: s, done: false)
    }
    for i in 0..<3 { b.append(t(Float(i))) }
    XCTAssertEqual(b.count, 3)
    XCTAssertEqual(b.chronological.map(\.reward), [0, 1, 2])
    for i in 3..<12 { b.append(t(Float(i))) }
    XCTAssertEqual(b.count, 5)
    XCTAssertEqual(b.added, 12)
    XCTAssertEqual(b.chronological.map(\.reward), [7, 8, 9, 10, 11])
    XCTAssertEqual(Set(b.items.map(\.reward)), Set([7, 8, 9, 10, 11]))
    b.append(t(12))
    XCTAssertEqual(b.chronological.map(\.reward), [8, 9, 10, 11, 12])
  }

  /// FDU makes En · ⌈buffer/batch⌉ minibatch updates and touches every transition each epoch.
  func testFullDataUpdateCounts() throws {
    let cfg = try agentConfig()
    for (count, batch, epochs) in [(10, 4, 3), (8, 4, 2), (1, 64, 5), (64, 64, 1), (65, 64, 2)] {
      let agent = LAWAgent(config: cfg, actionCount: 2, seed: 1)
      var b = LAWReplayBuffer(capacity: 100)
      for i in 0..<count {
        let s = LAWStageState(stage: i % 4, lossSmooth: 0, accSmooth: 0)
        b.append(LAWTransition(state: s, action: [0, 0], reward: 1, next: s, done: true))
      }
      var rng = RNG(seed: 2)
      let r = fullDataUpdate(agent: agent, buffer: b, epochs: epochs, batch: batch, rng: &rng)
      let expected = epochs * ((count + batch - 1) / batch)
      XCTAssertEqual(r.updates, expected, "\(count) transitions, batch \(batch), \(epochs) epochs")
      XCTAssertEqual(agent.updates, Int64(expected))
      XCTAssertEqual(agent.criticOptimizer.steps, Int64(expected))
      XCTAssertEqual(agent.actorOptimizer.steps, Int64(expected))
    }
    let agent = LAWAgent(config: cfg, actionCount: 2, seed: 1)
    var rng = RNG(seed: 2)
    XCTAssertEqual(fullDataUpdate(agent: agent, buffer: LAWReplayBuffer(capacity: 3), epochs: 3, batch: 2, rng: &rng).updates, 0)
  }

  // MARK: - Reward, stages and configuration

  func testRewardWeightFormula() throws {
    var c = LAWConfig()
    c.epochs = 20
    c.rewardK = 2
    c.rewardScale = 3
    XCTAssertEqual(c.rewardWeight(epoch: 0), 3, accuracy: 1e-12)
    XCTAssertEqual(c.rewardWeight(epoch: 10), exp(1.0) * 3, accuracy: 1e-12)
    XCTAssertEqual(c.rewardWeight(epoch: 20), exp(2.0) * 3, accuracy: 1e-12)
    c.rewardK = 0
    XCTAssertEqual(c.rewardWeight(epoch: 7), 3, accuracy: 1e-12)
  }

  /// In a real search, every logged reward equals r_w(epoch at the stage end)·(acc_t − acc_r),
  /// and warm-up stages give reward 0 with identical accuracies.
  func testSearchRewardsFollowDNRFormula() throws {
    let cfg = try smallSearchConfig()
    let data = syntheticData(n: 64, nVal: 30, seed: 4)
    let s = try LAWSearch(config: cfg, networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: 5)
    try s.setData(data)
    for _ in 0..<cfg.stages { _ = try s.runStage() }
    let log = s.episodeLogs[0]
    let total = s.totalSteps(examples: 64)
    let perEpoch = Double(total) / Double(cfg.epochs)
    for t in 0..<cfg.stages {
      let end = Double(LAWStages.start(ofStage: t + 1, total: total, stages: cfg.stages))
      let accT = log.value("target_acc", stage: t), accR = log.value("reference_acc", stage: t)
      if t < cfg.warmupStages {
        XCTAssertEqual(log.value("reward", stage: t), 0)
        XCTAssertEqual(accT, accR)
      } else {
        XCTAssertEqual(log.value("reward", stage: t), cfg.rewardWeight(epoch: end / perEpoch) * (accT - accR), accuracy: 1e-9)
      }
    }
  }

  /// Stage boundaries: ⌊T·total/N′⌋, and `stage(ofStep:)` inverts them.
  func testStageBoundaries() {
    for (total, stages) in [(10, 3), (40, 10), (7, 7), (100, 20), (13, 4)] {
      var counts = [Int](repeating: 0, count: stages)
      for step in 0..<total {
        let t = LAWStages.stage(ofStep: Int64(step), total: Int64(total), stages: stages)
        XCTAssertGreaterThanOrEqual(Int64(step), LAWStages.start(ofStage: t, total: Int64(total), stages: stages))
        XCTAssertLessThan(Int64(step), LAWStages.start(ofStage: t + 1, total: Int64(total), stages: stages))
        counts[t] += 1
      }
      XCTAssertTrue(counts.allSatisfy { $0 == total / stages || $0 == total / stages + 1 }, "\(counts)")
      XCTAssertEqual(LAWStages.stage(ofStep: Int64(total + 5), total: Int64(total), stages: stages), stages - 1)
    }
  }

  func testConfigParseValidateAndRoundTrip() throws {
    let d = try LAWConfig.parse("")
    XCTAssertEqual(d, LAWConfig())
    let c = try LAWConfig.parse(
      "stages=10, warmup_stages=3, parallel=4, gamma=0.5, tau=1, label_encoding=scalar, density=dot, lr_milestones=0.3x0.6, optimizer=adam, normalize_weights=1, noise_correlation=0.9, embedding_std=0.5, actor_l2=0")
    XCTAssertEqual(c.stages, 10)
    XCTAssertEqual(c.warmupStages, 3)
    XCTAssertEqual(c.parallel, 4)
    XCTAssertEqual(c.gamma, 0.5)
    XCTAssertEqual(c.labelEncoding, .scalar)
    XCTAssertEqual(c.density, .dot)
    XCTAssertEqual(c.lrMilestones, [0.3, 0.6])
    XCTAssertEqual(c.optimizer, .adam)
    XCTAssertTrue(c.normalizeWeights)
    XCTAssertEqual(c.noiseCorrelation, 0.9)
    XCTAssertEqual(c.embeddingStd, 0.5)
    XCTAssertEqual(c.actorL2, 0)
    XCTAssertEqual(try LAWConfig.parse(c.spec), c)
    XCTAssertEqual(try LAWConfig.parse("lr_milestones=none").lrMilestones, [])
    for bad in [
      "stages=0", "warmup_stages=20", "gamma=1", "tau=0", "noise=-1", "bogus=1", "stages", "lr=nan",
      "label_encoding=binary", "fdu_batch=0", "lr_milestones=1.5", "noise_decay=0", "state_ema=1",
      "actor_l2=-1", "embedding_std=-0.1", "noise_correlation=2",
    ] {
      XCTAssertThrowsError(try LAWConfig.parse(bad), bad) { e in
        guard case MetaweightError.invalidArgument = e else { return XCTFail("\(bad): \(e)") }
      }
    }
  }

  // MARK: - Features

  func testDensityMatchesGramMatrixDefinition() {
    var rng = RNG(seed: 8)
    let n = 7, c = 4
    var z = (0..<(n * c)).map { _ in rng.normal() }
    for j in 0..<c { z[3 * c + j] = 0 }  // a zero row: cosine similarity 0
    for kind in [LAWDensity.cosine, .dot] {
      var out = [Float](repeating: 0, count: n)
      z.withUnsafeBufferPointer { zp in out.withUnsafeMutableBufferPointer { LAWFeatures.density(logits: zp.baseAddress!, n: n, c: c, kind: kind, out: $0.baseAddress!) } }
      for i in 0..<n {
        var s: Double = 0
        for j in 0..<n where j != i {
          var dot: Double = 0, ni: Double = 0, nj: Double = 0
          for k in 0..<c {
            dot += Double(z[i * c + k]) * Double(z[j * c + k])
            ni += Double(z[i * c + k]) * Double(z[i * c + k])
            nj += Double(z[j * c + k]) * Double(z[j * c + k])
          }
          if kind == .cosine { s += (ni > 0 && nj > 0) ? dot / (ni.squareRoot() * nj.squareRoot()) : 0 } else { s += dot }
        }
        XCTAssertEqual(Double(out[i]), s / Double(n - 1), accuracy: 1e-5, "\(kind) row \(i)")
      }
    }
    var one: [Float] = [9]
    [Float(1), 2].withUnsafeBufferPointer { zp in one.withUnsafeMutableBufferPointer { LAWFeatures.density(logits: zp.baseAddress!, n: 1, c: 2, kind: .cosine, out: $0.baseAddress!) } }
    XCTAssertEqual(one, [0])
  }

  func testFeaturesAreStandardisedAndLabelsEncoded() {
    var rng = RNG(seed: 1)
    let n = 9, c = 3
    let logits = (0..<(n * c)).map { _ in rng.normal() * 2 }
    let labels: [Int32] = (0..<n).map { Int32($0 % c) }
    var probs = [Float](repeating: 0, count: n * c), losses = [Float](repeating: 0, count: n)
    logits.withUnsafeBufferPointer { lp in
      labels.withUnsafeBufferPointer { yp in
        probs.withUnsafeMutableBufferPointer { pp in
          losses.withUnsafeMutableBufferPointer { CrossEntropy.forward(logits: lp.baseAddress!, labels: yp.baseAddress!, n: n, c: c, losses: $0.baseAddress!, probs: pp.baseAddress!) }
        }
      }
    }
    for enc in [LAWLabelEncoding.oneHot, .scalar] {
      let s = LAWFeatureSettings(classes: c, labelEncoding: enc, density: .cosine)
      XCTAssertEqual(s.featureCount, enc == .oneHot ? 6 : 4)
      var f = [Float](repeating: 0, count: n * s.featureCount)
      var scratch = [Float](repeating: 0, count: 3 * n)
      logits.withUnsafeBufferPointer { lp in
        probs.withUnsafeBufferPointer { pp in
          losses.withUnsafeBufferPointer { lsp in
            labels.withUnsafeBufferPointer { yp in
              f.withUnsafeMutableBufferPointer { fp in
                scratch.withUnsafeMutableBufferPointer {
                  LAWFeatures.compute(settings: s, logits: lp.baseAddress!, probs: pp.baseAddress!, losses: lsp.baseAddress!, labels: yp.baseAddress!, n: n, out: fp.baseAddress!, scratch: $0.baseAddress!)
                }
              }
            }
          }
        }
      }
      let F = s.featureCount
      for col in 0..<3 {
        let v = (0..<n).map { Double(f[$0 * F + col]) }
        let mean = v.reduce(0, +) / Double(n)
        let std = (v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n)).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 1e-5)
        XCTAssertEqual(std, 1, accuracy: 1e-4)
      }
      // Ranks are kept: the standardised loss orders examples like the raw loss.
      let order = (0..<n).sorted { losses[$0] < losses[$1] }
      for k in 1..<n { XCTAssertLessThanOrEqual(f[order[k - 1] * F], f[order[k] * F]) }
      for i in 0..<n {
        if enc == .oneHot {
          for k in 0..<c { XCTAssertEqual(f[i * F + 3 + k], k == Int(labels[i]) ? 1 : 0) }
        } else {
          XCTAssertEqual(f[i * F + 3], Float(labels[i]) / Float(c - 1))
        }
      }
    }
    var constant: [Float] = [2, 2, 2]
    constant.withUnsafeMutableBufferPointer { LAWFeatures.standardize($0.baseAddress!, n: 3) }
    XCTAssertEqual(constant, [0, 0, 0])
  }

  func testWeightingFunction() {
    let f: [Float] = [1, -2, 0.5, 0, 0, 0]  // two rows of F = 3
    let action: [Float] = [0.5, 0.25, -1, 0.1]
    var out = [Float](repeating: 0, count: 2)
    f.withUnsafeBufferPointer { fp in action.withUnsafeBufferPointer { ap in out.withUnsafeMutableBufferPointer { LAWFeatures.weights(features: fp.baseAddress!, n: 2, featureCount: 3, action: ap.baseAddress!, out: $0.baseAddress!) } } }
    XCTAssertEqual(out[0], 1 + tanhf(0.5 - 0.5 - 0.5 + 0.1), accuracy: 1e-6)
    XCTAssertEqual(out[1], 1 + tanhf(0.1), accuracy: 1e-6)
    XCTAssertTrue(out.allSatisfy { $0 > 0 && $0 < 2 })
    // Normalised: divided by the batch mean.
    var norm = [Float](repeating: 0, count: 2)
    f.withUnsafeBufferPointer { fp in action.withUnsafeBufferPointer { ap in norm.withUnsafeMutableBufferPointer { LAWFeatures.weights(features: fp.baseAddress!, n: 2, featureCount: 3, action: ap.baseAddress!, out: $0.baseAddress!, normalize: true) } } }
    let mean = (out[0] + out[1]) / 2
    XCTAssertEqual(norm[0], out[0] / mean, accuracy: 1e-6)
    XCTAssertEqual(norm[1], out[1] / mean, accuracy: 1e-6)
  }

  /// Exploration noise: an AR(1) process with stationary std σ; ρ = 1 keeps one draw per episode.
  func testExplorationNoiseCorrelation() throws {
    let ep = LAWEpisodeSlot(
      index: 0, noiseRNG: LAWEpisode.seeds(3).noise, state: LAWStageState(stage: 0, lossSmooth: 1, accSmooth: 0))
    let first = ep.nextNoise(count: 5, sigma: 0.5, rho: 1)
    XCTAssertEqual(ep.nextNoise(count: 5, sigma: 0.5, rho: 1), first)
    var xs: [Float] = [], pairs: [(Float, Float)] = []
    var prev = ep.nextNoise(count: 1, sigma: 0.5, rho: 0.5)[0]
    for _ in 0..<20000 {
      let v = ep.nextNoise(count: 1, sigma: 0.5, rho: 0.5)[0]
      xs.append(v)
      pairs.append((prev, v))
      prev = v
    }
    let std = (xs.map { $0 * $0 }.reduce(0, +) / Float(xs.count)).squareRoot()
    let corr = pairs.map { $0.0 * $0.1 }.reduce(0, +) / Float(pairs.count) / (std * std)
    XCTAssertEqual(std, 0.5, accuracy: 0.02)
    XCTAssertEqual(corr, 0.5, accuracy: 0.03)
  }

  func testStateSmoothing() {
    let s0 = LAWStageState(stage: 0, lossSmooth: 1, accSmooth: 0.1)
    let s1 = s0.advanced(meanLoss: log(10.0) * 0.5, accuracy: 0.7, beta: 0.5, classes: 10)
    XCTAssertEqual(s1.stage, 1)
    XCTAssertEqual(s1.lossSmooth, 0.75, accuracy: 1e-6)
    XCTAssertEqual(s1.accSmooth, 0.4, accuracy: 1e-6)
  }

  // MARK: - Search

  /// DNR: with a zero action (K ≡ 1) the target and reference train identically after the
  /// warm-up, so every reward and loss gap is exactly 0.
  func testZeroActionKeepsDuplicateNetworksIdentical() throws {
    var cfg = try smallSearchConfig()
    cfg.noise = 0
    let s = try LAWSearch(config: cfg, networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: 2)
    let mlp = s.agent.actor.mlp
    let last = mlp.offsets[mlp.offsets.count - 1]
    for i in last..<mlp.parameterCount { mlp.params[i] = 0 }
    try s.setData(syntheticData(n: 48, nVal: 20, seed: 1))
    let l = try s.runStage()  // warm-up; the FDU is skipped, so the actor stays zero for stage 1
    XCTAssertTrue(l.warmup)
    let l1 = try s.runStage()
    XCTAssertEqual(l1.reward, 0)
    XCTAssertEqual(l1.lossGap, 0)
    XCTAssertEqual(l1.targetAcc, l1.referenceAcc)
    XCTAssertGreaterThan(l1.fduUpdates, 0)
  }

  /// The same seed with N_a = 1 gives a bit-identical strategy; another seed does not.
  func testSearchIsDeterministic() throws {
    func run(seed: UInt64) throws -> ([Float], [Float], [Double]) {
      let cfg = try smallSearchConfig()
      let s = try LAWSearch(config: cfg, networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: seed)
      try s.setData(syntheticData(n: 64, nVal: 30, seed: 4))
      for _ in 0..<(2 * cfg.stages) { _ = try s.runStage() }
      XCTAssertEqual(s.roundsCompleted, 2)
      let st = s.strategy()
      return (st.actor.mlp.params.array, st.actor.embedding.array, s.episodeLogs[0].table)
    }
    let a = try run(seed: 42), b = try run(seed: 42), c = try run(seed: 43)
    XCTAssertEqual(a.0.map(\.bitPattern), b.0.map(\.bitPattern))
    XCTAssertEqual(a.1.map(\.bitPattern), b.1.map(\.bitPattern))
    XCTAssertEqual(a.2.map(\.bitPattern), b.2.map(\.bitPattern))
    XCTAssertNotEqual(a.0, c.0)
  }

  /// Two parallel episodes run, log, fill the buffer with N_a·(N′ − W) transitions per round and
  /// restore the global thread count afterwards.
  func testParallelEpisodesFillSharedBuffer() throws {
    let cfg = try smallSearchConfig(parallel: 2)
    let threads = Parallel.threads
    let s = try LAWSearch(config: cfg, networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: 9)
    try s.setData(syntheticData(n: 64, nVal: 30, seed: 4))
    var last = LAWStageLog()
    for _ in 0..<cfg.stages { last = try s.runStage() }
    XCTAssertTrue(last.roundDone)
    XCTAssertEqual(Parallel.threads, threads)
    XCTAssertEqual(s.buffer.count, 2 * (cfg.stages - cfg.warmupStages))
    XCTAssertEqual(s.episodeLogs.map(\.episode), [0, 1])
    XCTAssertEqual(s.episodeLogs.map(\.stagesDone), [cfg.stages, cfg.stages])
    // Per-example weights were recorded for the examples drawn in each stage.
    let log = s.episodeLogs[1]
    let t = cfg.stages - 1
    let seen = (0..<64).filter { !log.exampleWeights[t * 64 + $0].isNaN }
    XCTAssertFalse(seen.isEmpty)
    XCTAssertTrue(seen.allSatisfy { log.exampleWeights[t * 64 + $0] > 0 && log.exampleWeights[t * 64 + $0] < 2 })
    XCTAssertFalse(log.value("weight_corrupted", stage: t).isNaN)
  }

  func testSearchRejectsTooFewSteps() throws {
    var cfg = try smallSearchConfig()
    cfg.stages = 50
    cfg.warmupStages = 0
    let s = try LAWSearch(config: cfg, networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: 1)
    XCTAssertThrowsError(try s.setData(syntheticData(n: 16, nVal: 4, seed: 1)))
    XCTAssertThrowsError(try s.runStage())  // no data
  }

  // MARK: - Strategy

  func testStrategySaveLoadRoundTripAndCorruption() throws {
    var cfg = try smallSearchConfig()
    cfg.labelEncoding = .scalar
    cfg.normalizeWeights = true
    let s = try LAWSearch(config: cfg, networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: 3)
    let st = s.strategy()
    let p = path("s.law")
    try st.save(to: p)
    let back = try LAWStrategy.load(from: p)
    XCTAssertEqual(back.actor.mlp.params.array, st.actor.mlp.params.array)
    XCTAssertEqual(back.actor.embedding.array, st.actor.embedding.array)
    XCTAssertEqual(back.features, st.features)
    XCTAssertEqual(back.warmupStages, cfg.warmupStages)
    XCTAssertEqual(back.configSpec, cfg.spec)
    let state = LAWStageState(stage: 2, lossSmooth: 0.4, accSmooth: 0.8)
    XCTAssertEqual(back.action(for: state), st.action(for: state))
    // A trainer checkpoint is not a strategy; a flipped byte fails the checksum.
    let tr = try Trainer(network: try Network(try SpecParser.parse("mlp(hidden=4, classes=3)", input: .flat(6)), seed: 1), optimizer: OptimizerConfig(), schedule: Schedule(baseLR: 0.1), seed: 1)
    try tr.checkpoint().write(to: path("trainer.ck"))
    XCTAssertThrowsError(try LAWStrategy.load(from: path("trainer.ck")))
    var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: p)))
    bytes[bytes.count / 2] ^= 0xFF
    try Data(bytes).write(to: URL(fileURLWithPath: path("bad.law")))
    XCTAssertThrowsError(try LAWStrategy.load(from: path("bad.law"))) { e in
      guard case MetaweightError.io = e else { return XCTFail("\(e)") }
    }
    // Loading into a search with other sizes fails.
    var other = cfg
    other.embeddingDim = 5
    let s2 = try LAWSearch(config: other, networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: 3)
    XCTAssertThrowsError(try s2.loadStrategy(back))
    let s3 = try LAWSearch(config: cfg, networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: 99)
    try s3.loadStrategy(back)
    XCTAssertEqual(s3.strategy().action(for: state), st.action(for: state))
  }

  /// Remote episodes (the Ray path): a driver search whose episodes are made by other searches
  /// (same config, spec, seed, data) and driven through the remote calls, in the threaded order,
  /// ends with the same strategy, buffer and episode logs, bit for bit, as `runStage` with
  /// threads; an episode restored from its snapshot at a stage boundary into a fresh episode
  /// continues identically (a lost actor's restart).
  func testRemoteEpisodesMatchThreadedSearchBitForBit() throws {
    var cfg = try smallSearchConfig(parallel: 2)
    cfg.stages = 3
    let spec = "mlp(hidden=8, classes=3)"
    let data = syntheticData(n: 48, nVal: 16, seed: 4)
    let threaded = try LAWSearch(config: cfg, networkSpec: spec, inputLayout: .flat(6), seed: 9)
    try threaded.setData(data)
    var threadedLogs: [[LAWEpisodeLog]] = []
    for _ in 0..<(2 * cfg.stages) {
      let l = try threaded.runStage()
      if l.roundDone { threadedLogs.append(threaded.episodeLogs) }
    }
    let driver = try LAWSearch(config: cfg, networkSpec: spec, inputLayout: .flat(6), seed: 9)
    try driver.setData(data)
    let worker = try LAWSearch(config: cfg, networkSpec: spec, inputLayout: .flat(6), seed: 9)
    try worker.setData(data)
    var remoteLogs: [[LAWEpisodeLog]] = []
    for round in 0..<2 {
      let indices = try driver.remoteBeginRound()
      XCTAssertEqual(indices, [2 * round, 2 * round + 1])
      var eps = try (0..<2).map { try worker.makeEpisode(round: round, slot: $0, data: data) }
      for e in eps { e.begin() }
      try driver.remoteStartRound(states: eps.map { $0.state })
      for t in 0..<cfg.stages {
        let actions = try driver.remoteActions()
        XCTAssertEqual(try driver.remoteActions(), actions)  // drawn once per stage
        if round == 1 && t == 1 {
          // Slot 0's actor is lost: a fresh episode restored from its last snapshot takes over.
          let snap = try Checkpoint(decoding: eps[0].snapshot().encoded())
          let fresh = try worker.makeEpisode(round: round, slot: 0, data: data)
          try fresh.restore(snap)
          eps[0] = fresh
        }
        let outcomes = try (0..<2).map { try eps[$0].runStage(t, action: actions[$0]) }
        for e in eps { e.completed = nil }
        let log = try driver.remoteFinishStage(outcomes: outcomes, seconds: 0)
        XCTAssertEqual(log.roundDone, t == cfg.stages - 1)
      }
      remoteLogs.append(eps.map { $0.log })
    }
    XCTAssertEqual(driver.agent.actor.mlp.params.array, threaded.agent.actor.mlp.params.array)
    XCTAssertEqual(driver.agent.actor.embedding.array, threaded.agent.actor.embedding.array)
    XCTAssertEqual(driver.buffer.count, threaded.buffer.count)
    XCTAssertEqual(driver.roundsCompleted, 2)
    for (a, b) in zip(remoteLogs.joined(), threadedLogs.joined()) {
      XCTAssertEqual(a.episode, b.episode)
      XCTAssertEqual(a.table.map(\.bitPattern), b.table.map(\.bitPattern))
      XCTAssertEqual(a.actions, b.actions)
      XCTAssertEqual(a.exampleWeights.map(\.bitPattern), b.exampleWeights.map(\.bitPattern))
    }
    // Out of order: no remote stage before a round is started, no outcomes of another stage.
    XCTAssertThrowsError(try driver.remoteActions())
    _ = try driver.remoteBeginRound()
    XCTAssertThrowsError(try driver.remoteStartRound(states: []))
  }

  /// A snapshot whose reference section is damaged (checksum intact) is refused and leaves the
  /// episode as it was: its next stage is the same as an untouched twin's.
  func testRefusedEpisodeSnapshotChangesNothing() throws {
    let cfg = try smallSearchConfig(parallel: 1)
    let data = syntheticData(n: 32, nVal: 8, seed: 5)
    let s = try LAWSearch(config: cfg, networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: 2)
    try s.setData(data)
    let a = try s.makeEpisode(round: 0, slot: 0, data: data), b = try s.makeEpisode(round: 0, slot: 0, data: data)
    for e in [a, b] {
      e.begin()
      _ = try e.runStage(0, action: nil)
    }
    var bad = try s.makeEpisode(round: 0, slot: 0, data: data).snapshot()  // a fresh episode's target ...
    bad.floats["reference.network.params"] = [1, 2, 3]  // ... and a reference of the wrong size
    XCTAssertThrowsError(try a.restore(bad))
    let action = (0..<s.features.actionCount).map { Float($0 % 3) * 0.2 - 0.2 }
    XCTAssertEqual(try a.runStage(1, action: action), try b.runStage(1, action: action))
  }

  /// A strategy set as a trainer's weighting weights its `weightedStep` batches: K = 1 in warm-up
  /// stages, the strategy's K afterwards (matching `LAWStrategy.weights` on the same logits), one
  /// stage per total/N′ steps; the checkpoint keeps its `law_strategy.*` section.
  func testStrategyWeightingAppliesStrategy() throws {
    var cfg = try smallSearchConfig()
    cfg.warmupStages = 1
    cfg.actionScale = 2
    let s = try LAWSearch(config: cfg, networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: 3)
    // A strong strategy: push the loss coefficient to the bound.
    let mlp = s.agent.actor.mlp
    let last = mlp.offsets[mlp.offsets.count - 1]
    let h = mlp.widths[mlp.widths.count - 2]
    for i in last..<mlp.parameterCount { mlp.params[i] = 0 }
    mlp.params[last + mlp.outputWidth * h] = -5  // bias of output 0 (θ_loss) → −2·tanh(5)
    let strategy = s.strategy()
    let data = syntheticData(n: 40, nVal: 20, seed: 2)
    let net = try Network(try SpecParser.parse("mlp(hidden=8, classes=3)", input: .flat(6)), seed: 1)
    let tr = try Trainer(network: net, optimizer: OptimizerConfig(), schedule: Schedule(baseLR: 0.1), seed: 1)
    let hook = LAWStrategyWeighting(strategy: strategy, totalSteps: 8, valX: data.valX.array, valY: data.valY)
    tr.weighting = hook
    for step in 0..<8 {
      let x = data.x.pointer + (step % 4) * 10 * 6
      let y = Array(data.y[((step % 4) * 10)..<((step % 4) * 10 + 10)])
      _ = try y.withUnsafeBufferPointer {
        try tr.weightedStep(hook, x: x, n: 10, labels: $0.baseAddress!, xMeta: nil, m: 0, labelsMeta: nil)
      }
      let state = try XCTUnwrap(hook.state)
      XCTAssertEqual(state.stage, step / 2)
      let w = Array(hook.lastWeights)
      XCTAssertEqual(w.count, 10)
      // The same weights from the strategy applied to the step's (pre-update) logits.
      var expected = [Float](repeating: 0, count: 10)
      tr.labels32.withUnsafeBufferPointer { yp in
        expected.withUnsafeMutableBufferPointer {
          strategy.weights(logits: tr.tape.logits.pointer, labels: yp.baseAddress!, n: 10, state: state, out: $0.baseAddress!)
        }
      }
      XCTAssertEqual(w, expected)
      if state.stage < 1 {
        XCTAssertEqual(w, [Float](repeating: 1, count: 10))
      } else {
        XCTAssertTrue(w.contains { abs($0 - 1) > 0.1 })
        // The highest-loss example of the batch gets the lowest weight (θ_loss < 0).
        let losses = Array(UnsafeBufferPointer(start: tr.losses.pointer, count: 10))
        let worst = try XCTUnwrap((0..<10).max { losses[$0] < losses[$1] })
        XCTAssertEqual(w[worst], try XCTUnwrap(w.min()), accuracy: 1e-6)
      }
    }
    // The trainer's checkpoint carries the strategy's section; a refused step (NaN input at a
    // stage start) changes neither it nor the trainer.
    let saved = tr.checkpoint()
    XCTAssertNotNil(saved.ints["law_strategy.identity"])
    let bad = [Float](repeating: .nan, count: 60)
    let y10 = Array(data.y[0..<10])
    XCTAssertThrowsError(
      try bad.withUnsafeBufferPointer { xp in
        try y10.withUnsafeBufferPointer {
          try tr.weightedStep(hook, x: xp.baseAddress!, n: 10, labels: $0.baseAddress!, xMeta: nil, m: 0, labelsMeta: nil)
        }
      })
    let after = tr.checkpoint()
    XCTAssertEqual(after.ints, saved.ints)
    XCTAssertEqual(after.floats, saved.floats)
    XCTAssertEqual(after.bytes, saved.bytes)
    // Restoring into a trainer without the strategy is refused, naming it.
    let net2 = try Network(try SpecParser.parse("mlp(hidden=8, classes=3)", input: .flat(6)), seed: 1)
    let plain = try Trainer(network: net2, optimizer: OptimizerConfig(), schedule: Schedule(baseLR: 0.1), seed: 1)
    XCTAssertThrowsError(try plain.restore(saved)) { e in XCTAssertTrue("\(e)".contains("LAW strategy"), "\(e)") }
  }
}
