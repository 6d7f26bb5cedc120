/// The one spec grammar of the core, shared by method specs (`gdw(eta=100, clip=0.5)`), LAW
/// configurations (`law(stages=20, ...)`, or the bare argument list) and network specs
/// (`linear(out=10); relu`):
///
///     call      := name ['(' [argument (',' argument)*] ')']
///     argument  := key '=' value
///     name, key := [A-Za-z0-9_]+            (case-insensitive: returned lower-cased)
///     value     := any characters but , ( ) ; { } | = and spaces, e.g. 1e-3, 256x256, none, adam
///
/// `SpecScanner` is the tokenizer; network specs add their own `;`/`residual{..|..}` structure on
/// top of it, method and LAW specs are one `call` (`SpecGrammar.call`).
public struct SpecScanner: Sendable {
  private let chars: [Character]
  /// Position of the next unread character.
  public private(set) var position = 0
  /// What errors name first, e.g. "method" or "spec".
  public let context: String

  /// A scanner over `text`; errors name `context`.
  public init(_ text: String, context: String) {
    chars = Array(text)
    self.context = context
  }

  /// An `invalidArgument` error "context: what at position N".
  public func error(_ what: String) -> MetaweightError {
    .invalidArgument("\(context): \(what) at position \(position)")
  }

  /// Skips spaces, tabs and newlines.
  public mutating func skipSpace() { while position < chars.count, chars[position].isWhitespace { position += 1 } }

  /// Whether only spaces are left.
  public mutating func atEnd() -> Bool {
    skipSpace()
    return position == chars.count
  }

  /// The next non-space character, if any, without consuming it.
  public mutating func peek() -> Character? {
    skipSpace()
    return position < chars.count ? chars[position] : nil
  }

  /// Consumes `c` (after spaces) when it comes next.
  public mutating func accept(_ c: Character) -> Bool {
    skipSpace()
    if position < chars.count, chars[position] == c { position += 1; return true }
    return false
  }

  /// A name or key, lower-cased; `what` names it in the error when none comes.
  public mutating func identifier(_ what: String) throws -> String {
    skipSpace()
    var s = ""
    while position < chars.count, chars[position].isLetter || chars[position].isNumber || chars[position] == "_" {
      s.append(chars[position])
      position += 1
    }
    guard !s.isEmpty else {
      throw error(position < chars.count ? "expected \(what), got '\(chars[position])'" : "expected \(what), got the end")
    }
    return s.lowercased()
  }

  /// A value token (see the grammar), e.g. `1e-3`, `256x256`, `none`.
  public mutating func value(for key: String) throws -> String {
    skipSpace()
    var s = ""
    while position < chars.count, !chars[position].isWhitespace, !",();{}|=".contains(chars[position]) {
      s.append(chars[position])
      position += 1
    }
    guard !s.isEmpty else {
      throw error(position < chars.count ? "\(key): expected a value, got '\(chars[position])'" : "\(key): expected a value, got the end")
    }
    return s
  }

  /// `[ '(' [key=value (',' key=value)*] ')' ]` after a call's name (empty without parentheses).
  public mutating func arguments(of name: String) throws -> [SpecArgument] {
    guard accept("(") else { return [] }
    if accept(")") { return [] }
    let args = try argumentList()
    guard accept(")") else { throw error("expected ')' closing \(name)") }
    return args
  }

  /// `key=value (',' key=value)*`, stopping before anything else.
  public mutating func argumentList() throws -> [SpecArgument] {
    var args: [SpecArgument] = []
    repeat {
      if peek() == ")" || atEnd() { break }  // a trailing comma
      let key = try identifier("a key")
      guard accept("=") else { throw error("expected '=' after '\(key)'") }
      if args.contains(where: { $0.key == key }) { throw error("'\(key)' given twice") }
      args.append(SpecArgument(key: key, value: try value(for: key)))
    } while accept(",")
    return args
  }

  /// `name ['(' arguments ')']`.
  public mutating func call(_ what: String) throws -> SpecCall {
    let name = try identifier(what)
    return SpecCall(name: name, arguments: try arguments(of: name))
  }
}

/// One `key=value` of a spec (key lower-cased, value as written).
public struct SpecArgument: Sendable, Equatable {
  /// The key, lower-cased.
  public let key: String
  /// The value as written.
  public let value: String
  /// An argument.
  public init(key: String, value: String) {
    self.key = key
    self.value = value
  }
}

/// A `name(key=value, ...)` call of the spec grammar.
public struct SpecCall: Sendable, Equatable {
  /// The name, lower-cased.
  public let name: String
  /// The arguments in the order written.
  public let arguments: [SpecArgument]
  /// A call.
  public init(name: String, arguments: [SpecArgument]) {
    self.name = name
    self.arguments = arguments
  }

  /// The canonical text `name(k=v, ...)` (just `name` without arguments).
  public var text: String {
    arguments.isEmpty ? name : "\(name)(\(arguments.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")))"
  }
}

/// Whole-text parses of the spec grammar (see `SpecScanner`).
public enum SpecGrammar {
  /// Parses `text` as exactly one call `name(key=value, ...)`.
  /// - Throws: `MetaweightError.invalidArgument` naming `context` and the position.
  public static func call(_ text: String, context: String, what: String = "a name") throws -> SpecCall {
    var s = SpecScanner(text, context: context)
    let c = try s.call(what)
    guard s.atEnd() else { throw s.error("unexpected text after \(c.name)(...)") }
    return c
  }

  /// Parses `text` as a bare argument list `key=value, ...` (a call's body; "" is no arguments).
  /// - Throws: `MetaweightError.invalidArgument` naming `context` and the position.
  public static func arguments(_ text: String, context: String) throws -> [SpecArgument] {
    var s = SpecScanner(text, context: context)
    if s.atEnd() { return [] }
    let args = try s.argumentList()
    guard s.atEnd() else { throw s.error("expected key=value") }
    return args
  }
}
