import MetaweightTensor

/// Fully connected layer. x [N, in] → y [N, out];  W [out, in], b [out].
///
///     forward   y  = x·Wᵀ + b
///     backward  dW = dyᵀ·x,  db = Σₙ dy,  dx = dy·W
///     tangent   ty = tx·Wᵀ + x·tWᵀ + tb
public final class Linear: LeafLayer, Layer {
  /// Input features.
  public let inFeatures: Int
  /// Output features.
  public let outFeatures: Int
  /// Whether there is a bias.
  public let hasBias: Bool
  /// `linear`.
  public var kind: String { "linear" }
  /// `.flat(inFeatures)`.
  public var inputLayout: Layout { .flat(inFeatures) }
  /// `.flat(outFeatures)`.
  public var outputLayout: Layout { .flat(outFeatures) }
  /// Which initialisation the weight uses.
  public let weightInit: Initializer

  /// Creates a linear layer (PyTorch's default initialisation unless `kaiming`).
  /// - Throws: `MetaweightError.invalidArgument` for non-positive sizes.
  public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, kaiming: Bool = false) throws {
    guard inFeatures > 0, outFeatures > 0 else {
      throw MetaweightError.invalidArgument(
        "linear: expected positive in/out features, got \(inFeatures), \(outFeatures)")
    }
    self.inFeatures = inFeatures
    self.outFeatures = outFeatures
    hasBias = bias
    let bound = 1 / Float(inFeatures).squareRoot()
    weightInit = kaiming ? .kaimingNormal(fanIn: inFeatures) : .uniform(bound: bound)
  }

  /// False: the derivatives read the input and the parameters.
  public var derivativesReadOutput: Bool { false }

  /// weight [out, in] and bias [out].
  public var parameterSpecs: [ParameterSpec] {
    var s = [ParameterSpec("weight", [outFeatures, inFeatures], weightInit)]
    if hasBias {
      s.append(ParameterSpec("bias", [outFeatures], .uniform(bound: 1 / Float(inFeatures).squareRoot())))
    }
    return s
  }

  @inline(__always) private func addBias(_ b: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    let o = outFeatures
    Parallel.forRange(n, costPerItem: o) { s, e in
      for r in s..<e {
        let row = y + r * o
        for j in 0..<o { row[j] += b[j] }
      }
    }
  }

  /// y = x·Wᵀ + b.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    let w = ctx.params + paramOffset
    BLAS.gemm(transB: true, m: ctx.batch, n: outFeatures, k: inFeatures, a: x, b: w, c: y)
    if hasBias { addBias(w + outFeatures * inFeatures, y, ctx.batch) }
  }

  /// dW = dyᵀ·x, db = Σ dy, dx = dy·W.
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let n = ctx.batch
    if let g = ctx.grads {
      let gw = g + paramOffset
      BLAS.gemm(transA: true, m: outFeatures, n: inFeatures, k: n, a: dy, b: x, c: gw)
      if hasBias {
        let gb = gw + outFeatures * inFeatures
        gb.update(repeating: 0, count: outFeatures)
        for r in 0..<n {
          let row = dy + r * outFeatures
          for j in 0..<outFeatures { gb[j] += row[j] }
        }
      }
    }
    if let d = dx {
      BLAS.gemm(m: n, n: inFeatures, k: outFeatures, a: dy, b: ctx.params + paramOffset, c: d)
    }
  }

  /// ty = tx·Wᵀ + x·tWᵀ + tb.
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let n = ctx.batch
    var beta: Float = 0
    if let t = tx {
      BLAS.gemm(transB: true, m: n, n: outFeatures, k: inFeatures, a: t, b: ctx.params + paramOffset, c: ty)
      beta = 1
    }
    if let pt = ctx.paramTangent {
      let tw = pt + paramOffset
      BLAS.gemm(transB: true, m: n, n: outFeatures, k: inFeatures, a: x, b: tw, beta: beta, c: ty)
      if hasBias { addBias(tw + outFeatures * inFeatures, ty, n) }
    } else if tx == nil {
      ty.update(repeating: 0, count: n * outFeatures)
    }
  }
}

/// Elementwise max(x, 0) on any layout.
///
///     forward   y  = max(x, 0)
///     backward  dx = dy · [y > 0]
///     tangent   ty = tx · [y > 0]
///
/// [y > 0] equals [x > 0] exactly (NaN and −0 included), so the derivatives read only the output
/// and the input need not be kept.
public final class ReLU: LeafLayer, Layer {
  /// The (unchanged) layout.
  public let layout: Layout
  /// `relu`.
  public var kind: String { "relu" }
  /// Same as output.
  public var inputLayout: Layout { layout }
  /// Same as input.
  public var outputLayout: Layout { layout }
  /// Creates a ReLU for `layout`.
  public init(_ layout: Layout) { self.layout = layout }
  /// False: the derivatives use the output's sign.
  public var derivativesReadInput: Bool { false }

  /// max(v, 0) lane by lane: the one definition of the forward map (NaN stays NaN, −0 becomes
  /// +0), shared with batch norm's fused sweep (`BatchNorm.forward(_:_:_:_:rectify:)`).
  @inline(__always)
  static func rectify(_ v: SIMD16<Float>) -> SIMD16<Float> { v.replacing(with: 0, where: v .<= 0) }

  /// max(v, 0) for one value, equal to a lane of `rectify(_: SIMD16<Float>)`.
  @inline(__always)
  static func rectify(_ v: Float) -> Float { max(v, 0) }

  /// g·[y > 0] lane by lane, `y` the forward output: the one definition of the backward and
  /// tangent map, shared with batch norm's fused sweep.
  @inline(__always)
  static func gate(_ g: SIMD16<Float>, by y: SIMD16<Float>) -> SIMD16<Float> { g.replacing(with: 0, where: .!(y .> 0)) }

  /// `gate(_:by:)` on 8 lanes (batch norm's double-precision projections take 8 at a time).
  @inline(__always)
  static func gate(_ g: SIMD8<Float>, by y: SIMD8<Float>) -> SIMD8<Float> { g.replacing(with: 0, where: .!(y .> 0)) }

  /// `gate(_:by:)` for one value.
  @inline(__always)
  static func gate(_ g: Float, by y: Float) -> Float { y > 0 ? g : 0 }

  /// y = max(x, 0) over `count` elements (`y` may be `x`).
  static func rectify(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forRange(count) { s, e in
      var i = s
      while i + 16 <= e {
        Kernels.store(rectify(Kernels.load(x + i)), y + i)
        i += 16
      }
      while i < e {
        y[i] = rectify(x[i])
        i += 1
      }
    }
  }

  /// y = max(x, 0).
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    ReLU.rectify(x, y, count: ctx.batch * layout.size)
  }

  /// out = g·[y > 0] over `count` elements (the backward and tangent map; `y` the forward output;
  /// `out` may be `g`).
  static func mask(
    _ y: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int
  ) {
    Parallel.forRange(count) { s, e in
      var i = s
      while i + 16 <= e {
        Kernels.store(gate(Kernels.load(g + i), by: Kernels.load(y + i)), out + i)
        i += 16
      }
      while i < e {
        out[i] = gate(g[i], by: y[i])
        i += 1
      }
    }
  }

  /// dx = dy·[y > 0].
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    guard let d = dx else { return }
    ReLU.mask(y, dy, d, count: ctx.batch * layout.size)
  }

  /// ty = tx·[y > 0].
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let count = ctx.batch * layout.size
    guard let t = tx else { ty.update(repeating: 0, count: count); return }
    ReLU.mask(y, t, ty, count: count)
  }
}

/// Image [C, N, H, W] → flat [N, C·H·W] (per-example order c, h, w, as PyTorch's flatten).
public final class Flatten: LeafLayer, Layer {
  /// Input image layout.
  public let input: Layout
  /// `flatten`.
  public var kind: String { "flatten" }
  /// The image layout.
  public var inputLayout: Layout { input }
  /// `.flat(c·h·w)`.
  public var outputLayout: Layout { .flat(input.size) }
  /// Creates a flatten layer.
  public init(_ input: Layout) { self.input = input }
  /// False: a reordering.
  public var derivativesReadInput: Bool { false }
  /// False: the derivatives are a reshape.
  public var derivativesReadOutput: Bool { false }

  private var channelsAndPixels: (Int, Int) {
    if case .image(let c, let h, let w) = input { return (c, h * w) }
    return (1, input.size)
  }

  /// Reorders to per-example rows.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    let (c, hw) = channelsAndPixels
    if case .image = input {
      Elementwise.cnhwToNchw(x, y, n: ctx.batch, c: c, hw: hw)
    } else {
      y.update(from: x, count: ctx.batch * input.size)
    }
  }

  /// Inverse reorder.
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    guard let d = dx else { return }
    let (c, hw) = channelsAndPixels
    if case .image = input {
      Elementwise.nchwToCnhw(dy, d, n: ctx.batch, c: c, hw: hw)
    } else {
      d.update(from: dy, count: ctx.batch * input.size)
    }
  }

  /// Same reorder as forward.
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    guard let t = tx else { ty.update(repeating: 0, count: ctx.batch * input.size); return }
    forward(t, ty, &ctx, tape)
  }
}
