import MetaweightTensor

#if canImport(Glibc)
  import Glibc
#endif

/// Batch normalisation over the channels of an image batch [C, N, H, W] (statistics over
/// N·H·W, contiguous rows) or the features of a flat batch [N, D] (statistics over N).
///
///     forward   x̂ = (x − μ)·s,  s = 1/√(σ² + ε),  y = γ x̂ + β      (μ, σ² of the batch in
///               training modes; running statistics in eval mode)
///     backward  dγ = Σ dy x̂,  dβ = Σ dy,  dx = γ s (dy − mean dy − x̂ · mean(dy x̂))
///     tangent   tx̂ = s (tx − mean tx − x̂ · mean(tx x̂)),  ty = γ tx̂ + tγ x̂ + tβ
///
/// (In eval mode the statistics are constants, so dx = γ s dy and tx̂ = s·tx.)
/// Running statistics are updated only in `.train` mode, with PyTorch's convention (unbiased
/// variance, momentum 0.1).
public final class BatchNorm: LeafLayer, Layer {
  /// The layout normalised.
  public let layout: Layout
  /// Number of channels (image) or features (flat).
  public let channels: Int
  /// ε added to the variance.
  public let epsilon: Float
  /// `batchnorm`.
  public var kind: String { "batchnorm" }
  /// Same as output.
  public var inputLayout: Layout { layout }
  /// Same as input.
  public var outputLayout: Layout { layout }
  /// True.
  public var hasModeDependence: Bool { true }
  /// False: the derivatives rebuild x̂ from the input and the stored statistics.
  public var derivativesReadOutput: Bool { false }

  /// Creates batch norm for `layout`.
  public init(_ layout: Layout, epsilon: Float = 1e-5) {
    self.layout = layout
    switch layout {
    case .flat(let d): channels = d
    case .image(let c, _, _): channels = c
    }
    self.epsilon = epsilon
  }

  /// gamma (ones) and beta (zeros).
  public var parameterSpecs: [ParameterSpec] {
    [ParameterSpec("gamma", [channels], .ones), ParameterSpec("beta", [channels], .zeros)]
  }
  /// running_mean (zeros) and running_var (ones).
  public var stateSpecs: [ParameterSpec] {
    [ParameterSpec("running_mean", [channels], .zeros), ParameterSpec("running_var", [channels], .ones)]
  }

  final class Tape: LayerTape {
    var mean: [Float]
    var invstd: [Float]
    var batchStats = true
    /// Elements per channel of the global batch (synchronised batch norm, `BatchNormSync.swift`).
    var globalCount: Float = 0
    init(_ c: Int) {
      mean = [Float](repeating: 0, count: c)
      invstd = [Float](repeating: 1, count: c)
    }
  }

  /// Per-channel statistics storage.
  public func makeTape(batch: Int) -> LayerTape { Tape(channels) }

  /// Whether the layout is flat ([N, D]: a channel's values are strided by D).
  private var isFlat: Bool {
    if case .flat = layout { return true }
    return false
  }

  /// Elements per channel.
  @inline(__always) private func perChannel(_ n: Int) -> Int {
    switch layout {
    case .flat: return n
    case .image(_, let h, let w): return n * h * w
    }
  }

  /// (Σ v, Σ v²) of a contiguous channel, float partial sums of ≤ 512 terms per lane.
  @inline(__always)
  private static func moments(_ x: UnsafePointer<Float>, _ m: Int) -> (Double, Double) {
    var sum: Double = 0, sq: Double = 0
    var a = SIMD16<Float>.zero, b = SIMD16<Float>.zero
    var i = 0, run = 0
    while i + 16 <= m {
      let v = Kernels.load(x + i)
      a += v
      b += v * v
      i += 16
      run += 1
      if run == 512 {
        sum += Double(a.sum())
        sq += Double(b.sum())
        a = .zero
        b = .zero
        run = 0
      }
    }
    sum += Double(a.sum())
    sq += Double(b.sum())
    while i < m {
      let v = Double(x[i])
      sum += v
      sq += v * v
      i += 1
    }
    return (sum, sq)
  }

  /// `v`, or v·[z > 0] over lanes `i..<i+16` of `z` when batch norm runs fused with the ReLU whose
  /// output `z` is (`ReLU.gate`): how the fused backward and tangent sweeps apply the ReLU's mask.
  @inline(__always)
  private static func masked(_ v: SIMD16<Float>, _ z: UnsafePointer<Float>?, _ i: Int) -> SIMD16<Float> {
    guard let z else { return v }
    return ReLU.gate(v, by: Kernels.load(z + i))
  }

  /// `masked` on 8 lanes.
  @inline(__always)
  private static func masked(_ v: SIMD8<Float>, _ z: UnsafePointer<Float>?, _ i: Int) -> SIMD8<Float> {
    guard let z else { return v }
    return ReLU.gate(v, by: UnsafeRawPointer(z + i).loadUnaligned(as: SIMD8<Float>.self))
  }

  /// `masked` on one value.
  @inline(__always)
  private static func masked(_ v: Float, _ z: UnsafePointer<Float>?, _ i: Int) -> Float {
    guard let z else { return v }
    return ReLU.gate(v, by: z[i])
  }

  /// (Σ g, Σ g·x̂) with x̂ = (x − μ)·s over a contiguous channel, accumulated in double precision
  /// (these sums cancel heavily, and dx and the tangent depend on them directly); g = g·[z > 0]
  /// on the fly when `z` (a fused ReLU's output) is given.
  @inline(__always)
  private static func projections(
    _ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ mu: Float, _ s: Float, _ m: Int,
    gate z: UnsafePointer<Float>? = nil
  ) -> (Double, Double) {
    var a = SIMD8<Double>.zero, b = SIMD8<Double>.zero
    var i = 0
    while i + 8 <= m {
      let gv = BatchNorm.masked(UnsafeRawPointer(g + i).loadUnaligned(as: SIMD8<Float>.self), z, i)
      let xv = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
      a += SIMD8<Double>(gv)
      b += SIMD8<Double>(gv * ((xv - mu) * s))
      i += 8
    }
    var sg = a.sum(), sgx = b.sum()
    while i < m {
      let gi = BatchNorm.masked(g[i], z, i)
      sg += Double(gi)
      sgx += Double(gi * ((x[i] - mu) * s))
      i += 1
    }
    return (sg, sgx)
  }

  /// μ and 1/√(σ² + ε) from the sums, updating the running statistics in `.train` mode.
  @inline(__always)
  private func statistics(
    sum: Double, sq: Double, m: Int, c: Int, rmean: UnsafeMutablePointer<Float>,
    rvar: UnsafeMutablePointer<Float>, update: Bool, momentum: Float
  ) -> (Float, Float) {
    let meanD = sum / Double(m)
    let varD = max(sq / Double(m) - meanD * meanD, 0)
    let mu = Float(meanD)
    let s = Float(1 / (varD + Double(epsilon)).squareRoot())
    if update {
      let unbiased = m > 1 ? varD * Double(m) / Double(m - 1) : varD
      rmean[c] = (1 - momentum) * rmean[c] + momentum * mu
      rvar[c] = (1 - momentum) * rvar[c] + momentum * Float(unbiased)
    }
    return (mu, s)
  }

  // MARK: - Passes
  //
  // Each pass also runs fused with a ReLU that follows batch norm (`Sequential` does this for a
  // `BatchNorm` → `ReLU` pair; see its `fusesReLU`): the forward pass then writes
  // z = max(0, γ x̂ + β) straight into the ReLU's output, and the backward and tangent passes apply
  // the ReLU's mask [z > 0] on the fly (to dz before the projections and dx, to the tangent before
  // it is stored), so neither batch norm's output nor its output gradient or tangent is ever
  // materialised. The float32 operations are those of the two layers run apart, in the same order,
  // so the results are the same bits. The synchronised passes (`BatchNormSync.swift`) keep the
  // unfused route: the ReLU runs in place on their output, its mask in place on the gradient.

  /// y = γ x̂ + β.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    forward(x, y, &ctx, tape, rectify: false)
  }

  /// y = γ x̂ + β, or with `rectify` max(0, γ x̂ + β) (batch norm fused with the ReLU after it).
  func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape, rectify: Bool
  ) {
    if let sync = ctx.batchNormSync, ctx.mode.usesBatchStatistics {
      forwardSynchronized(x, y, &ctx, tape, sync: sync)
      if rectify { ReLU.rectify(UnsafePointer(y), y, count: ctx.batch * layout.size) }
      return
    }
    let t = tape as! Tape
    let m = perChannel(ctx.batch)
    let cn = channels
    let gamma = ctx.params + paramOffset
    let beta = gamma + cn
    let rmean = ctx.state + stateOffset
    let rvar = rmean + cn
    let useBatch = ctx.mode.usesBatchStatistics
    let update = ctx.mode == .train
    let eps = epsilon
    let momentum = ctx.bnMomentum
    let flat = isFlat
    t.batchStats = useBatch
    t.mean.withUnsafeMutableBufferPointer { meanP in
      t.invstd.withUnsafeMutableBufferPointer { invP in
        let meanB = meanP.baseAddress!, invB = invP.baseAddress!
        Parallel.forRange(cn, costPerItem: 2 * m) { c0, c1 in
          if flat {
            // [N, D]: accumulate whole rows of the channel block, then normalise row by row.
            let width = c1 - c0
            withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * width) { acc in
              let sum = acc.baseAddress!, sq = sum + width
              if useBatch {
                sum.update(repeating: 0, count: 2 * width)
                for r in 0..<m {
                  let row = x + r * cn + c0
                  for j in 0..<width {
                    let v = Double(row[j])
                    sum[j] += v
                    sq[j] += v * v
                  }
                }
              }
              for j in 0..<width {
                let c = c0 + j
                if useBatch {
                  (meanB[c], invB[c]) = statistics(
                    sum: sum[j], sq: sq[j], m: m, c: c, rmean: rmean, rvar: rvar, update: update,
                    momentum: momentum)
                } else {
                  meanB[c] = rmean[c]
                  invB[c] = 1 / (max(rvar[c], 0) + eps).squareRoot()
                }
              }
            }
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * width) { ab in
              let a = ab.baseAddress!, b = a + width
              for j in 0..<width {
                let c = c0 + j
                a[j] = gamma[c] * invB[c]
                b[j] = beta[c] - meanB[c] * a[j]
              }
              for r in 0..<m {
                let xr = x + r * cn + c0, yr = y + r * cn + c0
                for j in 0..<width {
                  let v = xr[j] * a[j] + b[j]
                  yr[j] = rectify ? ReLU.rectify(v) : v
                }
              }
            }
            return
          }
          for c in c0..<c1 {
            let xc = x + c * m
            let yc = y + c * m
            var mu: Float, s: Float
            if useBatch {
              let (sum, sq) = BatchNorm.moments(xc, m)
              (mu, s) = statistics(
                sum: sum, sq: sq, m: m, c: c, rmean: rmean, rvar: rvar, update: update, momentum: momentum)
            } else {
              mu = rmean[c]
              s = 1 / (max(rvar[c], 0) + eps).squareRoot()
            }
            meanB[c] = mu
            invB[c] = s
            let a = gamma[c] * s
            let b = beta[c] - mu * a
            var i = 0
            while i + 16 <= m {
              let v = Kernels.load(xc + i) * a + b
              Kernels.store(rectify ? ReLU.rectify(v) : v, yc + i)
              i += 16
            }
            while i < m {
              let v = xc[i] * a + b
              yc[i] = rectify ? ReLU.rectify(v) : v
              i += 1
            }
          }
        }
      }
    }
  }

  /// dγ, dβ and dx (through the batch statistics in training modes).
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    backward(x, dy, dx, &ctx, tape, gate: nil)
  }

  /// dγ, dβ and dx; with `gate` (the output z of a ReLU fused after batch norm, `dy` then the
  /// ReLU's output gradient dz) from dy = dz·[z > 0], formed on the fly in both sweeps.
  func backward(
    _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    _ ctx: inout PassContext, _ tape: LayerTape, gate z: UnsafePointer<Float>?
  ) {
    if let sync = ctx.batchNormSync, (tape as! Tape).batchStats {
      var g = dy
      if let z {
        // The unfused route: dz·[z > 0] into dx (which the synchronised pass may overwrite in
        // place: it reads each dy before writing that dx), or into the scratch area.
        let count = ctx.batch * layout.size
        let buffer = dx ?? ctx.scratch.pointer(count: count)
        ReLU.mask(z, dy, buffer, count: count)
        g = UnsafePointer(buffer)
      }
      return backwardSynchronized(x, g, dx, &ctx, tape, sync: sync)
    }
    let t = tape as! Tape
    let m = perChannel(ctx.batch)
    let cn = channels
    let gamma = ctx.params + paramOffset
    let grads = ctx.grads.map { $0 + paramOffset }
    let batchStats = t.batchStats
    let invM = 1 / Float(m)
    let flat = isFlat
    t.mean.withUnsafeBufferPointer { meanP in
      t.invstd.withUnsafeBufferPointer { invP in
        let meanB = meanP.baseAddress!, invB = invP.baseAddress!
        Parallel.forRange(cn, costPerItem: 2 * m) { c0, c1 in
          if flat {
            let width = c1 - c0
            withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * width) { acc in
              let sdy = acc.baseAddress!, sdyx = sdy + width
              sdy.update(repeating: 0, count: 2 * width)
              for r in 0..<m {
                let xr = x + r * cn + c0, gr = dy + r * cn + c0, zr = z.map { $0 + r * cn + c0 }
                for j in 0..<width {
                  let g = BatchNorm.masked(gr[j], zr, j)
                  sdy[j] += Double(g)
                  sdyx[j] += Double(g * ((xr[j] - meanB[c0 + j]) * invB[c0 + j]))
                }
              }
              if let g = grads {
                for j in 0..<width {
                  g[c0 + j] = Float(sdyx[j])
                  g[cn + c0 + j] = Float(sdy[j])
                }
              }
              guard let d = dx else { return }
              withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * width) { coef in
                let a = coef.baseAddress!, mdy = a + width, mdyx = mdy + width
                for j in 0..<width {
                  a[j] = gamma[c0 + j] * invB[c0 + j]
                  mdy[j] = batchStats ? Float(sdy[j]) * invM : 0
                  mdyx[j] = batchStats ? Float(sdyx[j]) * invM : 0
                }
                for r in 0..<m {
                  let xr = x + r * cn + c0, gr = dy + r * cn + c0, dr = d + r * cn + c0
                  let zr = z.map { $0 + r * cn + c0 }
                  if batchStats {
                    for j in 0..<width {
                      let xh = (xr[j] - meanB[c0 + j]) * invB[c0 + j]
                      dr[j] = a[j] * (BatchNorm.masked(gr[j], zr, j) - mdy[j] - xh * mdyx[j])
                    }
                  } else {
                    for j in 0..<width { dr[j] = a[j] * BatchNorm.masked(gr[j], zr, j) }
                  }
                }
              }
            }
            return
          }
          for c in c0..<c1 {
            let xc = x + c * m, dyc = dy + c * m, zc = z.map { $0 + c * m }
            let mu = meanB[c], s = invB[c]
            let (sdy, sdyx) = BatchNorm.projections(dyc, xc, mu, s, m, gate: zc)
            if let g = grads {
              g[c] = Float(sdyx)
              g[cn + c] = Float(sdy)
            }
            guard let d = dx else { continue }
            let dc = d + c * m
            let a = gamma[c] * s
            var i = 0
            if batchStats {
              let mdy = Float(sdy) * invM, mdyx = Float(sdyx) * invM
              while i + 16 <= m {
                let xh = (Kernels.load(xc + i) - mu) * s
                Kernels.store(a * (BatchNorm.masked(Kernels.load(dyc + i), zc, i) - mdy - xh * mdyx), dc + i)
                i += 16
              }
              while i < m {
                let xh = (xc[i] - mu) * s
                dc[i] = a * (BatchNorm.masked(dyc[i], zc, i) - mdy - xh * mdyx)
                i += 1
              }
            } else {
              while i + 16 <= m {
                Kernels.store(a * BatchNorm.masked(Kernels.load(dyc + i), zc, i), dc + i)
                i += 16
              }
              while i < m {
                dc[i] = a * BatchNorm.masked(dyc[i], zc, i)
                i += 1
              }
            }
          }
        }
      }
    }
  }

  /// ty = γ tx̂ + tγ x̂ + tβ.
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    tangent(x, tx, ty, &ctx, tape, gate: nil)
  }

  /// ty = γ tx̂ + tγ x̂ + tβ; with `gate` (the output z of a ReLU fused after batch norm) the
  /// ReLU's tangent [z > 0]·(γ tx̂ + tγ x̂ + tβ) instead, masked before it is stored.
  func tangent(
    _ x: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?, _ ty: UnsafeMutablePointer<Float>,
    _ ctx: inout PassContext, _ tape: LayerTape, gate z: UnsafePointer<Float>?
  ) {
    if let sync = ctx.batchNormSync, (tape as! Tape).batchStats {
      tangentSynchronized(x, tx, ty, &ctx, tape, sync: sync)
      if let z { ReLU.mask(z, UnsafePointer(ty), ty, count: ctx.batch * layout.size) }
      return
    }
    let t = tape as! Tape
    let m = perChannel(ctx.batch)
    let cn = channels
    let gamma = ctx.params + paramOffset
    let pt = ctx.paramTangent.map { $0 + paramOffset }
    let batchStats = t.batchStats
    let invM = 1 / Float(m)
    let flat = isFlat
    t.mean.withUnsafeBufferPointer { meanP in
      t.invstd.withUnsafeBufferPointer { invP in
        let meanB = meanP.baseAddress!, invB = invP.baseAddress!
        Parallel.forRange(cn, costPerItem: 2 * m) { c0, c1 in
          if flat {
            let width = c1 - c0
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 5 * width) { coef in
              let a = coef.baseAddress!, mt = a + width, mtx = mt + width, tg = mtx + width, tb = tg + width
              for j in 0..<width {
                let c = c0 + j
                a[j] = gamma[c] * invB[c]
                tg[j] = pt?[c] ?? 0
                tb[j] = pt?[cn + c] ?? 0
                mt[j] = 0
                mtx[j] = 0
              }
              if let txp = tx, batchStats {
                withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * width) { acc in
                  let st = acc.baseAddress!, stx = st + width
                  st.update(repeating: 0, count: 2 * width)
                  for r in 0..<m {
                    let xr = x + r * cn + c0, tr = txp + r * cn + c0
                    for j in 0..<width {
                      let v = tr[j]
                      st[j] += Double(v)
                      stx[j] += Double(v * ((xr[j] - meanB[c0 + j]) * invB[c0 + j]))
                    }
                  }
                  for j in 0..<width {
                    mt[j] = Float(st[j]) * invM
                    mtx[j] = Float(stx[j]) * invM
                  }
                }
              }
              for r in 0..<m {
                let xr = x + r * cn + c0, yr = ty + r * cn + c0, zr = z.map { $0 + r * cn + c0 }
                if let txp = tx {
                  let tr = txp + r * cn + c0
                  if batchStats {
                    for j in 0..<width {
                      let xh = (xr[j] - meanB[c0 + j]) * invB[c0 + j]
                      yr[j] = BatchNorm.masked(a[j] * (tr[j] - mt[j] - xh * mtx[j]) + tg[j] * xh + tb[j], zr, j)
                    }
                  } else {
                    for j in 0..<width {
                      let xh = (xr[j] - meanB[c0 + j]) * invB[c0 + j]
                      yr[j] = BatchNorm.masked(a[j] * tr[j] + tg[j] * xh + tb[j], zr, j)
                    }
                  }
                } else {
                  for j in 0..<width {
                    yr[j] = BatchNorm.masked(tg[j] * ((xr[j] - meanB[c0 + j]) * invB[c0 + j]) + tb[j], zr, j)
                  }
                }
              }
            }
            return
          }
          for c in c0..<c1 {
            let xc = x + c * m, tyc = ty + c * m, zc = z.map { $0 + c * m }
            let mu = meanB[c], s = invB[c]
            let tg = pt?[c] ?? 0
            let tb = pt?[cn + c] ?? 0
            let a = gamma[c] * s
            var i = 0
            if let txp = tx {
              let txc = txp + c * m
              if batchStats {
                let (st, stx) = BatchNorm.projections(txc, xc, mu, s, m)
                let mt = Float(st) * invM, mtx = Float(stx) * invM
                while i + 16 <= m {
                  let xh = (Kernels.load(xc + i) - mu) * s
                  let v = a * (Kernels.load(txc + i) - mt - xh * mtx) + tg * xh + tb
                  Kernels.store(BatchNorm.masked(v, zc, i), tyc + i)
                  i += 16
                }
                while i < m {
                  let xh = (xc[i] - mu) * s
                  tyc[i] = BatchNorm.masked(a * (txc[i] - mt - xh * mtx) + tg * xh + tb, zc, i)
                  i += 1
                }
              } else {
                while i + 16 <= m {
                  let xh = (Kernels.load(xc + i) - mu) * s
                  Kernels.store(BatchNorm.masked(a * Kernels.load(txc + i) + tg * xh + tb, zc, i), tyc + i)
                  i += 16
                }
                while i < m {
                  let xh = (xc[i] - mu) * s
                  tyc[i] = BatchNorm.masked(a * txc[i] + tg * xh + tb, zc, i)
                  i += 1
                }
              }
            } else {
              while i + 16 <= m {
                Kernels.store(BatchNorm.masked(tg * ((Kernels.load(xc + i) - mu) * s) + tb, zc, i), tyc + i)
                i += 16
              }
              while i < m {
                tyc[i] = BatchNorm.masked(tg * ((xc[i] - mu) * s) + tb, zc, i)
                i += 1
              }
            }
          }
        }
      }
    }
  }
}
