import MetaweightTensor

/// Layers applied one after another.
///
/// Its tape keeps every intermediate activation (needed by backward and tangent passes). The
/// gradients and tangents flowing between its layers ping-pong between two `ScratchPool` slots of
/// its nesting depth, shared with every other block of that depth and between the two passes.
///
/// A `BatchNorm` immediately followed by a `ReLU` runs as one step (`Step`): one sweep writes the
/// ReLU's output straight from batch norm's input, and the backward and tangent sweeps apply the
/// ReLU's mask on the fly (`BatchNorm.forward(_:_:_:_:rectify:)`). Batch norm's output is then
/// never stored, so the tape does not allocate it. This is an execution detail, like a
/// convolution's algorithm: the layers, parameters, names and signature stay those of the two
/// layers, and the results are the same bits.
public final class Sequential: LeafLayer, Layer {
  /// The layers in order.
  public let layers: [Layer]
  /// `sequential`.
  public var kind: String { "sequential" }
  /// Input layout of the first layer.
  public let inputLayout: Layout
  /// Output layout of the last layer.
  public let outputLayout: Layout
  /// The layers.
  public var children: [Layer] { layers }
  /// True when any layer depends on the mode.
  public var hasModeDependence: Bool { layers.contains { $0.hasModeDependence } }
  /// Whether the first layer's derivatives read the block's input.
  public var derivativesReadInput: Bool { layers.first?.derivativesReadInput ?? true }
  /// Whether the last layer's derivatives read the block's output.
  public var derivativesReadOutput: Bool { layers.last?.derivativesReadOutput ?? true }

  /// Chains `layers`; each layer's input layout must equal its predecessor's output layout.
  /// - Throws: `MetaweightError.invalidArgument` on an empty list or a layout mismatch.
  public init(_ layers: [Layer]) throws {
    guard let first = layers.first, let last = layers.last else {
      throw MetaweightError.invalidArgument("layers: expected at least one layer, got none")
    }
    for i in 1..<max(layers.count, 1) where i < layers.count {
      guard layers[i].inputLayout == layers[i - 1].outputLayout else {
        throw MetaweightError.invalidArgument(
          "layers[\(i)] (\(layers[i].kind)): expected input \(layers[i - 1].outputLayout) from "
            + "layers[\(i - 1)] (\(layers[i - 1].kind)), got \(layers[i].inputLayout)")
      }
    }
    self.layers = layers
    inputLayout = first.inputLayout
    outputLayout = last.outputLayout
    fusible = layers.indices.map { i in
      i + 1 < layers.count && layers[i + 1] is ReLU ? layers[i] as? BatchNorm : nil
    }
    steps = Sequential.plan(fusible, fuse: true)
  }

  /// One step of a pass: the layers `first...last` run as one sweep, a single layer or (`fused`
  /// non-nil) a batch norm at `first` with the ReLU after it at `last = first + 1`.
  struct Step {
    /// Index of the step's first layer.
    let first: Int
    /// Index of the step's last layer (its output is the step's output).
    let last: Int
    /// The batch norm run fused with the ReLU at `last`, or nil for a single layer.
    let fused: BatchNorm?
  }

  /// At each index, the batch norm there when a ReLU immediately follows it (else nil).
  private let fusible: [BatchNorm?]

  /// Whether tapes made from now on run each batch norm that a ReLU follows fused with it (true);
  /// false runs the two layers apart, with batch norm's output stored (tests compare the two
  /// routes). A tape keeps the steps it was made with (`Tape.steps`).
  var fusesBatchNormReLU = true {
    didSet { steps = Sequential.plan(fusible, fuse: fusesBatchNormReLU) }
  }

  /// The steps of the passes over a tape made now (one array, shared by every tape).
  private(set) var steps: [Step]

  /// The steps over layers whose fusible batch norms are `fusible` (`fuse`: run them fused).
  private static func plan(_ fusible: [BatchNorm?], fuse: Bool) -> [Step] {
    var out: [Step] = []
    var i = 0
    while i < fusible.count {
      if fuse, let bn = fusible[i] {
        out.append(Step(first: i, last: i + 1, fused: bn))
        i += 2
      } else {
        out.append(Step(first: i, last: i, fused: nil))
        i += 1
      }
    }
    return out
  }

  /// The empty buffer a tape keeps in place of a fused batch norm's output (one for all tapes).
  static let unstored = FloatBuffer(count: 0)

  /// Whether a tape whose passes run `steps` stores layer `i`'s output: every layer's but that of
  /// a batch norm fused with its ReLU, which no pass writes or reads.
  static func stores(_ i: Int, steps: [Step]) -> Bool { !steps.contains { $0.fused != nil && $0.first == i } }

  final class Tape: LayerTape {
    /// Output of layer i (i < last): `Sequential.unstored` for a batch norm fused with its ReLU.
    var acts: [FloatBuffer]
    var tapes: [LayerTape]
    /// The steps its passes run (`Sequential.steps` when it was made).
    let steps: [Step]
    init(acts: [FloatBuffer], tapes: [LayerTape], steps: [Step]) {
      self.acts = acts
      self.tapes = tapes
      self.steps = steps
    }
    /// Whether layer `i`'s output is stored (false for a batch norm fused with its ReLU).
    func stores(_ i: Int) -> Bool { Sequential.stores(i, steps: steps) }
    override var bytes: Int { acts.reduce(0) { $0 + $1.count * 4 } + tapes.reduce(0) { $0 + $1.bytes } }
  }

  /// Allocates activations for `batch` examples (none for a batch norm fused with its ReLU).
  public func makeTape(batch: Int) -> LayerTape {
    var acts: [FloatBuffer] = []
    for i in 0..<(layers.count - 1) {
      acts.append(
        Sequential.stores(i, steps: steps) ? FloatBuffer(count: batch * layers[i].outputLayout.size) : Sequential.unstored)
    }
    return Tape(acts: acts, tapes: layers.map { $0.makeTape(batch: batch) }, steps: steps)
  }

  @inline(__always)
  private func output(_ i: Int, _ t: Tape, _ y: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
    i == layers.count - 1 ? y : t.acts[i].pointer
  }

  /// Runs every layer.
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    let t = tape as! Tape
    var input = x
    ctx.depth += 1
    defer { ctx.depth -= 1 }
    for step in t.steps {
      let out = output(step.last, t, y)
      if let bn = step.fused {
        bn.forward(input, out, &ctx, t.tapes[step.first], rectify: true)
      } else {
        layers[step.first].forward(input, out, &ctx, t.tapes[step.first])
      }
      input = UnsafePointer(out)
    }
  }

  /// Back-propagates through every layer in reverse.
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let t = tape as! Tape
    let n = ctx.batch
    var upstream = dy
    var role = 0
    let depth = ctx.depth
    ctx.depth += 1
    defer { ctx.depth -= 1 }
    for step in t.steps.reversed() {
      let i = step.first
      let lx: UnsafePointer<Float> = i == 0 ? x : UnsafePointer(t.acts[i - 1].pointer)
      let ly: UnsafePointer<Float> = step.last == layers.count - 1 ? y : UnsafePointer(t.acts[step.last].pointer)
      var down: UnsafeMutablePointer<Float>? = nil
      if i > 0 {
        down = ctx.buffers.pointer(ScratchPool.slot(depth: depth, role: role), count: n * layers[i].inputLayout.size)
        role = 1 - role
      } else {
        down = dx
      }
      if let bn = step.fused {
        bn.backward(lx, upstream, down, &ctx, t.tapes[i], gate: ly)
      } else {
        layers[i].backward(lx, ly, upstream, down, &ctx, t.tapes[i])
      }
      if let d = down { upstream = UnsafePointer(d) }
    }
  }

  /// Forward-mode derivative through every layer.
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let t = tape as! Tape
    let n = ctx.batch
    var tin = tx
    var role = 0
    let depth = ctx.depth
    ctx.depth += 1
    defer { ctx.depth -= 1 }
    for step in t.steps {
      let i = step.first, last = step.last
      let lx: UnsafePointer<Float> = i == 0 ? x : UnsafePointer(t.acts[i - 1].pointer)
      let ly: UnsafePointer<Float> = last == layers.count - 1 ? y : UnsafePointer(t.acts[last].pointer)
      let out: UnsafeMutablePointer<Float>
      if last == layers.count - 1 {
        out = ty
      } else {
        out = ctx.buffers.pointer(ScratchPool.slot(depth: depth, role: role), count: n * layers[last].outputLayout.size)
        role = 1 - role
      }
      // A layer without parameters and a zero input tangent has a zero output tangent.
      if let bn = step.fused {
        bn.tangent(lx, tin, out, &ctx, t.tapes[i], gate: ly)
      } else {
        layers[i].tangent(lx, ly, tin, out, &ctx, t.tapes[i])
      }
      tin = UnsafePointer(out)
    }
  }
}

/// y = body(x) + shortcut(x), with an identity shortcut when none is given.
public final class Residual: LeafLayer, Layer {
  /// Main branch.
  public let body: Sequential
  /// Projection branch (nil = identity).
  public let shortcut: Layer?
  /// `residual`.
  public var kind: String { "residual" }
  /// The body's input layout.
  public var inputLayout: Layout { body.inputLayout }
  /// The body's output layout.
  public var outputLayout: Layout { body.outputLayout }
  /// Body then shortcut.
  public var children: [Layer] { shortcut.map { [body, $0] } ?? [body] }
  /// True when either branch depends on the mode.
  public var hasModeDependence: Bool { body.hasModeDependence || (shortcut?.hasModeDependence ?? false) }
  /// Whether either branch's derivatives read the block's input.
  public var derivativesReadInput: Bool { body.derivativesReadInput || (shortcut?.derivativesReadInput ?? false) }
  /// False: the derivatives read the branches' outputs (kept in the tape), not their sum.
  public var derivativesReadOutput: Bool { false }

  /// Creates a residual connection.
  /// - Throws: `MetaweightError.invalidArgument` if the branches' layouts disagree.
  public init(body: Sequential, shortcut: Layer? = nil) throws {
    if let s = shortcut {
      guard s.inputLayout == body.inputLayout, s.outputLayout == body.outputLayout else {
        throw MetaweightError.invalidArgument(
          "shortcut: expected \(body.inputLayout) -> \(body.outputLayout), got "
            + "\(s.inputLayout) -> \(s.outputLayout)")
      }
    } else {
      guard body.inputLayout == body.outputLayout else {
        throw MetaweightError.invalidArgument(
          "residual body: an identity shortcut needs equal input and output layouts, got "
            + "\(body.inputLayout) -> \(body.outputLayout)")
      }
    }
    self.body = body
    self.shortcut = shortcut
  }

  final class Tape: LayerTape {
    let body: LayerTape
    let bodyOut: FloatBuffer
    let short: LayerTape?
    let shortOut: FloatBuffer?
    init(body: LayerTape, bodyOut: FloatBuffer, short: LayerTape?, shortOut: FloatBuffer?) {
      self.body = body
      self.bodyOut = bodyOut
      self.short = short
      self.shortOut = shortOut
    }
    override var bytes: Int {
      body.bytes + bodyOut.count * 4 + (short?.bytes ?? 0) + (shortOut?.count ?? 0) * 4
    }
  }

  /// Allocates both branches' tapes.
  public func makeTape(batch: Int) -> LayerTape {
    Tape(
      body: body.makeTape(batch: batch), bodyOut: FloatBuffer(count: batch * outputLayout.size),
      short: shortcut?.makeTape(batch: batch),
      shortOut: shortcut.map { _ in FloatBuffer(count: batch * outputLayout.size) })
  }

  /// y = body(x) + shortcut(x).
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape
  ) {
    let t = tape as! Tape
    let count = ctx.batch * outputLayout.size
    body.forward(x, t.bodyOut.pointer, &ctx, t.body)
    if let s = shortcut, let st = t.short, let so = t.shortOut {
      s.forward(x, so.pointer, &ctx, st)
      Elementwise.sum(UnsafePointer(t.bodyOut.pointer), UnsafePointer(so.pointer), into: y, count: count)
    } else {
      Elementwise.sum(UnsafePointer(t.bodyOut.pointer), x, into: y, count: count)
    }
  }

  /// dx = body'ᵀdy + shortcut'ᵀdy.
  public func backward(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>?, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let t = tape as! Tape
    let inCount = ctx.batch * inputLayout.size
    body.backward(x, UnsafePointer(t.bodyOut.pointer), dy, dx, &ctx, t.body)
    if let s = shortcut, let st = t.short, let so = t.shortOut {
      let tmp: UnsafeMutablePointer<Float>? =
        dx == nil ? nil : ctx.buffers.pointer(ScratchPool.slot(depth: ctx.depth, role: 2), count: inCount)
      s.backward(x, UnsafePointer(so.pointer), dy, tmp, &ctx, st)
      if let d = dx, let tm = tmp { Elementwise.add(UnsafePointer(tm), into: d, count: inCount) }
    } else if let d = dx {
      Elementwise.add(dy, into: d, count: inCount)
    }
  }

  /// ty = body'·t + shortcut'·t.
  public func tangent(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?,
    _ ty: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape
  ) {
    let t = tape as! Tape
    let outCount = ctx.batch * outputLayout.size
    body.tangent(x, UnsafePointer(t.bodyOut.pointer), tx, ty, &ctx, t.body)
    if let s = shortcut, let st = t.short, let so = t.shortOut {
      let tmp = ctx.buffers.pointer(ScratchPool.slot(depth: ctx.depth, role: 2), count: outCount)
      s.tangent(x, UnsafePointer(so.pointer), tx, tmp, &ctx, st)
      Elementwise.add(UnsafePointer(tmp), into: ty, count: outCount)
    } else if let t0 = tx {
      Elementwise.add(t0, into: ty, count: outCount)
    }
  }
}
