import MetaweightTensor

#if canImport(Glibc)
  import Glibc
#endif

/// Softmax cross-entropy, per example.
public enum CrossEntropy {
  /// Per-example losses lᵢ = −log softmax(zᵢ)[yᵢ] and probabilities p = softmax(z).
  ///
  /// - Parameters:
  ///   - logits: [n, c].
  ///   - labels: n labels in 0..<c (validated by the caller).
  ///   - losses: n outputs.
  ///   - probs: [n, c] outputs.
  public static func forward(
    logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, n: Int, c: Int,
    losses: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>
  ) {
    for i in 0..<n {
      let z = logits + i * c
      let p = probs + i * c
      var mx = -Float.infinity
      for j in 0..<c { mx = max(mx, z[j]) }
      var s: Float = 0
      for j in 0..<c {
        let e = expf(z[j] - mx)
        p[j] = e
        s += e
      }
      let inv = 1 / s
      for j in 0..<c { p[j] *= inv }
      losses[i] = -(z[Int(labels[i])] - mx - logf(s))
    }
  }

  /// dlogits[i, j] = coef[i] · (p[i, j] − [j = yᵢ]): the gradient of Σᵢ coefᵢ·lᵢ.
  public static func backward(
    probs: UnsafePointer<Float>, labels: UnsafePointer<Int32>, n: Int, c: Int,
    coefficients: UnsafePointer<Float>, dlogits: UnsafeMutablePointer<Float>
  ) {
    for i in 0..<n {
      let w = coefficients[i]
      let p = probs + i * c
      let d = dlogits + i * c
      for j in 0..<c { d[j] = w * p[j] }
      d[Int(labels[i])] -= w
    }
  }

  /// Entropy of each row of p (for diagnostics and LAW features).
  public static func entropy(probs: UnsafePointer<Float>, n: Int, c: Int, out: UnsafeMutablePointer<Float>) {
    for i in 0..<n {
      var h: Float = 0
      for j in 0..<c {
        let v = probs[i * c + j]
        if v > 0 { h -= v * logf(v) }
      }
      out[i] = h
    }
  }
}
