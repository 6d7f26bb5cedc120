import MetaweightTensor

/// Which batch-norm sums a `BatchNormSync` combines.
public enum BatchNormSyncPass: Sendable {
  /// The forward pass's per-channel Σx (with the element count), then Σ(x − μ)².
  case statistics
  /// The backward pass's per-channel Σ dy and Σ dy·x̂.
  case gradient
  /// The tangent pass's per-channel Σ tx and Σ tx·x̂.
  case tangent
}

/// Synchronised batch norm: sums batch-norm's per-channel sums over the workers of a
/// data-parallel step, so that every batch statistic (and its derivatives) is the one of the
/// global batch. Set on a network (`Network.batchNormSync`) for the passes of a step.
public protocol BatchNormSync: AnyObject {
  /// Replaces `values[0..<count]` by their sum over the workers; false when the collective failed
  /// (the pass then goes on with the local sums and the step must fail).
  func sum(_ values: UnsafeMutablePointer<Float>, count: Int, pass: BatchNormSyncPass) -> Bool
}

/// The synchronised passes of `BatchNorm` (training modes with a `BatchNormSync` in the context):
/// the same formulas as the local passes, with the per-channel sums taken over the global batch.
/// The mean and variance take two rounds (Σx, then Σ(x − μ)² about the global mean), so the
/// variance has no cancellation; dγ and dβ stay local sums (the gradient all-reduce adds them).
extension BatchNorm {
  private var flatLayout: Bool {
    if case .flat = layout { return true }
    return false
  }

  private func elementsPerChannel(_ n: Int) -> Int {
    switch layout {
    case .flat: return n
    case .image(_, let h, let w): return n * h * w
    }
  }

  /// Index of element i of channel c: [N, D] rows for flat layouts, [C, m] rows for images.
  @inline(__always) private func index(_ c: Int, _ i: Int, m: Int, flat: Bool) -> Int {
    flat ? i * channels + c : c * m + i
  }
  /// (Σ g, Σ g·x̂) over channel c's local elements, x̂ = (x − μ)·s, accumulated in double precision
  /// (the local parts of the sums the collective adds up; backward and tangent alike).
  private func localProjections(
    _ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, channel c: Int, mu: Float, s: Float, m: Int, flat: Bool
  ) -> (Double, Double) {
    var sg: Double = 0, sgx: Double = 0
    for i in 0..<m {
      let k = index(c, i, m: m, flat: flat)
      sg += Double(g[k])
      sgx += Double(g[k] * ((x[k] - mu) * s))
    }
    return (sg, sgx)
  }

  /// Forward pass with global batch statistics; updates the running statistics in `.train` mode
  /// with the global (unbiased) variance.
  func forwardSynchronized(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape,
    sync: BatchNormSync
  ) {
    let t = tape as! Tape
    let m = elementsPerChannel(ctx.batch), cn = channels, flat = flatLayout
    let gamma = ctx.params + paramOffset, beta = gamma + cn
    let rmean = ctx.state + stateOffset, rvar = rmean + cn
    var buf = [Float](repeating: 0, count: cn + 1)
    for c in 0..<cn {
      var s: Double = 0
      for i in 0..<m { s += Double(x[index(c, i, m: m, flat: flat)]) }
      buf[c] = Float(s)
    }
    buf[cn] = Float(m)
    _ = buf.withUnsafeMutableBufferPointer { sync.sum($0.baseAddress!, count: cn + 1, pass: .statistics) }
    let total = max(Double(buf[cn]), 1)
    let mean = (0..<cn).map { Double(buf[$0]) / total }
    var sq = [Float](repeating: 0, count: cn)
    for c in 0..<cn {
      var s: Double = 0
      for i in 0..<m {
        let d = Double(x[index(c, i, m: m, flat: flat)]) - mean[c]
        s += d * d
      }
      sq[c] = Float(s)
    }
    _ = sq.withUnsafeMutableBufferPointer { sync.sum($0.baseAddress!, count: cn, pass: .statistics) }
    t.batchStats = true
    t.globalCount = Float(total)
    let update = ctx.mode == .train
    let momentum = ctx.bnMomentum
    for c in 0..<cn {
      let varD = max(Double(sq[c]) / total, 0)
      let mu = Float(mean[c])
      let s = Float(1 / (varD + Double(epsilon)).squareRoot())
      if update {
        let unbiased = total > 1 ? varD * total / (total - 1) : varD
        rmean[c] = (1 - momentum) * rmean[c] + momentum * mu
        rvar[c] = (1 - momentum) * rvar[c] + momentum * Float(unbiased)
      }
      t.mean[c] = mu
      t.invstd[c] = s
      let a = gamma[c] * s, b = beta[c] - mu * a
      for i in 0..<m {
        let k = index(c, i, m: m, flat: flat)
        y[k] = x[k] * a + b
      }
    }
  }

  /// Backward pass through the global batch statistics: dγ, dβ local; dx with the global means.
  func backwardSynchronized(
    _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    _ ctx: inout PassContext, _ tape: LayerTape, sync: BatchNormSync
  ) {
    let t = tape as! Tape
    let m = elementsPerChannel(ctx.batch), cn = channels, flat = flatLayout
    let gamma = ctx.params + paramOffset
    var sums = [Float](repeating: 0, count: 2 * cn)
    for c in 0..<cn {
      let (sdy, sdyx) = localProjections(dy, x, channel: c, mu: t.mean[c], s: t.invstd[c], m: m, flat: flat)
      if let g = ctx.grads.map({ $0 + paramOffset }) {
        g[c] = Float(sdyx)
        g[cn + c] = Float(sdy)
      }
      sums[c] = Float(sdy)
      sums[cn + c] = Float(sdyx)
    }
    guard let d = dx else { return }
    _ = sums.withUnsafeMutableBufferPointer { sync.sum($0.baseAddress!, count: 2 * cn, pass: .gradient) }
    let invM = 1 / max(t.globalCount, 1)
    for c in 0..<cn {
      let mu = t.mean[c], s = t.invstd[c], a = gamma[c] * s
      let mdy = sums[c] * invM, mdyx = sums[cn + c] * invM
      for i in 0..<m {
        let k = index(c, i, m: m, flat: flat)
        let xh = (x[k] - mu) * s
        d[k] = a * (dy[k] - mdy - xh * mdyx)
      }
    }
  }

  /// Tangent pass through the global batch statistics.
  func tangentSynchronized(
    _ x: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?, _ ty: UnsafeMutablePointer<Float>,
    _ ctx: inout PassContext, _ tape: LayerTape, sync: BatchNormSync
  ) {
    let t = tape as! Tape
    let m = elementsPerChannel(ctx.batch), cn = channels, flat = flatLayout
    let gamma = ctx.params + paramOffset
    let pt = ctx.paramTangent.map { $0 + paramOffset }
    var sums = [Float](repeating: 0, count: 2 * cn)
    if let txp = tx {
      for c in 0..<cn {
        let (st, stx) = localProjections(txp, x, channel: c, mu: t.mean[c], s: t.invstd[c], m: m, flat: flat)
        sums[c] = Float(st)
        sums[cn + c] = Float(stx)
      }
      _ = sums.withUnsafeMutableBufferPointer { sync.sum($0.baseAddress!, count: 2 * cn, pass: .tangent) }
    }
    let invM = 1 / max(t.globalCount, 1)
    for c in 0..<cn {
      let mu = t.mean[c], s = t.invstd[c], a = gamma[c] * s
      let tg = pt?[c] ?? 0, tb = pt?[cn + c] ?? 0
      let mt = sums[c] * invM, mtx = sums[cn + c] * invM
      for i in 0..<m {
        let k = index(c, i, m: m, flat: flat)
        let xh = (x[k] - mu) * s
        if let txp = tx {
          ty[k] = a * (txp[k] - mt - xh * mtx) + tg * xh + tb
        } else {
          ty[k] = tg * xh + tb
        }
      }
    }
  }
}
