import _CBLAS

/// Row-major single-precision matrix products through OpenBLAS.
///
/// OpenBLAS's own thread pool is kept at one thread: a large product is instead cut into up to
/// `threads` column (or row) blocks that run as single-threaded OpenBLAS calls on metaweight's pool
/// (`Parallel`), so OpenBLAS's spinning workers never compete with metaweight's on the same cores,
/// and kernels that already run in parallel (convolution chunks) call OpenBLAS serially.
public enum BLAS {
  /// Sets OpenBLAS to one thread before its first use.
  private static let configured: Bool = {
    openblas_set_num_threads(1)
    return true
  }()

  nonisolated(unsafe) private static var _threads = Int.max

  /// Most blocks one product is cut into (also bounded by `Parallel.threads`).
  public static var threads: Int { min(_threads, Parallel.threads) }

  /// Products smaller than this many multiply-adds are never cut.
  static let minimumSplitWork = 1 << 20

  /// C[m×n] = alpha · op(A) · op(B) + beta · C, all row-major.
  ///
  /// `op(A)` is m×k (A is k×m when `transA`), `op(B)` is k×n (B is n×k when `transB`). With
  /// `parallel` (the default) a large product is cut along its larger output dimension into
  /// blocks run on `Parallel`'s threads; how it is cut depends only on the shape and `threads`.
  public static func gemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
    b: UnsafePointer<Float>, ldb: Int? = nil,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil, parallel: Bool = true
  ) {
    if m == 0 || n == 0 { return }
    let lc = ldc ?? n
    if k == 0 {
      if beta != 1 {
        for i in 0..<m {
          let row = c + i * lc
          if beta == 0 { row.update(repeating: 0, count: n) } else { for j in 0..<n { row[j] *= beta } }
        }
      }
      return
    }
    _ = configured
    let la = lda ?? (transA ? m : k)
    let lb = ldb ?? (transB ? k : n)
    let work = m * n * k
    let t = parallel ? threads : 1
    let pieces = t > 1 && work >= minimumSplitWork ? min(t, work / (minimumSplitWork / 2)) : 1
    let splitN = n >= m
    let dim = splitN ? n : m
    let parts = min(pieces, max(1, dim / 16))
    if parts <= 1 {
      sgemm(transA, transB, m, n, k, alpha, a, la, b, lb, beta, c, lc)
      return
    }
    Parallel.forEach(parts) { _, p in
      // Block boundaries on multiples of 16 elements.
      let lo = (dim * p / parts) & ~15
      let hi = p == parts - 1 ? dim : (dim * (p + 1) / parts) & ~15
      if hi <= lo { return }
      if splitN {
        sgemm(
          transA, transB, m, hi - lo, k, alpha, a, la, transB ? b + lo * lb : b + lo, lb, beta, c + lo, lc)
      } else {
        sgemm(
          transA, transB, hi - lo, n, k, alpha, transA ? a + lo : a + lo * la, la, b, lb, beta,
          c + lo * lc, lc)
      }
    }
  }

  @inline(__always)
  private static func sgemm(
    _ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
    _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int, _ beta: Float,
    _ c: UnsafeMutablePointer<Float>, _ ldc: Int
  ) {
    cblas_sgemm(
      CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
      Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
  }

  /// Products of at most this many multiply-adds (M·N·K) that OpenBLAS runs with its unpacked
  /// "small matrix" kernels, or nil when the selected core has none. OpenBLAS 0.3.21 has them
  /// for its AVX-512 cores and permits them up to 10⁶; for products with few rows they run up to
  /// 2.5 times faster than the packed path, so convolutions cut their products to fit.
  public static let smallKernelLimit: Int? = {
    switch coreName.lowercased() {
    case "skylakex", "cooperlake", "sapphirerapids": return 1_000_000
    default: return nil
    }
  }()

  /// C[m×n] = A·B (+ beta·C) for row-major, untransposed A and B, single-threaded, cut into
  /// column blocks that fit `smallKernelLimit` when that keeps blocks at least 32 columns wide
  /// (products with few rows, such as a convolution of up to 64 channels, or the stacked
  /// [W | tW] product of a convolution's tangent); one call otherwise. Measured on ResNet-32
  /// (batch 100, AVX-512, 2 threads): 256 → 32 columns cut the forward pass by ~4% and the JVP
  /// by ~8% (the methods benchmark shows the effect on whole steps).
  package static func gemmColumnBlocks(
    m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    var width = n
    if let limit = smallKernelLimit, m * n * k > limit, m * k > 0 {
      let w = (limit / (m * k)) & ~15
      if w >= 32 { width = w }
    }
    var j = 0
    while j < n {
      let cols = min(width, n - j)
      gemm(m: m, n: cols, k: k, a: a, b: b + j, ldb: ldb, beta: beta, c: c + j, ldc: ldc, parallel: false)
      j += cols
    }
  }

  /// Sets the most blocks one product is cut into (the threads a product may use); OpenBLAS's
  /// own pool stays at one thread.
  public static func setThreads(_ n: Int) {
    _ = configured
    _threads = max(1, n)
  }

  /// The core OpenBLAS selected for this CPU (for example "SkylakeX" or "Haswell").
  public static var coreName: String {
    guard let p = openblas_get_corename() else { return "unknown" }
    return String(cString: p)
  }

  /// OpenBLAS's build configuration string.
  public static var config: String {
    guard let p = openblas_get_config() else { return "unknown" }
    return String(cString: p)
  }
}

/// Naive reference kernels used by tests to check the fast paths.
public enum Reference {
  /// Triple-loop row-major GEMM with the same conventions as `BLAS.gemm`.
  public static func gemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: [Float], b: [Float], beta: Float, c: inout [Float]
  ) {
    for i in 0..<m {
      for j in 0..<n {
        var s: Double = 0
        for p in 0..<k {
          let av = transA ? a[p * m + i] : a[i * k + p]
          let bv = transB ? b[j * k + p] : b[p * n + j]
          s += Double(av) * Double(bv)
        }
        c[i * n + j] = alpha * Float(s) + beta * c[i * n + j]
      }
    }
  }
}
