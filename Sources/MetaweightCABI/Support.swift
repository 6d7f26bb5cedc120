import CMetaweight
import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining
import MetaweightWeighting
import MetaweightLAW

#if canImport(Glibc)
  import Glibc
#endif

/// An error carrying its C status code.
struct ABIError: Error {
  let code: mw_status
  let message: String
  static func argument(_ m: String) -> ABIError { ABIError(code: MW_E_ARGUMENT, message: m) }
  static func shape(_ m: String) -> ABIError { ABIError(code: MW_E_SHAPE, message: m) }
  static func label(_ m: String) -> ABIError { ABIError(code: MW_E_LABEL, message: m) }
  static func nonFinite(_ m: String) -> ABIError { ABIError(code: MW_E_NONFINITE, message: m) }
  static func resource(_ m: String) -> ABIError { ABIError(code: MW_E_RESOURCE, message: m) }
}

/// Runs `body`, mapping thrown errors to status codes and the thread-local message.
func guarded(_ body: () throws -> Void) -> mw_status {
  do {
    try body()
    return MW_OK
  } catch let e as ABIError {
    mw_set_last_error(e.message)
    return e.code
  } catch let e as MetaweightError {
    mw_set_last_error(e.description)
    switch e {
    case .invalidArgument: return MW_E_ARGUMENT
    case .nonFinite: return MW_E_NONFINITE
    case .invalidState: return MW_E_STATE
    case .io: return MW_E_IO
    case .resource: return MW_E_RESOURCE
    }
  } catch {
    mw_set_last_error("internal error: \(error)")
    return MW_E_INTERNAL
  }
}

/// A mutex whose `tryLock` detects use of one object from two threads at once.
final class TryLock: @unchecked Sendable {
  private let m: UnsafeMutablePointer<pthread_mutex_t>
  init() {
    m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    pthread_mutex_init(m, nil)
  }
  deinit {
    pthread_mutex_destroy(m)
    m.deallocate()
  }
  func tryLock() -> Bool { pthread_mutex_trylock(m) == 0 }
  func lock() { pthread_mutex_lock(m) }
  func unlock() { pthread_mutex_unlock(m) }
}

/// The exclusion lock of one underlying object, shared by every handle that touches it.
///
/// A trainer and the network it trains share one lock (the network's), as do all network
/// handles to one network (`mw_trainer_network` hands out more) and all trainers built on it, so
/// two threads can never run calls on the same parameters at once through different handles.
final class SharedLock: @unchecked Sendable {
  /// The try-lock every call on any of the object's handles takes.
  let busy = TryLock()
  /// Guards `holder` (a short critical section, never held across a call).
  private let guardLock = TryLock()
  private var holderText = ""
  /// Handles registered against this lock; the registry drops the lock at zero.
  var references = 0
  /// What kind of object the lock guards ("network", "LAW search", ...), for messages.
  let kind: String

  init(kind: String) { self.kind = kind }

  /// The call holding `busy` right now (e.g. "mw_trainer_step on trainer 3"), or "".
  var holder: String {
    get {
      guardLock.lock()
      defer { guardLock.unlock() }
      return holderText
    }
    set {
      guardLock.lock()
      holderText = newValue
      guardLock.unlock()
    }
  }
}

/// A registered object and the lock that serialises its use (shared with every other handle
/// whose object touches the same underlying object; see `SharedLock`).
final class Entry: @unchecked Sendable {
  let object: AnyObject
  let shared: SharedLock
  let key: ObjectIdentifier
  var busy: TryLock { shared.busy }
  init(_ object: AnyObject, shared: SharedLock, key: ObjectIdentifier) {
    self.object = object
    self.shared = shared
    self.key = key
  }
}

/// The kind of a registered object, for messages.
func kindName(_ o: AnyObject) -> String {
  switch o {
  case is Trainer: return "trainer"
  case is Network: return "network"
  case is LAWSearch: return "LAW search"
  case is LAWStrategy: return "strategy"
  default: return String(describing: type(of: o))
  }
}

/// The underlying object whose lock `o`'s handle takes: a trainer locks the network it trains
/// (its parameters, batch-norm statistics and tape live there); anything else locks itself.
func lockOwner(_ o: AnyObject) -> AnyObject {
  if let t = o as? Trainer { return t.network }
  return o
}

/// Maps opaque 64-bit handles to live objects; freed or unknown handles are errors, not traps.
final class Registry: @unchecked Sendable {
  static let shared = Registry()
  private let lock = TryLock()
  private var entries: [UInt64: Entry] = [:]
  /// One lock per underlying object that some live handle touches (keys stay valid: the entries
  /// hold their objects, which hold the owners, strongly).
  private var locks: [ObjectIdentifier: SharedLock] = [:]
  private var next: UInt64 = 1

  func add(_ object: AnyObject) -> UInt64 {
    let owner = lockOwner(object)
    let key = ObjectIdentifier(owner)
    lock.lock()
    defer { lock.unlock() }
    let id = next
    next += 1
    let shared: SharedLock
    if let s = locks[key] {
      shared = s
    } else {
      shared = SharedLock(kind: kindName(owner))
      locks[key] = shared
    }
    shared.references += 1
    entries[id] = Entry(object, shared: shared, key: key)
    return id
  }

  func entry(_ id: UInt64) -> Entry? {
    lock.lock()
    defer { lock.unlock() }
    return entries[id]
  }

  /// Number of live handles.
  var count: Int {
    lock.lock()
    defer { lock.unlock() }
    return entries.count
  }

  func remove(_ id: UInt64) -> Entry? {
    lock.lock()
    defer { lock.unlock() }
    guard let e = entries.removeValue(forKey: id) else { return nil }
    e.shared.references -= 1
    if e.shared.references <= 0 { locks.removeValue(forKey: e.key) }
    return e
  }

  /// Handles registered against the lock of `id`'s underlying object (tests and messages).
  func sharers(_ id: UInt64) -> Int {
    lock.lock()
    defer { lock.unlock() }
    return entries[id]?.shared.references ?? 0
  }
}

/// "mw_trainer_step" from a `#function` such as "_mw_trainer_step(_:_:_:)".
func callName(_ function: String) -> String {
  var s = Substring(function)
  if let p = s.firstIndex(of: "(") { s = s[..<p] }
  while s.hasPrefix("_") { s = s.dropFirst() }
  return String(s)
}

/// The BusyError of a call on `id` (a `what`) refused because `e`'s lock is taken.
func busyError(_ id: UInt64, _ what: String, _ e: Entry, call: String) -> ABIError {
  let holder = e.shared.holder
  let kind = kindName(e.object)
  let via = kind == e.shared.kind ? "" : " (its \(e.shared.kind), which it shares)"
  let by = holder.isEmpty ? "another thread" : "another thread (\(holder))"
  return ABIError(
    code: MW_E_BUSY,
    message: "\(call): \(what) \(id) is in use by \(by)\(via); one object (a network and every trainer or "
      + "handle on it) may run one call at a time: use one per thread or guard it with a lock")
}

/// Counts the calls on handles running right now and the most at once (diagnostics: shows that
/// callers in different threads overlap, i.e. that the Python extension releases the GIL).
final class InFlight: @unchecked Sendable {
  static let shared = InFlight()
  private let lock = TryLock()
  private var running = 0
  private var most = 0

  func enter() {
    lock.lock()
    running += 1
    most = max(most, running)
    lock.unlock()
  }

  func leave() {
    lock.lock()
    running -= 1
    lock.unlock()
  }

  /// The peak since the last reset; `reset` starts a new count from the calls running now.
  func peak(reset: Bool) -> Int {
    lock.lock()
    defer { lock.unlock() }
    let p = most
    if reset { most = running }
    return p
  }
}

/// Looks up `id` as a `T` and runs `body` holding the lock of its underlying object (shared by
/// every handle that touches that object); MW_E_BUSY, naming the object and the call, when
/// another thread holds it.
func using<T: AnyObject>(
  _ id: UInt64, as: T.Type, _ what: String, function: String = #function, _ body: (T) throws -> Void
) throws {
  guard let e = Registry.shared.entry(id) else {
    throw ABIError(code: MW_E_HANDLE, message: "\(what): handle \(id) is closed, freed or was never created")
  }
  guard let obj = e.object as? T else {
    throw ABIError(code: MW_E_HANDLE, message: "\(what): handle \(id) is not a \(T.self)")
  }
  let call = callName(function)
  guard e.busy.tryLock() else { throw busyError(id, what, e, call: call) }
  guard Registry.shared.entry(id) === e else {  // freed by another thread just before we got the lock
    e.busy.unlock()
    throw ABIError(code: MW_E_HANDLE, message: "\(what): handle \(id) is closed, freed or was never created")
  }
  e.shared.holder = "\(call) on \(kindName(e.object)) \(id)"
  InFlight.shared.enter()
  defer {
    InFlight.shared.leave()
    e.shared.holder = ""
    e.busy.unlock()
  }
  try body(obj)
}

/// Frees handle `id` if it holds a `T` (MW_E_BUSY while any handle on its object runs a call).
func free<T: AnyObject>(_ id: UInt64, as: T.Type, _ what: String) throws {
  guard let e = Registry.shared.entry(id), e.object is T else {
    throw ABIError(code: MW_E_HANDLE, message: "\(what): handle \(id) is closed, freed or was never created")
  }
  guard e.busy.tryLock() else { throw busyError(id, kindName(e.object), e, call: what) }
  _ = Registry.shared.remove(id)
  e.busy.unlock()
}

/// Requires a non-null pointer.
func require<P>(_ p: P?, _ name: String) throws -> P {
  guard let v = p else { throw ABIError.argument("\(name): expected a pointer, got NULL") }
  return v
}

/// Maximum elements of any one array passed in (guards size arithmetic against overflow).
let maxElements = 1 << 34
/// Maximum activation floats one batch may need (16 GiB), so a huge batch is an error, not an
/// allocation failure that would end the process.
let maxActivationFloats = 1 << 32

/// Validates a batch x of shape `shape[0..<rank]` against the network's per-example layout and
/// returns N.
func batchSize(_ x: UnsafePointer<Float>?, _ shape: UnsafePointer<Int64>?, _ rank: Int32, _ net: Network,
               _ name: String = "x") throws -> Int {
  _ = try require(x, name)
  let s = try require(shape, "\(name) shape")
  let expected: [Int]
  switch net.inputLayout {
  case .flat(let d): expected = [d]
  case .image(let c, let h, let w): expected = [c, h, w]
  }
  guard Int(rank) == expected.count + 1 else {
    throw ABIError.shape("\(name): expected a \(expected.count + 1)-d array (N, \(expected.map(String.init).joined(separator: ", "))), got \(rank)-d")
  }
  let dims = (0..<Int(rank)).map { Int(s[$0]) }
  guard dims[0] > 0 else { throw ABIError.shape("\(name): expected at least one example, got an empty batch (N = \(dims[0]))") }
  guard Array(dims[1...]) == expected else {
    throw ABIError.shape("\(name): expected per-example shape (\(expected.map(String.init).joined(separator: ", "))), got (\(dims[1...].map(String.init).joined(separator: ", ")))")
  }
  guard dims[0] <= maxElements / max(net.inputLayout.size, 1) else {
    throw ABIError.shape("\(name): batch of \(dims[0]) examples is too large")
  }
  guard dims[0] <= maxActivationFloats / max(net.activationFloatsPerExample, 1) else {
    throw ABIError.shape(
      "\(name): a batch of \(dims[0]) examples needs \(dims[0] * net.activationFloatsPerExample * 4 / (1 << 20)) MiB "
        + "of activations, over the limit of \(maxActivationFloats * 4 / (1 << 20)) MiB; use smaller batches")
  }
  // The tape for this batch is allocated by the step: over the machine's limit it is a
  // ResourceError now rather than an allocation failure later.
  try Memory.check(
    bytes: dims[0].multipliedReportingOverflow(by: (net.activationFloatsPerExample + net.inputLayout.size + net.classes) * 4),
    what: "\(name): activations for a batch of \(dims[0]) examples")
  return dims[0]
}

/// Validates that all `count` floats are finite.
func checkFinite(_ p: UnsafePointer<Float>, _ count: Int, _ name: String) throws {
  if !Elementwise.allFinite(p, count: count) {
    var i = 0
    while i < count && p[i].isFinite { i += 1 }
    throw ABIError.nonFinite("\(name): expected finite values, got \(p[i]) at flat index \(i)")
  }
}

/// Copies labels into core-owned memory, then validates the copy: count n and range 0..<classes.
///
/// The caller's array is read exactly once (by the copy); everything after, the range check and
/// every later use as an index, reads only the returned copy, so another thread rewriting the
/// caller's array during the call cannot turn a checked label into an out-of-range index.
func checkLabels(_ y: UnsafePointer<Int64>?, _ count: Int64, n: Int, classes: Int, _ name: String = "y") throws -> [Int64] {
  let p = try require(y, name)
  guard count == Int64(n) else { throw ABIError.shape("\(name): expected \(n) labels (one per example), got \(count)") }
  let copy = try copyIn(p, n, name)
  for i in 0..<n where copy[i] < 0 || copy[i] >= Int64(classes) {
    throw ABIError.label("\(name): expected labels in [0, \(classes)), got \(copy[i]) at index \(i)")
  }
  return copy
}

/// Copies `count` caller elements into a core-owned array (one read of the caller's memory),
/// failing with a resource error instead of aborting when the copy cannot be allocated.
func copyIn<T: BitwiseCopyable>(_ p: UnsafePointer<T>, _ count: Int, _ name: String) throws -> [T] {
  guard count >= 0, count <= maxElements else { throw ABIError.shape("\(name): \(count) elements are too many") }
  try Memory.check(bytes: count * MemoryLayout<T>.stride, what: name)
  return Array(UnsafeBufferPointer(start: p, count: count))
}

/// Copies `count` floats into a core-owned buffer, then validates that the copy is finite.
///
/// Float inputs are read once: the finiteness check and all later compute read the copy.
func copyFinite(_ p: UnsafePointer<Float>, _ count: Int, _ name: String) throws -> FloatBuffer {
  let b = try FloatBuffer(allocating: count, what: name)
  b.pointer.update(from: p, count: count)
  try checkFinite(UnsafePointer(b.pointer), count, name)
  return b
}

/// Copies a batch of `n` examples of `layout` into core-owned memory, then checks the copy is
/// finite: the one NaN/inf scan of a batch (callers convert, they do not scan). The error names
/// the example and position, e.g. "x: expected finite values, got nan at index (3, 17) (flat
/// index 209)".
func copyBatch(_ p: UnsafePointer<Float>, n: Int, _ layout: Layout, _ name: String) throws -> FloatBuffer {
  let count = n * layout.size
  let b = try FloatBuffer(allocating: count, what: name)
  b.pointer.update(from: p, count: count)
  if !Elementwise.allFinite(UnsafePointer(b.pointer), count: count) {
    var i = 0
    while i < count && b[i].isFinite { i += 1 }
    let dims: [Int]
    switch layout {
    case .flat(let d): dims = [d]
    case .image(let c, let h, let w): dims = [c, h, w]
    }
    var index: [Int] = []
    var rest = i
    for d in dims.reversed() {
      index.insert(rest % max(d, 1), at: 0)
      rest /= max(d, 1)
    }
    index.insert(rest, at: 0)
    throw ABIError.nonFinite(
      "\(name): expected finite values, got \(b[i]) at index (\(index.map(String.init).joined(separator: ", "))) (flat index \(i))")
  }
  return b
}

/// Copies a Swift string into a caller buffer, NUL-terminated, reporting the needed length.
func writeString(_ s: String, _ buf: UnsafeMutablePointer<CChar>?, _ capacity: Int64, _ length: UnsafeMutablePointer<Int64>?) {
  let bytes = Array(s.utf8)
  length?.pointee = Int64(bytes.count)
  guard let b = buf, capacity > 0 else { return }
  let n = min(bytes.count, Int(capacity) - 1)
  for i in 0..<n { b[i] = CChar(bitPattern: bytes[i]) }
  b[n] = 0
}

/// Stable C strings for version and BLAS info.
final class StaticStrings: @unchecked Sendable {
  static let shared = StaticStrings()
  let version = strdup(MW_VERSION)
  lazy var core: UnsafeMutablePointer<CChar>? = strdup(BLAS.coreName)
  lazy var config: UnsafeMutablePointer<CChar>? = strdup(BLAS.config)
}

/// The per-example layout of an `input_shape` argument (rank 1: [D]; rank 3: [C, H, W]).
func inputLayout(_ shape: UnsafePointer<Int64>?, _ rank: Int32) throws -> Layout {
  let p = try require(shape, "input_shape")
  guard rank == 1 || rank == 3 else {
    throw ABIError.shape("input_shape: expected rank 1 (D,) or 3 (C, H, W), got rank \(rank)")
  }
  let sh = try copyIn(p, Int(rank), "input_shape")  // read once; checked and used as a copy
  switch rank {
  case 1:
    guard sh[0] > 0, sh[0] < 1 << 28 else { throw ABIError.shape("input_shape: expected a positive feature count, got \(sh[0])") }
    return .flat(Int(sh[0]))
  case 3:
    guard (0..<3).allSatisfy({ sh[$0] > 0 && sh[$0] < 1 << 16 }) else {
      throw ABIError.shape("input_shape: expected positive (C, H, W), got (\(sh[0]), \(sh[1]), \(sh[2]))")
    }
    return .image(c: Int(sh[0]), h: Int(sh[1]), w: Int(sh[2]))
  default:
    throw ABIError.shape("input_shape: expected rank 1 (D,) or 3 (C, H, W), got rank \(rank)")
  }
}
