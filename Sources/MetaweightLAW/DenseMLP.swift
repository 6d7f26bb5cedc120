import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting

/// A small fully connected network over flat buffers for LAW's actor and critic:
/// Linear → ReLU → … → Linear, with an identity output.
///
/// Parameters live in one flat buffer, layer by layer as [W (out × in), b (out)], so a target
/// network, an optimizer or a checkpoint is one buffer of the same length. `forward` keeps the
/// activations of the last call; `backward` uses them, so call it right after the matching
/// `forward` (with the same parameters).
///
///     forward   h₀ = x;  hₗ = relu(hₗ₋₁·Wₗᵀ + bₗ) (no relu on the last layer)
///     backward  dWₗ = dzₗᵀ·hₗ₋₁,  dbₗ = Σₙ dzₗ,  dhₗ₋₁ = dzₗ·Wₗ,  dzₗ₋₁ = dhₗ₋₁ ⊙ [hₗ₋₁ > 0]
public final class DenseMLP: @unchecked Sendable {
  /// [input, hidden…, output].
  public let widths: [Int]
  /// Offsets of each layer's W in the flat buffer (b follows W).
  public let offsets: [Int]
  /// Number of parameters.
  public let parameterCount: Int
  /// The parameters.
  public let params: FloatBuffer
  /// ∂/∂params of the last `backward` (overwritten).
  public let grads: FloatBuffer
  private var acts: [FloatBuffer] = []
  private var capacity = 0
  private var usedParams: UnsafePointer<Float>
  private var lastBatch = 0
  private let gradA = Scratch()
  private let gradB = Scratch()

  /// Creates the network with PyTorch's default initialisation U(±1/√fan_in) for every weight and
  /// bias except the last layer's, which is U(±`finalInit`) (DDPG's 3e-3 keeps initial outputs
  /// near zero).
  /// - Precondition: at least two positive widths (callers validate).
  public init(widths: [Int], finalInit: Float = 3e-3, seed: UInt64) {
    precondition(widths.count >= 2 && widths.allSatisfy { $0 > 0 }, "DenseMLP: bad widths \(widths)")
    self.widths = widths
    var offs: [Int] = []
    var total = 0
    for l in 0..<(widths.count - 1) {
      offs.append(total)
      total += widths[l + 1] * widths[l] + widths[l + 1]
    }
    offsets = offs
    parameterCount = total
    params = FloatBuffer(count: total)
    grads = FloatBuffer(count: total)
    usedParams = UnsafePointer(params.pointer)
    var rng = RNG(seed: seed)
    for l in 0..<(widths.count - 1) {
      let fanIn = widths[l], out = widths[l + 1]
      let bound = l == widths.count - 2 ? finalInit : 1 / Float(fanIn).squareRoot()
      let p = params.pointer + offs[l]
      for i in 0..<(out * fanIn + out) { p[i] = (2 * rng.uniform() - 1) * bound }
    }
  }

  /// Input width.
  public var inputWidth: Int { widths[0] }
  /// Output width.
  public var outputWidth: Int { widths[widths.count - 1] }

  private func reserve(_ n: Int) {
    if n <= capacity { return }
    acts = widths.map { FloatBuffer(count: n * $0) }
    capacity = n
  }

  /// Runs `n` rows of `x` [n × input] with `theta` (default: `params`); returns the output rows
  /// [n × output], valid until the next call.
  @discardableResult
  public func forward(_ x: UnsafePointer<Float>, n: Int, theta: UnsafePointer<Float>? = nil) -> UnsafePointer<Float> {
    reserve(max(n, 1))
    let p = theta ?? UnsafePointer(params.pointer)
    usedParams = p
    lastBatch = n
    acts[0].pointer.update(from: x, count: n * widths[0])
    let layers = widths.count - 1
    for l in 0..<layers {
      let fin = widths[l], fout = widths[l + 1]
      let w = p + offsets[l]
      let b = w + fout * fin
      let y = acts[l + 1].pointer
      BLAS.gemm(transB: true, m: n, n: fout, k: fin, a: UnsafePointer(acts[l].pointer), b: w, c: y, parallel: false)
      let relu = l < layers - 1
      for r in 0..<n {
        let row = y + r * fout
        for j in 0..<fout {
          let v = row[j] + b[j]
          row[j] = relu ? max(v, 0) : v
        }
      }
    }
    return UnsafePointer(acts[layers].pointer)
  }

  /// Back-propagates `dout` [n × output] through the last forward pass: parameter gradients into
  /// `grads` (overwritten) and, when `dx` is given, the input gradient [n × input].
  public func backward(_ dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>? = nil) {
    let n = lastBatch
    let p = usedParams
    let g = grads.pointer
    var upstream = dout
    var useA = true
    let layers = widths.count - 1
    for l in stride(from: layers - 1, through: 0, by: -1) {
      let fin = widths[l], fout = widths[l + 1]
      let gw = g + offsets[l]
      let gb = gw + fout * fin
      let input = UnsafePointer(acts[l].pointer)
      BLAS.gemm(transA: true, m: fout, n: fin, k: n, a: upstream, b: input, c: gw, parallel: false)
      for j in 0..<fout { gb[j] = 0 }
      for r in 0..<n {
        let row = upstream + r * fout
        for j in 0..<fout { gb[j] += row[j] }
      }
      let down: UnsafeMutablePointer<Float>?
      if l > 0 {
        down = (useA ? gradA : gradB).pointer(count: max(n * fin, 1))
        useA.toggle()
      } else {
        down = dx
      }
      guard let d = down else { continue }
      BLAS.gemm(m: n, n: fin, k: fout, a: upstream, b: p + offsets[l], c: d, parallel: false)
      if l > 0 {
        // ReLU of the layer below: its output (our input) is > 0 exactly where it passed.
        for i in 0..<(n * fin) where input[i] <= 0 { d[i] = 0 }
      }
      upstream = UnsafePointer(d)
    }
  }
}

/// θ′ ← τθ + (1 − τ)θ′ over `count` floats.
@inline(__always)
func softUpdate(_ target: UnsafeMutablePointer<Float>, from source: UnsafePointer<Float>, count: Int, tau: Float) {
  let keep = 1 - tau
  for i in 0..<count { target[i] = tau * source[i] + keep * target[i] }
}
