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

  /// Allocates `count` zeroed floats.
  /// - Precondition: `count >= 0`.
  public init(count: Int) {
    precondition(count >= 0, "FloatBuffer count must be non-negative, got \(count)")
    self.count = count
    let bytes = max(count, 1) * MemoryLayout<Float>.stride
    let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
    memset(raw, 0, bytes)
    pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
  }

  /// Allocates a buffer holding a copy of `values`.
  public convenience init(_ values: [Float]) {
    self.init(count: values.count)
    values.withUnsafeBufferPointer { src in
      if let base = src.baseAddress { pointer.update(from: base, count: values.count) }
    }
  }

  deinit { UnsafeMutableRawPointer(pointer).deallocate() }

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
