"""MW-Net's and GDW's weighting net V, read and set like any network (``Trainer.weight_net``).

V(l) = sigmoid(linear2(relu(linear1(l)))) maps an example's loss to its weight. Its parameters
carry PyTorch's names and shapes for the official VNet (hidden width h)::

    linear1.weight  (h, 1)     linear1.bias  (h,)
    linear2.weight  (1, h)     linear2.bias  (1,)

so a state dict moves between metaweight and the official code::

    trainer.weight_net.load_state_dict({k: v.numpy() for k, v in vnet.state_dict().items()})
    vnet.load_state_dict({k: torch.from_numpy(v) for k, v in trainer.weight_net.state_dict().items()})

Setting V changes its parameters only: V's optimizer state (Adam moments or momentum buffer, and
its step count) is kept, as loading a module's state in PyTorch keeps its optimizer's. V is part
of :meth:`Trainer.save` checkpoints.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from ._validate import check_finite, fmt_shape
from .errors import DTypeError, InvalidArgumentError, ShapeError

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["WeightNet"]

#: Parameter names in the order of the core's flat layout [W1 (h), b1 (h), W2 (h), b2 (1)].
NAMES = ("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias")


def _shapes(h: int) -> dict[str, tuple[int, ...]]:
    return {"linear1.weight": (h, 1), "linear1.bias": (h,), "linear2.weight": (1, h), "linear2.bias": (1,)}


class WeightNet:
    """The weighting net V of an MW-Net or GDW trainer (a live view: it reads and writes the
    trainer's V on every call). Get it from :attr:`Trainer.weight_net`.
    """

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    def __repr__(self) -> str:
        try:
            return f"WeightNet(hidden={self.hidden})"
        except Exception:  # closed trainer or method without V
            return "WeightNet(unavailable)"

    # -- reading --------------------------------------------------------------------------------------

    def _get(self, what: str) -> np.ndarray:
        with self._trainer._use(f"weight_net.{what}") as h:
            hidden = _core.trainer_weight_net_get(h, None)
            flat = np.empty(3 * hidden + 1, dtype=np.float32)
            _core.trainer_weight_net_get(h, flat)
        return flat

    def _split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        h = (flat.size - 1) // 3
        shapes = _shapes(h)
        out: dict[str, np.ndarray] = {}
        offset = 0
        for name in NAMES:
            size = int(np.prod(shapes[name]))
            out[name] = flat[offset : offset + size].reshape(shapes[name]).copy()
            offset += size
        return out

    @property
    def hidden(self) -> int:
        """The hidden width h (``hidden=`` of the method, 100 by default)."""
        with self._trainer._use("weight_net.hidden") as h:
            return int(_core.trainer_weight_net_get(h, None))

    def parameter_names(self) -> list[str]:
        """``["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]``."""
        return list(NAMES)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each parameter's shape: ``(h, 1)``, ``(h,)``, ``(1, h)``, ``(1,)``."""
        return _shapes(self.hidden)

    def parameters(self) -> dict[str, np.ndarray]:
        """Every parameter by name, as float32 NumPy copies with PyTorch's VNet shapes.

        Raises:
            StateError: the trainer's method has no weighting net.
            ClosedError: the trainer was closed.
        """
        return self._split(self._get("parameters"))

    def state_dict(self) -> dict[str, np.ndarray]:
        """The parameters by name (V has no buffers), as float32 NumPy copies; loads into the
        official VNet (``torch.from_numpy`` each value) or back with :meth:`load_state_dict`.

        Raises:
            StateError: the trainer's method has no weighting net.
            ClosedError: the trainer was closed.
        """
        return self._split(self._get("state_dict"))

    def get_parameter(self, name: str) -> np.ndarray:
        """One parameter by name (a float32 copy with its shape).

        Raises:
            InvalidArgumentError: no parameter has that name.
        """
        self._check_name(name)
        return self.parameters()[name]

    # -- writing --------------------------------------------------------------------------------------

    def _check_name(self, name: Any) -> None:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"name: expected a string, got {type(name).__name__}")
        if name not in NAMES:
            close = difflib.get_close_matches(name, NAMES, n=2)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise InvalidArgumentError(
                f"name: the weighting net has no parameter {name!r} (it has {', '.join(NAMES)}){hint}"
            )

    @staticmethod
    def _as_values(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, e.g. from VNet.state_dict()
            value = value.detach().cpu().numpy()
        try:
            a = np.asarray(value)
        except (TypeError, ValueError):
            raise DTypeError(f"{name}: expected a float array, got a {type(value).__name__} that is not one") from None
        if a.dtype.kind not in "fiu":
            raise DTypeError(f"{name}: expected a float array, got dtype {a.dtype}")
        if tuple(a.shape) != shape:
            raise ShapeError(f"{name}: expected shape {fmt_shape(shape)}, got {fmt_shape(a.shape)}")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported below
            out = np.ascontiguousarray(a, dtype=np.float32)
        check_finite(out, name)
        return out

    def _set(self, values: dict[str, np.ndarray], what: str) -> None:
        """Replaces the named parameters (already checked against ``shapes``) in one core call."""
        with self._trainer._use(f"weight_net.{what}") as h:
            hidden = _core.trainer_weight_net_get(h, None)
            flat = np.empty(3 * hidden + 1, dtype=np.float32)
            _core.trainer_weight_net_get(h, flat)
            offsets = {"linear1.weight": 0, "linear1.bias": hidden, "linear2.weight": 2 * hidden,
                       "linear2.bias": 3 * hidden}
            for name, v in values.items():
                flat[offsets[name] : offsets[name] + v.size] = v.reshape(-1)
            _core.trainer_weight_net_set(h, flat)

    def set_parameter(self, name: str, value: Any) -> None:
        """Sets one parameter; V's optimizer state is kept.

        Args:
            name: one of :meth:`parameter_names`.
            value: float array-like of exactly the parameter's shape (a torch tensor works too).

        Raises:
            InvalidArgumentError: no parameter has that name.
            ShapeError: ``value`` does not have the parameter's shape (both shapes are named).
            DTypeError: a non-numeric dtype.
            NonFiniteError: NaN or infinity (nothing changes).
            StateError: the trainer's method has no weighting net.
            ClosedError: the trainer was closed.
        """
        self._check_name(name)
        v = self._as_values(value, name, _shapes(self.hidden)[name])
        self._set({name: v}, "set_parameter")

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Sets V's parameters from a mapping made by :meth:`state_dict` (or the official VNet's
        ``state_dict()``). Everything is checked before anything changes; V's optimizer state is kept.

        Args:
            state: name -> array.
            strict: require all four names (else missing names keep their values).

        Raises:
            InvalidArgumentError: unknown names, or missing ones when strict.
            ShapeError: an array of the wrong shape (naming the parameter and both shapes).
            DTypeError, NonFiniteError: an unusable array (nothing changes).
            StateError: the trainer's method has no weighting net.
            ClosedError: the trainer was closed.
        """
        if not hasattr(state, "keys"):
            raise InvalidArgumentError(f"state: expected a mapping of name -> array, got {type(state).__name__}")
        keys = list(state.keys())
        unknown = [k for k in keys if k not in NAMES]
        missing = [k for k in NAMES if k not in keys]
        if unknown:
            raise InvalidArgumentError(
                f"state: unknown names {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
                f"(the weighting net has {', '.join(NAMES)})"
            )
        if strict and missing:
            raise InvalidArgumentError(f"state: missing names {missing} (pass strict=False to load a subset)")
        shapes = _shapes(self.hidden)
        values = {k: self._as_values(state[k], k, shapes[k]) for k in keys}
        self._set(values, "load_state_dict")

    def __call__(self, losses: Any) -> np.ndarray:
        """V(losses): the same as :meth:`Trainer.weight_function`."""
        return self._trainer.weight_function(losses)
