import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

/// The seeded generator and the image augmentation.
final class DataTests: XCTestCase {
  // MARK: - RNG

  func testSameSeedGivesTheSameSequence() {
    var a = RNG(seed: 12345), b = RNG(seed: 12345)
    for _ in 0..<1000 { XCTAssertEqual(a.next(), b.next()) }
    XCTAssertEqual(a.stateWords, b.stateWords)
  }

  func testDifferentSeedsGiveDifferentSequences() {
    var a = RNG(seed: 1), b = RNG(seed: 2)
    let sa = (0..<16).map { _ in a.next() }, sb = (0..<16).map { _ in b.next() }
    XCTAssertNotEqual(sa, sb)
    XCTAssertNotEqual(RNG(seed: 0).stateWords, [0, 0, 0, 0], "seed 0 must not give the all-zero state")
  }

  func testRestoringStateWordsContinuesTheSequence() {
    var a = RNG(seed: 77)
    for _ in 0..<10 { _ = a.next() }
    var b = RNG(state: a.stateWords)
    for _ in 0..<100 { XCTAssertEqual(a.next(), b.next()) }
  }

  func testAllZeroStateIsRepairedSoTheGeneratorDoesNotStick() {
    var r = RNG(state: [0, 0, 0, 0])
    let values = (0..<8).map { _ in r.next() }
    XCTAssertGreaterThan(Set(values).count, 1)
  }

  func testKnownFirstOutputsOfXoshiro256StarStar() {
    // xoshiro256** reference: state (1, 2, 3, 4) gives 11520, 0, 1509978240, 1215971899390074240.
    var r = RNG(state: [1, 2, 3, 4])
    XCTAssertEqual(r.next(), 11520)
    XCTAssertEqual(r.next(), 0)
    XCTAssertEqual(r.next(), 1_509_978_240)
    XCTAssertEqual(r.next(), 1_215_971_899_390_074_240)
  }

  func testIntBelowStaysInRangeAndHitsEveryValue() {
    var r = RNG(seed: 3)
    for n in [1, 2, 3, 7, 10, 256, 1000] {
      var seen = Set<Int>()
      for _ in 0..<(n * 40) {
        let v = r.int(below: n)
        XCTAssertTrue((0..<n).contains(v), "int(below: \(n)) gave \(v)")
        seen.insert(v)
      }
      if n <= 256 { XCTAssertEqual(seen.count, n, "int(below: \(n)) should hit every value") }
    }
    for n in [Int.max, 1 << 40, (1 << 62) + 1] {
      for _ in 0..<100 {
        let v = r.int(below: n)
        XCTAssertTrue(v >= 0 && v < n)
      }
    }
  }

  func testIntBelowIsRoughlyUniform() {
    var r = RNG(seed: 9)
    var counts = [Int](repeating: 0, count: 6)
    let draws = 60_000
    for _ in 0..<draws { counts[r.int(below: 6)] += 1 }
    for c in counts { XCTAssertEqual(Double(c), Double(draws) / 6, accuracy: Double(draws) / 6 * 0.05) }
  }

  func testUniformIsInTheHalfOpenUnitInterval() {
    var r = RNG(seed: 4)
    var sum = 0.0
    for _ in 0..<10_000 {
      let f = r.uniform(), d = r.uniformDouble()
      XCTAssertTrue(f >= 0 && f < 1)
      XCTAssertTrue(d >= 0 && d < 1)
      sum += Double(f)
    }
    XCTAssertEqual(sum / 10_000, 0.5, accuracy: 0.02)
  }

  func testNormalHasZeroMeanAndUnitVariance() {
    var r = RNG(seed: 5)
    let xs = (0..<20_000).map { _ in Double(r.normal()) }
    XCTAssertTrue(xs.allSatisfy(\.isFinite))
    let mean = xs.reduce(0, +) / Double(xs.count)
    let variance = xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count)
    XCTAssertEqual(mean, 0, accuracy: 0.03)
    XCTAssertEqual(variance, 1, accuracy: 0.05)
  }

  func testPermutationIsAPermutation() {
    var r = RNG(seed: 6)
    for n in [0, 1, 2, 3, 10, 1000] {
      let p = r.permutation(n)
      XCTAssertEqual(p.count, n)
      XCTAssertEqual(p.sorted(), Array(0..<n), "permutation(\(n)) is not a permutation")
    }
  }

  func testPermutationIsDeterministicPerSeedAndShuffles() {
    var a = RNG(seed: 8), b = RNG(seed: 8), c = RNG(seed: 9)
    let pa = a.permutation(100)
    XCTAssertEqual(pa, b.permutation(100))
    XCTAssertNotEqual(pa, c.permutation(100))
    XCTAssertNotEqual(pa, Array(0..<100))
    XCTAssertNotEqual(pa, a.permutation(100), "successive permutations should differ")
  }

  // MARK: - Augmentation

  private static let n = 6, c = 2, h = 5, w = 7

  /// Distinct non-zero pixel values so any shift or flip is visible.
  private func images() -> [Float] {
    (0..<(Self.n * Self.c * Self.h * Self.w)).map { Float($0 + 1) }
  }

  private func apply(_ aug: Augmentation, _ x: [Float], seed: UInt64) -> [Float] {
    var rng = RNG(seed: seed)
    return apply(aug, x, rng: &rng)
  }

  private func apply(_ aug: Augmentation, _ x: [Float], rng: inout RNG) -> [Float] {
    var out = [Float](repeating: .nan, count: x.count)
    x.withUnsafeBufferPointer { xp in
      out.withUnsafeMutableBufferPointer { op in
        aug.apply(xp.baseAddress!, op.baseAddress!, n: Self.n, c: Self.c, h: Self.h, w: Self.w, rng: &rng)
      }
    }
    return out
  }

  /// Image `b` of `x` flipped (optional) then shifted by (dy, dx) with zero fill.
  private func transformed(_ x: [Float], image b: Int, dy: Int, dx: Int, flip: Bool) -> [Float] {
    let (c, h, w) = (Self.c, Self.h, Self.w)
    var out = [Float](repeating: 0, count: c * h * w)
    for ch in 0..<c {
      for i in 0..<h {
        for j in 0..<w {
          let si = i + dy
          let sj = (flip ? w - 1 - j : j) + dx
          if si >= 0 && si < h && sj >= 0 && sj < w {
            out[(ch * h + i) * w + j] = x[((b * c + ch) * h + si) * w + sj]
          }
        }
      }
    }
    return out
  }

  private func image(_ x: [Float], _ b: Int) -> [Float] {
    let size = Self.c * Self.h * Self.w
    return Array(x[(b * size)..<((b + 1) * size)])
  }

  func testNoPaddingAndNoFlipIsTheIdentityAndDrawsNothing() {
    let aug = Augmentation()
    XCTAssertTrue(aug.isIdentity)
    let x = images()
    var rng = RNG(seed: 1)
    let before = rng.stateWords
    XCTAssertEqual(apply(aug, x, rng: &rng), x)
    XCTAssertEqual(rng.stateWords, before)
  }

  func testFlipMirrorsSomeImagesAndKeepsTheOthers() {
    var aug = Augmentation()
    aug.horizontalFlip = true
    XCTAssertFalse(aug.isIdentity)
    let x = images()
    var kept = 0, mirrored = 0
    for seed: UInt64 in 0..<20 {
      let y = apply(aug, x, seed: seed)
      for b in 0..<Self.n {
        let img = image(y, b)
        if img == image(x, b) {
          kept += 1
        } else {
          XCTAssertEqual(img, transformed(x, image: b, dy: 0, dx: 0, flip: true), "seed \(seed) image \(b) is neither kept nor mirrored")
          mirrored += 1
        }
      }
    }
    // Each image flips with probability 1/2: over 120 draws both outcomes must occur often.
    XCTAssertGreaterThan(kept, 30)
    XCTAssertGreaterThan(mirrored, 30)
  }

  func testFlippingTwiceWithTheSameDrawsRestoresTheImages() {
    var aug = Augmentation()
    aug.horizontalFlip = true
    let x = images()
    for seed: UInt64 in 0..<10 {
      let once = apply(aug, x, seed: seed)
      XCTAssertEqual(apply(aug, once, seed: seed), x, "seed \(seed)")
    }
  }

  func testMirroringIsItsOwnInverse() {
    let x = images()
    for b in 0..<Self.n {
      var mirrored = x
      let once = transformed(x, image: b, dy: 0, dx: 0, flip: true)
      let size = Self.c * Self.h * Self.w
      mirrored.replaceSubrange((b * size)..<((b + 1) * size), with: once)
      XCTAssertEqual(transformed(mirrored, image: b, dy: 0, dx: 0, flip: true), image(x, b))
    }
  }

  func testCropKeepsShapeAndIsAShiftWithinThePadding() {
    for flip in [false, true] {
      var aug = Augmentation()
      aug.cropPadding = 2
      aug.horizontalFlip = flip
      let x = images()
      let y = apply(aug, x, seed: 3)
      XCTAssertEqual(y.count, x.count)
      XCTAssertFalse(y.contains { $0.isNaN }, "every output element must be written")
      for b in 0..<Self.n {
        let img = image(y, b)
        var matches = false
        for dy in -2...2 {
          for dx in -2...2 {
            for f in flip ? [false, true] : [false] where img == transformed(x, image: b, dy: dy, dx: dx, flip: f) {
              matches = true
            }
          }
        }
        XCTAssertTrue(matches, "image \(b) is not a shift within ±2 (flip \(flip)) of the input")
      }
    }
  }

  func testCropIsDeterministicPerSeed() {
    var aug = Augmentation()
    aug.cropPadding = 3
    aug.horizontalFlip = true
    let x = images()
    XCTAssertEqual(apply(aug, x, seed: 42), apply(aug, x, seed: 42))
    let outputs = Set((0..<8).map { apply(aug, x, seed: UInt64($0)) })
    XCTAssertGreaterThan(outputs.count, 1, "different seeds should give different crops")
  }

  func testCropWithPaddingUsesTheWholeShiftRange() {
    var aug = Augmentation()
    aug.cropPadding = 1
    let x = images()
    var shifts = Set<[Int]>()
    var rng = RNG(seed: 11)
    for _ in 0..<30 {
      let y = apply(aug, x, rng: &rng)
      for b in 0..<Self.n {
        for dy in -1...1 {
          for dx in -1...1 where image(y, b) == transformed(x, image: b, dy: dy, dx: dx, flip: false) {
            shifts.insert([dy, dx])
          }
        }
      }
    }
    XCTAssertEqual(shifts.count, 9, "all 3×3 shifts should occur, got \(shifts)")
  }
}
