/// 2-D convolution on channel-major batches.
/// x [Cin, N, H, W] → y [Cout, N, OH, OW];  W [Cout, Cin, k, k], b [Cout].
///
///     forward   y  = W · col(x) (+ b)                   one GEMM per batch chunk
///     backward  dW = dy · col(x)ᵀ,  dx = col2im(Wᵀ · dy),  db = Σ dy
///     tangent   ty = W · col(tx) + tW · col(x) (+ tb)
///
/// `col(x)` is the im2col matrix [Cin·k·k, n·OH·OW] of a chunk of n examples; chunks bound the
/// scratch memory, and 1×1 stride-1 convolutions use x directly.
public final class Conv2D: LeafLayer, Layer {
  /// Input channels.
  public let inChannels: Int
  /// Output channels.
  public let outChannels: Int
  /// Kernel size (square).
  public let kernel: Int
  /// Stride.
  public let stride: Int
  /// Zero padding on every side.
  public let padding: Int
  /// Whether there is a bias.
  public let hasBias: Bool
  /// Input height and width.
  public let height: Int, width: Int
  /// Output height and width.
  public let outHeight: Int, outWidth: Int
  /// `conv2d`.
  public var kind: String { "conv2d" }
  /// `.image(inChannels, height, width)`.
  public var inputLayout: Layout { .image(c: inChannels, h: height, w: width) }
  /// `.image(outChannels, outHeight, outWidth)`.
  public var outputLayout: Layout { .image(c: outChannels, h: outHeight, w: outWidth) }

  /// Creates a convolution for inputs of layout `input` (must be `.image`).
  /// - Throws: `MetaweightError.invalidArgument` for a flat input or a non-positive output size.
  public init(
    input: Layout, outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, bias: Bool = false
  ) throws {
    guard case .image(let c, let h, let w) = input else {
      throw MetaweightError.invalidArgument("conv2d: expected an image input (C, H, W), got \(input)")
    }
    guard outChannels > 0, kernel > 0, stride > 0, padding >= 0 else {
      throw MetaweightError.invalidArgument(
        "conv2d: expected out_channels > 0, kernel > 0, stride > 0, padding >= 0, got "
          + "\(outChannels), \(kernel), \(stride), \(padding)")
    }
    let oh = (h + 2 * padding - kernel) / stride + 1
    let ow = (w + 2 * padding - kernel) / stride + 1
    guard h + 2 * padding >= kernel, w + 2 * padding >= kernel, oh > 0, ow > 0 else {
      throw MetaweightError.invalidArgument(
        "conv2d: kernel \(kernel) with padding \(padding) does not fit input \(input)")
    }
    inChannels = c
    self.outChannels = outChannels
    self.kernel = kernel
    self.stride = stride
    self.padding = padding
    hasBias = bias
    height = h
    width = w
    outHeight = oh
    outWidth = ow
  }

  /// weight [Cout, Cin, k, k] (Kaiming normal) and optional bias.
  public var parameterSpecs: [ParameterSpec] {
    let fanIn = inChannels * kernel * kernel
    var s = [ParameterSpec("weight", [outChannels, inChannels, kernel, kernel], .kaimingNormal(fanIn: fanIn))]
    if hasBias { s.append(ParameterSpec("bias", [outChannels], .uniform(bound: 1 / Float(fanIn).squareRoot()))) }
    return s
  }

  private var kdim: Int { inChannels * kernel * kernel }
  private var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 }

  /// Examples per im2col chunk so the column matrix stays near 8 M floats.
  private func chunk(_ n: Int) -> Int {
    let perExample = kdim * outHeight * outWidth
    return max(1, min(n, 8_388_608 / max(perExample, 1)))
  }

  /// col[(ci,ki,kj), (b,oh,ow)] = x[ci, n0+b, oh·s−p+ki, ow·s−p+kj] for b in 0..<nc.
  private func im2col(
    _ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, n: Int, n0: Int, nc: Int
  ) {
    let k = kernel, s = stride, p = padding, h = height, w = width
    let oh = outHeight, ow = outWidth
    let cols = nc * oh * ow
    Parallel.forRange(kdim, costPerItem: cols) { rs, re in
      for r in rs..<re {
        let ci = r / (k * k)
        let ki = (r / k) % k
        let kj = r % k
        let dst = col + r * cols
        for b in 0..<nc {
          let plane = x + (ci * n + n0 + b) * h * w
          let out = dst + b * oh * ow
          for i in 0..<oh {
            let ih = i * s - p + ki
            let orow = out + i * ow
            if ih < 0 || ih >= h {
              orow.update(repeating: 0, count: ow)
              continue
            }
            let irow = plane + ih * w
            if s == 1 {
              let lo = min(ow, max(0, p - kj))
              let hi = max(lo, min(ow, w + p - kj))
              if lo > 0 { orow.update(repeating: 0, count: lo) }
              if hi > lo { (orow + lo).update(from: irow + (lo - p + kj), count: hi - lo) }
              if hi < ow { (orow + hi).update(repeating: 0, count: ow - hi) }
            } else {
              for j in 0..<ow {
                let iw = j * s - p + kj
                orow[j] = (iw >= 0 && iw < w) ? irow[iw] : 0
              }
            }
          }
        }
      }
    }
  }

  /// dx[ci, n0+b, …] += col rows of channel ci (dx chunk must be zeroed first).
  private func col2im(
    _ col: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, n: Int, n0: Int, nc: Int
  ) {
    let k = kernel, s = stride, p = padding, h = height, w = width
    let oh = outHeight, ow = outWidth
    let cols = nc * oh * ow
    Parallel.forRange(inChannels, costPerItem: k * k * cols) { cs, ce in
      for ci in cs..<ce {
        for b in 0..<nc { (dx + (ci * n + n0 + b) * h * w).update(repeating: 0, count: h * w) }
        for ki in 0..<k {
          for kj in 0..<k {
            let src = col + ((ci * k + ki) * k + kj) * cols
            for b in 0..<nc {
              let plane = dx + (ci * n + n0 + b) * h * w
              let inp = src + b * oh * ow
              for i in 0..<oh {
                let ih = i * s - p + ki
                if ih < 0 || ih >= h { continue }
                let drow = plane + ih * w
                let irow = inp + i * ow
                if s == 1 {
                  let lo = min(ow, max(0, p - kj))
                  let hi = max(lo, min(ow, w + p - kj))
                  if hi > lo {
                    let d = drow + (lo - p + kj)
                    let sp = irow + lo
                    for j in 0..<(hi - lo) { d[j] += sp[j] }
                  }
                } else {
                  for j in 0..<ow {
                    let iw = j * s - p + kj
                    if iw >= 0 && iw < w { drow[iw] += irow[j] }
                  }
                }
              }
            }
          }
        }
      }
    }
  }

  private func addBias(_ b: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, n: Int) {
    let plane = n * outHeight * outWidth
    Parallel.forRange(outChannels, costPerItem: plane) { cs, ce in
      for c in cs..<ce {
        let row = y + c * plane
        let v = b[c]
        for i in 0..<plane { row[i] += v }
      }
    }
  }

  /// y = W·col(x) (+ b), or with `beta` = 1 accumulates into y.
  private func applyWeights(
    _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    beta: Float, _ ctx: inout PassContext
  ) {
    let n = ctx.batch
    let ohw = outHeight * outWidth
    if isPointwise {
      BLAS.gemm(m: outChannels, n: n * ohw, k: kdim, a: w, b: x, beta: beta, c: y)
      return
    }
    let nc = chunk(n)
    let col = ctx.scratch.pointer(count: kdim * nc * ohw)
    var n0 = 0
    while n0 < n {
      let cnt = min(nc, n - n0)
      im2col(x, col, n: n, n0: n0, nc: cnt)
      BLAS.gemm(
        m: outChannels, n: cnt * ohw, k: kdim, a: w, b: col, beta: beta, c: y + n0 * ohw, ldc: n * ohw)
      n0 += cnt
    }
  }

  /// y = W·col(x) + b.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    let w = ctx.params + paramOffset
    applyWeights(w, x, y, beta: 0, &ctx)
    if hasBias { addBias(w + outChannels * kdim, y, n: ctx.batch) }
  }

  /// dW = dy·col(x)ᵀ, dx = col2im(Wᵀ·dy), db = Σ dy.
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let n = ctx.batch
    let ohw = outHeight * outWidth
    let w = ctx.params + paramOffset
    let gw = ctx.grads.map { $0 + paramOffset }
    if isPointwise {
      if let g = gw { BLAS.gemm(transB: true, m: outChannels, n: kdim, k: n * ohw, a: dy, b: x, c: g) }
      if let d = dx { BLAS.gemm(transA: true, m: kdim, n: n * ohw, k: outChannels, a: w, b: dy, c: d) }
    } else {
      let nc = chunk(n)
      let buf = ctx.scratch.pointer(count: 2 * kdim * nc * ohw)
      let col = buf
      let dcol = buf + kdim * nc * ohw
      var n0 = 0
      while n0 < n {
        let cnt = min(nc, n - n0)
        let dyc = dy + n0 * ohw
        if let g = gw {
          im2col(x, col, n: n, n0: n0, nc: cnt)
          BLAS.gemm(
            transB: true, m: outChannels, n: kdim, k: cnt * ohw, a: dyc, lda: n * ohw, b: col,
            ldb: cnt * ohw, beta: n0 == 0 ? 0 : 1, c: g)
        }
        if let d = dx {
          BLAS.gemm(
            transA: true, m: kdim, n: cnt * ohw, k: outChannels, a: w, b: dyc, ldb: n * ohw, c: dcol)
          col2im(dcol, d, n: n, n0: n0, nc: cnt)
        }
        n0 += cnt
      }
    }
    if hasBias, let g = gw {
      let gb = g + outChannels * kdim
      let plane = n * ohw
      for c in 0..<outChannels {
        let row = dy + c * plane
        var s: Float = 0
        for i in 0..<plane { s += row[i] }
        gb[c] = s
      }
    }
  }

  /// ty = W·col(tx) + tW·col(x) (+ tb).
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    var beta: Float = 0
    if let t = tx {
      applyWeights(ctx.params + paramOffset, t, ty, beta: 0, &ctx)
      beta = 1
    }
    if let pt = ctx.paramTangent {
      let tw = pt + paramOffset
      applyWeights(tw, x, ty, beta: beta, &ctx)
      if hasBias { addBias(tw + outChannels * kdim, ty, n: ctx.batch) }
    } else if tx == nil {
      ty.update(repeating: 0, count: ctx.batch * outputLayout.size)
    }
  }
}
