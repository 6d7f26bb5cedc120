import XCTest

@testable import MetaweightTensor
@testable import MetaweightLayers
@testable import MetaweightOptim
@testable import MetaweightTraining
@testable import MetaweightWeighting
@testable import MetaweightLAW

/// Forward mode (`tangent`, the JVP) against central finite differences along a random parameter
/// direction, a random input direction and both together; and the adjoint identity
/// ⟨u, J·v⟩ = ⟨Jᵀ·u, v⟩ linking the tangent pass to the backward pass (u random over the output,
/// v random over parameters and input).
final class JVPTests: XCTestCase {
  /// Step for smooth layers, and a smaller first step for blocks with ReLUs after batch norm
  /// (the differences shrink it further when a step would switch a ReLU; see `KinkPattern`).
  let h: Float = 1e-2
  let hKinked: Float = 1e-3
  /// Cap on the derived tolerance (see `LayerHarness.checkGradients`): the derived bound is the
  /// tolerance wherever it is tighter, which it is for every smooth layer.
  let tol = 1e-2

  func testLinearWithBiasJVPMatchesFiniteDifferences() throws {
    try LayerCases.linear(bias: true).checkTangent(step: h, tolerance: tol)
  }

  func testLinearWithBiasTangentIsAdjointToBackward() throws {
    try LayerCases.linear(bias: true).checkAdjoint()
  }

  func testLinearWithoutBiasJVPMatchesFiniteDifferences() throws {
    try LayerCases.linear(bias: false).checkTangent(step: h, tolerance: tol)
  }

  func testLinearWithoutBiasTangentIsAdjointToBackward() throws {
    try LayerCases.linear(bias: false).checkAdjoint()
  }

  func testReLUJVPMatchesFiniteDifferences() {
    LayerCases.relu().checkTangent(step: h, tolerance: tol)
  }

  func testReLUTangentIsAdjointToBackward() {
    LayerCases.relu().checkAdjoint()
  }

  func testFlattenJVPMatchesFiniteDifferences() {
    LayerCases.flatten().checkTangent(step: h, tolerance: tol)
  }

  func testFlattenTangentIsAdjointToBackward() {
    LayerCases.flatten().checkAdjoint()
  }

  func testConv2D3x3Pad1JVPMatchesFiniteDifferences() throws {
    try LayerCases.conv3x3Pad1().checkTangent(step: h, tolerance: tol)
  }

  func testConv2D3x3Pad1TangentIsAdjointToBackward() throws {
    try LayerCases.conv3x3Pad1().checkAdjoint()
  }

  func testConv2D3x3Stride2JVPMatchesFiniteDifferences() throws {
    try LayerCases.conv3x3Stride2().checkTangent(step: h, tolerance: tol)
  }

  func testConv2D3x3Stride2TangentIsAdjointToBackward() throws {
    try LayerCases.conv3x3Stride2().checkAdjoint()
  }

  func testConv2D5x5NoPaddingWithBiasJVPMatchesFiniteDifferences() throws {
    try LayerCases.conv5x5NoPadBias().checkTangent(step: h, tolerance: tol)
  }

  func testConv2D5x5NoPaddingWithBiasTangentIsAdjointToBackward() throws {
    try LayerCases.conv5x5NoPadBias().checkAdjoint()
  }

  func testConv2D1x1Stride1JVPMatchesFiniteDifferences() throws {
    try LayerCases.conv1x1().checkTangent(step: h, tolerance: tol)
  }

  func testConv2D1x1Stride1TangentIsAdjointToBackward() throws {
    try LayerCases.conv1x1().checkAdjoint()
  }

  func testConv2D1x1Stride2JVPMatchesFiniteDifferences() throws {
    try LayerCases.conv1x1Stride2().checkTangent(step: h, tolerance: tol)
  }

  func testConv2D1x1Stride2TangentIsAdjointToBackward() throws {
    try LayerCases.conv1x1Stride2().checkAdjoint()
  }

  func testConv2DChunkedBatchJVPMatchesFiniteDifferences() throws {
    try LayerCases.conv3x3Pad1Chunked().checkTangent(step: h, tolerance: tol)
  }

  func testConv2DChunkedBatchTangentIsAdjointToBackward() throws {
    try LayerCases.conv3x3Pad1Chunked().checkAdjoint()
  }

  func testConv2DStridedChunkedBatchWithBiasJVPMatchesFiniteDifferences() throws {
    try LayerCases.conv5x5Stride2Chunked().checkTangent(step: h, tolerance: tol)
  }

  func testConv2DStridedChunkedBatchWithBiasTangentIsAdjointToBackward() throws {
    try LayerCases.conv5x5Stride2Chunked().checkAdjoint()
  }

  func testBatchNormTrainingImageJVPMatchesFiniteDifferences() {
    LayerCases.batchNormImage(.train).checkTangent(step: h, tolerance: tol)
  }

  func testBatchNormTrainingImageTangentIsAdjointToBackward() {
    LayerCases.batchNormImage(.train).checkAdjoint()
  }

  func testBatchNormTrainingFlatJVPMatchesFiniteDifferences() {
    LayerCases.batchNormFlat(.train).checkTangent(step: h, tolerance: tol)
  }

  func testBatchNormTrainingFlatTangentIsAdjointToBackward() {
    LayerCases.batchNormFlat(.train).checkAdjoint()
  }

  func testBatchNormVirtualTrainJVPMatchesFiniteDifferences() {
    LayerCases.batchNormImage(.virtualTrain).checkTangent(step: h, tolerance: tol)
  }

  func testBatchNormVirtualTrainTangentIsAdjointToBackward() {
    LayerCases.batchNormImage(.virtualTrain).checkAdjoint()
  }

  func testBatchNormEvalImageJVPMatchesFiniteDifferences() {
    LayerCases.batchNormImage(.eval).checkTangent(step: h, tolerance: tol)
  }

  func testBatchNormEvalImageTangentIsAdjointToBackward() {
    LayerCases.batchNormImage(.eval).checkAdjoint()
  }

  func testBatchNormEvalFlatJVPMatchesFiniteDifferences() {
    LayerCases.batchNormFlat(.eval).checkTangent(step: h, tolerance: tol)
  }

  func testBatchNormEvalFlatTangentIsAdjointToBackward() {
    LayerCases.batchNormFlat(.eval).checkAdjoint()
  }

  func testMaxPoolJVPMatchesFiniteDifferences() throws {
    try LayerCases.maxPool().checkTangent(step: h, tolerance: tol)
  }

  func testMaxPoolTangentIsAdjointToBackward() throws {
    try LayerCases.maxPool().checkAdjoint()
  }

  func testOverlappingMaxPoolJVPMatchesFiniteDifferences() throws {
    try LayerCases.maxPoolOverlapping().checkTangent(step: h, tolerance: tol)
  }

  func testOverlappingMaxPoolTangentIsAdjointToBackward() throws {
    try LayerCases.maxPoolOverlapping().checkAdjoint()
  }

  func testAvgPoolJVPMatchesFiniteDifferences() throws {
    try LayerCases.avgPool().checkTangent(step: h, tolerance: tol)
  }

  func testAvgPoolTangentIsAdjointToBackward() throws {
    try LayerCases.avgPool().checkAdjoint()
  }

  func testOverlappingAvgPoolJVPMatchesFiniteDifferences() throws {
    try LayerCases.avgPoolOverlapping().checkTangent(step: h, tolerance: tol)
  }

  func testOverlappingAvgPoolTangentIsAdjointToBackward() throws {
    try LayerCases.avgPoolOverlapping().checkAdjoint()
  }

  func testGlobalAvgPoolJVPMatchesFiniteDifferences() throws {
    try LayerCases.globalAvgPool().checkTangent(step: h, tolerance: tol)
  }

  func testGlobalAvgPoolTangentIsAdjointToBackward() throws {
    try LayerCases.globalAvgPool().checkAdjoint()
  }

  func testDropoutWithFixedMaskJVPMatchesFiniteDifferences() throws {
    try LayerCases.dropout().checkTangent(step: h, tolerance: tol)
  }

  func testDropoutWithFixedMaskTangentIsAdjointToBackward() throws {
    try LayerCases.dropout().checkAdjoint()
  }

  func testShortcutAStride2JVPMatchesFiniteDifferences() throws {
    try LayerCases.shortcutA(stride: 2).checkTangent(step: h, tolerance: tol)
  }

  func testShortcutAStride2TangentIsAdjointToBackward() throws {
    try LayerCases.shortcutA(stride: 2).checkAdjoint()
  }

  func testShortcutAStride1JVPMatchesFiniteDifferences() throws {
    try LayerCases.shortcutA(stride: 1).checkTangent(step: h, tolerance: tol)
  }

  func testShortcutAStride1TangentIsAdjointToBackward() throws {
    try LayerCases.shortcutA(stride: 1).checkAdjoint()
  }

  func testResidualIdentityJVPMatchesFiniteDifferences() throws {
    try LayerCases.residualIdentity().checkTangent(step: hKinked, tolerance: tol)
  }

  func testResidualIdentityTangentIsAdjointToBackward() throws {
    try LayerCases.residualIdentity().checkAdjoint()
  }

  func testResidualProjectionJVPMatchesFiniteDifferences() throws {
    try LayerCases.residualProjection().checkTangent(step: hKinked, tolerance: tol)
  }

  func testResidualProjectionTangentIsAdjointToBackward() throws {
    try LayerCases.residualProjection().checkAdjoint()
  }

  func testResNetBasicBlockJVPMatchesFiniteDifferences() throws {
    try LayerCases.basicBlock(stride: 1).checkTangent(step: hKinked, tolerance: tol)
  }

  func testResNetBasicBlockTangentIsAdjointToBackward() throws {
    try LayerCases.basicBlock(stride: 1).checkAdjoint()
  }

  func testDownsamplingResNetBasicBlockJVPMatchesFiniteDifferences() throws {
    try LayerCases.basicBlock(stride: 2).checkTangent(step: hKinked, tolerance: tol)
  }

  func testDownsamplingResNetBasicBlockTangentIsAdjointToBackward() throws {
    try LayerCases.basicBlock(stride: 2).checkAdjoint()
  }

  func testDownsamplingResNetBasicBlockWithProjectionJVPMatchesFiniteDifferences() throws {
    try LayerCases.basicBlock(stride: 2, optionA: false).checkTangent(step: hKinked, tolerance: tol)
  }

  func testDownsamplingResNetBasicBlockWithProjectionTangentIsAdjointToBackward() throws {
    try LayerCases.basicBlock(stride: 2, optionA: false).checkAdjoint()
  }

  func testTangentOfLinearLayersIsLinearInTheDirection() throws {
    // J(a·v + w) = a·J(v) + J(w) for the exact tangent (checked on a convolution and batch norm).
    for t in [try LayerCases.conv5x5NoPadBias(), LayerCases.batchNormImage(.train)] {
      var rng = RNG(seed: 77)
      let vp = rng.gaussianArray(t.paramCount), wp = rng.gaussianArray(t.paramCount)
      let vx = rng.gaussianArray(t.inputCount), wx = rng.gaussianArray(t.inputCount)
      let pass = t.forward()
      let combined = t.tangent(pass, params: Vec.axpy(wp, 2.5, vp), input: Vec.axpy(wx, 2.5, vx))
      let jv = t.tangent(pass, params: vp, input: vx)
      let jw = t.tangent(pass, params: wp, input: wx)
      Check.elementsClose(combined, Vec.axpy(jw, 2.5, jv), rtol: 1e-4, atol: 1e-4, "\(t.layer.kind): linearity of the JVP")
    }
  }
}
