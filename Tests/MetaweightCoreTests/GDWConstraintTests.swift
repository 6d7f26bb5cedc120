import Foundation
@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW
import XCTest

/// GDW's zero-mean constraint ω_it = Σ_{c≠t} ω_ic p_ic / (1 − p_it) near the probability clamp:
/// the denominator computed as Σ_{c≠t} p_c keeps float32 accuracy where 1 − p_t cancels.
final class GDWConstraintTests: XCTestCase {
  /// Rows of 10 logits whose softmax puts p_t between 0.9980 and 0.9989 (below the 0.999 clamp).
  private func rows(_ n: Int, classes c: Int) -> (logits: [Float], labels: [Int32], omega: [Float]) {
    var logits = [Float](repeating: 0, count: n * c)
    var labels = [Int32](repeating: 0, count: n)
    var omega = [Float](repeating: 0, count: n * c)
    for i in 0..<n {
      let t = i % c
      labels[i] = Int32(t)
      // Off-target logits spread around 0; the target's margin gives p_t ≈ 0.9980 ... 0.9989.
      for k in 0..<c { logits[i * c + k] = Float(0.3 * sin(Double(7 * i + 3 * k))) }
      let target = 0.998 + 0.0009 * Double(i) / Double(max(n - 1, 1))
      var rest: Double = 0
      for k in 0..<c where k != t { rest += exp(Double(logits[i * c + k])) }
      logits[i * c + t] = Float(log(target / (1 - target) * rest))
      for k in 0..<c { omega[i * c + k] = Float(0.5 + 0.4 * cos(Double(5 * i + k))) }
    }
    return (logits, labels, omega)
  }

  func testDenominatorAsOffTargetSumMatchesTheClampedFormAndFloat64ReferenceNearTheClamp() throws {
    let n = 64, c = 10
    let clamp: Float = 0.999
    let (logits, labels, omega0) = rows(n, classes: c)
    // Probabilities as the trainer computes them (float32 softmax).
    var probs = [Float](repeating: 0, count: n * c)
    var losses = [Float](repeating: 0, count: n)
    logits.withUnsafeBufferPointer { z in
      labels.withUnsafeBufferPointer { y in
        CrossEntropy.forward(
          logits: z.baseAddress!, labels: y.baseAddress!, n: n, c: c, losses: &losses, probs: &probs)
      }
    }
    var omega = omega0
    omega.withUnsafeMutableBufferPointer { o in
      probs.withUnsafeBufferPointer { p in
        labels.withUnsafeBufferPointer { y in
          GDWConstraint.apply(omega: o.baseAddress!, probs: p.baseAddress!, labels: y.baseAddress!, n: n, classes: c, clamp: clamp)
        }
      }
    }
    var worstNew = 0.0, worstOld = 0.0
    var minPt = 1.0, maxPt = 0.0
    for i in 0..<n {
      let t = Int(labels[i])
      // Float64 reference from the same float32 logits and ω.
      var mx = -Double.infinity
      for k in 0..<c { mx = max(mx, Double(logits[i * c + k])) }
      var e = [Double](repeating: 0, count: c)
      for k in 0..<c { e[k] = exp(Double(logits[i * c + k]) - mx) }
      let s = e.reduce(0, +)
      let p64 = e.map { $0 / s }
      minPt = min(minPt, p64[t])
      maxPt = max(maxPt, p64[t])
      XCTAssertLessThan(p64[t], Double(clamp), "row \(i): p_t stays below the clamp")
      var num64 = 0.0, rest64 = 0.0
      for k in 0..<c where k != t {
        num64 += Double(omega0[i * c + k]) * p64[k]
        rest64 += p64[k]
      }
      let ref = num64 / rest64
      // The earlier float32 form: the same numerator over 1 − min(p_t, clamp).
      var num32: Float = 0
      for k in 0..<c where k != t { num32 += omega0[i * c + k] * min(probs[i * c + k], clamp) }
      let old = num32 / (1 - min(probs[i * c + t], clamp))
      worstOld = max(worstOld, abs(Double(old) - ref) / abs(ref))
      worstNew = max(worstNew, abs(Double(omega[i * c + t]) - ref) / abs(ref))
      // Off-target entries are untouched.
      for k in 0..<c where k != t { XCTAssertEqual(omega[i * c + k], omega0[i * c + k]) }
    }
    print(
      String(
        format: "GDW constraint near p_t in [%.5f, %.5f]: max relative error vs float64: 1 - p_t %.2e, sum of p_c (c != t) %.2e",
        minPt, maxPt, worstOld, worstNew))
    XCTAssertGreaterThan(minPt, 0.9979)
    XCTAssertGreaterThan(maxPt, 0.9988)
    XCTAssertGreaterThan(worstOld, 1e-5, "the cancelling form 1 - p_t should show its error here")
    XCTAssertLessThan(worstNew, 1e-6, "Σ_{c≠t} p_c should keep float32 accuracy")
    XCTAssertLessThan(worstNew * 30, worstOld)
  }

  func testDenominatorClampsLikeOneMinusTheClampedTargetProbability() {
    // p_t above the clamp: the denominator is 1 − clamp, as 1 − min(p_t, clamp).
    let clamp: Float = 0.999
    let high: [Float] = [0.00025, 0.9995, 0.00025]
    high.withUnsafeBufferPointer { p in
      XCTAssertEqual(GDWConstraint.denominator(p.baseAddress!, label: 1, classes: 3, clamp: clamp), 1 - clamp)
    }
    // p_t well below the clamp: Σ_{c≠t} p_c (= 1 − p_t up to rounding).
    let low: [Float] = [0.25, 0.5, 0.25]
    low.withUnsafeBufferPointer { p in
      XCTAssertEqual(GDWConstraint.denominator(p.baseAddress!, label: 1, classes: 3, clamp: clamp), 0.5)
    }
    // Exactly at the clamp (p_t = 0.999 in exact arithmetic) both branches agree to rounding.
    let at: [Float] = [0.0005, 0.999, 0.0005]
    at.withUnsafeBufferPointer { p in
      XCTAssertEqual(GDWConstraint.denominator(p.baseAddress!, label: 1, classes: 3, clamp: clamp), 0.001, accuracy: 1e-9)
    }
  }
}
