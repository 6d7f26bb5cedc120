import MetaweightTensor

/// Max pooling (no padding) on channel-major images. x [C, N, H, W] → y [C, N, OH, OW].
///
///     forward   y = max over each k×k window (arg-max kept in the tape)
///     backward  dx[argmax] += dy
///     tangent   ty = tx[argmax]
public final class MaxPool2D: LeafLayer, Layer {
  /// Window size.
  public let kernel: Int
  /// Stride.
  public let stride: Int
  let c: Int, h: Int, w: Int, oh: Int, ow: Int
  /// `maxpool2d`.
  public var kind: String { "maxpool2d" }
  /// Input image.
  public var inputLayout: Layout { .image(c: c, h: h, w: w) }
  /// Pooled image.
  public var outputLayout: Layout { .image(c: c, h: oh, w: ow) }

  /// Creates max pooling.
  /// - Throws: `MetaweightError.invalidArgument` for a flat input or a window larger than it.
  public init(input: Layout, kernel: Int, stride: Int? = nil) throws {
    guard case .image(let c, let h, let w) = input else {
      throw MetaweightError.invalidArgument("maxpool2d: expected an image input, got \(input)")
    }
    let s = stride ?? kernel
    guard kernel > 0, s > 0, kernel <= h, kernel <= w else {
      throw MetaweightError.invalidArgument("maxpool2d: kernel \(kernel), stride \(s) do not fit \(input)")
    }
    self.kernel = kernel
    self.stride = s
    self.c = c
    self.h = h
    self.w = w
    oh = (h - kernel) / s + 1
    ow = (w - kernel) / s + 1
  }

  final class Tape: LayerTape {
    var argmax: [Int32]
    init(_ n: Int) { argmax = [Int32](repeating: 0, count: n) }
    override var bytes: Int { argmax.count * 4 }
  }

  /// Arg-max storage.
  public func makeTape(batch: Int) -> LayerTape { Tape(batch * outputLayout.size) }
  /// False: the derivatives follow the stored arg-max.
  public var derivativesReadInput: Bool { false }
  /// False: the derivatives follow the stored arg-max.
  public var derivativesReadOutput: Bool { false }

  /// Window maxima.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    let t = tape as! Tape
    let planes = c * ctx.batch
    let (k, s, h, w, oh, ow) = (kernel, stride, h, w, oh, ow)
    t.argmax.withUnsafeMutableBufferPointer { am in
      let amp = am.baseAddress!
      Parallel.forRange(planes, costPerItem: h * w) { p0, p1 in
        for p in p0..<p1 {
          let xp = x + p * h * w
          for i in 0..<oh {
            var j0 = 0
            if k == 2 && s == 2 && ow >= 4 {
              // 2×2 windows, 8 (or 4) outputs at a time with the same "first maximum, NaN wins"
              // rule as below; the last block overlaps the previous one (recomputing equal values).
              let r0 = xp + 2 * i * w
              let o = p * oh * ow + i * ow
              if ow >= 8 {
                var j = 0
                while j < ow {
                  let jj = min(j, ow - 8)
                  MaxPool2D.pool2x2(r0, w, jj, y + o + jj, amp + o + jj, base: Int32(2 * i * w + 2 * jj))
                  j += 8
                }
              } else {
                var j = 0
                while j < ow {
                  let jj = min(j, ow - 4)
                  MaxPool2D.pool2x2Narrow(r0, w, jj, y + o + jj, amp + o + jj, base: Int32(2 * i * w + 2 * jj))
                  j += 4
                }
              }
              j0 = ow
            }
            for j in j0..<ow {
              var best = -Float.infinity
              var bi = (i * s) * w + j * s
              for a in 0..<k {
                for b in 0..<k {
                  let idx = (i * s + a) * w + (j * s + b)
                  let v = xp[idx]
                  if v > best || v.isNaN { best = v; bi = idx }
                }
              }
              let o = p * oh * ow + i * ow + j
              y[o] = xp[bi]
              amp[o] = Int32(bi)
            }
          }
        }
      }
    }
  }

  /// Eight 2×2 windows starting at column 2·j of row pair (r0, r0 + w).
  @inline(__always)
  private static func pool2x2(
    _ r0: UnsafePointer<Float>, _ w: Int, _ j: Int, _ y: UnsafeMutablePointer<Float>,
    _ arg: UnsafeMutablePointer<Int32>, base: Int32
  ) {
    let top = Kernels.load(r0 + 2 * j), bottom = Kernels.load(r0 + w + 2 * j)
    let idx = SIMD8<Int32>(0, 2, 4, 6, 8, 10, 12, 14) &+ base
    var best = top.evenHalf
    var at = idx
    var v = top.oddHalf
    var take = (v .> best) .| (v .!= v)
    best.replace(with: v, where: take)
    at.replace(with: idx &+ 1, where: take)
    v = bottom.evenHalf
    take = (v .> best) .| (v .!= v)
    best.replace(with: v, where: take)
    at.replace(with: idx &+ Int32(w), where: take)
    v = bottom.oddHalf
    take = (v .> best) .| (v .!= v)
    best.replace(with: v, where: take)
    at.replace(with: idx &+ Int32(w + 1), where: take)
    UnsafeMutableRawPointer(y).storeBytes(of: best, as: SIMD8<Float>.self)
    UnsafeMutableRawPointer(arg).storeBytes(of: at, as: SIMD8<Int32>.self)
  }

  /// Four 2×2 windows starting at column 2·j of row pair (r0, r0 + w).
  @inline(__always)
  private static func pool2x2Narrow(
    _ r0: UnsafePointer<Float>, _ w: Int, _ j: Int, _ y: UnsafeMutablePointer<Float>,
    _ arg: UnsafeMutablePointer<Int32>, base: Int32
  ) {
    let top = UnsafeRawPointer(r0 + 2 * j).loadUnaligned(as: SIMD8<Float>.self)
    let bottom = UnsafeRawPointer(r0 + w + 2 * j).loadUnaligned(as: SIMD8<Float>.self)
    let idx = SIMD4<Int32>(0, 2, 4, 6) &+ base
    var best = top.evenHalf
    var at = idx
    var v = top.oddHalf
    var take = (v .> best) .| (v .!= v)
    best.replace(with: v, where: take)
    at.replace(with: idx &+ 1, where: take)
    v = bottom.evenHalf
    take = (v .> best) .| (v .!= v)
    best.replace(with: v, where: take)
    at.replace(with: idx &+ Int32(w), where: take)
    v = bottom.oddHalf
    take = (v .> best) .| (v .!= v)
    best.replace(with: v, where: take)
    at.replace(with: idx &+ Int32(w + 1), where: take)
    UnsafeMutableRawPointer(y).storeBytes(of: best, as: SIMD4<Float>.self)
    UnsafeMutableRawPointer(arg).storeBytes(of: at, as: SIMD4<Int32>.self)
  }

  /// Routes dy to the arg-max.
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    guard let d = dx else { return }
    let t = tape as! Tape
    let planes = c * ctx.batch
    let (h, w, oh, ow) = (h, w, oh, ow)
    t.argmax.withUnsafeBufferPointer { am in
      let amp = am.baseAddress!
      Parallel.forRange(planes, costPerItem: h * w) { p0, p1 in
        for p in p0..<p1 {
          let dp = d + p * h * w
          dp.update(repeating: 0, count: h * w)
          for o in 0..<(oh * ow) { dp[Int(amp[p * oh * ow + o])] += dy[p * oh * ow + o] }
        }
      }
    }
  }

  /// Gathers tx at the arg-max.
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let t = tape as! Tape
    let total = ctx.batch * outputLayout.size
    guard let txp = tx else { ty.update(repeating: 0, count: total); return }
    let (h, w, oh, ow) = (h, w, oh, ow)
    t.argmax.withUnsafeBufferPointer { am in
      let amp = am.baseAddress!
      Parallel.forRange(c * ctx.batch, costPerItem: oh * ow) { p0, p1 in
        for p in p0..<p1 {
          for o in 0..<(oh * ow) { ty[p * oh * ow + o] = txp[p * h * w + Int(amp[p * oh * ow + o])] }
        }
      }
    }
  }
}

/// Average pooling (no padding) on channel-major images. x [C, N, H, W] → y [C, N, OH, OW].
///
///     forward   y = mean over each k×k window
///     backward  dx += dy / k² over the window
///     tangent   ty = avgpool(tx)      (linear)
public final class AvgPool2D: LeafLayer, Layer {
  /// Window size.
  public let kernel: Int
  /// Stride.
  public let stride: Int
  let c: Int, h: Int, w: Int, oh: Int, ow: Int
  /// `avgpool2d`.
  public var kind: String { "avgpool2d" }
  /// False: the derivatives are a fixed linear map.
  public var derivativesReadInput: Bool { false }
  /// False: the derivatives are a fixed linear map.
  public var derivativesReadOutput: Bool { false }
  /// Input image.
  public var inputLayout: Layout { .image(c: c, h: h, w: w) }
  /// Pooled image.
  public var outputLayout: Layout { .image(c: c, h: oh, w: ow) }

  /// Creates average pooling.
  /// - Throws: `MetaweightError.invalidArgument` for a flat input or a window larger than it.
  public init(input: Layout, kernel: Int, stride: Int? = nil) throws {
    guard case .image(let c, let h, let w) = input else {
      throw MetaweightError.invalidArgument("avgpool2d: expected an image input, got \(input)")
    }
    let s = stride ?? kernel
    guard kernel > 0, s > 0, kernel <= h, kernel <= w else {
      throw MetaweightError.invalidArgument("avgpool2d: kernel \(kernel), stride \(s) do not fit \(input)")
    }
    self.kernel = kernel
    self.stride = s
    self.c = c
    self.h = h
    self.w = w
    oh = (h - kernel) / s + 1
    ow = (w - kernel) / s + 1
  }

  /// Window means.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    let (k, s, h, w, oh, ow) = (kernel, stride, h, w, oh, ow)
    let scale = 1 / Float(k * k)
    Parallel.forRange(c * ctx.batch, costPerItem: h * w) { p0, p1 in
      for p in p0..<p1 {
        let xp = x + p * h * w
        for i in 0..<oh {
          for j in 0..<ow {
            var acc: Float = 0
            for a in 0..<k { for b in 0..<k { acc += xp[(i * s + a) * w + j * s + b] } }
            y[p * oh * ow + i * ow + j] = acc * scale
          }
        }
      }
    }
  }

  /// Spreads dy evenly over each window.
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    guard let d = dx else { return }
    let (k, s, h, w, oh, ow) = (kernel, stride, h, w, oh, ow)
    let scale = 1 / Float(k * k)
    Parallel.forRange(c * ctx.batch, costPerItem: h * w) { p0, p1 in
      for p in p0..<p1 {
        let dp = d + p * h * w
        dp.update(repeating: 0, count: h * w)
        for i in 0..<oh {
          for j in 0..<ow {
            let g = dy[p * oh * ow + i * ow + j] * scale
            for a in 0..<k { for b in 0..<k { dp[(i * s + a) * w + j * s + b] += g } }
          }
        }
      }
    }
  }

  /// Linear: the pooled tangent.
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    guard let t = tx else { ty.update(repeating: 0, count: ctx.batch * outputLayout.size); return }
    forward(t, ty, &ctx, tape)
  }
}

/// Global average pooling. x [C, N, H, W] → y [N, C].
///
///     forward   y[n, c] = mean_{h,w} x[c, n, h, w]
///     backward  dx[c, n, h, w] = dy[n, c] / (H·W)
///     tangent   ty = gap(tx)
public final class GlobalAvgPool: LeafLayer, Layer {
  let c: Int, h: Int, w: Int
  /// `global_avgpool`.
  public var kind: String { "global_avgpool" }
  /// False: the derivatives are a fixed linear map.
  public var derivativesReadInput: Bool { false }
  /// False: the derivatives are a fixed linear map.
  public var derivativesReadOutput: Bool { false }
  /// Input image.
  public var inputLayout: Layout { .image(c: c, h: h, w: w) }
  /// `.flat(C)`.
  public var outputLayout: Layout { .flat(c) }

  /// Creates global average pooling.
  /// - Throws: `MetaweightError.invalidArgument` for a flat input.
  public init(input: Layout) throws {
    guard case .image(let c, let h, let w) = input else {
      throw MetaweightError.invalidArgument("global_avgpool: expected an image input, got \(input)")
    }
    self.c = c
    self.h = h
    self.w = w
  }

  /// Means over each plane.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    let n = ctx.batch, hw = h * w, c = c
    let scale = 1 / Float(hw)
    for ch in 0..<c {
      for b in 0..<n {
        let p = x + (ch * n + b) * hw
        var s: Float = 0
        for i in 0..<hw { s += p[i] }
        y[b * c + ch] = s * scale
      }
    }
  }

  /// Broadcasts dy / (H·W).
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    guard let d = dx else { return }
    let n = ctx.batch, hw = h * w, c = c
    let scale = 1 / Float(hw)
    for ch in 0..<c {
      for b in 0..<n {
        (d + (ch * n + b) * hw).update(repeating: dy[b * c + ch] * scale, count: hw)
      }
    }
  }

  /// Linear: pooled tangent.
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    guard let t = tx else { ty.update(repeating: 0, count: ctx.batch * c); return }
    forward(t, ty, &ctx, tape)
  }
}

/// Inverted dropout on any layout: y = x · mask, mask ∈ {0, 1/(1−p)} drawn per forward pass in
/// training modes (identity in eval mode). Backward and tangent reuse the same mask.
public final class Dropout: LeafLayer, Layer {
  /// The layout.
  public let layout: Layout
  /// Drop probability in [0, 1).
  public let rate: Float
  /// `dropout`.
  public var kind: String { "dropout" }
  /// Same as output.
  public var inputLayout: Layout { layout }
  /// Same as input.
  public var outputLayout: Layout { layout }
  /// True.
  public var hasModeDependence: Bool { true }

  /// Creates dropout.
  /// - Throws: `MetaweightError.invalidArgument` unless 0 ≤ rate < 1.
  public init(_ layout: Layout, rate: Float) throws {
    guard rate >= 0, rate < 1 else {
      throw MetaweightError.invalidArgument("dropout: expected 0 <= rate < 1, got \(rate)")
    }
    self.layout = layout
    self.rate = rate
  }

  final class Tape: LayerTape {
    var mask: FloatBuffer
    var active = false
    init(_ n: Int) { mask = FloatBuffer(count: n) }
    override var bytes: Int { mask.count * 4 }
  }

  /// Mask storage.
  public func makeTape(batch: Int) -> LayerTape { Tape(rate > 0 ? batch * layout.size : 0) }
  /// False: the derivatives use the stored mask.
  public var derivativesReadInput: Bool { false }
  /// False: the derivatives use the stored mask.
  public var derivativesReadOutput: Bool { false }

  /// y = x·mask.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    let t = tape as! Tape
    let count = ctx.batch * layout.size
    t.active = ctx.mode != .eval && rate > 0
    guard t.active else { y.update(from: x, count: count); return }
    let keep = 1 / (1 - rate)
    let m = t.mask.pointer
    for i in 0..<count {
      m[i] = ctx.rng.rng.uniform() < rate ? 0 : keep
      y[i] = x[i] * m[i]
    }
  }

  /// dx = dy·mask.
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    guard let d = dx else { return }
    let t = tape as! Tape
    let count = ctx.batch * layout.size
    guard t.active else { d.update(from: dy, count: count); return }
    let m = t.mask.pointer
    for i in 0..<count { d[i] = dy[i] * m[i] }
  }

  /// ty = tx·mask (same mask as the forward pass).
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let t = tape as! Tape
    let count = ctx.batch * layout.size
    guard let tp = tx else { ty.update(repeating: 0, count: count); return }
    guard t.active else { ty.update(from: tp, count: count); return }
    let m = t.mask.pointer
    for i in 0..<count { ty[i] = tp[i] * m[i] }
  }
}

/// The "option A" ResNet shortcut: subsample by `stride` (x[:, :, ::s, ::s]) and zero-pad the
/// channels equally on both sides, as in the L2RW and MW-Net ResNet-32 code. No parameters.
public final class ShortcutA: LeafLayer, Layer {
  let c: Int, h: Int, w: Int, outC: Int, s: Int, oh: Int, ow: Int, pad: Int
  /// `shortcut_a`.
  public var kind: String { "shortcut_a" }
  /// False: the derivatives are a fixed linear map.
  public var derivativesReadInput: Bool { false }
  /// False: the derivatives are a fixed linear map.
  public var derivativesReadOutput: Bool { false }
  /// Input image.
  public var inputLayout: Layout { .image(c: c, h: h, w: w) }
  /// Subsampled, channel-padded image.
  public var outputLayout: Layout { .image(c: outC, h: oh, w: ow) }

  /// Creates the shortcut.
  /// - Throws: `MetaweightError.invalidArgument` when `outChannels − C` is negative or odd.
  public init(input: Layout, outChannels: Int, stride: Int) throws {
    guard case .image(let c, let h, let w) = input else {
      throw MetaweightError.invalidArgument("shortcut_a: expected an image input, got \(input)")
    }
    guard outChannels >= c, (outChannels - c) % 2 == 0, stride > 0 else {
      throw MetaweightError.invalidArgument(
        "shortcut_a: expected out_channels >= \(c) with an even difference and stride > 0, got \(outChannels), \(stride)")
    }
    self.c = c
    self.h = h
    self.w = w
    outC = outChannels
    s = stride
    oh = (h + stride - 1) / stride
    ow = (w + stride - 1) / stride
    pad = (outChannels - c) / 2
  }

  /// y[(ch + pad, b)] = x[(ch, b)][::s, ::s], zero elsewhere; planes in parallel.
  private func gather(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, n: Int) {
    let plane = oh * ow
    let (c, h, w, s, oh, ow, pad, outC) = (c, h, w, s, oh, ow, pad, outC)
    Parallel.forRange(outC * n, costPerItem: plane) { q0, q1 in
      for q in q0..<q1 {
        let ch = q / n - pad, b = q % n
        let dst = y + q * plane
        guard ch >= 0 && ch < c else {
          Kernels.zero(dst, count: plane)
          continue
        }
        let src = x + (ch * n + b) * h * w
        for i in 0..<oh {
          let srow = src + i * s * w, drow = dst + i * ow
          var j = 0
          if s == 2 {
            // Even lanes of 16 floats of the source row (2·(j + 8) ≤ w keeps them in the row).
            while 2 * (j + 8) <= w {
              let even = Kernels.load(srow + 2 * j).evenHalf
              UnsafeMutableRawPointer(drow + j).storeBytes(of: even, as: SIMD8<Float>.self)
              j += 8
            }
          }
          while j < ow {
            drow[j] = srow[j * s]
            j += 1
          }
        }
      }
    }
  }

  /// Subsample and pad.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) { gather(x, y, n: ctx.batch) }

  /// Scatter back.
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    guard let d = dx else { return }
    let n = ctx.batch, plane = oh * ow
    let (h, w, s, oh, ow, pad) = (h, w, s, oh, ow, pad)
    Parallel.forRange(c * n, costPerItem: h * w) { q0, q1 in
      for q in q0..<q1 {
        let ch = q / n, b = q % n
        let dst = d + q * h * w
        let src = dy + ((ch + pad) * n + b) * plane
        Kernels.zero(dst, count: h * w)
        for i in 0..<oh {
          let drow = dst + i * s * w, srow = src + i * ow
          for j in 0..<ow { drow[j * s] = srow[j] }
        }
      }
    }
  }

  /// Linear: same map on the tangent.
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    guard let t = tx else { ty.update(repeating: 0, count: ctx.batch * outputLayout.size); return }
    gather(t, ty, n: ctx.batch)
  }
}
