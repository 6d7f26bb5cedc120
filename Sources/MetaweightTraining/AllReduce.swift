import MetaweightTensor
import MetaweightLayers

/// A point of a data-parallel step at which the K workers combine a buffer by summation.
///
/// Each worker holds a shard of the train batch (and of the meta batch); at each point it sums
/// its local contribution with every other worker's (`AllReduce.sum`), so every worker continues
/// with the global value. The per-example quantities (losses, JVPs, weights) stay local. The raw
/// values (`Int32`) are the C ABI's `MW_SYNC_*` constants; `name` is what the Python hook receives.
public enum SyncPoint: Int32, CaseIterable, Sendable {
  /// [n, m]: the local train and meta batch sizes, summed to the global N and M (once per step).
  case counts = 0
  /// The weighted gradient of MW-Net's and GDW's virtual step (parameter-sized).
  case virtualGradient = 1
  /// v = ∇L_meta(θ̂) of the meta batch, as a sum over the global meta batch divided by M.
  case metaGradient = 2
  /// L2RW's normaliser Σᵢ max(uᵢ, 0) (one value).
  case l2rwNormalizer = 3
  /// MW-Net's [Σᵢ vᵢ, Σᵢ vᵢℓᵢ] for weights normalised by their batch sum (two values).
  case weightSums = 4
  /// MW-Net's sums over the batch in the chain to V's outputs with normalised weights (one value; three
  /// when the loss fed to V is not detached).
  case chainSums = 5
  /// GDW's ‖g‖₁ of the second stage (one value).
  case gradientNorm = 6
  /// The weighting net V's gradient (3h + 1 values).
  case weightNetGradient = 7
  /// The real step's gradient (parameter-sized).
  case gradient = 8
  /// [Σ loss, Σ correct, Σ meta loss] for the step's reported global loss, accuracy and meta loss.
  case metrics = 9
  /// Synchronised batch norm, forward: a layer's per-channel Σx and count, then Σ(x − μ)².
  case batchNormStatistics = 10
  /// Synchronised batch norm, backward: a layer's per-channel Σ dy and Σ dy·x̂.
  case batchNormGradient = 11
  /// Synchronised batch norm, tangent (JVP): a layer's per-channel Σ tx and Σ tx·x̂.
  case batchNormTangent = 12

  /// The point's name as the Python hook receives it, e.g. "meta_gradient".
  public var name: String {
    switch self {
    case .counts: return "counts"
    case .virtualGradient: return "virtual_gradient"
    case .metaGradient: return "meta_gradient"
    case .l2rwNormalizer: return "l2rw_normalizer"
    case .weightSums: return "weight_sums"
    case .chainSums: return "chain_sums"
    case .gradientNorm: return "gradient_norm"
    case .weightNetGradient: return "weight_net_gradient"
    case .gradient: return "gradient"
    case .metrics: return "metrics"
    case .batchNormStatistics: return "batch_norm_statistics"
    case .batchNormGradient: return "batch_norm_gradient"
    case .batchNormTangent: return "batch_norm_tangent"
    }
  }
}

/// The collective a data-parallel trainer calls at each `SyncPoint`: replaces `count` floats at
/// `buffer` by their sum over all workers, identical (bit for bit) on every worker. Every worker
/// calls it at the same points in the same order. A throw fails the step, which then leaves
/// parameters, optimizer, running statistics, generators and the method's state (V) unchanged.
public protocol AllReduce: AnyObject {
  /// Sums `buffer[0..<count]` over the workers in place.
  /// - Throws: any error; the step fails with `MetaweightError.invalidState` naming the point.
  func sum(_ buffer: UnsafeMutablePointer<Float>, count: Int, at point: SyncPoint) throws
}

extension Trainer {
  /// Whether the trainer is one worker of a data-parallel group (`allReduce` set).
  public var isDistributed: Bool { allReduce != nil }

  /// Sums `count` floats at `buffer` over the workers at `point` (nothing without `allReduce`).
  /// - Throws: `MetaweightError.invalidState` naming the point when the collective fails.
  public func synchronize(_ buffer: UnsafeMutablePointer<Float>, count: Int, at point: SyncPoint) throws {
    guard let reducer = allReduce else { return }
    do {
      try reducer.sum(buffer, count: count, at: point)
    } catch {
      throw MetaweightError.invalidState(
        "step \(stepCount + 1): the all-reduce at sync point '\(point.name)' failed: \(error); "
          + "parameters, optimizer state, running statistics and the method's state were not updated")
    }
  }

  /// Sums a few Double scalars over the workers at `point` (as Float32 on the wire); without
  /// `allReduce` they are returned unchanged (so a single-process step keeps its Double sums).
  public func synchronize(_ values: [Double], at point: SyncPoint) throws -> [Double] {
    guard isDistributed else { return values }
    var f = values.map { Float($0) }
    try f.withUnsafeMutableBufferPointer { try synchronize($0.baseAddress!, count: $0.count, at: point) }
    return f.map { Double($0) }
  }

  /// The global train batch size of the current step: `globalBatch` when data-parallel, else the
  /// local `n` (so a method's passes called outside a step keep their single-process meaning).
  public func globalBatch(_ n: Int) -> Int { isDistributed ? globalBatch : n }

  /// The global meta batch size of the current step: `globalMetaBatch` when data-parallel, else `m`.
  public func globalMetaBatch(_ m: Int) -> Int { isDistributed ? globalMetaBatch : m }

  /// Sets `globalBatch` and `globalMetaBatch` for a step on a local train batch of `n` and meta
  /// batch of `m`: their sums over the workers (`SyncPoint.counts`), or n and m themselves; and,
  /// with `synchronizedBatchNorm`, makes the network's batch-norm layers use the global batch
  /// statistics for the step's passes (`network.batchNormSync`, cleared when the step ends).
  public func synchronizeCounts(n: Int, m: Int) throws {
    batchNormReduce.failure = nil
    network.batchNormSync = isDistributed && synchronizedBatchNorm ? batchNormReduce : nil
    let total = try synchronize([Double(n), Double(m)], at: .counts)
    guard total[0] >= Double(n), total[1] >= Double(m), total[0] < 16_777_216, total[1] < 16_777_216 else {
      throw MetaweightError.invalidState(
        "step \(stepCount + 1): the all-reduce at 'counts' returned \(total) for local batch sizes (\(n), \(m)); "
          + "every worker must sum the same points")
    }
    globalBatch = Int(total[0])
    globalMetaBatch = Int(total[1])
  }

  /// Replaces a step's local loss, accuracy and meta loss (means over its n and m examples) by
  /// the global ones (means over N and M) with one all-reduce (`SyncPoint.metrics`).
  public func synchronizeMetrics(_ r: inout StepResult, n: Int, m: Int) throws {
    if let failure = batchNormReduce.failure {
      batchNormReduce.failure = nil
      throw MetaweightError.invalidState(
        "step \(stepCount + 1): the all-reduce of a batch-norm layer failed: \(failure); "
          + "parameters, optimizer state, running statistics and the method's state were not updated")
    }
    guard isDistributed else { return }
    let s = try synchronize([r.loss * Double(n), r.accuracy * Double(n), r.metaLoss * Double(m)], at: .metrics)
    r.loss = s[0] / Double(globalBatch)
    r.accuracy = s[1] / Double(globalBatch)
    r.metaLoss = globalMetaBatch > 0 ? s[2] / Double(globalMetaBatch) : 0
  }
}

/// Synchronised batch norm through a trainer's `allReduce` (`Trainer.synchronizedBatchNorm`): the
/// network's batch-norm layers hand their per-channel sums here during a step. A failure is kept
/// (the layer then goes on with its local sums) and fails the step before its update.
public final class BatchNormAllReduce: BatchNormSync {
  unowned let trainer: Trainer
  /// The first failure of the current step, if any.
  var failure: Error?

  init(trainer: Trainer) { self.trainer = trainer }

  /// See `BatchNormSync`.
  public func sum(_ values: UnsafeMutablePointer<Float>, count: Int, pass: BatchNormSyncPass) -> Bool {
    guard failure == nil, let reducer = trainer.allReduce else { return false }
    let point: SyncPoint
    switch pass {
    case .statistics: point = .batchNormStatistics
    case .gradient: point = .batchNormGradient
    case .tangent: point = .batchNormTangent
    }
    do {
      try reducer.sum(values, count: count, at: point)
      return true
    } catch {
      failure = error
      return false
    }
  }
}
