import MetaweightTensor
import MetaweightLayers
import MetaweightOptim

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

  /// The largest step or update counter a checkpoint may hold: 2^53, so a counter stays exact
  /// as a Double (schedules compute with it) and can never wrap when incremented.
  public static let maxCounter: Int64 = 1 << 53

  /// Semantic checks on the values of every section, done before anything is restored:
  /// every float is finite; every Adam second moment (sections named `*second` or `*.v`) is
  /// ≥ 0; every step or update counter (`*steps`, `*.updates`) lies in 0...`maxCounter`.
  /// Only sections whose names satisfy `include` are checked (logs may hold NaN for "no value").
  /// - Throws: `MetaweightError.io` naming the section and the offending value.
  public func validateValues(where include: (String) -> Bool = { _ in true }) throws {
    for k in floats.keys.sorted() where include(k) {
      let v = floats[k] ?? []
      let moment = k.hasSuffix("second") || k.hasSuffix(".v")
      for i in v.indices where !v[i].isFinite || (moment && v[i] < 0) {
        throw MetaweightError.io(
          "checkpoint: section '\(k)' holds \(v[i]) at index \(i); expected "
            + (moment ? "a finite, non-negative second moment" : "finite values") + " (corrupted or hostile file)")
      }
    }
    for k in ints.keys.sorted() where include(k) && (k.hasSuffix("steps") || k.hasSuffix(".updates")) {
      for (i, c) in (ints[k] ?? []).enumerated() where c < 0 || c > Checkpoint.maxCounter {
        throw MetaweightError.io(
          "checkpoint: section '\(k)' holds the counter \(c) at index \(i); expected 0...2^53 (corrupted or hostile file)")
      }
    }
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
      // The declared size must fit in what is left of the file before anything is allocated.
      let width = type == 1 ? 4 : type == 2 ? 8 : 1
      guard count * width <= data.count - 4 - pos else {
        throw MetaweightError.io(
          "checkpoint: section '\(name)' declares \(count) values but only \(data.count - 4 - pos) bytes remain (truncated or corrupted)")
      }
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
  ///
  /// Temporary files that an earlier save to the same path left behind when its process was
  /// killed (`<path>.tmp.<pid>.<tid>` of a process that no longer runs) are removed first.
  /// - Throws: `MetaweightError.io` with the system error.
  public func write(to path: String) throws {
    Checkpoint.removeStaleTemporaries(of: path)
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

  /// Removes `<path>.tmp.<pid>.<tid>` files whose writing process no longer runs (a save that
  /// was killed mid-write). Files of live processes, including concurrent saves of this one,
  /// are left alone; failures are ignored (the save itself reports real problems).
  static func removeStaleTemporaries(of path: String) {
    var dir = ".", base = path
    if let slash = path.lastIndex(of: "/") {
      dir = String(path[..<slash])
      if dir.isEmpty { dir = "/" }
      base = String(path[path.index(after: slash)...])
    }
    let prefix = base + ".tmp."
    guard let d = opendir(dir) else { return }
    defer { closedir(d) }
    var stale: [String] = []
    // readdir's records are only as long as their name: read d_name in place up to its NUL
    // (copying the whole `d_name` array would read past a short record).
    guard let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name) else { return }
    while let entry = readdir(d) {
      let name = String(cString: (UnsafeRawPointer(entry) + nameOffset).assumingMemoryBound(to: CChar.self))
      guard name.hasPrefix(prefix) else { continue }
      let parts = name.dropFirst(prefix.count).split(separator: ".", omittingEmptySubsequences: false)
      guard parts.count == 2, let pid = Int32(parts[0]), pid > 0, UInt(parts[1]) != nil else { continue }
      if pid == getpid() { continue }  // this process: its failed saves unlink their own file
      if kill(pid, 0) == 0 || errno == EPERM { continue }  // a live process (maybe saving now)
      stale.append(dir == "/" ? "/" + name : dir + "/" + name)
    }
    for f in stale { unlink(f) }
  }

  /// The largest checkpoint file `read(from:)` accepts (`Memory.maxAllocationBytes`).
  public static var maxFileBytes: Int { Memory.maxAllocationBytes }

  /// Reads and verifies a checkpoint file.
  ///
  /// Only regular files are read: a FIFO, device (such as /dev/zero), socket or directory is
  /// refused before it is opened (so opening a FIFO cannot hang), the opened file is checked
  /// again with `fstat`, and no more than its size at that moment is read. Files whose size the
  /// kernel does not know (e.g. under /proc, which report 0) are refused as empty.
  /// - Throws: `MetaweightError.io` naming the path and the problem.
  public static func read(from path: String) throws -> Checkpoint {
    var st = stat()
    guard stat(path, &st) == 0 else {
      throw MetaweightError.io("load: cannot open '\(path)': \(String(cString: strerror(errno)))")
    }
    func kind(_ mode: mode_t) -> String? {
      switch mode & S_IFMT {
      case S_IFREG: return nil
      case S_IFDIR: return "a directory"
      case S_IFIFO: return "a FIFO (named pipe)"
      case S_IFCHR: return "a character device"
      case S_IFBLK: return "a block device"
      case S_IFSOCK: return "a socket"
      default: return "not a regular file"
      }
    }
    if let k = kind(st.st_mode) {
      throw MetaweightError.io("load: '\(path)' is \(k), not a regular checkpoint file")
    }
    // O_NONBLOCK: should the path be swapped for a FIFO between stat and open, open returns at
    // once instead of waiting for a writer; fstat below then refuses it.
    let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { throw MetaweightError.io("load: cannot open '\(path)': \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard fstat(fd, &st) == 0 else {
      throw MetaweightError.io("load: cannot stat '\(path)': \(String(cString: strerror(errno)))")
    }
    if let k = kind(st.st_mode) {
      throw MetaweightError.io("load: '\(path)' is \(k), not a regular checkpoint file")
    }
    let size = Int(st.st_size)
    guard size >= 20 else { throw MetaweightError.io("load: '\(path)': checkpoint: file is truncated (\(size) bytes)") }
    guard size <= maxFileBytes else {
      throw MetaweightError.resource(
        "load: '\(path)' is \(Memory.describe(bytes: size)), over the limit of \(Memory.describe(bytes: maxFileBytes)) for a checkpoint")
    }
    var data = [UInt8](repeating: 0, count: size)
    var got = 0
    while got < size {
      let r = data.withUnsafeMutableBytes { buf -> Int in
        guard let base = buf.baseAddress else { return 0 }
        return Glibc.read(fd, base + got, size - got)
      }
      if r < 0 {
        if errno == EINTR || errno == EAGAIN { continue }
        throw MetaweightError.io("load: reading '\(path)' failed: \(String(cString: strerror(errno)))")
      }
      if r == 0 { break }  // shrank while reading: the checksum below reports it
      got += r
    }
    if got < size { data.removeSubrange(got...) }
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
