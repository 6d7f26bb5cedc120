import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Thread-count control and the parallel loops metaweight's kernels use.
///
/// Work runs on a small pool of persistent worker threads (`threads − 1` of them plus the calling
/// thread). A loop is cut into pieces that the threads take one at a time, so a thread that is
/// descheduled (a busy machine) simply takes fewer pieces. Workers spin briefly between loops
/// (a training step issues one every few microseconds) and then park on a condition variable.
///
/// How a loop is cut depends only on its size and `threads`, never on which thread runs a piece
/// or on whether the pool is free: a loop issued while the pool is already running one (from
/// inside a piece, or from a second thread using another trainer) runs the same pieces inline,
/// so results are identical either way.
public enum Parallel {
  nonisolated(unsafe) private static var _threads: Int = {
    let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    return max(1, min(Int(n), ThreadPool.maxSlots))
  }()

  /// Number of threads metaweight's kernels use, the calling thread included (default: online
  /// CPUs, at most 64). Set it before, not during, computations.
  public static var threads: Int {
    get { _threads }
    set { _threads = max(1, min(newValue, ThreadPool.maxSlots)) }
  }

  /// Below this much work (`n * costPerItem`, roughly element operations) a loop runs inline.
  public static let minimumParallelWork = 32_768

  /// Runs `body(start, end)` over `0..<n` cut into contiguous pieces; runs inline (one piece)
  /// when `threads` is 1 or the work (`n * costPerItem`) is small. Pieces may run concurrently,
  /// so `body` must only write to memory no other piece touches.
  /// The inline case is inlinable, so a small loop in another module compiles to a direct call of
  /// `body` (the split into SwiftPM targets must not cost the layers their inlining).
  @inlinable
  public static func forRange(_ n: Int, costPerItem: Int = 1, _ body: (Int, Int) -> Void) {
    if n <= 0 { return }
    let t = threads
    let work = n &* max(costPerItem, 1)
    if t <= 1 || n == 1 || work < minimumParallelWork {
      body(0, n)
      return
    }
    forRangeOnPool(n, work: work, threads: t, body)
  }

  /// `forRange`'s parallel case: a few pieces per thread, each keeping ≥ 8 K units of work.
  @usableFromInline
  static func forRangeOnPool(_ n: Int, work: Int, threads t: Int, _ body: (Int, Int) -> Void) {
    let pieces = max(1, min(n, 4 * t, work / 8192, ThreadPool.maxPieces))
    if pieces == 1 {
      body(0, n)
      return
    }
    run(pieces: pieces, threads: t) { _, i in body(n * i / pieces, n * (i + 1) / pieces) }
  }

  /// Runs `body(slot, i)` for every `i` in `0..<count`, handing the items to threads one at a
  /// time. `slot` identifies the thread running the item, for per-thread scratch: it is below
  /// `slots` when given (the scratch the caller sized, e.g. with `slots(for:)`, so a concurrent
  /// change of `threads` cannot overrun it) and below `slots(for: count)` otherwise. Which slot
  /// runs which item varies, so results must not depend on it.
  @inlinable
  public static func forEach(
    _ count: Int, slots: Int? = nil, _ body: (_ slot: Int, _ index: Int) -> Void
  ) {
    if count <= 0 { return }
    let t = min(threads, max(slots ?? Int.max, 1))
    if t <= 1 || count == 1 {
      for i in 0..<count { body(0, i) }
      return
    }
    run(pieces: count, threads: t, body)
  }

  /// The number of distinct `slot` values `forEach(count)` may pass.
  public static func slots(for count: Int) -> Int { max(1, min(threads, count)) }

  /// Runs the pieces on the pool, or inline when the pool is busy or too many pieces are asked.
  @usableFromInline
  static func run(pieces: Int, threads t: Int, _ body: (Int, Int) -> Void) {
    let slots = min(t, pieces)
    if pieces > ThreadPool.maxPieces || !ThreadPool.shared.tryAcquire() {
      for i in 0..<pieces { body(0, i) }
      return
    }
    ThreadPool.shared.execute(pieces: pieces, slots: slots, body)
  }
}

/// The persistent worker threads behind `Parallel` (created on first use, never destroyed).
///
/// One job runs at a time. Its identity, slot count, piece count and next piece index are packed
/// into one atomic word, so a worker can only take a piece of the job it observed: a worker that
/// wakes late finds the word changed and never touches a finished job's closure.
final class ThreadPool: @unchecked Sendable {
  static let shared = ThreadPool()
  /// Upper bound on threads (slots use 8 bits of the job word).
  static let maxSlots = 64
  /// Upper bound on pieces per job (16 bits of the job word).
  static let maxPieces = 65_535

  // word = generation << 40 | slots << 32 | pieces << 16 | next piece
  private let word = Atomic<UInt64>(0)
  private let completed = Atomic<Int>(0)
  private let inFlight = Atomic<Bool>(false)
  private let sleepers = Atomic<Int>(0)
  private let mutex: UnsafeMutablePointer<pthread_mutex_t>
  private let cond: UnsafeMutablePointer<pthread_cond_t>
  /// The current job's body; written only by the thread holding `inFlight`, before publishing.
  nonisolated(unsafe) private var body: ((Int, Int) -> Void)? = nil
  /// Number of worker threads started (slot i + 1 is worker i).
  nonisolated(unsafe) private var started = 0
  /// Generation counter (24 bits are used in the word).
  nonisolated(unsafe) private var generation: UInt64 = 0

  private init() {
    mutex = .allocate(capacity: 1)
    cond = .allocate(capacity: 1)
    pthread_mutex_init(mutex, nil)
    pthread_cond_init(cond, nil)
  }

  /// Claims the pool for one job; false when another job is running (the caller runs inline).
  func tryAcquire() -> Bool {
    inFlight.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
  }

  /// Runs `pieces` pieces on `slots` threads (the caller is slot 0), then releases the pool.
  func execute(pieces: Int, slots: Int, _ job: (Int, Int) -> Void) {
    while started < slots - 1 { startWorker(started + 1) }
    withoutActuallyEscaping(job) { escapable in
      body = escapable
      completed.store(0, ordering: .relaxed)
      generation = (generation + 1) & 0xFF_FFFF
      let w = generation << 40 | UInt64(slots) << 32 | UInt64(pieces) << 16
      word.store(w, ordering: .sequentiallyConsistent)
      if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
      }
      var done = 0
      while let i = take(generation: generation) {
        escapable(0, i)
        done += 1
      }
      if done > 0 { completed.add(done, ordering: .relaxed) }
      while completed.load(ordering: .acquiring) < pieces {}
      body = nil
    }
    inFlight.store(false, ordering: .releasing)
  }

  /// Takes the next piece of job `generation`, or nil when the job has none left (or changed).
  @inline(__always)
  private func take(generation g: UInt64) -> Int? {
    var w = word.load(ordering: .acquiring)
    while true {
      let pieces = (w >> 16) & 0xFFFF
      let next = w & 0xFFFF
      guard w >> 40 == g, next < pieces else { return nil }
      let r = word.compareExchange(expected: w, desired: w + 1, ordering: .acquiringAndReleasing)
      if r.exchanged { return Int(next) }
      w = r.original
    }
  }

  private func startWorker(_ slot: Int) {
    final class Context {
      let pool: ThreadPool
      let slot: Int
      let seen: UInt64
      init(_ pool: ThreadPool, _ slot: Int, _ seen: UInt64) {
        self.pool = pool
        self.slot = slot
        self.seen = seen
      }
    }
    // The worker starts out having "seen" the current generation, so it joins the next job.
    let ctx = Unmanaged.passRetained(Context(self, slot, generation)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(
      &tid, nil,
      { raw in
        let c = Unmanaged<Context>.fromOpaque(raw!).takeRetainedValue()
        c.pool.workerLoop(slot: c.slot, seen: c.seen)  // never returns
      }, ctx)
    precondition(rc == 0, "metaweight: could not start a worker thread (pthread_create returned \(rc))")
    pthread_detach(tid)
    started = slot
  }

  /// Spins for a new job for a while (a fraction of a millisecond), then parks until one is published.
  private func workerLoop(slot: Int, seen initial: UInt64) -> Never {
    var seen = initial
    while true {
      var w = word.load(ordering: .acquiring)
      var spins = 0
      while w >> 40 == seen {
        spins += 1
        if spins & 1023 == 0 && spins >= 1 << 18 {
          pthread_mutex_lock(mutex)
          sleepers.add(1, ordering: .sequentiallyConsistent)
          while word.load(ordering: .sequentiallyConsistent) >> 40 == seen {
            pthread_cond_wait(cond, mutex)
          }
          sleepers.subtract(1, ordering: .sequentiallyConsistent)
          pthread_mutex_unlock(mutex)
          spins = 0
        }
        w = word.load(ordering: .acquiring)
      }
      seen = w >> 40
      guard slot < Int((w >> 32) & 0xFF) else { continue }
      var done = 0
      while let i = take(generation: seen) {
        body.unsafelyUnwrapped(slot, i)
        done += 1
      }
      if done > 0 { completed.add(done, ordering: .releasing) }
    }
  }
}

/// Wraps a value the caller guarantees is safe to share across the threads of one parallel loop.
public struct UncheckedSendable<T>: @unchecked Sendable {
  /// The wrapped value.
  public let value: T
  /// Wraps `value`.
  @inlinable public init(_ value: T) { self.value = value }
}
