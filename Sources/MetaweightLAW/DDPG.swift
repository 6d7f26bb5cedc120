import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting

#if canImport(Glibc)
  import Glibc
#endif

/// The strategy model's actor μ(s): a learned stage embedding table E [N′ × d] and a 4-layer MLP
/// [d+2 → h → h → h → A] whose output goes through `scale · tanh`, so the action (θ_T, b) lies in
/// ±scale per entry.
///
/// The state row fed to the MLP is s = [E[T], ℓ̄, ā] (see `LAWStageState`).
public final class LAWActor: @unchecked Sendable {
  /// The MLP.
  public let mlp: DenseMLP
  /// E: one d-vector per stage, row-major [stages × d], initialised N(0, embeddingStd²).
  public let embedding: FloatBuffer
  /// N′.
  public let stages: Int
  /// d.
  public let embeddingDim: Int
  /// A = F + 1.
  public let actionCount: Int
  /// The tanh output scale.
  public let scale: Float
  private let input = Scratch()
  private let output = Scratch()

  /// Creates an actor initialised from `seed` (embedding ~ N(0, `embeddingStd`²)).
  public init(
    stages: Int, embeddingDim: Int, hidden: Int, actionCount: Int, scale: Float, seed: UInt64, embeddingStd: Float = 1
  ) {
    self.stages = stages
    self.embeddingDim = embeddingDim
    self.actionCount = actionCount
    self.scale = scale
    var rng = RNG(seed: seed)
    mlp = DenseMLP(widths: [embeddingDim + 2, hidden, hidden, hidden, actionCount], seed: rng.next())
    embedding = FloatBuffer(count: stages * embeddingDim)
    for i in 0..<embedding.count { embedding[i] = rng.normal() * embeddingStd }
  }

  /// State width d + 2.
  public var stateWidth: Int { embeddingDim + 2 }

  /// Writes the state rows [E[T], ℓ̄, ā] of `states` into `out` [n × (d+2)] using `table` (default: E).
  public func stateRows(_ states: [LAWStageState], table: UnsafePointer<Float>? = nil, out: UnsafeMutablePointer<Float>) {
    let e = table ?? UnsafePointer(embedding.pointer)
    let d = embeddingDim, w = stateWidth
    for (i, s) in states.enumerated() {
      let row = out + i * w
      let t = min(max(s.stage, 0), stages - 1)
      row.update(from: e + t * d, count: d)
      row[d] = s.lossSmooth
      row[d + 1] = s.accSmooth
    }
  }

  /// μ(s) for each state into `out` [n × A], with parameters `theta`/`table` (default: the
  /// actor's own; the agent passes its target copies).
  public func act(
    _ states: [LAWStageState], out: UnsafeMutablePointer<Float>, theta: UnsafePointer<Float>? = nil,
    table: UnsafePointer<Float>? = nil
  ) {
    let n = states.count
    if n == 0 { return }
    let x = input.pointer(count: n * stateWidth)
    stateRows(states, table: table, out: x)
    let o = mlp.forward(UnsafePointer(x), n: n, theta: theta)
    for i in 0..<(n * actionCount) { out[i] = scale * tanhf(o[i]) }
  }

  /// μ(s) of one state.
  public func action(_ state: LAWStageState) -> [Float] {
    let buf = output.pointer(count: actionCount)
    act([state], out: buf)
    return Array(UnsafeBufferPointer(start: buf, count: actionCount))
  }

  /// A deep copy (parameters and embedding) with its own scratch.
  public func copy() -> LAWActor {
    let a = LAWActor(stages: stages, embeddingDim: embeddingDim, hidden: mlp.widths[1], actionCount: actionCount, scale: scale, seed: 0)
    a.mlp.params.copy(from: mlp.params)
    a.embedding.copy(from: embedding)
    return a
  }
}

/// Statistics of one FDU minibatch update.
public struct LAWUpdateStats: Sendable {
  /// Mean (Q(s, a) − y)² before the critic step.
  public var criticLoss: Double = 0
  /// Mean Q(s, μ(s)) seen by the actor step.
  public var actorQ: Double = 0
  /// Creates zero statistics.
  public init() {}
}

/// DDPG over stage-level transitions (Lillicrap et al. 2015, as LAW uses it):
/// critic Q(s, θ) = MLP [d+2+A → h → h → h → 1] on the state row followed by the action divided by
/// the action scale; actor `LAWActor`; Adam for both (the embedding with the actor's rate);
/// target copies of actor, embedding and critic, soft-updated with τ after every minibatch.
///
///     y   = r + γ (1 − done) Q′(s′, μ′(s′))         (s′ uses the target embedding)
///     L_Q = (1/B) Σ (Q(s, a) − y)²                   (eq. 10–12; s uses E, not differentiated)
///     L_μ = −(1/B) Σ Q(s, μ(s)) + λ (1/B) Σ ‖o(s)‖²   (eq. 13; o = μ's pre-tanh output; the
///                                                     gradient reaches μ's weights and E through
///                                                     μ's input, not through Q's)
public final class LAWAgent: @unchecked Sendable {
  /// The settings (γ, τ, learning rates, sizes).
  public let config: LAWConfig
  /// μ.
  public let actor: LAWActor
  /// Q.
  public let critic: DenseMLP
  /// μ′'s MLP parameters.
  public let targetActor: FloatBuffer
  /// μ′'s embedding.
  public let targetEmbedding: FloatBuffer
  /// Q′'s parameters.
  public let targetCritic: FloatBuffer
  /// Adam of the actor's MLP.
  public let actorOptimizer: Optimizer
  /// Adam of the embedding.
  public let embeddingOptimizer: Optimizer
  /// Adam of the critic.
  public let criticOptimizer: Optimizer
  /// Minibatch updates made.
  public private(set) var updates: Int64 = 0
  let embeddingGrads: FloatBuffer
  private let sx = Scratch(), cx = Scratch(), cdx = Scratch(), ax = Scratch(), adx = Scratch()
  private let aout = Scratch(), yv = Scratch(), dq = Scratch(), dout = Scratch()

  /// Creates an agent for actions of `actionCount` entries, initialised from `seed`.
  public init(config: LAWConfig, actionCount: Int, seed: UInt64) {
    self.config = config
    var rng = RNG(seed: seed)
    actor = LAWActor(
      stages: config.stages, embeddingDim: config.embeddingDim, hidden: config.actorHidden,
      actionCount: actionCount, scale: config.actionScale, seed: rng.next(), embeddingStd: config.embeddingStd)
    let h = config.criticHidden
    critic = DenseMLP(widths: [config.embeddingDim + 2 + actionCount, h, h, h, 1], seed: rng.next())
    targetActor = actor.mlp.params.clone()
    targetEmbedding = actor.embedding.clone()
    targetCritic = critic.params.clone()
    var adam = OptimizerConfig()
    adam.kind = .adam
    actorOptimizer = Optimizer(config: adam, count: actor.mlp.parameterCount)
    embeddingOptimizer = Optimizer(config: adam, count: actor.embedding.count)
    criticOptimizer = Optimizer(config: adam, count: critic.parameterCount)
    embeddingGrads = FloatBuffer(count: actor.embedding.count)
  }

  /// A.
  public var actionCount: Int { actor.actionCount }

  /// Critic input rows [state row, action/scale] for `states` (embedding `table`) and actions
  /// `actions` [n × A] into `out`.
  private func criticRows(
    _ states: [LAWStageState], table: UnsafePointer<Float>, actions: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>
  ) {
    let n = states.count, sw = actor.stateWidth, a = actionCount, w = sw + a
    let s = sx.pointer(count: n * sw)
    actor.stateRows(states, table: table, out: s)
    let inv = 1 / actor.scale
    for i in 0..<n {
      let row = out + i * w
      row.update(from: s + i * sw, count: sw)
      for k in 0..<a { row[sw + k] = actions[i * a + k] * inv }
    }
  }

  /// Q(s, a) for each (state, action) with the online critic (for tests and diagnostics).
  public func q(_ states: [LAWStageState], actions: [Float]) -> [Float] {
    let n = states.count
    let w = actor.stateWidth + actionCount
    let x = cx.pointer(count: max(n * w, 1))
    actions.withUnsafeBufferPointer { ap in
      criticRows(states, table: UnsafePointer(actor.embedding.pointer), actions: ap.baseAddress!, out: x)
    }
    let q = critic.forward(UnsafePointer(x), n: n)
    return Array(UnsafeBufferPointer(start: q, count: n))
  }

  /// One critic step on `batch` (eq. 10–12); returns the loss before the step.
  @discardableResult
  public func updateCritic(_ batch: [LAWTransition]) -> Double {
    let n = batch.count
    guard n > 0 else { return 0 }
    let a = actionCount, w = actor.stateWidth + a
    let x = cx.pointer(count: n * w)
    let y = yv.pointer(count: n)
    // Targets from μ′ and Q′.
    let nextStates = batch.map { $0.next }
    let anext = aout.pointer(count: n * a)
    actor.act(nextStates, out: anext, theta: UnsafePointer(targetActor.pointer), table: UnsafePointer(targetEmbedding.pointer))
    criticRows(nextStates, table: UnsafePointer(targetEmbedding.pointer), actions: UnsafePointer(anext), out: x)
    let qn = critic.forward(UnsafePointer(x), n: n, theta: UnsafePointer(targetCritic.pointer))
    let gamma = config.gamma
    for i in 0..<n { y[i] = batch[i].reward + (batch[i].done ? 0 : gamma * qn[i]) }
    // Q(s, a) and its regression step.
    let acts = aout.pointer(count: n * a)
    for i in 0..<n {
      batch[i].action.withUnsafeBufferPointer { (acts + i * a).update(from: $0.baseAddress!, count: a) }
    }
    criticRows(batch.map { $0.state }, table: UnsafePointer(actor.embedding.pointer), actions: UnsafePointer(acts), out: x)
    let q = critic.forward(UnsafePointer(x), n: n)
    let g = dq.pointer(count: n)
    var loss: Double = 0
    let scale = 2 / Float(n)
    for i in 0..<n {
      let d = q[i] - y[i]
      loss += Double(d) * Double(d)
      g[i] = scale * d
    }
    critic.backward(UnsafePointer(g))
    criticOptimizer.update(params: critic.params.pointer, grads: critic.grads.pointer, count: critic.parameterCount, lr: config.criticLR)
    return loss / Double(n)
  }

  /// One actor step on the states of `batch` (eq. 13) against the current critic; returns the
  /// mean Q(s, μ(s)) before the step.
  @discardableResult
  public func updateActor(_ batch: [LAWTransition]) -> Double {
    let states = batch.map { $0.state }
    return updateActor(states: states)
  }

  /// One actor step that raises the mean of Q(s, μ(s)) over `states`.
  @discardableResult
  public func updateActor(states: [LAWStageState]) -> Double {
    let n = states.count
    guard n > 0 else { return 0 }
    let a = actionCount, sw = actor.stateWidth, w = sw + a, d = actor.embeddingDim
    let s = ax.pointer(count: n * sw)
    actor.stateRows(states, out: s)
    let o = actor.mlp.forward(UnsafePointer(s), n: n)
    let acts = aout.pointer(count: n * a)
    for i in 0..<(n * a) { acts[i] = actor.scale * tanhf(o[i]) }
    let x = cx.pointer(count: n * w)
    criticRows(states, table: UnsafePointer(actor.embedding.pointer), actions: UnsafePointer(acts), out: x)
    let q = critic.forward(UnsafePointer(x), n: n)
    var meanQ: Double = 0
    for i in 0..<n { meanQ += Double(q[i]) }
    meanQ /= Double(n)
    let g = dq.pointer(count: n)
    for i in 0..<n { g[i] = -1 / Float(n) }
    let dxc = cdx.pointer(count: n * w)
    critic.backward(UnsafePointer(g), dx: dxc)  // critic.grads are overwritten and not applied
    // ∂L/∂o = ∂L/∂(a/scale) · (1/scale) · scale · (1 − tanh²) = dxc_action · (1 − (a/scale)²),
    // plus the L2 penalty λ·(1/n)Σ‖o‖²'s 2λo/n.
    let go = dout.pointer(count: n * a)
    let inv = 1 / actor.scale
    let l2 = 2 * config.actorL2 / Float(n)
    for i in 0..<n {
      for k in 0..<a {
        let t = acts[i * a + k] * inv
        go[i * a + k] = dxc[i * w + sw + k] * (1 - t * t) + l2 * o[i * a + k]
      }
    }
    let dxa = adx.pointer(count: n * sw)
    actor.mlp.backward(UnsafePointer(go), dx: dxa)
    embeddingGrads.fill(0)
    let eg = embeddingGrads.pointer
    for (i, st) in states.enumerated() {
      let t = min(max(st.stage, 0), actor.stages - 1)
      for j in 0..<d { eg[t * d + j] += dxa[i * sw + j] }
    }
    actorOptimizer.update(params: actor.mlp.params.pointer, grads: actor.mlp.grads.pointer, count: actor.mlp.parameterCount, lr: config.actorLR)
    embeddingOptimizer.update(params: actor.embedding.pointer, grads: eg, count: actor.embedding.count, lr: config.actorLR)
    return meanQ
  }

  /// θ′ ← τθ + (1 − τ)θ′ for the target actor, embedding and critic.
  public func softUpdateTargets() {
    let tau = config.tau
    softUpdate(targetActor.pointer, from: actor.mlp.params.pointer, count: targetActor.count, tau: tau)
    softUpdate(targetEmbedding.pointer, from: actor.embedding.pointer, count: targetEmbedding.count, tau: tau)
    softUpdate(targetCritic.pointer, from: critic.params.pointer, count: targetCritic.count, tau: tau)
  }

  /// One FDU minibatch: critic step, actor step, soft update of the targets.
  public func update(_ batch: [LAWTransition]) -> LAWUpdateStats {
    var s = LAWUpdateStats()
    s.criticLoss = updateCritic(batch)
    s.actorQ = updateActor(batch)
    softUpdateTargets()
    updates += 1
    return s
  }

  /// Saves every parameter, target and optimizer state into `ck` under `prefix`.
  public func save(into ck: inout Checkpoint, prefix: String = "law.agent") {
    ck.floats["\(prefix).actor"] = actor.mlp.params.array
    ck.floats["\(prefix).embedding"] = actor.embedding.array
    ck.floats["\(prefix).critic"] = critic.params.array
    ck.floats["\(prefix).target_actor"] = targetActor.array
    ck.floats["\(prefix).target_embedding"] = targetEmbedding.array
    ck.floats["\(prefix).target_critic"] = targetCritic.array
    for (name, opt) in [("actor", actorOptimizer), ("embedding", embeddingOptimizer), ("critic", criticOptimizer)] {
      ck.floats["\(prefix).opt.\(name).m"] = opt.first.array
      ck.floats["\(prefix).opt.\(name).v"] = opt.second.array
      ck.ints["\(prefix).opt.\(name).steps"] = [opt.steps]
    }
    ck.ints["\(prefix).updates"] = [updates]
  }

  /// Restores what `save(into:prefix:)` wrote (bit-exact); nothing changes when it throws.
  /// - Throws: `MetaweightError.io` naming a missing section or a size mismatch.
  public func restore(_ ck: Checkpoint, prefix: String = "law.agent") throws {
    let a = try ck.requireFloats("\(prefix).actor", count: actor.mlp.params.count)
    let e = try ck.requireFloats("\(prefix).embedding", count: actor.embedding.count)
    let c = try ck.requireFloats("\(prefix).critic", count: critic.params.count)
    let ta = try ck.requireFloats("\(prefix).target_actor", count: targetActor.count)
    let te = try ck.requireFloats("\(prefix).target_embedding", count: targetEmbedding.count)
    let tc = try ck.requireFloats("\(prefix).target_critic", count: targetCritic.count)
    var opts: [(Optimizer, [Float], [Float], Int64)] = []
    for (name, opt) in [("actor", actorOptimizer), ("embedding", embeddingOptimizer), ("critic", criticOptimizer)] {
      let m = try ck.requireFloats("\(prefix).opt.\(name).m", count: opt.first.count)
      let v = try ck.requireFloats("\(prefix).opt.\(name).v", count: opt.second.count)
      let steps = try ck.requireInts("\(prefix).opt.\(name).steps", count: 1)[0]
      opts.append((opt, m, v, steps))
    }
    let u = try ck.requireInts("\(prefix).updates", count: 1)[0]
    actor.mlp.params.pointer.update(from: a, count: a.count)
    actor.embedding.pointer.update(from: e, count: e.count)
    critic.params.pointer.update(from: c, count: c.count)
    targetActor.pointer.update(from: ta, count: ta.count)
    targetEmbedding.pointer.update(from: te, count: te.count)
    targetCritic.pointer.update(from: tc, count: tc.count)
    for (opt, m, v, steps) in opts {
      opt.first.pointer.update(from: m, count: m.count)
      opt.second.pointer.update(from: v, count: v.count)
      opt.steps = steps
    }
    updates = u
  }
}

/// Runs the Full Data Update (Algorithm 1 of the paper): `epochs` passes over every transition of
/// `buffer`, each in a fresh random order drawn from `rng`, split into minibatches of `batch`
/// (the last one smaller); one `LAWAgent.update` per minibatch. Returns the number of updates
/// (= epochs · ⌈count/batch⌉) and the mean critic loss / actor Q over the last epoch.
public func fullDataUpdate(
  agent: LAWAgent, buffer: LAWReplayBuffer, epochs: Int, batch: Int, rng: inout RNG
) -> (updates: Int, criticLoss: Double, actorQ: Double) {
  let n = buffer.count
  guard n > 0, epochs > 0, batch > 0 else { return (0, .nan, .nan) }
  var updates = 0
  var lossSum: Double = 0, qSum: Double = 0
  var lastCount = 0
  for e in 0..<epochs {
    let order = rng.permutation(n)
    var start = 0
    if e == epochs - 1 { lossSum = 0; qSum = 0; lastCount = 0 }
    while start < n {
      let end = min(start + batch, n)
      let mb = order[start..<end].map { buffer.items[$0] }
      let s = agent.update(mb)
      updates += 1
      if e == epochs - 1 {
        lossSum += s.criticLoss
        qSum += s.actorQ
        lastCount += 1
      }
      start = end
    }
  }
  return (updates, lossSum / Double(max(lastCount, 1)), qSum / Double(max(lastCount, 1)))
}
