"""Optimizers and learning-rate schedules (settings only; the updates run in the native core).

Optimizers follow PyTorch's update rules::

    SGD   g <- grad + wd*theta;  b <- m*b + g;  d <- g + m*b (Nesterov) or b;  theta <- theta - lr*d
    Adam  g <- grad + wd*theta (or theta <- theta*(1 - lr*wd) when decoupled, i.e. AdamW);
          bias-corrected first/second moments; theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)

Schedules give the learning rate of each update. Positions (milestones, cosine length, warm-up)
are in ``unit="epoch"`` (the default) or ``unit="step"``. :meth:`Trainer.fit <metaweight.Trainer.fit>`
converts epochs to steps with its number of steps per epoch (``ceil(N / batch_size)``); to use
epoch units with :meth:`Trainer.step <metaweight.Trainer.step>` alone, pass ``steps_per_epoch`` to
the trainer. Warm-up scales the scheduled rate linearly by ``(step + 1) / warmup_steps`` during the
first ``warmup`` epochs/steps.

Every value is checked when the object is made; a bad one raises
:class:`~metaweight.InvalidArgumentError` naming the field, e.g. ``SGD.momentum``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from ._validate import as_bool, as_float
from .errors import InvalidArgumentError

__all__ = ["SGD", "Adam", "Constant", "Cosine", "MultiStep", "Optimizer", "Schedule"]

_UNITS = ("epoch", "step")


class Optimizer:
    """Base class of the optimizer settings (:class:`SGD`, :class:`Adam`)."""

    lr: float

    def _config(self) -> tuple[int, float, float, int, float, int, float, float, float]:
        """The ``(kind, lr, momentum, nesterov, weight_decay, decoupled, beta1, beta2, eps)`` tuple."""
        raise NotImplementedError


@dataclass(frozen=True)
class SGD(Optimizer):
    """Stochastic gradient descent with momentum and L2 weight decay (PyTorch semantics).

    Args:
        lr: base learning rate (> 0).
        momentum: momentum factor, ``0 <= momentum < 1``.
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        weight_decay: L2 penalty added to the gradient (>= 0).

    Raises:
        InvalidArgumentError: a value out of range, naming the field.
    """

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        as_float(self.lr, "SGD.lr", minimum=0.0, min_inclusive=False)
        as_float(self.momentum, "SGD.momentum", minimum=0.0, maximum=1.0, max_inclusive=False)
        if as_bool(self.nesterov, "SGD.nesterov") and self.momentum == 0:
            raise InvalidArgumentError("SGD.nesterov: Nesterov momentum needs momentum > 0, got momentum=0")
        as_float(self.weight_decay, "SGD.weight_decay", minimum=0.0)

    def _config(self) -> tuple[int, float, float, int, float, int, float, float, float]:
        return (
            0,
            float(self.lr),
            float(self.momentum),
            int(bool(self.nesterov)),
            float(self.weight_decay),
            0,
            0.9,
            0.999,
            1e-8,
        )


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam, or AdamW with ``decoupled=True``.

    Args:
        lr: base learning rate (> 0).
        betas: ``(beta1, beta2)``, each in ``[0, 1)``.
        eps: term added to the denominator (> 0).
        weight_decay: L2 penalty added to the gradient, or decoupled decay when ``decoupled``.
        decoupled: AdamW-style decoupled weight decay.

    Raises:
        InvalidArgumentError: a value out of range, naming the field.
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False

    def __post_init__(self) -> None:
        as_float(self.lr, "Adam.lr", minimum=0.0, min_inclusive=False)
        try:
            b1, b2 = self.betas
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"Adam.betas: expected a pair (beta1, beta2), got {self.betas!r}"
            ) from None
        as_float(b1, "Adam.betas[0]", minimum=0.0, maximum=1.0, max_inclusive=False)
        as_float(b2, "Adam.betas[1]", minimum=0.0, maximum=1.0, max_inclusive=False)
        object.__setattr__(self, "betas", (float(b1), float(b2)))
        as_float(self.eps, "Adam.eps", minimum=0.0, min_inclusive=False)
        as_float(self.weight_decay, "Adam.weight_decay", minimum=0.0)
        as_bool(self.decoupled, "Adam.decoupled")

    def _config(self) -> tuple[int, float, float, int, float, int, float, float, float]:
        return (
            1,
            float(self.lr),
            0.0,
            0,
            float(self.weight_decay),
            int(bool(self.decoupled)),
            self.betas[0],
            self.betas[1],
            float(self.eps),
        )


# ---- schedules ---------------------------------------------------------------------------------------

ScheduleConfig = tuple[int, list[int], float, int, float, int]


def _check_unit(unit: Any, name: str) -> None:
    if unit not in _UNITS:
        raise InvalidArgumentError(f"{name}: expected 'epoch' or 'step', got {unit!r}")


def _check_warmup(value: Any, name: str, unit: str) -> None:
    v = as_float(value, name, minimum=0.0)
    if unit == "step" and v != int(v):
        raise InvalidArgumentError(f"{name}: expected a whole number of steps, got {v}")


class Schedule:
    """Base class of the learning-rate schedules (:class:`Constant`, :class:`MultiStep`, :class:`Cosine`)."""

    unit: str
    warmup: float

    def _uses_epochs(self) -> bool:
        """Whether converting to steps needs the number of steps per epoch."""
        return self.unit == "epoch" and self.warmup > 0

    def _needs_total(self) -> bool:
        """Whether the length of the run must be known (cosine without ``total``)."""
        return False

    def _to_steps(self, value: float, steps_per_epoch: int | None) -> int:
        if self.unit == "step":
            steps = round(value)
        elif steps_per_epoch is None:
            raise InvalidArgumentError(
                f"{type(self).__name__}: positions are in epochs; the number of steps per epoch is unknown"
            )
        else:
            steps = round(value * steps_per_epoch)
        if steps > 2**62:
            raise InvalidArgumentError(
                f"{type(self).__name__}: position {value} {self.unit}s is {steps} steps, beyond the limit of 2^62 steps"
            )
        return steps

    def _config(self, lr: float, steps_per_epoch: int | None, total_steps: int | None) -> ScheduleConfig:
        """``(kind, milestones, gamma, total_steps, min_lr, warmup_steps)`` in steps."""
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Schedule):
    """A constant learning rate, with optional linear warm-up.

    Args:
        warmup: warm-up length in ``unit`` (0 = none).
        unit: ``"epoch"`` or ``"step"``.
    """

    warmup: float = 0
    unit: str = "epoch"

    def __post_init__(self) -> None:
        _check_unit(self.unit, "Constant.unit")
        _check_warmup(self.warmup, "Constant.warmup", self.unit)

    def _config(self, lr: float, steps_per_epoch: int | None, total_steps: int | None) -> ScheduleConfig:
        return (0, [], 0.1, 0, 0.0, self._to_steps(self.warmup, steps_per_epoch) if self.warmup else 0)


@dataclass(frozen=True)
class MultiStep(Schedule):
    """Multiplies the learning rate by ``gamma`` at each milestone.

    Args:
        milestones: increasing positions in ``unit`` (e.g. epochs ``[60, 120, 160]``); the rate
            changes for the first update at or after each.
        gamma: multiplicative factor (> 0).
        unit: ``"epoch"`` or ``"step"``.
        warmup: warm-up length in ``unit`` (0 = none).

    Raises:
        InvalidArgumentError: negative, non-increasing or (for steps) fractional milestones; a bad
            gamma or unit.
    """

    milestones: Sequence[float] = ()
    gamma: float = 0.1
    unit: str = "epoch"
    warmup: float = 0

    def __post_init__(self) -> None:
        _check_unit(self.unit, "MultiStep.unit")
        if isinstance(self.milestones, (str, bytes)):
            raise InvalidArgumentError(
                f"MultiStep.milestones: expected a list of numbers, got {self.milestones!r}"
            )
        try:
            ms = tuple(self.milestones)
        except TypeError:
            raise InvalidArgumentError(
                f"MultiStep.milestones: expected a list of numbers, got {self.milestones!r}"
            ) from None
        values = [as_float(m, f"MultiStep.milestones[{i}]", minimum=0.0) for i, m in enumerate(ms)]
        for i in range(1, len(values)):
            if values[i] <= values[i - 1]:
                raise InvalidArgumentError(
                    f"MultiStep.milestones: expected increasing values, got {list(ms)}"
                )
        if self.unit == "step" and any(v != int(v) for v in values):
            raise InvalidArgumentError(f"MultiStep.milestones: expected whole steps, got {list(ms)}")
        object.__setattr__(self, "milestones", ms)
        as_float(self.gamma, "MultiStep.gamma", minimum=0.0, min_inclusive=False)
        _check_warmup(self.warmup, "MultiStep.warmup", self.unit)

    def _uses_epochs(self) -> bool:
        return self.unit == "epoch" and (len(self.milestones) > 0 or self.warmup > 0)

    def _config(self, lr: float, steps_per_epoch: int | None, total_steps: int | None) -> ScheduleConfig:
        ms = [self._to_steps(m, steps_per_epoch) for m in self.milestones]
        return (
            1,
            ms,
            float(self.gamma),
            0,
            0.0,
            self._to_steps(self.warmup, steps_per_epoch) if self.warmup else 0,
        )


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine annealing from the base rate to ``min_lr`` over ``total`` (then constant at ``min_lr``).

    Args:
        total: length of the annealing in ``unit``; None for the length of the training run as
            :meth:`Trainer.fit <metaweight.Trainer.fit>` first sees it (the steps already taken plus
            ``epochs`` x steps per epoch of the first ``fit`` call). Pass it explicitly when you call
            ``fit`` several times or train with ``step`` only.
        min_lr: final learning rate (>= 0).
        unit: ``"epoch"`` or ``"step"``.
        warmup: warm-up length in ``unit`` (0 = none).

    Raises:
        InvalidArgumentError: a bad value, naming the field.
    """

    total: float | None = None
    min_lr: float = 0.0
    unit: str = "epoch"
    warmup: float = 0

    def __post_init__(self) -> None:
        _check_unit(self.unit, "Cosine.unit")
        if self.total is not None:
            t = as_float(self.total, "Cosine.total", minimum=0.0, min_inclusive=False)
            if self.unit == "step" and t != int(t):
                raise InvalidArgumentError(f"Cosine.total: expected a whole number of steps, got {t}")
        as_float(self.min_lr, "Cosine.min_lr", minimum=0.0)
        _check_warmup(self.warmup, "Cosine.warmup", self.unit)

    def _uses_epochs(self) -> bool:
        return self.unit == "epoch" and (self.total is not None or self.warmup > 0)

    def _needs_total(self) -> bool:
        return self.total is None

    def _config(self, lr: float, steps_per_epoch: int | None, total_steps: int | None) -> ScheduleConfig:
        if self.total is None:
            if total_steps is None:
                raise InvalidArgumentError("Cosine.total: the length of the run is unknown")
            total = int(total_steps)
        else:
            total = self._to_steps(self.total, steps_per_epoch)
        if self.min_lr > lr:
            raise InvalidArgumentError(
                f"Cosine.min_lr: expected a value <= the base learning rate {lr}, got {self.min_lr}"
            )
        return (
            2,
            [],
            0.1,
            max(total, 1),
            float(self.min_lr),
            self._to_steps(self.warmup, steps_per_epoch) if self.warmup else 0,
        )


AnySchedule = Union[Constant, MultiStep, Cosine]


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)
