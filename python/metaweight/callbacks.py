"""Callbacks of :meth:`Trainer.fit <metaweight.Trainer.fit>`: a small protocol, and how ``fit`` calls it.

``fit(callbacks=[...])`` takes two kinds of callback, in any mix:

- a plain callable ``callback(trainer, record)``, called after every epoch with its
  :class:`~metaweight.EpochRecord` (returning True stops training after that epoch) — as always;
- an object following the :class:`Callback` protocol (subclass :class:`BaseCallback` to implement
  only the hooks you need)::

      class PrintBest(mw.callbacks.BaseCallback):
          def on_fit_start(self, trainer, config):      # a FitConfig: epochs, sizes, method, ...
              self.best = 0.0
          def on_epoch_end(self, trainer, record):      # after every epoch; True stops training
              self.best = max(self.best, record.val_accuracy or 0.0)
          def on_fit_end(self, trainer, history):       # the History of this fit call
              print("best", self.best)

  ``on_fit_start`` runs once per ``fit`` call after every argument was checked and before the first
  step; ``on_fit_end`` once when ``fit`` returns (also after an early stop). When ``fit`` raises
  (bad data found mid-run, a diverged loss, ``KeyboardInterrupt``), the started callbacks'
  optional ``on_fit_error(trainer, history, error)`` hook runs instead (its own errors are
  reported as warnings) and the error propagates. A callback whose ``needs_weights`` attribute is
  True makes ``fit`` record the example weights (as ``record_weights=True``) so that its records
  carry ``example_weights``.

Ready-made callbacks: :class:`metaweight.integrations.tensorboard.TensorBoardCallback` and
:class:`metaweight.integrations.mlflow.MLflowCallback` (optional extras, imported only when used).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Union, runtime_checkable

from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .trainer import EpochRecord, History, Trainer

__all__ = ["BaseCallback", "Callback", "CallbackLike", "FitConfig"]

#: The hook methods of the protocol (and the optional error hook).
HOOKS = ("on_fit_start", "on_epoch_end", "on_fit_end")


@dataclass(frozen=True)
class FitConfig:
    """What a :meth:`Trainer.fit <metaweight.Trainer.fit>` call is about to do, passed to
    :meth:`Callback.on_fit_start`.

    Attributes:
        epochs: epochs this call trains over the training set.
        fine_tune_epochs: further epochs over the meta set (:class:`~metaweight.FineTune`; else 0).
        first_epoch: the number of the call's first epoch (epochs count from 1 over the trainer's
            lifetime; the records' ``epoch``).
        batch_size: examples per step.
        steps_per_epoch: steps per epoch over the training set.
        num_train: training examples.
        num_val: validation examples (0 without validation data).
        num_meta: meta-set examples (0 without a meta set).
        num_classes: the network's classes.
        method: the method's name (``"erm"``, ``"mwnet"``, ...).
        record_weights: whether the records carry ``example_weights``.
    """

    epochs: int
    fine_tune_epochs: int
    first_epoch: int
    batch_size: int
    steps_per_epoch: int
    num_train: int
    num_val: int
    num_meta: int
    num_classes: int
    method: str
    record_weights: bool


@runtime_checkable
class Callback(Protocol):
    """The callback protocol of ``fit`` (see the module's description). Optional members:
    ``needs_weights`` (bool attribute) and ``on_fit_error(trainer, history, error)``."""

    def on_fit_start(self, trainer: Trainer, config: FitConfig) -> None:
        """Called once per ``fit`` call, after its arguments were checked, before the first step."""

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> bool | None:
        """Called after every epoch with its record; returning True stops training after it."""

    def on_fit_end(self, trainer: Trainer, history: History) -> None:
        """Called once when ``fit`` returns, with the :class:`~metaweight.History` of the call."""


#: What ``fit(callbacks=...)`` accepts: a :class:`Callback` object or a plain ``callback(trainer, record)``.
CallbackLike = Union[Callback, Callable[["Trainer", "EpochRecord"], Any]]


class BaseCallback:
    """A :class:`Callback` whose hooks do nothing: subclass it and override what you need.

    Attributes:
        needs_weights: set True to have ``fit`` record every example's weight per epoch
            (``EpochRecord.example_weights``, as ``record_weights=True``).
    """

    needs_weights: bool = False

    def on_fit_start(self, trainer: Trainer, config: FitConfig) -> None:
        """Called once per ``fit`` call before the first step (nothing by default)."""

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> bool | None:
        """Called after every epoch (nothing by default); True stops training."""
        return None

    def on_fit_end(self, trainer: Trainer, history: History) -> None:
        """Called once when ``fit`` returns (nothing by default)."""

    def on_fit_error(self, trainer: Trainer, history: History, error: BaseException) -> None:
        """Called instead of :meth:`on_fit_end` when ``fit`` raises (nothing by default)."""


def _is_hook_object(cb: Any) -> bool:
    return any(callable(getattr(cb, h, None)) for h in HOOKS)


class FitHooks:
    """The callbacks of one ``fit`` call, sorted out (internal to :meth:`Trainer.fit`).

    Args:
        callbacks: the ``callbacks`` argument of ``fit`` (None or a list).

    Raises:
        InvalidArgumentError: not a list, or an element that is neither callable nor has a
            hook (named ``callbacks[i]``).
    """

    def __init__(self, callbacks: Iterable[CallbackLike] | None) -> None:
        if callbacks is None:
            items: list[Any] = []
        elif callable(callbacks) or _is_hook_object(callbacks):
            raise InvalidArgumentError(
                f"callbacks: expected a list of callbacks, got one {type(callbacks).__name__}; pass callbacks=[...]")
        else:
            try:
                items = list(callbacks)
            except TypeError:
                raise InvalidArgumentError(
                    f"callbacks: expected a list of callbacks, got {type(callbacks).__name__}") from None
        self._objects: list[Any] = []
        #: The per-epoch functions ``fit`` calls, in order: plain callbacks and bound ``on_epoch_end``.
        self.epoch_functions: list[Callable[..., Any]] = []
        for i, cb in enumerate(items):
            if _is_hook_object(cb):
                self._objects.append(cb)
                fn = getattr(cb, "on_epoch_end", None)
                if callable(fn):
                    self.epoch_functions.append(fn)
            elif callable(cb):
                self.epoch_functions.append(cb)
            else:
                raise InvalidArgumentError(
                    f"callbacks[{i}]: expected a callable callback(trainer, record) or an object with "
                    f"on_fit_start/on_epoch_end/on_fit_end, got {type(cb).__name__}")
        #: Whether a callback asked for the example weights (``needs_weights``).
        self.needs_weights = any(bool(getattr(cb, "needs_weights", False)) for cb in self._objects)
        self._started: list[Any] = []

    def start(self, trainer: Trainer, config: FitConfig, history: History) -> None:
        """Calls every ``on_fit_start``; if one raises, the ones already started get
        ``on_fit_error`` and the error propagates (training has not begun)."""
        for cb in self._objects:
            fn = getattr(cb, "on_fit_start", None)
            try:
                if callable(fn):
                    fn(trainer, config)
            except BaseException as e:
                self.error(trainer, history, e)
                raise
            self._started.append(cb)

    def end(self, trainer: Trainer, history: History) -> None:
        """Calls every started ``on_fit_end`` (all of them, even when one raises; the first error
        then propagates)."""
        first: BaseException | None = None
        started, self._started = self._started, []
        for cb in started:
            fn = getattr(cb, "on_fit_end", None)
            if not callable(fn):
                continue
            try:
                fn(trainer, history)
            except BaseException as e:  # noqa: BLE001 - every callback ends; the first error is raised
                if first is None:
                    first = e
        if first is not None:
            raise first

    def error(self, trainer: Trainer, history: History, error: BaseException) -> None:
        """Calls every started ``on_fit_error``; their own errors become warnings (``error`` is what
        the caller re-raises)."""
        started, self._started = self._started, []
        for cb in started:
            fn = getattr(cb, "on_fit_error", None)
            if not callable(fn):
                continue
            try:
                fn(trainer, history, error)
            except Exception as e:  # noqa: BLE001 - the training error is the one to raise
                warnings.warn(
                    f"{type(cb).__name__}.on_fit_error raised {type(e).__name__}: {e} (while handling "
                    f"{type(error).__name__}: {error})", RuntimeWarning, stacklevel=3)
