"""What the TensorBoard and MLflow callbacks share: the per-epoch values they log, computed once."""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import as_bool
from ..callbacks import BaseCallback, FitConfig
from ..errors import DTypeError, InvalidArgumentError, NonFiniteError, ShapeError

if TYPE_CHECKING:
    from ..trainer import EpochRecord, History, Trainer

#: The losses at which the loss → weight curve is evaluated by default: 0, 1, ..., 10 (a network
#: with 10 classes starts near ln 10 ≈ 2.3; corrupted labels typically sit well above it).
DEFAULT_CURVE_LOSSES: tuple[float, ...] = tuple(float(v) for v in range(11))

_DIAGNOSTICS = ("weight_ess", "saturated_low", "saturated_high", "prediction_majority", "weight_loss_correlation")


def require(module: str, what: str, package: str, extra: str) -> ModuleType:
    """Imports an optional dependency, or raises ImportError naming the package and the extra.

    Args:
        module: the module to import (``"tensorboardX"``).
        what: who needs it, for the message (``"TensorBoardCallback"``).
        package: the pip package (``"tensorboardX"``).
        extra: metaweight's extra that installs it (``"tensorboard"``).

    Returns:
        The module.

    Raises:
        ImportError: the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{what} needs {package}: pip install {package} (or pip install metaweight[{extra}])"
        ) from e


def curve_label(x: float) -> str:
    """A grid loss as a tag/key suffix without characters TensorBoard or MLflow rewrite
    (``2.5`` → ``"2.5"``, ``10.0`` → ``"10"``)."""
    return np.format_float_positional(np.float32(x), trim="-")


def as_corrupted(corrupted: Any) -> np.ndarray | None:
    """Checks a corrupted-label mask: a 1-D array of booleans (or 0/1), or None.

    Raises:
        ShapeError: not one-dimensional.
        DTypeError: not booleans or integers 0/1.
    """
    if corrupted is None:
        return None
    a = np.asarray(corrupted)
    if a.ndim != 1:
        raise ShapeError(f"corrupted: expected a 1-D mask (one entry per training example), got shape {a.shape}")
    if a.dtype == np.bool_:
        return a.copy()
    if a.dtype.kind in "iu" and bool(np.isin(a, (0, 1)).all()):
        return a.astype(bool)
    raise DTypeError(f"corrupted: expected booleans (or 0/1 integers), got dtype {a.dtype}")


def as_curve_losses(losses: Any) -> np.ndarray:
    """Checks the grid of the loss → weight curve: finite, non-negative, 1-D, 1 to 1000 values,
    returned as float32 (the precision V is evaluated in)."""
    if losses is None:
        return np.asarray(DEFAULT_CURVE_LOSSES, dtype=np.float32)
    a = np.asarray(losses)
    if a.dtype.kind not in "fiu":
        raise DTypeError(f"curve_losses: expected real numbers, got dtype {a.dtype}")
    a = a.astype(np.float32).reshape(-1) if a.ndim <= 1 else a
    if a.ndim != 1 or not 1 <= a.size <= 1000:
        raise ShapeError(f"curve_losses: expected 1 to 1000 losses in a 1-D array, got shape {np.shape(losses)}")
    if not np.isfinite(a).all():
        raise NonFiniteError("curve_losses: expected finite losses")
    if (a < 0).any():
        raise InvalidArgumentError("curve_losses: expected non-negative losses (cross-entropy is >= 0)")
    if len({curve_label(float(v)) for v in a}) != a.size:
        raise InvalidArgumentError("curve_losses: expected distinct losses")
    return a


class EpochLogger(BaseCallback):
    """The common part of the logging callbacks: settings, checks and the values of an epoch.

    Args:
        corrupted: the training set's corrupted-label mask, aligned with the ``x`` given to
            ``fit`` (enables the clean/corrupted weight means and histograms); None if unknown.
        val_name: the name of ``fit``'s validation data in metric names (``"val"``; the runner
            passes ``"test"``, its validation data being the test set).
        weights: log weight statistics and histograms; makes ``fit`` record the example weights
            (``needs_weights``).
        curve_losses: the losses at which MW-Net's/GDW's V is evaluated after every epoch
            (default 0, 1, ..., 10).
    """

    def __init__(
        self,
        *,
        corrupted: Any = None,
        val_name: str = "val",
        weights: bool = True,
        curve_losses: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        self.corrupted = as_corrupted(corrupted)
        if not isinstance(val_name, str) or not val_name or not all(c.isalnum() or c in "_-." for c in val_name):
            raise InvalidArgumentError(f"val_name: expected a name of letters, digits, '_', '-' or '.', got {val_name!r}")
        self.val_name = val_name
        self.weights = as_bool(weights, "weights")
        self.curve_losses = as_curve_losses(curve_losses)
        #: ``fit`` records the example weights for this callback when ``weights`` is on.
        self.needs_weights = self.weights

    def on_fit_start(self, trainer: Trainer, config: FitConfig) -> None:
        """Checks the corrupted mask against the training set (before any step)."""
        if self.corrupted is not None and len(self.corrupted) != config.num_train:
            raise ShapeError(
                f"corrupted: expected {config.num_train} entries (one per training example given to fit), "
                f"got {len(self.corrupted)}")

    def on_fit_error(self, trainer: Trainer, history: History, error: BaseException) -> None:
        """Closes what the callback opened (see :meth:`close`)."""
        self.close()

    def close(self) -> None:
        """Flushes and closes the callback's writer or run (nothing here)."""

    # -- the values of one epoch ------------------------------------------------------------------------

    def scalars(self, record: EpochRecord) -> dict[str, float]:
        """The epoch's scalars by name (:data:`metaweight.integrations.METRIC_NAMES`; absent values
        are left out)."""
        out: dict[str, float] = {
            "train/loss": float(record.train_loss),
            "train/accuracy": float(record.train_accuracy),
        }
        if record.val_loss is not None:
            out[f"{self.val_name}/loss"] = float(record.val_loss)
        if record.val_accuracy is not None:
            out[f"{self.val_name}/accuracy"] = float(record.val_accuracy)
        out["lr"] = float(record.lr)
        if record.meta_loss is not None:
            out["meta/loss"] = float(record.meta_loss)
        groups = self.weight_groups(record)
        if "all" in groups:
            w = groups["all"].astype(np.float64)
            out["weights/mean"] = float(w.mean())
            out["weights/std"] = float(w.std())
        for g in ("clean", "corrupted"):
            if g in groups:
                out[f"weights/mean_{g}"] = float(groups[g].astype(np.float64).mean())
        for name in _DIAGNOSTICS:
            v = getattr(record, name, None)
            if v is not None and math.isfinite(v):
                out[f"diagnostics/{name}"] = float(v)
        out["time/epoch_seconds"] = float(record.time)
        return out

    def weight_groups(self, record: EpochRecord) -> dict[str, np.ndarray]:
        """The epoch's finite example weights: ``"all"``, and with a matching corrupted mask
        ``"clean"`` and ``"corrupted"`` (groups without an example are left out; empty without
        recorded weights, e.g. FineTune's epochs over the meta set)."""
        w = record.example_weights
        if not self.weights or w is None or len(w) == 0:
            return {}
        ok = np.isfinite(w)
        out: dict[str, np.ndarray] = {}
        if ok.any():
            out["all"] = w[ok]
        if self.corrupted is not None and len(self.corrupted) == len(w):
            for name, sel in (("clean", ok & ~self.corrupted), ("corrupted", ok & self.corrupted)):
                if sel.any():
                    out[name] = w[sel]
        return out

    def weight_curve(self, trainer: Trainer) -> np.ndarray | None:
        """V at :attr:`curve_losses` (float32), or None for methods without a weighting net."""
        if not trainer.method.has_weight_function:
            return None
        return trainer.weight_function(self.curve_losses)


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """A nested mapping as dotted keys → text values (``{"method": {"name": "gdw"}}`` →
    ``{"method.name": "gdw"}``); lists are written as JSON."""
    import json

    out: dict[str, str] = {}
    if isinstance(config, dict):
        for k, v in config.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif prefix:
        out[prefix[:-1]] = config if isinstance(config, str) else json.dumps(config)
    return out
