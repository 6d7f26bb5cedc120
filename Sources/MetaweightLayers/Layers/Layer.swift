import MetaweightTensor

/// Per-example layout of an activation and how a batch of them is stored.
///
/// `.flat(d)` is stored row-major as [N, d]. `.image(c, h, w)` is stored *channel-major* as
/// [C, N, H, W]: a convolution is then one GEMM W[Cout, Cin·k·k] × col[Cin·k·k, N·H·W] whose
/// output is already in this layout, and batch-norm statistics run over contiguous rows.
public enum Layout: Equatable, Sendable, CustomStringConvertible {
  /// A vector of `d` features per example.
  case flat(Int)
  /// `c` channels of `h`×`w` pixels per example.
  case image(c: Int, h: Int, w: Int)

  /// Elements per example.
  public var size: Int {
    switch self {
    case .flat(let d): return d
    case .image(let c, let h, let w): return c * h * w
    }
  }

  /// Human-readable form, e.g. `(3, 32, 32)`.
  public var description: String {
    switch self {
    case .flat(let d): return "(\(d))"
    case .image(let c, let h, let w): return "(\(c), \(h), \(w))"
    }
  }
}

/// How a forward pass treats batch norm and dropout.
public enum Mode: Sendable {
  /// Batch statistics, running statistics updated, dropout active.
  case train
  /// Batch statistics, running statistics untouched, dropout active: every virtual pass of the
  /// meta-weighting methods (at θ̂, or at θ for the meta batch) uses this.
  case virtualTrain
  /// Running statistics, no dropout.
  case eval

  /// Whether batch statistics are used.
  public var usesBatchStatistics: Bool { self != .eval }
}

/// How a parameter is initialised.
public enum Initializer: Sendable {
  /// All zeros.
  case zeros
  /// All ones.
  case ones
  /// N(0, 2/fanIn) — He/Kaiming normal, as the reference ResNet codes use for convolutions.
  case kaimingNormal(fanIn: Int)
  /// U(−bound, bound) — PyTorch's default for linear layers uses bound = 1/√fanIn.
  case uniform(bound: Float)

  func fill(_ p: UnsafeMutablePointer<Float>, count: Int, rng: inout RNG) {
    switch self {
    case .zeros: p.update(repeating: 0, count: count)
    case .ones: p.update(repeating: 1, count: count)
    case .kaimingNormal(let fanIn):
      let std = (2.0 / Float(max(fanIn, 1))).squareRoot()
      for i in 0..<count { p[i] = rng.normal() * std }
    case .uniform(let bound):
      for i in 0..<count { p[i] = (2 * rng.uniform() - 1) * bound }
    }
  }
}

/// A named block of a layer's parameters (or non-trainable state) inside the flat buffer.
public struct ParameterSpec: Sendable {
  /// Local name, e.g. `weight`.
  public var name: String
  /// Logical shape, e.g. [out, in].
  public var shape: [Int]
  /// How it is initialised.
  public var initializer: Initializer
  /// Number of elements.
  public var count: Int { shape.reduce(1, *) }
  /// Creates a spec.
  public init(_ name: String, _ shape: [Int], _ initializer: Initializer) {
    self.name = name
    self.shape = shape
    self.initializer = initializer
  }
}

/// A reference-typed box for the generator dropout draws from.
public final class RNGBox: @unchecked Sendable {
  /// The generator.
  public var rng: RNG
  /// Boxes a generator.
  public init(_ rng: RNG) { self.rng = rng }
}

/// Everything a pass needs besides the activations: batch size, parameter/state/gradient/tangent
/// base pointers (layers add their own offsets), mode and randomness.
public struct PassContext {
  /// Number of examples in the batch.
  public var batch: Int
  /// Base of the flat parameter vector the pass reads (θ, or a virtual θ̂).
  public var params: UnsafePointer<Float>
  /// Base of the flat non-trainable state (batch-norm running statistics).
  public var state: UnsafeMutablePointer<Float>
  /// Base of the flat gradient vector `backward` writes (overwrites) into, or nil.
  public var grads: UnsafeMutablePointer<Float>?
  /// Base of the parameter-space direction `tangent` differentiates along, or nil for zero.
  public var paramTangent: UnsafePointer<Float>?
  /// Batch-norm / dropout behaviour.
  public var mode: Mode
  /// Generator for dropout masks.
  public var rng: RNGBox
  /// Shared scratch for im2col and similar temporaries.
  public var scratch: Scratch
  /// Buffers for the activation gradients and tangents flowing between layers, shared by every
  /// composite layer of one nesting depth (see `ScratchPool.slot`).
  public var buffers: ScratchPool
  /// Nesting depth of the layer being run (0 for the network's root).
  public var depth: Int = 0
  /// Batch-norm momentum for running statistics.
  public var bnMomentum: Float = 0.1
  /// Synchronised batch norm: the collective of a data-parallel step (nil: local statistics).
  public var batchNormSync: BatchNormSync? = nil

  /// Creates a context.
  public init(
    batch: Int, params: UnsafePointer<Float>, state: UnsafeMutablePointer<Float>,
    grads: UnsafeMutablePointer<Float>? = nil, paramTangent: UnsafePointer<Float>? = nil,
    mode: Mode, rng: RNGBox, scratch: Scratch, buffers: ScratchPool = ScratchPool()
  ) {
    self.batch = batch
    self.params = params
    self.state = state
    self.grads = grads
    self.paramTangent = paramTangent
    self.mode = mode
    self.rng = rng
    self.scratch = scratch
    self.buffers = buffers
  }
}

/// Scratch areas indexed by slot, for the gradients and tangents that composite layers pass
/// between their children during backward and tangent passes.
///
/// A composite layer at nesting depth d uses only the slots `slot(d, 0...2)`: a `Sequential`
/// ping-pongs between roles 0 and 1 and a `Residual` keeps its shortcut's result in role 2 (or,
/// with an identity shortcut and fused with the ReLU after it, its masked output gradient). What
/// flows into and out of a composite layer lives in its parent's slots (depth d − 1) or in the
/// caller's memory, so the blocks of one depth can share slots: passes run one at a time and
/// a block's slots are dead when it returns. The buffers therefore scale with the largest
/// activation, not with the number of blocks, and the backward and tangent passes share them.
public final class ScratchPool: @unchecked Sendable {
  private var areas: [Scratch] = []
  /// Creates an empty pool.
  public init() {}
  /// The slot of `role` (0, 1 or 2) at nesting depth `depth`.
  @inline(__always)
  public static func slot(depth: Int, role: Int) -> Int { 3 * depth + role }
  /// At least `count` floats in `slot` (contents undefined; a larger request reallocates it).
  public func pointer(_ slot: Int, count: Int) -> UnsafeMutablePointer<Float> { buffer(slot, count: count).pointer }
  /// The buffer of `slot`, grown to at least `count` floats (see `Scratch.buffer(count:)`).
  public func buffer(_ slot: Int, count: Int) -> FloatBuffer {
    while areas.count <= slot { areas.append(Scratch()) }
    return areas[slot].buffer(count: count)
  }
  /// Bytes currently held.
  public var bytes: Int { areas.reduce(0) { $0 + $1.bytes } }
  /// Bytes held per slot.
  var slotBytes: [Int] { areas.map(\.bytes) }
}

/// Storage one layer keeps between its forward pass and the matching backward/tangent pass
/// (dropout masks, pooling arg-maxes, batch-norm statistics, sub-layer activations).
open class LayerTape {
  /// Creates an empty tape.
  public init() {}
  /// Bytes held (for memory reports).
  open var bytes: Int { 0 }
}

/// A differentiable layer: a forward / backward / tangent triple over plain buffers.
///
/// Shapes use `Layout` (per example) with batch `ctx.batch`. Parameters live in one flat vector;
/// a layer reads its own slice at `paramOffset`. `backward` writes (not accumulates) the
/// parameter gradient at the same offsets of `ctx.grads` and, when `dx` is non-nil, the input
/// gradient. `tangent` is the exact forward-mode derivative (JVP) of the output along the
/// input tangent `tx` (nil = 0) and the parameter tangent `ctx.paramTangent` (nil = 0),
/// evaluated at the point the forward pass recorded in `tape`.
public protocol Layer: AnyObject {
  /// Short kind name, e.g. `conv2d`.
  var kind: String { get }
  /// Per-example input layout.
  var inputLayout: Layout { get }
  /// Per-example output layout.
  var outputLayout: Layout { get }
  /// Trainable parameter blocks, in storage order.
  var parameterSpecs: [ParameterSpec] { get }
  /// Non-trainable state blocks (running statistics), in storage order.
  var stateSpecs: [ParameterSpec] { get }
  /// Offset of this layer's first parameter in the flat vector (set by the network).
  var paramOffset: Int { get set }
  /// Offset of this layer's first state element (set by the network).
  var stateOffset: Int { get set }
  /// Sub-layers of a composite layer (empty for a leaf).
  var children: [Layer] { get }
  /// Whether the layer behaves differently in train and eval modes (dropout, batch norm).
  var hasModeDependence: Bool { get }
  /// Whether `backward` and `tangent` read the forward pass's input `x` (else only `y`, the tape
  /// and the incoming derivative): when false, the input need not be kept after the forward pass.
  var derivativesReadInput: Bool { get }
  /// Whether `backward` and `tangent` read the forward pass's output `y`.
  var derivativesReadOutput: Bool { get }

  /// Allocates the tape for batches of at most `batch` examples.
  func makeTape(batch: Int) -> LayerTape
  /// y = f(x; θ).
  func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape)
  /// Gradients from dy; `x`, `y` are the forward pass's input and output.
  func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape)
  /// Forward-mode derivative of y along (tx, ctx.paramTangent).
  func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape)
}

extension Layer {
  /// Total trainable parameter count, children included.
  public var parameterCount: Int {
    parameterSpecs.reduce(0) { $0 + $1.count } + children.reduce(0) { $0 + $1.parameterCount }
  }
  /// Total state count, children included.
  public var stateCount: Int {
    stateSpecs.reduce(0) { $0 + $1.count } + children.reduce(0) { $0 + $1.stateCount }
  }
  /// Default: no sub-layers.
  public var children: [Layer] { [] }
  /// Default: no state.
  public var stateSpecs: [ParameterSpec] { [] }
  /// Default: no parameters.
  public var parameterSpecs: [ParameterSpec] { [] }
  /// Default: same in every mode.
  public var hasModeDependence: Bool { false }
  /// Default: the derivatives read the input.
  public var derivativesReadInput: Bool { true }
  /// Default: the derivatives read the output.
  public var derivativesReadOutput: Bool { true }
  /// Default: an empty tape.
  public func makeTape(batch: Int) -> LayerTape { LayerTape() }

  /// Assigns flat-buffer offsets to this layer and its children, depth first.
  public func assignOffsets(param: inout Int, state: inout Int) {
    paramOffset = param
    stateOffset = state
    param += parameterSpecs.reduce(0) { $0 + $1.count }
    state += stateSpecs.reduce(0) { $0 + $1.count }
    for c in children { c.assignOffsets(param: &param, state: &state) }
  }
}

/// Base class for leaf layers that keeps offsets.
open class LeafLayer {
  /// Offset into the flat parameter vector.
  public var paramOffset: Int = 0
  /// Offset into the flat state vector.
  public var stateOffset: Int = 0
  /// Creates the base.
  public init() {}
}
