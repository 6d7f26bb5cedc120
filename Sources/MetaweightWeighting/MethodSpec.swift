import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining

/// Method specs such as `gdw(eta=100, clip=0.2)` or `class_balanced(beta=0.999,
/// class_counts=500x50x5)`: the core's one spec grammar (`SpecGrammar`), keys and values from the
/// method's settings table (`WeightingConfig.settings`).
public enum MethodSpec {
  /// Method names accepted (and their enum values).
  public static let names: [String: WeightingConfig.Method] = [
    "erm": .erm, "l2rw": .l2rw, "mwnet": .mwnet, "gdw": .gdw, "focal": .focal,
    "class_balanced": .classBalanced, "inverse_frequency": .inverseFrequency, "hard_mining": .hardMining,
    "random_gaussian": .randomGaussian, "self_paced": .selfPaced, "bootstrap_soft": .bootstrapSoft,
    "bootstrap_hard": .bootstrapHard,
  ]

  /// The spec name of `method`.
  public static func name(of method: WeightingConfig.Method) -> String {
    names.first { $0.value == method }?.key ?? "erm"
  }

  /// Parses `spec`, starting from the method's defaults; every value is range-checked as it is
  /// set (what depends on the network is checked by `WeightingConfig.validate(classes:)`).
  /// - Throws: `MetaweightError.invalidArgument` naming the unknown method or key, or a bad value.
  public static func parse(_ spec: String) throws -> WeightingConfig {
    let call = try SpecGrammar.call(spec, context: "method", what: "a method name")
    guard let method = names[call.name] else {
      throw MetaweightError.invalidArgument(
        "method: expected one of \(names.keys.sorted().joined(separator: ", ")), got '\(call.name)'")
    }
    var cfg = WeightingConfig.defaults(for: method)
    let table = WeightingConfig.table(for: method)
    try table.apply(call.arguments, to: &cfg) { key in
      let known = table.settings.map(\.name)
      return .invalidArgument(
        "method \(call.name): unknown option '\(key)'"
          + (known.isEmpty ? " (it has none)" : "; expected one of \(known.joined(separator: ", "))"))
    }
    return cfg
  }

  /// The canonical spec of `config`: its method's name and every setting of it, in table order.
  public static func canonical(_ config: WeightingConfig) -> String {
    SpecCall(name: name(of: config.method), arguments: WeightingConfig.table(for: config.method).arguments(config)).text
  }

  /// The methods' settings tables as JSON (`mw_settings_table("methods")`): per method its name,
  /// doc, what its steps need and its settings with their per-method defaults.
  public static var tableJSON: String {
    let methods = WeightingConfig.Method.allCases.map { m -> String in
      var o = JSONObject()
      o.add("name", JSON.string(name(of: m)))
      o.add("doc", JSON.string(m.summary))
      o.add("needs_meta", m.needsMeta ? "true" : "false")
      o.add("weight_net", m.hasWeightNet ? "true" : "false")
      o.add("class_weights", m.hasClassWeights ? "true" : "false")
      o.add("sample_weights", m.takesSampleWeights ? "true" : "false")
      o.add("settings", WeightingConfig.table(for: m).json(defaults: WeightingConfig.defaults(for: m)))
      return o.text
    }
    var o = JSONObject()
    o.add("kind", JSON.string("methods"))
    o.add("methods", "[" + methods.joined(separator: ", ") + "]")
    return o.text
  }
}
