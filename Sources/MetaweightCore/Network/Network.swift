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
    params = FloatBuffer(count: p)
    state = FloatBuffer(count: s)
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

  /// A tape for a second batch that also shares `base`'s activations of the first `layers` spine
  /// layers (the root's layers, nested sequential blocks expanded; see `Sequential.spineCount`)
  /// and, when `layers` > 0, its input copy: a pass through it overwrites them, and
  /// `forward(_:batch:tape:mode:rng:params:layers:)` on `base` restores them. The last spine
  /// layer is never shared. `base` must hold at least `batch` examples.
  func makeTape(batch: Int, sharing base: NetworkTape, layers: Int) -> NetworkTape {
    NetworkTape(self, batch: batch, sharing: base, layers: min(layers, root.spineCount - 1))
  }

  /// Bytes each spine layer holds in `tape` (its tape and output buffer).
  func spineBytes(_ tape: NetworkTape) -> [Int] {
    var out: [Int] = []
    root.spineBytes(tape.root, into: &out)
    return out
  }

  /// How many of the first `shared` spine layers a forward pass must run again to restore what
  /// later passes over `tape` read, after another pass overwrote those layers' storage: all of
  /// them, less a tail of layers that keep no state of their own (a plain `LayerTape`) and whose
  /// output neither they nor the next layer read (`derivativesReadOutput`, `derivativesReadInput`
  /// false: e.g. a convolution followed by a ReLU); never fewer than one (the input copy).
  func layersToRecompute(_ tape: NetworkTape, shared: Int) -> Int {
    var spine: [(layer: Layer, tape: LayerTape)] = []
    root.spine(tape.root, into: &spine)
    var r = min(shared, spine.count - 1)
    while r >= 2 && !spine[r].layer.derivativesReadInput && !spine[r - 1].layer.derivativesReadOutput
      && type(of: spine[r - 1].tape) == LayerTape.self
    {
      r -= 1
    }
    return r
  }

  /// Activation bytes of `tape` (what it holds apart from its input copy and scratch).
  func layerBytes(_ tape: NetworkTape) -> Int { spineBytes(tape).reduce(0, +) }

  /// The most spine layers, counted from the first, whose activations a tape for `batch` examples
  /// may share with `base` while what it holds apart (the later layers' activations and tapes)
  /// stays within `budget` bytes; at most all but the last.
  func shareableLayers(base: NetworkTape, batch: Int, budget: Int) -> Int {
    let bytes = spineBytes(base).map { $0 * batch / max(base.capacity, 1) }
    var shared = bytes.count - 1
    var own = bytes.last ?? 0
    while shared > 0 && own + bytes[shared - 1] <= budget {
      own += bytes[shared - 1]
      shared -= 1
    }
    return shared
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

  /// Forward pass through the first `layers` spine layers only (fewer than all of them): it
  /// rewrites their activations in `tape` and leaves the later layers' and the logits as they are.
  func forward(
    _ input: UnsafePointer<Float>, batch n: Int, tape: NetworkTape, mode: Mode, rng: RNGBox,
    params: UnsafePointer<Float>? = nil, layers: Int
  ) {
    var (ctx, x) = beginForward(input, batch: n, tape: tape, mode: mode, rng: rng, params: params)
    root.forward(x, spine: layers, &ctx, tape.root)
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
    PassContext(
      batch: tape.batch, params: tape.params, state: state.pointer, mode: mode, rng: rng,
      scratch: tape.scratch, buffers: tape.buffers)
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

  init(_ net: Network, batch: Int, sharing: NetworkTape? = nil, layers shared: Int = 0) {
    capacity = batch
    scratch = sharing?.scratch ?? Scratch()
    buffers = sharing?.buffers ?? ScratchPool()
    if let base = sharing, shared > 0 {
      root = net.root.makeTape(batch: batch, sharing: base.root, spine: shared)
      input = base.input
    } else {
      root = net.root.makeTape(batch: batch)
      input = FloatBuffer(count: batch * net.inputLayout.size)
    }
    logits = FloatBuffer(count: batch * net.classes)
    layout = net.inputLayout
    params = UnsafePointer(net.params.pointer)
    inputPointer = UnsafePointer(input.pointer)
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
