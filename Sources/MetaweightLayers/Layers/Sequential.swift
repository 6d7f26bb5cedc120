import MetaweightTensor

/// Layers applied one after another.
///
/// Its tape keeps every intermediate activation (needed by backward and tangent passes). The
/// gradients and tangents flowing between its layers ping-pong between two `ScratchPool` slots of
/// its nesting depth, shared with every other block of that depth and between the two passes.
///
/// A `BatchNorm` or an identity-shortcut `Residual` block immediately followed by a `ReLU` runs as
/// one step (`Step`, `ReLUFusible`): batch norm's sweep writes the ReLU's output straight from its
/// input, a residual block's sum writes max(0, body + x), and the backward and tangent passes
/// apply the ReLU's mask [z > 0] themselves. The fused layer's own output is then never stored, so the tape
/// does not allocate it (for a ResNet, one activation per block). This is an execution detail,
/// like a convolution's algorithm: the layers, parameters, names and signature stay those of the
/// two layers, and the results are the same bits.
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
      guard i + 1 < layers.count, layers[i + 1] is ReLU, let f = layers[i] as? ReLUFusible, f.fusesWithReLU else {
        return nil
      }
      return f
    }
    steps = Sequential.plan(fusible, fuse: true)
  }

  /// One step of a pass: the layers `first...last` run as one sweep, a single layer or (`fused`
  /// non-nil) a batch norm or residual block at `first` with the ReLU after it at `last = first + 1`.
  struct Step {
    /// Index of the step's first layer.
    let first: Int
    /// Index of the step's last layer (its output is the step's output).
    let last: Int
    /// The layer run fused with the ReLU at `last`, or nil for a single layer.
    let fused: ReLUFusible?
  }

  /// At each index, the batch norm or residual block there when a ReLU immediately follows it
  /// (else nil).
  private let fusible: [ReLUFusible?]

  /// Whether tapes made from now on run each batch norm or residual block that a ReLU follows
  /// fused with it (true); false runs the two layers apart, with the first one's output stored
  /// (tests compare the two routes). A tape keeps the steps it was made with (`Tape.steps`).
  var fusesReLU = true {
    didSet { steps = Sequential.plan(fusible, fuse: fusesReLU) }
  }

  /// The steps of the passes over a tape made now (one array, shared by every tape).
  private(set) var steps: [Step]

  /// The steps over layers whose fusible layers are `fusible` (`fuse`: run them fused).
  private static func plan(_ fusible: [ReLUFusible?], fuse: Bool) -> [Step] {
    var out: [Step] = []
    var i = 0
    while i < fusible.count {
      if fuse, let layer = fusible[i] {
        out.append(Step(first: i, last: i + 1, fused: layer))
        i += 2
      } else {
        out.append(Step(first: i, last: i, fused: nil))
        i += 1
      }
    }
    return out
  }

  /// The empty buffer a tape keeps in place of a fused layer's output (one for all tapes).
  static let unstored = FloatBuffer(count: 0)

  /// Whether a tape whose passes run `steps` stores layer `i`'s output: every layer's but that of
  /// a layer fused with its ReLU, which no pass writes or reads.
  static func stores(_ i: Int, steps: [Step]) -> Bool { !steps.contains { $0.fused != nil && $0.first == i } }

  final class Tape: LayerTape {
    /// Output of layer i (i < last): `Sequential.unstored` for a layer fused with its ReLU.
    var acts: [FloatBuffer]
    var tapes: [LayerTape]
    /// The steps its passes run (`Sequential.steps` when it was made).
    let steps: [Step]
    init(acts: [FloatBuffer], tapes: [LayerTape], steps: [Step]) {
      self.acts = acts
      self.tapes = tapes
      self.steps = steps
    }
    /// Whether layer `i`'s output is stored (false for a layer fused with its ReLU).
    func stores(_ i: Int) -> Bool { Sequential.stores(i, steps: steps) }
    override var bytes: Int { acts.reduce(0) { $0 + $1.count * 4 } + tapes.reduce(0) { $0 + $1.bytes } }
  }

  /// Allocates activations for `batch` examples (none for a layer fused with its ReLU).
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
      if let fused = step.fused {
        fused.forward(input, out, &ctx, t.tapes[step.first], rectify: true)
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
      if let fused = step.fused {
        fused.backward(lx, upstream, down, &ctx, t.tapes[i], gate: ly)
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
      if let fused = step.fused {
        fused.tangent(lx, tin, out, &ctx, t.tapes[i], gate: ly)
      } else {
        layers[i].tangent(lx, ly, tin, out, &ctx, t.tapes[i])
      }
      tin = UnsafePointer(out)
    }
  }
}

/// A layer a `Sequential` can run fused with the `ReLU` right after it: the forward pass writes
/// the ReLU's output z directly (`rectify`), and the backward and tangent passes apply the ReLU's
/// mask [z > 0] themselves (`gate`: z, or nil for the layer alone), reading neither the layer's
/// own output nor a separate output gradient or tangent. The results are the same bits as the two
/// layers run apart.
protocol ReLUFusible: Layer {
  /// Whether this layer runs fused when a ReLU follows it.
  var fusesWithReLU: Bool { get }
  /// The forward pass, rectified with `rectify`.
  func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext, _ tape: LayerTape,
    rectify: Bool)
  /// The backward pass of dy (the ReLU's output gradient when `gate` is its output z).
  func backward(
    _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    _ ctx: inout PassContext, _ tape: LayerTape, gate z: UnsafePointer<Float>?)
  /// The tangent, masked by [z > 0] when `gate` is the ReLU's output z.
  func tangent(
    _ x: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?, _ ty: UnsafeMutablePointer<Float>,
    _ ctx: inout PassContext, _ tape: LayerTape, gate z: UnsafePointer<Float>?)
}

extension BatchNorm: ReLUFusible {
  /// Always.
  var fusesWithReLU: Bool { true }
}

extension Residual: ReLUFusible {
  /// With an identity shortcut, whose block leaves pool role 2 free for the masked output gradient
  /// (a block with a shortcut keeps its result there, and a fourth role would make the pool, and
  /// so `memory="low"`'s total, larger).
  var fusesWithReLU: Bool { shortcut == nil }
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
    forward(x, y, &ctx, tape, rectify: false)
  }

  /// y = body(x) + shortcut(x), or with `rectify` max(0, body(x) + shortcut(x)) (the block fused
  /// with the ReLU after it: one sweep instead of the sum's and the ReLU's).
  func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ctx: inout PassContext,
    _ tape: LayerTape, rectify: Bool
  ) {
    let t = tape as! Tape
    let count = ctx.batch * outputLayout.size
    body.forward(x, t.bodyOut.pointer, &ctx, t.body)
    var other = x
    if let s = shortcut, let st = t.short, let so = t.shortOut {
      s.forward(x, so.pointer, &ctx, st)
      other = UnsafePointer(so.pointer)
    }
    if rectify {
      Residual.sumRectified(UnsafePointer(t.bodyOut.pointer), other, into: y, count: count)
    } else {
      Elementwise.sum(UnsafePointer(t.bodyOut.pointer), other, into: y, count: count)
    }
  }

  /// out = max(0, a + b): `Elementwise.sum` then `ReLU.rectify` in one sweep, with the same
  /// operations on every element (the same pieces, so the same lanes run vector or scalar).
  static func sumRectified(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int
  ) {
    Parallel.forRange(count) { s, e in
      var i = s
      while i + 16 <= e {
        Kernels.store(ReLU.rectify(Kernels.load(a + i) + Kernels.load(b + i)), out + i)
        i += 16
      }
      while i < e {
        out[i] = ReLU.rectify(a[i] + b[i])
        i += 1
      }
    }
  }

  /// The backward pass of the block fused with the ReLU after it, whose output is `z`: the block's
  /// backward pass of dy·[z > 0] (formed once, in pool role 2 of its depth, which a block without
  /// a shortcut does not use otherwise), or of dy itself without `z`.
  func backward(
    _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    _ ctx: inout PassContext, _ tape: LayerTape, gate z: UnsafePointer<Float>?
  ) {
    guard let z else { return backward(x, x, dy, dx, &ctx, tape) }  // y is not read
    let count = ctx.batch * outputLayout.size
    // (A block with a shortcut is never fused, `fusesWithReLU`; were one, its shortcut's result
    // would need role 2, so its gradient gets a buffer of its own.)
    let own = shortcut == nil ? nil : FloatBuffer(count: count)
    let g = own?.pointer ?? ctx.buffers.pointer(ScratchPool.slot(depth: ctx.depth, role: 2), count: count)
    ReLU.mask(z, dy, g, count: count)
    backward(x, x, UnsafePointer(g), dx, &ctx, tape)
    withExtendedLifetime(own) {}
  }

  /// The tangent of the block fused with the ReLU after it, whose output is `z`: the block's
  /// tangent, then [z > 0] applied to it in place.
  func tangent(
    _ x: UnsafePointer<Float>, _ tx: UnsafePointer<Float>?, _ ty: UnsafeMutablePointer<Float>,
    _ ctx: inout PassContext, _ tape: LayerTape, gate z: UnsafePointer<Float>?
  ) {
    tangent(x, x, tx, ty, &ctx, tape)  // y is not read
    if let z { ReLU.mask(z, UnsafePointer(ty), ty, count: ctx.batch * outputLayout.size) }
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
