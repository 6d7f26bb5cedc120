import CMetaweight
import Foundation
import MetaweightCABI
import XCTest

/// The C ABI of remote LAW episodes (`mw_law_remote_*`, `mw_law_episode_*`): a driver search whose
/// episodes are made by another search handle ends a round with the same stage logs and strategy
/// as `mw_law_run_stage`; an episode snapshot restores into a fresh episode; calls out of order or
/// with wrong sizes return status codes naming the problem.
final class LAWRemoteABITests: XCTestCase {
  private func lastError() -> String { String(cString: mw_last_error()) }

  private func expect(_ status: mw_status, _ code: mw_status, naming needle: String, file: StaticString = #filePath, line: UInt = #line) {
    let msg = lastError()
    XCTAssertEqual(status, code, "message: '\(msg)'", file: file, line: line)
    XCTAssertTrue(msg.contains(needle), "message '\(msg)' should mention '\(needle)'", file: file, line: line)
  }

  private func ok(_ status: mw_status, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(status, MW_OK, "failed: \(lastError())", file: file, line: line)
  }

  private let config = "stages=3, warmup_stages=1, epochs=2, batch_size=8, parallel=2, fdu_epochs=2, fdu_batch=4, actor_hidden=8, critic_hidden=8"
  private let spec = "mlp(hidden=8, classes=3)"

  /// A search handle with 40 training and 12 validation examples of 4 features, 3 classes.
  private func search(seed: UInt64 = 7) -> mw_law {
    var x: [Float] = [], y: [Int64] = [], xv: [Float] = [], yv: [Int64] = []
    for i in 0..<40 {
      let c = i % 3
      for j in 0..<4 { x.append(Float(j == c ? 2 : 0) + Float((i * 7 + j) % 5) * 0.1) }
      y.append(Int64(i % 7 == 0 ? (c + 1) % 3 : c))
    }
    for i in 0..<12 {
      for j in 0..<4 { xv.append(Float(j == i % 3 ? 2 : 0)) }
      yv.append(Int64(i % 3))
    }
    var shape: [Int64] = [4], xs: [Int64] = [40, 4], vs: [Int64] = [12, 4]
    var law: mw_law = 0
    ok(mw_law_create(config, spec, &shape, 1, seed, &law))
    ok(mw_law_set_data(law, x, &xs, 2, y, 40, nil, 0, xv, &vs, 2, yv, 12))
    return law
  }

  private func strategyAction(_ law: mw_law) -> [Float] {
    var st: mw_strategy = 0
    ok(mw_law_strategy(law, &st))
    defer { _ = mw_strategy_free(st) }
    var out = [Float](repeating: 0, count: 3 + 3 + 1)
    ok(mw_strategy_action(st, 1, 0.8, 0.5, &out, Int64(out.count)))
    return out
  }

  func testRemoteRoundMatchesRunStageAndSnapshotsRestore() throws {
    let threaded = search()
    defer { _ = mw_law_free(threaded) }
    var logs: [mw_law_stage_log] = []
    for _ in 0..<3 {
      var l = mw_law_stage_log()
      ok(mw_law_run_stage(threaded, &l))
      logs.append(l)
    }
    let driver = search(), worker = search()
    defer {
      _ = mw_law_free(driver)
      _ = mw_law_free(worker)
    }
    var acts = [Float](repeating: 0, count: 2 * 7)
    var mask = [UInt8](repeating: 9, count: 2)
    expect(mw_law_remote_actions(driver, &acts, 14, &mask, 2), MW_E_STATE, naming: "remote round")
    var indices = [Int64](repeating: -1, count: 2)
    expect(mw_law_remote_begin_round(driver, &indices, 3), MW_E_SHAPE, naming: "out")
    ok(mw_law_remote_begin_round(driver, &indices, 2))
    XCTAssertEqual(indices, [0, 1])
    var eps: [mw_law_episode] = [0, 0]
    var states = [Double](repeating: 0, count: 6)
    for slot in 0..<2 {
      ok(mw_law_episode_create(worker, 0, Int32(slot), &eps[slot]))
      var s = [Double](repeating: -1, count: 3)
      ok(mw_law_episode_begin(eps[slot], &s, 3))
      states.replaceSubrange((3 * slot)..<(3 * slot + 3), with: s)
    }
    expect(mw_law_episode_create(worker, 0, 2, &eps[0]), MW_E_ARGUMENT, naming: "slot")
    ok(mw_law_remote_start_round(driver, states, 6))
    var outcome = [Double](repeating: 0, count: Int(MW_LAW_OUTCOME_VALUES))
    for t in 0..<3 {
      ok(mw_law_remote_actions(driver, &acts, 14, &mask, 2))
      XCTAssertEqual(mask, t == 0 ? [0, 0] : [1, 1])  // stage 0 is the warm-up
      expect(mw_law_episode_run_stage(eps[0], Int32(t + 1), nil, 0, &outcome, 12), MW_E_STATE, naming: "in order")
      if t == 1 {
        // Slot 1 restarts from its snapshot at the stage boundary, in a fresh episode.
        var n: Int64 = 0
        ok(mw_law_episode_snapshot(eps[1], nil, 0, &n))
        var bytes = [UInt8](repeating: 0, count: Int(n))
        ok(mw_law_episode_snapshot(eps[1], &bytes, n, &n))
        ok(mw_law_episode_free(eps[1]))
        ok(mw_law_episode_create(worker, 0, 1, &eps[1]))
        var corrupt = bytes
        corrupt[corrupt.count / 2] ^= 0xFF
        XCTAssertNotEqual(mw_law_episode_restore(eps[1], corrupt, n), MW_OK)
        ok(mw_law_episode_restore(eps[1], bytes, n))
      }
      var all: [Double] = []
      for slot in 0..<2 {
        if mask[slot] == 0 {
          ok(mw_law_episode_run_stage(eps[slot], Int32(t), nil, 0, &outcome, 12))
        } else {
          let a = Array(acts[(7 * slot)..<(7 * slot + 7)])
          ok(mw_law_episode_run_stage(eps[slot], Int32(t), a, 7, &outcome, 12))
        }
        all += outcome
      }
      var log = mw_law_stage_log()
      expect(mw_law_remote_finish_stage(driver, all, 11, 0, &log), MW_E_SHAPE, naming: "outcomes")
      ok(mw_law_remote_finish_stage(driver, all, 24, 0, &log))
      let l = logs[t]
      XCTAssertEqual([log.round, Int64(log.stage), Int64(log.round_done), log.buffer_size], [l.round, Int64(l.stage), Int64(l.round_done), l.buffer_size])
      XCTAssertEqual(log.reward.bitPattern, l.reward.bitPattern)
      XCTAssertEqual(log.critic_loss.bitPattern, l.critic_loss.bitPattern)
    }
    XCTAssertEqual(strategyAction(driver), strategyAction(threaded))
    var episode: Int64 = -1, round: Int64 = -1, slot: Int64 = -1, done: Int64 = -1, examples: Int64 = -1
    ok(mw_law_episode_info(eps[1], &episode, &round, &slot, &done, &examples))
    XCTAssertEqual([episode, round, slot, done, examples], [1, 0, 1, 3, 40])
    var table = [Double](repeating: 0, count: 3 * Int(MW_LAW_LOG_COLUMNS))
    expect(mw_law_episode_get_log(eps[1], &table, 5, nil, 0, nil, 0), MW_E_SHAPE, naming: "table")
    ok(mw_law_episode_get_log(eps[1], &table, Int64(table.count), nil, 0, nil, 0))
    var threadedTable = [Double](repeating: 0, count: table.count)
    ok(mw_law_episode_log(threaded, 1, nil, nil, nil, &threadedTable, Int64(threadedTable.count)))
    XCTAssertEqual(table.map(\.bitPattern), threadedTable.map(\.bitPattern))
    for e in eps { ok(mw_law_episode_free(e)) }
  }
}
