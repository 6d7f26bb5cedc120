import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Thrown by a search stage that stopped because cancellation was requested.
public struct LAWCancelledError: Error, CustomStringConvertible {
  /// Creates the error.
  public init() {}
  /// The message.
  public var description: String { "law: the stage was interrupted (cancel requested)" }
}

/// A flag another thread (or a signal handler's thread) sets to stop a running search stage at
/// the next optimizer step.
public final class LAWCancellation: Sendable {
  private let flag = Atomic<Bool>(false)
  private let countdown = Atomic<Int>(0)
  /// A cleared flag.
  public init() {}
  /// Whether cancellation was requested (each check also advances an armed countdown).
  public var isSet: Bool {
    if flag.load(ordering: .acquiring) { return true }
    if countdown.load(ordering: .relaxed) > 0, countdown.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
      flag.store(true, ordering: .releasing)
      return true
    }
    return false
  }
  /// Requests (true) or clears (false) cancellation (clearing also disarms a countdown).
  public func set(_ on: Bool) {
    if !on { countdown.store(0, ordering: .releasing) }
    flag.store(on, ordering: .releasing)
  }
  /// Sets the flag at the `checks`-th check from now (tests: deterministic interruption points).
  func arm(afterChecks checks: Int) { countdown.store(max(checks, 1), ordering: .releasing) }
}

/// Collects the first error thrown by the bodies of a parallel loop.
final class LAWErrorBox: @unchecked Sendable {
  private var errors: [Int: Error] = [:]
  private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
  init() { pthread_mutex_init(lock, nil) }
  deinit {
    pthread_mutex_destroy(lock)
    lock.deallocate()
  }
  func set(_ i: Int, _ e: Error) {
    pthread_mutex_lock(lock)
    errors[i] = e
    pthread_mutex_unlock(lock)
  }
  /// The error of the lowest slot that failed (a real failure before a cancellation).
  var first: Error? {
    pthread_mutex_lock(lock)
    defer { pthread_mutex_unlock(lock) }
    let failed = errors.filter { !($0.value is LAWCancelledError) }
    if let k = failed.keys.min() { return failed[k] }
    return errors.keys.min().flatMap { errors[$0] }
  }
}


/// Monotonic seconds.
enum LAWClock {
  static func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
  }
}
