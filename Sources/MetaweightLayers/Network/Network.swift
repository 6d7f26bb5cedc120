import MetaweightTensor

/// A classification network: a `Sequential` stack plus its flat parameter and state buffers.
///
/// Inputs arrive in the user's layout ([N, D] or [N, C, H, W]); image inputs are transposed once
/// to the internal channel-major layout. Every pass takes an explicit parameter pointer, so a
/// virtual step θ̂ is just another buffer — no network copy.
public final class Network: @unchecked Sendable {
  /// The layers.
  public let root: Sequential
  /// Trainable parameters θ (one flat buffer).
  public let params: FloatBuffer
  /// Non-trainable state (batch-norm running statistics).
  public let state: FloatBuffer
  /// One entry per parameter block: dotted name, offset and shape.
  public let parameterTable: [(name: String, offset: Int, shape: [Int])]
  /// One entry per state block.
  public let stateTable: [(name: String, offset: Int, shape: [Int])]
  /// Synchronised batch norm for the passes of a data-parallel step (set by the trainer during
  /// the step); nil = each batch's own statistics.
  public var batchNormSync: BatchNormSync?
  /// Number of output classes.
  public var classes: Int { root.outputLayout.size }
  /// Per-example input layout.
  public var inputLayout: Layout { root.inputLayout }
  /// Whether any layer depends on train/eval mode.
  public var hasModeDependence: Bool { root.hasModeDependence }
  /// A string identifying the architecture (layer kinds, layouts and parameter shapes).
  public let signature: String
  /// Activation floats one example needs in a training tape (every layer's output).
  public let activationFloatsPerExample: Int
  /// Largest parameter count a network may have (guards allocation from user specs).
  public static let maxParameters = 1 << 31

  /// Builds the network around `layers` and initialises its parameters from `seed`.
  /// - Throws: `MetaweightError.invalidArgument` if the output is not flat.
  public init(_ root: Sequential, seed: UInt64) throws {
    guard case .flat = root.outputLayout else {
      throw MetaweightError.invalidArgument(
        "network: expected the last layer to output class scores (flat), got \(root.outputLayout)")
    }
    self.root = root
    guard root.parameterCount <= Network.maxParameters else {
      throw MetaweightError.invalidArgument(
        "network: \(root.parameterCount) parameters exceed the limit of \(Network.maxParameters)")
    }
    var p = 0
    var s = 0
    root.assignOffsets(param: &p, state: &s)
    func floats(_ l: Layer) -> Int {
      l.children.isEmpty ? l.outputLayout.size : l.children.reduce(l.outputLayout.size) { $0 + floats($1) }
    }
    activationFloatsPerExample = floats(root)
    params = try FloatBuffer(allocating: p, what: "network parameters")
    state = try FloatBuffer(allocating: s, what: "network state")
    var ptable: [(String, Int, [Int])] = []
    var stable: [(String, Int, [Int])] = []
    var sig = "in\(root.inputLayout)"
    func walk(_ layer: Layer, _ path: String) {
      var o = layer.paramOffset
      for spec in layer.parameterSpecs {
        ptable.append(("\(path)\(layer.kind).\(spec.name)", o, spec.shape))
        o += spec.count
      }
      var so = layer.stateOffset
      for spec in layer.stateSpecs {
        stable.append(("\(path)\(layer.kind).\(spec.name)", so, spec.shape))
        so += spec.count
      }
      if layer.children.isEmpty { sig += "|\(layer.kind)\(layer.inputLayout)->\(layer.outputLayout)" }
      for (i, c) in layer.children.enumerated() { walk(c, "\(path)\(i).") }
    }
    for (i, c) in root.layers.enumerated() { walk(c, "\(i).") }
    parameterTable = ptable.map { (name: $0.0, offset: $0.1, shape: $0.2) }
    stateTable = stable.map { (name: $0.0, offset: $0.1, shape: $0.2) }
    signature = sig
    reset(seed: seed)
  }

  /// Re-initialises parameters and state from `seed`.
  public func reset(seed: UInt64) {
    var rng = RNG(seed: seed)
    func walk(_ layer: Layer) {
      var o = layer.paramOffset
      for spec in layer.parameterSpecs {
        spec.initializer.fill(params.pointer + o, count: spec.count, rng: &rng)
        o += spec.count
      }
      var so = layer.stateOffset
      for spec in layer.stateSpecs {
        spec.initializer.fill(state.pointer + so, count: spec.count, rng: &rng)
        so += spec.count
      }
      for c in layer.children { walk(c) }
    }
    walk(root)
  }

  /// Allocates activation storage for batches of up to `batch` examples.
  ///
  /// With `sharing`, the new tape uses that tape's scratch areas (im2col columns, the gradients
  /// and tangents flowing between layers) instead of its own: two tapes may share them when
  /// their passes never run at the same time, which is always the case within one trainer.
  public func makeTape(batch: Int, sharing: NetworkTape? = nil) -> NetworkTape {
    NetworkTape(self, batch: batch, sharing: sharing)
  }

  /// A tape for a second batch laid over `base`'s dead activations (those no backward or tangent
  /// pass over `base` reads after its forward pass; see `TapePlanner`), sharing its scratch
  /// areas: a forward, backward or tangent pass over it leaves every later pass over `base`
  /// unchanged. It allocates only what the dead buffers cannot hold (`ownedActivationBytes`).
  package func makeTape(batch: Int, overlaying base: NetworkTape) -> NetworkTape {
    NetworkTape(self, batch: batch, overlaying: base)
  }

  /// Bytes of the activation buffers of `tape` (its layers' outputs, without the input copy,
  /// logits, layer state and scratch).
  func activationBytes(_ tape: NetworkTape) -> Int { activationBytes(root: tape.root) }

  /// `activationBytes` of a root tape.
  func activationBytes(root rootTape: LayerTape) -> Int {
    var all = 0
    func walk(_ layer: Layer, _ t: LayerTape) {
      if let s = layer as? Sequential, let st = t as? Sequential.Tape {
        all += st.acts.reduce(0) { $0 + $1.count * 4 }
        for (i, c) in s.layers.enumerated() { walk(c, st.tapes[i]) }
      } else if let r = layer as? Residual, let rt = t as? Residual.Tape {
        all += rt.bodyOut.count * 4 + (rt.shortOut?.count ?? 0) * 4
        walk(r.body, rt.body)
        if let sc = r.shortcut, let st = rt.short { walk(sc, st) }
      }
    }
    walk(root, rootTape)
    return all
  }

  /// Forward pass: the logits [N, classes] land in `tape.logits`.
  ///
  /// - Parameters:
  ///   - input: N examples in the user layout.
  ///   - params: the parameter vector to use (defaults to `self.params`).
  public func forward(
    _ input: UnsafePointer<Float>, batch n: Int, tape: NetworkTape, mode: Mode, rng: RNGBox,
    params: UnsafePointer<Float>? = nil
  ) {
    var (ctx, x) = beginForward(input, batch: n, tape: tape, mode: mode, rng: rng, params: params)
    root.forward(x, tape.logits.pointer, &ctx, tape.root)
  }

  /// Points `tape` at batch `n`, `mode` and `params` (default: this network's), and prepares the input.
  private func beginForward(
    _ input: UnsafePointer<Float>, batch n: Int, tape: NetworkTape, mode: Mode, rng: RNGBox,
    params: UnsafePointer<Float>?
  ) -> (PassContext, UnsafePointer<Float>) {
    precondition(n <= tape.capacity, "forward: batch \(n) exceeds tape capacity \(tape.capacity)")
    tape.batch = n
    tape.mode = mode
    tape.params = params ?? UnsafePointer(self.params.pointer)
    return (context(tape, mode: mode, rng: rng), tape.prepareInput(input, n: n))
  }

  /// Backward pass from dlogits [N, classes]; writes ∂/∂θ into `grads` (overwriting).
  public func backward(tape: NetworkTape, dlogits: UnsafePointer<Float>, grads: UnsafeMutablePointer<Float>) {
    var ctx = context(tape, mode: tape.mode, rng: RNGBox(RNG(seed: 0)))
    ctx.grads = grads
    root.backward(
      tape.inputPointer, UnsafePointer(tape.logits.pointer), dlogits, nil, &ctx, tape.root)
  }

  /// Forward-mode JVP: the derivative of the logits recorded in `tape` along the parameter
  /// direction `direction` (same layout as θ), written to `out` [N, classes].
  public func jvp(tape: NetworkTape, direction: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
    var ctx = context(tape, mode: tape.mode, rng: RNGBox(RNG(seed: 0)))
    ctx.paramTangent = direction
    root.tangent(
      tape.inputPointer, UnsafePointer(tape.logits.pointer), nil, out, &ctx, tape.root)
  }

  private func context(_ tape: NetworkTape, mode: Mode, rng: RNGBox) -> PassContext {
    var ctx = PassContext(
      batch: tape.batch, params: tape.params, state: state.pointer, mode: mode, rng: rng,
      scratch: tape.scratch, buffers: tape.buffers)
    ctx.batchNormSync = batchNormSync
    return ctx
  }
}

/// Activation storage for one pass of a network over a batch.
public final class NetworkTape: @unchecked Sendable {
  /// Maximum batch size.
  public let capacity: Int
  /// Batch size of the last forward pass.
  public internal(set) var batch: Int = 0
  /// Mode of the last forward pass.
  public internal(set) var mode: Mode = .train
  /// Parameters used by the last forward pass.
  var params: UnsafePointer<Float>
  let root: LayerTape
  /// Logits [N, classes] of the last forward pass.
  public let logits: FloatBuffer
  let input: FloatBuffer
  var inputPointer: UnsafePointer<Float>
  /// im2col columns and similar temporaries of one layer.
  let scratch: Scratch
  /// Gradients and tangents flowing between layers.
  let buffers: ScratchPool
  let layout: Layout

  /// Bytes of activation buffers this tape allocated itself; the rest it borrows from the tape
  /// it overlays (`borrowed`). Equal to all of them for a tape of its own.
  let ownedActivationBytes: Int
  /// The overlaid tape's buffers this one uses (empty for a tape of its own).
  let borrowed: [FloatBuffer]
  /// The shared scratch-pool buffers its dead activations use (empty for a tape of its own).
  let lanes: [FloatBuffer]

  private init(
    _ net: Network, batch: Int, root: LayerTape, scratch: Scratch, buffers: ScratchPool, borrowed: [FloatBuffer],
    lanes: [FloatBuffer], ownedActivationBytes: Int
  ) {
    capacity = batch
    self.root = root
    self.scratch = scratch
    self.buffers = buffers
    input = FloatBuffer(count: batch * net.inputLayout.size)
    logits = FloatBuffer(count: batch * net.classes)
    layout = net.inputLayout
    params = UnsafePointer(net.params.pointer)
    inputPointer = UnsafePointer(input.pointer)
    self.borrowed = borrowed
    self.lanes = lanes
    self.ownedActivationBytes = ownedActivationBytes
  }

  convenience init(_ net: Network, batch: Int, sharing: NetworkTape? = nil) {
    let root = net.root.makeTape(batch: batch)
    self.init(
      net, batch: batch, root: root, scratch: sharing?.scratch ?? Scratch(), buffers: sharing?.buffers ?? ScratchPool(),
      borrowed: [], lanes: [], ownedActivationBytes: net.activationBytes(root: root))
  }

  package convenience init(_ net: Network, batch: Int, overlaying base: NetworkTape) {
    var donors: [FloatBuffer] = []
    deadActivations(of: net.root, base.root, into: &donors)
    // The pool slots' sizes once the train batch (`base.capacity`) and this batch have run their
    // backward and tangent passes.
    var poolSizes: [Int: Int] = [:]
    poolSlotSizes(of: net.root, depth: 0, batch: max(batch, base.capacity), into: &poolSizes)
    let planner = TapePlanner(donors: donors, pool: base.buffers, poolSizes: poolSizes)
    _ = net.root.makeTape(batch: batch, planner: planner)  // plan
    planner.resolve()
    let root = net.root.makeTape(batch: batch, planner: planner)  // build
    self.init(
      net, batch: batch, root: root, scratch: base.scratch, buffers: base.buffers, borrowed: planner.borrowed,
      lanes: planner.pooledLanes, ownedActivationBytes: planner.ownedBytes)
  }

  func prepareInput(_ x: UnsafePointer<Float>, n: Int) -> UnsafePointer<Float> {
    // The input is copied (and image batches transposed to channel-major) so later backward and
    // tangent passes never depend on the caller's memory.
    if case .image(let c, let h, let w) = layout {
      Elementwise.nchwToCnhw(x, input.pointer, n: n, c: c, hw: h * w)
    } else {
      input.pointer.update(from: x, count: n * layout.size)
    }
    return inputPointer
  }

  /// Bytes of activation storage held (scratch areas included, also when shared).
  public var bytes: Int { root.bytes + logits.count * 4 + input.count * 4 + scratch.bytes + buffers.bytes }
}
