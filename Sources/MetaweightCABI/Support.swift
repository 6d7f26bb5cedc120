import CMetaweight
import MetaweightCore

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

/// A registered object and the lock that serialises its use.
final class Entry: @unchecked Sendable {
  let object: AnyObject
  let busy = TryLock()
  init(_ object: AnyObject) { self.object = object }
}

/// Maps opaque 64-bit handles to live objects; freed or unknown handles are errors, not traps.
final class Registry: @unchecked Sendable {
  static let shared = Registry()
  private let lock = TryLock()
  private var entries: [UInt64: Entry] = [:]
  private var next: UInt64 = 1

  func add(_ object: AnyObject) -> UInt64 {
    lock.lock()
    defer { lock.unlock() }
    let id = next
    next += 1
    entries[id] = Entry(object)
    return id
  }

  func entry(_ id: UInt64) -> Entry? {
    lock.lock()
    defer { lock.unlock() }
    return entries[id]
  }

  func remove(_ id: UInt64) -> Entry? {
    lock.lock()
    defer { lock.unlock() }
    return entries.removeValue(forKey: id)
  }
}

/// Looks up `id` as a `T` and runs `body` holding the object's lock.
func using<T: AnyObject>(_ id: UInt64, as: T.Type, _ what: String, _ body: (T) throws -> Void) throws {
  guard let e = Registry.shared.entry(id) else {
    throw ABIError(code: MW_E_HANDLE, message: "\(what): handle \(id) is closed, freed or was never created")
  }
  guard let obj = e.object as? T else {
    throw ABIError(code: MW_E_HANDLE, message: "\(what): handle \(id) is not a \(T.self)")
  }
  guard e.busy.tryLock() else {
    throw ABIError(code: MW_E_BUSY, message: "\(what): the object is in use by another thread; use one object per thread or a lock")
  }
  defer { e.busy.unlock() }
  try body(obj)
}

/// Frees handle `id` if it holds a `T`.
func free<T: AnyObject>(_ id: UInt64, as: T.Type, _ what: String) throws {
  guard let e = Registry.shared.entry(id), e.object is T else {
    throw ABIError(code: MW_E_HANDLE, message: "\(what): handle \(id) is closed, freed or was never created")
  }
  guard e.busy.tryLock() else {
    throw ABIError(code: MW_E_BUSY, message: "\(what): the object is in use by another thread")
  }
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

/// Validates labels: count n and range 0..<classes.
func checkLabels(_ y: UnsafePointer<Int64>?, _ count: Int64, n: Int, classes: Int, _ name: String = "y") throws -> UnsafePointer<Int64> {
  let p = try require(y, name)
  guard count == Int64(n) else { throw ABIError.shape("\(name): expected \(n) labels (one per example), got \(count)") }
  for i in 0..<n where p[i] < 0 || p[i] >= Int64(classes) {
    throw ABIError.label("\(name): expected labels in [0, \(classes)), got \(p[i]) at index \(i)")
  }
  return p
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
  let version = strdup("0.1.0")
  lazy var core: UnsafeMutablePointer<CChar>? = strdup(BLAS.coreName)
  lazy var config: UnsafeMutablePointer<CChar>? = strdup(BLAS.config)
}
