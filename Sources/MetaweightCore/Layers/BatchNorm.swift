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
    init(_ c: Int) {
      mean = [Float](repeating: 0, count: c)
      invstd = [Float](repeating: 1, count: c)
    }
  }

  /// Per-channel statistics storage.
  public func makeTape(batch: Int) -> LayerTape { Tape(channels) }

  /// (elements per channel, channel stride, element stride).
  @inline(__always) private func geometry(_ n: Int) -> (m: Int, cs: Int, es: Int) {
    switch layout {
    case .flat(let d): return (n, 1, d)
    case .image(_, let h, let w): return (n * h * w, n * h * w, 1)
    }
  }

  /// y = γ x̂ + β.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    let t = tape as! Tape
    let (m, cs, es) = geometry(ctx.batch)
    let gamma = ctx.params + paramOffset
    let beta = gamma + channels
    let rmean = ctx.state + stateOffset
    let rvar = rmean + channels
    let useBatch = ctx.mode.usesBatchStatistics
    let update = ctx.mode == .train
    let eps = epsilon
    let momentum = ctx.bnMomentum
    t.batchStats = useBatch
    t.mean.withUnsafeMutableBufferPointer { meanP in
      t.invstd.withUnsafeMutableBufferPointer { invP in
        let meanB = meanP.baseAddress!, invB = invP.baseAddress!
        Parallel.forRange(channels, costPerItem: 2 * m) { c0, c1 in
          for c in c0..<c1 {
            let xc = x + c * cs
            let yc = y + c * cs
            var mu: Float, s: Float
            if useBatch {
              var sum: Double = 0, sq: Double = 0
              if es == 1 {
                var a: SIMD8<Float> = .zero, b: SIMD8<Float> = .zero
                var i = 0
                while i + 8 <= m {
                  let v = UnsafeRawPointer(xc + i).loadUnaligned(as: SIMD8<Float>.self)
                  a += v
                  b += v * v
                  i += 8
                  if i & 4095 == 0 {
                    sum += Double(a.sum()); sq += Double(b.sum())
                    a = .zero; b = .zero
                  }
                }
                sum += Double(a.sum()); sq += Double(b.sum())
                while i < m { let v = Double(xc[i]); sum += v; sq += v * v; i += 1 }
              } else {
                for i in 0..<m { let v = Double(xc[i * es]); sum += v; sq += v * v }
              }
              let meanD = sum / Double(m)
              let varD = max(sq / Double(m) - meanD * meanD, 0)
              mu = Float(meanD)
              s = Float(1 / (varD + Double(eps)).squareRoot())
              if update {
                let unbiased = m > 1 ? varD * Double(m) / Double(m - 1) : varD
                rmean[c] = (1 - momentum) * rmean[c] + momentum * mu
                rvar[c] = (1 - momentum) * rvar[c] + momentum * Float(unbiased)
              }
            } else {
              mu = rmean[c]
              s = 1 / (max(rvar[c], 0) + eps).squareRoot()
            }
            meanB[c] = mu
            invB[c] = s
            let a = gamma[c] * s
            let b = beta[c] - mu * a
            if es == 1 {
              for i in 0..<m { yc[i] = xc[i] * a + b }
            } else {
              for i in 0..<m { yc[i * es] = xc[i * es] * a + b }
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
    let t = tape as! Tape
    let (m, cs, es) = geometry(ctx.batch)
    let gamma = ctx.params + paramOffset
    let grads = ctx.grads.map { $0 + paramOffset }
    let batchStats = t.batchStats
    let invM = 1 / Float(m)
    t.mean.withUnsafeBufferPointer { meanP in
      t.invstd.withUnsafeBufferPointer { invP in
        let meanB = meanP.baseAddress!, invB = invP.baseAddress!
        Parallel.forRange(channels, costPerItem: 2 * m) { c0, c1 in
          for c in c0..<c1 {
            let xc = x + c * cs, dyc = dy + c * cs
            let mu = meanB[c], s = invB[c]
            var sdy: Double = 0, sdyx: Double = 0
            for i in 0..<m {
              let g = dyc[i * es]
              sdy += Double(g)
              sdyx += Double(g * ((xc[i * es] - mu) * s))
            }
            if let g = grads {
              g[c] = Float(sdyx)
              g[channels + c] = Float(sdy)
            }
            guard let d = dx else { continue }
            let dc = d + c * cs
            let a = gamma[c] * s
            if batchStats {
              let mdy = Float(sdy) * invM, mdyx = Float(sdyx) * invM
              for i in 0..<m {
                let xh = (xc[i * es] - mu) * s
                dc[i * es] = a * (dyc[i * es] - mdy - xh * mdyx)
              }
            } else {
              for i in 0..<m { dc[i * es] = a * dyc[i * es] }
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
    let t = tape as! Tape
    let (m, cs, es) = geometry(ctx.batch)
    let gamma = ctx.params + paramOffset
    let pt = ctx.paramTangent.map { $0 + paramOffset }
    let batchStats = t.batchStats
    let invM = 1 / Float(m)
    t.mean.withUnsafeBufferPointer { meanP in
      t.invstd.withUnsafeBufferPointer { invP in
        let meanB = meanP.baseAddress!, invB = invP.baseAddress!
        Parallel.forRange(channels, costPerItem: 2 * m) { c0, c1 in
          for c in c0..<c1 {
            let xc = x + c * cs, tyc = ty + c * cs
            let mu = meanB[c], s = invB[c]
            let tg = pt?[c] ?? 0
            let tb = pt?[channels + c] ?? 0
            let a = gamma[c] * s
            if let txp = tx {
              let txc = txp + c * cs
              if batchStats {
                var st: Double = 0, stx: Double = 0
                for i in 0..<m {
                  let v = txc[i * es]
                  st += Double(v)
                  stx += Double(v * ((xc[i * es] - mu) * s))
                }
                let mt = Float(st) * invM, mtx = Float(stx) * invM
                for i in 0..<m {
                  let xh = (xc[i * es] - mu) * s
                  tyc[i * es] = a * (txc[i * es] - mt - xh * mtx) + tg * xh + tb
                }
              } else {
                for i in 0..<m {
                  let xh = (xc[i * es] - mu) * s
                  tyc[i * es] = a * txc[i * es] + tg * xh + tb
                }
              }
            } else {
              for i in 0..<m { tyc[i * es] = tg * ((xc[i * es] - mu) * s) + tb }
            }
          }
        }
      }
    }
  }
}
