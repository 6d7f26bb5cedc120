@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

/// The small layer configurations the gradient, JVP and adjoint tests share. Sizes are tiny so
/// coordinate-wise finite differences over every parameter and input stay fast in debug builds.
enum LayerCases {
  static func linear(bias: Bool) throws -> LayerHarness {
    LayerHarness(try Linear(5, 4, bias: bias), batch: 3)
  }

  static func relu() -> LayerHarness {
    LayerHarness(ReLU(.image(c: 2, h: 3, w: 3)), batch: 2, input: { rng, n in rng.awayFromZeroArray(n) })
  }

  static func flatten() -> LayerHarness {
    LayerHarness(Flatten(.image(c: 3, h: 2, w: 4)), batch: 2)
  }

  static func conv(
    _ input: Layout, out: Int, kernel: Int, stride: Int, padding: Int, bias: Bool, batch: Int = 2
  ) throws -> LayerHarness {
    LayerHarness(
      try Conv2D(input: input, outChannels: out, kernel: kernel, stride: stride, padding: padding, bias: bias),
      batch: batch)
  }

  static func conv3x3Pad1() throws -> LayerHarness {
    try conv(.image(c: 2, h: 5, w: 5), out: 3, kernel: 3, stride: 1, padding: 1, bias: false)
  }

  static func conv3x3Stride2() throws -> LayerHarness {
    try conv(.image(c: 2, h: 6, w: 7), out: 3, kernel: 3, stride: 2, padding: 1, bias: false)
  }

  static func conv5x5NoPadBias() throws -> LayerHarness {
    try conv(.image(c: 2, h: 7, w: 6), out: 3, kernel: 5, stride: 1, padding: 0, bias: true)
  }

  static func conv1x1() throws -> LayerHarness {
    try conv(.image(c: 3, h: 4, w: 4), out: 2, kernel: 1, stride: 1, padding: 0, bias: true, batch: 3)
  }

  static func conv1x1Stride2() throws -> LayerHarness {
    try conv(.image(c: 3, h: 5, w: 5), out: 4, kernel: 1, stride: 2, padding: 0, bias: false)
  }

  /// Batches of nine or more examples are cut into several convolution chunks (here 2 + 2 + … ).
  static func conv3x3Pad1Chunked() throws -> LayerHarness {
    try conv(.image(c: 2, h: 4, w: 4), out: 3, kernel: 3, stride: 1, padding: 1, bias: false, batch: 10)
  }

  /// Chunks of two examples with a one-example remainder, strided, with bias.
  static func conv5x5Stride2Chunked() throws -> LayerHarness {
    try conv(.image(c: 2, h: 7, w: 7), out: 2, kernel: 5, stride: 2, padding: 2, bias: true, batch: 11)
  }

  static func batchNormImage(_ mode: Mode) -> LayerHarness {
    LayerHarness(BatchNorm(.image(c: 3, h: 3, w: 3)), batch: 4, mode: mode)
  }

  static func batchNormFlat(_ mode: Mode) -> LayerHarness {
    LayerHarness(BatchNorm(.flat(5)), batch: 6, mode: mode)
  }

  static func maxPool() throws -> LayerHarness {
    LayerHarness(
      try MaxPool2D(input: .image(c: 2, h: 6, w: 6), kernel: 2), batch: 2,
      input: { rng, n in rng.distinctArray(n) })
  }

  static func maxPoolOverlapping() throws -> LayerHarness {
    LayerHarness(
      try MaxPool2D(input: .image(c: 2, h: 7, w: 7), kernel: 3, stride: 2), batch: 2,
      input: { rng, n in rng.distinctArray(n) })
  }

  static func avgPool() throws -> LayerHarness {
    LayerHarness(try AvgPool2D(input: .image(c: 2, h: 4, w: 6), kernel: 2), batch: 2)
  }

  static func avgPoolOverlapping() throws -> LayerHarness {
    LayerHarness(try AvgPool2D(input: .image(c: 2, h: 7, w: 7), kernel: 3, stride: 2), batch: 2)
  }

  static func globalAvgPool() throws -> LayerHarness {
    LayerHarness(try GlobalAvgPool(input: .image(c: 3, h: 3, w: 4)), batch: 2)
  }

  static func dropout() throws -> LayerHarness {
    LayerHarness(try Dropout(.image(c: 2, h: 3, w: 3), rate: 0.4), batch: 3, mode: .train)
  }

  static func shortcutA(stride: Int) throws -> LayerHarness {
    LayerHarness(try ShortcutA(input: .image(c: 2, h: 5, w: 5), outChannels: 6, stride: stride), batch: 2)
  }

  /// x + conv(relu(bn(conv x))).
  static func residualIdentity() throws -> LayerHarness {
    let l: Layout = .image(c: 3, h: 4, w: 4)
    let c1 = try Conv2D(input: l, outChannels: 3, kernel: 3, padding: 1)
    let c2 = try Conv2D(input: l, outChannels: 3, kernel: 3, padding: 1)
    let body = try Sequential([c1, BatchNorm(l), ReLU(l), c2])
    return LayerHarness(try Residual(body: body), batch: 3)
  }

  /// bn(conv₁ₓ₁,s2 x) + conv(relu(bn(conv_s2 x))).
  static func residualProjection() throws -> LayerHarness {
    let l: Layout = .image(c: 2, h: 6, w: 6)
    let c1 = try Conv2D(input: l, outChannels: 4, kernel: 3, stride: 2, padding: 1)
    let o = c1.outputLayout
    let c2 = try Conv2D(input: o, outChannels: 4, kernel: 3, padding: 1)
    let body = try Sequential([c1, BatchNorm(o), ReLU(o), c2])
    let proj = try Conv2D(input: l, outChannels: 4, kernel: 1, stride: 2)
    let shortcut = try Sequential([proj, BatchNorm(o)])
    return LayerHarness(try Residual(body: body, shortcut: shortcut), batch: 3)
  }

  /// The CIFAR ResNet basic block (post-activation, option-A shortcut when downsampling).
  static func basicBlock(stride: Int, optionA: Bool = true) throws -> LayerHarness {
    let input: Layout = stride == 1 ? .image(c: 4, h: 4, w: 4) : .image(c: 2, h: 6, w: 6)
    let layers = try Models.basicBlock(input: input, outChannels: 4, stride: stride, optionA: optionA)
    return LayerHarness(try Sequential(layers), batch: 3)
  }
}
