import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

/// The fast kernels against naive loops written here: GEMM (OpenBLAS) against
/// `Reference.gemm`, convolution against a direct NCHW convolution, pooling against window loops.
final class KernelTests: XCTestCase {
  // MARK: - GEMM

  /// Runs `BLAS.gemm` on strided storage and `Reference.gemm` on dense copies, and compares.
  private func checkGemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, beta: Float, padA: Int, padB: Int,
    padC: Int, seed: UInt64, file: StaticString = #filePath, line: UInt = #line
  ) {
    var rng = RNG(seed: seed)
    // Dense op-layout storage: A is m×k (k×m when transposed), B is k×n (n×k when transposed).
    let (aRows, aCols) = transA ? (k, m) : (m, k)
    let (bRows, bCols) = transB ? (n, k) : (k, n)
    let a = rng.gaussianArray(aRows * aCols)
    let b = rng.gaussianArray(bRows * bCols)
    let c0 = rng.gaussianArray(m * n)
    var expected = c0
    Reference.gemm(
      transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, b: b, beta: beta, c: &expected)

    // Strided copies: every row is padded with sentinels that must stay untouched.
    let lda = aCols + padA, ldb = bCols + padB, ldc = n + padC
    let sentinel: Float = -12345
    func strided(_ x: [Float], rows: Int, cols: Int, ld: Int) -> [Float] {
      var s = [Float](repeating: sentinel, count: rows * ld)
      for r in 0..<rows { for j in 0..<cols { s[r * ld + j] = x[r * cols + j] } }
      return s
    }
    let sa = strided(a, rows: aRows, cols: aCols, ld: lda)
    let sb = strided(b, rows: bRows, cols: bCols, ld: ldb)
    var sc = strided(c0, rows: m, cols: n, ld: ldc)
    sa.withUnsafeBufferPointer { pa in
      sb.withUnsafeBufferPointer { pb in
        sc.withUnsafeMutableBufferPointer { pc in
          BLAS.gemm(
            transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: pa.baseAddress!,
            lda: padA == 0 ? nil : lda, b: pb.baseAddress!, ldb: padB == 0 ? nil : ldb, beta: beta,
            c: pc.baseAddress!, ldc: padC == 0 ? nil : ldc)
        }
      }
    }
    var got = [Float](repeating: 0, count: m * n)
    var padsIntact = true
    for r in 0..<m {
      for j in 0..<ldc {
        if j < n { got[r * n + j] = sc[r * ldc + j] } else if sc[r * ldc + j] != sentinel { padsIntact = false }
      }
    }
    let what = "gemm transA=\(transA) transB=\(transB) m=\(m) n=\(n) k=\(k) pads=(\(padA),\(padB),\(padC))"
    Check.elementsClose(got, expected, rtol: 1e-4, atol: 1e-4 * Float(max(k, 1)).squareRoot(), what, file: file, line: line)
    XCTAssertTrue(padsIntact, "\(what): wrote outside the m×n window of C", file: file, line: line)
    XCTAssertEqual(sa, strided(a, rows: aRows, cols: aCols, ld: lda), "\(what): A modified", file: file, line: line)
  }

  func testGemmMatchesReferenceForAllTransposeCombinationsAndOddSizes() {
    var seed: UInt64 = 1
    for (m, n, k) in [(1, 1, 1), (7, 5, 3), (13, 11, 9), (3, 17, 1), (33, 19, 65), (5, 1, 31)] {
      for transA in [false, true] {
        for transB in [false, true] {
          seed += 1
          checkGemm(
            transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, beta: 0, padA: 0, padB: 0, padC: 0,
            seed: seed)
          checkGemm(
            transA: transA, transB: transB, m: m, n: n, k: k, alpha: -0.75, beta: 0.5, padA: 0, padB: 0, padC: 0,
            seed: seed + 1000)
        }
      }
    }
  }

  func testGemmHonoursLeadingDimensionsForAllTransposeCombinations() {
    var seed: UInt64 = 50
    for (m, n, k) in [(7, 5, 3), (13, 11, 9), (4, 9, 17)] {
      for transA in [false, true] {
        for transB in [false, true] {
          seed += 1
          checkGemm(
            transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1.25, beta: 0.5, padA: 3, padB: 5, padC: 2,
            seed: seed)
          checkGemm(
            transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, beta: 0, padA: 1, padB: 0, padC: 7,
            seed: seed + 1000)
        }
      }
    }
  }

  func testGemmMatchesReferenceWhenLargeProductsAreSplitAcrossThreads() {
    // Products of 2²⁰ multiply-adds or more are cut into column (n ≥ m) or row blocks.
    var seed: UInt64 = 300
    for (m, n, k) in [(37, 517, 67), (517, 37, 67)] {
      for transA in [false, true] {
        for transB in [false, true] {
          seed += 1
          checkGemm(
            transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, beta: 0.25, padA: 2, padB: 3, padC: 5,
            seed: seed)
        }
      }
    }
    checkGemm(
      transA: false, transB: false, m: 64, n: 300, k: 64, alpha: 1, beta: 0, padA: 0, padB: 0, padC: 0, seed: 400)
  }

  func testGemmWithEmptyInnerDimensionScalesC() {
    for beta: Float in [0, 0.5] {
      for padC in [0, 3] {
        checkGemm(
          transA: false, transB: false, m: 3, n: 4, k: 0, alpha: 1, beta: beta, padA: 0, padB: 0, padC: padC,
          seed: 9)
      }
    }
  }

  // MARK: - Convolution

  /// Direct convolution in NCHW: y[n, co, i, j] = b[co] + Σ w[co, ci, a, c]·x[n, ci, i·s−p+a, j·s−p+c].
  private func naiveConv(
    _ x: [Float], n: Int, cin: Int, h: Int, w: Int, weight: [Float], bias: [Float]?, cout: Int, k: Int,
    stride s: Int, padding p: Int
  ) -> [Float] {
    let oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1
    var y = [Float](repeating: 0, count: n * cout * oh * ow)
    x.withUnsafeBufferPointer { xp in
      weight.withUnsafeBufferPointer { wp in
        y.withUnsafeMutableBufferPointer { yp in
          for b in 0..<n {
            for co in 0..<cout {
              for i in 0..<oh {
                for j in 0..<ow {
                  var acc = Double(bias?[co] ?? 0)
                  for ci in 0..<cin {
                    for a in 0..<k {
                      let ih = i * s - p + a
                      if ih < 0 || ih >= h { continue }
                      for c in 0..<k {
                        let iw = j * s - p + c
                        if iw < 0 || iw >= w { continue }
                        acc += Double(wp[((co * cin + ci) * k + a) * k + c]) * Double(xp[((b * cin + ci) * h + ih) * w + iw])
                      }
                    }
                  }
                  yp[((b * cout + co) * oh + i) * ow + j] = Float(acc)
                }
              }
            }
          }
        }
      }
    }
    return y
  }

  /// The layer's forward pass, in and out of NCHW.
  private func layerConv(_ conv: Conv2D, x nchw: [Float], params: [Float], n: Int) -> [Float] {
    let t = LayerHarness(conv, batch: n)
    t.params = params
    t.x = Vec.toChannelMajor(nchw, n: n, c: conv.inChannels, hw: conv.height * conv.width)
    return Vec.toBatchMajor(t.output(), n: n, c: conv.outChannels, hw: conv.outHeight * conv.outWidth)
  }

  private func checkConv(
    n: Int, cin: Int, h: Int, w: Int, cout: Int, k: Int, s: Int, p: Int, bias: Bool, seed: UInt64,
    file: StaticString = #filePath, line: UInt = #line
  ) throws {
    let conv = try Conv2D(
      input: .image(c: cin, h: h, w: w), outChannels: cout, kernel: k, stride: s, padding: p, bias: bias)
    var rng = RNG(seed: seed)
    let x = rng.gaussianArray(n * cin * h * w)
    let weight = rng.gaussianArray(cout * cin * k * k)
    let b = bias ? rng.gaussianArray(cout) : nil
    let expected = naiveConv(x, n: n, cin: cin, h: h, w: w, weight: weight, bias: b, cout: cout, k: k, stride: s, padding: p)
    XCTAssertEqual(conv.outHeight, (h + 2 * p - k) / s + 1, file: file, line: line)
    XCTAssertEqual(conv.outWidth, (w + 2 * p - k) / s + 1, file: file, line: line)
    let got = layerConv(conv, x: x, params: weight + (b ?? []), n: n)
    Check.elementsClose(
      got, expected, rtol: 1e-4, atol: 1e-4, "conv n=\(n) cin=\(cin) \(h)x\(w) cout=\(cout) k=\(k) s=\(s) p=\(p) bias=\(bias)",
      file: file, line: line)
  }

  func testConv2DForwardMatchesDirectConvolution() throws {
    try checkConv(n: 2, cin: 3, h: 7, w: 6, cout: 4, k: 3, s: 1, p: 1, bias: true, seed: 1)
    try checkConv(n: 3, cin: 2, h: 8, w: 9, cout: 3, k: 3, s: 2, p: 1, bias: false, seed: 2)
    try checkConv(n: 2, cin: 2, h: 9, w: 9, cout: 2, k: 5, s: 1, p: 0, bias: true, seed: 3)
    try checkConv(n: 2, cin: 2, h: 6, w: 6, cout: 3, k: 5, s: 1, p: 2, bias: false, seed: 4)
    try checkConv(n: 3, cin: 4, h: 5, w: 5, cout: 3, k: 1, s: 1, p: 0, bias: true, seed: 5)
    try checkConv(n: 2, cin: 3, h: 7, w: 7, cout: 5, k: 1, s: 2, p: 0, bias: false, seed: 6)
    try checkConv(n: 2, cin: 2, h: 8, w: 8, cout: 2, k: 2, s: 2, p: 0, bias: true, seed: 7)
    try checkConv(n: 1, cin: 1, h: 5, w: 4, cout: 1, k: 3, s: 3, p: 2, bias: false, seed: 8)
    try checkConv(n: 2, cin: 3, h: 4, w: 4, cout: 2, k: 3, s: 1, p: 2, bias: true, seed: 9)
  }

  /// Convolutions cut a batch into chunks of examples (at least eight chunks once the batch has
  /// eight examples, and fewer examples per chunk when one example's column matrix is large) that
  /// run on separate threads. Batch 19 on this layer gives chunks of at most three examples with
  /// a one-example remainder; the second layer's column matrix for one example (800 × 1024
  /// floats) exceeds the chunk budget on its own.
  private func chunkedConvs() throws -> [(Conv2D, n: Int, x: [Float], w: [Float])] {
    var rng = RNG(seed: 31)
    let a = try Conv2D(input: .image(c: 4, h: 9, w: 9), outChannels: 3, kernel: 3, padding: 1)
    let b = try Conv2D(input: .image(c: 32, h: 32, w: 32), outChannels: 2, kernel: 5, padding: 2)
    return [
      (a, 19, rng.gaussianArray(19 * 4 * 81), rng.gaussianArray(3 * 4 * 9, scale: 0.3)),
      (b, 2, rng.gaussianArray(2 * 32 * 1024), rng.gaussianArray(2 * 32 * 25, scale: 0.1)),
    ]
  }

  func testConv2DForwardMatchesDirectConvolutionAcrossChunkBoundaries() throws {
    for (conv, n, x, w) in try chunkedConvs() {
      let expected = naiveConv(
        x, n: n, cin: conv.inChannels, h: conv.height, w: conv.width, weight: w, bias: nil, cout: conv.outChannels,
        k: conv.kernel, stride: conv.stride, padding: conv.padding)
      Check.elementsClose(
        layerConv(conv, x: x, params: w, n: n), expected, rtol: 1e-4, atol: 1e-4, "chunked conv forward, batch \(n)")
    }
  }

  func testConv2DBackwardAndTangentAcrossChunkBoundariesAreConsistentWithForward() throws {
    // Without bias y is bilinear in (W, x): ⟨dy, y⟩ = ⟨dL/dW, W⟩ = ⟨dL/dx, x⟩ for L = ⟨dy, y⟩,
    // and the tangent along (0, x), (W, 0) or (W, x) reproduces y, 2y. This checks the chunked
    // paths (per-chunk weight-gradient partial sums, per-chunk col2im) on large layers cheaply;
    // the finite-difference tests cover chunked batches of small layers.
    for (conv, n, xNCHW, w) in try chunkedConvs() {
      let t = LayerHarness(conv, batch: n)
      t.params = w
      t.x = Vec.toChannelMajor(xNCHW, n: n, c: conv.inChannels, hw: conv.height * conv.width)
      let pass = t.forward()
      let y = pass.output
      var rng = RNG(seed: 32)
      let dy = rng.gaussianArray(y.count)
      let (gw, gx) = t.backward(pass, dy: dy)
      let target = Vec.dot(dy, y)
      let scale = Vec.norm(dy) * Vec.norm(y)
      XCTAssertEqual(Vec.dot(gw, w), target, accuracy: 1e-4 * scale, "⟨dL/dW, W⟩, batch \(n)")
      XCTAssertEqual(Vec.dot(gx, t.x), target, accuracy: 1e-4 * scale, "⟨dL/dx, x⟩, batch \(n)")
      Check.elementsClose(t.tangent(pass, params: nil, input: t.x), y, rtol: 1e-4, atol: 1e-4, "tangent along x")
      Check.elementsClose(t.tangent(pass, params: w, input: nil), y, rtol: 1e-4, atol: 1e-4, "tangent along W")
      Check.elementsClose(
        t.tangent(pass, params: w, input: t.x), y.map { 2 * $0 }, rtol: 1e-4, atol: 2e-4, "tangent along (W, x)")
    }
  }

  // MARK: - Pooling

  private func naivePool(
    _ x: [Float], planes: Int, h: Int, w: Int, k: Int, s: Int, max useMax: Bool
  ) -> (y: [Float], arg: [Int]) {
    let oh = (h - k) / s + 1, ow = (w - k) / s + 1
    var y = [Float](repeating: 0, count: planes * oh * ow)
    var arg = [Int](repeating: 0, count: y.count)
    for p in 0..<planes {
      for i in 0..<oh {
        for j in 0..<ow {
          var best = -Float.infinity, bi = -1
          var sum: Double = 0
          for a in 0..<k {
            for b in 0..<k {
              let idx = p * h * w + (i * s + a) * w + (j * s + b)
              sum += Double(x[idx])
              if x[idx] > best { best = x[idx]; bi = idx }
            }
          }
          let o = (p * oh + i) * ow + j
          y[o] = useMax ? best : Float(sum / Double(k * k))
          arg[o] = bi
        }
      }
    }
    return (y, arg)
  }

  func testMaxPoolMatchesNaiveWindowLoops() throws {
    for (c, h, w, k, s, n) in [(2, 6, 6, 2, 2, 2), (3, 7, 7, 3, 2, 2), (1, 5, 8, 2, 1, 3), (2, 9, 7, 3, 3, 1)] {
      let pool = try MaxPool2D(input: .image(c: c, h: h, w: w), kernel: k, stride: s)
      var rng = RNG(seed: UInt64(c * 100 + h * 10 + k))
      // Small integers: many ties, which must resolve to the first maximum in the window.
      let x = (0..<(n * c * h * w)).map { _ in Float(rng.int(below: 4)) }
      let t = LayerHarness(pool, batch: n)
      t.x = x  // planes are contiguous in both layouts, so channel-major order does not matter here
      let pass = t.forward()
      let (expected, arg) = naivePool(x, planes: n * c, h: h, w: w, k: k, s: s, max: true)
      XCTAssertEqual(pass.output, expected, "maxpool \(c)x\(h)x\(w) k=\(k) s=\(s)")
      let dy = rng.gaussianArray(expected.count)
      var dxExpected = [Float](repeating: 0, count: x.count)
      for o in 0..<dy.count { dxExpected[arg[o]] += dy[o] }
      Check.elementsClose(t.backward(pass, dy: dy).input, dxExpected, "maxpool backward routes to the first maximum")
    }
  }

  func testAvgPoolMatchesNaiveWindowLoops() throws {
    for (c, h, w, k, s, n) in [(2, 6, 6, 2, 2, 2), (3, 7, 7, 3, 2, 2), (1, 5, 8, 2, 1, 3), (2, 9, 7, 3, 3, 1)] {
      let pool = try AvgPool2D(input: .image(c: c, h: h, w: w), kernel: k, stride: s)
      var rng = RNG(seed: UInt64(c * 100 + h * 10 + k))
      let x = rng.gaussianArray(n * c * h * w)
      let t = LayerHarness(pool, batch: n)
      t.x = x
      let (expected, _) = naivePool(x, planes: n * c, h: h, w: w, k: k, s: s, max: false)
      Check.elementsClose(t.output(), expected, "avgpool \(c)x\(h)x\(w) k=\(k) s=\(s)")
    }
  }

  func testGlobalAvgPoolAndFlattenProduceBatchMajorRows() throws {
    let n = 3, c = 4, h = 2, w = 3
    var rng = RNG(seed: 5)
    let nchw = rng.gaussianArray(n * c * h * w)
    let cnhw = Vec.toChannelMajor(nchw, n: n, c: c, hw: h * w)
    let gap = LayerHarness(try GlobalAvgPool(input: .image(c: c, h: h, w: w)), batch: n)
    gap.x = cnhw
    var expected = [Float](repeating: 0, count: n * c)
    for b in 0..<n {
      for ch in 0..<c {
        expected[b * c + ch] = (0..<(h * w)).map { nchw[(b * c + ch) * h * w + $0] }.reduce(0, +) / Float(h * w)
      }
    }
    Check.elementsClose(gap.output(), expected, "global average pool [N, C]")
    let flat = LayerHarness(Flatten(.image(c: c, h: h, w: w)), batch: n)
    flat.x = cnhw
    XCTAssertEqual(flat.output(), nchw, "flatten gives per-example (c, h, w) rows")
  }

  func testShortcutASubsamplesAndZeroPadsChannels() throws {
    let n = 2, c = 2, h = 5, w = 5, outC = 6
    var rng = RNG(seed: 6)
    let x = rng.gaussianArray(c * n * h * w)  // channel-major
    let t = LayerHarness(try ShortcutA(input: .image(c: c, h: h, w: w), outChannels: outC, stride: 2), batch: n)
    t.x = x
    let y = t.output()
    XCTAssertEqual(y.count, outC * n * 9)
    for co in 0..<outC {
      for b in 0..<n {
        for i in 0..<3 {
          for j in 0..<3 {
            let v = y[((co * n + b) * 3 + i) * 3 + j]
            let ci = co - 2
            let expected: Float = (0..<c).contains(ci) ? x[((ci * n + b) * h + 2 * i) * w + 2 * j] : 0
            XCTAssertEqual(v, expected, "y[\(co), \(b), \(i), \(j)]")
          }
        }
      }
    }
  }
}
