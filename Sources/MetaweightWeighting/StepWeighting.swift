import MetaweightTensor
import MetaweightLayers
import MetaweightOptim
import MetaweightTraining

/// One of L2RW, MW-Net, GDW or a baseline: a `StepWeighting` (the part of a step the trainer
/// drives, declared in MetaweightTraining) with its settings, V when it has one, its raw step
/// arrays and its `weighting.*` checkpoint section. `makeStepWeighting` builds the type of a parsed
/// `WeightingConfig`; `Trainer.method` gives it back from a trainer.
///
/// A method owns its buffers (kept between steps, so a step allocates nothing once they fit the
/// batch) and may use the trainer's train-batch buffers (tape, losses, probabilities, logit
/// gradients, coefficients, gradient) during its `step`.
public protocol WeightingMethod: StepWeighting {
  /// The method and its options.
  var config: WeightingConfig { get }
  /// Whether the method has class-level weights (GDW).
  var hasClassWeights: Bool { get }
  /// Class-level weights ω′ of the last step (n × C); empty for methods without them.
  var classWeights: FloatBuffer { get }
  /// The weighting net V (MW-Net, GDW); nil for other methods.
  var weightNet: WeightNet? { get }
  /// V's optimizer (MW-Net, GDW); nil for other methods.
  var weightNetOptimizer: Optimizer? { get }
  /// Whether `step` keeps the raw arrays of each step for `rawDiagnostic` (opt-in; off, a step
  /// copies nothing extra and takes bit-identical values either way).
  var recordsRaw: Bool { get set }
  /// The names of the method's raw step arrays (`rawDiagnostic`), e.g. ["u"] for L2RW; empty
  /// for methods without any.
  var rawNames: [String] { get }
  /// The last step's raw array `name` (one of `rawNames`) and its row count n: (values, n ×
  /// columns values). nil when the name is unknown or the last step was not recorded
  /// (`recordsRaw` off, or the step failed).
  func rawDiagnostic(_ name: String) -> (values: UnsafePointer<Float>, count: Int, rows: Int)?
  /// The method's random generator (`weighting.rng` in its checkpoint section; only the random
  /// baseline draws from it).
  var rng: RNG { get set }
}

extension Trainer {
  /// The trainer's weighting method (L2RW, MW-Net, GDW or a baseline); nil for ERM.
  public var method: WeightingMethod? { weighting as? WeightingMethod }
}

extension WeightingMethod {
  /// Whether every step needs a meta batch (L2RW, MW-Net, GDW).
  public var needsMeta: Bool { config.method.needsMeta }
  /// MW-Net and GDW update V (and its optimizer) inside their step, before its last checks.
  public var updatesOwnStateInStep: Bool { weightNet != nil }
  /// What the trainer's messages call the method: its `config.method`.
  public var methodName: String { "\(config.method)" }
  /// No class-level weights.
  public var hasClassWeights: Bool { false }
  /// No class-level weights.
  public var classWeights: FloatBuffer { FloatBuffer(count: 0) }
  /// No weighting net.
  public var weightNet: WeightNet? { nil }
  /// No weighting net.
  public var weightNetOptimizer: Optimizer? { nil }
  /// No weighting net.
  public var unitOutputs: UnsafePointer<Float>? { nil }
  /// No raw arrays: recording is a no-op.
  public var recordsRaw: Bool {
    get { false }
    set {}
  }
  /// No raw arrays.
  public var rawNames: [String] { [] }
  /// No raw arrays.
  public func rawDiagnostic(_ name: String) -> (values: UnsafePointer<Float>, count: Int, rows: Int)? { nil }
  /// Saves the method's checkpoint section (`weighting.*`: tag, generator, V and its optimizer).
  public func save(into ck: inout Checkpoint) {
    WeightingSection.save(config, rng: rng, weightNet: weightNet, optimizer: weightNetOptimizer, into: &ck)
  }
  /// Checks that `ck` holds this method's section (throws naming the mismatch).
  public func validate(_ ck: Checkpoint) throws {
    try WeightingSection.validate(config, weightNet: weightNet, optimizer: weightNetOptimizer, ck)
  }
  /// Restores from `ck` (validated first, so nothing changes on failure).
  public func restore(_ ck: Checkpoint) throws {
    try validate(ck)
    rng = try WeightingSection.restore(weightNet: weightNet, optimizer: weightNetOptimizer, ck)
  }
  /// The method's spec name (`MethodSpec.names`), e.g. "mwnet".
  public var name: String { MethodSpec.names.first { $0.value == config.method }?.key ?? "erm" }
}

/// The step-weighting type of `config`'s method, for `network`; nil for ERM (a trainer without
/// a weighting method takes plain steps). `seed` draws V's initialisation and the method's
/// random generator.
/// - Throws: `MetaweightError.invalidArgument` for invalid options.
public func makeStepWeighting(config: WeightingConfig, network: Network, seed: UInt64) throws -> WeightingMethod? {
  switch config.method {
  case .erm: return nil
  case .l2rw: return try L2RW(config: config, network: network, seed: seed)
  case .mwnet: return try MWNet(config: config, network: network, seed: seed)
  case .gdw: return try GDW(config: config, network: network, seed: seed)
  case .focal, .bootstrapSoft, .bootstrapHard: return try LossBaseline(config: config, network: network, seed: seed)
  case .classBalanced, .inverseFrequency, .hardMining, .randomGaussian, .selfPaced:
    return try WeightBaseline(config: config, network: network, seed: seed)
  }
}

/// The `weighting.*` checkpoint section every method writes: the method's tag, its random
/// generator and, for MW-Net and GDW, V and V's optimizer. Section names and seeding are those of
/// the file format (unchanged since version 1).
enum WeightingSection {
  /// V and its optimizer (when `config`'s method has a weighting net) and the method's random
  /// generator, drawn from `seed` in this order.
  static func seeds(config: WeightingConfig, seed: UInt64) -> (weightNet: WeightNet?, optimizer: Optimizer?, rng: RNG) {
    var seeder = RNG(seed: seed ^ 0x5EED_0F5E_ED00)
    var net: WeightNet?
    var opt: Optimizer?
    if config.method.hasWeightNet {
      net = WeightNet(hidden: config.weightNetHidden, seed: seeder.next())
      opt = Optimizer(config: config.weightNetOptimizer, count: 3 * config.weightNetHidden + 1)
    }
    return (net, opt, RNG(seed: seeder.next()))
  }

  /// Checks the options shared by every method's initialiser: valid for `network`, and `method`.
  static func check(_ config: WeightingConfig, is methods: [WeightingConfig.Method], network: Network) throws {
    try config.validate(classes: network.classes)
    guard methods.contains(config.method) else {
      throw MetaweightError.invalidArgument("method: this weighting type implements \(methods), got \(config.method)")
    }
  }

  /// Saves the method tag, `rng` and V with its optimizer.
  static func save(
    _ config: WeightingConfig, rng: RNG, weightNet: WeightNet?, optimizer: Optimizer?, into ck: inout Checkpoint
  ) {
    ck.ints["weighting.method"] = [Int64(config.method.rawValue)]
    ck.ints["weighting.rng"] = rng.stateWords.map { Int64(bitPattern: $0) }
    if let wn = weightNet, let opt = optimizer {
      ck.floats["weighting.net"] = wn.params.array
      ck.floats["weighting.opt.first"] = opt.first.array
      ck.floats["weighting.opt.second"] = opt.second.array
      ck.ints["weighting.opt.steps"] = [opt.steps]
    }
  }

  /// Checks that `ck` holds the section of `config`'s method with V's sizes.
  static func validate(
    _ config: WeightingConfig, weightNet: WeightNet?, optimizer: Optimizer?, _ ck: Checkpoint
  ) throws {
    let m = try ck.requireInts("weighting.method", count: 1)[0]
    guard m == Int64(config.method.rawValue) else {
      throw MetaweightError.io(
        "checkpoint: weighting method mismatch (file has method \(m), trainer has \(config.method))")
    }
    _ = try ck.requireInts("weighting.rng", count: 4)
    if let wn = weightNet, let opt = optimizer {
      _ = try ck.requireFloats("weighting.net", count: wn.params.count)
      _ = try ck.requireFloats("weighting.opt.first", count: opt.first.count)
      _ = try ck.requireFloats("weighting.opt.second", count: opt.second.count)
      _ = try ck.requireInts("weighting.opt.steps", count: 1)
    }
  }

  /// Restores V and its optimizer from a validated `ck`; returns the saved generator.
  static func restore(weightNet: WeightNet?, optimizer: Optimizer?, _ ck: Checkpoint) throws -> RNG {
    let rng = RNG(state: try ck.requireInts("weighting.rng", count: 4).map { UInt64(bitPattern: $0) })
    if let wn = weightNet, let opt = optimizer {
      let p = try ck.requireFloats("weighting.net", count: wn.params.count)
      wn.params.pointer.update(from: p, count: p.count)
      let f = try ck.requireFloats("weighting.opt.first", count: opt.first.count)
      opt.first.pointer.update(from: f, count: f.count)
      let s = try ck.requireFloats("weighting.opt.second", count: opt.second.count)
      opt.second.pointer.update(from: s, count: s.count)
      opt.steps = try ck.requireInts("weighting.opt.steps", count: 1)[0]
    }
    return rng
  }
}
