import MetaweightTensor

/// Builders for the architectures the papers use.
public enum Models {
  /// A multi-layer perceptron: Linear → ReLU (→ BatchNorm) … → Linear.
  ///
  /// - Parameters:
  ///   - widths: [input, hidden…, classes]; at least two entries.
  ///   - batchNorm: insert batch norm after each hidden linear layer.
  ///   - dropout: dropout rate after each hidden activation (0 = none).
  public static func mlp(widths: [Int], batchNorm: Bool = false, dropout: Float = 0) throws -> Sequential {
    guard widths.count >= 2, widths.allSatisfy({ $0 > 0 }) else {
      throw MetaweightError.invalidArgument(
        "mlp widths: expected at least 2 positive sizes [in, ..., classes], got \(widths)")
    }
    var layers: [Layer] = []
    for i in 0..<(widths.count - 1) {
      layers.append(try Linear(widths[i], widths[i + 1]))
      if i < widths.count - 2 {
        if batchNorm { layers.append(BatchNorm(.flat(widths[i + 1]))) }
        layers.append(ReLU(.flat(widths[i + 1])))
        if dropout > 0 { layers.append(try Dropout(.flat(widths[i + 1]), rate: dropout)) }
      }
    }
    return try Sequential(layers)
  }

  /// LeNet-5: conv(6, 5×5) → ReLU → maxpool 2 → conv(16, 5×5) → ReLU → maxpool 2 → 120 → 84 → classes.
  /// 28×28 inputs are zero-padded by 2 in the first convolution so the feature map is 5×5 as for 32×32.
  public static func lenet5(input: Layout, classes: Int) throws -> Sequential {
    guard case .image(_, let h, let w) = input, h >= 28, w >= 28 else {
      throw MetaweightError.invalidArgument("lenet5: expected an image input of at least 28x28, got \(input)")
    }
    let pad = max(0, (32 - min(h, w)) / 2)
    let c1 = try Conv2D(input: input, outChannels: 6, kernel: 5, padding: pad, bias: true)
    let r1 = ReLU(c1.outputLayout)
    let p1 = try MaxPool2D(input: c1.outputLayout, kernel: 2)
    let c2 = try Conv2D(input: p1.outputLayout, outChannels: 16, kernel: 5, bias: true)
    let r2 = ReLU(c2.outputLayout)
    let p2 = try MaxPool2D(input: c2.outputLayout, kernel: 2)
    let f = Flatten(p2.outputLayout)
    return try Sequential([
      c1, r1, p1, c2, r2, p2, f,
      try Linear(f.outputLayout.size, 120), ReLU(.flat(120)),
      try Linear(120, 84), ReLU(.flat(84)),
      try Linear(84, classes),
    ])
  }

  /// The CIFAR ResNet basic block (post-activation): relu(bn(conv(relu(bn(conv x)))) + shortcut x).
  public static func basicBlock(input: Layout, outChannels: Int, stride: Int, optionA: Bool = true) throws -> [Layer] {
    guard case .image(let c, _, _) = input else {
      throw MetaweightError.invalidArgument("basic block: expected an image input, got \(input)")
    }
    let conv1 = try Conv2D(input: input, outChannels: outChannels, kernel: 3, stride: stride, padding: 1)
    let bn1 = BatchNorm(conv1.outputLayout)
    let relu1 = ReLU(conv1.outputLayout)
    let conv2 = try Conv2D(input: conv1.outputLayout, outChannels: outChannels, kernel: 3, padding: 1)
    let bn2 = BatchNorm(conv2.outputLayout)
    let body = try Sequential([conv1, bn1, relu1, conv2, bn2])
    var shortcut: Layer? = nil
    if stride != 1 || c != outChannels {
      if optionA {
        shortcut = try ShortcutA(input: input, outChannels: outChannels, stride: stride)
      } else {
        let pc = try Conv2D(input: input, outChannels: outChannels, kernel: 1, stride: stride)
        shortcut = try Sequential([pc, BatchNorm(pc.outputLayout)])
      }
    }
    return [try Residual(body: body, shortcut: shortcut), ReLU(conv2.outputLayout)]
  }

  /// ResNet-(6n+2) for 32×32 inputs with option-A shortcuts (n = 5 gives ResNet-32), as in the
  /// L2RW and MW-Net code: conv 16 → 3 stages of n blocks (16, 32, 64 channels) → GAP → linear.
  public static func cifarResNet(input: Layout, classes: Int, blocksPerStage n: Int = 5) throws -> Sequential {
    guard case .image = input, n > 0, classes > 0 else {
      throw MetaweightError.invalidArgument("resnet: expected an image input, n > 0, classes > 0, got \(input), \(n), \(classes)")
    }
    let stem = try Conv2D(input: input, outChannels: 16, kernel: 3, padding: 1)
    var layers: [Layer] = [stem, BatchNorm(stem.outputLayout), ReLU(stem.outputLayout)]
    var current = stem.outputLayout
    for (stage, width) in [16, 32, 64].enumerated() {
      for b in 0..<n {
        let stride = (stage > 0 && b == 0) ? 2 : 1
        let block = try basicBlock(input: current, outChannels: width, stride: stride)
        layers += block
        current = block[block.count - 1].outputLayout
      }
    }
    let gap = try GlobalAvgPool(input: current)
    layers.append(gap)
    layers.append(try Linear(gap.outputLayout.size, classes, kaiming: true))
    return try Sequential(layers)
  }

  /// Wide ResNet WRN-depth-widen (pre-activation blocks, dropout between the convolutions).
  public static func wideResNet(
    input: Layout, classes: Int, depth: Int = 28, widen: Int = 10, dropout: Float = 0
  ) throws -> Sequential {
    guard case .image = input, depth >= 10, (depth - 4) % 6 == 0, widen > 0, classes > 0 else {
      throw MetaweightError.invalidArgument(
        "wrn: expected an image input, depth = 6n+4 >= 10, widen > 0, got \(input), \(depth), \(widen)")
    }
    let n = (depth - 4) / 6
    let widths = [16 * widen, 32 * widen, 64 * widen]
    let stem = try Conv2D(input: input, outChannels: 16, kernel: 3, padding: 1)
    var layers: [Layer] = [stem]
    var current = stem.outputLayout
    for (g, width) in widths.enumerated() {
      for b in 0..<n {
        let stride = (g > 0 && b == 0) ? 2 : 1
        guard case .image(let c, _, _) = current else { break }
        let equal = c == width && stride == 1
        let bn1 = BatchNorm(current)
        let relu1 = ReLU(current)
        let conv1 = try Conv2D(input: current, outChannels: width, kernel: 3, stride: stride, padding: 1)
        let inner: [Layer] = [
          conv1, BatchNorm(conv1.outputLayout), ReLU(conv1.outputLayout),
        ] + (dropout > 0 ? [try Dropout(conv1.outputLayout, rate: dropout)] : [])
          + [try Conv2D(input: conv1.outputLayout, outChannels: width, kernel: 3, padding: 1)]
        if equal {
          layers.append(try Residual(body: try Sequential([bn1, relu1] + inner)))
        } else {
          let proj = try Conv2D(input: current, outChannels: width, kernel: 1, stride: stride)
          layers += [bn1, relu1, try Residual(body: try Sequential(inner), shortcut: proj)]
        }
        current = conv1.outputLayout
      }
    }
    layers += [BatchNorm(current), ReLU(current)]
    let gap = try GlobalAvgPool(input: current)
    layers += [gap, try Linear(gap.outputLayout.size, classes)]
    return try Sequential(layers)
  }
}
