#if canImport(Glibc)
  import Glibc
#endif

/// A checkpoint: named sections of floats, 64-bit integers or bytes, written atomically with a
/// format version and a CRC-32 over the whole file.
///
/// Layout (little endian): "MWCKPT\0\0" · version u32 · section count u32 ·
/// per section [name length u32 · name · type u8 · element count u64 · payload] · crc32 u32.
public struct Checkpoint: Sendable {
  /// Current format version.
  public static let version: UInt32 = 1
  static let magic: [UInt8] = Array("MWCKPT".utf8) + [0, 0]

  /// Float sections.
  public var floats: [String: [Float]] = [:]
  /// Integer sections.
  public var ints: [String: [Int64]] = [:]
  /// Byte sections (strings).
  public var bytes: [String: [UInt8]] = [:]

  /// An empty checkpoint.
  public init() {}

  /// A string section.
  public func string(_ key: String) -> String? { bytes[key].map { String(decoding: $0, as: UTF8.self) } }
  /// Stores a string section.
  public mutating func setString(_ key: String, _ value: String) { bytes[key] = Array(value.utf8) }

  /// Looks up a float section, failing with a message naming it.
  public func requireFloats(_ key: String, count: Int? = nil) throws -> [Float] {
    guard let v = floats[key] else { throw MetaweightError.io("checkpoint: missing section '\(key)'") }
    if let c = count, v.count != c {
      throw MetaweightError.io("checkpoint: section '\(key)' has \(v.count) values, expected \(c) (different architecture?)")
    }
    return v
  }

  /// Looks up an integer section.
  public func requireInts(_ key: String, count: Int? = nil) throws -> [Int64] {
    guard let v = ints[key] else { throw MetaweightError.io("checkpoint: missing section '\(key)'") }
    if let c = count, v.count != c {
      throw MetaweightError.io("checkpoint: section '\(key)' has \(v.count) values, expected \(c)")
    }
    return v
  }

  /// Stores doubles bit-exactly (as their IEEE-754 bit patterns in an integer section).
  public mutating func setDoubles(_ key: String, _ values: [Double]) {
    ints[key] = values.map { Int64(bitPattern: $0.bitPattern) }
  }

  /// Reads doubles stored by `setDoubles`, failing with a message naming the section.
  public func requireDoubles(_ key: String, count: Int? = nil) throws -> [Double] {
    try requireInts(key, count: count).map { Double(bitPattern: UInt64(bitPattern: $0)) }
  }

  /// Copies every section of `other` into this checkpoint with `prefix` prepended to its name.
  public mutating func merge(_ other: Checkpoint, prefix: String) {
    for (k, v) in other.floats { floats[prefix + k] = v }
    for (k, v) in other.ints { ints[prefix + k] = v }
    for (k, v) in other.bytes { bytes[prefix + k] = v }
  }

  /// The sections whose names start with `prefix`, with the prefix removed.
  public func extract(prefix: String) -> Checkpoint {
    var out = Checkpoint()
    let n = prefix.count
    for (k, v) in floats where k.hasPrefix(prefix) { out.floats[String(k.dropFirst(n))] = v }
    for (k, v) in ints where k.hasPrefix(prefix) { out.ints[String(k.dropFirst(n))] = v }
    for (k, v) in bytes where k.hasPrefix(prefix) { out.bytes[String(k.dropFirst(n))] = v }
    return out
  }

  /// Serialises to bytes.
  public func encoded() -> [UInt8] {
    var out = Checkpoint.magic
    func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
    func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
    u32(Checkpoint.version)
    u32(UInt32(floats.count + ints.count + bytes.count))
    func header(_ name: String, _ type: UInt8, _ count: Int) {
      let n = Array(name.utf8)
      u32(UInt32(n.count))
      out += n
      out.append(type)
      u64(UInt64(count))
    }
    for k in floats.keys.sorted() {
      let v = floats[k] ?? []
      header(k, 1, v.count)
      v.withUnsafeBytes { out += $0 }
    }
    for k in ints.keys.sorted() {
      let v = ints[k] ?? []
      header(k, 2, v.count)
      v.withUnsafeBytes { out += $0 }
    }
    for k in bytes.keys.sorted() {
      let v = bytes[k] ?? []
      header(k, 3, v.count)
      out += v
    }
    u32(CRC32.checksum(out))
    return out
  }

  /// Parses bytes, checking magic, version and checksum.
  /// - Throws: `MetaweightError.io` naming what is wrong (truncated, corrupted, wrong version).
  public init(decoding data: [UInt8]) throws {
    guard data.count >= 20 else { throw MetaweightError.io("checkpoint: file is truncated (\(data.count) bytes)") }
    guard Array(data[0..<8]) == Checkpoint.magic else {
      throw MetaweightError.io("checkpoint: not a metaweight checkpoint (bad magic bytes)")
    }
    var pos = 8
    func need(_ n: Int) throws {
      if n < 0 || pos + n > data.count - 4 { throw MetaweightError.io("checkpoint: file is truncated") }
    }
    func u32() throws -> UInt32 {
      try need(4)
      var v: UInt32 = 0
      for i in 0..<4 { v |= UInt32(data[pos + i]) << (8 * UInt32(i)) }
      pos += 4
      return v
    }
    func u64() throws -> UInt64 {
      try need(8)
      var v: UInt64 = 0
      for i in 0..<8 { v |= UInt64(data[pos + i]) << (8 * UInt64(i)) }
      pos += 8
      return v
    }
    var stored: UInt32 = 0
    for i in 0..<4 { stored |= UInt32(data[data.count - 4 + i]) << (8 * UInt32(i)) }
    let version = try u32()
    guard version == Checkpoint.version else {
      throw MetaweightError.io("checkpoint: format version \(version) is not supported (expected \(Checkpoint.version))")
    }
    guard CRC32.checksum(data[0..<(data.count - 4)]) == stored else {
      throw MetaweightError.io("checkpoint: checksum mismatch (file is corrupted or truncated)")
    }
    let sections = try u32()
    for _ in 0..<sections {
      let nlen = Int(try u32())
      try need(nlen + 1)
      let name = String(decoding: data[pos..<(pos + nlen)], as: UTF8.self)
      pos += nlen
      let type = data[pos]
      pos += 1
      let count64 = try u64()
      guard count64 < UInt64(Int32.max) else { throw MetaweightError.io("checkpoint: section '\(name)' is too large") }
      let count = Int(count64)
      switch type {
      case 1:
        try need(count * 4)
        var v = [Float](repeating: 0, count: count)
        v.withUnsafeMutableBytes { dst in
          data.withUnsafeBytes { src in dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[pos..<(pos + count * 4)])) }
        }
        pos += count * 4
        floats[name] = v
      case 2:
        try need(count * 8)
        var v = [Int64](repeating: 0, count: count)
        v.withUnsafeMutableBytes { dst in
          data.withUnsafeBytes { src in dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[pos..<(pos + count * 8)])) }
        }
        pos += count * 8
        ints[name] = v
      case 3:
        try need(count)
        bytes[name] = Array(data[pos..<(pos + count)])
        pos += count
      default:
        throw MetaweightError.io("checkpoint: section '\(name)' has unknown type \(type) (corrupted)")
      }
    }
  }

  /// Writes atomically: temporary file, fsync, rename, fsync of the directory.
  /// - Throws: `MetaweightError.io` with the system error.
  public func write(to path: String) throws {
    let data = encoded()
    // Unique per process and thread: concurrent saves to one path (different trainers on
    // different threads) must not write into, or rename away, each other's temporary file.
    let tmp = path + ".tmp.\(getpid()).\(UInt(bitPattern: Int(bitPattern: pthread_self())))"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw MetaweightError.io("save: cannot create '\(tmp)': \(String(cString: strerror(errno)))") }
    var written = 0
    let ok: Bool = data.withUnsafeBytes { buf in
      while written < buf.count {
        let r = Glibc.write(fd, buf.baseAddress! + written, buf.count - written)
        if r <= 0 { return false }
        written += r
      }
      return true
    }
    if !ok || fsync(fd) != 0 {
      let msg = String(cString: strerror(errno))
      close(fd)
      unlink(tmp)
      throw MetaweightError.io("save: writing '\(tmp)' failed: \(msg)")
    }
    close(fd)
    guard rename(tmp, path) == 0 else {
      let msg = String(cString: strerror(errno))
      unlink(tmp)
      throw MetaweightError.io("save: cannot rename to '\(path)': \(msg)")
    }
    var dir = path
    if let slash = dir.lastIndex(of: "/") { dir = String(dir[..<slash]); if dir.isEmpty { dir = "/" } } else { dir = "." }
    let dfd = open(dir, O_RDONLY)
    if dfd >= 0 { fsync(dfd); close(dfd) }
  }

  /// Reads and verifies a checkpoint file.
  /// - Throws: `MetaweightError.io` naming the problem.
  public static func read(from path: String) throws -> Checkpoint {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw MetaweightError.io("load: cannot open '\(path)': \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
      let r = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
      if r < 0 { throw MetaweightError.io("load: reading '\(path)' failed: \(String(cString: strerror(errno)))") }
      if r == 0 { break }
      data += chunk[0..<r]
    }
    return try Checkpoint(decoding: data)
  }
}

/// CRC-32 (IEEE 802.3).
public enum CRC32 {
  static let table: [UInt32] = (0..<256).map { i -> UInt32 in
    var c = UInt32(i)
    for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    return c
  }
  /// Checksum of `data`.
  public static func checksum<C: Collection>(_ data: C) -> UInt32 where C.Element == UInt8 {
    var c: UInt32 = 0xFFFF_FFFF
    let t = table
    for b in data { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
    return c ^ 0xFFFF_FFFF
  }
}
