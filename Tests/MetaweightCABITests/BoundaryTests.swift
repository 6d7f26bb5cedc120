import CMetaweight
import Foundation
@testable import MetaweightCABI
import XCTest

/// Label memory that one thread rewrites while another passes it to the C entry points.
private final class SharedLabels: @unchecked Sendable {
  let count: Int
  let pointer: UnsafeMutablePointer<Int64>
  private let stopFlag = UnsafeMutablePointer<Int32>.allocate(capacity: 1)

  init(_ values: [Int64]) {
    count = values.count
    pointer = .allocate(capacity: values.count)
    pointer.initialize(from: values, count: values.count)
    stopFlag.pointee = 0
  }

  deinit {
    pointer.deallocate()
    stopFlag.deallocate()
  }

  var stopped: Bool { racyLoad(stopFlag) != 0 }
  func stop() { racyStore(stopFlag, 1) }

  /// Alternates every label between its valid value and one far outside any class range.
  func hammer(good: [Int64]) {
    while !stopped {
      for i in 0..<count { racyStore64(pointer + i, Int64(Int32.max)) }
      for i in 0..<count { racyStore64(pointer + i, good[i]) }
    }
  }
}

/// Opaque stores and loads (never inlined), so the racing writes and the stop flag are not optimised away.
@inline(never) private func racyStore64(_ p: UnsafeMutablePointer<Int64>, _ v: Int64) { p.pointee = v }
@inline(never) private func racyLoad(_ p: UnsafeMutablePointer<Int32>) -> Int32 { p.pointee }
@inline(never) private func racyStore(_ p: UnsafeMutablePointer<Int32>, _ v: Int32) { p.pointee = v }

/// The C ABI copies every input array into core-owned memory before checking it and never reads
/// the caller's memory again: another thread rewriting the labels during a call gives MW_OK or
/// MW_E_LABEL, never a crash (the core used to check the caller's labels and then re-read them).
final class BoundaryTests: XCTestCase {
  func testRewritingTheLabelsFromAnotherThreadDuringStepAndLossesNeverCrashes() throws {
    let features: Int64 = 64, n = 256
    var shape: [Int64] = [features]
    var net: mw_network = 0
    XCTAssertEqual(mw_network_create("mlp(hidden=256x256, classes=10)", &shape, 1, 1, &net), MW_OK)
    var opt = mw_optimizer_config()
    opt.kind = 0
    opt.lr = 0.01
    opt.beta1 = 0.9
    opt.beta2 = 0.999
    opt.eps = 1e-8
    var tr: mw_trainer = 0
    XCTAssertEqual(mw_trainer_create(net, &opt, nil, 3, &tr), MW_OK)
    defer {
      _ = mw_trainer_free(tr)
      _ = mw_network_free(net)
    }
    let x = (0..<(n * Int(features))).map { Float(sin(Double($0))) }
    let good = (0..<n).map { Int64($0 % 10) }
    let labels = SharedLabels(good)
    let xshape: [Int64] = [Int64(n), features]
    var losses = [Float](repeating: 0, count: n)
    let writer = Thread { labels.hammer(good: good) }
    writer.start()
    defer { labels.stop() }
    var refused = 0, ok = 0
    for i in 0..<150 {
      var result = mw_step_result()
      let s =
        i % 2 == 0
        ? mw_trainer_losses(tr, x, xshape, 2, labels.pointer, Int64(n), &losses)
        : mw_trainer_step(tr, x, xshape, 2, labels.pointer, Int64(n), nil, 0, nil, nil, 0, nil, 0, &result, nil, 0, nil, 0)
      XCTAssertTrue(s == MW_OK || s == MW_E_LABEL, "status \(s): \(String(cString: mw_last_error()))")
      if s == MW_OK {
        ok += 1
        if i % 2 == 0 { XCTAssertTrue(losses.allSatisfy(\.isFinite)) }
      } else {
        refused += 1
      }
    }
    labels.stop()
    while !writer.isFinished { usleep(1000) }
    XCTAssertEqual(ok + refused, 150)
  }
}
