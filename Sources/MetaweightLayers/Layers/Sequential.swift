import MetaweightTensor

/// Layers applied one after another.
///
/// Its tape keeps every intermediate activation (needed by backward and tangent passes). The
/// gradients and tangents flowing between its layers ping-pong between two `ScratchPool` slots of
/// its nesting depth, shared with every other block of that depth and between the two passes.
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
  }

  final class Tape: LayerTape {
    var acts: [FloatBuffer]
    var tapes: [LayerTape]
    init(acts: [FloatBuffer], tapes: [LayerTape]) {
      self.acts = acts
      self.tapes = tapes
    }
    override var bytes: Int { acts.reduce(0) { $0 + $1.count * 4 } + tapes.reduce(0) { $0 + $1.bytes } }
  }

  /// Allocates activations for `batch` examples.
  public func makeTape(batch: Int) -> LayerTape {
    var acts: [FloatBuffer] = []
    for i in 0..<(layers.count - 1) { acts.append(FloatBuffer(count: batch * layers[i].outputLayout.size)) }
    return Tape(acts: acts, tapes: layers.map { $0.makeTape(batch: batch) })
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
    for i in 0..<layers.count {
      let out = output(i, t, y)
      layers[i].forward(input, out, &ctx, t.tapes[i])
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
    for i in stride(from: layers.count - 1, through: 0, by: -1) {
      let lx: UnsafePointer<Float> = i == 0 ? x : UnsafePointer(t.acts[i - 1].pointer)
      let ly: UnsafePointer<Float> = i == layers.count - 1 ? y : UnsafePointer(t.acts[i].pointer)
      var down: UnsafeMutablePointer<Float>? = nil
      if i > 0 {
        down = ctx.buffers.pointer(ScratchPool.slot(depth: depth, role: role), count: n * layers[i].inputLayout.size)
        role = 1 - role
      } else {
        down = dx
      }
      layers[i].backward(lx, ly, upstream, down, &ctx, t.tapes[i])
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
    for i in 0..<layers.count {
      let lx: UnsafePointer<Float> = i == 0 ? x : UnsafePointer(t.acts[i - 1].pointer)
      let ly: UnsafePointer<Float> = i == layers.count - 1 ? y : UnsafePointer(t.acts[i].pointer)
      let out: UnsafeMutablePointer<Float>
      if i == layers.count - 1 {
        out = ty
      } else {
        out = ctx.buffers.pointer(ScratchPool.slot(depth: depth, role: role), count: n * layers[i].outputLayout.size)
        role = 1 - role
      }
      // A layer without parameters and a zero input tangent has a zero output tangent.
      layers[i].tangent(lx, ly, tin, out, &ctx, t.tapes[i])
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
