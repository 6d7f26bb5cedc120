"""ONNX export (``Network.to_onnx``): the exported graph, run by onnxruntime, reproduces the core's
inference-mode logits for every architecture and every layer kind.

Each network is trained for a few SGD steps first, so its batch-norm running statistics are far from
their initial (0, 1) and its weights are not the initialisation: a graph that used batch statistics,
kept dropout on, or got a layer's padding, stride, pooling rounding, flatten order or shortcut wrong
would be off by orders of magnitude more than the tolerance.

Tolerance: ``max |onnx - core| / max |core| <= 1e-5`` for every network and batch size against the
core's GEMM convolutions. Both sides compute in float32 but sum in different orders (the core's
GEMM/im2col blocking and its batch-norm ``x * a + b`` folding vs. onnxruntime's kernels), so they
agree to a few float32 ulps of the largest logit per layer; measured (x86-64, onnxruntime 1.32) 0 to
2e-7 for the MLPs and 1e-7 to 1e-6 for LeNet-5, ResNet-32, the WRNs and the composed networks (see
the README), so 1e-5 leaves a factor of 10 or more for other CPUs and onnxruntime versions.

Against the core's default algorithms (Winograd F(4x4,3x3) on 3x3 stride-1 layers from 16
channels, whose transforms' rounding is ~2e-6 of sum |w||x| per layer, 25x GEMM's) the logits
agree to 2e-7 .. 4e-6 (measured, under the Haswell and Cooperlake kernels), checked at 1e-4.
The check does discriminate: exporting batch norm with epsilon 1e-3 instead of the core's 1e-5
already moves these figures to 2e-4 to 6e-3.

Skipped only when ``onnx`` or ``onnxruntime`` is not installed (the ``metaweight[onnx]`` extra).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import metaweight as mw
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from metaweight.onnx import OnnxExportError, OnnxNotInstalledError  # noqa: E402

RTOL = 1e-5
RTOL_WINOGRAD = 1e-4
BATCH_SIZES = (1, 37)


def _composed() -> mw.Network:
    """Every layer kind, at odd sizes (7x7 into a stride-2 ShortcutA and a 3/2 max pool)."""
    return mw.build(
        [
            mw.Conv2d(8, 3, padding=1, bias=True),
            mw.BatchNorm(),
            mw.ReLU(),
            mw.MaxPool2d(3, stride=2),  # 15 -> 7 (floor)
            mw.Residual(
                [mw.Conv2d(12, 3, stride=2, padding=1), mw.BatchNorm(), mw.ReLU(), mw.Dropout(0.3),
                 mw.Conv2d(12, 3, padding=1), mw.BatchNorm()],
                shortcut=[mw.ShortcutA(12, stride=2)],  # 7 -> 4 (ceil), channels 8 -> 12
            ),
            mw.ReLU(),
            mw.Residual([mw.Conv2d(12, 1), mw.ReLU()]),  # identity shortcut
            mw.Residual([mw.Conv2d(12, 3, padding=1)], shortcut=[mw.Conv2d(12, 1, bias=True)]),
            mw.AvgPool2d(2, stride=1),  # 4 -> 3
            mw.Flatten(),
            mw.Linear(20),
            mw.BatchNorm(),
            mw.ReLU(),
            mw.Dropout(0.5),
            mw.Linear(16, bias=False, kaiming=True),
            mw.Residual([mw.Linear(16), mw.ReLU()]),
            mw.Linear(7),
        ],
        input_shape=(3, 15, 15),
        seed=3,
    )


def _composed_gap() -> mw.Network:
    """A strided convolution without padding, a 3x3 average pool (floor), GlobalAvgPool and a Flatten
    on an already flat input."""
    return mw.build(
        [mw.Conv2d(6, 3, stride=2), mw.BatchNorm(), mw.ReLU(), mw.AvgPool2d(3), mw.GlobalAvgPool(),
         mw.Flatten(), mw.Linear(5)],
        input_shape=(2, 20, 18),
        seed=1,
    )


NETWORKS: dict[str, Callable[[], mw.Network]] = {
    "mlp": lambda: mw.mlp(20, hidden=(32, 16), num_classes=5, batch_norm=True, dropout=0.2, seed=1),
    "mlp_plain": lambda: mw.mlp(20, hidden=(16,), num_classes=3, seed=2),
    "lenet5": lambda: mw.lenet5(input_shape=(1, 28, 28), num_classes=10),
    "resnet32": lambda: mw.resnet32(input_shape=(3, 32, 32), num_classes=10),
    "wrn-10-1": lambda: mw.wide_resnet(depth=10, widen=1, input_shape=(3, 16, 16), dropout=0.3),
    "wrn-16-2": lambda: mw.wide_resnet(depth=16, widen=2, input_shape=(3, 8, 8), num_classes=4),
    "composed": _composed,
    "composed_gap": _composed_gap,
    # A raw spec: aliases, upper case, spaces and the resnet preset with n = 1.
    "raw_spec": lambda: mw.Network(
        " Conv(out=4, k=3, p=1); BN ;ReLU; resnet(classes=3, n=1); dropout", input_shape=(2, 9, 9), seed=5
    ),
}


def _trained(make: Callable[[], mw.Network]) -> tuple[mw.Network, mw.Trainer]:
    net = make()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((32, *net.input_shape)) * 2 + 0.5).astype(np.float32)
    y = rng.integers(0, net.num_classes, 32)
    trainer = mw.Trainer(net, mw.SGD(lr=0.05, momentum=0.9))
    for _ in range(3):
        trainer.step(x, y)
    return net, trainer


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name", list(NETWORKS))
def test_onnx_matches_core_logits(name: str, tmp_path: Path) -> None:
    net, trainer = _trained(NETWORKS[name])
    with trainer, net:
        if net.num_state_values:  # the running statistics moved away from (0, 1)
            stats = net.buffers()
            assert max(float(np.abs(v).max()) for k, v in stats.items() if k.endswith("running_mean")) > 1e-3
        path = tmp_path / f"{name}.onnx"
        model = net.to_onnx(path)
        assert path.is_file()
        onnx.checker.check_model(str(path))
        assert [i.name for i in model.graph.input] == ["input"]
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == list(net.input_shape)
        session = _session(path)
        rng = np.random.default_rng(1)
        for n in BATCH_SIZES:
            x = rng.standard_normal((n, *net.input_shape)).astype(np.float32)
            got = session.run(["logits"], {"input": x})[0]
            default = trainer.logits(x)
            assert _rel(got, default) <= RTOL_WINOGRAD, (name, n, _rel(got, default))
            net.set_conv_algorithm("gemm")
            want = trainer.logits(x)
            net.set_conv_algorithm("auto")
            assert got.shape == want.shape == (n, net.num_classes)
            assert _rel(got, want) <= RTOL, (name, n, _rel(got, want))
            # Softmax moves each probability by at most the largest logit change, so the
            # probabilities (the default algorithms') agree to RTOL_WINOGRAD * max |logit| absolutely.
            e = np.exp(got - got.max(axis=1, keepdims=True))
            dp = np.abs(e / e.sum(axis=1, keepdims=True) - trainer.predict_proba(x)).max()
            assert dp <= RTOL_WINOGRAD * max(1.0, float(np.abs(default).max())), (name, n, dp)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_onnx_opsets(opset: int, tmp_path: Path) -> None:
    net, trainer = _trained(_composed)
    with trainer, net:
        path = tmp_path / "m.onnx"
        model = net.to_onnx(path, opset=opset)
        assert model.opset_import[0].version == opset
        x = np.random.default_rng(2).standard_normal((5, *net.input_shape)).astype(np.float32)
        assert _rel(_session(path).run(["logits"], {"input": x})[0], trainer.logits(x)) <= RTOL


def test_onnx_in_memory_and_untrained_network() -> None:
    with mw.Network("linear(out=4);dropout(p=0.5)", input_shape=(3,)) as net:
        model = net.to_onnx(None)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        with mw.Trainer(net) as t:
            assert _rel(session.run(["logits"], {"input": x})[0], t.logits(x)) <= RTOL


def test_unknown_layer_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with mw.mlp(4, hidden=(3,), num_classes=2) as net:
        # A layer kind the exporter does not know, in the spec ...
        monkeypatch.setattr(mw.Network, "spec", property(lambda self: "linear(out=3);swish;linear(out=2)"))
        with pytest.raises(OnnxExportError, match="'swish' cannot be exported"):
            net.to_onnx(None)
        monkeypatch.undo()
        # ... or only in the core's description of the network.
        real = mw.Network.summary
        monkeypatch.setattr(
            mw.Network, "summary", lambda self: real(self).replace("relu (3)", "gelu (3)")
        )
        with pytest.raises(OnnxExportError, match="'gelu' cannot be exported") as info:
            net.to_onnx(None)
        assert isinstance(info.value, mw.MetaweightError) and isinstance(info.value, ValueError)


def test_bad_arguments(tmp_path: Path) -> None:
    with mw.mlp(4, hidden=(3,), num_classes=2) as net:
        with pytest.raises(mw.InvalidArgumentError, match="opset"):
            net.to_onnx(tmp_path / "m.onnx", opset=9)
        with pytest.raises(mw.InvalidArgumentError, match="path"):
            net.to_onnx(3)  # type: ignore[arg-type]
    with pytest.raises(mw.ClosedError):
        net.to_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_missing_onnx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with mw.mlp(4, hidden=(3,), num_classes=2) as net:
        with pytest.raises(OnnxNotInstalledError, match=r"metaweight\[onnx\]") as info:
            net.to_onnx(None)
    assert isinstance(info.value, ImportError) and isinstance(info.value, mw.MetaweightError)
