import _CBLAS

/// Errors the core reports instead of trapping; the C ABI turns them into status codes.
public enum MetaweightError: Error, CustomStringConvertible, Sendable {
  /// An argument has the wrong value, shape or range.
  case invalidArgument(String)
  /// A value is NaN or infinite where a finite one is required.
  case nonFinite(String)
  /// A call came in an order the object does not allow.
  case invalidState(String)
  /// A file could not be read, written or parsed.
  case io(String)
  /// An allocation whose size the caller controls is over the documented limit
  /// (`Memory.maxAllocationBytes`), or the system could not provide the memory.
  case resource(String)

  /// The message.
  public var description: String {
    switch self {
    case .invalidArgument(let m), .nonFinite(let m), .invalidState(let m), .io(let m), .resource(let m): return m
    }
  }
}

/// Vectorised loops over plain buffers, split across threads when large.
public enum Elementwise {
  /// y += x.
  public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forRange(count) { s, e in Kernels.add(x + s, into: y + s, count: e - s) }
  }

  /// out = a + b.
  public static func sum(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>,
    count: Int
  ) {
    Parallel.forRange(count) { s, e in
      let (pa, pb, po) = (a + s, b + s, out + s)
      let c = e - s
      var i = 0
      while i + 16 <= c {
        Kernels.store(Kernels.load(pa + i) + Kernels.load(pb + i), po + i)
        i += 16
      }
      while i < c {
        po[i] = pa[i] + pb[i]
        i += 1
      }
    }
  }

  /// y += alpha · x.
  public static func axpy(
    _ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int
  ) {
    Parallel.forRange(count) { s, e in
      let (px, py) = (x + s, y + s)
      let c = e - s
      var i = 0
      while i + 16 <= c {
        Kernels.store(Kernels.load(py + i) + alpha * Kernels.load(px + i), py + i)
        i += 16
      }
      while i < c {
        py[i] += alpha * px[i]
        i += 1
      }
    }
  }

  /// out = x + alpha · d (a virtual step is one call of this over the flat parameter vector).
  public static func step(
    _ x: UnsafePointer<Float>, _ alpha: Float, _ d: UnsafePointer<Float>,
    into out: UnsafeMutablePointer<Float>, count: Int
  ) {
    Parallel.forRange(count) { s, e in
      let (px, pd, po) = (x + s, d + s, out + s)
      let c = e - s
      var i = 0
      while i + 16 <= c {
        Kernels.store(Kernels.load(px + i) + alpha * Kernels.load(pd + i), po + i)
        i += 16
      }
      while i < c {
        po[i] = px[i] + alpha * pd[i]
        i += 1
      }
    }
  }

  /// Σ x[i]·y[i] in double precision.
  @inlinable
  public static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count: Int) -> Double {
    var s: Double = 0
    var i = 0
    var acc: SIMD8<Float> = .zero
    var chunk = 0
    while i + 8 <= count {
      let a = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
      let b = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
      acc += a * b
      i += 8
      chunk += 1
      if chunk == 256 {
        s += Double(acc.sum())
        acc = .zero
        chunk = 0
      }
    }
    s += Double(acc.sum())
    while i < count {
      s += Double(x[i]) * Double(y[i])
      i += 1
    }
    return s
  }

  /// True when every element is finite.
  public static func allFinite(_ x: UnsafePointer<Float>, count: Int) -> Bool {
    // v − v is 0 for a finite v and NaN for ±∞ or NaN; a NaN survives the sum.
    var acc = SIMD16<Float>.zero
    var i = 0
    while i + 16 <= count {
      let v = Kernels.load(x + i)
      acc += v - v
      i += 16
    }
    var tail: Float = 0
    while i < count {
      tail += x[i] - x[i]
      i += 1
    }
    return acc.sum() + tail == 0
  }

  /// Transposes a batch from [N, C, H·W] (user layout) to [C, N, H·W] (internal layout).
  public static func nchwToCnhw(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int
  ) {
    Parallel.forRange(c, costPerItem: n * hw) { cs, ce in
      for ch in cs..<ce {
        for b in 0..<n {
          (y + (ch * n + b) * hw).update(from: x + (b * c + ch) * hw, count: hw)
        }
      }
    }
  }

  /// Transposes a batch from [C, N, H·W] (internal layout) to [N, C, H·W] (user layout).
  public static func cnhwToNchw(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int
  ) {
    Parallel.forRange(c, costPerItem: n * hw) { cs, ce in
      for ch in cs..<ce {
        for b in 0..<n {
          (y + (b * c + ch) * hw).update(from: x + (ch * n + b) * hw, count: hw)
        }
      }
    }
  }
}

/// Small single-threaded building blocks for the layers' loops (16 floats at a time).
public enum Kernels {
  /// Asks the CPU to bring the cache line holding `p` in, for a read soon: a hint, with no effect
  /// on any result, that never faults whatever `p` is.
  @inlinable @inline(__always)
  public static func prefetch(_ p: UnsafeRawPointer) { metaweight_prefetch(p) }

  /// The 16 floats at `p` (unaligned load).
  @inlinable @inline(__always)
  public static func load(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
  }

  /// The 16 floats at `p` (unaligned load).
  @inlinable @inline(__always)
  public static func load(_ p: UnsafeMutablePointer<Float>) -> SIMD16<Float> { load(UnsafePointer(p)) }

  /// Writes the 16 floats of `v` at `p` (unaligned store).
  @inlinable @inline(__always)
  public static func store(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
  }

  /// p[0..<count] = 0.
  @inlinable @inline(__always)
  public static func zero(_ p: UnsafeMutablePointer<Float>, count: Int) {
    if count >= 256 {
      p.update(repeating: 0, count: count)
      return
    }
    var i = 0
    while i + 16 <= count {
      store(.zero, p + i)
      i += 16
    }
    while i < count {
      p[i] = 0
      i += 1
    }
  }

  /// dst[0..<count] = src[0..<count] (non-overlapping); short tails use overlapping stores.
  @inlinable @inline(__always)
  public static func copy(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, count: Int) {
    if count >= 512 {
      dst.update(from: src, count: count)
      return
    }
    if count >= 16 {
      var i = 0
      while i + 16 <= count {
        store(load(src + i), dst + i)
        i += 16
      }
      if i < count { store(load(src + count - 16), dst + count - 16) }
      return
    }
    let s = UnsafeRawPointer(src), d = UnsafeMutableRawPointer(dst)
    if count >= 8 {
      d.storeBytes(of: s.loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
      d.storeBytes(
        of: s.loadUnaligned(fromByteOffset: 4 * (count - 8), as: SIMD8<Float>.self), toByteOffset: 4 * (count - 8),
        as: SIMD8<Float>.self)
    } else if count >= 4 {
      d.storeBytes(of: s.loadUnaligned(as: SIMD4<Float>.self), as: SIMD4<Float>.self)
      d.storeBytes(
        of: s.loadUnaligned(fromByteOffset: 4 * (count - 4), as: SIMD4<Float>.self), toByteOffset: 4 * (count - 4),
        as: SIMD4<Float>.self)
    } else {
      for i in 0..<count { dst[i] = src[i] }
    }
  }

  /// dst[0..<count] += src[0..<count].
  @inlinable @inline(__always)
  public static func add(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 16 <= count {
      store(load(dst + i) + load(src + i), dst + i)
      i += 16
    }
    while i < count {
      dst[i] += src[i]
      i += 1
    }
  }

  /// Row r of y[rows × count] = values[r] everywhere.
  public static func fillRows(_ y: UnsafeMutablePointer<Float>, values: UnsafePointer<Float>, rows: Int, count: Int) {
    Parallel.forRange(rows, costPerItem: count) { r0, r1 in
      for r in r0..<r1 { (y + r * count).update(repeating: values[r], count: count) }
    }
  }

  /// Σ x[i] in double precision (float partial sums of at most 512 terms per lane).
  @inlinable
  public static func sum(_ x: UnsafePointer<Float>, count: Int) -> Double {
    var total: Double = 0
    var acc = SIMD16<Float>.zero
    var i = 0
    var run = 0
    while i + 16 <= count {
      acc += load(x + i)
      i += 16
      run += 1
      if run == 512 {
        total += Double(acc.sum())
        acc = .zero
        run = 0
      }
    }
    total += Double(acc.sum())
    while i < count {
      total += Double(x[i])
      i += 1
    }
    return total
  }
}
