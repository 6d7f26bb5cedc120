import MetaweightTensor

#if canImport(Glibc)
  import Glibc
#endif

/// Optimizer settings (plain values, so the C ABI and checkpoints can carry them).
public struct OptimizerConfig: Sendable, Equatable {
  /// Which update rule.
  public enum Kind: Int32, Sendable { case sgd = 0, adam = 1 }
  /// Update rule.
  public var kind: Kind = .sgd
  /// SGD momentum μ.
  public var momentum: Float = 0
  /// Nesterov momentum (SGD).
  public var nesterov: Bool = false
  /// L2 weight decay λ (added to the gradient; for Adam with `decoupled`, AdamW-style).
  public var weightDecay: Float = 0
  /// Adam β₁.
  public var beta1: Float = 0.9
  /// Adam β₂.
  public var beta2: Float = 0.999
  /// Adam ε.
  public var epsilon: Float = 1e-8
  /// Decoupled weight decay (AdamW).
  public var decoupled: Bool = false
  /// Creates the default (plain SGD).
  public init() {}

  /// Validates ranges.
  /// - Throws: `MetaweightError.invalidArgument` naming the field.
  public func validate() throws {
    func check(_ ok: Bool, _ what: String) throws {
      if !ok { throw MetaweightError.invalidArgument(what) }
    }
    try check(momentum.isFinite && momentum >= 0 && momentum < 1, "momentum: expected 0 <= momentum < 1, got \(momentum)")
    try check(weightDecay.isFinite && weightDecay >= 0, "weight_decay: expected a finite value >= 0, got \(weightDecay)")
    try check(beta1.isFinite && beta1 >= 0 && beta1 < 1, "beta1: expected 0 <= beta1 < 1, got \(beta1)")
    try check(beta2.isFinite && beta2 >= 0 && beta2 < 1, "beta2: expected 0 <= beta2 < 1, got \(beta2)")
    try check(epsilon.isFinite && epsilon > 0, "eps: expected a finite value > 0, got \(epsilon)")
    try check(!nesterov || momentum > 0, "nesterov: requires momentum > 0")
  }
}

/// An optimizer: per-parameter state in flat buffers and one update rule (PyTorch semantics).
///
///     SGD   g ← ∇ + λθ;  b ← μb + g;  d ← g + μb (Nesterov) or b;  θ ← θ − η d
///     Adam  g ← ∇ + λθ (or θ ← θ(1 − ηλ) when decoupled);  m ← β₁m + (1−β₁)g;
///           v ← β₂v + (1−β₂)g²;  θ ← θ − η (m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)
public final class Optimizer: @unchecked Sendable {
  /// The settings.
  public let config: OptimizerConfig
  /// First state buffer (SGD momentum or Adam m); empty when unused.
  public let first: FloatBuffer
  /// Second state buffer (Adam v); empty when unused.
  public let second: FloatBuffer
  /// Number of updates taken.
  public var steps: Int64 = 0

  /// Creates state for `count` parameters.
  public init(config: OptimizerConfig, count: Int) {
    self.config = config
    let needsFirst = config.kind == .adam || config.momentum > 0
    first = FloatBuffer(count: needsFirst ? count : 0)
    second = FloatBuffer(count: config.kind == .adam ? count : 0)
  }

  /// Applies one update to `params` from `grads` with learning rate `lr`.
  public func update(params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>, count: Int, lr: Float) {
    steps += 1
    let c = config
    switch c.kind {
    case .sgd:
      let mom = c.momentum, wd = c.weightDecay, nest = c.nesterov
      let buf = first.pointer
      let useMomentum = mom > 0
      Parallel.forRange(count) { s, e in
        // Vector body (16 at a time) and scalar tail evaluate the same expressions.
        var i = s
        if useMomentum && nest {
          while i + 16 <= e {
            let g = Kernels.load(grads + i) + wd * Kernels.load(params + i)
            let b = mom * Kernels.load(buf + i) + g
            Kernels.store(b, buf + i)
            Kernels.store(Kernels.load(params + i) - lr * (g + mom * b), params + i)
            i += 16
          }
        } else if useMomentum {
          while i + 16 <= e {
            let g = Kernels.load(grads + i) + wd * Kernels.load(params + i)
            let b = mom * Kernels.load(buf + i) + g
            Kernels.store(b, buf + i)
            Kernels.store(Kernels.load(params + i) - lr * b, params + i)
            i += 16
          }
        } else {
          while i + 16 <= e {
            let g = Kernels.load(grads + i) + wd * Kernels.load(params + i)
            Kernels.store(Kernels.load(params + i) - lr * g, params + i)
            i += 16
          }
        }
        while i < e {
          let g = grads[i] + wd * params[i]
          var d = g
          if useMomentum {
            let b = mom * buf[i] + g
            buf[i] = b
            d = nest ? g + mom * b : b
          }
          params[i] -= lr * d
          i += 1
        }
      }
    case .adam:
      let b1 = c.beta1, b2 = c.beta2, eps = c.epsilon, wd = c.weightDecay, dec = c.decoupled
      let t = Double(steps)
      let bc1 = Float(1 - pow(Double(b1), t))
      let bc2s = Float((1 - pow(Double(b2), t)).squareRoot())
      let m = first.pointer, v = second.pointer
      let stepSize = lr / bc1
      let shrink = 1 - lr * wd
      Parallel.forRange(count) { s, e in
        var i = s
        while i + 16 <= e {
          var g = Kernels.load(grads + i)
          var p = Kernels.load(params + i)
          if dec { p *= shrink } else { g += wd * p }
          let mi = b1 * Kernels.load(m + i) + (1 - b1) * g
          let vi = b2 * Kernels.load(v + i) + (1 - b2) * g * g
          Kernels.store(mi, m + i)
          Kernels.store(vi, v + i)
          Kernels.store(p - stepSize * mi / (vi.squareRoot() / bc2s + eps), params + i)
          i += 16
        }
        while i < e {
          var g = grads[i]
          if dec { params[i] *= shrink } else { g += wd * params[i] }
          m[i] = b1 * m[i] + (1 - b1) * g
          v[i] = b2 * v[i] + (1 - b2) * g * g
          params[i] -= stepSize * m[i] / (v[i].squareRoot() / bc2s + eps)
          i += 1
        }
      }
    }
  }

  /// The direction a plain step would subtract, without changing any state: used by the
  /// meta-weighting methods' virtual step when it includes momentum and weight decay.
  /// out = d such that θ̂ = θ − lr·d.
  public func peekDirection(params: UnsafePointer<Float>, grads: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int) {
    let c = config
    let wd = c.weightDecay
    if c.kind == .sgd && c.momentum > 0 {
      let mom = c.momentum, nest = c.nesterov, buf = first.pointer
      for i in 0..<count {
        let g = grads[i] + wd * params[i]
        let b = mom * buf[i] + g
        out[i] = nest ? g + mom * b : b
      }
    } else {
      for i in 0..<count { out[i] = grads[i] + wd * params[i] }
    }
  }

  /// Clears all state.
  public func reset() {
    first.fill(0)
    second.fill(0)
    steps = 0
  }
}

/// Learning-rate schedule over optimizer steps: a base shape with an optional linear warm-up.
public struct Schedule: Sendable, Equatable {
  /// Shape after warm-up.
  public enum Kind: Int32, Sendable { case constant = 0, multiStep = 1, cosine = 2 }
  /// Base learning rate.
  public var baseLR: Float
  /// Shape.
  public var kind: Kind = .constant
  /// Steps at which multi-step multiplies by `gamma`.
  public var milestones: [Int64] = []
  /// Multi-step factor.
  public var gamma: Float = 0.1
  /// Total steps (cosine).
  public var totalSteps: Int64 = 0
  /// Floor of the cosine schedule.
  public var minLR: Float = 0
  /// Linear warm-up length in steps (lr ramps from baseLR/warmup to baseLR).
  public var warmupSteps: Int64 = 0

  /// A constant schedule.
  public init(baseLR: Float) { self.baseLR = baseLR }

  /// Validates the settings.
  /// - Throws: `MetaweightError.invalidArgument` naming the field.
  public func validate() throws {
    guard baseLR.isFinite, baseLR >= 0 else {
      throw MetaweightError.invalidArgument("lr: expected a finite value >= 0, got \(baseLR)")
    }
    guard gamma.isFinite, gamma > 0 else { throw MetaweightError.invalidArgument("gamma: expected > 0, got \(gamma)") }
    guard minLR.isFinite, minLR >= 0 else { throw MetaweightError.invalidArgument("min_lr: expected >= 0, got \(minLR)") }
    guard warmupSteps >= 0 else { throw MetaweightError.invalidArgument("warmup_steps: expected >= 0, got \(warmupSteps)") }
    guard milestones.allSatisfy({ $0 >= 0 }) else {
      throw MetaweightError.invalidArgument("milestones: expected non-negative steps, got \(milestones)")
    }
    if kind == .cosine && totalSteps <= 0 {
      throw MetaweightError.invalidArgument("total_steps: cosine needs total_steps > 0, got \(totalSteps)")
    }
  }

  /// The learning rate for the update with index `step` (0-based).
  public func learningRate(at step: Int64) -> Float {
    var lr: Float
    switch kind {
    case .constant: lr = baseLR
    case .multiStep:
      let passed = milestones.filter { step >= $0 }.count
      lr = baseLR * pow(gamma, Float(passed))
    case .cosine:
      let t = min(Double(step), Double(totalSteps)) / Double(max(totalSteps, 1))
      lr = minLR + (baseLR - minLR) * Float(0.5 * (1 + cos(Double.pi * t)))
    }
    if warmupSteps > 0 && step < warmupSteps {
      lr *= Float(step + 1) / Float(warmupSteps)
    }
    return lr
  }
}
