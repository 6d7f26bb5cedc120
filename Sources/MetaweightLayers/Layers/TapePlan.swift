import MetaweightTensor

/// Laying one activation tape over the storage another tape no longer needs.
///
/// After a training forward pass, the backward and tangent passes over a tape read only some of
/// its activations: those that a layer's derivatives read as its output, or its successor's as
/// their input (`derivativesReadOutput`, `derivativesReadInput`): a convolution's input, a
/// ReLU's output, a batch norm's input. The others are *dead* once the forward pass is over: a
/// linear layer's output that only a ReLU reads (it keeps its output), a residual block's branch
/// outputs and their sum. (A batch norm's output that only a ReLU reads is not even stored:
/// `Sequential` runs the two as one step.)
///
/// A tape for a second batch (MW-Net's and GDW's meta batch) can therefore be built over the
/// first tape's dead buffers without disturbing any later pass over the first tape. `TapePlanner`
/// lays it out in two walks of the layer tree: the first records every activation the second
/// tape needs, whether later passes read it (live) and when the forward pass writes and last
/// reads it (a clock counting leaf layers); then live activations each get a buffer of their own
/// and dead ones share "lanes" (activations whose forward-pass intervals do not overlap take the
/// same lane). Lanes are the ping-pong buffers of the shared `ScratchPool`: those hold the
/// gradients and tangents flowing between layers during backward and tangent passes only, and a
/// lane is written and read only during the forward pass (no backward or tangent pass reads a
/// dead activation, so their overwriting it is harmless). Live activations borrow the first
/// tape's dead buffers, best fit, largest first; only what none fits is allocated. The second
/// walk builds the tape.

/// The dead activation buffers of `tape` (made by `layer.makeTape`): what no backward or tangent
/// pass over it reads once its forward pass is done. (A batch norm fused with the ReLU after it
/// has no output buffer at all: `Sequential.Tape.stores`.)
func deadActivations(of layer: Layer, _ tape: LayerTape, into out: inout [FloatBuffer]) {
  if let s = layer as? Sequential {
    let t = tape as! Sequential.Tape
    for (i, child) in s.layers.enumerated() {
      if i < s.layers.count - 1 && !child.derivativesReadOutput && !s.layers[i + 1].derivativesReadInput
        && t.stores(i)
      {
        out.append(t.acts[i])
      }
      deadActivations(of: child, t.tapes[i], into: &out)
    }
  } else if let r = layer as? Residual {
    let t = tape as! Residual.Tape
    if !r.body.derivativesReadOutput { out.append(t.bodyOut) }
    deadActivations(of: r.body, t.body, into: &out)
    if let s = r.shortcut, let st = t.short, let so = t.shortOut {
      if !s.derivativesReadOutput { out.append(so) }
      deadActivations(of: s, st, into: &out)
    }
  }
}

/// The floats each `ScratchPool` slot holds once the backward and tangent passes of `layer` (run at
/// nesting depth `depth` on up to `batch` examples) have run: a `Sequential` ping-pongs between
/// roles 0 and 1 of its depth, one role per step (`Sequential.steps`: a layer, or a batch norm or
/// residual block fused with its ReLU; backward: step k's input gradient in role (last − k) mod 2;
/// tangent: step k's output tangent in role k mod 2), a `Residual` keeps its shortcut's result in
/// role 2 of its own depth (an identity block fused with its ReLU, its masked output gradient)
/// and runs its body at that depth.
func poolSlotSizes(of layer: Layer, depth: Int, batch: Int, into sizes: inout [Int: Int]) {
  func need(_ role: Int, _ count: Int) {
    let slot = ScratchPool.slot(depth: depth, role: role)
    sizes[slot] = max(sizes[slot] ?? 0, count)
  }
  if let s = layer as? Sequential {
    let steps = s.steps
    let last = steps.count - 1
    for (k, step) in steps.enumerated() {
      if k > 0 { need((last - k) % 2, batch * s.layers[step.first].inputLayout.size) }
      if k < last { need(k % 2, batch * s.layers[step.last].outputLayout.size) }
      if step.fused is Residual {  // its masked output gradient, at the block's own depth
        let slot = ScratchPool.slot(depth: depth + 1, role: 2)
        sizes[slot] = max(sizes[slot] ?? 0, batch * s.layers[step.first].outputLayout.size)
      }
    }
    for child in s.layers { poolSlotSizes(of: child, depth: depth + 1, batch: batch, into: &sizes) }
  } else if let r = layer as? Residual {
    poolSlotSizes(of: r.body, depth: depth, batch: batch, into: &sizes)
    if let sc = r.shortcut {
      need(2, batch * max(r.inputLayout.size, r.outputLayout.size))
      poolSlotSizes(of: sc, depth: depth, batch: batch, into: &sizes)
    }
  }
}

/// Plans and then hands out the activation buffers of a tape laid over another tape's dead
/// buffers (see the file comment). Used by `NetworkTape.init(_:batch:overlaying:)`.
final class TapePlanner {
  private struct Request {
    var count: Int
    var live: Bool
    var start: Int
    var end: Int
  }
  /// False during the planning walk, true during the building walk.
  private(set) var building = false
  /// Leaf layers run so far in the walk (the forward pass's clock).
  var clock = 0
  private var requests: [Request] = []
  private var resolved: [FloatBuffer] = []
  private var cursor = 0
  private var donors: [FloatBuffer]
  private let placeholder = FloatBuffer(count: 0)
  /// Bytes of the activation buffers allocated for the new tape.
  private(set) var ownedBytes = 0
  /// Every buffer the new tape borrowed from the base tape.
  private(set) var borrowed: [FloatBuffer] = []
  /// The scratch-pool buffers serving as lanes.
  private(set) var pooledLanes: [FloatBuffer] = []
  private let pool: ScratchPool?
  private let poolSizes: [Int: Int]

  /// A planner borrowing from `donors` (the base tape's dead activation buffers) and, for lanes,
  /// from the slots of `pool` whose backward/tangent sizes are `poolSizes` (`poolSlotSizes`);
  /// a lane no slot fits is borrowed or allocated like a live activation.
  init(donors: [FloatBuffer], pool: ScratchPool? = nil, poolSizes: [Int: Int] = [:]) {
    self.donors = donors
    self.pool = pool
    self.poolSizes = poolSizes
  }

  /// Registers (planning) or looks up (building) the next activation of `count` floats, written
  /// from now on; `live` when a later pass reads it. Returns its index.
  func request(count: Int, live: Bool) -> Int {
    if building {
      cursor += 1
      return cursor - 1
    }
    requests.append(Request(count: count, live: live, start: clock, end: clock + 1))
    return requests.count - 1
  }

  /// Marks activation `index` as read until the clock's current value.
  func readUntilNow(_ index: Int) {
    if !building { requests[index].end = max(requests[index].end, clock) }
  }

  /// The buffer of activation `index` (a placeholder while planning).
  func buffer(_ index: Int) -> FloatBuffer { building ? resolved[index] : placeholder }

  /// A leaf layer's own tape (state such as batch statistics, masks and arg-maxes is never
  /// shared), or a placeholder while planning; advances the clock.
  func leafTape(_ layer: Layer, batch: Int) -> LayerTape {
    clock += 1
    return building ? layer.makeTape(batch: batch) : LayerTape()
  }

  /// Ends the planning walk: assigns buffers to every registered activation.
  func resolve() {
    // Dead activations share lanes: greedy interval colouring in order of start.
    var laneOf = [Int](repeating: -1, count: requests.count)
    var lanes: [(end: Int, count: Int)] = []
    for i in requests.indices.sorted(by: { requests[$0].start < requests[$1].start }) where !requests[i].live {
      let r = requests[i]
      // Among the free lanes, the smallest one large enough, else the largest.
      var pick = -1
      for (l, lane) in lanes.enumerated() where lane.end <= r.start {
        guard pick >= 0 else {
          pick = l
          continue
        }
        let a = lane.count, b = lanes[pick].count
        if (a >= r.count) != (b >= r.count) {
          if a >= r.count { pick = l }
        } else if a >= r.count ? a < b : a > b {
          pick = l
        }
      }
      if pick < 0 {
        lanes.append((r.end, r.count))
        pick = lanes.count - 1
      } else {
        lanes[pick] = (r.end, max(lanes[pick].count, r.count))
      }
      laneOf[i] = pick
    }
    // Lanes: largest first, each in the smallest free pool slot the passes size to hold it (at
    // that size, so they will not grow it).
    var laneBuffers = [FloatBuffer?](repeating: nil, count: lanes.count)
    if let pool {
      var free = poolSizes.sorted { ($0.value, $0.key) < ($1.value, $1.key) }
      for l in lanes.indices.sorted(by: { lanes[$0].count > lanes[$1].count }) {
        guard let k = free.firstIndex(where: { $0.value >= lanes[l].count }) else { continue }
        let buffer = pool.buffer(free[k].key, count: free[k].value)
        free.remove(at: k)
        laneBuffers[l] = buffer
        pooledLanes.append(buffer)
      }
    }
    // Needs: every live activation, then every lane without a buffer; largest first, best-fitting donor.
    var needs: [(count: Int, request: Int, lane: Int)] = []
    for i in requests.indices where requests[i].live { needs.append((requests[i].count, i, -1)) }
    for (l, lane) in lanes.enumerated() where laneBuffers[l] == nil { needs.append((lane.count, -1, l)) }
    needs.sort { $0.count > $1.count }
    donors.sort { $0.count < $1.count }
    var requestBuffers = [FloatBuffer?](repeating: nil, count: requests.count)
    for need in needs {
      let buffer: FloatBuffer
      if let d = donors.firstIndex(where: { $0.count >= need.count }) {
        buffer = donors.remove(at: d)
        borrowed.append(buffer)
      } else {
        buffer = FloatBuffer(count: need.count)
        ownedBytes += need.count * 4
      }
      if need.lane >= 0 { laneBuffers[need.lane] = buffer } else { requestBuffers[need.request] = buffer }
    }
    resolved = requests.indices.map { i in
      (laneOf[i] >= 0 ? laneBuffers[laneOf[i]] : requestBuffers[i]) ?? placeholder
    }
    building = true
    clock = 0
    cursor = 0
  }
}

extension Sequential {
  /// A tape for `batch` examples whose activations `planner` places (see `TapePlanner`); a batch
  /// norm fused with its ReLU requests no buffer (its output is never stored).
  func makeTape(batch: Int, planner: TapePlanner) -> LayerTape {
    var requests: [Int?] = []
    var tapes: [LayerTape] = []
    for (i, layer) in layers.enumerated() {
      if i < layers.count - 1 {
        if Sequential.stores(i, steps: steps) {
          let live = layer.derivativesReadOutput || layers[i + 1].derivativesReadInput
          requests.append(planner.request(count: batch * layer.outputLayout.size, live: live))
        } else {
          requests.append(nil)
        }
      }
      tapes.append(plannedTape(layer, batch: batch, planner: planner))
      if i > 0, let r = requests[i - 1] { planner.readUntilNow(r) }  // layer i has read its input
    }
    let acts = requests.map { $0.map { planner.buffer($0) } ?? Sequential.unstored }
    return Tape(acts: acts, tapes: tapes, steps: steps)
  }
}

extension Residual {
  /// A tape for `batch` examples whose branch outputs `planner` places (see `TapePlanner`).
  func makeTape(batch: Int, planner: TapePlanner) -> LayerTape {
    let count = batch * outputLayout.size
    let bodyOut = planner.request(count: count, live: body.derivativesReadOutput)
    let bodyTape = body.makeTape(batch: batch, planner: planner)
    let shortOut = shortcut.map { planner.request(count: count, live: $0.derivativesReadOutput) }
    let shortTape = shortcut.map { plannedTape($0, batch: batch, planner: planner) }
    planner.clock += 1  // the sum reads both branch outputs
    planner.readUntilNow(bodyOut)
    if let s = shortOut { planner.readUntilNow(s) }
    return Tape(
      body: bodyTape, bodyOut: planner.buffer(bodyOut), short: shortTape, shortOut: shortOut.map { planner.buffer($0) })
  }
}

/// `layer`'s tape with its activations placed by `planner` (composite layers), or its own.
func plannedTape(_ layer: Layer, batch: Int, planner: TapePlanner) -> LayerTape {
  if let s = layer as? Sequential { return s.makeTape(batch: batch, planner: planner) }
  if let r = layer as? Residual { return r.makeTape(batch: batch, planner: planner) }
  return planner.leafTape(layer, batch: batch)
}
