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

  /// Restores from saved contents (oldest first, at most `capacity` are kept: the newest).
  public mutating func load(_ transitions: [LAWTransition], added: Int64) {
    removeAll()
    for t in transitions.suffix(capacity) { items.append(t) }
    head = 0
    self.added = added
  }
}
