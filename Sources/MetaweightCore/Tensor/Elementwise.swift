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

  /// The message.
  public var description: String {
    switch self {
    case .invalidArgument(let m), .nonFinite(let m), .invalidState(let m), .io(let m): return m
    }
  }
}

/// Vectorisable loops over plain buffers, split across threads when large.
public enum Elementwise {
  /// y += x.
  @inlinable
  public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forRange(count) { s, e in for i in s..<e { y[i] += x[i] } }
  }

  /// out = a + b.
  @inlinable
  public static func sum(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>,
    count: Int
  ) {
    Parallel.forRange(count) { s, e in for i in s..<e { out[i] = a[i] + b[i] } }
  }

  /// y += alpha · x.
  @inlinable
  public static func axpy(
    _ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int
  ) {
    Parallel.forRange(count) { s, e in for i in s..<e { y[i] += alpha * x[i] } }
  }

  /// out = x + alpha · d (a virtual step is one call of this over the flat parameter vector).
  @inlinable
  public static func step(
    _ x: UnsafePointer<Float>, _ alpha: Float, _ d: UnsafePointer<Float>,
    into out: UnsafeMutablePointer<Float>, count: Int
  ) {
    Parallel.forRange(count) { s, e in for i in s..<e { out[i] = x[i] + alpha * d[i] } }
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
  @inlinable
  public static func allFinite(_ x: UnsafePointer<Float>, count: Int) -> Bool {
    var ok = true
    for i in 0..<count where !x[i].isFinite {
      ok = false
      break
    }
    return ok
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
