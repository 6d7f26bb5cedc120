import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining

/// The one-step look-ahead that L2RW, MW-Net and GDW share (ALGORITHMS.md, "Shared: the one-step
/// look-ahead and its exact meta-gradient"): the virtual step θ̂ = θ − α·d(g), the meta pass
/// v = ∇L_meta(θ̂) on the meta batch, and one forward-mode JVP ⟨v, ∂z_ic/∂θ⟩ of the train logits
/// at θ, from which every ∂L_meta(θ̂)/∂ω_ic = −α (p_ic − y_ic) JVP_ic follows.
///
/// It owns the look-ahead's buffers. The virtual step's gradient and v live in the trainer's
/// gradient buffer, which is free until the real backward pass (the last pass of a step)
/// overwrites it; θ̂ is the only parameter-sized buffer it adds.
public final class MetaStep: @unchecked Sendable {
  /// The method's options (virtual step size and momentum, memory mode).
  public let config: WeightingConfig
  /// Whether the look-ahead point is θ̂ ≠ θ (MW-Net, GDW: θ̂ and a meta tape of its own) rather
  /// than θ (L2RW: the meta pass runs first, in the train batch's tape).
  public let takesVirtualStep: Bool
  /// The meta batch's tape (MW-Net and GDW); nil when the meta pass runs in the trainer's
  /// train-batch tape (L2RW). It always shares the train tape's scratch areas, and with
  /// `memory = .low` it is laid over the train tape's dead activations (`TapePlanner`).
  public private(set) var tape: NetworkTape?
  /// The train tape `tape` was made against.
  private var tapeBase: NetworkTape?
  /// θ̂ (MW-Net, GDW; empty for L2RW).
  let thetaHat: FloatBuffer
  /// ⟨v, ∂z_ic/∂θ⟩ (n × C).
  var jvp = FloatBuffer(count: 0)
  /// Logit gradients of the meta batch, and GDW's manipulated logit gradient (max(n, m) × C).
  var logitGrad = FloatBuffer(count: 0)
  var metaLosses = FloatBuffer(count: 0)
  var metaProbs = FloatBuffer(count: 0)
  var metaCoef = FloatBuffer(count: 0)
  var metaLabels: [Int32] = []

  /// The look-ahead of `config`'s method for `network`.
  init(config: WeightingConfig, network: Network, takesVirtualStep: Bool) {
    self.config = config
    self.takesVirtualStep = takesVirtualStep
    thetaHat = FloatBuffer(count: takesVirtualStep ? network.params.count : 0)
  }

  /// Sizes the trainer's tape and the look-ahead's buffers for a train batch of `n` and a meta
  /// batch of `m`. The train tape also holds the meta batch with L2RW; in low-memory mode its
  /// dead buffers hold the meta batch's activations; in both cases it is sized for the larger batch.
  func reserve(trainer: Trainer, n: Int, m: Int) {
    trainer.reserve(batch: !takesVirtualStep || config.memory == .low ? max(n, m) : n)
    reserve(n: n, m: m, network: trainer.network, sharing: trainer.tape)
  }

  /// Sizes the buffers for a train batch of `n` and a meta batch of `m`. The meta tape shares the
  /// scratch areas of `sharing` (the trainer's tape) and, with `memory = .low`, is laid over its
  /// dead activations.
  func reserve(n: Int, m: Int, network: Network, sharing: NetworkTape? = nil) {
    let c = network.classes
    if logitGrad.count < max(n, m) * c { logitGrad = FloatBuffer(count: max(n, m) * c) }
    if jvp.count < n * c { jvp = FloatBuffer(count: n * c) }
    if takesVirtualStep && ((tape?.capacity ?? 0) < m || tapeBase !== sharing) {
      tape = nil  // release the old one first
      if let base = sharing, config.memory == .low {
        tape = network.makeTape(batch: m, overlaying: base)
      } else {
        tape = network.makeTape(batch: m, sharing: sharing)
      }
      tapeBase = sharing
    }
    if metaLosses.count < m {
      metaLosses = FloatBuffer(count: m)
      metaProbs = FloatBuffer(count: m * c)
      metaCoef = FloatBuffer(count: m)
    }
  }

  /// The virtual step size α (`virtualLR`, or the trainer's current learning rate) and the factor
  /// ∂d/∂g of the virtual direction (1 + μ for Nesterov when the virtual step uses momentum).
  func virtualStepSize(_ trainer: Trainer) -> (alpha: Float, factor: Float) {
    let alpha = config.virtualLR > 0 ? config.virtualLR : trainer.currentLearningRate
    let o = trainer.optimizer.config
    let factor: Float = config.virtualStepMomentum && o.kind == .sgd && o.nesterov ? 1 + o.momentum : 1
    return (alpha, factor)
  }

  /// θ̂ = θ − α·d(g) with g the virtual gradient in the trainer's `grads` (plain SGD, or the
  /// optimizer's momentum and weight decay when configured).
  func takeVirtualStep(_ trainer: Trainer, alpha: Float) {
    let count = trainer.network.params.count
    let theta = UnsafePointer(trainer.network.params.pointer)
    if config.virtualStepMomentum {
      trainer.optimizer.peekDirection(params: theta, grads: trainer.grads.pointer, out: thetaHat.pointer, count: count)
      Elementwise.step(theta, -alpha, UnsafePointer(thetaHat.pointer), into: thetaHat.pointer, count: count)
    } else {
      Elementwise.step(theta, -alpha, UnsafePointer(trainer.grads.pointer), into: thetaHat.pointer, count: count)
    }
  }

  /// Mean cross-entropy of the meta batch at `params` (batch statistics, running statistics
  /// untouched) and its gradient v = ∇L_meta into the trainer's `grads`. Runs in `tape`, or in
  /// the train batch's tape when there is none (its contents are then overwritten). Data-parallel
  /// (inside a step), the local part of v: the local sum divided by the global meta batch size M
  /// (`synchronizedMetaPass` completes it); the returned loss is the local batch's mean.
  func metaPass(
    _ trainer: Trainer, params: UnsafePointer<Float>, x: UnsafePointer<Float>, m: Int, labels: UnsafePointer<Int64>
  ) -> Double {
    if tape == nil { trainer.reserve(batch: m) }
    let tape = self.tape ?? trainer.tape
    let network = trainer.network
    let c = network.classes
    network.forward(x, batch: m, tape: tape, mode: .virtualTrain, rng: trainer.dropoutRNG, params: params)
    if metaLabels.count != m { metaLabels = [Int32](repeating: 0, count: m) }
    for i in 0..<m { metaLabels[i] = Int32(truncatingIfNeeded: labels[i]) }
    var loss: Double = 0
    let dl = logitGrad
    metaLabels.withUnsafeBufferPointer { lp in
      CrossEntropy.forward(
        logits: tape.logits.pointer, labels: lp.baseAddress!, n: m, c: c, losses: metaLosses.pointer,
        probs: metaProbs.pointer)
      for i in 0..<m {
        loss += Double(metaLosses[i])
        metaCoef[i] = 1 / Float(trainer.globalMetaBatch(m))
      }
      CrossEntropy.backward(
        probs: metaProbs.pointer, labels: lp.baseAddress!, n: m, c: c, coefficients: metaCoef.pointer,
        dlogits: dl.pointer)
    }
    network.backward(tape: tape, dlogits: UnsafePointer(dl.pointer), grads: trainer.grads.pointer)
    return loss / Double(m)
  }

  /// `metaPass`, then v summed over the workers (`SyncPoint.metaGradient`; nothing in a single
  /// process): v = ∇L_meta over the global meta batch in the trainer's `grads`.
  func synchronizedMetaPass(
    _ trainer: Trainer, params: UnsafePointer<Float>, x: UnsafePointer<Float>, m: Int, labels: UnsafePointer<Int64>
  ) throws -> Double {
    let loss = metaPass(trainer, params: params, x: x, m: m, labels: labels)
    try trainer.synchronize(trainer.grads.pointer, count: trainer.grads.count, at: .metaGradient)
    return loss
  }

  /// JVP_ic = ⟨v, ∂z_ic/∂θ⟩ of the train logits (the trainer's tape) along v (in the trainer's
  /// `grads`, from `metaPass`), into `jvp` (n × C).
  func tangents(_ trainer: Trainer) -> UnsafeMutablePointer<Float> {
    trainer.network.jvp(tape: trainer.tape, direction: trainer.grads.pointer, out: jvp.pointer)
    return jvp.pointer
  }

  /// The JVP (`tangents`), then qᵢ = Σ_c (p_ic − y_ic)·JVP_ic = ⟨v, ∇lᵢ⟩ into `out`.
  func projectedGradients(_ trainer: Trainer, n: Int, out: UnsafeMutablePointer<Float>) {
    let c = trainer.network.classes
    let pr = trainer.probs.pointer
    let jvp = tangents(trainer)
    trainer.labels32.withUnsafeBufferPointer { lp in
      for i in 0..<n {
        var s: Float = 0
        let t = Int(lp[i])
        for k in 0..<c { s += (pr[i * c + k] - (k == t ? 1 : 0)) * jvp[i * c + k] }
        out[i] = s
      }
    }
  }
}

/// A weighting method built on the one-step look-ahead (L2RW, MW-Net, GDW).
public protocol LookAheadWeighting: WeightingMethod {
  /// The look-ahead's buffers and passes.
  var meta: MetaStep { get }
}
