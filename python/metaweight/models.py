"""Networks: the :class:`Network` handle, layer builders and preset architectures.

A network is built from a list of layer objects (or a preset) and an input shape, and lives in
the native core; the Python object is a handle with NumPy access to its parameters::

    import metaweight as mw

    net = mw.build([mw.Linear(256), mw.ReLU(), mw.Linear(10)], input_shape=(64,), seed=0)
    net = mw.mlp(64, hidden=(256, 256), num_classes=10)          # the same, as a preset
    cnn = mw.build(
        [mw.Conv2d(16, 3, padding=1), mw.BatchNorm(), mw.ReLU(), mw.MaxPool2d(2),
         mw.Residual([mw.Conv2d(16, 3, padding=1), mw.BatchNorm(), mw.ReLU()]),
         mw.GlobalAvgPool(), mw.Linear(10)],
        input_shape=(1, 8, 8))
    print(cnn.summary())
    w = net.get_parameter(net.parameter_names()[0])             # a NumPy copy

Inputs are ``(N, D)`` for flat networks and ``(N, C, H, W)`` for image networks. The number of
classes is the size of the last layer's output.

Closing: :meth:`Network.close` (or a ``with`` block, or garbage collection) frees the native
network; any later use raises :class:`~metaweight.ClosedError`. A :class:`~metaweight.Trainer`
trains its network in place and keeps the native network alive while it exists.

Threads: a network (and the trainers training it) may be used by one thread at a time; a second
thread using it at the same moment gets :class:`~metaweight.BusyError` instead of corrupting it.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from . import _core
from ._handle import NativeHandle
from ._validate import as_bool, as_float, as_int, as_shape, as_text, check_finite, fmt_shape
from .errors import ClosedError, DTypeError, InvalidArgumentError, ShapeError


def _closed_network(what: str) -> ClosedError:
    """The ClosedError for ``what`` on a closed network."""
    return ClosedError(f"{what}: the network was closed; create a new one")


__all__ = [
    "AvgPool2d",
    "BatchNorm",
    "Conv2d",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "Linear",
    "MaxPool2d",
    "Network",
    "ReLU",
    "Residual",
    "Sequential",
    "ShortcutA",
    "build",
    "lenet5",
    "mlp",
    "resnet32",
    "wide_resnet",
]

ShapeLike = Union[int, Sequence[int]]


# ---- layer builders --------------------------------------------------------------------------------


class Layer:
    """Base class of the layer builders. A layer only describes itself; see :func:`build`."""

    def spec(self) -> str:
        """The layer in the core's spec language (see ``metaweight.h``)."""
        raise NotImplementedError


#: Convolution algorithms by name, as the core numbers them (spec ``algo=``).
CONV_ALGORITHMS: dict[str, int] = {"auto": 0, "gemm": 1, "winograd": 2}


def _conv_algorithm(value: Any, name: str) -> int:
    """The core's number of a convolution algorithm name (``auto``, ``gemm`` or ``winograd``)."""
    if not isinstance(value, str) or value not in CONV_ALGORITHMS:
        raise InvalidArgumentError(
            f"{name}: expected one of {', '.join(repr(k) for k in CONV_ALGORITHMS)}, got {value!r}"
        )
    return CONV_ALGORITHMS[value]


def _algo_suffix(value: Any, name: str) -> str:
    """``,algo=N`` for a spec call, or nothing for ``auto``."""
    code = _conv_algorithm(value, name)
    return f",algo={code}" if code else ""


def _pos(value: Any, name: str) -> int:
    return as_int(value, name, minimum=1)


@dataclass(frozen=True)
class Linear(Layer):
    """A fully connected layer ``y = W x + b`` on flat inputs.

    Args:
        out: number of output features.
        bias: whether the layer has a bias.
        kaiming: Kaiming-normal initialisation of the weight (default: the core's uniform
            fan-in initialisation, as in PyTorch).

    Raises:
        InvalidArgumentError: ``out`` is not a positive integer.
    """

    out: int
    bias: bool = True
    kaiming: bool = False

    def __post_init__(self) -> None:
        _pos(self.out, "Linear.out")
        as_bool(self.bias, "Linear.bias")
        as_bool(self.kaiming, "Linear.kaiming")

    def spec(self) -> str:
        return f"linear(out={int(self.out)},bias={int(bool(self.bias))},kaiming={int(bool(self.kaiming))})"


@dataclass(frozen=True)
class Conv2d(Layer):
    """A 2-d convolution on ``(C, H, W)`` inputs (square kernel, stride and zero padding).

    Args:
        out: output channels.
        kernel: kernel size.
        stride: stride.
        padding: zero padding on each side.
        bias: whether the layer has a bias (off by default: convolutions are usually followed by
            batch normalisation).
        algorithm: ``"auto"`` (Winograd F(4x4,3x3) on 3x3 stride-1 layers of at least 16 channels,
            else im2col + GEMM), ``"gemm"`` or ``"winograd"`` (where eligible: 3x3, stride 1,
            padding <= 2). A preference only: results agree to float rounding, checkpoints load
            across algorithms.

    Raises:
        InvalidArgumentError: a non-positive size, negative padding or an unknown algorithm.
    """

    out: int
    kernel: int
    stride: int = 1
    padding: int = 0
    bias: bool = False
    algorithm: str = "auto"

    def __post_init__(self) -> None:
        _pos(self.out, "Conv2d.out")
        _pos(self.kernel, "Conv2d.kernel")
        _pos(self.stride, "Conv2d.stride")
        as_int(self.padding, "Conv2d.padding", minimum=0)
        as_bool(self.bias, "Conv2d.bias")
        _conv_algorithm(self.algorithm, "Conv2d.algorithm")

    def spec(self) -> str:
        return (
            f"conv2d(out={int(self.out)},k={int(self.kernel)},s={int(self.stride)},"
            f"p={int(self.padding)},bias={int(bool(self.bias))}{_algo_suffix(self.algorithm, 'Conv2d.algorithm')})"
        )


@dataclass(frozen=True)
class BatchNorm(Layer):
    """Batch normalisation (per channel for images, per feature for flat inputs).

    Its running mean and variance are part of the network's state (see :meth:`Network.buffers`).
    """

    def spec(self) -> str:
        return "batchnorm"


@dataclass(frozen=True)
class ReLU(Layer):
    """The rectifier ``max(x, 0)``."""

    def spec(self) -> str:
        return "relu"


@dataclass(frozen=True)
class MaxPool2d(Layer):
    """Max pooling over ``kernel`` x ``kernel`` windows.

    Args:
        kernel: window size.
        stride: step between windows (default: ``kernel``).
    """

    kernel: int
    stride: int | None = None

    def __post_init__(self) -> None:
        _pos(self.kernel, "MaxPool2d.kernel")
        if self.stride is not None:
            _pos(self.stride, "MaxPool2d.stride")

    def spec(self) -> str:
        s = int(self.kernel) if self.stride is None else int(self.stride)
        return f"maxpool(k={int(self.kernel)},s={s})"


@dataclass(frozen=True)
class AvgPool2d(Layer):
    """Average pooling over ``kernel`` x ``kernel`` windows.

    Args:
        kernel: window size.
        stride: step between windows (default: ``kernel``).
    """

    kernel: int
    stride: int | None = None

    def __post_init__(self) -> None:
        _pos(self.kernel, "AvgPool2d.kernel")
        if self.stride is not None:
            _pos(self.stride, "AvgPool2d.stride")

    def spec(self) -> str:
        s = int(self.kernel) if self.stride is None else int(self.stride)
        return f"avgpool(k={int(self.kernel)},s={s})"


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Averages each channel over the spatial dimensions: ``(C, H, W) -> (C,)``."""

    def spec(self) -> str:
        return "gap"


@dataclass(frozen=True)
class Flatten(Layer):
    """Flattens ``(C, H, W)`` to ``(C*H*W,)``."""

    def spec(self) -> str:
        return "flatten"


@dataclass(frozen=True)
class Dropout(Layer):
    """Dropout: zeroes each activation with probability ``p`` in training (scaled by 1/(1-p)).

    Args:
        p: drop probability, ``0 <= p < 1``.
    """

    p: float = 0.5

    def __post_init__(self) -> None:
        as_float(self.p, "Dropout.p", minimum=0.0, maximum=1.0, max_inclusive=False)

    def spec(self) -> str:
        return f"dropout(p={float(self.p)!r})"


@dataclass(frozen=True)
class ShortcutA(Layer):
    """The parameter-free "option A" shortcut of CIFAR ResNets (He et al., 2016).

    Subsamples by ``stride`` and zero-pads the channels to ``out``; used as the shortcut of a
    :class:`Residual` block that changes the shape.

    Args:
        out: output channels (>= the input channels).
        stride: spatial subsampling.
    """

    out: int
    stride: int = 1

    def __post_init__(self) -> None:
        _pos(self.out, "ShortcutA.out")
        _pos(self.stride, "ShortcutA.stride")

    def spec(self) -> str:
        return f"shortcut_a(out={int(self.out)},s={int(self.stride)})"


@dataclass(frozen=True)
class Residual(Layer):
    """A residual block ``body(x) + shortcut(x)``.

    Args:
        body: the layers of the main branch.
        shortcut: the layers of the shortcut branch; None (or empty) for the identity. Both
            branches must produce the same shape.
    """

    body: Sequence[Layer]
    shortcut: Sequence[Layer] | None = None

    def __post_init__(self) -> None:
        body = _layer_tuple(self.body, "Residual.body")
        if not body:
            raise InvalidArgumentError("Residual.body: expected at least one layer, got none")
        object.__setattr__(self, "body", body)
        if self.shortcut is not None:
            object.__setattr__(self, "shortcut", _layer_tuple(self.shortcut, "Residual.shortcut") or None)

    def spec(self) -> str:
        s = "residual{" + ";".join(layer.spec() for layer in self.body)
        if self.shortcut:
            s += "|" + ";".join(layer.spec() for layer in self.shortcut)
        return s + "}"


@dataclass(frozen=True)
class _Preset(Layer):
    """A preset architecture by its spec (used by the preset functions)."""

    text: str

    def spec(self) -> str:
        return self.text


def _layer_tuple(layers: Any, name: str) -> tuple[Layer, ...]:
    if isinstance(layers, Layer):
        return (layers,)
    try:
        items = tuple(layers)
    except TypeError:
        raise InvalidArgumentError(
            f"{name}: expected a list of layers, got {type(layers).__name__}"
        ) from None
    for i, layer in enumerate(items):
        if isinstance(layer, type) and issubclass(layer, Layer):
            raise InvalidArgumentError(
                f"{name}[{i}]: got the class {layer.__name__}; instantiate it, e.g. {layer.__name__}()"
            )
        if not isinstance(layer, Layer):
            raise InvalidArgumentError(f"{name}[{i}]: expected a Layer, got {type(layer).__name__}")
    return items


def layers_spec(layers: Sequence[Layer]) -> str:
    """The spec string of a list of layers."""
    items = _layer_tuple(layers, "layers")
    if not items:
        raise InvalidArgumentError("layers: expected at least one layer, got none")
    return ";".join(layer.spec() for layer in items)


# ---- the network handle ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    name: str
    offset: int
    shape: tuple[int, ...]
    is_state: bool
    size: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1)


class Network(NativeHandle):
    """A neural network living in the native core.

    Usually made with :func:`build`, :class:`Sequential` or a preset (:func:`mlp`, :func:`lenet5`,
    :func:`resnet32`, :func:`wide_resnet`). The constructor takes a raw spec string in the core's
    spec language (documented in ``metaweight.h``), e.g. ``"mlp(hidden=256x256, classes=10)"``.

    Args:
        spec: the architecture in the spec language.
        input_shape: per-example input shape, ``D`` / ``(D,)`` or ``(C, H, W)``.
        seed: seed of the parameter initialisation (same seed, same parameters).

    Raises:
        InvalidArgumentError: a malformed spec or a layer that does not fit its input.
        ShapeError: a bad input shape.

    Example:
        >>> net = Network("linear(out=10)", input_shape=(64,))
        >>> net.num_parameters
        650
    """

    _noun = "network"
    _busy_detail = " (a step, prediction or parameter access is running)"
    _busy_advice = "use one network and trainer per thread, or guard them with a lock"
    _copy_advice = "use net.copy(), or state_dict() and load_state_dict() on a network built the same way"

    def __init__(self, spec: str, input_shape: ShapeLike, seed: int = 0) -> None:
        spec = as_text(spec, "spec", "a spec string")
        shape = as_shape(input_shape, "input_shape")
        seed = as_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        self._spec = spec
        self._seed = seed
        self._handle = _core.network_create(spec, shape, seed)
        self._describe()

    def _describe(self) -> None:
        h = self._handle
        if h is None:
            raise ClosedError("network: the network was closed; create a new one")
        n_params, n_state, n_classes, n_blocks, n_state_blocks = _core.network_info(h)
        self._n_params = int(n_params)
        self._n_state = int(n_state)
        self._n_classes = int(n_classes)
        self._input_shape = tuple(int(d) for d in _core.network_input_shape(h))
        blocks: dict[str, _Block] = {}
        for is_state, count in ((False, n_blocks), (True, n_state_blocks)):
            for i in range(count):
                name, offset, shape = _core.network_block(h, int(is_state), i)
                if name in blocks:  # never expected; keep both reachable
                    name = f"{name}#{i}"
                blocks[name] = _Block(name, int(offset), tuple(int(d) for d in shape), is_state)
        self._blocks = blocks

    # -- lifetime ---------------------------------------------------------------------------------

    def _use(self, what: str = "network") -> contextlib.AbstractContextManager[int]:
        """Holds the network for one call and gives its handle: ClosedError when closed, BusyError when in use.

        The lock is released in C (:class:`metaweight._core.Hold`), so an interrupt cannot leave it held.
        """
        if self._handle is None:
            raise _closed_network(what)
        return _core.Hold(
            self._lock,
            functools.partial(self._busy_error, what),
            self,
            functools.partial(_closed_network, what),
        )

    def _free(self, handle: int) -> None:
        _core.network_free(handle)

    def _close_guard(self) -> contextlib.AbstractContextManager[object]:
        # Closing waits for nobody: BusyError while a step, prediction or access runs.
        return self._hold("close")

    # -- description ------------------------------------------------------------------------------

    @property
    def spec(self) -> str:
        """The architecture in the core's spec language."""
        return self._spec

    @property
    def seed(self) -> int:
        """The initialisation seed."""
        return self._seed

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters (floats)."""
        return self._n_params

    @property
    def num_state_values(self) -> int:
        """Number of non-trainable state values (batch-norm running means and variances)."""
        return self._n_state

    @property
    def num_classes(self) -> int:
        """Number of classes (the size of the last layer's output)."""
        return self._n_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-example input shape: ``(D,)`` or ``(C, H, W)``."""
        return self._input_shape

    @property
    def signature(self) -> str:
        """The architecture signature checkpoints are checked against.

        Raises:
            ClosedError: the network was closed.
        """
        with self._use("signature") as h:
            return _core.network_signature(h)

    def summary(self) -> str:
        """A text table of the layers, their input/output shapes and parameter counts.

        Raises:
            ClosedError: the network was closed.
        """
        with self._use("summary") as h:
            return _core.network_summary(h)

    def activation_bytes(self, batch_size: int) -> int:
        """Bytes of activation memory a training step on ``batch_size`` examples needs.

        Raises:
            InvalidArgumentError: a non-positive batch size.
            ClosedError: the network was closed.
        """
        batch_size = as_int(batch_size, "batch_size", minimum=1, maximum=2**20)
        with self._use("activation_bytes") as h:
            return int(_core.network_activation_bytes(h, batch_size))

    def set_conv_algorithm(self, algorithm: str) -> int:
        """Sets how every convolution computes its products (a preference, not part of the maths).

        Args:
            algorithm: ``"auto"``, ``"gemm"`` or ``"winograd"`` (see :class:`Conv2d`); layers
                Winograd cannot run (not 3x3, strided, padding > 2) keep im2col + GEMM.

        Returns:
            The number of convolutions set.

        Raises:
            InvalidArgumentError: an unknown algorithm.
            ClosedError: the network was closed.
        """
        code = _conv_algorithm(algorithm, "algorithm")
        with self._use("set_conv_algorithm") as h:
            return int(_core.network_set_conv_algorithm(h, code))

    @property
    def conv_algorithms(self) -> list[str]:
        """The algorithm each convolution runs (``"gemm"`` or ``"winograd"``), depth first.

        Raises:
            ClosedError: the network was closed.
        """
        names = {v: k for k, v in CONV_ALGORITHMS.items()}
        with self._use("conv_algorithms") as h:
            return [names[int(a)] for a in _core.network_conv_algorithms(h)]

    def parameter_names(self) -> list[str]:
        """Names of the trainable parameter blocks, in order (e.g. ``"0.0.linear.weight"``)."""
        return [b.name for b in self._blocks.values() if not b.is_state]

    def buffer_names(self) -> list[str]:
        """Names of the state blocks (batch-norm ``running_mean`` / ``running_var``), in order."""
        return [b.name for b in self._blocks.values() if b.is_state]

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter and buffer block."""
        return {b.name: b.shape for b in self._blocks.values()}

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._n_params:,} parameters, {self._n_classes} classes"
        return f"Network({self._spec!r}, input_shape={fmt_shape(self._input_shape)}, {state})"

    # -- parameters -------------------------------------------------------------------------------

    def _flat(self, h: int, is_state: bool) -> np.ndarray:
        out = np.empty(self._n_state if is_state else self._n_params, dtype=np.float32)
        if out.size:
            _core.network_get_flat(h, int(is_state), out)
        return out

    def get_flat(self) -> np.ndarray:
        """All trainable parameters as one float32 vector (a copy), in :meth:`parameter_names` order.

        Raises:
            ClosedError: the network was closed.
        """
        with self._use("get_flat") as h:
            return self._flat(h, False)

    def set_flat(self, values: Any) -> None:
        """Sets all trainable parameters from one vector of :attr:`num_parameters` values.

        Args:
            values: float array-like with ``num_parameters`` elements (any shape; it is flattened).

        Raises:
            DTypeError: a non-numeric dtype.
            ShapeError: the wrong number of values.
            NonFiniteError: NaN or infinity.
            ClosedError: the network was closed.
        """
        v = self._as_values(values, "values", (self._n_params,), allow_reshape=True)
        with self._use("set_flat") as h:
            if v.size:
                _core.network_set_flat(h, 0, v)

    def _as_values(
        self, values: Any, name: str, shape: tuple[int, ...], allow_reshape: bool = False
    ) -> np.ndarray:
        try:
            a = np.asarray(values) if not isinstance(values, np.ndarray) else values
        except (TypeError, ValueError):  # ragged or unconvertible nested sequences
            raise DTypeError(
                f"{name}: expected a float array, got a {type(values).__name__} that is not one"
            ) from None
        if a.dtype.kind not in "fiu":
            raise DTypeError(f"{name}: expected a float array, got dtype {a.dtype}")
        if allow_reshape:
            if a.size != int(np.prod(shape)):
                raise ShapeError(
                    f"{name}: expected {int(np.prod(shape))} values, got {a.size} (shape {fmt_shape(a.shape)})"
                )
            a = a.reshape(-1)
        elif tuple(a.shape) != shape:
            raise ShapeError(f"{name}: expected shape {fmt_shape(shape)}, got {fmt_shape(a.shape)}")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported below
            out = np.ascontiguousarray(a, dtype=np.float32)
        check_finite(out, name)
        return out

    def _block(self, name: str) -> _Block:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"name: expected a string, got {type(name).__name__}")
        b = self._blocks.get(name)
        if b is None:
            close = difflib.get_close_matches(name, list(self._blocks), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise InvalidArgumentError(
                f"name: the network has no parameter or buffer {name!r}{hint} (see parameter_names())"
            )
        return b

    def parameters(self) -> dict[str, np.ndarray]:
        """Every trainable parameter block by name, as float32 NumPy copies with their shapes.

        Raises:
            ClosedError: the network was closed.
        """
        flat = self.get_flat()
        return {
            b.name: flat[b.offset : b.offset + b.size].reshape(b.shape).copy()
            for b in self._blocks.values()
            if not b.is_state
        }

    def buffers(self) -> dict[str, np.ndarray]:
        """Every state block (batch-norm running statistics) by name, as float32 NumPy copies.

        Raises:
            ClosedError: the network was closed.
        """
        with self._use("buffers") as h:
            flat = self._flat(h, True)
        return {
            b.name: flat[b.offset : b.offset + b.size].reshape(b.shape).copy()
            for b in self._blocks.values()
            if b.is_state
        }

    def get_parameter(self, name: str) -> np.ndarray:
        """One parameter or buffer block by name (a float32 copy with its shape).

        Raises:
            InvalidArgumentError: no block has that name.
            ClosedError: the network was closed.
        """
        b = self._block(name)
        with self._use("get_parameter") as h:
            flat = self._flat(h, b.is_state)
        return flat[b.offset : b.offset + b.size].reshape(b.shape).copy()

    def set_parameter(self, name: str, value: Any) -> None:
        """Sets one parameter or buffer block by name.

        Args:
            name: a name from :meth:`parameter_names` or :meth:`buffer_names`.
            value: float array-like of exactly the block's shape.

        Raises:
            InvalidArgumentError: no block has that name.
            ShapeError: ``value`` does not have the block's shape.
            DTypeError: a non-numeric dtype.
            NonFiniteError: NaN or infinity.
            ClosedError: the network was closed.
        """
        b = self._block(name)
        v = self._as_values(value, name, b.shape)
        with self._use("set_parameter") as h:
            flat = self._flat(h, b.is_state)
            flat[b.offset : b.offset + b.size] = v.reshape(-1)
            _core.network_set_flat(h, int(b.is_state), flat)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers (batch-norm running statistics) by name, as NumPy copies.

        Save it with ``np.savez(path, **net.state_dict())`` and restore it with
        ``net.load_state_dict(np.load(path))``.

        Raises:
            ClosedError: the network was closed.
        """
        with self._use("state_dict") as h:
            params = self._flat(h, False)
            state = self._flat(h, True)
        out: dict[str, np.ndarray] = {}
        for b in self._blocks.values():
            src = state if b.is_state else params
            out[b.name] = src[b.offset : b.offset + b.size].reshape(b.shape).copy()
        return out

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Sets parameters and buffers from a mapping made by :meth:`state_dict`.

        Everything is checked before anything changes, so a failed load leaves the network as it was.

        Args:
            state: name -> array (a dict, or the ``NpzFile`` of ``np.load``).
            strict: require exactly this network's names (else missing names keep their values and
                unknown names are errors all the same).

        Raises:
            InvalidArgumentError: missing (when strict) or unknown names.
            ShapeError: an array of the wrong shape.
            DTypeError, NonFiniteError: an unusable array.
            ClosedError: the network was closed.
        """
        if not hasattr(state, "keys"):
            raise InvalidArgumentError(
                f"state: expected a mapping of name -> array, got {type(state).__name__}"
            )
        keys = list(state.keys())
        unknown = [k for k in keys if k not in self._blocks]
        missing = [k for k in self._blocks if k not in keys]
        if unknown:
            raise InvalidArgumentError(
                f"state: unknown names {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
                "(was it saved from a different architecture?)"
            )
        if strict and missing:
            raise InvalidArgumentError(
                f"state: missing names {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                "(pass strict=False to load a subset)"
            )
        values = {k: self._as_values(state[k], k, self._blocks[k].shape) for k in keys}
        with self._use("load_state_dict") as h:
            params = self._flat(h, False)
            buf = self._flat(h, True)
            for k, v in values.items():
                b = self._blocks[k]
                (buf if b.is_state else params)[b.offset : b.offset + b.size] = v.reshape(-1)
            if params.size:
                _core.network_set_flat(h, 0, params)
            if buf.size:
                _core.network_set_flat(h, 1, buf)

    def to_onnx(self, path: str | os.PathLike[str] | None, *, opset: int = 17) -> Any:
        """Exports the network's inference-mode logits as an ONNX model (the ``metaweight[onnx]`` extra).

        Batch norm uses the running statistics and dropout is off, as in ``Trainer.logits``. The
        graph's input ``"input"`` is ``(N, *input_shape)`` float32 with a dynamic batch dimension;
        its output ``"logits"`` is ``(N, num_classes)``. See :mod:`metaweight.onnx` for the
        operator each layer becomes.

        Args:
            path: the ``.onnx`` file to write; None writes nothing and only returns the model.
            opset: the ONNX operator set (11 up to the newest the installed ``onnx`` knows).

        Returns:
            The ``onnx.ModelProto``.

        Raises:
            OnnxNotInstalledError: the ``onnx`` package is missing (an ``ImportError``).
            OnnxExportError: a layer the exporter cannot write; the message names it.
            InvalidArgumentError: a bad ``opset`` or ``path``.
            ClosedError: the network was closed.
            OSError: the file cannot be written.
        """
        from .onnx import export

        return export(self, path, opset=opset)

    def copy(self) -> Network:
        """An independent network with the same architecture, parameters and buffers.

        Raises:
            ClosedError: the network was closed.
        """
        state = self.state_dict()
        other = Network(self._spec, self._input_shape, self._seed)
        other.load_state_dict(state)
        return other


class Sequential(Network):
    """A network made of a list of layers, applied in order.

    Args:
        layers: the layers, e.g. ``[Linear(256), ReLU(), Linear(10)]``.
        input_shape: per-example input shape, ``D`` / ``(D,)`` or ``(C, H, W)``.
        seed: seed of the parameter initialisation.

    Raises:
        InvalidArgumentError: not layers, or a layer that does not fit its input (e.g. ``Linear``
            on an image without ``Flatten``/``GlobalAvgPool``).
        ShapeError: a bad input shape.
    """

    def __init__(self, layers: Sequence[Layer], input_shape: ShapeLike, seed: int = 0) -> None:
        self.layers: tuple[Layer, ...] = _layer_tuple(layers, "layers")
        super().__init__(layers_spec(self.layers), input_shape, seed)

    def copy(self) -> Sequential:
        """An independent network with the same layers, parameters and buffers."""
        state = self.state_dict()
        other = Sequential(self.layers, self.input_shape, self.seed)
        other.load_state_dict(state)
        return other


def build(layers: Sequence[Layer], input_shape: ShapeLike, seed: int = 0) -> Network:
    """Builds a network from a list of layers (same as :class:`Sequential`).

    Args:
        layers: the layers, applied in order.
        input_shape: per-example input shape, ``D`` / ``(D,)`` or ``(C, H, W)``.
        seed: seed of the parameter initialisation.

    Returns:
        The network.

    Raises:
        InvalidArgumentError, ShapeError: see :class:`Sequential`.
    """
    return Sequential(layers, input_shape, seed)


# ---- presets ---------------------------------------------------------------------------------------


def mlp(
    input_dim: ShapeLike,
    hidden: Sequence[int] = (256, 256),
    num_classes: int = 10,
    batch_norm: bool = False,
    dropout: float = 0.0,
    seed: int = 0,
) -> Network:
    """A multi-layer perceptron: ``[Linear(h), (BatchNorm), ReLU, (Dropout)]`` per hidden layer, then
    ``Linear(num_classes)``.

    Args:
        input_dim: number of input features, or an image shape ``(C, H, W)`` (flattened first).
        hidden: widths of the hidden layers (empty for logistic regression).
        num_classes: number of classes.
        batch_norm: batch normalisation after each hidden linear layer.
        dropout: dropout rate after each hidden layer (0 = none).
        seed: initialisation seed.

    Returns:
        The network.

    Raises:
        InvalidArgumentError: a non-positive width or class count, or a dropout outside [0, 1).
    """
    shape = as_shape(input_dim, "input_dim")
    widths = [as_int(h, f"hidden[{i}]", minimum=1) for i, h in enumerate(_int_seq(hidden, "hidden"))]
    num_classes = as_int(num_classes, "num_classes", minimum=1)
    batch_norm = as_bool(batch_norm, "batch_norm")
    dropout = as_float(dropout, "dropout", minimum=0.0, maximum=1.0, max_inclusive=False)
    args = [f"classes={num_classes}", f"bn={int(batch_norm)}", f"dropout={dropout!r}"]
    if widths:
        args.insert(0, "hidden=" + "x".join(str(w) for w in widths))
    spec = f"mlp({','.join(args)})"
    if len(shape) == 3:
        spec = "flatten;" + spec
    return Network(spec, shape, seed)


def _int_seq(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, numbers.Integral):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise InvalidArgumentError(f"{name}: expected a sequence of ints, got {value!r}") from None


def lenet5(
    input_shape: ShapeLike = (1, 28, 28), num_classes: int = 10, seed: int = 0, conv_algorithm: str = "auto"
) -> Network:
    """LeNet-5 (two 5x5 convolutions with max pooling, then 120-84-classes fully connected).

    Args:
        input_shape: ``(C, H, W)``, at least 28x28.
        num_classes: number of classes.
        seed: initialisation seed.
        conv_algorithm: ``"auto"``, ``"gemm"`` or ``"winograd"`` for every convolution (see
            :class:`Conv2d`; LeNet's 5x5 convolutions always use GEMM).

    Returns:
        The network.

    Raises:
        InvalidArgumentError: images smaller than 28x28, a bad class count or algorithm.
    """
    num_classes = as_int(num_classes, "num_classes", minimum=1)
    algo = _algo_suffix(conv_algorithm, "conv_algorithm")
    return Network(f"lenet5(classes={num_classes}{algo})", input_shape, seed)


def resnet32(
    input_shape: ShapeLike = (3, 32, 32), num_classes: int = 10, seed: int = 0, conv_algorithm: str = "auto"
) -> Network:
    """The CIFAR ResNet-32 of He et al. (2016): 3 stages of 5 basic blocks (16/32/64 channels),
    option-A shortcuts, batch norm, global average pooling; about 0.46 M parameters.

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: number of classes.
        seed: initialisation seed.
        conv_algorithm: ``"auto"``, ``"gemm"`` or ``"winograd"`` for every convolution (see
            :class:`Conv2d`).

    Returns:
        The network.

    Raises:
        InvalidArgumentError: a bad class count or algorithm.
    """
    num_classes = as_int(num_classes, "num_classes", minimum=1)
    algo = _algo_suffix(conv_algorithm, "conv_algorithm")
    return Network(f"resnet32(classes={num_classes}{algo})", input_shape, seed)


def wide_resnet(
    depth: int = 28,
    widen: int = 10,
    input_shape: ShapeLike = (3, 32, 32),
    num_classes: int = 10,
    dropout: float = 0.0,
    seed: int = 0,
    conv_algorithm: str = "auto",
) -> Network:
    """A Wide ResNet WRN-depth-widen (Zagoruyko & Komodakis, 2016) with pre-activation blocks.

    Args:
        depth: total depth, ``6n + 4`` (e.g. 16, 22, 28, 40).
        widen: width multiplier ``k``.
        input_shape: ``(C, H, W)``.
        num_classes: number of classes.
        dropout: dropout rate inside the blocks.
        seed: initialisation seed.
        conv_algorithm: ``"auto"``, ``"gemm"`` or ``"winograd"`` for every convolution (see
            :class:`Conv2d`).

    Returns:
        The network.

    Raises:
        InvalidArgumentError: ``depth`` not of the form 6n+4, or other bad settings.
    """
    depth = as_int(depth, "depth", minimum=10)
    if (depth - 4) % 6:
        raise InvalidArgumentError(f"depth: expected 6n + 4 (e.g. 16, 22, 28, 40), got {depth}")
    widen = as_int(widen, "widen", minimum=1)
    num_classes = as_int(num_classes, "num_classes", minimum=1)
    dropout = as_float(dropout, "dropout", minimum=0.0, maximum=1.0, max_inclusive=False)
    algo = _algo_suffix(conv_algorithm, "conv_algorithm")
    return Network(
        f"wrn(depth={depth},widen={widen},classes={num_classes},dropout={dropout!r}{algo})", input_shape, seed
    )
