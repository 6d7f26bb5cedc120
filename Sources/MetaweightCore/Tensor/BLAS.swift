import _CBLAS

/// Row-major single-precision matrix products through OpenBLAS.
public enum BLAS {
  /// C[m×n] = alpha · op(A) · op(B) + beta · C, all row-major.
  ///
  /// `op(A)` is m×k (A is k×m when `transA`), `op(B)` is k×n (B is n×k when `transB`).
  @inlinable
  public static func gemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
    b: UnsafePointer<Float>, ldb: Int? = nil,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil
  ) {
    if m == 0 || n == 0 { return }
    if k == 0 {
      if beta == 0 { c.update(repeating: 0, count: m * (ldc ?? n)) }
      return
    }
    let la = lda ?? (transA ? m : k)
    let lb = ldb ?? (transB ? k : n)
    cblas_sgemm(
      CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
      Int32(m), Int32(n), Int32(k), alpha, a, Int32(la), b, Int32(lb), beta, c, Int32(ldc ?? n))
  }

  /// Sets the number of OpenBLAS threads.
  public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }

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
