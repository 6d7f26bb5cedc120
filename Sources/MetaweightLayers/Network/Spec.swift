import MetaweightTensor

/// Parses the network spec language of the C ABI (see `metaweight.h`) into layers: the core's
/// one spec grammar (`SpecScanner`: `name(key=value, ...)` calls) with layer names as its
/// vocabulary, items joined by `;` and residual blocks `residual{body | shortcut}`.
///
///     spec  := item (';' item)*
///     item  := call                                   (a layer or preset, see metaweight.h)
///            | 'residual' '{' spec ['|' spec] '}'
///     value := number | int 'x' int ...               (a list, e.g. hidden=256x256)
public struct SpecParser {
  private var scanner: SpecScanner

  /// Parses `spec` for inputs of layout `input`.
  /// - Throws: `MetaweightError.invalidArgument` naming the position and problem.
  public static func parse(_ spec: String, input: Layout) throws -> Sequential {
    var p = SpecParser(scanner: SpecScanner(spec, context: "spec"))
    let layers = try p.sequence(input: input)
    if let c = p.scanner.peek() { throw p.scanner.error("unexpected '\(c)'") }
    return try Sequential(layers)
  }

  private init(scanner: SpecScanner) { self.scanner = scanner }

  private mutating func accept(_ c: Character) -> Bool { scanner.accept(c) }

  /// A value of the network vocabulary: numbers, or integers joined by 'x'.
  private func numbers(_ raw: String, _ name: String, _ key: String) throws -> [Double] {
    try raw.split(separator: "x", omittingEmptySubsequences: false).map {
      guard let v = Double(String($0)), v.isFinite else {
        throw MetaweightError.invalidArgument("spec: \(name).\(key): expected a number, got '\(raw)'")
      }
      return v
    }
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
    let name = try scanner.identifier("a layer name")
    if name == "residual" {
      guard accept("{") else { throw scanner.error("expected '{' after residual") }
      let body = try Sequential(try sequence(input: input))
      var shortcut: Layer? = nil
      if accept("|") { shortcut = try Sequential(try sequence(input: input)) }
      guard accept("}") else { throw scanner.error("expected '}' closing residual") }
      return try Residual(body: body, shortcut: shortcut)
    }
    var args: [String: [Double]] = [:]
    for a in try scanner.arguments(of: name) { args[a.key] = try numbers(a.value, name, a.key) }
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
