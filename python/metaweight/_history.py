"""What training returns: a step's :class:`StepResult` (or a :class:`SkippedStep`), and the
per-epoch :class:`EpochRecord` collected in a :class:`History` (public as ``metaweight.StepResult``,
``metaweight.History``, ... and from :mod:`metaweight.trainer`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from .errors import InvalidArgumentError
from .monitor import EPOCH_COLUMNS, StepDiagnostics

__all__ = ["EpochRecord", "History", "SkippedStep", "StepResult"]


@dataclass(frozen=True)
class StepResult:
    """The outcome of one training step.

    Attributes:
        loss: mean (unweighted) cross-entropy of the batch, before the update.
        accuracy: accuracy of the batch, before the update.
        lr: the learning rate used for the update.
        step: number of updates taken so far (including this one).
        meta_loss: loss on the meta batch (meta-weighting methods; 0 otherwise).
        weights: per-example weights ``(N,)`` the method used (1 for unweighted ERM; GDW: ω′ at
            the label; an attached LAW strategy's weights).
        class_weights: GDW's class-level weights ω′ ``(N, C)`` (None for other methods).
        raw: with ``step(..., diagnostics=True)``: the method's raw step arrays by name (None
            otherwise; an empty dict for methods without any, and None for a skipped step):

            - L2RW: ``"u"`` ``(N,)``, the scores u_i = ⟨∇L_meta, ∇l_i⟩, negative ones included,
              before ``max(u, 0)`` and the normalisation (``weights = max(u,0)/Σmax(u,0)``);
            - MW-Net: ``"v_before"`` ``(N,)``, V(l_i) before V's update, and ``"v_after"``
              ``(N,)``, after it (the weights used);
            - GDW: ``"g"`` ``(N, C)``, g = ∂L_meta/∂ω; ``"omega"`` ``(N, C)``, ω before the
              second stage (after the first zero-mean constraint); ``"omega_prime"`` ``(N, C)``,
              ω′ (``class_weights``).
    """

    loss: float
    accuracy: float
    lr: float
    step: int
    meta_loss: float = 0.0
    weights: np.ndarray | None = field(default=None, repr=False, compare=False)
    class_weights: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: True when the step was skipped because its loss, a gradient or a weight was NaN or
    #: infinite (only with ``Trainer(on_nonfinite="skip")``; nothing was updated).
    skipped: bool = False
    #: Collapse and saturation statistics of the step (:class:`~metaweight.StepDiagnostics`;
    #: None for a skipped step).
    diagnostics: StepDiagnostics | None = field(default=None, compare=False)
    raw: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class SkippedStep:
    """A step skipped by ``Trainer(on_nonfinite="skip")``.

    Attributes:
        step: the number the update would have had (``step_count + 1`` when it was tried).
        reason: the core's message naming what was NaN or infinite.
    """

    step: int
    reason: str


@dataclass(frozen=True)
class EpochRecord:
    """Statistics of one epoch of :meth:`Trainer.fit`.

    Attributes:
        epoch: epoch number, counted from 1 over the trainer's lifetime (all ``fit`` calls).
        step: number of updates taken at the end of the epoch.
        train_loss: mean training loss over the epoch's examples (each step's batch loss, measured
            before its update, weighted by the batch size).
        train_accuracy: mean training accuracy, likewise.
        lr: learning rate of the epoch's last update.
        time: wall-clock seconds of the epoch (training and validation).
        val_loss: validation loss at the end of the epoch (None without validation data).
        val_accuracy: validation accuracy at the end of the epoch (None without validation data).
        meta_loss: mean meta loss (meta-weighting methods; None otherwise).
        example_weights: with ``fit(record_weights=True)``: the mean weight each training example
            received during the epoch, aligned with the ``x`` given to ``fit`` (NaN for examples
            not visited, e.g. under class-balanced sampling).
        class_weights: with ``record_weights=True`` and GDW: the class-level weights ``(N, C)``
            each training example received (its last visit of the epoch).
        weight_ess, saturated_low, saturated_high, prediction_majority, weight_loss_correlation:
            the epoch's means of the steps' :class:`~metaweight.StepDiagnostics`
            (``effective_sample_size`` for ``weight_ess``; None when no step had a value).
        raw: with ``fit(record_raw=...)`` (every epoch, or the last one): the raw step arrays of
            :attr:`StepResult.raw` gathered over the epoch's steps and aligned with the ``x``
            given to ``fit``: ``(N,)`` or ``(N, C)`` per name, each example's values from its
            step of the epoch (NaN for examples not visited, e.g. in a skipped step).
    """

    epoch: int
    step: int
    train_loss: float
    train_accuracy: float
    lr: float
    time: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    meta_loss: float | None = None
    example_weights: np.ndarray | None = field(default=None, repr=False, compare=False)
    class_weights: np.ndarray | None = field(default=None, repr=False, compare=False)
    weight_ess: float | None = None
    saturated_low: float | None = None
    saturated_high: float | None = None
    prediction_majority: float | None = None
    weight_loss_correlation: float | None = None
    raw: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)


class History:
    """Per-epoch statistics of training: a sequence of :class:`EpochRecord`.

    ``len(history)`` is the number of epochs; ``history[-1]`` the last record; columns are
    available as lists (``history.train_loss``, ``history.val_accuracy``, ...) and all together
    with :meth:`to_dict` (e.g. ``pandas.DataFrame(history.to_dict())``).
    """

    _COLUMNS = (
        "epoch",
        "step",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "time",
        "meta_loss",
        *EPOCH_COLUMNS,
    )

    def __init__(self, records: Sequence[EpochRecord] = ()) -> None:
        self._records: list[EpochRecord] = list(records)

    def _append(self, record: EpochRecord) -> None:
        self._records.append(record)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[EpochRecord]:
        return iter(self._records)

    @overload
    def __getitem__(self, index: int) -> EpochRecord: ...

    @overload
    def __getitem__(self, index: slice) -> History: ...

    def __getitem__(self, index: int | slice) -> EpochRecord | History:
        if isinstance(index, slice):
            return History(self._records[index])
        return self._records[index]

    def column(self, name: str) -> list[Any]:
        """The values of one field of every record, e.g. ``column("val_accuracy")``.

        Raises:
            InvalidArgumentError: an unknown field.
        """
        if name not in self._COLUMNS:
            raise InvalidArgumentError(f"name: expected one of {list(self._COLUMNS)}, got {name!r}")
        return [getattr(r, name) for r in self._records]

    def to_dict(self) -> dict[str, list[Any]]:
        """All fields as columns: name -> list with one value per epoch."""
        return {c: self.column(c) for c in self._COLUMNS}

    @property
    def epochs(self) -> list[int]:
        """Epoch numbers."""
        return self.column("epoch")

    @property
    def train_loss(self) -> list[float]:
        """Training loss per epoch."""
        return self.column("train_loss")

    @property
    def train_accuracy(self) -> list[float]:
        """Training accuracy per epoch."""
        return self.column("train_accuracy")

    @property
    def val_loss(self) -> list[float | None]:
        """Validation loss per epoch (None entries without validation data)."""
        return self.column("val_loss")

    @property
    def val_accuracy(self) -> list[float | None]:
        """Validation accuracy per epoch (None entries without validation data)."""
        return self.column("val_accuracy")

    @property
    def lr(self) -> list[float]:
        """Learning rate of each epoch's last update."""
        return self.column("lr")

    @property
    def time(self) -> list[float]:
        """Seconds per epoch."""
        return self.column("time")

    def __repr__(self) -> str:
        if not self._records:
            return "History(0 epochs)"
        last = self._records[-1]
        extra = f", val_accuracy={last.val_accuracy:.4f}" if last.val_accuracy is not None else ""
        return (
            f"History({len(self._records)} epochs, last: train_loss={last.train_loss:.4f}, "
            f"train_accuracy={last.train_accuracy:.4f}{extra})"
        )
