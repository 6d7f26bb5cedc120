#if canImport(Glibc)
  import Glibc
#endif

/// An owned, 64-byte aligned, zero-initialised buffer of `Float`s.
///
/// Every parameter vector, gradient, optimizer state and activation in metaweight lives in one of
/// these; layers receive plain pointers into them (llm.c style), so cloning, a virtual step or a
/// checkpoint is one loop over one buffer.
public final class FloatBuffer: @unchecked Sendable {
  /// Number of `Float` elements.
  public let count: Int
  /// Base address of the storage.
  public let pointer: UnsafeMutablePointer<Float>

  /// Allocates `count` zeroed floats (sizes the library chooses itself; sizes a caller controls
  /// go through `init(allocating:what:)`, which fails instead of ending the process).
  /// - Precondition: `count >= 0` and the memory is available.
  public init(count: Int) {
    precondition(count >= 0, "FloatBuffer count must be non-negative, got \(count)")
    guard let raw = Memory.allocateZeroed(floats: count) else {
      fatalError("FloatBuffer: cannot allocate \(count) floats")
    }
    self.count = count
    pointer = raw
  }

  /// Allocates `count` zeroed floats whose number a caller controls: checked against
  /// `Memory.maxAllocationBytes` first, and a failed allocation is an error, not an abort.
  /// - Throws: `MetaweightError.resource` naming `what` when over the limit or out of memory.
  public init(allocating count: Int, what: String) throws {
    guard count >= 0 else { throw MetaweightError.invalidArgument("\(what): negative size \(count)") }
    try Memory.check(bytes: count.multipliedReportingOverflow(by: MemoryLayout<Float>.stride), what: what)
    guard let raw = Memory.allocateZeroed(floats: count) else {
      throw MetaweightError.resource(
        "\(what): cannot allocate \(Memory.describe(bytes: count * MemoryLayout<Float>.stride)) (out of memory)")
    }
    self.count = count
    pointer = raw
  }

  /// Allocates a buffer holding a copy of `values`.
  public convenience init(_ values: [Float]) {
    self.init(count: values.count)
    values.withUnsafeBufferPointer { src in
      if let base = src.baseAddress { pointer.update(from: base, count: values.count) }
    }
  }

  deinit { Glibc.free(UnsafeMutableRawPointer(pointer)) }

  /// A read-only view of the elements.
  public var buffer: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: pointer, count: count) }

  /// The elements as an array (a copy).
  public var array: [Float] { Array(buffer) }

  /// Sets every element to `value`.
  public func fill(_ value: Float) {
    if value == 0 { memset(pointer, 0, count * MemoryLayout<Float>.stride); return }
    for i in 0..<count { pointer[i] = value }
  }

  /// Copies all elements of `other` (same count) into this buffer.
  public func copy(from other: FloatBuffer) {
    precondition(other.count == count, "copy(from:) needs equal counts, got \(other.count) vs \(count)")
    pointer.update(from: other.pointer, count: count)
  }

  /// A new buffer with the same contents.
  public func clone() -> FloatBuffer {
    let b = FloatBuffer(count: count)
    b.copy(from: self)
    return b
  }

  /// Element access (unchecked in release builds).
  @inlinable public subscript(i: Int) -> Float {
    get { pointer[i] }
    set { pointer[i] = newValue }
  }
}

/// A reusable scratch allocation that grows on demand and never shrinks.
public final class Scratch: @unchecked Sendable {
  private var storage = FloatBuffer(count: 0)
  /// Creates an empty scratch area.
  public init() {}
  /// Returns a pointer to at least `count` floats (contents undefined).
  public func pointer(count: Int) -> UnsafeMutablePointer<Float> { buffer(count: count).pointer }
  /// The buffer behind `pointer(count:)`, grown to at least `count` floats. A later request for
  /// more replaces it (this one stays valid for whoever holds it).
  public func buffer(count: Int) -> FloatBuffer {
    if storage.count < count { storage = FloatBuffer(count: count) }
    return storage
  }
  /// Bytes currently held.
  public var bytes: Int { storage.count * 4 }
  /// Frees the storage.
  public func release() { storage = FloatBuffer(count: 0) }
}

/// Limits on memory whose size a caller controls, and a failable aligned allocation.
///
/// Every allocation sized by user input (networks, trainer tapes, batches, checkpoints, LAW
/// buffers) is checked against `maxAllocationBytes` before it is made, and an allocation the
/// system refuses is reported as `MetaweightError.resource` rather than ending the process.
public enum Memory {
  /// The most bytes one request whose size a caller controls may need: 16 GiB, or the machine's
  /// physical memory if that is less.
  public static let maxAllocationBytes: Int = {
    let limit = 1 << 34
    let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
    guard pages > 0, size > 0 else { return limit }
    let (physical, overflow) = pages.multipliedReportingOverflow(by: size)
    return overflow ? limit : min(limit, physical)
  }()

  /// Throws `MetaweightError.resource` naming `what` when `bytes` exceeds `maxAllocationBytes`.
  public static func check(bytes: Int, what: String) throws {
    guard bytes >= 0, bytes <= maxAllocationBytes else {
      throw MetaweightError.resource(
        "\(what): needs \(bytes < 0 ? "more than 8 EiB" : describe(bytes: bytes)), over the limit of "
          + "\(describe(bytes: maxAllocationBytes)) for one request (Memory.maxAllocationBytes); use a smaller size")
    }
  }

  /// `check(bytes:what:)` for a product computed with overflow reporting.
  public static func check(bytes: (partialValue: Int, overflow: Bool), what: String) throws {
    try check(bytes: bytes.overflow ? -1 : bytes.partialValue, what: what)
  }

  /// A human-readable size ("1.5 GiB").
  public static func describe(bytes: Int) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var v = Double(bytes), u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return u == 0 ? "\(bytes) bytes" : "\((v * 10).rounded() / 10) \(units[u])"
  }

  /// 64-byte aligned, zeroed storage for `floats` floats (at least one), or nil when the system
  /// refuses it; release with `free`.
  static func allocateZeroed(floats: Int) -> UnsafeMutablePointer<Float>? {
    let (bytes, overflow) = max(floats, 1).multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
    guard !overflow else { return nil }
    var raw: UnsafeMutableRawPointer? = nil
    guard posix_memalign(&raw, 64, bytes) == 0, let r = raw else { return nil }
    memset(r, 0, bytes)
    return r.bindMemory(to: Float.self, capacity: max(floats, 1))
  }
}
