import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting

/// One stage-level transition (s_T, θ_T, r_T, s_{T+1}, done).
///
/// States are stored without their embedding (stage index and the two smoothed scalars) so that
/// the current, learned embedding is looked up whenever the transition is replayed.
public struct LAWTransition: Sendable, Equatable {
  /// s_T.
  public var state: LAWStageState
  /// The action actually applied (with exploration noise): [θ_T (F), b].
  public var action: [Float]
  /// r_T.
  public var reward: Float
  /// s_{T+1} (its stage index is clamped to N′−1 when `done`; it is then ignored).
  public var next: LAWStageState
  /// Whether T was the last stage of the episode.
  public var done: Bool

  /// Creates a transition.
  public init(state: LAWStageState, action: [Float], reward: Float, next: LAWStageState, done: Bool) {
    self.state = state
    self.action = action
    self.reward = reward
    self.next = next
    self.done = done
  }
}

/// A fixed-capacity ring buffer of transitions: once full, each new transition overwrites the
/// oldest one.
public struct LAWReplayBuffer: Sendable {
  /// Maximum number of transitions held.
  public let capacity: Int
  /// Transitions in storage order (the ring, not insertion order, once it has wrapped).
  public private(set) var items: [LAWTransition] = []
  /// Index the next transition is written to once the buffer is full.
  public private(set) var head = 0
  /// Total transitions ever added.
  public private(set) var added: Int64 = 0

  /// Creates an empty buffer.
  /// - Precondition: capacity ≥ 1 (validated by `LAWConfig`).
  public init(capacity: Int) {
    precondition(capacity >= 1, "replay buffer capacity must be >= 1")
    self.capacity = capacity
  }

  /// Number of transitions held.
  public var count: Int { items.count }

  /// Adds a transition, overwriting the oldest when full.
  public mutating func append(_ t: LAWTransition) {
    if items.count < capacity {
      items.append(t)
    } else {
      items[head] = t
      head = (head + 1) % capacity
    }
    added += 1
  }

  /// The transitions from oldest to newest.
  public var chronological: [LAWTransition] {
    items.count < capacity ? items : Array(items[head...] + items[..<head])
  }

  /// Empties the buffer.
  public mutating func removeAll() {
    items.removeAll(keepingCapacity: true)
    head = 0
  }

  /// Saves the buffer exactly as stored (slot order, ring head, count added) under `prefix`.
  public func save(into ck: inout Checkpoint, prefix: String) {
    let a = items.first?.action.count ?? 0
    var ints: [Int64] = [], floats: [Float] = [], actions: [Float] = []
    for t in items {
      ints += [Int64(t.state.stage), Int64(t.next.stage), t.done ? 1 : 0]
      floats += [t.state.lossSmooth, t.state.accSmooth, t.reward, t.next.lossSmooth, t.next.accSmooth]
      actions += t.action
    }
    ck.ints[prefix + "meta"] = [Int64(capacity), Int64(items.count), Int64(head), added, Int64(a)]
    ck.ints[prefix + "ints"] = ints
    ck.floats[prefix + "floats"] = floats
    ck.floats[prefix + "actions"] = actions
  }

  /// Restores what `save(into:prefix:)` wrote, bit-exactly (same slots, head and count).
  ///
  /// With `actionWidth`, every stored action must have that many values (the search's action
  /// dimension); with `stages`, every stored stage index must lie in 0..<stages. Nothing changes
  /// when the sections are inconsistent.
  /// - Throws: `MetaweightError.io` naming an inconsistent or missing section.
  public mutating func restore(_ ck: Checkpoint, prefix: String, actionWidth: Int? = nil, stages: Int? = nil) throws {
    let meta = try ck.requireInts(prefix + "meta", count: 5)
    guard meta[0] == Int64(capacity), meta[1] >= 0, meta[1] <= Int64(capacity), meta[2] >= 0, meta[2] < max(meta[1], 1),
      meta[3] >= meta[1], meta[4] >= 0, meta[4] <= 1 << 20
    else {
      throw MetaweightError.io("checkpoint: replay buffer section is inconsistent (capacity \(meta[0]), this search's \(capacity))")
    }
    let n = Int(meta[1]), a = Int(meta[4])
    if let w = actionWidth, n > 0, a != w {
      throw MetaweightError.io(
        "checkpoint: replay buffer actions have \(a) values each, but this search's actions have \(w) (different configuration?)")
    }
    let ints = try ck.requireInts(prefix + "ints", count: 3 * n)
    let floats = try ck.requireFloats(prefix + "floats", count: 5 * n)
    let actions = try ck.requireFloats(prefix + "actions", count: a * n)
    guard floats.allSatisfy({ $0.isFinite }), actions.allSatisfy({ $0.isFinite }) else {
      throw MetaweightError.io("checkpoint: replay buffer holds NaN or infinite values (corrupted)")
    }
    for i in 0..<n {
      let flag = ints[3 * i + 2]
      guard flag == 0 || flag == 1 else { throw MetaweightError.io("checkpoint: replay buffer transition \(i) is inconsistent") }
      if let k = stages {
        for j in 0..<2 where ints[3 * i + j] < 0 || ints[3 * i + j] >= Int64(k) {
          throw MetaweightError.io(
            "checkpoint: replay buffer transition \(i) has stage \(ints[3 * i + j]), outside 0..<\(k) (different configuration?)")
        }
      } else {
        for j in 0..<2 where ints[3 * i + j] < 0 || ints[3 * i + j] > Int64(Int32.max) {
          throw MetaweightError.io("checkpoint: replay buffer transition \(i) has stage \(ints[3 * i + j]) (corrupted)")
        }
      }
    }
    var loaded: [LAWTransition] = []
    loaded.reserveCapacity(n)
    for i in 0..<n {
      loaded.append(
        LAWTransition(
          state: LAWStageState(stage: Int(ints[3 * i]), lossSmooth: floats[5 * i], accSmooth: floats[5 * i + 1]),
          action: Array(actions[(a * i)..<(a * i + a)]), reward: floats[5 * i + 2],
          next: LAWStageState(stage: Int(ints[3 * i + 1]), lossSmooth: floats[5 * i + 3], accSmooth: floats[5 * i + 4]),
          done: ints[3 * i + 2] != 0))
    }
    items = loaded
    head = Int(meta[2])
    added = meta[3]
  }

  /// Restores from saved contents (oldest first, at most `capacity` are kept: the newest).
  public mutating func load(_ transitions: [LAWTransition], added: Int64) {
    removeAll()
    for t in transitions.suffix(capacity) { items.append(t) }
    head = 0
    self.added = added
  }
}
