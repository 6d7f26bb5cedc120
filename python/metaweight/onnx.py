"""ONNX export of metaweight networks (the ``metaweight[onnx]`` extra).

:meth:`Network.to_onnx <metaweight.Network.to_onnx>` writes a network as an ONNX graph that computes
its inference-mode logits: batch normalisation with the running statistics, dropout off. The graph
takes ``(N, D)`` or ``(N, C, H, W)`` float32 inputs named ``"input"`` with a dynamic batch dimension
``N`` and returns ``(N, num_classes)`` float32 logits named ``"logits"``::

    net.to_onnx("model.onnx")

    import onnxruntime as ort
    sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x.astype(np.float32)})[0]

The layer structure comes from the network's spec string (presets such as ``resnet32(...)`` are
expanded exactly as the core expands them), and the export checks it against the core's own
description of the network (:meth:`Network.summary` and the parameter names and shapes) before it
writes anything, so a structure the exporter does not understand is an error, never a wrong graph.

Layer by layer (the core's semantics, which the ONNX operators reproduce):

==================  =============================================================================
metaweight          ONNX
==================  =============================================================================
``Linear``          ``Gemm`` (``transB=1``; weight ``[out, in]``)
``Conv2d``          ``Conv`` (square kernel, stride, symmetric zero padding, floor output size)
``BatchNorm``       ``BatchNormalization`` with the running mean and variance, ``epsilon=1e-5``
                    (on ``(N, D)`` for flat inputs, ``(N, C, H, W)`` for images)
``ReLU``            ``Relu``
``MaxPool2d``       ``MaxPool`` (no padding, floor output size)
``AvgPool2d``       ``AveragePool`` (no padding, floor output size; ``count_include_pad=0``,
                    which is moot without padding)
``GlobalAvgPool``   ``GlobalAveragePool`` then ``Flatten`` to ``(N, C)``
``Flatten``         ``Flatten`` (``C, H, W`` order, as the core flattens); nothing on flat inputs
``Dropout``         nothing (identity in inference)
``Residual``        ``Add`` of the body and the shortcut (identity when there is none); a ReLU
                    after the block is its own layer in metaweight and in the graph
``ShortcutA``       ``Slice`` with step ``stride`` on H and W (``x[:, :, ::s, ::s]``), then ``Pad``
                    of ``(out - C) / 2`` zero channels on each side
``Sequential``      its layers in order
==================  =============================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .errors import InvalidArgumentError, MetaweightError

__all__ = ["MIN_OPSET", "OnnxExportError", "OnnxNotInstalledError", "export"]

#: The oldest opset the exporter writes (``Slice`` steps, ``Pad`` with tensor pads and ``Gemm``
#: without a bias need opset 11).
MIN_OPSET = 11

#: The epsilon the core's batch normalisation adds to the variance.
BATCHNORM_EPSILON = 1e-5

Layout = tuple[int, ...]


class OnnxNotInstalledError(MetaweightError, ImportError):
    """The ``onnx`` package is not installed (``pip install 'metaweight[onnx]'``). Also an
    ``ImportError``."""


class OnnxExportError(MetaweightError, ValueError):
    """The network holds a layer (or structure) the ONNX exporter cannot write; the message names it.
    Also a ``ValueError``."""


# ---- the layer tree, from the spec ------------------------------------------------------------------


@dataclass
class _Node:
    kind: str  # the core's layer kind: linear, conv2d, batchnorm, ..., sequential, residual
    inp: Layout
    out: Layout
    attrs: dict[str, Any] = field(default_factory=dict)
    children: list[_Node] = field(default_factory=list)
    params: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # (name, shape)
    state: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)


def _size(layout: Layout) -> int:
    return int(np.prod(layout))


def _fail(what: str) -> OnnxExportError:
    return OnnxExportError(f"to_onnx: {what}")


def _image(layout: Layout, kind: str) -> tuple[int, int, int]:
    if len(layout) != 3:
        raise _fail(f"layer {kind!r} expects an image input (C, H, W), got {layout}")
    return layout[0], layout[1], layout[2]


def _flat(layout: Layout, kind: str) -> int:
    if len(layout) != 1:
        raise _fail(f"layer {kind!r} expects a flat input, got {layout}")
    return layout[0]


def _linear(inp: Layout, out: int, bias: bool = True) -> _Node:
    d = _flat(inp, "linear")
    params: list[tuple[str, tuple[int, ...]]] = [("weight", (out, d))]
    params += [("bias", (out,))] if bias else []
    return _Node("linear", inp, (out,), {"bias": bias}, params=params)


def _conv(inp: Layout, out: int, k: int, s: int = 1, p: int = 0, bias: bool = False) -> _Node:
    c, h, w = _image(inp, "conv2d")
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    params: list[tuple[str, tuple[int, ...]]] = [("weight", (out, c, k, k))]
    params += [("bias", (out,))] if bias else []
    return _Node("conv2d", inp, (out, oh, ow), {"k": k, "s": s, "p": p, "bias": bias}, params=params)


def _bn(inp: Layout) -> _Node:
    c = (inp[0],)
    return _Node(
        "batchnorm", inp, inp, params=[("gamma", c), ("beta", c)],
        state=[("running_mean", c), ("running_var", c)],
    )


def _relu(inp: Layout) -> _Node:
    return _Node("relu", inp, inp)


def _pool(kind: str, inp: Layout, k: int, s: int) -> _Node:
    c, h, w = _image(inp, kind)
    return _Node(kind, inp, (c, (h - k) // s + 1, (w - k) // s + 1), {"k": k, "s": s})


def _gap(inp: Layout) -> _Node:
    return _Node("global_avgpool", inp, (_image(inp, "global_avgpool")[0],))


def _flatten(inp: Layout) -> _Node:
    return _Node("flatten", inp, (_size(inp),))


def _dropout(inp: Layout, p: float) -> _Node:
    return _Node("dropout", inp, inp, {"p": p})


def _shortcut_a(inp: Layout, out: int, s: int) -> _Node:
    c, h, w = _image(inp, "shortcut_a")
    return _Node("shortcut_a", inp, (out, -(-h // s), -(-w // s)), {"out": out, "s": s, "pad": (out - c) // 2})


def _seq(layers: list[_Node]) -> _Node:
    return _Node("sequential", layers[0].inp, layers[-1].out, children=layers)


def _residual(body: _Node, shortcut: _Node | None) -> _Node:
    return _Node("residual", body.inp, body.out, children=[body] + ([shortcut] if shortcut else []))


# The presets, expanded as Sources/MetaweightLayers/Models/Models.swift does.


def _mlp(widths: list[int], bn: bool, dropout: float) -> _Node:
    layers: list[_Node] = []
    cur: Layout = (widths[0],)
    for i in range(len(widths) - 1):
        layers.append(_linear(cur, widths[i + 1]))
        cur = layers[-1].out
        if i < len(widths) - 2:
            if bn:
                layers.append(_bn(cur))
            layers.append(_relu(cur))
            if dropout > 0:
                layers.append(_dropout(cur, dropout))
    return _seq(layers)


def _lenet5(inp: Layout, classes: int) -> _Node:
    _, h, w = _image(inp, "lenet5")
    pad = max(0, (32 - min(h, w)) // 2)
    c1 = _conv(inp, 6, 5, p=pad, bias=True)
    p1 = _pool("maxpool2d", c1.out, 2, 2)
    c2 = _conv(p1.out, 16, 5, bias=True)
    p2 = _pool("maxpool2d", c2.out, 2, 2)
    f = _flatten(p2.out)
    l1 = _linear(f.out, 120)
    l2 = _linear((120,), 84)
    l3 = _linear((84,), classes)
    return _seq([c1, _relu(c1.out), p1, c2, _relu(c2.out), p2, f, l1, _relu(l1.out), l2, _relu(l2.out), l3])


def _cifar_resnet(inp: Layout, classes: int, n: int) -> _Node:
    _image(inp, "resnet")
    stem = _conv(inp, 16, 3, p=1)
    layers = [stem, _bn(stem.out), _relu(stem.out)]
    cur = stem.out
    for stage, width in enumerate((16, 32, 64)):
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1
            conv1 = _conv(cur, width, 3, s=stride, p=1)
            conv2 = _conv(conv1.out, width, 3, p=1)
            body = _seq([conv1, _bn(conv1.out), _relu(conv1.out), conv2, _bn(conv2.out)])
            shortcut = _shortcut_a(cur, width, stride) if stride != 1 or cur[0] != width else None
            layers += [_residual(body, shortcut), _relu(conv2.out)]
            cur = conv2.out
    gap = _gap(cur)
    return _seq(layers + [gap, _linear(gap.out, classes)])


def _wide_resnet(inp: Layout, classes: int, depth: int, widen: int, dropout: float) -> _Node:
    _image(inp, "wrn")
    n = (depth - 4) // 6
    stem = _conv(inp, 16, 3, p=1)
    layers = [stem]
    cur = stem.out
    for g, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
        for b in range(n):
            stride = 2 if g > 0 and b == 0 else 1
            equal = cur[0] == width and stride == 1
            conv1 = _conv(cur, width, 3, s=stride, p=1)
            inner = [conv1, _bn(conv1.out), _relu(conv1.out)]
            if dropout > 0:
                inner.append(_dropout(conv1.out, dropout))
            inner.append(_conv(conv1.out, width, 3, p=1))
            if equal:
                layers.append(_residual(_seq([_bn(cur), _relu(cur)] + inner), None))
            else:
                proj = _conv(cur, width, 1, s=stride)
                layers += [_bn(cur), _relu(cur), _residual(_seq(inner), proj)]
            cur = conv1.out
    gap = _gap(cur)
    return _seq(layers + [_bn(cur), _relu(cur), gap, _linear(gap.out, classes)])


class _SpecParser:
    """The grammar of Sources/MetaweightLayers/Network/Spec.swift::

    spec  := item (';' item)*
    item  := name ['(' key '=' value (',' key '=' value)* ')'] | 'residual' '{' spec ['|' spec] '}'
    value := number | int 'x' int ...
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.pos = 0

    def error(self, what: str) -> OnnxExportError:
        return _fail(f"cannot read the network's spec {self.s!r}: {what} at position {self.pos}")

    def skip(self) -> None:
        while self.pos < len(self.s) and self.s[self.pos].isspace():
            self.pos += 1

    def accept(self, c: str) -> bool:
        self.skip()
        if self.pos < len(self.s) and self.s[self.pos] == c:
            self.pos += 1
            return True
        return False

    def identifier(self) -> str:
        self.skip()
        start = self.pos
        while self.pos < len(self.s) and (self.s[self.pos].isalnum() or self.s[self.pos] == "_"):
            self.pos += 1
        if start == self.pos:
            raise self.error("expected a layer name")
        return self.s[start : self.pos].lower()

    def value(self) -> list[float]:
        self.skip()
        items: list[float] = []
        while True:
            start = self.pos
            while self.pos < len(self.s) and (self.s[self.pos].isdigit() or self.s[self.pos] in "+-.eE"):
                self.pos += 1
            try:
                items.append(float(self.s[start : self.pos]))
            except ValueError:
                raise self.error("expected a number") from None
            if self.pos < len(self.s) and self.s[self.pos] == "x":
                self.pos += 1
            else:
                return items

    def parse(self, inp: Layout) -> list[_Node]:
        layers = self.sequence(inp)
        self.skip()
        if self.pos != len(self.s):
            raise self.error(f"unexpected {self.s[self.pos]!r}")
        return layers

    def sequence(self, inp: Layout) -> list[_Node]:
        layers: list[_Node] = []
        cur = inp
        while True:
            node = self.item(cur)
            layers.append(node)
            cur = node.out
            if not self.accept(";"):
                return layers

    def item(self, inp: Layout) -> _Node:
        name = self.identifier()
        if name == "residual":
            if not self.accept("{"):
                raise self.error("expected '{' after residual")
            body = _seq(self.sequence(inp))
            shortcut = _seq(self.sequence(inp)) if self.accept("|") else None
            if not self.accept("}"):
                raise self.error("expected '}' closing residual")
            return _residual(body, shortcut)
        args: dict[str, list[float]] = {}
        if self.accept("(") and not self.accept(")"):
            while True:
                key = self.identifier()
                if not self.accept("="):
                    raise self.error(f"expected '=' after {key!r}")
                args[key] = self.value()
                if not self.accept(","):
                    break
            if not self.accept(")"):
                raise self.error(f"expected ')' closing {name}")

        def num(key: str, default: float | None = None) -> float:
            if key not in args:
                if default is None:
                    raise self.error(f"{name} needs {key!r}")
                return default
            return args[key][0]

        def integer(key: str, default: int | None = None) -> int:
            return int(num(key, None if default is None else float(default)))

        if name == "linear":
            return _linear(inp, integer("out"), bool(integer("bias", 1)))
        if name in ("conv2d", "conv"):
            return _conv(inp, integer("out"), integer("k"), integer("s", 1), integer("p", 0), bool(integer("bias", 0)))
        if name in ("batchnorm", "bn"):
            return _bn(inp)
        if name == "relu":
            return _relu(inp)
        if name in ("maxpool", "avgpool"):
            k = integer("k")
            return _pool(name + "2d", inp, k, integer("s", k))
        if name == "gap":
            return _gap(inp)
        if name == "flatten":
            return _flatten(inp)
        if name == "dropout":
            return _dropout(inp, num("p", 0.5))
        if name == "shortcut_a":
            return _shortcut_a(inp, integer("out"), integer("s", 1))
        if name == "mlp":
            hidden = [int(v) for v in args.get("hidden", [])]
            widths = [_flat(inp, "mlp")] + hidden + [integer("classes")]
            return _mlp(widths, bool(integer("bn", 0)), num("dropout", 0.0))
        if name == "lenet5":
            return _lenet5(inp, integer("classes"))
        if name == "resnet32":
            return _cifar_resnet(inp, integer("classes"), 5)
        if name == "resnet":
            return _cifar_resnet(inp, integer("classes"), integer("n", 5))
        if name == "wrn":
            return _wide_resnet(inp, integer("classes"), integer("depth", 28), integer("widen", 10), num("dropout", 0.0))
        raise _fail(f"the layer {name!r} cannot be exported to ONNX (no ONNX translation is known for it)")


# ---- checking the tree against the core ---------------------------------------------------------------


def _fmt(layout: Layout) -> str:
    return "(" + ", ".join(str(d) for d in layout) + ")"


def _summary_lines(node: _Node, indent: str, out: list[str]) -> None:
    out.append(f"{indent}{node.kind} {_fmt(node.inp)} -> {_fmt(node.out)}")
    for child in node.children:
        _summary_lines(child, indent + "  ", out)


def _names(node: _Node, path: str, params: dict[str, tuple[int, ...]]) -> None:
    for i, child in enumerate(node.children):
        _names(child, f"{path}.{i}" if path else str(i), params)
    for pname, shape in node.params + node.state:
        params[f"{path}.{node.kind}.{pname}"] = shape


def _check(root: _Node, net: Any) -> None:
    """Raises OnnxExportError unless the tree is exactly the core's network."""
    core_lines = [line.split("  params=")[0] for line in net.summary().splitlines()[1:-1]]
    ours: list[str] = []
    for child in root.children:
        _summary_lines(child, "", ours)
    for i in range(max(len(ours), len(core_lines))):
        theirs = core_lines[i] if i < len(core_lines) else "(nothing)"
        mine = ours[i] if i < len(ours) else "(nothing)"
        if theirs != mine:
            kind = theirs.strip().split(" ")[0]
            raise _fail(
                f"the layer {kind!r} cannot be exported to ONNX: the core's network has "
                f"{theirs.strip()!r} at layer {i} where the exporter expected {mine.strip()!r}"
            )
    expected: dict[str, tuple[int, ...]] = {}
    for i, child in enumerate(root.children):
        _names(child, str(i), expected)
    actual = {k: tuple(v) for k, v in net.parameter_shapes().items()}
    if expected != actual:
        diff = sorted(set(expected.items()) ^ set(actual.items()))
        raise _fail(f"the network's parameters do not match its layers as the exporter reads them: {diff[:4]}")


# ---- the ONNX graph --------------------------------------------------------------------------------


class _Graph:
    def __init__(self, onnx: Any, values: dict[str, np.ndarray]) -> None:
        self.onnx = onnx
        self.helper = onnx.helper
        self.values = values
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def node(self, op: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.fresh(hint)
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def tensor(self, name: str, value: np.ndarray | None = None) -> str:
        array = self.values[name] if value is None else value
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def emit(self, node: _Node, x: str, path: str) -> str:
        kind = node.kind

        def p(name: str) -> str:
            return self.tensor(f"{path}.{kind}.{name}")

        if kind == "sequential":
            for i, child in enumerate(node.children):
                x = self.emit(child, x, f"{path}.{i}" if path else str(i))
            return x
        if kind == "residual":
            body = self.emit(node.children[0], x, f"{path}.0")
            short = self.emit(node.children[1], x, f"{path}.1") if len(node.children) > 1 else x
            return self.node("Add", [body, short], f"{path}.residual")
        if kind == "linear":
            inputs = [x, p("weight")] + ([p("bias")] if node.attrs["bias"] else [])
            return self.node("Gemm", inputs, f"{path}.linear", transB=1)
        if kind == "conv2d":
            k, s, pad = node.attrs["k"], node.attrs["s"], node.attrs["p"]
            inputs = [x, p("weight")] + ([p("bias")] if node.attrs["bias"] else [])
            return self.node(
                "Conv", inputs, f"{path}.conv2d", kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4
            )
        if kind == "batchnorm":
            inputs = [x, p("gamma"), p("beta"), p("running_mean"), p("running_var")]
            return self.node("BatchNormalization", inputs, f"{path}.batchnorm", epsilon=BATCHNORM_EPSILON)
        if kind == "relu":
            return self.node("Relu", [x], f"{path}.relu")
        if kind == "maxpool2d":
            k, s = node.attrs["k"], node.attrs["s"]
            return self.node("MaxPool", [x], f"{path}.maxpool2d", kernel_shape=[k, k], strides=[s, s])
        if kind == "avgpool2d":
            k, s = node.attrs["k"], node.attrs["s"]
            return self.node(
                "AveragePool", [x], f"{path}.avgpool2d", kernel_shape=[k, k], strides=[s, s], count_include_pad=0
            )
        if kind == "global_avgpool":
            pooled = self.node("GlobalAveragePool", [x], f"{path}.global_avgpool")
            return self.node("Flatten", [pooled], f"{path}.global_avgpool.flatten", axis=1)
        if kind == "flatten":
            return self.node("Flatten", [x], f"{path}.flatten", axis=1) if len(node.inp) == 3 else x
        if kind == "dropout":
            return x  # inference mode: the identity
        if kind == "shortcut_a":
            s, pad = node.attrs["s"], node.attrs["pad"]
            i64 = np.int64
            big = np.iinfo(np.int64).max
            sliced = x
            if s != 1:
                sliced = self.node(
                    "Slice",
                    [
                        x,
                        self.tensor(f"{path}.shortcut_a.starts", np.array([0, 0], dtype=i64)),
                        self.tensor(f"{path}.shortcut_a.ends", np.array([big, big], dtype=i64)),
                        self.tensor(f"{path}.shortcut_a.axes", np.array([2, 3], dtype=i64)),
                        self.tensor(f"{path}.shortcut_a.steps", np.array([s, s], dtype=i64)),
                    ],
                    f"{path}.shortcut_a.slice",
                )
            if pad == 0:
                return sliced
            pads = self.tensor(f"{path}.shortcut_a.pads", np.array([0, pad, 0, 0, 0, pad, 0, 0], dtype=i64))
            return self.node("Pad", [sliced, pads], f"{path}.shortcut_a.pad", mode="constant")
        raise _fail(f"the layer {kind!r} at {path!r} cannot be exported to ONNX")


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError as e:
        raise OnnxNotInstalledError(
            "to_onnx: ONNX export needs the 'onnx' package; install it with "
            "pip install 'metaweight[onnx]' (or pip install onnx onnxruntime)"
        ) from e
    return onnx


PathLike = Union[str, "os.PathLike[str]"]


def export(net: Any, path: PathLike | None, *, opset: int = 17) -> Any:
    """Exports ``net`` as an ONNX model of its inference-mode logits (see the module docstring).

    Args:
        net: a :class:`~metaweight.Network` (open).
        path: where to write the ``.onnx`` file; None writes nothing (the model is only returned).
        opset: the ONNX operator set, from :data:`MIN_OPSET` to the newest the installed ``onnx``
            knows.

    Returns:
        The ``onnx.ModelProto`` (checked with ``onnx.checker``).

    Raises:
        OnnxNotInstalledError: ``onnx`` is not installed (an ``ImportError``).
        OnnxExportError: a layer (or structure) the exporter cannot write; the message names it.
        InvalidArgumentError: a bad ``opset`` or ``path``.
        ClosedError: the network was closed.
        OSError: the file cannot be written.
    """
    from ._validate import as_int

    onnx = _import_onnx()
    newest = int(onnx.defs.onnx_opset_version())
    opset = as_int(opset, "opset", minimum=MIN_OPSET, maximum=newest)
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f"path: expected a file path or None, got {type(path).__name__}")

    values = net.state_dict()  # raises ClosedError on a closed network
    input_shape = tuple(int(d) for d in net.input_shape)
    root = _seq(_SpecParser(net.spec).parse(input_shape))
    _check(root, net)

    if len(root.out) != 1:
        raise _fail(f"the network's output is an image {_fmt(root.out)}; end it with Flatten or GlobalAvgPool")
    graph = _Graph(onnx, values)
    x = "input"
    for i, child in enumerate(root.children):
        x = graph.emit(child, x, str(i))
    y = x
    helper = onnx.helper
    if y == "input":  # a network of identities only (e.g. just dropout): still one node
        y = graph.node("Identity", [y], "identity")
    graph.nodes.append(helper.make_node("Identity", [y], ["logits"], name="logits"))
    f32 = onnx.TensorProto.FLOAT
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "metaweight",
            [helper.make_tensor_value_info("input", f32, ["N", *input_shape])],
            [helper.make_tensor_value_info("logits", f32, ["N", int(root.out[0])])],
            initializer=graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="metaweight",
        doc_string=f"metaweight network {net.spec!r}, input shape {input_shape}; inference mode",
    )
    try:
        from . import __version__

        model.producer_version = str(__version__)
    except ImportError:  # pragma: no cover - the package is always importable here
        pass
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model
