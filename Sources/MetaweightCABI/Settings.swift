import CMetaweight
import MetaweightTensor
import MetaweightWeighting
import MetaweightLAW

// MARK: - Settings tables and spec checks (metaweight.h, "settings")

/// The settings table of `kind` ("methods" or "law") as JSON into `buf` (needed length in `len`).
@_cdecl("mw_settings_table")
public func _mw_settings_table(
  _ kind: UnsafePointer<CChar>?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int64, _ len: UnsafeMutablePointer<Int64>?
) -> mw_status {
  guarded {
    let k = String(cString: try require(kind, "kind"))
    switch k {
    case "methods": writeString(MethodSpec.tableJSON, buf, cap, len)
    case "law": writeString(LAWConfig.tableJSON, buf, cap, len)
    default: throw ABIError.argument("kind: expected 'methods' or 'law', got '\(k)'")
    }
  }
}

/// Parses and checks a method spec ("method") or a LAW configuration ("law") without creating
/// anything, and writes its canonical spec into `buf` (needed length in `len`).
@_cdecl("mw_spec_check")
public func _mw_spec_check(
  _ kind: UnsafePointer<CChar>?, _ spec: UnsafePointer<CChar>?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int64,
  _ len: UnsafeMutablePointer<Int64>?
) -> mw_status {
  guarded {
    let k = String(cString: try require(kind, "kind"))
    let s = String(cString: try require(spec, "spec"))
    switch k {
    case "method":
      let cfg = try MethodSpec.parse(s)
      try cfg.validateSettings()
      writeString(MethodSpec.canonical(cfg), buf, cap, len)
    case "law": writeString(try LAWConfig.parse(s).spec, buf, cap, len)
    default: throw ABIError.argument("kind: expected 'method' or 'law', got '\(k)'")
    }
  }
}
