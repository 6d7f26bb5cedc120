import MetaweightLayers
import MetaweightOptim
import MetaweightTensor

/// The part of a training step a weighting method takes: `Trainer` knows every method (L2RW,
/// MW-Net, GDW, the baselines in MetaweightWeighting, an applied LAW strategy in MetaweightLAW)
/// only through this protocol
/// (`Trainer.weighting`, `Trainer.weightedStep`), and saves its checkpoint section with its own.
public protocol StepWeighting: AnyObject {
  /// The method's name in messages, e.g. "mwnet".
  var methodName: String { get }
  /// Whether every step needs a meta (clean) batch.
  var needsMeta: Bool { get }
  /// Per-example weights of the last step (at least n values).
  var weights: FloatBuffer { get }
  /// V's outputs V(ℓᵢ) ∈ (0, 1) of the last step, for the saturation diagnostics; nil for
  /// methods without a weighting net.
  var unitOutputs: UnsafePointer<Float>? { get }

  /// Sizes the trainer's and the method's buffers for a train batch of `n` and a meta batch of
  /// `m` (0 without one).
  func reserve(trainer: Trainer, n: Int, m: Int)

  /// The method's part of one step, before the trainer's `applyUpdate`: the train forward pass
  /// and whatever the method computes (weights, V's update), ending with the real step's gradient
  /// in `trainer.grads`. Returns loss, accuracy and meta loss; the trainer fills in the rest.
  /// - Throws: `MetaweightError.nonFinite` when a loss, weight or gradient is NaN/Inf.
  func step(
    trainer: Trainer, x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>,
    xMeta: UnsafePointer<Float>?, m: Int, labelsMeta: UnsafePointer<Int64>?
  ) throws -> StepResult

  /// Whether `step` updates the method's own state (V and its optimizer) before the step can
  /// still fail, so that `weightedStep` keeps the method's checkpoint section to restore.
  var updatesOwnStateInStep: Bool { get }
  /// Saves the method's checkpoint section into `ck`.
  func save(into ck: inout Checkpoint)
  /// Checks that `ck` holds this method's section (throws naming the mismatch); changes nothing.
  func validate(_ ck: Checkpoint) throws
  /// Restores from `ck` (validated first, so nothing changes on failure).
  func restore(_ ck: Checkpoint) throws
  /// Whether the method's step is exact under data parallelism (`Trainer.allReduce`): it calls
  /// the trainer's `synchronize` wherever it combines values over the batch.
  var supportsDataParallel: Bool { get }
}

extension StepWeighting {
  /// No data-parallel steps unless the method says so.
  public var supportsDataParallel: Bool { false }
  /// By default a method's step changes only the trainer's buffers (which the trainer restores).
  public var updatesOwnStateInStep: Bool { false }
}

extension Trainer {
  /// One step of the weighting method `ws` (one optimizer update of θ; MW-Net and GDW also
  /// update V once). `xMeta`/`labelsMeta` are required exactly when the method needs a meta batch.
  /// - Throws: `MetaweightError.nonFinite` when a loss, weight or gradient is NaN/Inf (θ, the
  ///   optimizer state and the batch-norm statistics untouched); `MetaweightError.invalidState`
  ///   when a meta batch is missing.
  public func weightedStep(
    _ ws: StepWeighting, x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>,
    xMeta: UnsafePointer<Float>?, m: Int, labelsMeta: UnsafePointer<Int64>?
  ) throws -> StepResult {
    try withStateRollback {
      if ws.needsMeta {
        guard xMeta != nil, labelsMeta != nil, m > 0 else {
          throw MetaweightError.invalidState("\(ws.methodName): every step needs a meta batch (x_meta, y_meta)")
        }
      }
      if isDistributed && !ws.supportsDataParallel {
        throw MetaweightError.invalidState(
          "\(ws.methodName): data-parallel steps support ERM, L2RW, MW-Net and GDW (this method's weights are batch-local)")
      }
      // A step can fail after the method updated its own state (V and V's optimizer): at a
      // data-parallel sync point, or when the weights or the real gradient V leads to are not
      // finite. Keep the method's section to restore it then, so a refused step changes nothing.
      var methodBackup: Checkpoint? = nil
      if isDistributed || ws.updatesOwnStateInStep {
        methodBackup = Checkpoint()
        ws.save(into: &methodBackup!)
      }
      do {
        try synchronizeCounts(n: n, m: m)
        defer { network.batchNormSync = nil }
        ws.reserve(trainer: self, n: n, m: m)
        var result = try ws.step(trainer: self, x: x, n: n, labels: labels, xMeta: xMeta, m: m, labelsMeta: labelsMeta)
        try synchronize(grads.pointer, count: grads.count, at: .gradient)
        guard Elementwise.allFinite(grads.pointer, count: grads.count) else {
          throw MetaweightError.nonFinite(
            "step \(stepCount + 1): a gradient is NaN or infinite; parameters were not updated")
        }
        try synchronizeMetrics(&result, n: n, m: m)
        result.diagnostics = stepDiagnostics(weights: UnsafePointer(ws.weights.pointer), unit: ws.unitOutputs, n: n)
        result.learningRate = Double(applyUpdate())
        result.step = stepCount
        return result
      } catch {
        if let backup = methodBackup { try? ws.restore(backup) }
        throw error
      }
    }
  }

  /// The train forward pass of a method's step: (mean loss, accuracy), throwing when the loss is
  /// not finite.
  public func forwardCheckedTrainBatch(
    x: UnsafePointer<Float>, n: Int, labels: UnsafePointer<Int64>
  ) throws -> (Double, Double) {
    let (loss, acc) = forwardTrainBatch(x: x, n: n, labels: labels)
    guard loss.isFinite else {
      throw MetaweightError.nonFinite(
        "step \(stepCount + 1): the training loss is \(loss); parameters were not updated")
    }
    return (loss, acc)
  }

  /// Throws `MetaweightError.nonFinite` naming `what` unless the `n` values at `p` are finite.
  public func checkFiniteValues(_ p: UnsafePointer<Float>, _ n: Int, what: String = "example weight") throws {
    guard Elementwise.allFinite(p, count: n) else {
      throw MetaweightError.nonFinite(
        "step \(stepCount + 1): a \(what) is NaN or infinite; parameters were not updated")
    }
  }
}
