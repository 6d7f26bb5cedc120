import MetaweightTensor
import MetaweightLayers
import MetaweightTraining

/// A search whose episodes run elsewhere (e.g. as Ray actors on other machines): the driver keeps
/// the strategy model, the replay buffer, the FDU and each slot's exploration noise and state;
/// each episode (an `LAWEpisode` made by a search with the same configuration, seed and data, via
/// `makeEpisode`) runs its stages where it lives and hands back the stage's `LAWStageOutcome`.
///
/// One round, driven stage by stage in the order of `runStage` (so that, for the same seed and
/// N_a, the strategy is bit-identical to the threaded search):
/// 1. `remoteBeginRound()` (stage 0 only): the round's episode indices; each episode is made
///    (`makeEpisode(round:slot:data:)`) and measured (`LAWEpisode.begin`) where it runs;
/// 2. `remoteStartRound(states:)` with their initial states, in slot order;
/// 3. for every stage: `remoteActions()` (drawn once per stage from the shared actor and each
///    slot's noise), each episode's `runStage(t, action:)`, then `remoteFinishStage(outcomes:)`
///    (transitions in slot order, the FDU, the next stage).
extension LAWSearch {
  /// Starts a round whose episodes run elsewhere; returns their global indices (slot order).
  /// Calling it again before `remoteStartRound` starts the same round again.
  /// - Throws: `MetaweightError.invalidState` without data, or while a round is in progress.
  package func remoteBeginRound() throws -> [Int] {
    guard data != nil, pendingEpisodes == nil else {
      throw MetaweightError.invalidState("law: no data; call set_data (with the same arrays as the episodes) first")
    }
    guard nextStage == 0, pendingActions == nil else {
      throw MetaweightError.invalidState(
        "law: stage \(nextStage) of round \(round) is in progress here; finish it (run_stage) before a remote round")
    }
    episodes = []
    slots = []
    remote = true
    return (0..<config.parallel).map { round * config.parallel + $0 }
  }

  /// Sets the round's slots from the episodes' initial states (stage 0; slot order).
  /// - Throws: `MetaweightError.invalidState` outside a begun remote round;
  ///   `.invalidArgument` for a wrong count or a state not at stage 0.
  package func remoteStartRound(states: [LAWStageState]) throws {
    guard remote, nextStage == 0, pendingActions == nil else {
      throw MetaweightError.invalidState("law: no remote round is starting (call remote_begin_round first)")
    }
    guard states.count == config.parallel, states.allSatisfy({ $0.stage == 0 && $0.lossSmooth.isFinite && $0.accSmooth.isFinite })
    else {
      throw MetaweightError.invalidArgument(
        "states: expected \(config.parallel) finite initial states at stage 0 (one per episode), got \(states)")
    }
    startRound(states: states)
  }

  /// The actions of the stage in progress, one per slot (nil in warm-up stages); drawn at the
  /// first call of a stage, the same at every later call until it is finished.
  /// - Throws: `MetaweightError.invalidState` outside a started remote round.
  package func remoteActions() throws -> [[Float]?] {
    guard remote, slots.count == config.parallel else {
      throw MetaweightError.invalidState("law: no remote round is running (remote_begin_round, remote_start_round)")
    }
    return drawActions()
  }

  /// Finishes the stage in progress with the episodes' outcomes (slot order): as `runStage`
  /// after its episodes. `seconds` is the stage's wall time measured by the caller.
  /// - Throws: `MetaweightError.invalidState` before `remoteActions`; `.invalidArgument` for a
  ///   wrong count or outcomes of another stage.
  package func remoteFinishStage(outcomes: [LAWStageOutcome], seconds: Double) throws -> LAWStageLog {
    guard remote, pendingActions != nil else {
      throw MetaweightError.invalidState("law: no remote stage is in progress (remote_actions first)")
    }
    guard outcomes.count == config.parallel else {
      throw MetaweightError.invalidArgument("outcomes: expected \(config.parallel) (one per episode), got \(outcomes.count)")
    }
    let t = nextStage
    for (i, o) in outcomes.enumerated() where o.before.stage != t || o.after.stage != t + 1 {
      throw MetaweightError.invalidArgument(
        "outcomes: episode slot \(i) reports stage \(o.before.stage) -> \(o.after.stage), expected \(t) -> \(t + 1)")
    }
    var log = finishStage(outcomes: outcomes, clock0: LAWClock.now())
    log.seconds = seconds
    return log
  }
}

extension LAWSearch {
  /// Abandons the remote round in progress (an episode diverged or could not be run): as the
  /// threaded search does, its transitions already in the buffer stay and the next round starts.
  package func remoteAbandonRound() {
    if remote { discardRound() }
  }
}
