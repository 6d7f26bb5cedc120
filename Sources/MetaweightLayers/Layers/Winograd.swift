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
  /// row-major, read `flipped` by 180° when asked); U is [α², rows, ld]. Four filters of a row
  /// (columns c … c + 3) per vector, so each point's four values are one store.
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
        withUnsafeTemporaryAllocation(of: Quad.self, capacity: 9 + 3 * a) { tmp in
          let f = tmp.baseAddress!, t = f + 9  // t = G·f [α, 3]
          for r in r0..<r1 {
            var c = 0
            while c < cols {
              let lanes = min(4, cols - c)
              let p0 = filter(r, c), p1 = lanes > 1 ? filter(r, c + 1) : p0
              let p2 = lanes > 2 ? filter(r, c + 2) : p0, p3 = lanes > 3 ? filter(r, c + 3) : p0
              for i in 0..<9 {
                let k = flipped ? 8 - i : i
                f[i] = Quad(p0[k], p1[k], p2[k], p3[k])
              }
              for uu in 0..<a {
                let g0 = G[uu * 3], g1 = G[uu * 3 + 1], g2 = G[uu * 3 + 2]
                for j in 0..<3 { t[uu * 3 + j] = g0 * f[j] + g1 * f[3 + j] + g2 * f[6 + j] }
              }
              let dst = u + r * ld + coff + c
              for i in 0..<a {
                for v in 0..<a {
                  let q = t[i * 3] * G[v * 3] + t[i * 3 + 1] * G[v * 3 + 1] + t[i * 3 + 2] * G[v * 3 + 2]
                  let o = dst + (i * a + v) * plane
                  if lanes == 4 {
                    Winograd.st4(q, o)
                  } else {
                    for l in 0..<lanes { o[l] = q[l] }
                  }
                }
              }
              c += 4
            }
          }
        }
      }
    }
  }

  /// dW[r, c] (3×3 at `out(r, c)`) = Gᵀ Z[·, r, c] G for Z [α², rows, cols], four columns c per
  /// vector.
  package func filterGradients(
    _ z: UnsafePointer<Float>, rows: Int, cols: Int, out: (_ r: Int, _ c: Int) -> UnsafeMutablePointer<Float>
  ) {
    let a = alpha
    let plane = rows * cols
    g.withUnsafeBufferPointer { gp in
      let G = gp.baseAddress!
      Parallel.forRange(rows, costPerItem: cols * 12 * a * a) { r0, r1 in
        withUnsafeTemporaryAllocation(of: Quad.self, capacity: 3 * a) { tmp in
          let t = tmp.baseAddress!  // t = Gᵀ Z [3, α]
          for r in r0..<r1 {
            var c = 0
            while c < cols {
              let lanes = min(4, cols - c)
              let src = z + r * cols + c
              @inline(__always) func load(_ xi: Int) -> Quad {
                let p = src + xi * plane
                if lanes == 4 { return Winograd.ld4(p) }
                var q = Quad()
                for l in 0..<lanes { q[l] = p[l] }
                return q
              }
              for i in 0..<3 {
                for v in 0..<a {
                  var s = Quad()
                  for uu in 0..<a { s += G[uu * 3 + i] * load(uu * a + v) }
                  t[i * a + v] = s
                }
              }
              let d0 = out(r, c), d1 = lanes > 1 ? out(r, c + 1) : d0
              let d2 = lanes > 2 ? out(r, c + 2) : d0, d3 = lanes > 3 ? out(r, c + 3) : d0
              for i in 0..<3 {
                for j in 0..<3 {
                  var s = Quad()
                  for v in 0..<a { s += t[i * a + v] * G[v * 3 + j] }
                  let k = i * 3 + j
                  d0[k] = s[0]
                  if lanes > 1 { d1[k] = s[1] }
                  if lanes > 2 { d2[k] = s[2] }
                  if lanes > 3 { d3[k] = s[3] }
                }
              }
              c += 4
            }
          }
        }
      }
    }
  }

  // MARK: - Data transforms

  /// V[ξ, rowOffset + c, column] = (Bᵀ d B)[ξ] for the input tiles d of examples n0..<n0+count of
  /// `src` [channels, n, h, w] (zero padding `p`), tiles of an oh×ow output; V has `rows` rows of
  /// `ld` floats per transform point. A tile's column: e·tilesH·tilesW + tile for F(2×2); for
  /// F(4×4), (e/4)·4·tilesH·tilesW + 4·tile + e mod 4 (see `columns(examples:perTile:)`).
  package func transformInput(
    _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, h: Int, w: Int, padding p: Int,
    oh: Int, ow: Int, into v: UnsafeMutablePointer<Float>, rows: Int, ld: Int, rowOffset: Int
  ) {
    if m == 2 {
      transformInput2(
        src, channels: channels, n: n, n0: n0, count: count, h: h, w: w, padding: p, oh: oh, ow: ow, into: v,
        rows: rows, ld: ld, rowOffset: rowOffset)
    } else {
      transformInput4(
        src, channels: channels, n: n, n0: n0, count: count, h: h, w: w, padding: p, oh: oh, ow: ow, into: v,
        rows: rows, ld: ld, rowOffset: rowOffset)
    }
  }

  /// D[ξ, c, column] = (A dY Aᵀ)[ξ] for the m×m output-gradient tiles dY of examples n0..<n0+count
  /// of `src` [channels, n, oh, ow] (zero past the edge); D is [α², channels, ld], its columns
  /// ordered like `transformInput`'s.
  package func transformOutputGradient(
    _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, oh: Int, ow: Int,
    into d: UnsafeMutablePointer<Float>, ld: Int
  ) {
    if m == 2 {
      transformOutputGradient2(src, channels: channels, n: n, n0: n0, count: count, oh: oh, ow: ow, into: d, ld: ld)
    } else {
      transformOutputGradient4(src, channels: channels, n: n, n0: n0, count: count, oh: oh, ow: ow, into: d, ld: ld)
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
    } else {
      transformOutput4(mt, channels: channels, ld: ld, bias: bias, into: y, n: n, n0: n0, count: count, oh: oh, ow: ow)
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

  /// The 4×4 transpose of the rows a, b, c, d: (a₀ b₀ c₀ d₀), (a₁ b₁ c₁ d₁), …, in about a dozen
  /// shuffles.
  @inline(__always)
  static func transpose4(_ a: Quad, _ b: Quad, _ c: Quad, _ d: Quad) -> (Quad, Quad, Quad, Quad) {
    let ab0 = Quad(a[0], b[0], a[1], b[1]), ab1 = Quad(a[2], b[2], a[3], b[3])
    let cd0 = Quad(c[0], d[0], c[1], d[1]), cd1 = Quad(c[2], d[2], c[3], d[3])
    return (
      Quad(lowHalf: ab0.lowHalf, highHalf: cd0.lowHalf), Quad(lowHalf: ab0.highHalf, highHalf: cd0.highHalf),
      Quad(lowHalf: ab1.lowHalf, highHalf: cd1.lowHalf), Quad(lowHalf: ab1.highHalf, highHalf: cd1.highHalf)
    )
  }

  /// `transpose4`, kept out of line for results of arithmetic. Inlined after `at4`, LLVM moves the
  /// shuffles up through the additions and multiplications and splits them into scalar operations
  /// (about 170 instructions for one output row instead of about 45 with the call; the vectors
  /// travel in registers both ways).
  @inline(never)
  static func transposed(_ a: Quad, _ b: Quad, _ c: Quad, _ d: Quad) -> (Quad, Quad, Quad, Quad) {
    transpose4(a, b, c, d)
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

// MARK: - F(4×4, 3×3) transforms

// On ResNet's 8×8 and 16×16 images a tile row has only two or four F(4×4) tiles, too few to fill
// vectors across a row. These transforms instead carry four examples per vector: a chunk's
// examples are taken in groups of four, each group's images interleaved once ([row][column]
// [example], `interleave`), so every pixel of a tile is one aligned vector load. The columns of V,
// D and M are ordered (group, tile, example) (`columns(examples:perTile:)`); a group short of four
// examples is padded with zero images, whose columns are zero in V and D and skipped in the output.

extension Winograd {
  /// Columns of a chunk's V, D and M for `count` examples of `perTile` tiles each: one per tile for
  /// F(2×2); whole groups of four examples for F(4×4).
  package func columns(examples count: Int, perTile: Int) -> Int {
    m == 4 ? (count + 3) / 4 * 4 * perTile : count * perTile
  }

  /// What a chunk's example count should be a multiple of (four for F(4×4)'s example vectors).
  package var exampleGroup: Int { m == 4 ? 4 : 1 }

  /// Quad (r + top)·pw + (x + left) of `dst` = pixel (r, x) of the `lanes` (≤ 4) images
  /// `img + l·h·w` in lanes l, for the pixels that land inside [0, ph) × [0, pw); other quads and
  /// lanes are left as they are.
  ///
  /// With `next` (the first of the `nextLanes` images interleaved after these, which lie one after
  /// another), each row read here also prefetches its share of those images' cache lines, so they
  /// arrive while this group's tiles transform. (Measured on a ResNet-32 step: without it, the
  /// loads of the images were a third of the input transform's time.)
  @inline(__always)
  static func interleave(
    _ img: UnsafePointer<Float>, lanes: Int, h: Int, w: Int, top: Int, left: Int, ph: Int, pw: Int,
    into dst: UnsafeMutablePointer<Float>, next: UnsafePointer<Float>?, nextLanes: Int
  ) {
    let stride = h * w
    let r0 = max(0, -top), r1 = min(h, ph - top)
    let x0 = max(0, -left), x1 = min(w, pw - left)
    guard r0 < r1, x0 < x1 else { return }
    for r in r0..<r1 {
      let out = dst + 4 * ((r + top) * pw + left)  // pixel x's quad at out + 4x
      let row = img + r * w
      if let next {
        // Row r's share of the next images' floats [0, total): one hint per 16 floats (a 64-byte
        // line), and the last float's line after the last row.
        let total = nextLanes &* stride, rowsRead = r1 &- r0
        var x = ((r &- r0) &* total / rowsRead) & ~15
        let end = (r &- r0 &+ 1) &* total / rowsRead
        while x < end {
          Kernels.prefetch(next + x)
          x &+= 16
        }
        if r == r1 &- 1 { Kernels.prefetch(next + (total &- 1)) }
      }
      var x = x0
      if lanes == 4 {
        let s2 = 2 &* stride, s3 = 3 &* stride
        while x &+ 4 <= x1 {
          let q = transpose4(ld4(row + x), ld4(row + (stride &+ x)), ld4(row + (s2 &+ x)), ld4(row + (s3 &+ x)))
          let o = out + 4 &* x
          st4(q.0, o)
          st4(q.1, o + 4)
          st4(q.2, o + 8)
          st4(q.3, o + 12)
          x &+= 4
        }
      }
      while x < x1 {
        for l in 0..<lanes { out[4 * x + l] = row[l * stride + x] }
        x += 1
      }
    }
  }

  /// Bᵀ x for F(4×4): (4x₀ − 5x₂ + x₄, a + b, a − b, q + r, q − r, 4x₁ − 5x₃ + x₅) with
  /// a = x₄ − 4x₂, b = x₃ − 4x₁, q = x₄ − x₂, r = 2(x₃ − x₁).
  @inline(__always)
  static func bt4(
    _ x0: Quad, _ x1: Quad, _ x2: Quad, _ x3: Quad, _ x4: Quad, _ x5: Quad
  ) -> (Quad, Quad, Quad, Quad, Quad, Quad) {
    let four: Float = 4, five: Float = 5, two: Float = 2
    let a = x4 - four * x2, b = x3 - four * x1
    let q = x4 - x2, r = two * (x3 - x1)
    return (four * x0 - five * x2 + x4, a + b, a - b, q + r, q - r, four * x1 - five * x3 + x5)
  }

  /// Aᵀ m for F(4×4): (m₀ + s₁ + s₂, d₁ + 2d₂, s₁ + 4s₂, d₁ + 8d₂ + m₅) with s₁ = m₁ + m₂,
  /// d₁ = m₁ − m₂, s₂ = m₃ + m₄, d₂ = m₃ − m₄.
  @inline(__always)
  static func at4(
    _ m0: Quad, _ m1: Quad, _ m2: Quad, _ m3: Quad, _ m4: Quad, _ m5: Quad
  ) -> (Quad, Quad, Quad, Quad) {
    let two: Float = 2, four: Float = 4, eight: Float = 8
    let s1 = m1 + m2, d1 = m1 - m2, s2 = m3 + m4, d2 = m3 - m4
    return (m0 + s1 + s2, d1 + two * d2, s1 + four * s2, d1 + eight * d2 + m5)
  }

  /// A y for F(4×4) (the transpose of `at4`): (y₀, e + o, e − o, e₂ + o₂, e₂ − o₂, y₃) with
  /// e = y₀ + y₂, o = y₁ + y₃, e₂ = y₀ + 4y₂, o₂ = 2y₁ + 8y₃.
  @inline(__always)
  static func a4(_ y0: Quad, _ y1: Quad, _ y2: Quad, _ y3: Quad) -> (Quad, Quad, Quad, Quad, Quad, Quad) {
    let two: Float = 2, four: Float = 4, eight: Float = 8
    let e = y0 + y2, o = y1 + y3, e2 = y0 + four * y2, o2 = two * y1 + eight * y3
    return (y0, e + o, e - o, e2 + o2, e2 - o2, y3)
  }

  /// Six quads, one F(4×4) transform's output along an axis of a tile.
  typealias Six = (Quad, Quad, Quad, Quad, Quad, Quad)

  /// Stores `y`'s six quads at p, p + stride, …, p + 5·stride.
  @inline(__always)
  static func store6(_ y: Six, _ p: UnsafeMutablePointer<Float>, _ stride: Int) {
    st4(y.0, p)
    st4(y.1, p + stride)
    st4(y.2, p + 2 &* stride)
    st4(y.3, p + 3 &* stride)
    st4(y.4, p + 4 &* stride)
    st4(y.5, p + 5 &* stride)
  }

  /// `transformInput` for m = 4: Bᵀ d B over the (4·tilesH + 2) × (4·tilesW + 2) zero-padded grid.
  func transformInput4(
    _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, h: Int, w: Int, padding p: Int,
    oh: Int, ow: Int, into v: UnsafeMutablePointer<Float>, rows: Int, ld: Int, rowOffset: Int
  ) {
    let th = tiles(oh), tw = tiles(ow)
    transformGroups4(
      InputAxis.self, src, channels: channels, n: n, n0: n0, count: count, h: h, w: w, padding: p,
      gridHeight: 4 * th + 2, gridWidth: 4 * tw + 2, th: th, tw: tw, into: v + rowOffset * ld, ld: ld,
      plane: Winograd.planeStride(rows: rows, ld: ld))
  }

  /// `transformOutputGradient` for m = 4: A dY Aᵀ over the 4·tilesH × 4·tilesW grid of dY (zero past
  /// the edge).
  func transformOutputGradient4(
    _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, oh: Int, ow: Int,
    into d: UnsafeMutablePointer<Float>, ld: Int
  ) {
    let th = tiles(oh), tw = tiles(ow)
    transformGroups4(
      GradientAxis.self, src, channels: channels, n: n, n0: n0, count: count, h: oh, w: ow, padding: 0,
      gridHeight: 4 * th, gridWidth: 4 * tw, th: th, tw: tw, into: d, ld: ld,
      plane: Winograd.planeStride(rows: channels, ld: ld))
  }

  /// The F(4×4) data transforms into the Winograd domain, four examples per vector: per channel and
  /// group of examples the images are interleaved once into a zero-padded `gridHeight` ×
  /// `gridWidth` grid (image pixel (i, j) at (i + p, j + p)); `Axis` then runs along every grid
  /// row's window of each tile column, once per row (an input tile's six rows overlap the next
  /// tile's by two, so per tile it would run 6·tilesH times instead of 4·tilesH + 2), and down each
  /// tile's six columns of those results: 36 vector stores per tile to `out` [36 points `plane`
  /// apart, channels `ld` apart].
  @inline(never)
  func transformGroups4<Axis: WinogradAxis4>(
    _ axis: Axis.Type, _ src: UnsafePointer<Float>, channels: Int, n: Int, n0: Int, count: Int, h: Int, w: Int,
    padding p: Int, gridHeight ph: Int, gridWidth pw: Int, th: Int, tw: Int, into out: UnsafeMutablePointer<Float>,
    ld: Int, plane: Int
  ) {
    let perTile = th * tw, groups = (count + 3) / 4
    let gridSize = 4 * ph * pw, rowSize = 24 * tw  // a grid row along the rows: [tw windows, 6 points] quads
    withUnsafeTemporaryAllocation(of: Float.self, capacity: gridSize + ph * rowSize) { tmp in
      let grid = tmp.baseAddress!, rows = grid + gridSize  // rows: [ph, tw, 6] quads
      // The padding is never written below, so it stays zero.
      grid.update(repeating: 0, count: gridSize)
      @inline(__always) func images(_ c: Int, _ g: Int) -> UnsafePointer<Float> { src + ((c * n + n0 + 4 * g) * h) * w }
      for c in 0..<channels {
        for g in 0..<groups {
          let e0 = 4 * g, lanes = min(4, count - e0)
          if lanes < 4 { grid.update(repeating: 0, count: gridSize) }
          // The group interleaved next: this channel's next group, else the next channel's first.
          let next = g + 1 < groups ? images(c, g + 1) : c + 1 < channels ? images(c + 1, 0) : nil
          let nextLanes = g + 1 < groups ? min(4, count - e0 - 4) : min(4, count)
          Winograd.interleave(
            images(c, g), lanes: lanes, h: h, w: w, top: p, left: p, ph: ph, pw: pw, into: grid, next: next,
            nextLanes: nextLanes)
          // Index arithmetic wraps (&): every offset lies inside `grid`, `rows` or `out`, whose
          // sizes are allocated above or by the caller, so it cannot overflow, and the hot loops
          // carry no overflow checks.
          for y in 0..<ph {  // along each grid row: the window of tile column tj starts at 4tj
            let line = UnsafePointer(grid + 4 &* y &* pw), r = rows + y &* rowSize
            for tj in 0..<tw { Winograd.store6(Axis.apply(line + 16 &* tj, stride: 4), r + 24 &* tj, 4) }
          }
          let base = out + c * ld + g * 4 * perTile
          let plane6 = 6 &* plane
          for ti in 0..<th {  // down the columns: tile (ti, tj)'s rows are grid rows 4ti, 4ti + 1, …
            let band = UnsafePointer(rows + 4 &* ti &* rowSize), outRow = base + 4 &* ti &* tw
            for tj in 0..<tw {
              let window = band + 24 &* tj, o = outRow + 4 &* tj
              for j in 0..<6 {
                Winograd.store6(Axis.apply(window + 4 &* j, stride: rowSize), o + j &* plane, plane6)
              }
            }
          }
        }
      }
    }
  }

  /// `transformOutput` for m = 4, four examples per vector: per tile Aᵀ down its six columns, then
  /// along its four rows (plus the bias), each row's four examples then transposed out to their
  /// images.
  @inline(never)
  func transformOutput4(
    _ mt: UnsafePointer<Float>, channels: Int, ld: Int, bias: UnsafePointer<Float>?,
    into y: UnsafeMutablePointer<Float>, n: Int, n0: Int, count: Int, oh: Int, ow: Int
  ) {
    let th = tiles(oh), tw = tiles(ow), perTile = th * tw
    let plane = Winograd.planeStride(rows: channels, ld: ld)
    let groups = (count + 3) / 4
    let image = oh * ow
    let p6 = 6 * plane, p12 = 12 * plane, p18 = 18 * plane, p24 = 24 * plane, p30 = 30 * plane
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * 24) { tmp in
      let t = tmp.baseAddress!  // [4 (row), 6 (column)] quads
      for c in 0..<channels {
        let bias0: Float = bias.map { $0[c] } ?? 0
        let b = Quad(repeating: bias0)
        for g in 0..<groups {
          let e0 = 4 * g, lanes = min(4, count - e0)
          let src = mt + c * ld + g * 4 * perTile
          let img = y + ((c * n + n0 + e0) * oh) * ow  // lane l's image at img + l·image
          // Index arithmetic wraps (&), as in `transformGroups4`: all offsets are inside M, y and t.
          for ti in 0..<th {
            for tj in 0..<tw {
              let s = src + 4 &* (ti &* tw &+ tj)
              for k in 0..<6 {
                let sk = s + k &* plane
                let z = Winograd.at4(
                  Winograd.ld4(sk), Winograd.ld4(sk + p6), Winograd.ld4(sk + p12), Winograd.ld4(sk + p18),
                  Winograd.ld4(sk + p24), Winograd.ld4(sk + p30))
                let tk = t + 4 &* k
                Winograd.st4(z.0, tk)
                Winograd.st4(z.1, tk + 24)
                Winograd.st4(z.2, tk + 48)
                Winograd.st4(z.3, tk + 72)
              }
              let x0 = 4 &* tj, cols = min(4, ow &- x0)
              for r in 0..<4 {
                let i = 4 &* ti &+ r
                if i >= oh { break }
                let tr = UnsafePointer(t + 24 &* r)
                let q = Winograd.at4(
                  Winograd.ld4(tr), Winograd.ld4(tr + 4), Winograd.ld4(tr + 8), Winograd.ld4(tr + 12),
                  Winograd.ld4(tr + 16), Winograd.ld4(tr + 20))
                // Lane l's row (y₀[l], y₁[l], y₂[l], y₃[l]) is example e0 + l's, at its image's row i.
                let rows = Winograd.transposed(q.0 + b, q.1 + b, q.2 + b, q.3 + b)
                let dst = img + (i &* ow &+ x0)
                if cols == 4 && lanes == 4 {
                  Winograd.st4(rows.0, dst)
                  Winograd.st4(rows.1, dst + image)
                  Winograd.st4(rows.2, dst + 2 &* image)
                  Winograd.st4(rows.3, dst + 3 &* image)
                } else {
                  for l in 0..<lanes {
                    let row = l == 0 ? rows.0 : l == 1 ? rows.1 : l == 2 ? rows.2 : rows.3
                    let o = dst + l &* image
                    for x in 0..<cols { o[x] = row[x] }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}

/// One F(4×4) data transform along an axis of a tile: `inputs` quads `stride` floats apart in, six
/// out (`Winograd.transformGroups4`).
protocol WinogradAxis4 {
  /// Points read along the axis: 6 for an input tile, 4 for an output-gradient tile.
  static var inputs: Int { get }
  /// The transform of the `inputs` quads at p, p + stride, ….
  static func apply(_ p: UnsafePointer<Float>, stride: Int) -> Winograd.Six
}

/// Bᵀ (`Winograd.bt4`): the input transform.
enum InputAxis: WinogradAxis4 {
  static var inputs: Int { 6 }
  @inline(__always)
  static func apply(_ p: UnsafePointer<Float>, stride s: Int) -> Winograd.Six {
    Winograd.bt4(
      Winograd.ld4(p), Winograd.ld4(p + s), Winograd.ld4(p + 2 * s), Winograd.ld4(p + 3 * s), Winograd.ld4(p + 4 * s),
      Winograd.ld4(p + 5 * s))
  }
}

/// A (`Winograd.a4`): the output gradient's transform.
enum GradientAxis: WinogradAxis4 {
  static var inputs: Int { 4 }
  @inline(__always)
  static func apply(_ p: UnsafePointer<Float>, stride s: Int) -> Winograd.Six {
    Winograd.a4(Winograd.ld4(p), Winograd.ld4(p + s), Winograd.ld4(p + 2 * s), Winograd.ld4(p + 3 * s))
  }
}
