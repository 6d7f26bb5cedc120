"""Shared pieces of :mod:`metaweight.law`: log columns, the feature codes' names and argument helpers."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ._validate import as_text, fmt_shape
from .errors import DTypeError, InvalidArgumentError, ShapeError

if TYPE_CHECKING:
    from .law import LAWConfig

PathLike = Union[str, "os.PathLike[str]"]

#: Columns of an episode's per-stage table, in the core's order (``metaweight.h``).
LOG_COLUMNS = (
    "reward",
    "target_acc",
    "reference_acc",
    "loss_gap",
    "weight_corrupted",
    "weight_clean",
    "weight_mean",
    "target_loss",
    "reference_loss",
    "state_loss",
    "state_acc",
)

LABEL_ENCODINGS = ("onehot", "scalar")
DENSITIES = ("cosine", "dot")


def config_class() -> type[LAWConfig]:
    """:class:`metaweight.law.LAWConfig` (defined with the public face of the package, which
    imports the modules that use it)."""
    from .law import LAWConfig

    return LAWConfig


def check_trainer(trainer: Any, what: str) -> None:
    """InvalidArgumentError unless ``trainer`` is a :class:`~metaweight.Trainer`."""
    from .trainer import Trainer

    if not isinstance(trainer, Trainer):
        raise InvalidArgumentError(
            f"{what}: trainer: expected a metaweight.Trainer, got {type(trainer).__name__}"
        )


def as_mask(corrupted: Any, n: int) -> np.ndarray | None:
    if corrupted is None:
        return None
    c = np.asarray(corrupted)
    if c.dtype.kind not in "biu":
        raise DTypeError(f"corrupted: expected a boolean mask, got dtype {c.dtype}")
    if c.shape != (n,):
        raise ShapeError(
            f"corrupted: expected shape ({n},) (one flag per training example), got {fmt_shape(c.shape)}"
        )
    if c.dtype.kind != "b" and c.size and not np.isin(c, (0, 1)).all():
        raise InvalidArgumentError("corrupted: expected booleans or 0/1 values")
    return np.ascontiguousarray(c.astype(np.uint8))


def model_spec(model: Any, name: str = "model") -> tuple[str, tuple[int, ...] | None]:
    """(spec, input_shape or None) of a spec string or a metaweight Network."""
    if isinstance(model, str):
        return as_text(model, name, "a spec string"), None
    spec = getattr(model, "spec", None)
    shape = getattr(model, "input_shape", None)
    if isinstance(spec, str) and shape is not None:
        return spec, tuple(int(d) for d in shape)
    raise InvalidArgumentError(
        f"{name}: expected a spec string such as 'mlp(hidden=100, classes=10)' or a metaweight Network, "
        f"got {type(model).__name__}"
    )
