import MetaweightTensor

/// Parses the network spec language of the C ABI (see `metaweight.h`) into layers.
///
///     spec  := item (';' item)*
///     item  := name ['(' key '=' value (',' key '=' value)* ')']
///            | 'residual' '{' spec ['|' spec] '}'
///     value := number | int 'x' int ...
public struct SpecParser {
  private let chars: [Character]
  private var pos = 0

  /// Parses `spec` for inputs of layout `input`.
  /// - Throws: `MetaweightError.invalidArgument` naming the position and problem.
  public static func parse(_ spec: String, input: Layout) throws -> Sequential {
    var p = SpecParser(chars: Array(spec))
    let layers = try p.sequence(input: input)
    p.skipSpace()
    guard p.pos == p.chars.count else { throw p.error("unexpected '\(p.chars[p.pos])'") }
    return try Sequential(layers)
  }

  private init(chars: [Character]) { self.chars = chars }

  private func error(_ what: String) -> MetaweightError {
    .invalidArgument("spec: \(what) at position \(pos)")
  }

  private mutating func skipSpace() { while pos < chars.count, chars[pos].isWhitespace { pos += 1 } }

  private mutating func accept(_ c: Character) -> Bool {
    skipSpace()
    if pos < chars.count, chars[pos] == c { pos += 1; return true }
    return false
  }

  private mutating func identifier() throws -> String {
    skipSpace()
    var s = ""
    while pos < chars.count, chars[pos].isLetter || chars[pos].isNumber || chars[pos] == "_" {
      s.append(chars[pos])
      pos += 1
    }
    guard !s.isEmpty else { throw error(pos < chars.count ? "expected a layer name, got '\(chars[pos])'" : "expected a layer name, got the end") }
    return s.lowercased()
  }

  private mutating func value() throws -> [Double] {
    skipSpace()
    var items: [Double] = []
    while true {
      var s = ""
      while pos < chars.count, chars[pos].isNumber || "+-.eE".contains(chars[pos]) {
        s.append(chars[pos])
        pos += 1
      }
      guard let v = Double(s), v.isFinite else { throw error("expected a number, got '\(s)'") }
      items.append(v)
      if pos < chars.count, chars[pos] == "x" { pos += 1 } else { break }
    }
    return items
  }

  private mutating func sequence(input: Layout) throws -> [Layer] {
    var layers: [Layer] = []
    var current = input
    repeat {
      let l = try item(input: current)
      layers.append(l)
      current = l.outputLayout
    } while accept(";")
    return layers
  }

  private mutating func item(input: Layout) throws -> Layer {
    let name = try identifier()
    if name == "residual" {
      guard accept("{") else { throw error("expected '{' after residual") }
      let body = try Sequential(try sequence(input: input))
      var shortcut: Layer? = nil
      if accept("|") { shortcut = try Sequential(try sequence(input: input)) }
      guard accept("}") else { throw error("expected '}' closing residual") }
      return try Residual(body: body, shortcut: shortcut)
    }
    var args: [String: [Double]] = [:]
    if accept("(") {
      if !accept(")") {
        repeat {
          let key = try identifier()
          guard accept("=") else { throw error("expected '=' after '\(key)'") }
          args[key] = try value()
        } while accept(",")
        guard accept(")") else { throw error("expected ')' closing \(name)") }
      }
    }
    var used = Set<String>()
    func int(_ key: String, _ def: Int? = nil) throws -> Int {
      used.insert(key)
      guard let v = args[key] else {
        if let d = def { return d }
        throw MetaweightError.invalidArgument("spec: \(name) needs '\(key)'")
      }
      guard v.count == 1, let first = v.first, first == first.rounded(), abs(first) < 1e9 else {
        throw MetaweightError.invalidArgument("spec: \(name).\(key): expected an integer, got \(v)")
      }
      return Int(first)
    }
    func float(_ key: String, _ def: Float) throws -> Float {
      used.insert(key)
      guard let v = args[key] else { return def }
      guard v.count == 1, let first = v.first else {
        throw MetaweightError.invalidArgument("spec: \(name).\(key): expected a number, got \(v)")
      }
      return Float(first)
    }
    func ints(_ key: String) throws -> [Int] {
      used.insert(key)
      guard let v = args[key] else { return [] }
      return try v.map {
        guard $0 == $0.rounded(), $0 > 0, $0 < 1e9 else {
          throw MetaweightError.invalidArgument("spec: \(name).\(key): expected positive integers, got \(v)")
        }
        return Int($0)
      }
    }
    func flatSize() throws -> Int {
      guard case .flat(let d) = input else {
        throw MetaweightError.invalidArgument("spec: \(name) expects a flat input, got \(input) (add 'flatten' or 'gap')")
      }
      return d
    }
    /// `algo=0|1|2`: the convolution algorithm preference (auto, gemm, winograd) of a conv layer
    /// or of every convolution of a preset.
    func algorithm() throws -> Conv2D.Algorithm? {
      guard args["algo"] != nil else {
        used.insert("algo")
        return nil
      }
      let v = try int("algo")
      guard let a = Conv2D.Algorithm(rawValue: Int32(v)) else {
        throw MetaweightError.invalidArgument("spec: \(name).algo: expected 0 (auto), 1 (gemm) or 2 (winograd), got \(v)")
      }
      return a
    }
    let layer: Layer
    switch name {
    case "linear":
      layer = try Linear(try flatSize(), try int("out"), bias: try int("bias", 1) != 0, kaiming: try int("kaiming", 0) != 0)
    case "conv2d", "conv":
      layer = try Conv2D(
        input: input, outChannels: try int("out"), kernel: try int("k"), stride: try int("s", 1),
        padding: try int("p", 0), bias: try int("bias", 0) != 0)
    case "batchnorm", "bn": layer = BatchNorm(input)
    case "relu": layer = ReLU(input)
    case "maxpool": layer = try MaxPool2D(input: input, kernel: try int("k"), stride: args["s"] == nil ? nil : try int("s"))
    case "avgpool": layer = try AvgPool2D(input: input, kernel: try int("k"), stride: args["s"] == nil ? nil : try int("s"))
    case "gap": layer = try GlobalAvgPool(input: input)
    case "flatten": layer = Flatten(input)
    case "dropout": layer = try Dropout(input, rate: try float("p", 0.5))
    case "shortcut_a": layer = try ShortcutA(input: input, outChannels: try int("out"), stride: try int("s", 1))
    case "mlp":
      let hidden = try ints("hidden")
      layer = try Models.mlp(
        widths: [try flatSize()] + hidden + [try int("classes")], batchNorm: try int("bn", 0) != 0,
        dropout: try float("dropout", 0))
    case "lenet5": layer = try Models.lenet5(input: input, classes: try int("classes"))
    case "resnet32": layer = try Models.cifarResNet(input: input, classes: try int("classes"), blocksPerStage: 5)
    case "resnet": layer = try Models.cifarResNet(input: input, classes: try int("classes"), blocksPerStage: try int("n", 5))
    case "wrn":
      layer = try Models.wideResNet(
        input: input, classes: try int("classes"), depth: try int("depth", 28), widen: try int("widen", 10),
        dropout: try float("dropout", 0))
    default:
      throw MetaweightError.invalidArgument("spec: unknown layer '\(name)'")
    }
    if ["conv2d", "conv", "lenet5", "resnet32", "resnet", "wrn"].contains(name), let a = try algorithm() {
      layer.setConvolutionAlgorithm(a)
    }
    if let extra = args.keys.first(where: { !used.contains($0) }) {
      throw MetaweightError.invalidArgument("spec: \(name) has no argument '\(extra)'")
    }
    return layer
  }
}
