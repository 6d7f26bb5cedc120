// swift-tools-version:6.0
//
// metaweight: meta-reweighting for noisy and imbalanced classification.
// The Swift core does all the compute; Python drives it through a C ABI.
import PackageDescription

#if canImport(Glibc)
  import Glibc
#endif

/// When set (by `setup.py`), the CPython extension target is added; it needs Python's headers.
let pythonInclude: String? = {
  guard let raw = getenv("METAWEIGHT_PYTHON_INCLUDE") else { return nil }
  let value = String(cString: raw)
  return value.isEmpty ? nil : value
}()

/// No unsafe flags: the package stays usable as a dependency, and release builds keep Swift's
/// bounds and overflow checks. SwiftPM already compiles release builds with whole-module
/// optimisation (`-O -whole-module-optimization`), so nothing needs to be added for it.
let swiftSettings: [SwiftSetting] = []

var products: [Product] = [
  // MARK: - Public API
  .library(name: "MetaweightCore", targets: ["MetaweightCore"]),
  .library(name: "MetaweightCABI", type: .static, targets: ["MetaweightCABI"]),
]

var targets: [Target] = [
  // MARK: - Public API

  /// Tensors, layers, networks, losses, optimizers, data and the weighting algorithms.
  .target(
    name: "MetaweightCore",
    dependencies: ["_CBLAS"],
    swiftSettings: swiftSettings
  ),
  /// The exported C entry points (the contract is `CMetaweight/include/metaweight.h`).
  .target(
    name: "MetaweightCABI",
    dependencies: ["MetaweightCore", "CMetaweight"],
    swiftSettings: swiftSettings
  ),
  /// The hand-written C header and the thread-local last-error storage.
  .target(name: "CMetaweight"),

  // MARK: - Implementation details

  /// OpenBLAS's CBLAS interface (Debian: `libopenblas-dev`).
  .systemLibrary(
    name: "_CBLAS",
    providers: [.apt(["libopenblas-dev"])]
  ),

  // MARK: - Tests
  .testTarget(
    name: "MetaweightCoreTests",
    dependencies: ["MetaweightCore"]
  ),
  .testTarget(
    name: "MetaweightCABITests",
    dependencies: ["MetaweightCABI", "CMetaweight", "MetaweightCore"]
  ),
]

if let include = pythonInclude {
  // MARK: - Python extension (built by setup.py only)
  targets.append(
    .target(
      name: "_MetaweightPython",
      dependencies: ["MetaweightCABI", "CMetaweight"],
      // Python's include directory lies outside the package, so `headerSearchPath` (relative
      // paths only) cannot name it: this one unsafe flag is unavoidable. The target is added
      // only when `setup.py` sets METAWEIGHT_PYTHON_INCLUDE, so the package used as a dependency
      // has no unsafe flags. (Release C builds already get -O2 from SwiftPM.)
      cSettings: [.unsafeFlags(["-I", include])]
    ))
  products.append(.library(name: "_metaweight_core", type: .dynamic, targets: ["_MetaweightPython"]))
}

let package = Package(
  name: "metaweight",
  products: products,
  targets: targets
)
