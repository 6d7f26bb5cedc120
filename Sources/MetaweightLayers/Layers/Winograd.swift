import MetaweightTensor

/// Winograd minimal filtering F(m×m, 3×3) for 3×3 stride-1 convolutions on channel-major batches
/// (Lavin & Gray 2015, "Fast Algorithms for Convolutional Neural Networks").
///
/// An output tile Y (m×m) of one (output channel, input channel) pair is
///
///     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,      d: the α×α input tile (α = m + 2), g: the 3×3 filter,
///
/// so a convolution is α² independent matrix products over the channels: with U[ξ] = (G g Gᵀ)[ξ]
/// [Cout, Cin] and V[ξ] = (Bᵀ d B)[ξ] [Cin, tiles], M[ξ] = U[ξ]·V[ξ] and Y = Aᵀ M A per tile. That
/// takes α² multiplies per tile and channel pair instead of 9m² (2.25× fewer for m = 2, 4× for m = 4).
///
/// The three passes of a layer all run through it:
///
///     forward    y  = conv(x, W)                              M = U(W)·V(x)
///     tangent    ty = conv(tx, W) + conv(x, tW)               M = [U(W) | U(tW)]·[V(tx); V(x)]
///     input grad dx = conv(dy, W̃) with padding 2 − p          W̃[ci, co] = W[co, ci] rotated 180°
///     weight grad dW = Gᵀ [ Σ_tiles (A dY Aᵀ) ⊙ (Bᵀ d B) ] G  (the transpose of the linear map
///                                                            g ↦ Y): Z[ξ] = D[ξ]·V[ξ]ᵀ, K = tiles
///
/// Tiles past the output's edge read zeros and write nothing, so any output size works. Products run
/// as one single-threaded SGEMM per transform point and chunk of examples; the chunks run on
/// `Parallel`'s threads and the weight gradient sums its per-chunk products in chunk order, so the
/// result never depends on which thread ran which chunk.
package struct Winograd: Sendable {
  /// Output tile size m.
  package let m: Int
  /// Input tile size α = m + 2.
  package let alpha: Int
  /// Bᵀ [α, α], G [α, 3], Aᵀ [m, α], row-major.
  package let bt: [Float], g: [Float], at: [Float]

  /// F(2×2, 3×3): constants 0, ±1, ±½, exact in binary floating point.
  package static let f2 = Winograd(
    m: 2,
    bt: [1, 0, -1, 0, 0, 1, 1, 0, 0, -1, 1, 0, 0, 1, 0, -1],
    g: [1, 0, 0, 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0, 0, 1],
    at: [1, 1, 1, 0, 0, 1, -1, -1])

  /// F(4×4, 3×3) with interpolation points 0, ±1, ±2, ∞ (Lavin & Gray's matrices).
  package static let f4 = Winograd(
    m: 4,
    bt: [
      4, 0, -5, 0, 1, 0,
      0, -4, -4, 1, 1, 0,
      0, 4, -4, -1, 1, 0,
      0, -2, -1, 2, 1, 0,
      0, 2, -1, -2, 1, 0,
      0, 4, 0, -5, 0, 1,
    ],
    g: [
      1.0 / 4, 0, 0,
      -1.0 / 6, -1.0 / 6, -1.0 / 6,
      -1.0 / 6, 1.0 / 6, -1.0 / 6,
      1.0 / 24, 1.0 / 12, 1.0 / 6,
      1.0 / 24, -1.0 / 12, 1.0 / 6,
      0, 0, 1,
    ],
    at: [
      1, 1, 1, 1, 1, 0,
      0, 1, -1, 2, -2, 0,
      0, 1, 1, 4, 4, 0,
      0, 1, -1, 8, -8, 1,
    ])

  private init(m: Int, bt: [Float], g: [Float], at: [Float]) {
    self.m = m
    alpha = m + 2
    self.bt = bt
    self.g = g
    self.at = at
  }

  /// The plan for tile size `m` (2 or 4).
  package static func tile(_ m: Int) -> Winograd { m == 4 ? f4 : f2 }

  /// Number of transform points α².
  package var points: Int { alpha * alpha }

  /// Tiles along an output side of `size` pixels.
  @inline(__always) package func tiles(_ size: Int) -> Int { (size + m - 1) / m }

  // MARK: - Filter transforms

  /// U[ξ, r, coff + c] = (G f Gᵀ)[ξ] for every filter f = `filter(r, c)` (a pointer to 3×3 values,
  /// row-major, read `flipped` by 180° when asked); U is [α², rows, ld].
  package func transformFilters(
    rows: Int, cols: Int, ld: Int, columnOffset coff: Int, flipped: Bool,
    filter: (_ r: Int, _ c: Int) -> UnsafePointer<Float>, into u: UnsafeMutablePointer<Float>
  ) {
    let a = alpha
    let plane = rows * ld
    g.withUnsafeBufferPointer { gp in
      let G = gp.baseAddress!
      withUnsafeTemporaryAllocation(of: Float.self, capacity: 9 + 3 * a) { tmp in
        let f = tmp.baseAddress!, t = f + 9  // t = G·f [α, 3]
        for r in 0..<rows {
          for c in 0..<cols {
            let src = filter(r, c)
            for i in 0..<9 { f[i] = flipped ? src[8 - i] : src[i] }
            for u in 0..<a {
              for j in 0..<3 {
                t[u * 3 + j] = G[u * 3] * f[j] + G[u * 3 + 1] * f[3 + j] + G[u * 3 + 2] * f[6 + j]
              }
            }
            let dst = u + r * ld + coff + c
            for i in 0..<a {
              for v in 0..<a {
                dst[(i * a + v) * plane] =
                  t[i * 3] * G[v * 3] + t[i * 3 + 1] * G[v * 3 + 1] + t[i * 3 + 2] * G[v * 3 + 2]
              }
            }
          }
        }
      }
    }
  }

  /// dW[r, c] (3×3 at `out(r, c)`) = Gᵀ Z[·, r, c] G for Z [α², rows, cols].
  package func filterGradients(
    _ z: UnsafePointer<Float>, rows: Int, cols: Int, out: (_ r: Int, _ c: Int) -> UnsafeMutablePointer<Float>
  ) {
    let a = alpha
    let plane = rows * cols
    g.withUnsafeBufferPointer { gp in
      let G = gp.baseAddress!
      withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * a) { tmp in
        let t = tmp.baseAddress!  // t = Gᵀ Z [3, α]
        for r in 0..<rows {
          for c in 0..<cols {
            let src = z + r * cols + c
            for i in 0..<3 {
              for v in 0..<a {
                var s: Float = 0
                for u in 0..<a { s += G[u * 3 + i] * src[(u * a + v) * plane] }
                t[i * a + v] = s
              }
            }
            let dst = out(r, c)
            for i in 0..<3 {
              for j in 0..<3 {
                var s: Float = 0
                for v in 0..<a { s += t[i * a + v] * G[v * 3 + j] }
                dst[i * 3 + j] = s
              }
            }
          }
        }
      }
    }
  }

  // MARK: - Data transforms

  /// V[ξ, rowOffset + c, e·tilesH·tilesW + tile] = (Bᵀ d B)[ξ] for the input tiles d of examples
  /// n0..<n0+count of `src` [channels, n, h, w] (zero padding `p`), tiles of an oh×ow output;
  /// V has `rows` rows of `ld` floats per transform point.
  package func transformInput(
    _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, h: Int, w: Int, padding p: Int,
    oh: Int, ow: Int, into v: UnsafeMutablePointer<Float>, rows: Int, ld: Int, rowOffset: Int
  ) {
    if m == 2 {
      transformInput2(
        src, channels: channels, n: n, n0: n0, count: count, h: h, w: w, padding: p, oh: oh, ow: ow, into: v,
        rows: rows, ld: ld, rowOffset: rowOffset)
      return
    }
    let a = alpha, mm = m
    let th = tiles(oh), tw = tiles(ow)
    let width = tw * mm + 2  // padded input row covering every tile of a tile row
    let plane = rows * ld
    bt.withUnsafeBufferPointer { bp in
      let B = bp.baseAddress!
      withUnsafeTemporaryAllocation(of: Float.self, capacity: a * width + 2 * a * a * tw) { tmp in
        let band = tmp.baseAddress!  // α padded input rows
        let rowT = band + a * width  // [α (input row), α (v), tw]
        let colT = rowT + a * a * tw  // [α (u), α (v), tw]
        for c in 0..<channels {
          for e in 0..<count {
            let img = src + ((c * n + n0 + e) * h) * w
            for ti in 0..<th {
              // The α input rows of this tile row, zero outside the image.
              for r in 0..<a {
                let row = band + r * width
                let ih = ti * mm - p + r
                if ih < 0 || ih >= h {
                  row.update(repeating: 0, count: width)
                  continue
                }
                let lo = min(width, max(0, p)), hi = max(lo, min(width, w + p))
                if lo > 0 { row.update(repeating: 0, count: lo) }
                (row + lo).update(from: img + ih * w + (lo - p), count: hi - lo)
                if hi < width { (row + hi).update(repeating: 0, count: width - hi) }
              }
              // Along each row: rowT[r, v, j] = Σ_s Bᵀ[v, s] · band[r, j·m + s].
              for r in 0..<a {
                let row = band + r * width
                for vv in 0..<a {
                  let out = rowT + (r * a + vv) * tw
                  for j in 0..<tw { out[j] = 0 }
                  for s in 0..<a {
                    let b = B[vv * a + s]
                    if b == 0 { continue }
                    for j in 0..<tw { out[j] += b * row[j * mm + s] }
                  }
                }
              }
              // Down the columns: V[u, v, j] = Σ_r Bᵀ[u, r] · rowT[r, v, j].
              let base = (e * th + ti) * tw
              for u in 0..<a {
                for vv in 0..<a {
                  let out = colT + (u * a + vv) * tw
                  for j in 0..<tw { out[j] = 0 }
                  for r in 0..<a {
                    let b = B[u * a + r]
                    if b == 0 { continue }
                    let inp = rowT + (r * a + vv) * tw
                    for j in 0..<tw { out[j] += b * inp[j] }
                  }
                  (v + (u * a + vv) * plane + (rowOffset + c) * ld + base).update(from: out, count: tw)
                }
              }
            }
          }
        }
      }
    }
  }

  /// D[ξ, c, tile] = (A dY Aᵀ)[ξ] for the m×m output-gradient tiles dY of examples n0..<n0+count
  /// of `src` [channels, n, oh, ow] (zero past the edge); D is [α², channels, ld].
  package func transformOutputGradient(
    _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, oh: Int, ow: Int,
    into d: UnsafeMutablePointer<Float>, ld: Int
  ) {
    if m == 2 {
      transformOutputGradient2(src, channels: channels, n: n, n0: n0, count: count, oh: oh, ow: ow, into: d, ld: ld)
      return
    }
    let a = alpha, mm = m
    let th = tiles(oh), tw = tiles(ow)
    let width = tw * mm
    let plane = channels * ld
    at.withUnsafeBufferPointer { ap in
      let A = ap.baseAddress!  // Aᵀ [m, α]
      withUnsafeTemporaryAllocation(of: Float.self, capacity: mm * width + mm * a * tw + a * a * tw) { tmp in
        let band = tmp.baseAddress!  // m padded rows of dY
        let rowT = band + mm * width  // [m (row), α (v), tw]
        let colT = rowT + mm * a * tw
        for c in 0..<channels {
          for e in 0..<count {
            let img = src + ((c * n + n0 + e) * oh) * ow
            for ti in 0..<th {
              for r in 0..<mm {
                let row = band + r * width
                let i = ti * mm + r
                if i >= oh {
                  row.update(repeating: 0, count: width)
                  continue
                }
                row.update(from: img + i * ow, count: ow)
                if width > ow { (row + ow).update(repeating: 0, count: width - ow) }
              }
              // rowT[r, v, j] = Σ_b Aᵀ[b, v] · dY[r, j·m + b].
              for r in 0..<mm {
                let row = band + r * width
                for vv in 0..<a {
                  let out = rowT + (r * a + vv) * tw
                  for j in 0..<tw { out[j] = 0 }
                  for b in 0..<mm {
                    let coef = A[b * a + vv]
                    if coef == 0 { continue }
                    for j in 0..<tw { out[j] += coef * row[j * mm + b] }
                  }
                }
              }
              let base = (e * th + ti) * tw
              for u in 0..<a {
                for vv in 0..<a {
                  let out = colT + (u * a + vv) * tw
                  for j in 0..<tw { out[j] = 0 }
                  for r in 0..<mm {
                    let coef = A[r * a + u]
                    if coef == 0 { continue }
                    let inp = rowT + (r * a + vv) * tw
                    for j in 0..<tw { out[j] += coef * inp[j] }
                  }
                  (d + (u * a + vv) * plane + c * ld + base).update(from: out, count: tw)
                }
              }
            }
          }
        }
      }
    }
  }

  /// y[c, n0 + e, …] = Aᵀ M A (+ bias[c]) for the tiles of M [α², channels, ld] (the valid part of
  /// each tile; overwrites).
  package func transformOutput(
    _ mt: UnsafePointer<Float>, channels: Int, ld: Int, bias: UnsafePointer<Float>?,
    into y: UnsafeMutablePointer<Float>, n: Int, n0: Int, count: Int, oh: Int, ow: Int
  ) {
    if m == 2 {
      transformOutput2(mt, channels: channels, ld: ld, bias: bias, into: y, n: n, n0: n0, count: count, oh: oh, ow: ow)
      return
    }
    let a = alpha, mm = m
    let th = tiles(oh), tw = tiles(ow)
    let plane = channels * ld
    let width = tw * mm
    at.withUnsafeBufferPointer { ap in
      let A = ap.baseAddress!
      withUnsafeTemporaryAllocation(of: Float.self, capacity: mm * a * tw + width) { tmp in
        let colT = tmp.baseAddress!  // [m (row), α (v), tw]
        let line = colT + mm * a * tw
        for c in 0..<channels {
          let b0: Float = bias.map { $0[c] } ?? 0
          for e in 0..<count {
            let img = y + ((c * n + n0 + e) * oh) * ow
            for ti in 0..<th {
              let base = (e * th + ti) * tw
              // colT[r, v, j] = Σ_u Aᵀ[r, u] · M[u, v, j].
              for r in 0..<mm {
                for vv in 0..<a {
                  let out = colT + (r * a + vv) * tw
                  for j in 0..<tw { out[j] = 0 }
                  for u in 0..<a {
                    let coef = A[r * a + u]
                    if coef == 0 { continue }
                    let inp = mt + (u * a + vv) * plane + c * ld + base
                    for j in 0..<tw { out[j] += coef * inp[j] }
                  }
                }
              }
              // Y[r, j·m + b] = Σ_v colT[r, v, j] · Aᵀ[b, v].
              for r in 0..<mm {
                let i = ti * mm + r
                if i >= oh { break }
                for b in 0..<mm {
                  for j in 0..<tw { line[j * mm + b] = b0 }
                  for vv in 0..<a {
                    let coef = A[b * a + vv]
                    if coef == 0 { continue }
                    let inp = colT + (r * a + vv) * tw
                    for j in 0..<tw { line[j * mm + b] += coef * inp[j] }
                  }
                }
                (img + i * ow).update(from: line, count: ow)
              }
            }
          }
        }
      }
    }
  }
}

extension Layer {
  /// Sets the algorithm preference of every convolution in this layer and its children; returns
  /// how many convolutions it set. The parameters and the maths are unchanged.
  @discardableResult
  public func setConvolutionAlgorithm(_ algorithm: Conv2D.Algorithm) -> Int {
    var count = 0
    if let conv = self as? Conv2D {
      conv.algorithm = algorithm
      count += 1
    }
    for c in children { count += c.setConvolutionAlgorithm(algorithm) }
    return count
  }

  /// The algorithms the convolutions of this layer and its children actually run, depth first.
  public var convolutionAlgorithms: [Conv2D.Algorithm] {
    var out: [Conv2D.Algorithm] = []
    if let conv = self as? Conv2D { out.append(conv.effectiveAlgorithm) }
    for c in children { out += c.convolutionAlgorithms }
    return out
  }
}

// MARK: - F(2×2, 3×3) transforms

// Written as plain loops over the tiles of one tile row (unit-stride stores per transform point,
// stride-2 loads), which LLVM vectorises; explicit SIMD values spilled to the stack.

extension Winograd {
  /// `transformInput` for m = 2: Bᵀ d B with Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],
  /// additions only.
  func transformInput2(
    _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, h: Int, w: Int, padding p: Int,
    oh: Int, ow: Int, into v: UnsafeMutablePointer<Float>, rows: Int, ld: Int, rowOffset: Int
  ) {
    let th = tiles(oh), tw = tiles(ow)
    let width = 16 * ((tw + 7) / 8) + 2  // padded row: band[x] = input[x − p], zero outside
    let plane = rows * ld
    let lo = min(width, p), hi = max(lo, min(width, w + p))
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * width) { tmp in
      let band = tmp.baseAddress!
      band.update(repeating: 0, count: 4 * width)
      for c in 0..<channels {
        for e in 0..<count {
          let img = src + ((c * n + n0 + e) * h) * w
          let dst = v + (rowOffset + c) * ld + e * th * tw
          for ti in 0..<th {
            for r in 0..<4 {
              let ih = 2 * ti - p + r
              let row = band + r * width + lo
              if ih < 0 || ih >= h {
                row.update(repeating: 0, count: hi - lo)
              } else {
                row.update(from: img + ih * w + (lo - p), count: hi - lo)
              }
            }
            Winograd.inputRow2(band, width, dst + ti * tw, plane, tw)
          }
        }
      }
    }
  }

  /// The 16 transform points of the tiles j ∈ 0..<tw of one tile row from its 4 padded input rows
  /// (`width` ≥ 16·⌈tw/8⌉ + 2 floats each), eight tiles at a time: the even and odd columns of a
  /// row are the tiles' d₀, d₁ and (shifted by one tile) d₂, d₃.
  @inline(__always)
  static func inputRow2(
    _ band: UnsafeMutablePointer<Float>, _ width: Int, _ o: UnsafeMutablePointer<Float>, _ plane: Int, _ tw: Int
  ) {
    var j0 = 0
    while j0 < tw {
      let cnt = min(8, tw - j0)
      @inline(__always) func rowT(_ r: Int) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let a = load16(band + r * width + 2 * j0)
        let b = load16(band + r * width + 2 * j0 + 2)
        let d0 = a.evenHalf, d1 = a.oddHalf, d2 = b.evenHalf, d3 = b.oddHalf
        return (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
      }
      let r1 = rowT(1), r2 = rowT(2)
      let p = o + j0
      do {
        let r0 = rowT(0)
        store(r0.0 - r2.0, p, cnt)
        store(r0.1 - r2.1, p + plane, cnt)
        store(r0.2 - r2.2, p + 2 * plane, cnt)
        store(r0.3 - r2.3, p + 3 * plane, cnt)
      }
      store(r1.0 + r2.0, p + 4 * plane, cnt)
      store(r1.1 + r2.1, p + 5 * plane, cnt)
      store(r1.2 + r2.2, p + 6 * plane, cnt)
      store(r1.3 + r2.3, p + 7 * plane, cnt)
      store(r2.0 - r1.0, p + 8 * plane, cnt)
      store(r2.1 - r1.1, p + 9 * plane, cnt)
      store(r2.2 - r1.2, p + 10 * plane, cnt)
      store(r2.3 - r1.3, p + 11 * plane, cnt)
      do {
        let r3 = rowT(3)
        store(r1.0 - r3.0, p + 12 * plane, cnt)
        store(r1.1 - r3.1, p + 13 * plane, cnt)
        store(r1.2 - r3.2, p + 14 * plane, cnt)
        store(r1.3 - r3.3, p + 15 * plane, cnt)
      }
      j0 += 8
    }
  }

  /// Stores the first `count` (≤ 8) lanes of `v` at `p`.
  @inline(__always)
  static func store(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ count: Int) {
    if count >= 8 {
      UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    } else if count == 4 {
      UnsafeMutableRawPointer(p).storeBytes(of: v.lowHalf, as: SIMD4<Float>.self)
    } else {
      for k in 0..<count { p[k] = v[k] }
    }
  }

  @inline(__always)
  static func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
  }

  @inline(__always)
  static func load16(_ p: UnsafeMutablePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
  }

  /// `transformOutput` for m = 2: Aᵀ M A with Aᵀ = [1 1 1 0; 0 1 −1 −1].
  func transformOutput2(
    _ mt: UnsafePointer<Float>, channels: Int, ld: Int, bias: UnsafePointer<Float>?,
    into y: UnsafeMutablePointer<Float>, n: Int, n0: Int, count: Int, oh: Int, ow: Int
  ) {
    let th = tiles(oh), tw = tiles(ow)
    let plane = channels * ld
    let full = ow / 2  // tiles whose two columns are both inside the output
    do {
      for c in 0..<channels {
        let b0: Float = bias.map { $0[c] } ?? 0
        for e in 0..<count {
          let img = y + ((c * n + n0 + e) * oh) * ow
          let src = mt + c * ld + e * th * tw
          for ti in 0..<th {
            let row0 = img + 2 * ti * ow
            let twoRows = 2 * ti + 1 < oh
            let s = src + ti * tw
            @inline(__always) func tile(_ j: Int) -> (Float, Float, Float, Float) {
              @inline(__always) func m(_ xi: Int) -> Float { s[xi &* plane &+ j] }
              let t00 = m(0) + m(4) + m(8), t01 = m(1) + m(5) + m(9), t02 = m(2) + m(6) + m(10)
              let t03 = m(3) + m(7) + m(11)
              let t10 = m(4) - m(8) - m(12), t11 = m(5) - m(9) - m(13), t12 = m(6) - m(10) - m(14)
              let t13 = m(7) - m(11) - m(15)
              return (t00 + t01 + t02 + b0, t01 - t02 - t03 + b0, t10 + t11 + t12 + b0, t11 - t12 - t13 + b0)
            }
            if twoRows {
              let row1 = row0 + ow
              for j in 0..<full {
                let (y00, y01, y10, y11) = tile(j)
                row0[2 &* j] = y00
                row0[2 &* j &+ 1] = y01
                row1[2 &* j] = y10
                row1[2 &* j &+ 1] = y11
              }
            } else {
              for j in 0..<full {
                let (y00, y01, _, _) = tile(j)
                row0[2 &* j] = y00
                row0[2 &* j &+ 1] = y01
              }
            }
            if full < tw {  // odd width: the last tile's first column only
              let (y00, _, y10, _) = tile(full)
              row0[2 * full] = y00
              if twoRows { row0[ow + 2 * full] = y10 }
            }
          }
        }
      }
    }
  }

  /// `transformOutputGradient` for m = 2: A dY Aᵀ with A = (Aᵀ)ᵀ (dY zero past the edge).
  func transformOutputGradient2(
    _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, oh: Int, ow: Int,
    into d: UnsafeMutablePointer<Float>, ld: Int
  ) {
    let th = tiles(oh), tw = tiles(ow)
    let width = 16 * ((tw + 7) / 8)
    let plane = channels * ld
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * width) { tmp in
      let band = tmp.baseAddress!
      band.update(repeating: 0, count: 2 * width)
      for c in 0..<channels {
        for e in 0..<count {
          let img = src + ((c * n + n0 + e) * oh) * ow
          let dst = d + c * ld + e * th * tw
          for ti in 0..<th {
            // Rows of dY read in place when inside the output and a multiple of 16 wide (the
            // loads then stay inside the row pair), else from the zero-padded band.
            let i0 = 2 * ti
            let a: UnsafePointer<Float>, b: UnsafePointer<Float>
            if ow == width && i0 + 1 < oh {
              a = img + i0 * ow
              b = a + ow
            } else {
              for r in 0..<2 {
                if i0 + r < oh {
                  (band + r * width).update(from: img + (i0 + r) * ow, count: ow)
                } else {
                  (band + r * width).update(repeating: 0, count: ow)
                }
              }
              a = UnsafePointer(band)
              b = UnsafePointer(band + width)
            }
            let o = dst + ti * tw
            var j0 = 0
            while j0 < tw {
              let cnt = min(8, tw - j0)
              let av = Winograd.load16(a + 2 * j0), bv = Winograd.load16(b + 2 * j0)
              // Along the rows: (d₀, d₀ + d₁, d₀ − d₁, −d₁); down the columns the same.
              let a0 = av.evenHalf, a1 = av.oddHalf, b0 = bv.evenHalf, b1 = bv.oddHalf
              let ra1 = a0 + a1, ra2 = a0 - a1
              let rb1 = b0 + b1, rb2 = b0 - b1
              let q = o + j0
              Winograd.store(a0, q, cnt)
              Winograd.store(ra1, q + plane, cnt)
              Winograd.store(ra2, q + 2 * plane, cnt)
              Winograd.store(-a1, q + 3 * plane, cnt)
              Winograd.store(a0 + b0, q + 4 * plane, cnt)
              Winograd.store(ra1 + rb1, q + 5 * plane, cnt)
              Winograd.store(ra2 + rb2, q + 6 * plane, cnt)
              Winograd.store(-a1 - b1, q + 7 * plane, cnt)
              Winograd.store(a0 - b0, q + 8 * plane, cnt)
              Winograd.store(ra1 - rb1, q + 9 * plane, cnt)
              Winograd.store(ra2 - rb2, q + 10 * plane, cnt)
              Winograd.store(b1 - a1, q + 11 * plane, cnt)
              Winograd.store(-b0, q + 12 * plane, cnt)
              Winograd.store(-rb1, q + 13 * plane, cnt)
              Winograd.store(-rb2, q + 14 * plane, cnt)
              Winograd.store(b1, q + 15 * plane, cnt)
              j0 += 8
            }
          }
        }
      }
    }
  }
}
