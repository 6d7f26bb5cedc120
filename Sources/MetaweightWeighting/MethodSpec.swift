import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining

/// Parses a method spec such as `gdw(eta=100, clip=0.2)` or `class_balanced(beta=0.999,
/// counts=500x50x5)` into a `WeightingConfig`. Keys are listed in `metaweight.h`.
public enum MethodSpec {
  /// Method names accepted (and their enum values).
  public static let names: [String: WeightingConfig.Method] = [
    "erm": .erm, "l2rw": .l2rw, "mwnet": .mwnet, "gdw": .gdw, "focal": .focal,
    "class_balanced": .classBalanced, "inverse_frequency": .inverseFrequency, "hard_mining": .hardMining,
    "random_gaussian": .randomGaussian, "self_paced": .selfPaced, "bootstrap_soft": .bootstrapSoft,
    "bootstrap_hard": .bootstrapHard,
  ]

  /// Parses `spec`.
  /// - Throws: `MetaweightError.invalidArgument` naming the unknown method or key, or a bad value.
  public static func parse(_ spec: String) throws -> WeightingConfig {
    let trimmed = spec.trimmingCharacters(in: " ")
    var name = trimmed
    var body = ""
    if let open = trimmed.firstIndex(of: "(") {
      guard trimmed.hasSuffix(")") else { throw MetaweightError.invalidArgument("method: missing ')' in '\(spec)'") }
      name = String(trimmed[..<open]).trimmingCharacters(in: " ")
      body = String(trimmed[trimmed.index(after: open)..<trimmed.index(before: trimmed.endIndex)])
    }
    guard let method = names[name.lowercased()] else {
      throw MetaweightError.invalidArgument(
        "method: expected one of \(names.keys.sorted().joined(separator: ", ")), got '\(name)'")
    }
    var cfg = WeightingConfig()
    cfg.method = method
    if method == .bootstrapHard { cfg.bootstrapBeta = 0.8 }
    // MW-Net normalises its weights by their batch sum unless told otherwise (README, "Choosing the
    // defaults": un-normalised weights let Adam turn V into an increasing function under noise).
    if method == .mwnet { cfg.normalizeWeights = true }
    for part in body.split(separator: ",") {
      let kv = part.split(separator: "=", maxSplits: 1).map { String($0).trimmingCharacters(in: " ") }
      guard kv.count == 2, !kv[0].isEmpty else {
        throw MetaweightError.invalidArgument("method options: expected key=value, got '\(part)'")
      }
      let key = kv[0].lowercased(), raw = kv[1]
      func num() throws -> Float {
        guard let v = Float(raw), v.isFinite else {
          throw MetaweightError.invalidArgument("\(key): expected a finite number, got '\(raw)'")
        }
        return v
      }
      func flag() throws -> Bool {
        switch raw.lowercased() {
        case "1", "true", "yes": return true
        case "0", "false", "no": return false
        default: throw MetaweightError.invalidArgument("\(key): expected 0/1 or true/false, got '\(raw)'")
        }
      }
      func int() throws -> Int64 {
        guard let v = Int64(raw) else { throw MetaweightError.invalidArgument("\(key): expected an integer, got '\(raw)'") }
        return v
      }
      switch key {
      case "virtual_momentum": cfg.virtualStepMomentum = try flag()
      case "virtual_lr": cfg.virtualLR = try num()
      case "memory":
        switch raw.lowercased() {
        case "fast": cfg.memory = .fast
        case "low": cfg.memory = .low
        default: throw MetaweightError.invalidArgument("memory: expected 'fast' or 'low', got '\(raw)'")
        }
      case "normalize": cfg.normalizeWeights = try flag()
      case "detach": cfg.detachLoss = try flag()
      case "hidden":
        let h = try int()
        guard h > 0, h <= 100_000 else { throw MetaweightError.invalidArgument("hidden: expected 1..100000, got \(h)") }
        cfg.weightNetHidden = Int(h)
      case "wn_lr": cfg.weightNetLR = try num()
      case "wn_wd": cfg.weightNetOptimizer.weightDecay = try num()
      case "wn_momentum": cfg.weightNetOptimizer.momentum = try num()
      case "wn_opt":
        switch raw.lowercased() {
        case "adam": cfg.weightNetOptimizer.kind = .adam
        case "sgd": cfg.weightNetOptimizer.kind = .sgd
        default: throw MetaweightError.invalidArgument("wn_opt: expected 'adam' or 'sgd', got '\(raw)'")
        }
      case "eta": cfg.gdwEta = try num()
      case "clip": cfg.gdwClip = try num()
      case "clamp_min": cfg.gdwMin = try num()
      case "clamp_max": cfg.gdwMax = try num()
      case "prob_clamp": cfg.gdwProbClamp = try num()
      case "gamma": cfg.focalGamma = try num()
      case "beta":
        if method == .classBalanced { cfg.classBalancedBeta = try num() } else { cfg.bootstrapBeta = try num() }
      case "counts":
        cfg.classCounts = try raw.split(separator: "x").map {
          guard let v = Int64($0) else { throw MetaweightError.invalidArgument("counts: expected integers joined by 'x', got '\(raw)'") }
          return v
        }
      case "fraction": cfg.hardFraction = try num()
      case "threshold": cfg.selfPacedThreshold = try num()
      case "growth": cfg.selfPacedGrowth = try num()
      case "interval": cfg.selfPacedInterval = try int()
      default:
        throw MetaweightError.invalidArgument("method \(name): unknown option '\(key)'")
      }
    }
    return cfg
  }
}

extension String {
  fileprivate func trimmingCharacters(in set: Character) -> String {
    var s = Substring(self)
    while s.first == set { s.removeFirst() }
    while s.last == set { s.removeLast() }
    return String(s)
  }
}
