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
  .library(
    name: "MetaweightCore",
    targets: [
      "MetaweightTensor", "MetaweightLayers", "MetaweightOptim", "MetaweightTraining", "MetaweightWeighting",
      "MetaweightLAW",
    ]),
  .library(name: "MetaweightCABI", type: .static, targets: ["MetaweightCABI"]),
]

var targets: [Target] = [
  // MARK: - Public API

  // One target per concern; every dependency points down this list (a target imports only
  // targets above it), so the compiler refuses a cycle.

  /// Float buffers over OpenBLAS, element-wise kernels, threads, random numbers, errors, memory limits.
  .target(name: "MetaweightTensor", dependencies: ["_CBLAS"], swiftSettings: swiftSettings),
  /// Layers (forward, backward and tangent passes), networks, losses, the model zoo and its spec grammar.
  .target(name: "MetaweightLayers", dependencies: ["MetaweightTensor"], swiftSettings: swiftSettings),
  /// SGD and Adam, learning-rate schedules.
  .target(name: "MetaweightOptim", dependencies: ["MetaweightTensor"], swiftSettings: swiftSettings),
  /// The trainer (one step, evaluation, checkpoints, step diagnostics) and the protocols a
  /// weighting method implements to take part in its step.
  .target(
    name: "MetaweightTraining", dependencies: ["MetaweightLayers", "MetaweightOptim"],
    swiftSettings: swiftSettings),
  /// L2RW, MW-Net, GDW and the baselines: one file per method, plus their settings and spec.
  .target(name: "MetaweightWeighting", dependencies: ["MetaweightTraining"], swiftSettings: swiftSettings),
  /// LAW: features, the DDPG strategy model, the episode search and the strategy as a step weighting.
  .target(name: "MetaweightLAW", dependencies: ["MetaweightWeighting"], swiftSettings: swiftSettings),
  /// The exported C entry points (the contract is `CMetaweight/include/metaweight.h`).
  .target(
    name: "MetaweightCABI",
    dependencies: ["MetaweightLAW", "MetaweightWeighting", "MetaweightTraining", "CMetaweight"],
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
    dependencies: ["MetaweightTensor", "MetaweightLayers", "MetaweightOptim", "MetaweightTraining", "MetaweightWeighting", "MetaweightLAW"]
  ),
  .testTarget(
    name: "MetaweightCABITests",
    dependencies: ["MetaweightCABI", "CMetaweight", "MetaweightTensor", "MetaweightLayers", "MetaweightOptim",
      "MetaweightTraining", "MetaweightWeighting", "MetaweightLAW"]
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
