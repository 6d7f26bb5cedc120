"""The per-layer convolution algorithm selector (Winograd F(4x4,3x3) or im2col + GEMM).

The algorithm is a preference, not part of the maths: the same parameters give the same logits to
float32 rounding (tolerance below), checkpoints and state dicts load across algorithms, the
architecture signature ignores it, and the ONNX exporter reads the same layers.

Tolerance for logits of the two algorithms: both are within a few float32 rounding errors of the
exact convolution at every layer (the Swift suite's WinogradTests derive the per-layer bound:
γ_n times the absolute-value propagation, ~1e-6 relative for these widths); through ResNet-32's
31 convolutions and batch norms the logits then differ by ~1e-5 relative; 1e-3 leaves a wide margin
for every OpenBLAS kernel family while a wrong transform gives errors of order 1.
"""

from __future__ import annotations

import metaweight as mw
import numpy as np
import pytest
from metaweight.errors import InvalidArgumentError


def _x(n: int = 4, shape: tuple[int, ...] = (3, 16, 16), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def test_auto_runs_winograd_only_on_eligible_wide_layers() -> None:
    net = mw.resnet32(input_shape=(3, 16, 16), num_classes=10)
    algos = net.conv_algorithms
    assert len(algos) == 31
    # Every 3x3 stride-1 convolution from 16 channels on runs Winograd: all but the 3-channel stem and
    # the two stride-2 convolutions that open stages 2 and 3.
    assert algos[0] == "gemm" and algos[1:11] == ["winograd"] * 10
    assert algos[11] == "gemm" and algos[21] == "gemm"
    assert algos[12:21] == ["winograd"] * 9 and algos[22:] == ["winograd"] * 9


def test_preference_from_presets_layers_and_setter() -> None:
    assert set(mw.resnet32(input_shape=(3, 16, 16), conv_algorithm="gemm").conv_algorithms) == {"gemm"}
    forced = mw.resnet32(input_shape=(3, 16, 16), conv_algorithm="winograd")
    assert forced.conv_algorithms.count("gemm") == 2  # the two stride-2 convolutions
    assert "algo=2" in forced.spec
    net = mw.build(
        [mw.Conv2d(8, 3, padding=1, algorithm="winograd"), mw.GlobalAvgPool(), mw.Linear(2)], (3, 8, 8)
    )
    assert net.conv_algorithms == ["winograd"]
    assert net.set_conv_algorithm("gemm") == 1
    assert net.conv_algorithms == ["gemm"]
    # LeNet's 5x5 convolutions are not eligible: forcing Winograd leaves them on GEMM.
    assert mw.lenet5(conv_algorithm="winograd").conv_algorithms == ["gemm", "gemm"]


@pytest.mark.parametrize("bad", ["fast", "", None, 2, "Winograd"])
def test_unknown_algorithm_raises_naming_the_argument(bad: object) -> None:
    net = mw.resnet32(input_shape=(3, 16, 16))
    before = net.get_flat()
    with pytest.raises(InvalidArgumentError, match="algorithm"):
        net.set_conv_algorithm(bad)  # type: ignore[arg-type]
    assert net.conv_algorithms.count("winograd") == 28
    np.testing.assert_array_equal(net.get_flat(), before)
    with pytest.raises(InvalidArgumentError, match="conv_algorithm"):
        mw.resnet32(conv_algorithm=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="Conv2d.algorithm"):
        mw.Conv2d(4, 3, algorithm=bad)  # type: ignore[arg-type]


def test_algorithms_agree_and_checkpoints_load_across_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gemm = mw.resnet32(input_shape=(3, 16, 16), seed=3, conv_algorithm="gemm")
    wino = mw.resnet32(input_shape=(3, 16, 16), seed=3, conv_algorithm="winograd")
    assert gemm.signature == wino.signature
    np.testing.assert_array_equal(gemm.get_flat(), wino.get_flat())
    x, y = _x(), np.arange(4) % 10
    # Same parameters: the logits agree to float32 rounding (F(4x4)'s error is ~2e-6 of sum |w||x|
    # per layer; see WinogradTests).
    f0 = gemm.get_flat()
    tg = mw.Trainer(gemm, mw.SGD(lr=0.05, momentum=0.9), seed=0)
    tw = mw.Trainer(wino, mw.SGD(lr=0.05, momentum=0.9), seed=0)
    lg0, lw0 = tg.logits(x), tw.logits(x)
    assert np.max(np.abs(lg0 - lw0)) <= 1e-4 * np.max(np.abs(lg0))
    for _ in range(2):
        lg = tg.step(x, y).loss
        lw = tw.step(x, y).loss
        assert abs(lg - lw) <= 1e-3 * abs(lg)
    # After training steps the two runs drift apart by more than rounding where a ReLU input near
    # zero got opposite signs (a batch of 4 at 4x4 pixels has such kinks): one flipped element
    # moved a step's update by ~1e-3 of its norm here, so the check is on that scale.
    fg, fw = gemm.get_flat(), wino.get_flat()
    assert np.linalg.norm(fg - fw) <= 1e-2 * np.linalg.norm(fg - f0)
    # A checkpoint saved with one algorithm loads into a trainer preferring the other.
    path = tmp_path / "gemm.ckpt"
    tg.save(path)
    target = mw.resnet32(input_shape=(3, 16, 16), seed=9, conv_algorithm="winograd")
    other = mw.Trainer(target, mw.SGD(lr=0.05, momentum=0.9), seed=0)
    other.load(path)
    np.testing.assert_array_equal(target.get_flat(), gemm.get_flat())
    assert target.conv_algorithms == wino.conv_algorithms


def test_onnx_export_ignores_the_algorithm() -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net = mw.build(
        [
            mw.Conv2d(32, 3, padding=1),
            mw.BatchNorm(),
            mw.ReLU(),
            mw.Conv2d(32, 3, padding=1, algorithm="winograd"),
            mw.GlobalAvgPool(),
            mw.Linear(3),
        ],
        (32, 8, 8),
    )
    assert net.conv_algorithms == ["winograd", "winograd"]
    model = net.to_onnx(None)
    sess = ort.InferenceSession(model.SerializeToString())
    x = _x(2, (32, 8, 8))
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    core = mw.Trainer(net, mw.SGD(lr=0.1), seed=0).logits(x)
    assert np.max(np.abs(out - core)) <= 1e-4 * np.max(np.abs(core))
