import CMetaweight
import MetaweightTensor
import MetaweightTraining

#if canImport(Glibc)
  import Glibc
#endif

// MARK: - Data-parallel steps (metaweight.h, "data-parallel steps")

/// A C callback as a trainer's `AllReduce`: calls `callback(context, buffer, count, point)`;
/// nonzero is a failure whose message is the thread's last error, if the callback set one.
final class CallbackAllReduce: AllReduce {
  let callback: mw_allreduce_fn
  let context: UnsafeMutableRawPointer?

  init(callback: mw_allreduce_fn, context: UnsafeMutableRawPointer?) {
    self.callback = callback
    self.context = context
  }

  /// The failure of a callback: its status and message.
  struct Failure: Error, CustomStringConvertible {
    let status: Int32
    let message: String
    var description: String { message.isEmpty ? "the callback returned \(status)" : message }
  }

  func sum(_ buffer: UnsafeMutablePointer<Float>, count: Int, at point: SyncPoint) throws {
    mw_set_last_error(nil)
    let status = callback(context, buffer, Int64(count), point.rawValue)
    guard status == 0 else {
      throw Failure(status: status, message: String(cString: mw_last_error()))
    }
  }
}

/// The sync points' names as C strings (static storage).
final class SyncPointNames: @unchecked Sendable {
  static let shared = SyncPointNames()
  let names: [UnsafeMutablePointer<CChar>?] = SyncPoint.allCases.map { strdup($0.name) }
  let empty = strdup("")
}

/// Sets (or, with a NULL callback, removes) the trainer's all-reduce callback (metaweight.h).
@_cdecl("mw_trainer_set_allreduce")
public func _mw_trainer_set_allreduce(
  _ h: mw_trainer, _ callback: mw_allreduce_fn?, _ context: UnsafeMutableRawPointer?
) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in
      guard let cb = callback else {
        tr.allReduce = nil
        return
      }
      if let ws = tr.weighting, !ws.supportsDataParallel {
        throw ABIError(
          code: MW_E_STATE,
          message: "mw_trainer_set_allreduce: data-parallel steps support erm, l2rw, mwnet and gdw, not '\(ws.methodName)'")
      }
      tr.allReduce = CallbackAllReduce(callback: cb, context: context)
    }
  }
}

/// The name of a sync point, "" for an unknown value (metaweight.h).
@_cdecl("mw_sync_point_name")
public func _mw_sync_point_name(_ point: Int32) -> UnsafePointer<CChar>? {
  let s = SyncPointNames.shared
  guard let p = SyncPoint(rawValue: point) else { return UnsafePointer(s.empty) }
  return UnsafePointer(s.names[Int(p.rawValue)])
}

/// Turns synchronised batch norm in data-parallel steps on or off (metaweight.h).
@_cdecl("mw_trainer_set_batch_norm_sync")
public func _mw_trainer_set_batch_norm_sync(_ h: mw_trainer, _ on: Int32) -> mw_status {
  guarded {
    try using(h, as: Trainer.self, "trainer") { tr in tr.synchronizedBatchNorm = on != 0 }
  }
}
