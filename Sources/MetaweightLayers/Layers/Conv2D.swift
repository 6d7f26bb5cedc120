import MetaweightTensor

/// 2-D convolution on channel-major batches.
/// x [Cin, N, H, W] → y [Cout, N, OH, OW];  W [Cout, Cin, k, k], b [Cout].
///
///     forward   y  = W · col(x) (+ b)                        one GEMM per chunk of examples
///     backward  dW = Σ_chunks (col(x) · dyᵀ)ᵀ,  db = Σ dy
///               dx = W̃ · col′(dy)    stride 1, p ≤ k−1 and col′(dy) not much larger than
///                                    Wᵀ·dy: dy convolved with the flipped kernel
///                                    W̃[ci, (co, a, b)] = W[co, ci, k−1−a, k−1−b], padding k−1−p
///               dx = col2im(Wᵀ · dy)  otherwise
///     tangent   ty = [W | tW] · [col(tx); col(x)] (+ tb)      one GEMM for both terms
///
/// `col(x)` is the im2col matrix [Cin·k·k, n·OH·OW] of a chunk of n examples. Chunks are sized so
/// a column matrix stays near `columnBudget` floats (cache-resident) and run in parallel on
/// `Parallel`'s threads, each with its own column buffer and a single-threaded GEMM. The chunks
/// depend only on the layer and the batch size, and dW sums the per-chunk products in chunk
/// order, so which thread ran which chunk never changes a result.
/// 1×1 stride-1 convolutions without padding use x directly. 3×3 stride-1 products with 12–24 input
/// channels (ResNet's 16-channel stage) run as an implicit GEMM instead where OpenBLAS has its
/// small-matrix kernels (`implicitConvolve`: nine accumulating products over shifted views of a
/// once-padded input, no column matrix) for the forward pass and the input gradient.
///
/// 3×3 stride-1 convolutions (padding ≤ 2) can instead run all three passes through Winograd's
/// F(m×m, 3×3) (see `Winograd`), chosen per layer by `algorithm`: the results agree with the GEMM
/// path up to rounding (the bound is derived in `WinogradTests`), so the choice is a preference,
/// not part of the maths (not in the architecture signature, and checkpoints load either way).
public final class Conv2D: LeafLayer, Layer {
  /// How a convolution computes its products.
  public enum Algorithm: Int32, Sendable, CaseIterable, CustomStringConvertible {
    /// Winograd where it is eligible and measured faster (`Conv2D.prefersWinograd`), else GEMM.
    case auto = 0
    /// im2col + GEMM (or the direct product of a 1×1 convolution).
    case gemm = 1
    /// Winograd F(4×4, 3×3) when eligible (3×3, stride 1, padding ≤ 2), else GEMM.
    case winograd = 2

    /// `auto`, `gemm` or `winograd`.
    public var description: String {
      switch self {
      case .auto: return "auto"
      case .gemm: return "gemm"
      case .winograd: return "winograd"
      }
    }
  }

  /// The preferred algorithm (default `.auto`); changing it never changes the parameters.
  public var algorithm: Algorithm = .auto

  /// Winograd output tile size: F(4×4, 3×3), 4× fewer multiplies than the direct convolution (F(2×2):
  /// 2.25×) and, at 2.25 transformed floats per output instead of 4, less memory traffic. Its
  /// transform constants (up to 8 in Aᵀ, 5 in Bᵀ) make its error larger than F(2×2)'s
  /// (`WinogradTests.testTileSizeErrorsAgainstFloat64`: 2.0e-6 vs 7.7e-8 of Σ|w||x| on a 16-channel
  /// layer, within its derived bound), still far below the noise of float32 SGD, and the
  /// meta-gradients stay within 1e-4 of the float64 reference. Measured (`benchmarks/
  /// bench_conv_algorithms.py`, batch 100, one thread, AMD Zen 5, Cooperlake kernels), a 4-layer
  /// step: 64 channels 8×8 18.1 vs 25.0 ms for F(2×2), 32 channels 16×16 22.2 vs 34.0 ms, 16
  /// channels 32×32 35.3 ms vs 47.3 ms for the (implicit) GEMM path; a whole ResNet-32 step 22%
  /// faster than with F(2×2) from 32 channels and GEMM below.
  package static let defaultWinogradTile = 4

  /// The Winograd output tile size this layer uses (`defaultWinogradTile`; tests compare 4).
  package var winogradTile = Conv2D.defaultWinogradTile

  /// Whether the layer can run through Winograd: 3×3 kernel, stride 1, padding ≤ 2 (so the input
  /// gradient is itself a convolution with padding 2 − p ≥ 0).
  public var winogradEligible: Bool { kernel == 3 && stride == 1 && padding <= 2 }

  /// What `.auto` picks on an eligible layer: Winograd when both channel counts are at least 16.
  /// Measured per layer shape (a 4-layer step at 32×32, batch 100, one thread, AMD Zen 5,
  /// Cooperlake kernels, F(4×4) against the GEMM path): 16 channels 35.3 vs 47.3 ms, 12 channels
  /// 36.7 vs 40.4, 8 channels 16.1 vs 15.0, 4 channels 9.4 vs 4.8. Below 16 channels each
  /// transform point's product has too short an inner dimension to pay for the transforms.
  public var prefersWinograd: Bool { inChannels >= 16 && outChannels >= 16 }

  /// The Winograd plan the passes use, or nil for the GEMM path.
  package var winogradPlan: Winograd? {
    guard winogradEligible else { return nil }
    switch algorithm {
    case .gemm: return nil
    case .winograd: return Winograd.tile(winogradTile)
    case .auto: return prefersWinograd ? Winograd.tile(winogradTile) : nil
    }
  }

  /// The algorithm the passes actually run (`.gemm` or `.winograd`).
  public var effectiveAlgorithm: Algorithm { winogradPlan == nil ? .gemm : .winograd }
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

  /// False: the derivatives read the input and the parameters.
  public var derivativesReadOutput: Bool { false }

  /// weight [Cout, Cin, k, k] (Kaiming normal) and optional bias.
  public var parameterSpecs: [ParameterSpec] {
    let fanIn = inChannels * kernel * kernel
    var s = [ParameterSpec("weight", [outChannels, inChannels, kernel, kernel], .kaimingNormal(fanIn: fanIn))]
    if hasBias { s.append(ParameterSpec("bias", [outChannels], .uniform(bound: 1 / Float(fanIn).squareRoot()))) }
    return s
  }

  private var kdim: Int { inChannels * kernel * kernel }
  private var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 }
  /// Whether dx is computed as a convolution of dy: stride 1, padding ≤ k − 1, and col′(dy)
  /// [Cout·k², N·H·W] at most twice the size of Wᵀ·dy [Cin·k², N·OH·OW] (which col2im must
  /// then scatter) — true for "same" convolutions, false for LeNet's unpadded ones.
  private var transposedIsConvolution: Bool {
    stride == 1 && padding <= kernel - 1
      && outChannels * height * width <= 2 * inChannels * outHeight * outWidth
  }

  /// Target size of one chunk's column matrix, in floats (2 MiB: a few examples, in L2/L3 cache).
  static let columnBudget = 524_288

  /// Target floats of one Winograd chunk's transformed inputs and products (V and M, 2 MiB). A
  /// quarter of that kept ResNet-32's 8×8 stage at four examples per chunk, whose 16-column
  /// products ran the GEMM far below its rate: a whole F(4×4) step took 5% longer (one thread, AMD
  /// Zen 5).
  static let winogradBudget = 524_288

  /// Fewest chunks a batch is cut into (when it has that many examples), so that the threads
  /// share the chunks evenly; fixed, not derived from the thread count, so results are not either.
  static let minimumChunks = 8

  /// Examples per chunk when one example needs `perExample` column floats: within the column
  /// budget, at most n / `minimumChunks` (rounded up), and, when OpenBLAS has small-matrix
  /// kernels and one example's forward product (Cout·Cin·k²·OH·OW multiply-adds) fits them, few
  /// enough that a chunk's products do too.
  private func chunkExamples(_ n: Int, perExample: Int) -> Int {
    let fewest = Conv2D.minimumChunks
    var nc = min(Conv2D.columnBudget / max(perExample, 1), (n + fewest - 1) / fewest)
    let product = outChannels * kdim * outHeight * outWidth
    if let limit = BLAS.smallKernelLimit, product > 0, product <= limit { nc = min(nc, limit / product) }
    return max(1, min(n, nc))
  }

  /// col[(c, a, b), (e, i, j)] = src[c, n0 + e, i·s − p + a, j·s − p + b] (0 outside) for e in
  /// 0..<count; `src` is a channel-major batch [channels, n, h, w]. Rows run in parallel when this
  /// is not already inside a parallel loop.
  static func im2col(
    _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, h: Int, w: Int,
    kernel k: Int, stride s: Int, padding p: Int, oh: Int, ow: Int, into col: UnsafeMutablePointer<Float>
  ) {
    let len = count * oh * ow
    let plane = oh * ow
    Parallel.forRange(channels * k * k, costPerItem: len) { r0, r1 in
      for r in r0..<r1 {
        let c = r / (k * k), a = (r / k) % k, b = r % k
        // Output rows i with 0 ≤ i·s − p + a < h, columns j with 0 ≤ j·s − p + b < w.
        let ilo = min(oh, p > a ? (p - a + s - 1) / s : 0)
        let ihi = max(ilo, min(oh, h - 1 + p - a >= 0 ? (h - 1 + p - a) / s + 1 : 0))
        let jlo = min(ow, p > b ? (p - b + s - 1) / s : 0)
        let jhi = max(jlo, min(ow, w - 1 + p - b >= 0 ? (w - 1 + p - b) / s + 1 : 0))
        let dst = col + r * len
        if s == 1 && ow == w && oh == h {
          // "Same" convolution: output and input planes have the same shape, and the planes of
          // one channel are consecutive for consecutive examples, so the whole row is one
          // shifted block: dst[q] = in[q + (a − p)·w + (b − p)]. Copy it in one run (from the
          // first valid position of the first example to the last of the last), then zero the
          // padded positions, which picked up neighbouring rows' or examples' pixels.
          let input = src + (c * n + n0) * plane
          let first = ilo * ow + jlo, last = (count - 1) * plane + (ihi - 1) * ow + jhi
          if ihi == ilo || jhi == jlo {
            Kernels.zero(dst, count: len)
            continue
          }
          if first > 0 { Kernels.zero(dst, count: first) }
          Kernels.copy(input + (first + (a - p) * w + (b - p)), to: dst + first, count: last - first)
          if last < len { Kernels.zero(dst + last, count: len - last) }
          if ilo > 0 || ihi < oh {
            for e in 0..<count {
              let out = dst + e * plane
              if ilo > 0 { Kernels.zero(out, count: ilo * ow) }
              if ihi < oh { Kernels.zero(out + ihi * ow, count: (oh - ihi) * ow) }
            }
          }
          // Padded columns of every row of every example (rows already zeroed included).
          let rows = count * oh
          for j in 0..<jlo {
            for t in 0..<rows { dst[t * ow + j] = 0 }
          }
          for j in jhi..<ow {
            for t in 0..<rows { dst[t * ow + j] = 0 }
          }
          continue
        }
        let end = channels * n * h * w  // elements of src, for the bounds of vector loads
        for e in 0..<count {
          let input = src + ((c * n + n0 + e) * h) * w
          let out = dst + e * plane
          if ilo > 0 { Kernels.zero(out, count: ilo * ow) }
          if ihi < oh { Kernels.zero(out + ihi * ow, count: (oh - ihi) * ow) }
          if ihi == ilo { continue }
          for i in ilo..<ihi {
            let orow = out + i * ow
            let irow = input + (i * s - p + a) * w + (b - p)
            if s == 1 {
              if jlo > 0 { Kernels.zero(orow, count: jlo) }
              Kernels.copy(irow + jlo, to: orow + jlo, count: jhi - jlo)
              if jhi < ow { Kernels.zero(orow + jhi, count: ow - jhi) }
              continue
            }
            var j = 0
            if s == 2 {
              // Eight outputs from the even lanes of 16 loaded floats while those lie inside src;
              // lanes in the padding read neighbouring pixels and are zeroed below.
              let rowStart = irow - src
              while j + 8 <= ow && rowStart + 2 * j >= 0 && rowStart + 2 * j + 16 <= end {
                let v = Kernels.load(irow + 2 * j)
                UnsafeMutableRawPointer(orow + j).storeBytes(of: v.evenHalf, as: SIMD8<Float>.self)
                j += 8
              }
              for t in 0..<min(jlo, j) { orow[t] = 0 }
              for t in max(jhi, 0)..<max(j, jhi) { orow[t] = 0 }
            }
            while j < ow {
              orow[j] = j >= jlo && j < jhi ? irow[j * s] : 0
              j += 1
            }
          }
        }
      }
    }
  }

  /// dx[ci, n0 + e, …] = Σ of the column rows of channel ci (overwrites the chunk of dx).
  private func col2im(
    _ col: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, n: Int, n0: Int, count: Int
  ) {
    let k = kernel, s = stride, p = padding, h = height, w = width
    let oh = outHeight, ow = outWidth
    let len = count * oh * ow
    Parallel.forRange(inChannels, costPerItem: k * k * len) { c0, c1 in
      for ci in c0..<c1 {
        for e in 0..<count { Kernels.zero(dx + (ci * n + n0 + e) * h * w, count: h * w) }
        for a in 0..<k {
          for b in 0..<k {
            let src = col + ((ci * k + a) * k + b) * len
            let jlo = min(ow, p > b ? (p - b + s - 1) / s : 0)
            let jhi = max(jlo, min(ow, w - 1 + p - b >= 0 ? (w - 1 + p - b) / s + 1 : 0))
            for e in 0..<count {
              let plane = dx + (ci * n + n0 + e) * h * w
              let inp = src + e * oh * ow
              for i in 0..<oh {
                let ih = i * s - p + a
                if ih < 0 || ih >= h { continue }
                let drow = plane + ih * w + (b - p)
                let irow = inp + i * ow
                if s == 1 {
                  Kernels.add(irow + jlo, into: drow + jlo, count: jhi - jlo)
                } else {
                  for j in jlo..<jhi { drow[j * s] += irow[j] }
                }
              }
            }
          }
        }
      }
    }
  }

  /// Whether the GEMM path runs 3×3 stride-1 products as an implicit GEMM (`implicitConvolve`):
  /// nil (default) where `prefersImplicit` measured it faster; tests force it on (any channel
  /// count and kernel set) or off to compare it with the column-matrix path.
  package var implicitGEMM: Bool? = nil

  /// Whether a 3×3 stride-1 product from `channels` to `outChannels` channels on padded planes of
  /// `plane` pixels runs as an implicit GEMM (`implicitConvolve`): with OpenBLAS's small-matrix
  /// kernels (the AVX-512 kernel sets), 12–24 input channels, and a product of three examples
  /// within those kernels. Measured on a 3-example chunk of a 16-channel 32×32 layer (Zen 5, one
  /// thread, `benchmarks/bench_implicit_gemm.py`): the nine K = 16 products take 0.135 ms against 0.174 ms for
  /// the K = 144 product over the column matrix, which must also be written first. Under the AVX2
  /// kernels (no small-matrix kernels) the nine products take 0.227 ms against 0.165 ms; with one
  /// example per product they lose to their call overhead (0.082 against 0.058 ms), and with more
  /// channels the column matrix's longer inner dimension wins.
  private func prefersImplicit(channels: Int, outChannels yc: Int, plane: Int) -> Bool {
    guard kernel == 3, stride == 1 else { return false }
    if let forced = implicitGEMM { return forced }
    guard channels >= 12, channels <= 24, let limit = BLAS.smallKernelLimit else { return false }
    return 3 * yc * channels * plane <= limit
  }

  /// y = Σ_(a,b) T[a, b] · shift_(a,b)(pad(x)) (+ bias): a stride-1 k×k convolution of `x` (`xc`
  /// channels, h × w, padding p; output oh × ow with `yc` channels) without a column matrix: the
  /// layer's forward pass, or with `transposed` its input gradient (x = dy, filters W̃). Per chunk of
  /// examples x is copied once into a zero-padded buffer, rows (channel c) of `ld` floats holding
  /// the chunk's padded planes (h + 2p) × (w + 2p) back to back; output pixel (i, j) of the padded
  /// grid is position q = i·(w + 2p) + j, and tap (a, b) reads position q + a·(w + 2p) + b, so each
  /// tap is one GEMM [yc, xc] · [xc, chunk's grid] over a shifted view (ldb = ld), accumulated into
  /// the grid, whose valid part is then cropped into y.
  private func implicitConvolve(
    _ x: UnsafePointer<Float>, transposed: Bool, h: Int, w: Int, padding p: Int, oh: Int, ow: Int,
    bias: UnsafePointer<Float>?, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext
  ) {
    let n = ctx.batch, k = kernel, kk = kernel * kernel
    let xc = transposed ? outChannels : inChannels, yc = transposed ? inChannels : outChannels
    let wp = w + 2 * p, hp = h + 2 * p
    let plane = hp * wp
    // Examples per chunk: each tap's product within the small-matrix kernels' size, and at least
    // `minimumChunks` chunks, like `chunkExamples`.
    let limit = BLAS.smallKernelLimit ?? Conv2D.columnBudget
    let fewest = Conv2D.minimumChunks
    let nc = max(1, min(n, limit / max(yc * xc * plane, 1), (n + fewest - 1) / fewest))
    let chunks = (n + nc - 1) / nc
    let ld = nc * plane + (k - 1) * wp + (k - 1)  // a padded input row, with the last tap's overhang
    let grid = nc * plane
    let slotSize = xc * ld + yc * grid
    let slots = Parallel.slots(for: chunks)
    let tapCount = kk * yc * xc
    let taps = ctx.scratch.pointer(count: tapCount + slots * slotSize)
    let buf = taps + tapCount
    // taps[(a, b), r, c] = W[r, c, a, b], or W̃[r, c, a, b] = W[c, r, k−1−a, k−1−b] (the input
    // gradient: rows r = input channels, columns c = output channels).
    let wts = ctx.params + paramOffset
    for co in 0..<outChannels {
      for ci in 0..<inChannels {
        let src = wts + (co * inChannels + ci) * kk
        for tap in 0..<kk {
          if transposed {
            taps[(tap * yc + ci) * xc + co] = src[kk - 1 - tap]
          } else {
            taps[(tap * yc + co) * xc + ci] = src[tap]
          }
        }
      }
    }
    // Each slot's padding and overhang are never written below, so zero its padded input once (the
    // grid is overwritten by the first tap's product).
    Parallel.forRange(slots, costPerItem: xc * ld) { s0, s1 in
      for slot in s0..<s1 { Kernels.zero(buf + slot * slotSize, count: xc * ld) }
    }
    let ohw = oh * ow
    Parallel.forEach(chunks, slots: slots) { slot, c in
      let n0 = c * nc, cnt = min(nc, n - n0)
      let xpad = buf + slot * slotSize, ypad = xpad + xc * ld
      for ch in 0..<xc {
        let row = xpad + ch * ld
        for e in 0..<cnt {
          let src = x + ((ch * n + n0 + e) * h) * w
          let dst = row + e * plane + p * wp + p
          for i in 0..<h { Kernels.copy(src + i * w, to: dst + i * wp, count: w) }
        }
      }
      let len = cnt * plane
      for tap in 0..<kk {
        let (a, b) = (tap / k, tap % k)
        BLAS.gemm(
          m: yc, n: len, k: xc, a: taps + tap * yc * xc, b: UnsafePointer(xpad + a * wp + b), ldb: ld,
          beta: tap == 0 ? 0 : 1, c: ypad, ldc: grid, parallel: false)
      }
      for co in 0..<yc {
        let b0: Float = bias.map { $0[co] } ?? 0
        for e in 0..<cnt {
          let out = y + (co * n + n0 + e) * ohw
          let src = UnsafePointer(ypad + co * grid + e * plane)
          for i in 0..<oh {
            if b0 == 0 {
              Kernels.copy(src + i * wp, to: out + i * ow, count: ow)
            } else {
              for j in 0..<ow { out[i * ow + j] = src[i * wp + j] + b0 }
            }
          }
        }
      }
    }
  }

  /// y = Σ_t W_t · col(x_t) (+ bias) for one or two terms (W₁, x₁) and (W₂, x₂): two terms run
  /// as one GEMM over the stacked weights [W₁ | W₂] and columns [col(x₁); col(x₂)].
  private func convolve(
    _ w1: UnsafePointer<Float>, _ x1: UnsafePointer<Float>, _ w2: UnsafePointer<Float>?,
    _ x2: UnsafePointer<Float>?, bias: UnsafePointer<Float>?, _ y: UnsafeMutablePointer<Float>,
    _ ctx: inout PassContext
  ) {
    let n = ctx.batch
    let cout = outChannels, kd = kdim
    let ohw = outHeight * outWidth
    let total = n * ohw
    if let b = bias { Kernels.fillRows(y, values: b, rows: cout, count: total) }
    let beta: Float = bias == nil ? 0 : 1
    if isPointwise {
      BLAS.gemm(m: cout, n: total, k: kd, a: w1, b: x1, beta: beta, c: y)
      if let w2, let x2 { BLAS.gemm(m: cout, n: total, k: kd, a: w2, b: x2, beta: 1, c: y) }
      return
    }
    let terms = w2 == nil ? 1 : 2
    let kk = terms * kd
    let nc = chunkExamples(n, perExample: kk * ohw)
    let chunks = (n + nc - 1) / nc
    let colSize = kk * nc * ohw
    let slots = Parallel.slots(for: chunks)
    let buf = ctx.scratch.pointer(count: slots * colSize + (terms == 2 ? cout * kk : 0))
    var weights = w1
    if let w2 {
      // Stacked weights [W₁ | W₂], row co = (W₁[co, :], W₂[co, :]).
      let stacked = buf + slots * colSize
      for co in 0..<cout {
        (stacked + co * kk).update(from: w1 + co * kd, count: kd)
        (stacked + co * kk + kd).update(from: w2 + co * kd, count: kd)
      }
      weights = UnsafePointer(stacked)
    }
    let (cin, h, w, k, s, p, oh, ow) = (inChannels, height, width, kernel, stride, padding, outHeight, outWidth)
    Parallel.forEach(chunks, slots: slots) { slot, c in
      let n0 = c * nc, cnt = min(nc, n - n0)
      let len = cnt * ohw
      let col = buf + slot * colSize
      Conv2D.im2col(
        x1, channels: cin, n: n, n0: n0, count: cnt, h: h, w: w, kernel: k, stride: s, padding: p, oh: oh,
        ow: ow, into: col)
      if let x2 {
        Conv2D.im2col(
          x2, channels: cin, n: n, n0: n0, count: cnt, h: h, w: w, kernel: k, stride: s, padding: p, oh: oh,
          ow: ow, into: col + kd * len)
      }
      if chunks == 1 {
        BLAS.gemm(m: cout, n: len, k: kk, a: weights, b: col, beta: beta, c: y + n0 * ohw, ldc: total)
      } else {
        BLAS.gemmColumnBlocks(
          m: cout, n: len, k: kk, a: weights, b: col, ldb: len, beta: beta, c: y + n0 * ohw, ldc: total)
      }
    }
  }

  /// Examples per Winograd chunk when one example needs `perExample` floats of V and M (or D):
  /// within `winogradBudget`, at most n / `minimumChunks` (rounded up), and a multiple of the
  /// plan's example group where the batch allows (F(4×4)'s vectors carry four examples).
  private func winogradChunk(_ plan: Winograd, n: Int, perExample: Int) -> Int {
    let fewest = Conv2D.minimumChunks
    let nc = max(1, min(n, Conv2D.winogradBudget / max(perExample, 1), (n + fewest - 1) / fewest))
    let group = plan.exampleGroup
    return min(n, max(group, nc - nc % group))
  }

  /// y = Σ_t conv(x_t, F_t) (+ bias) through Winograd for one or two terms, one product per
  /// transform point over the stacked filters [U(F₁) | U(F₂)] and inputs [V(x₁); V(x₂)].
  ///
  /// `transposed` runs the input-gradient convolution: the inputs have the layer's Cout channels,
  /// the output its Cin, and filter (ci, co) is W[co, ci] rotated by 180°. Chunks of examples run
  /// in parallel like `convolve`'s.
  private func winogradConvolve(
    _ plan: Winograd, filters: [UnsafePointer<Float>], inputs: [UnsafePointer<Float>], transposed: Bool,
    h: Int, w: Int, padding p: Int, oh: Int, ow: Int, bias: UnsafePointer<Float>?,
    _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext
  ) {
    let n = ctx.batch
    let xc = transposed ? outChannels : inChannels  // channels of each input
    let yc = transposed ? inChannels : outChannels  // channels of the output
    let kin = filters.count * xc
    let pts = plan.points
    let perTile = plan.tiles(oh) * plan.tiles(ow)
    let nc = winogradChunk(plan, n: n, perExample: pts * (kin + yc) * perTile)
    let chunks = (n + nc - 1) / nc
    // V and M of at most nc examples, the points `Winograd.planeStride` apart.
    let most = plan.columns(examples: nc, perTile: perTile)
    let chunkSize = pts * (Winograd.planeStride(rows: kin, ld: most) + Winograd.planeStride(rows: yc, ld: most))
    let slots = Parallel.slots(for: chunks)
    let uCount = pts * yc * kin
    let buf = ctx.scratch.pointer(count: uCount + slots * chunkSize)
    let lcin = inChannels
    for (t, f) in filters.enumerated() {
      plan.transformFilters(
        rows: yc, cols: xc, ld: kin, columnOffset: t * xc, flipped: transposed,
        filter: { r, c in transposed ? f + (c * lcin + r) * 9 : f + (r * lcin + c) * 9 }, into: buf)
    }
    let u = UnsafePointer(buf)
    let work = buf + uCount
    Parallel.forEach(chunks, slots: slots) { slot, c in
      let n0 = c * nc, cnt = min(nc, n - n0)
      let tiles = plan.columns(examples: cnt, perTile: perTile)
      let v = work + slot * chunkSize
      // The transforms space the points by `planeStride` of this chunk's own tile count.
      let vs = Winograd.planeStride(rows: kin, ld: tiles), ms = Winograd.planeStride(rows: yc, ld: tiles)
      let mt = v + pts * vs
      for (t, x) in inputs.enumerated() {
        plan.transformInput(
          x, channels: xc, n: n, n0: n0, count: cnt, h: h, w: w, padding: p, oh: oh, ow: ow, into: v,
          rows: kin, ld: tiles, rowOffset: t * xc)
      }
      for xi in 0..<pts {
        BLAS.gemm(
          m: yc, n: tiles, k: kin, a: u + xi * yc * kin, b: v + xi * vs, c: mt + xi * ms,
          parallel: chunks == 1)
      }
      plan.transformOutput(
        mt, channels: yc, ld: tiles, bias: bias, into: y, n: n, n0: n0, count: cnt, oh: oh, ow: ow)
    }
  }

  /// dW (3×3 filters, overwritten at `g`) through Winograd: per chunk Z_c[ξ] = D[ξ]·V[ξ]ᵀ with
  /// D = A dY Aᵀ and V = Bᵀ d B, summed in chunk order, then dW = Gᵀ Z G.
  private func winogradFilterGradient(
    _ plan: Winograd, _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>,
    _ ctx: inout PassContext
  ) {
    let n = ctx.batch
    let (cin, cout, h, w, p, oh, ow) = (inChannels, outChannels, height, width, padding, outHeight, outWidth)
    let pts = plan.points
    let perTile = plan.tiles(oh) * plan.tiles(ow)
    let nc = winogradChunk(plan, n: n, perExample: pts * (cin + cout) * perTile)
    let chunks = (n + nc - 1) / nc
    // V and D of at most nc examples, the points `Winograd.planeStride` apart.
    let most = plan.columns(examples: nc, perTile: perTile)
    let chunkSize = pts * (Winograd.planeStride(rows: cin, ld: most) + Winograd.planeStride(rows: cout, ld: most))
    let slots = Parallel.slots(for: chunks)
    let zSize = pts * cout * cin
    let buf = ctx.scratch.pointer(count: chunks * zSize + slots * chunkSize)
    let work = buf + chunks * zSize
    Parallel.forEach(chunks, slots: slots) { slot, c in
      let n0 = c * nc, cnt = min(nc, n - n0)
      let tiles = plan.columns(examples: cnt, perTile: perTile)
      let v = work + slot * chunkSize
      let vs = Winograd.planeStride(rows: cin, ld: tiles), ds = Winograd.planeStride(rows: cout, ld: tiles)
      let d = v + pts * vs
      plan.transformInput(
        x, channels: cin, n: n, n0: n0, count: cnt, h: h, w: w, padding: p, oh: oh, ow: ow, into: v,
        rows: cin, ld: tiles, rowOffset: 0)
      plan.transformOutputGradient(dy, channels: cout, n: n, n0: n0, count: cnt, oh: oh, ow: ow, into: d, ld: tiles)
      for xi in 0..<pts {
        BLAS.gemm(
          transB: true, m: cout, n: cin, k: tiles, a: d + xi * ds, b: v + xi * vs,
          c: buf + c * zSize + xi * cout * cin, parallel: chunks == 1)
      }
    }
    if chunks > 1 {
      Parallel.forRange(zSize, costPerItem: chunks) { j0, j1 in
        for c in 1..<chunks { Kernels.add(buf + c * zSize + j0, into: buf + j0, count: j1 - j0) }
      }
    }
    plan.filterGradients(buf, rows: cout, cols: cin, out: { r, c in g + (r * cin + c) * 9 })
  }

  /// y = W·col(x) + b.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    let w = ctx.params + paramOffset
    let bias = hasBias ? w + outChannels * kdim : nil
    if let plan = winogradPlan {
      winogradConvolve(
        plan, filters: [w], inputs: [x], transposed: false, h: height, w: width, padding: padding,
        oh: outHeight, ow: outWidth, bias: bias, y, &ctx)
      return
    }
    let padded = (height + 2 * padding) * (width + 2 * padding)
    if padding <= kernel - 1, prefersImplicit(channels: inChannels, outChannels: outChannels, plane: padded) {
      implicitConvolve(
        x, transposed: false, h: height, w: width, padding: padding, oh: outHeight, ow: outWidth, bias: bias, y,
        &ctx)
      return
    }
    convolve(w, x, nil, nil, bias: bias, y, &ctx)
  }

  /// dW = Σ (col(x)·dyᵀ)ᵀ, db = Σ dy, dx = W̃·col′(dy) or col2im(Wᵀ·dy).
  ///
  /// The per-chunk weight gradient is taken as dWᵀ = col(x)·dyᵀ [Cin·k², Cout] (OpenBLAS runs
  /// that orientation up to twice as fast for few output channels) and transposed when summed.
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let n = ctx.batch
    let cout = outChannels, cin = inChannels, kd = kdim
    let ohw = outHeight * outWidth, hw = height * width
    let total = n * ohw
    let w = ctx.params + paramOffset
    let gw = ctx.grads.map { $0 + paramOffset }
    if let g = gw, hasBias {
      let gb = g + cout * kd
      Parallel.forRange(cout, costPerItem: total) { c0, c1 in
        for c in c0..<c1 { gb[c] = Float(Kernels.sum(dy + c * total, count: total)) }
      }
    }
    if gw == nil && dx == nil { return }
    if let plan = winogradPlan {
      if let g = gw { winogradFilterGradient(plan, x, dy, g, &ctx) }
      if let d = dx {
        winogradConvolve(
          plan, filters: [w], inputs: [dy], transposed: true, h: outHeight, w: outWidth, padding: 2 - padding,
          oh: height, ow: width, bias: nil, d, &ctx)
      }
      return
    }
    if isPointwise {
      if let g = gw { BLAS.gemm(transB: true, m: cout, n: cin, k: total, a: dy, b: x, c: g) }
      if let d = dx { BLAS.gemm(transA: true, m: cin, n: total, k: cout, a: w, b: dy, c: d) }
      return
    }
    let (h, wd, k, s, p, oh, ow) = (height, width, kernel, stride, padding, outHeight, outWidth)
    let viaConvolution = transposedIsConvolution
    var dxLeft = dx  // the input gradient, unless the implicit GEMM below already wrote it
    let pt = k - 1 - p  // the input gradient's padding as a convolution of dy
    if let d = dx, viaConvolution,
      prefersImplicit(channels: cout, outChannels: cin, plane: (oh + 2 * pt) * (ow + 2 * pt))
    {
      // dx = conv(dy, W̃) with padding k − 1 − p.
      implicitConvolve(dy, transposed: true, h: oh, w: ow, padding: pt, oh: h, ow: wd, bias: nil, d, &ctx)
      dxLeft = nil
      if gw == nil { return }
    }
    let kt = cout * k * k  // rows of col′(dy)
    let perExample = max(gw == nil ? 0 : kd * ohw, dxLeft == nil ? 0 : (viaConvolution ? kt * hw : kd * ohw))
    let nc = chunkExamples(n, perExample: perExample)
    let chunks = (n + nc - 1) / nc
    let colSize = nc * perExample
    let slots = Parallel.slots(for: chunks)
    let partialCount = gw != nil ? chunks * cout * kd : 0
    let flipCount = dxLeft != nil && viaConvolution ? cin * kt : 0
    let buf = ctx.scratch.pointer(count: slots * colSize + partialCount + flipCount)
    let partials = buf + slots * colSize
    let flipped = partials + partialCount
    if flipCount > 0 {
      // W̃[ci, (co, a, b)] = W[co, ci, k−1−a, k−1−b].
      for ci in 0..<cin {
        for co in 0..<cout {
          let src = w + (co * cin + ci) * k * k
          let dst = flipped + ci * kt + co * k * k
          for t in 0..<(k * k) { dst[t] = src[k * k - 1 - t] }
        }
      }
    }
    let flippedW = UnsafePointer(flipped)
    Parallel.forEach(chunks, slots: slots) { slot, c in
      let n0 = c * nc, cnt = min(nc, n - n0)
      let len = cnt * ohw
      let col = buf + slot * colSize
      let dyc = dy + n0 * ohw
      if gw != nil {
        Conv2D.im2col(
          x, channels: cin, n: n, n0: n0, count: cnt, h: h, w: wd, kernel: k, stride: s, padding: p, oh: oh,
          ow: ow, into: col)
        BLAS.gemm(
          transB: true, m: kd, n: cout, k: len, a: col, lda: len, b: dyc, ldb: total,
          c: partials + c * cout * kd, parallel: chunks == 1)
      }
      if let d = dxLeft {
        if viaConvolution {
          Conv2D.im2col(
            dy, channels: cout, n: n, n0: n0, count: cnt, h: oh, w: ow, kernel: k, stride: 1,
            padding: k - 1 - p, oh: h, ow: wd, into: col)
          if chunks == 1 {
            BLAS.gemm(m: cin, n: cnt * hw, k: kt, a: flippedW, b: col, c: d + n0 * hw, ldc: n * hw)
          } else {
            BLAS.gemmColumnBlocks(
              m: cin, n: cnt * hw, k: kt, a: flippedW, b: col, ldb: cnt * hw, beta: 0, c: d + n0 * hw,
              ldc: n * hw)
          }
        } else {
          BLAS.gemm(
            transA: true, m: kd, n: len, k: cout, a: w, b: dyc, ldb: total, c: col, parallel: chunks == 1)
          col2im(col, d, n: n, n0: n0, count: cnt)
        }
      }
    }
    if let g = gw {
      // P₀ += P₁ + P₂ + … in chunk order, then g[co, j] = P₀[j, co].
      let size = cout * kd
      if chunks > 1 {
        Parallel.forRange(size, costPerItem: chunks) { j0, j1 in
          for c in 1..<chunks { Kernels.add(partials + c * size + j0, into: partials + j0, count: j1 - j0) }
        }
      }
      for j in 0..<kd {
        for co in 0..<cout { g[co * kd + j] = partials[j * cout + co] }
      }
    }
  }

  /// ty = W·col(tx) + tW·col(x) (+ tb), one stacked GEMM when both directions are present.
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let w = ctx.params + paramOffset
    let tw = ctx.paramTangent.map { $0 + paramOffset }
    let tb = hasBias ? tw.map { $0 + outChannels * kdim } : nil
    if let plan = winogradPlan, tx != nil || tw != nil {
      var filters: [UnsafePointer<Float>] = [], inputs: [UnsafePointer<Float>] = []
      if let t = tx {
        filters.append(w)
        inputs.append(t)
      }
      if let d = tw {
        filters.append(d)
        inputs.append(x)
      }
      winogradConvolve(
        plan, filters: filters, inputs: inputs, transposed: false, h: height, w: width, padding: padding,
        oh: outHeight, ow: outWidth, bias: tb, ty, &ctx)
      return
    }
    switch (tx, tw) {
    case (let t?, let d?): convolve(w, t, d, x, bias: tb, ty, &ctx)
    case (let t?, nil): convolve(w, t, nil, nil, bias: nil, ty, &ctx)
    case (nil, let d?): convolve(d, x, nil, nil, bias: tb, ty, &ctx)
    case (nil, nil): ty.update(repeating: 0, count: ctx.batch * outputLayout.size)
    }
  }
}
