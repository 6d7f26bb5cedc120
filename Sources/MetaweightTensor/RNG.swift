#if canImport(Glibc)
  import Glibc
#endif

/// A seeded, serialisable pseudo-random generator (xoshiro256**, seeded through splitmix64).
///
/// Every random choice in metaweight (initialisation, shuffling, augmentation, dropout, noise)
/// draws from one of these, so the same seed gives the same run, and checkpoints store `state`.
public struct RNG: Sendable {
  /// The four 64-bit words of generator state.
  public var state: (UInt64, UInt64, UInt64, UInt64)

  /// Seeds the generator.
  public init(seed: UInt64) {
    var z = seed
    func splitmix(_ x: inout UInt64) -> UInt64 {
      x &+= 0x9E37_79B9_7F4A_7C15
      var r = x
      r = (r ^ (r >> 30)) &* 0xBF58_476D_1CE4_E5B9
      r = (r ^ (r >> 27)) &* 0x94D0_49BB_1331_11EB
      return r ^ (r >> 31)
    }
    state = (splitmix(&z), splitmix(&z), splitmix(&z), splitmix(&z))
  }

  /// Restores a generator from saved state words.
  public init(state words: [UInt64]) {
    precondition(words.count == 4, "RNG state needs 4 words, got \(words.count)")
    state = (words[0], words[1], words[2], words[3])
    if words.allSatisfy({ $0 == 0 }) { state.0 = 1 }
  }

  /// The state as four words.
  public var stateWords: [UInt64] { [state.0, state.1, state.2, state.3] }

  /// The next 64 random bits.
  @inlinable @inline(__always)
  public mutating func next() -> UInt64 {
    let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
    let t = state.1 << 17
    state.2 ^= state.0
    state.3 ^= state.1
    state.1 ^= state.2
    state.0 ^= state.3
    state.2 ^= t
    state.3 = (state.3 << 45) | (state.3 >> 19)
    return result
  }

  /// A uniform `Float` in [0, 1).
  @inlinable public mutating func uniform() -> Float {
    Float(next() >> 40) * (1.0 / 16_777_216.0)
  }

  /// A uniform `Double` in [0, 1).
  @inlinable public mutating func uniformDouble() -> Double {
    Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
  }

  /// A uniform integer in `0..<n` (n > 0), without modulo bias.
  @inlinable public mutating func int(below n: Int) -> Int {
    precondition(n > 0, "int(below:) needs a positive bound, got \(n)")
    let bound = UInt64(n)
    let threshold = (0 &- bound) % bound
    while true {
      let r = next()
      let m = r.multipliedFullWidth(by: bound)
      if m.low >= threshold { return Int(m.high) }
    }
  }

  /// A standard normal sample (Box–Muller).
  public mutating func normal() -> Float {
    var u1 = uniformDouble()
    if u1 < 1e-300 { u1 = 1e-300 }
    let u2 = uniformDouble()
    return Float((-2.0 * log(u1)).squareRoot() * cos(2.0 * Double.pi * u2))
  }

  /// A random permutation of `0..<n` (Fisher–Yates).
  public mutating func permutation(_ n: Int) -> [Int] {
    var p = Array(0..<n)
    if n > 1 {
      for i in stride(from: n - 1, to: 0, by: -1) {
        let j = int(below: i + 1)
        p.swapAt(i, j)
      }
    }
    return p
  }
}

