import Foundation
import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

#if canImport(Glibc)
  import Glibc
#endif

/// No undefined behaviour and no abort on hostile input: special files and hostile checkpoint
/// contents are refused with an io error and change nothing, over-limit allocations throw
/// `MetaweightError.resource`, a step whose batch-norm statistics overflow is rolled back, and a
/// killed save's temporary file is removed by the next save.
final class HardeningTests: XCTestCase {
  private var directory: URL!

  override func setUpWithError() throws {
    directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("metaweight-hardening-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    if let d = directory { try? FileManager.default.removeItem(at: d) }
  }

  private func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

  /// Asserts that `body` throws `MetaweightError.io` whose message contains every needle.
  private func assertIOError(
    _ needles: [String], file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void
  ) {
    do {
      try body()
      XCTFail("expected an io error mentioning \(needles)", file: file, line: line)
    } catch MetaweightError.io(let m) {
      for n in needles { XCTAssertTrue(m.contains(n), "'\(m)' should mention '\(n)'", file: file, line: line) }
    } catch {
      XCTFail("expected MetaweightError.io, got \(error)", file: file, line: line)
    }
  }

  private func adamTrainer(batchNorm: Bool = false) throws -> Trainer {
    let net = try Network(Models.mlp(widths: [4, 16, 3], batchNorm: batchNorm), seed: 1)
    var opt = OptimizerConfig()
    opt.kind = .adam
    return try Trainer(network: net, optimizer: opt, schedule: Schedule(baseLR: 0.01), seed: 2)
  }

  private func step(_ tr: Trainer, scale: Float = 1, seed: UInt64 = 3) throws -> StepResult {
    var rng = RNG(seed: seed)
    let x = (0..<32).map { i in scale * (i % 2 == 0 ? 1 : -1) * (1 + rng.uniform()) }
    let y: [Int64] = (0..<8).map { Int64($0 % 3) }
    return try x.withUnsafeBufferPointer { xp in
      try y.withUnsafeBufferPointer { yp in try tr.step(x: xp.baseAddress!, n: 8, labels: yp.baseAddress!) }
    }
  }

  private struct Snapshot: Equatable {
    var params: [Float], state: [Float], first: [Float], second: [Float], steps: Int64
    init(_ tr: Trainer) {
      params = tr.network.params.array
      state = tr.network.state.array
      first = tr.optimizer.first.array
      second = tr.optimizer.second.array
      steps = tr.stepCount
    }
  }

  // MARK: - Special files

  func testReadingAFIFORefusesBeforeOpeningAndDoesNotHang() throws {
    let p = path("ck.fifo")
    XCTAssertEqual(mkfifo(p, 0o600), 0)
    assertIOError(["FIFO", p]) { _ = try Checkpoint.read(from: p) }
  }

  func testReadingDevZeroDevNullAProcFileOrADirectoryIsAnIOErrorNamingThePath() throws {
    for p in ["/dev/zero", "/dev/null", "/proc/self/status", directory.path] where FileManager.default.fileExists(atPath: p) {
      assertIOError([p]) { _ = try Checkpoint.read(from: p) }
    }
  }

  func testADeclaredSectionSizeLargerThanTheRemainingBytesIsAnErrorNotAnAllocation() throws {
    var ck = Checkpoint()
    ck.floats["a"] = [1, 2, 3]
    var data = ck.encoded()
    // magic 8 · version 4 · count 4 · name length 4 · "a" 1 · type 1 → element count at 22.
    withUnsafeBytes(of: UInt64(Int32.max - 1).littleEndian) { for i in 0..<8 { data[22 + i] = $0[i] } }
    let crc = CRC32.checksum(data[0..<(data.count - 4)])
    withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { data[data.count - 4 + i] = $0[i] } }
    XCTAssertThrowsError(try Checkpoint(decoding: data)) { e in
      guard case MetaweightError.io(let m) = e else { return XCTFail("\(e)") }
      XCTAssertTrue(m.contains("declares"), m)
    }
  }

  // MARK: - Semantic validation of checkpoints

  func testRestoreRefusesANegativeAdamSecondMomentAndChangesNothing() throws {
    let tr = try adamTrainer()
    _ = try step(tr)
    var ck = tr.checkpoint()
    ck.floats["optimizer.second"]?[0] = -1
    _ = try step(tr, seed: 9)
    let before = Snapshot(tr)
    assertIOError(["optimizer.second"]) { try tr.restore(ck) }
    XCTAssertEqual(Snapshot(tr), before)
  }

  func testRestoreRefusesNonFiniteParameters() throws {
    let tr = try adamTrainer()
    var ck = tr.checkpoint()
    ck.floats["network.params"]?[0] = .nan
    let before = Snapshot(tr)
    assertIOError(["network.params"]) { try tr.restore(ck) }
    XCTAssertEqual(Snapshot(tr).params.map(\.bitPattern), before.params.map(\.bitPattern))
  }

  func testRestoreRefusesStepCountersOutside0To2Pow53() throws {
    let tr = try adamTrainer()
    _ = try step(tr)
    for bad in [Int64.max, -1, Checkpoint.maxCounter + 1] {
      var ck = tr.checkpoint()
      ck.ints["optimizer.steps"] = [bad]
      assertIOError(["optimizer.steps"]) { try tr.restore(ck) }
      XCTAssertEqual(tr.stepCount, 1)
    }
    var ok = tr.checkpoint()
    ok.ints["optimizer.steps"] = [Checkpoint.maxCounter]
    try tr.restore(ok)
    XCTAssertEqual(tr.stepCount, Checkpoint.maxCounter)
  }

  func testReplayBufferRestoreRefusesTheWrongActionWidthAndOutOfRangeStages() throws {
    var b = LAWReplayBuffer(capacity: 4)
    let s = LAWStageState(stage: 1, lossSmooth: 0.5, accSmooth: 0.5)
    for _ in 0..<3 { b.append(LAWTransition(state: s, action: [0.1, 0.2, 0.3], reward: 1, next: s, done: false)) }
    var ck = Checkpoint()
    b.save(into: &ck, prefix: "law.buffer.")
    var other = LAWReplayBuffer(capacity: 4)
    assertIOError(["3 values", "have 2"]) { try other.restore(ck, prefix: "law.buffer.", actionWidth: 2, stages: 4) }
    XCTAssertEqual(other.count, 0)
    assertIOError(["stage 1", "0..<1"]) { try other.restore(ck, prefix: "law.buffer.", actionWidth: 3, stages: 1) }
    try other.restore(ck, prefix: "law.buffer.", actionWidth: 3, stages: 4)
    XCTAssertEqual(other.count, 3)
    ck.floats["law.buffer.actions"]?[4] = .infinity
    var third = LAWReplayBuffer(capacity: 4)
    assertIOError(["NaN or infinite"]) { try third.restore(ck, prefix: "law.buffer.", actionWidth: 3, stages: 4) }
  }

  // MARK: - Allocation limits

  func testFloatBufferAllocatingOverTheLimitThrowsResourceInsteadOfAborting() {
    XCTAssertThrowsError(try FloatBuffer(allocating: Memory.maxAllocationBytes / 4 + 1, what: "test buffer")) { e in
      guard case MetaweightError.resource(let m) = e else { return XCTFail("\(e)") }
      XCTAssertTrue(m.contains("test buffer") && m.contains("over the limit"), m)
    }
    XCTAssertThrowsError(try FloatBuffer(allocating: Int.max, what: "overflowing buffer"))
    XCTAssertEqual(try FloatBuffer(allocating: 10, what: "small").count, 10)
  }

  func testTrainerForANetworkWhoseActivationsExceedTheLimitThrowsResource() throws {
    // Three 64-channel convolutions over one 8192×8192 image: ~48 GiB of activations per example.
    let spec = "conv(out=64, k=3, p=1); conv(out=64, k=3, p=1); conv(out=64, k=3, p=1); gap; linear(out=10)"
    let net = try Network(try SpecParser.parse(spec, input: .image(c: 1, h: 8192, w: 8192)), seed: 0)
    XCTAssertGreaterThan(net.activationFloatsPerExample * 4, Memory.maxAllocationBytes)
    XCTAssertThrowsError(try Trainer(network: net, optimizer: OptimizerConfig(), schedule: Schedule(baseLR: 0.1), seed: 0)) { e in
      guard case MetaweightError.resource(let m) = e else { return XCTFail("\(e)") }
      XCTAssertTrue(m.contains("trainer"), m)
    }
  }

  // MARK: - Batch-norm statistics

  func testAStepWhoseBatchNormRunningVarianceWouldOverflowIsNonFiniteAndRolledBack() throws {
    let tr = try adamTrainer(batchNorm: true)
    _ = try step(tr)
    let before = Snapshot(tr)
    // Finite inputs whose variance overflows Float: 3e38 in magnitude.
    XCTAssertThrowsError(try step(tr, scale: 1.5e38)) { e in
      guard case MetaweightError.nonFinite(let m) = e else { return XCTFail("\(e)") }
      XCTAssertTrue(m.contains("running statistic"), m)
    }
    XCTAssertEqual(Snapshot(tr), before)
    XCTAssertTrue(tr.network.state.array.allSatisfy(\.isFinite))
    _ = try step(tr, seed: 5)  // trains on
    XCTAssertEqual(tr.stepCount, 2)
  }

  func testARefusedStepLeavesTheDropoutAndDataGeneratorsWhereTheyWere() throws {
    let net = try Network(Models.mlp(widths: [4, 16, 3], batchNorm: true, dropout: 0.2), seed: 1)
    let tr = try Trainer(network: net, optimizer: OptimizerConfig(), schedule: Schedule(baseLR: 0.01), seed: 2)
    _ = try step(tr)
    let dropout = tr.dropoutRNG.rng.stateWords, data = tr.dataRNG.stateWords
    XCTAssertThrowsError(try step(tr, scale: 1.5e38))  // the forward pass draws a dropout mask, then fails
    XCTAssertEqual(tr.dropoutRNG.rng.stateWords, dropout)
    XCTAssertEqual(tr.dataRNG.stateWords, data)
    // A retried step draws exactly what a step without the refused one would have drawn.
    let twin = try Trainer(
      network: try Network(Models.mlp(widths: [4, 16, 3], batchNorm: true, dropout: 0.2), seed: 1),
      optimizer: OptimizerConfig(), schedule: Schedule(baseLR: 0.01), seed: 2)
    _ = try step(twin)
    _ = try step(tr, seed: 5)
    _ = try step(twin, seed: 5)
    XCTAssertEqual(tr.network.params.array, twin.network.params.array)
  }

  // MARK: - Temporary files

  func testASaveRemovesTheTemporaryFilesOfAKilledSaveToThatPath() throws {
    let p = path("ck.mwckpt")
    // A process id that is not running: a child that has exited and been reaped.
    var pid: pid_t = 0
    var argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
    defer { for a in argv { free(a) } }
    XCTAssertEqual(posix_spawn(&pid, "/bin/true", nil, nil, &argv, environ), 0)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    let stale = "\(p).tmp.\(pid).140737353951040"
    let live = "\(p).tmp.\(getpid()).7"  // this process: may be a concurrent save
    let unrelated = path("other.mwckpt.tmp.\(pid).1")
    for f in [stale, live, unrelated] { XCTAssertTrue(FileManager.default.createFile(atPath: f, contents: Data([1, 2, 3]))) }
    var ck = Checkpoint()
    ck.floats["a"] = [1]
    try ck.write(to: p)
    XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
    XCTAssertTrue(FileManager.default.fileExists(atPath: live))
    XCTAssertTrue(FileManager.default.fileExists(atPath: unrelated))
    XCTAssertEqual(try Checkpoint.read(from: p).floats["a"], [1])
  }
}
