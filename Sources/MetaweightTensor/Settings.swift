/// A settings table: one declaration per setting of a configuration struct (name, type, range or
/// choices, one-line doc, and the key path of its field). Parsing a spec's `key=value`, range
/// checks, the canonical spec text, defaults and the JSON published through the C ABI
/// (`mw_settings_table`) all read the table, so adding a setting is one entry plus its field.

/// The type of a setting's value (the JSON `type`).
public enum SettingKind: String, Sendable {
  /// An integer.
  case int
  /// A finite real number.
  case float
  /// `1`/`0` (also `true`/`false`, `yes`/`no`).
  case bool
  /// One of the setting's `choices` (case-insensitive).
  case choice = "enum"
  /// A list of integers written `AxBxC`.
  case ints
  /// A list of real numbers written `AxBxC` (`none` for an empty list).
  case floats
}

/// One setting of `Config`.
public struct Setting<Config>: Sendable {
  /// The key in specs and the Python keyword.
  public let name: String
  /// The value's type.
  public let kind: SettingKind
  /// One line saying what it does.
  public let doc: String
  /// Lower bound (nil: none).
  public let minimum: Double?
  /// Upper bound (nil: none).
  public let maximum: Double?
  /// Whether `minimum` itself is allowed.
  public let minimumInclusive: Bool
  /// Whether `maximum` itself is allowed.
  public let maximumInclusive: Bool
  /// The allowed values of an enum setting (canonical spelling first of each alias group).
  public let choices: [String]
  /// A list's exact length (nil: any length up to `maxCount`).
  public let count: Int?
  /// A list's largest length.
  public let maxCount: Int
  /// When `none` is allowed: what it means (e.g. "the classifier's current learning rate").
  public let noneMeans: String?
  /// Other keys accepted for it (earlier spellings).
  public let aliases: [String]
  /// A condition the table cannot express as a range, in words (e.g. "low < high").
  public let note: String?
  private let readText: @Sendable (Config) -> String
  private let writeText: @Sendable (inout Config, String) throws -> Void
  private let checkValue: @Sendable (Config) throws -> Void

  /// The value of the setting in `config` as spec text (`none` for the "none" value).
  public func text(of config: Config) -> String { readText(config) }
  /// Parses `text`, checks it and stores it in `config`.
  /// - Throws: `MetaweightError.invalidArgument` naming the key, what was expected and the text.
  public func set(_ text: String, in config: inout Config) throws { try writeText(&config, text) }
  /// Checks the value `config` holds.
  /// - Throws: `MetaweightError.invalidArgument` naming the key, the expected range and the value.
  public func check(_ config: Config) throws { try checkValue(config) }

  /// What the range allows, in words ("1 <= stages <= 10000", "a finite value > 0").
  public var expected: String {
    switch kind {
    case .bool: return "0/1 or true/false"
    case .choice: return "one of " + choices.map { "'\($0)'" }.joined(separator: ", ")
    case .int, .float, .ints, .floats:
      let what = kind == .int || kind == .ints ? "an integer" : "a finite value"
      var r: String
      switch (minimum, maximum) {
      case let (lo?, hi?):
        r = "\(Setting.num(lo)) \(minimumInclusive ? "<=" : "<") \(name) \(maximumInclusive ? "<=" : "<") \(Setting.num(hi))"
      case let (lo?, nil): r = "\(what) \(minimumInclusive ? ">=" : ">") \(Setting.num(lo))"
      case let (nil, hi?): r = "\(what) \(maximumInclusive ? "<=" : "<") \(Setting.num(hi))"
      case (nil, nil): r = what
      }
      if kind == .ints || kind == .floats {
        r = (count.map { "\($0) values, each " } ?? "values joined by 'x', each ") + r
      }
      if let n = note { r += " (\(n))" }
      return r
    }
  }

  fileprivate static func num(_ v: Double) -> String {
    if v == v.rounded(), abs(v) < 1e15 {
      let i = Int64(v)
      if i >= 1 << 20, i & (i - 1) == 0 { return "2^\(i.trailingZeroBitCount)" }
      return "\(i)"
    }
    return "\(v)"
  }

  private init(
    _ name: String, _ kind: SettingKind, doc: String, minimum: Double? = nil, maximum: Double? = nil,
    minimumInclusive: Bool = true, maximumInclusive: Bool = true, choices: [String] = [], count: Int? = nil,
    maxCount: Int = 1, noneMeans: String? = nil, aliases: [String] = [], note: String? = nil,
    read: @escaping @Sendable (Config) -> String, write: @escaping @Sendable (inout Config, String) throws -> Void,
    check: @escaping @Sendable (Config) throws -> Void
  ) {
    self.name = name
    self.kind = kind
    self.doc = doc
    self.minimum = minimum
    self.maximum = maximum
    self.minimumInclusive = minimumInclusive
    self.maximumInclusive = maximumInclusive
    self.choices = choices
    self.count = count
    self.maxCount = maxCount
    self.noneMeans = noneMeans
    self.aliases = aliases
    self.note = note
    readText = read
    writeText = write
    checkValue = check
  }

  private func inRange(_ v: Double) -> Bool {
    if let lo = minimum, v < lo || (!minimumInclusive && v == lo) { return false }
    if let hi = maximum, v > hi || (!maximumInclusive && v == hi) { return false }
    return true
  }

  private static func fail(_ name: String, _ expected: String, _ got: String) -> MetaweightError {
    .invalidArgument("\(name): expected \(expected), got \(got)")
  }

  // MARK: - Declarations

  /// An integer field.
  public static func int<I: FixedWidthInteger & Sendable>(
    _ name: String, _ path: WritableKeyPath<Config, I> & Sendable, min: Double? = nil, max: Double? = nil,
    aliases: [String] = [], _ doc: String
  ) -> Setting {
    let proto = Setting(
      name, .int, doc: doc, minimum: min, maximum: max, aliases: aliases, read: { _ in "" }, write: { _, _ in },
      check: { _ in })
    return Setting(
      name, .int, doc: doc, minimum: min, maximum: max, aliases: aliases,
      read: { "\($0[keyPath: path])" },
      write: { c, text in
        guard let v = I(text) else { throw fail(name, "an integer", "'\(text)'") }
        guard proto.inRange(Double(v)) else { throw fail(name, proto.expected, "\(v)") }
        c[keyPath: path] = v
      },
      check: { c in
        let v = c[keyPath: path]
        guard proto.inRange(Double(v)) else { throw fail(name, proto.expected, "\(v)") }
      })
  }

  /// A real field (`Float` or `Double`); `none`: when given, the value that stands for "none"
  /// (it is exempt from the range) and what it means.
  public static func float<F: BinaryFloatingPoint & LosslessStringConvertible & Sendable>(
    _ name: String, _ path: WritableKeyPath<Config, F> & Sendable, min: Double? = nil, max: Double? = nil,
    minInclusive: Bool = true, maxInclusive: Bool = true, none: (value: F, means: String)? = nil,
    aliases: [String] = [], _ doc: String
  ) -> Setting {
    let proto = Setting(
      name, .float, doc: doc, minimum: min, maximum: max, minimumInclusive: minInclusive,
      maximumInclusive: maxInclusive, noneMeans: none?.means, aliases: aliases, read: { _ in "" }, write: { _, _ in },
      check: { _ in })
    let sentinel = none?.value
    @Sendable func checked(_ v: F) throws {
      if let s = sentinel, v == s { return }
      guard v.isFinite, proto.inRange(Double(v)) else { throw fail(name, proto.expected, "\(v)") }
    }
    return Setting(
      name, .float, doc: doc, minimum: min, maximum: max, minimumInclusive: minInclusive,
      maximumInclusive: maxInclusive, noneMeans: none?.means, aliases: aliases,
      read: { c in
        let v = c[keyPath: path]
        if let s = sentinel, v == s { return "none" }
        return "\(v)"
      },
      write: { c, text in
        if let s = sentinel, ["none", "auto"].contains(text.lowercased()) {
          c[keyPath: path] = s
          return
        }
        guard let d = Double(text), d.isFinite, abs(d) <= Double(Float.greatestFiniteMagnitude) else {
          throw fail(name, "a finite number" + (sentinel == nil ? "" : " or none"), "'\(text)'")
        }
        let v = F(d)
        if let s = sentinel, v == s { throw fail(name, proto.expected + " or none", "'\(text)'") }
        try checked(v)
        c[keyPath: path] = v
      },
      check: { c in try checked(c[keyPath: path]) })
  }

  /// A boolean field.
  public static func bool(
    _ name: String, _ path: WritableKeyPath<Config, Bool> & Sendable, aliases: [String] = [], _ doc: String
  ) -> Setting {
    Setting(
      name, .bool, doc: doc, aliases: aliases,
      read: { $0[keyPath: path] ? "1" : "0" },
      write: { c, text in
        switch text.lowercased() {
        case "1", "true", "yes": c[keyPath: path] = true
        case "0", "false", "no": c[keyPath: path] = false
        default: throw fail(name, "0/1 or true/false", "'\(text)'")
        }
      },
      check: { _ in })
  }

  /// An enum field: `choices` pairs a spelling with its value; the first spelling of a value is
  /// the canonical one, later ones are aliases (case-insensitive).
  public static func choice<E: Equatable & Sendable>(
    _ name: String, _ path: WritableKeyPath<Config, E> & Sendable, _ choices: [(String, E)], aliases: [String] = [],
    _ doc: String
  ) -> Setting {
    var canonical: [String] = []
    for (i, (s, v)) in choices.enumerated() where !choices[..<i].contains(where: { $0.1 == v }) { canonical.append(s) }
    let table = choices
    let expected = "one of " + canonical.map { "'\($0)'" }.joined(separator: ", ")
    return Setting(
      name, .choice, doc: doc, choices: canonical, aliases: aliases,
      read: { c in table.first { $0.1 == c[keyPath: path] }?.0 ?? "?" },
      write: { c, text in
        guard let v = table.first(where: { $0.0 == text.lowercased() })?.1 else {
          throw fail(name, expected, "'\(text)'")
        }
        c[keyPath: path] = v
      },
      check: { _ in })
  }

  /// A list of reals `AxBxC` (`none` or empty: no entries); each in range; `count`: exact length;
  /// `valid`: a further condition on the whole list, described by `note`.
  public static func floats<F: BinaryFloatingPoint & LosslessStringConvertible & Sendable>(
    _ name: String, _ path: WritableKeyPath<Config, [F]> & Sendable, min: Double? = nil, max: Double? = nil,
    minInclusive: Bool = true, maxInclusive: Bool = true, count: Int? = nil, maxCount: Int = 100,
    note: String? = nil, valid: (@Sendable ([F]) -> Bool)? = nil, _ doc: String
  ) -> Setting {
    let proto = Setting(
      name, .floats, doc: doc, minimum: min, maximum: max, minimumInclusive: minInclusive,
      maximumInclusive: maxInclusive, count: count, maxCount: count ?? maxCount, note: note, read: { _ in "" },
      write: { _, _ in }, check: { _ in })
    @Sendable func checked(_ v: [F]) throws {
      let shown = "[" + v.map { "\($0)" }.joined(separator: ", ") + "]"
      if let n = count, v.count != n { throw fail(name, proto.expected, shown) }
      guard v.count <= proto.maxCount else { throw fail(name, "at most \(proto.maxCount) entries", "\(v.count)") }
      guard v.allSatisfy({ $0.isFinite && proto.inRange(Double($0)) }), valid?(v) ?? true else {
        throw fail(name, proto.expected, shown)
      }
    }
    return Setting(
      name, .floats, doc: doc, minimum: min, maximum: max, minimumInclusive: minInclusive,
      maximumInclusive: maxInclusive, count: count, maxCount: count ?? maxCount, note: note,
      read: { c in
        let v = c[keyPath: path]
        return v.isEmpty ? "none" : v.map { "\($0)" }.joined(separator: "x")
      },
      write: { c, text in
        var v: [F] = []
        if !(text.isEmpty || text.lowercased() == "none") {
          for part in text.split(separator: "x", omittingEmptySubsequences: false) {
            guard let d = Double(String(part)), d.isFinite, abs(d) <= Double(Float.greatestFiniteMagnitude) else {
              throw fail(name, "finite numbers joined by 'x' (e.g. 0.5x0.75)", "'\(text)'")
            }
            v.append(F(d))
          }
        }
        try checked(v)
        c[keyPath: path] = v
      },
      check: { c in try checked(c[keyPath: path]) })
  }

  /// A list of integers `AxBxC` (`none` or empty: no entries), each in range.
  public static func ints(
    _ name: String, _ path: WritableKeyPath<Config, [Int64]> & Sendable, min: Double? = nil, max: Double? = nil,
    maxCount: Int = 1 << 20, aliases: [String] = [], _ doc: String
  ) -> Setting {
    let proto = Setting(
      name, .ints, doc: doc, minimum: min, maximum: max, maxCount: maxCount, aliases: aliases, read: { _ in "" },
      write: { _, _ in }, check: { _ in })
    @Sendable func checked(_ v: [Int64]) throws {
      guard v.count <= maxCount else { throw fail(name, "at most \(maxCount) entries", "\(v.count)") }
      guard v.allSatisfy({ proto.inRange(Double($0)) }) else { throw fail(name, proto.expected, "\(v)") }
    }
    return Setting(
      name, .ints, doc: doc, minimum: min, maximum: max, maxCount: maxCount, aliases: aliases,
      read: { c in
        let v = c[keyPath: path]
        return v.isEmpty ? "none" : v.map { "\($0)" }.joined(separator: "x")
      },
      write: { c, text in
        var v: [Int64] = []
        if !(text.isEmpty || text.lowercased() == "none") {
          for part in text.split(separator: "x", omittingEmptySubsequences: false) {
            guard let i = Int64(String(part)) else {
              throw fail(name, "integers joined by 'x' (e.g. 500x50x5)", "'\(text)'")
            }
            v.append(i)
          }
        }
        try checked(v)
        c[keyPath: path] = v
      },
      check: { c in try checked(c[keyPath: path]) })
  }

  // MARK: - JSON

  /// The setting as a JSON object, with `defaults` (a configuration holding the default) giving
  /// the `default` value.
  public func json(defaults: Config) -> String {
    var o = JSONObject()
    o.add("name", JSON.string(name))
    o.add("type", JSON.string(kind.rawValue))
    o.add("default", jsonValue(text(of: defaults)))
    o.add("doc", JSON.string(doc))
    o.add("expected", JSON.string(expected))
    if let lo = minimum { o.add("minimum", JSON.number(lo)); o.add("minimum_inclusive", minimumInclusive ? "true" : "false") }
    if let hi = maximum { o.add("maximum", JSON.number(hi)); o.add("maximum_inclusive", maximumInclusive ? "true" : "false") }
    if kind == .choice { o.add("choices", "[" + choices.map(JSON.string).joined(separator: ", ") + "]") }
    if kind == .ints || kind == .floats {
      o.add("count", count.map { "\($0)" } ?? "null")
      o.add("max_count", "\(maxCount)")
    }
    o.add("none", noneMeans.map(JSON.string) ?? "null")
    if !aliases.isEmpty { o.add("aliases", "[" + aliases.map(JSON.string).joined(separator: ", ") + "]") }
    return o.text
  }

  /// The spec text `text` as a JSON value of the setting's type.
  private func jsonValue(_ text: String) -> String {
    if text == "none", kind != .choice { return kind == .ints || kind == .floats ? "[]" : "null" }
    switch kind {
    case .bool: return text == "1" ? "true" : "false"
    case .choice: return JSON.string(text)
    case .int, .float: return text
    case .ints, .floats: return "[" + text.split(separator: "x").joined(separator: ", ") + "]"
    }
  }
}

/// Looks settings up by name or alias and applies argument lists.
public struct SettingsTable<Config>: Sendable {
  /// The settings in their canonical order.
  public let settings: [Setting<Config>]

  /// A table of `settings`.
  public init(_ settings: [Setting<Config>]) { self.settings = settings }

  /// The setting named `key` (or having it as an alias).
  public func setting(_ key: String) -> Setting<Config>? {
    settings.first { $0.name == key } ?? settings.first { $0.aliases.contains(key) }
  }

  /// Applies `arguments` to `config` in order.
  /// - Throws: `MetaweightError.invalidArgument` naming an unknown key (`unknown` words the
  ///   message) or a bad value.
  public func apply(
    _ arguments: [SpecArgument], to config: inout Config, unknown: (String) -> MetaweightError
  ) throws {
    for a in arguments {
      guard let s = setting(a.key) else { throw unknown(a.key) }
      try s.set(a.value, in: &config)
    }
  }

  /// Checks every setting's value in `config`.
  /// - Throws: `MetaweightError.invalidArgument` for the first value out of range.
  public func check(_ config: Config) throws { for s in settings { try s.check(config) } }

  /// `key=value, ...` of every setting of `config`, in table order.
  public func arguments(_ config: Config) -> [SpecArgument] {
    settings.map { SpecArgument(key: $0.name, value: $0.text(of: config)) }
  }

  /// The JSON array of the settings, defaults from `defaults`.
  public func json(defaults: Config) -> String {
    "[" + settings.map { $0.json(defaults: defaults) }.joined(separator: ", ") + "]"
  }
}

/// Minimal JSON writing (the core does not use Foundation).
public enum JSON {
  /// `s` as a JSON string literal.
  public static func string(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
      switch u {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\t": out += "\\t"
      case "\r": out += "\\r"
      default:
        if u.value < 0x20 {
          let hex = String(u.value, radix: 16)
          out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        } else {
          out.unicodeScalars.append(u)
        }
      }
    }
    return out + "\""
  }

  /// A finite number as a JSON number (integers without a fraction).
  public static func number(_ v: Double) -> String {
    v == v.rounded() && abs(v) < 1e15 ? "\(Int64(v))" : "\(v)"
  }
}

/// An ordered JSON object under construction.
public struct JSONObject: Sendable {
  private var parts: [String] = []
  /// An empty object.
  public init() {}
  /// Adds `key` with an already-encoded JSON `value`.
  public mutating func add(_ key: String, _ value: String) { parts.append("\(JSON.string(key)): \(value)") }
  /// The object's text.
  public var text: String { "{" + parts.joined(separator: ", ") + "}" }
}
