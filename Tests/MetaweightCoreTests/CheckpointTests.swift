import Foundation
import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

/// The checkpoint file format (sections, CRC-32, version, atomic write) and exact resumption of a
/// `Trainer` from its checkpoint.
final class CheckpointTests: XCTestCase {
  private var directory: URL!

  override func setUpWithError() throws {
    directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("metaweight-checkpoint-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    if let d = directory { try? FileManager.default.removeItem(at: d) }
  }

  private func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

  /// A checkpoint with every section type, including empty and extreme values.
  private func sample() -> Checkpoint {
    var ck = Checkpoint()
    ck.floats["weights"] = [0, -0.0, 1.5, -3.25e-7, .greatestFiniteMagnitude, .leastNonzeroMagnitude, .infinity, -.infinity]
    ck.floats["empty.floats"] = []
    ck.ints["counters"] = [0, 1, -1, .max, .min, 42]
    ck.ints["empty.ints"] = []
    ck.bytes["blob"] = [0, 255, 128, 7, 0xC3]  // not valid UTF-8 on purpose
    ck.bytes["empty.bytes"] = []
    ck.setString("name", "résumé ✓ 网络")
    return ck
  }

  private func assertSameContents(_ a: Checkpoint, _ b: Checkpoint, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(Set(a.floats.keys), Set(b.floats.keys), file: file, line: line)
    for (k, v) in a.floats {
      XCTAssertEqual(v.map(\.bitPattern), b.floats[k]?.map(\.bitPattern), "float section \(k)", file: file, line: line)
    }
    XCTAssertEqual(a.ints, b.ints, file: file, line: line)
    XCTAssertEqual(a.bytes, b.bytes, file: file, line: line)
  }

  /// Asserts that decoding `data` throws `MetaweightError.io` whose message contains `needle`.
  private func assertDecodeFails(
    _ data: [UInt8], mentioning needle: String, file: StaticString = #filePath, line: UInt = #line
  ) {
    do {
      _ = try Checkpoint(decoding: data)
      XCTFail("decoding should fail (\(needle))", file: file, line: line)
    } catch MetaweightError.io(let msg) {
      XCTAssertTrue(
        msg.lowercased().contains(needle), "message '\(msg)' should mention '\(needle)'", file: file, line: line)
    } catch {
      XCTFail("expected MetaweightError.io, got \(error)", file: file, line: line)
    }
  }

  /// Replaces the trailing CRC so that only the intended defect remains.
  private func resealed(_ data: [UInt8]) -> [UInt8] {
    var d = Array(data.dropLast(4))
    withUnsafeBytes(of: CRC32.checksum(d).littleEndian) { d += $0 }
    return d
  }

  // MARK: - Format

  func testCRC32MatchesTheStandardCheckValue() {
    XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)
    XCTAssertEqual(CRC32.checksum([UInt8]()), 0)
  }

  func testEverySectionTypeRoundTripsInMemory() throws {
    let ck = sample()
    let decoded = try Checkpoint(decoding: ck.encoded())
    assertSameContents(ck, decoded)
    XCTAssertEqual(decoded.string("name"), "résumé ✓ 网络")
    XCTAssertNil(decoded.string("missing"))
  }

  func testEverySectionTypeRoundTripsThroughAFile() throws {
    let ck = sample()
    let p = path("sample.mwckpt")
    try ck.write(to: p)
    assertSameContents(ck, try Checkpoint.read(from: p))
  }

  func testEmptyCheckpointRoundTrips() throws {
    let decoded = try Checkpoint(decoding: Checkpoint().encoded())
    XCTAssertTrue(decoded.floats.isEmpty && decoded.ints.isEmpty && decoded.bytes.isEmpty)
  }

  func testEncodingIsDeterministicAndStartsWithMagicAndVersion() {
    let a = sample().encoded(), b = sample().encoded()
    XCTAssertEqual(a, b)
    XCTAssertEqual(Array(a[0..<8]), Array("MWCKPT".utf8) + [0, 0])
    XCTAssertEqual(Array(a[8..<12]), [UInt8(Checkpoint.version), 0, 0, 0])
  }

  func testTruncatedFileThrowsIOErrorNamingTruncation() {
    let data = sample().encoded()
    for length in [0, 1, 7, 8, 12, 19, 20, 21, data.count / 2, data.count - 5, data.count - 1] {
      assertDecodeFails(Array(data.prefix(length)), mentioning: "truncated")
    }
  }

  func testTruncatedFileOnDiskThrowsIOError() throws {
    let data = sample().encoded()
    let p = path("cut.mwckpt")
    try Data(data.prefix(data.count - 10)).write(to: URL(fileURLWithPath: p))
    XCTAssertThrowsError(try Checkpoint.read(from: p)) { error in
      guard case MetaweightError.io(let msg) = error else { return XCTFail("expected .io, got \(error)") }
      XCTAssertTrue(msg.contains("truncated"), msg)
    }
  }

  func testFlippedPayloadByteFailsTheChecksum() {
    var data = sample().encoded()
    data[data.count / 2] ^= 0x10
    assertDecodeFails(data, mentioning: "checksum")
  }

  func testFlippedStoredChecksumFailsTheChecksum() {
    var data = sample().encoded()
    data[data.count - 1] ^= 0x01
    assertDecodeFails(data, mentioning: "checksum")
  }

  func testEveryFlippedByteIsRejectedWithAnIOError() {
    let data = sample().encoded()
    for i in 0..<data.count {
      var d = data
      d[i] ^= 0x5A
      XCTAssertThrowsError(try Checkpoint(decoding: d), "flip at byte \(i)") { error in
        guard case MetaweightError.io = error else { return XCTFail("byte \(i): expected .io, got \(error)") }
      }
    }
  }

  func testWrongMagicThrowsIOErrorNamingMagic() {
    var data = sample().encoded()
    data[0] = UInt8(ascii: "X")
    assertDecodeFails(data, mentioning: "magic")
    assertDecodeFails(resealed(data), mentioning: "magic")
    assertDecodeFails([UInt8](repeating: 0, count: 64), mentioning: "magic")
  }

  func testWrongVersionThrowsIOErrorNamingVersion() {
    var data = sample().encoded()
    data[8] = UInt8(Checkpoint.version + 1)
    let d = resealed(data)
    assertDecodeFails(d, mentioning: "version")
    assertDecodeFails(d, mentioning: "\(Checkpoint.version + 1)")
  }

  func testSectionCountBeyondTheDataIsReportedAsTruncated() {
    var data = Checkpoint().encoded()
    data[12] = 3  // claims 3 sections, has none
    assertDecodeFails(resealed(data), mentioning: "truncated")
  }

  func testUnknownSectionTypeIsReportedAsCorrupted() {
    var ck = Checkpoint()
    ck.ints["x"] = [1]
    var data = ck.encoded()
    // header: magic 8 · version 4 · count 4 · name length 4 · "x" 1 · type at offset 21
    XCTAssertEqual(data[21], 2)
    data[21] = 9
    assertDecodeFails(resealed(data), mentioning: "unknown type")
  }

  func testMissingFileThrowsIOErrorNamingThePath() {
    let p = path("does-not-exist.mwckpt")
    XCTAssertThrowsError(try Checkpoint.read(from: p)) { error in
      guard case MetaweightError.io(let msg) = error else { return XCTFail("expected .io, got \(error)") }
      XCTAssertTrue(msg.contains(p), msg)
    }
  }

  func testRequireHelpersNameTheMissingOrMismatchedSection() throws {
    let ck = sample()
    XCTAssertEqual(try ck.requireInts("counters", count: 6).count, 6)
    XCTAssertThrowsError(try ck.requireFloats("nope")) { e in
      guard case MetaweightError.io(let m) = e else { return XCTFail("\(e)") }
      XCTAssertTrue(m.contains("'nope'"), m)
    }
    XCTAssertThrowsError(try ck.requireFloats("weights", count: 3)) { e in
      guard case MetaweightError.io(let m) = e else { return XCTFail("\(e)") }
      XCTAssertTrue(m.contains("'weights'") && m.contains("expected 3"), m)
    }
    XCTAssertThrowsError(try ck.requireInts("counters", count: 1)) { e in
      guard case MetaweightError.io(let m) = e else { return XCTFail("\(e)") }
      XCTAssertTrue(m.contains("'counters'"), m)
    }
  }

  // MARK: - Atomic write

  func testAtomicWriteLeavesNoTemporaryFile() throws {
    let p = path("model.mwckpt")
    try sample().write(to: p)
    var other = Checkpoint()
    other.ints["second"] = [2]
    try other.write(to: p)  // overwrite an existing file
    let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
    XCTAssertEqual(names, ["model.mwckpt"], "left-over files: \(names)")
    assertSameContents(other, try Checkpoint.read(from: p))
  }

  func testWriteIntoAMissingDirectoryThrowsIOErrorAndCreatesNothing() throws {
    let p = path("no/such/dir/model.mwckpt")
    XCTAssertThrowsError(try sample().write(to: p)) { error in
      guard case MetaweightError.io(let msg) = error else { return XCTFail("expected .io, got \(error)") }
      XCTAssertTrue(msg.contains("no/such/dir"), msg)
    }
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), [])
  }

  func testFailedRenameRemovesTheTemporaryFile() throws {
    // Target is a directory: the rename fails; the temp file must be cleaned up.
    let target = path("occupied")
    try FileManager.default.createDirectory(atPath: target + "/inner", withIntermediateDirectories: true)
    XCTAssertThrowsError(try sample().write(to: target))
    let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
    XCTAssertEqual(names, ["occupied"], "left-over files: \(names)")
  }

  func testConcurrentWritesToOnePathFromTwoThreadsLeaveOneValidFile() throws {
    // The C ABI lets different objects be used from different threads at once; two saves to
    // the same path must not share a temporary file.
    let p = path("shared.mwckpt")
    var a = Checkpoint(), b = Checkpoint()
    a.floats["v"] = [Float](repeating: 1, count: 200_000)
    b.floats["v"] = [Float](repeating: 2, count: 200_000)
    final class Failures: @unchecked Sendable {
      let lock = NSLock()
      var messages: [String] = []
      func add(_ m: String) { lock.lock(); messages.append(m); lock.unlock() }
    }
    let failures = Failures()
    let group = DispatchGroup()
    for ck in [a, b] {
      let c = ck
      group.enter()
      Thread {
        for _ in 0..<20 {
          do { try c.write(to: p) } catch { failures.add("\(error)") }
        }
        group.leave()
      }.start()
    }
    XCTAssertEqual(group.wait(timeout: .now() + 120), .success)
    XCTAssertEqual(failures.messages, [])
    let back = try Checkpoint.read(from: p)
    let v = try back.requireFloats("v", count: 200_000)
    XCTAssertTrue(v.allSatisfy { $0 == v[0] } && (v[0] == 1 || v[0] == 2))
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["shared.mwckpt"])
  }

  // MARK: - Trainer checkpoints

  private static let inputs = 5, classes = 3, batch = 8

  private func makeTrainer(
    hidden: [Int] = [16, 12], netSeed: UInt64, trainerSeed: UInt64, optimizer: OptimizerConfig, dropout: Float = 0.25
  ) throws -> Trainer {
    let widths = [Self.inputs] + hidden + [Self.classes]
    let net = try Network(Models.mlp(widths: widths, dropout: dropout), seed: netSeed)
    var sched = Schedule(baseLR: 0.05)
    sched.kind = .cosine
    sched.totalSteps = 20
    sched.warmupSteps = 2
    return try Trainer(network: net, optimizer: optimizer, schedule: sched, seed: trainerSeed)
  }

  private func batch(_ seed: UInt64) -> (x: [Float], y: [Int64]) {
    var rng = RNG(seed: seed)
    let x = (0..<(Self.batch * Self.inputs)).map { _ in rng.normal() }
    let y = (0..<Self.batch).map { _ in Int64(rng.int(below: Self.classes)) }
    return (x, y)
  }

  @discardableResult
  private func step(_ tr: Trainer, _ b: (x: [Float], y: [Int64])) throws -> StepResult {
    try b.x.withUnsafeBufferPointer { xp in
      try b.y.withUnsafeBufferPointer { yp in
        try tr.step(x: xp.baseAddress!, n: Self.batch, labels: yp.baseAddress!)
      }
    }
  }

  /// Everything `restore` may touch, for "nothing changed" checks.
  private struct Snapshot: Equatable {
    var params: [UInt32], state: [UInt32], first: [UInt32], second: [UInt32]
    var steps: Int64, dropout: [UInt64], data: [UInt64]
    init(_ t: Trainer) {
      params = t.network.params.array.map(\.bitPattern)
      state = t.network.state.array.map(\.bitPattern)
      first = t.optimizer.first.array.map(\.bitPattern)
      second = t.optimizer.second.array.map(\.bitPattern)
      steps = t.stepCount
      dropout = t.dropoutRNG.rng.stateWords
      data = t.dataRNG.stateWords
    }
  }

  private func checkResumesBitIdentically(_ opt: OptimizerConfig, viaFile: Bool) throws {
    let a = try makeTrainer(netSeed: 1, trainerSeed: 11, optimizer: opt)
    for s in 0..<3 { try step(a, batch(100 + UInt64(s))) }
    var ck = a.checkpoint()
    if viaFile {
      let p = path("resume.mwckpt")
      try ck.write(to: p)
      ck = try Checkpoint.read(from: p)
    }
    let b = try makeTrainer(netSeed: 2, trainerSeed: 22, optimizer: opt)
    XCTAssertNotEqual(Snapshot(a), Snapshot(b))
    try b.restore(ck)
    XCTAssertEqual(Snapshot(a), Snapshot(b))
    XCTAssertEqual(a.currentLearningRate, b.currentLearningRate)

    let next = batch(999)
    let ra = try step(a, next)
    let rb = try step(b, next)
    XCTAssertEqual(ra.loss, rb.loss)
    XCTAssertEqual(ra.learningRate, rb.learningRate)
    XCTAssertEqual(ra.step, 4)
    XCTAssertEqual(rb.step, 4)
    XCTAssertEqual(a.network.params.array.map(\.bitPattern), b.network.params.array.map(\.bitPattern))
    XCTAssertEqual(Snapshot(a), Snapshot(b))
    XCTAssertEqual(a.permutation(50), b.permutation(50))
  }

  func testTrainerRestoreResumesSGDMomentumBitIdentically() throws {
    var o = OptimizerConfig()
    o.momentum = 0.9
    o.nesterov = true
    o.weightDecay = 5e-4
    try checkResumesBitIdentically(o, viaFile: false)
  }

  func testTrainerRestoreFromFileResumesAdamBitIdentically() throws {
    var o = OptimizerConfig()
    o.kind = .adam
    o.weightDecay = 1e-2
    o.decoupled = true
    try checkResumesBitIdentically(o, viaFile: true)
  }

  func testTrainerRestoreIntoDifferentArchitectureThrowsAndChangesNothing() throws {
    var o = OptimizerConfig()
    o.momentum = 0.9
    let a = try makeTrainer(netSeed: 1, trainerSeed: 1, optimizer: o)
    try step(a, batch(5))
    let ck = a.checkpoint()
    let other = try makeTrainer(hidden: [16, 10], netSeed: 3, trainerSeed: 3, optimizer: o)
    try step(other, batch(6))
    let before = Snapshot(other)
    XCTAssertThrowsError(try other.restore(ck)) { error in
      guard case MetaweightError.io(let msg) = error else { return XCTFail("expected .io, got \(error)") }
      XCTAssertTrue(msg.contains("architecture"), msg)
    }
    XCTAssertEqual(Snapshot(other), before)
  }

  func testTrainerRestoreWithSameSignatureButWrongSizesThrowsAndChangesNothing() throws {
    var o = OptimizerConfig()
    o.momentum = 0.9
    let a = try makeTrainer(netSeed: 1, trainerSeed: 1, optimizer: o)
    var ck = a.checkpoint()
    ck.floats["network.params"] = Array((ck.floats["network.params"] ?? []).dropLast())
    let b = try makeTrainer(netSeed: 2, trainerSeed: 2, optimizer: o)
    let before = Snapshot(b)
    XCTAssertThrowsError(try b.restore(ck)) { error in
      guard case MetaweightError.io(let msg) = error else { return XCTFail("expected .io, got \(error)") }
      XCTAssertTrue(msg.contains("network.params"), msg)
    }
    XCTAssertEqual(Snapshot(b), before)
  }

  func testTrainerRestoreWithDifferentOptimizerKindThrowsAndChangesNothing() throws {
    var sgd = OptimizerConfig()
    sgd.momentum = 0.9
    var adam = OptimizerConfig()
    adam.kind = .adam
    let a = try makeTrainer(netSeed: 1, trainerSeed: 1, optimizer: sgd)
    try step(a, batch(1))
    let b = try makeTrainer(netSeed: 1, trainerSeed: 1, optimizer: adam)
    let before = Snapshot(b)
    XCTAssertThrowsError(try b.restore(a.checkpoint())) { error in
      guard case MetaweightError.io(let msg) = error else { return XCTFail("expected .io, got \(error)") }
      XCTAssertTrue(msg.contains("optimizer"), msg)
    }
    XCTAssertEqual(Snapshot(b), before)
  }

  func testTrainerRestoreWithoutMomentumStateThrowsAndChangesNothing() throws {
    let plain = OptimizerConfig()
    var momentum = OptimizerConfig()
    momentum.momentum = 0.9
    let a = try makeTrainer(netSeed: 1, trainerSeed: 1, optimizer: plain)
    try step(a, batch(1))
    let b = try makeTrainer(netSeed: 1, trainerSeed: 1, optimizer: momentum)
    try step(b, batch(2))
    let before = Snapshot(b)
    XCTAssertThrowsError(try b.restore(a.checkpoint())) { error in
      guard case MetaweightError.io(let msg) = error else { return XCTFail("expected .io, got \(error)") }
      XCTAssertTrue(msg.contains("optimizer.first"), msg)
    }
    XCTAssertEqual(Snapshot(b), before)
  }
}

// MARK: - LAW search checkpoints and cancellation

final class LAWSearchCheckpointTests: XCTestCase {
  private func data(n: Int, nVal: Int, seed: UInt64) -> LAWData {
    var rng = RNG(seed: seed)
    func sample(_ count: Int) -> ([Float], [Int64]) {
      var x: [Float] = [], y: [Int64] = []
      for _ in 0..<count {
        let c = rng.int(below: 3)
        for j in 0..<6 { x.append(rng.normal() * 0.7 + (j % 3 == c ? 2 : 0)) }
        y.append(Int64(rng.uniform() < 0.3 ? (c + 1) % 3 : c))
      }
      return (x, y)
    }
    let (x, y) = sample(n)
    let (vx, vy) = sample(nVal)
    return LAWData(x: x, y: y, corrupted: nil, valX: vx, valY: vy)
  }

  private func config() throws -> LAWConfig {
    var c = LAWConfig()
    c.stages = 3
    c.warmupStages = 1
    c.parallel = 2
    c.epochs = 4
    c.batchSize = 16
    c.embeddingDim = 4
    c.actorHidden = 8
    c.criticHidden = 8
    c.fduEpochs = 2
    c.fduBatch = 4
    try c.validate()
    return c
  }

  private func search() throws -> LAWSearch {
    try LAWSearch(config: try config(), networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: 9)
  }

  /// Stages to run: 3 rounds of 3 stages.
  private let totalStages = 9

  func testCancellingMidStageAndRestoringIntoANewSearchFinishesBitIdentically() throws {
    let d = data(n: 96, nVal: 30, seed: 1)
    let full = try search()
    try full.setData(d)
    for _ in 0..<totalStages { _ = try full.runStage() }
    let expected = full.checkpoint().encoded()

    var s = try search()
    try s.setData(d)
    var finished = 0, cancels = 0, checks = 3
    while finished < totalStages {
      s.cancellation.arm(afterChecks: checks)
      checks = checks * 7 % 23 + 2  // a spread of interruption points, some inside stages
      do {
        _ = try s.runStage()
        finished += 1
      } catch is LAWCancelledError {
        cancels += 1
        XCTAssertEqual(s.nextStage, finished % 3, "an interrupted stage is not counted as done")
        // Every other time, move to a new search object through a file-less checkpoint.
        if cancels % 2 == 0 {
          let ck = try Checkpoint(decoding: s.checkpoint().encoded())
          let t = try search()
          try t.restore(ck)
          try t.setData(d)  // same data: the round in progress continues
          s = t
        }
      }
      s.cancellation.set(false)
    }
    XCTAssertGreaterThan(cancels, 3)
    XCTAssertEqual(s.checkpoint().encoded(), expected)
  }

  func testRestoredRoundWithDifferentDataIsAbandonedAndSearchGoesOn() throws {
    let s = try search()
    try s.setData(data(n: 96, nVal: 30, seed: 1))
    _ = try s.runStage()
    let ck = s.checkpoint()
    let t = try search()
    try t.restore(ck)
    XCTAssertThrowsError(try t.runStage())  // no data yet: names what is missing
    try t.setData(data(n: 96, nVal: 30, seed: 2))
    XCTAssertEqual(t.nextStage, 0)
    XCTAssertEqual(t.round, 1)
    _ = try t.runStage()
  }

  func testRestoringAMismatchingSearchCheckpointThrowsAndChangesNothing() throws {
    let s = try search()
    try s.setData(data(n: 96, nVal: 30, seed: 1))
    _ = try s.runStage()
    let ck = s.checkpoint()
    let other = try LAWSearch(config: try config(), networkSpec: "mlp(hidden=8, classes=3)", inputLayout: .flat(6), seed: 10)
    let before = other.checkpoint().encoded()
    XCTAssertThrowsError(try other.restore(ck)) { XCTAssertTrue("\($0)".contains("seed mismatch"), "\($0)") }
    var broken = ck
    broken.floats["law.agent.critic"] = [1, 2, 3]
    let same = try search()
    let before2 = same.checkpoint().encoded()
    XCTAssertThrowsError(try same.restore(broken)) { XCTAssertTrue("\($0)".contains("law.agent.critic"), "\($0)") }
    XCTAssertEqual(other.checkpoint().encoded(), before)
    XCTAssertEqual(same.checkpoint().encoded(), before2)
  }
}
