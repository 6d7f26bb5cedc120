import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining

#if canImport(Glibc)
  import Glibc
#endif

/// MW-Net's weighting function V(ℓ; Θ): Linear(1, h) → ReLU → Linear(h, 1) → Sigmoid, applied to
/// each example's loss. Parameters live in one flat buffer [W1 (h), b1 (h), W2 (h), b2 (1)].
///
///     forward   aⱼ = W1ⱼ ℓ + b1ⱼ,  o = Σⱼ W2ⱼ relu(aⱼ) + b2,  v = σ(o)
///     backward  ∂o = ∂v·v(1−v);  ∂W2ⱼ = Σ ∂o relu(aⱼ);  ∂b2 = Σ ∂o;
///               ∂W1ⱼ = Σ ∂o W2ⱼ [aⱼ>0] ℓ;  ∂b1ⱼ = Σ ∂o W2ⱼ [aⱼ>0]
///     dV/dℓ     v(1−v) Σⱼ W2ⱼ [aⱼ>0] W1ⱼ
public final class WeightNet: @unchecked Sendable {
  /// Hidden width h.
  public let hidden: Int
  /// Θ.
  public let params: FloatBuffer
  /// ∂/∂Θ of the last backward call.
  public let grads: FloatBuffer

  /// Creates a weight net with PyTorch's default initialisation, from `seed`.
  public init(hidden: Int = 100, seed: UInt64) {
    self.hidden = hidden
    params = FloatBuffer(count: 3 * hidden + 1)
    grads = FloatBuffer(count: 3 * hidden + 1)
    var rng = RNG(seed: seed)
    let p = params.pointer
    for j in 0..<hidden { p[j] = 2 * rng.uniform() - 1 }  // W1: fan_in 1 → U(−1, 1)
    for j in 0..<hidden { p[hidden + j] = 2 * rng.uniform() - 1 }  // b1
    let bound = 1 / Float(hidden).squareRoot()
    for j in 0...hidden { p[2 * hidden + j] = (2 * rng.uniform() - 1) * bound }  // W2, b2
  }

  /// v = V(ℓ) for each of `n` losses (optionally with parameters `theta`).
  public func forward(_ losses: UnsafePointer<Float>, n: Int, out: UnsafeMutablePointer<Float>, theta: UnsafePointer<Float>? = nil) {
    let p = theta ?? UnsafePointer(params.pointer)
    let h = hidden
    for i in 0..<n {
      let l = losses[i]
      var o = p[3 * h]
      for j in 0..<h {
        let a = p[j] * l + p[h + j]
        if a > 0 { o += p[2 * h + j] * a }
      }
      out[i] = 1 / (1 + expf(-o))
    }
  }

  /// dV/dℓ at each loss (needed when the loss fed to V is not detached).
  public func inputDerivative(_ losses: UnsafePointer<Float>, n: Int, out: UnsafeMutablePointer<Float>) {
    let p = params.pointer
    let h = hidden
    let v = [Float](unsafeUninitializedCapacity: n) { b, c in forward(losses, n: n, out: b.baseAddress!); c = n }
    for i in 0..<n {
      var s: Float = 0
      for j in 0..<h where p[j] * losses[i] + p[h + j] > 0 { s += p[2 * h + j] * p[j] }
      out[i] = v[i] * (1 - v[i]) * s
    }
  }

  /// Θ-gradient of Σᵢ dvᵢ·V(ℓᵢ) into `grads` (overwriting).
  public func backward(_ losses: UnsafePointer<Float>, dv: UnsafePointer<Float>, n: Int) {
    let p = params.pointer
    let g = grads.pointer
    let h = hidden
    g.update(repeating: 0, count: 3 * h + 1)
    let v = [Float](unsafeUninitializedCapacity: n) { b, c in forward(losses, n: n, out: b.baseAddress!); c = n }
    for i in 0..<n {
      let l = losses[i]
      let dout = dv[i] * v[i] * (1 - v[i])
      g[3 * h] += dout
      for j in 0..<h {
        let a = p[j] * l + p[h + j]
        if a > 0 {
          g[2 * h + j] += dout * a
          let da = dout * p[2 * h + j]
          g[j] += da * l
          g[h + j] += da
        }
      }
    }
  }
}

extension WeightNet {
  /// Θ-gradient of Σᵢ dcᵢ·cᵢ with cᵢ = V(ℓᵢ) + ℓᵢ·V′(ℓᵢ) (the virtual-step coefficient when the
  /// loss fed to V is not detached), into `grads` (overwriting). With q = σ′(o) = v(1−v),
  /// q′ = q(1−2v), D = Σⱼ W2ⱼ W1ⱼ mⱼ, mⱼ = [aⱼ > 0]:
  ///     ∂V′/∂W1ⱼ = q W2ⱼ mⱼ + q′ D W2ⱼ mⱼ ℓ,   ∂V′/∂b1ⱼ = q′ D W2ⱼ mⱼ,
  ///     ∂V′/∂W2ⱼ = q W1ⱼ mⱼ + q′ D relu(aⱼ),  ∂V′/∂b2 = q′ D.
  public func backwardUndetached(_ losses: UnsafePointer<Float>, dc: UnsafePointer<Float>, n: Int) {
    let s = [Float](unsafeUninitializedCapacity: n) { b, c in
      for i in 0..<n { b[i] = dc[i] * losses[i] }  // coefficient of V′(ℓᵢ) in Σ dc·c
      c = n
    }
    s.withUnsafeBufferPointer { backward(losses, dv: dc, dvPrime: $0.baseAddress!, n: n) }
  }

  /// Θ-gradient of Σᵢ (dvᵢ·V(ℓᵢ) + dpᵢ·V′(ℓᵢ)) into `grads` (overwriting), V′ = dV/dℓ; the
  /// derivatives of V′ are those listed at `backwardUndetached`.
  public func backward(_ losses: UnsafePointer<Float>, dv: UnsafePointer<Float>, dvPrime dp: UnsafePointer<Float>, n: Int) {
    backward(losses, dv: dv, n: n)  // the V(ℓ) part
    let p = params.pointer
    let g = grads.pointer
    let h = hidden
    for i in 0..<n {
      let l = losses[i]
      var o = p[3 * h]
      var d: Float = 0
      for j in 0..<h {
        let a = p[j] * l + p[h + j]
        if a > 0 {
          o += p[2 * h + j] * a
          d += p[2 * h + j] * p[j]
        }
      }
      let v = 1 / (1 + expf(-o))
      let q = v * (1 - v)
      let q1 = q * (1 - 2 * v)
      let s = dp[i]  // coefficient of V′(ℓᵢ)
      g[3 * h] += s * q1 * d
      for j in 0..<h {
        let a = p[j] * l + p[h + j]
        guard a > 0 else { continue }
        g[j] += s * (q * p[2 * h + j] + q1 * d * p[2 * h + j] * l)
        g[h + j] += s * q1 * d * p[2 * h + j]
        g[2 * h + j] += s * (q * p[j] + q1 * d * a)
      }
    }
  }
}
