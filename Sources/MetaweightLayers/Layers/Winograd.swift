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

  /// Floats from one transform point's matrix [rows, ld] of transformed data to the next: the
  /// matrix plus one cache line. The sixteen (or 36) points are read and written together, and
  /// with matrices a multiple of 4 KiB apart (ResNet's shapes make them exactly 16 KiB) every
  /// point would land in the same L1 cache set and evict the others.
  @inline(__always) package static func planeStride(rows: Int, ld: Int) -> Int { rows * ld + 16 }

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
      // Rows in parallel (each filter is independent; a serial loop here idles the other threads).
      Parallel.forRange(rows, costPerItem: cols * 12 * a * a) { r0, r1 in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 9 + 3 * a) { tmp in
          let f = tmp.baseAddress!, t = f + 9  // t = G·f [α, 3]
          for r in r0..<r1 {
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
  }

  /// dW[r, c] (3×3 at `out(r, c)`) = Gᵀ Z[·, r, c] G for Z [α², rows, cols].
  package func filterGradients(
    _ z: UnsafePointer<Float>, rows: Int, cols: Int, out: (_ r: Int, _ c: Int) -> UnsafeMutablePointer<Float>
  ) {
    let a = alpha
    let plane = rows * cols
    g.withUnsafeBufferPointer { gp in
      let G = gp.baseAddress!
      Parallel.forRange(rows, costPerItem: cols * 12 * a * a) { r0, r1 in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * a) { tmp in
          let t = tmp.baseAddress!  // t = Gᵀ Z [3, α]
          for r in r0..<r1 {
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
    let plane = Winograd.planeStride(rows: rows, ld: ld)
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
    let plane = Winograd.planeStride(rows: channels, ld: ld)
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
    let plane = Winograd.planeStride(rows: channels, ld: ld)
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

// A tile's columns 2j … 2j + 3 are the even and odd columns j, j + 1 of its rows, so each input
// row is split once into its even and odd columns (`deinterleave`); every transform is then a few
// unit-stride passes over the tiles of a tile row, four tiles per vector (`Quad`), and the output
// transform interleaves its two columns back.

extension Winograd {
  /// Four floats, the vector the F(2×2) transforms run on.
  typealias Quad = SIMD4<Float>

  @inline(__always)
  static func ld4(_ p: UnsafePointer<Float>) -> Quad { UnsafeRawPointer(p).loadUnaligned(as: Quad.self) }

  @inline(__always)
  static func ld4(_ p: UnsafeMutablePointer<Float>) -> Quad { UnsafeRawPointer(p).loadUnaligned(as: Quad.self) }

  @inline(__always)
  static func st4(_ v: Quad, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Quad.self)
  }

  /// even[i] = src[2i], odd[i] = src[2i + 1] for the `count` columns of `src`, four pairs per
  /// step while whole quads fit.
  @inline(__always)
  static func deinterleave(
    _ src: UnsafePointer<Float>, count: Int, even: UnsafeMutablePointer<Float>, odd: UnsafeMutablePointer<Float>
  ) {
    let pairs = count / 2
    var i = 0
    while i + 4 <= pairs {
      let a = ld4(src + 2 &* i), b = ld4(src + (2 &* i &+ 4))
      st4(Quad(a[0], a[2], b[0], b[2]), even + i)
      st4(Quad(a[1], a[3], b[1], b[3]), odd + i)
      i += 4
    }
    while i < pairs {
      even[i] = src[2 &* i]
      odd[i] = src[2 &* i &+ 1]
      i += 1
    }
    if count % 2 == 1 { even[pairs] = src[count - 1] }
  }

  /// `transformInput` for m = 2: Bᵀ d B with Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],
  /// additions only.
  ///
  /// Per image: its rows, padded by `p`, split once into even columns E_r and odd columns O_r
  /// (padded column X of a row is E[X/2] or O[X/2]). Per tile row, down the columns Bᵀ combines
  /// its four rows, c₀ = r₀ − r₂, c₁ = r₁ + r₂, c₂ = r₂ − r₁, c₃ = r₁ − r₃ (E and O alike); along
  /// the rows each cₖ gives the points 4k … 4k + 3 of tile j as E[j] − E[j+1], O[j] + E[j+1],
  /// E[j+1] − O[j], O[j] − O[j+1].
  func transformInput2(
    _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, h: Int, w: Int, padding p: Int,
    oh: Int, ow: Int, into v: UnsafeMutablePointer<Float>, rows: Int, ld: Int, rowOffset: Int
  ) {
    let th = tiles(oh), tw = tiles(ow)
    let half = (tw + 4) & ~3  // ≥ tw + 1 even (odd) padded columns, whole quads
    let padded = 2 * th + 2  // padded rows the tile rows read: image row i is padded row i + p
    let plane = Winograd.planeStride(rows: rows, ld: ld)
    // Image column x goes to padded column x + p: E[(x + p)/2] when x + p is even, else O.
    let evenTo = p % 2 == 0 ? (odd: false, at: p / 2) : (odd: true, at: (p - 1) / 2)
    let oddTo = p % 2 == 0 ? (odd: true, at: p / 2) : (odd: false, at: (p + 1) / 2)
    let cols = max(0, min(w, 2 * (tw + 1) - p))  // image columns the tiles read
    let firstRow = min(p, padded), lastRow = max(firstRow, min(padded, h + p))  // padded rows with image data
    let quads = tw / 4
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * half * (padded + 4)) { tmp in
      let band = tmp.baseAddress!  // padded row r: E at band + 2r·half, O at band + (2r + 1)·half
      let comb = band + 2 * half * padded  // cE_k at comb + 2k·half, cO_k at comb + (2k + 1)·half
      // Rows outside the image and padding columns are never written below, so they stay zero.
      band.update(repeating: 0, count: 2 * half * padded)
      for c in 0..<channels {
        for e in 0..<count {
          let img = src + ((c * n + n0 + e) * h) * w
          let dst = v + (rowOffset + c) * ld + e * th * tw
          for r in firstRow..<lastRow {
            let er = band + 2 * r * half, or = er + half
            Winograd.deinterleave(
              img + (r - p) * w, count: cols, even: (evenTo.odd ? or : er) + evenTo.at,
              odd: (oddTo.odd ? or : er) + oddTo.at)
          }
          for ti in 0..<th {
            // Down the columns, E and O alike (2·half floats per padded row).
            let rows4 = UnsafePointer(band + 4 * ti * half), step = 2 * half
            var j = 0
            while j < step {
              let r0 = Winograd.ld4(rows4 + j), r1 = Winograd.ld4(rows4 + step + j)
              let r2 = Winograd.ld4(rows4 + 2 * step + j), r3 = Winograd.ld4(rows4 + 3 * step + j)
              Winograd.st4(r0 - r2, comb + j)
              Winograd.st4(r1 + r2, comb + step + j)
              Winograd.st4(r2 - r1, comb + 2 * step + j)
              Winograd.st4(r1 - r3, comb + 3 * step + j)
              j += 4
            }
            let o = dst + ti * tw
            for k in 0..<4 {
              let ev = UnsafePointer(comb + k * step), od = ev + half
              let q0 = o + 4 * k * plane, q1 = q0 + plane, q2 = q1 + plane, q3 = q2 + plane
              for u in 0..<quads {
                let jj = 4 * u
                let e0 = Winograd.ld4(ev + jj), e1 = Winograd.ld4(ev + jj + 1)
                let o0 = Winograd.ld4(od + jj), o1 = Winograd.ld4(od + jj + 1)
                Winograd.st4(e0 - e1, q0 + jj)
                Winograd.st4(o0 + e1, q1 + jj)
                Winograd.st4(e1 - o0, q2 + jj)
                Winograd.st4(o0 - o1, q3 + jj)
              }
              for jj in (4 * quads)..<tw {
                q0[jj] = ev[jj] - ev[jj + 1]
                q1[jj] = od[jj] + ev[jj + 1]
                q2[jj] = ev[jj + 1] - od[jj]
                q3[jj] = od[jj] - od[jj + 1]
              }
            }
          }
        }
      }
    }
  }

  /// `transformOutput` for m = 2: Aᵀ M A with Aᵀ = [1 1 1 0; 0 1 −1 −1]: four tiles at a time,
  /// down the columns (t₀ = m₀ + m₁ + m₂, t₁ = m₁ − m₂ − m₃ of the tile's rows of M) and along the
  /// rows likewise, the two output columns then interleaved into the image rows.
  func transformOutput2(
    _ mt: UnsafePointer<Float>, channels: Int, ld: Int, bias: UnsafePointer<Float>?,
    into y: UnsafeMutablePointer<Float>, n: Int, n0: Int, count: Int, oh: Int, ow: Int
  ) {
    let th = tiles(oh), tw = tiles(ow)
    let plane = Winograd.planeStride(rows: channels, ld: ld)
    let quads = tw / 4
    let span = 4 * ((tw + 3) / 4)
    let direct = ow == 2 * tw && oh == 2 * th  // every tile whole: quads go straight to the image
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * span) { tmp in
      let out = tmp.baseAddress!  // output row r's even columns at 2r·span, odd at (2r + 1)·span
      for c in 0..<channels {
        let bias0: Float = bias.map { $0[c] } ?? 0
        let b = Quad(repeating: bias0)
        for e in 0..<count {
          let img = y + ((c * n + n0 + e) * oh) * ow
          let src = mt + c * ld + e * th * tw
          for ti in 0..<th {
            let s = src + ti * tw
            for u in 0..<quads {
              let jj = 4 * u
              @inline(__always) func m(_ xi: Int) -> Quad { Winograd.ld4(s + (xi &* plane &+ jj)) }
              let t00 = m(0) + m(4) + m(8), t01 = m(1) + m(5) + m(9), t02 = m(2) + m(6) + m(10)
              let t03 = m(3) + m(7) + m(11)
              let t10 = m(4) - m(8) - m(12), t11 = m(5) - m(9) - m(13), t12 = m(6) - m(10) - m(14)
              let t13 = m(7) - m(11) - m(15)
              let e0 = t00 + t01 + t02 + b, o0 = t01 - t02 - t03 + b
              let e1 = t10 + t11 + t12 + b, o1 = t11 - t12 - t13 + b
              if direct {
                // Both rows and both columns of the four tiles are inside: interleave in place.
                let r0 = img + 2 * ti * ow + 2 * jj, r1 = r0 + ow
                Winograd.st4(Quad(e0[0], o0[0], e0[1], o0[1]), r0)
                Winograd.st4(Quad(e0[2], o0[2], e0[3], o0[3]), r0 + 4)
                Winograd.st4(Quad(e1[0], o1[0], e1[1], o1[1]), r1)
                Winograd.st4(Quad(e1[2], o1[2], e1[3], o1[3]), r1 + 4)
              } else {
                Winograd.st4(e0, out + jj)
                Winograd.st4(o0, out + span + jj)
                Winograd.st4(e1, out + 2 * span + jj)
                Winograd.st4(o1, out + 3 * span + jj)
              }
            }
            if direct && 4 * quads == tw { continue }
            for jj in (4 * quads)..<tw {
              @inline(__always) func m(_ xi: Int) -> Float { s[xi &* plane &+ jj] }
              let t00 = m(0) + m(4) + m(8), t01 = m(1) + m(5) + m(9), t02 = m(2) + m(6) + m(10)
              let t03 = m(3) + m(7) + m(11)
              let t10 = m(4) - m(8) - m(12), t11 = m(5) - m(9) - m(13), t12 = m(6) - m(10) - m(14)
              let t13 = m(7) - m(11) - m(15)
              out[jj] = t00 + t01 + t02 + bias0
              out[span + jj] = t01 - t02 - t03 + bias0
              out[2 * span + jj] = t10 + t11 + t12 + bias0
              out[3 * span + jj] = t11 - t12 - t13 + bias0
            }
            let full = ow / 2  // tiles whose two columns are both inside the output
            for r in 0..<2 {
              let i = 2 * ti + r
              if i >= oh { break }
              let row = img + i * ow
              let ev = out + 2 * r * span, od = ev + span
              for j in (direct ? 4 * quads : 0)..<full {
                row[2 &* j] = ev[j]
                row[2 &* j &+ 1] = od[j]
              }
              if full < tw { row[2 * full] = ev[full] }  // odd width: the last tile's first column
            }
          }
        }
      }
    }
  }

  /// `transformOutputGradient` for m = 2: A dY Aᵀ with A = (Aᵀ)ᵀ (dY zero past the edge). Along
  /// a tile's rows a = (a₀, a₁), b = (b₀, b₁): R(a) = (a₀, a₀ + a₁, a₀ − a₁, −a₁); down the
  /// columns the points are R(a), R(a) + R(b), R(a) − R(b), −R(b).
  func transformOutputGradient2(
    _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, oh: Int, ow: Int,
    into d: UnsafeMutablePointer<Float>, ld: Int
  ) {
    let th = tiles(oh), tw = tiles(ow)
    let plane = Winograd.planeStride(rows: channels, ld: ld)
    let quads = tw / 4
    let span = 4 * ((tw + 3) / 4)
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * span) { tmp in
      let a0 = tmp.baseAddress!, a1 = a0 + span, b0 = a1 + span, b1 = b0 + span
      // Past the edge (an odd width's last half tile) dY is zero; deinterleave never writes there.
      a0.update(repeating: 0, count: 4 * span)
      for c in 0..<channels {
        for e in 0..<count {
          let img = src + ((c * n + n0 + e) * oh) * ow
          let dst = d + c * ld + e * th * tw
          for ti in 0..<th {
            let i0 = 2 * ti
            Winograd.deinterleave(img + i0 * ow, count: ow, even: a0, odd: a1)
            if i0 + 1 < oh {
              Winograd.deinterleave(img + (i0 + 1) * ow, count: ow, even: b0, odd: b1)
            } else {
              b0.update(repeating: 0, count: 2 * span)
            }
            let o = dst + ti * tw
            @inline(__always) func points(
              _ ra: (Quad, Quad, Quad, Quad), _ rb: (Quad, Quad, Quad, Quad), _ q: UnsafeMutablePointer<Float>
            ) {
              Winograd.st4(ra.0, q)
              Winograd.st4(ra.1, q + plane)
              Winograd.st4(ra.2, q + 2 * plane)
              Winograd.st4(ra.3, q + 3 * plane)
              Winograd.st4(ra.0 + rb.0, q + 4 * plane)
              Winograd.st4(ra.1 + rb.1, q + 5 * plane)
              Winograd.st4(ra.2 + rb.2, q + 6 * plane)
              Winograd.st4(ra.3 + rb.3, q + 7 * plane)
              Winograd.st4(ra.0 - rb.0, q + 8 * plane)
              Winograd.st4(ra.1 - rb.1, q + 9 * plane)
              Winograd.st4(ra.2 - rb.2, q + 10 * plane)
              Winograd.st4(ra.3 - rb.3, q + 11 * plane)
              Winograd.st4(-rb.0, q + 12 * plane)
              Winograd.st4(-rb.1, q + 13 * plane)
              Winograd.st4(-rb.2, q + 14 * plane)
              Winograd.st4(-rb.3, q + 15 * plane)
            }
            for u in 0..<quads {
              let jj = 4 * u
              let x0 = Winograd.ld4(a0 + jj), x1 = Winograd.ld4(a1 + jj)
              let z0 = Winograd.ld4(b0 + jj), z1 = Winograd.ld4(b1 + jj)
              points((x0, x0 + x1, x0 - x1, -x1), (z0, z0 + z1, z0 - z1, -z1), o + jj)
            }
            for jj in (4 * quads)..<tw {
              let x0 = a0[jj], x1 = a1[jj], z0 = b0[jj], z1 = b1[jj]
              @inline(__always) func put(_ v: Int, _ ra: Float, _ rb: Float) {
                o[jj + v * plane] = ra
                o[jj + (4 + v) * plane] = ra + rb
                o[jj + (8 + v) * plane] = ra - rb
                o[jj + (12 + v) * plane] = -rb
              }
              put(0, x0, z0)
              put(1, x0 + x1, z0 + z1)
              put(2, x0 - x1, z0 - z1)
              put(3, -x1, -z1)
            }
          }
        }
      }
    }
  }
}
