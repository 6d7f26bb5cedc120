"""The :class:`Trainer`: optimizer, schedule, method and randomness around a network.

Typical use::

    import metaweight as mw

    net = mw.mlp(64, hidden=(256, 256), num_classes=10)
    trainer = mw.Trainer(net, mw.SGD(lr=0.1), mw.MultiStep([15], gamma=0.1), seed=0)
    history = trainer.fit(x_train, y_train, epochs=20, batch_size=100, x_val=x_test, y_val=y_test)
    print(trainer.evaluate(x_test, y_test))       # {'loss': ..., 'accuracy': ...}
    trainer.save("run.ckpt")

    # resuming: build the same network and trainer, then load
    trainer = mw.Trainer(mw.mlp(64, num_classes=10), mw.SGD(lr=0.1), mw.MultiStep([15]), seed=0)
    trainer.load("run.ckpt")                      # or mw.Trainer.from_checkpoint(...)
    trainer.fit(x_train, y_train, epochs=10)      # continues bit-identically

The trainer trains its network *in place*: ``trainer.model`` is the network passed in, and its
parameters change with every step. Every step is one call into the native core, which runs with
the GIL released.

Reproducibility: with the same seed, data and settings, training gives bit-identical parameters.
:meth:`Trainer.fit` shuffles every epoch with a permutation drawn from the trainer's own random
generator, which is part of checkpoints, so a run saved between ``fit`` calls and resumed with
:meth:`Trainer.load` continues exactly as if it had not stopped.

Threads: different trainers (on different networks) may train concurrently in different threads.
One trainer, or one network, used from two threads at the same moment raises
:class:`~metaweight.BusyError` in the second thread rather than corrupting state.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Union, overload

import numpy as np

from . import _core
from ._handle import NativeHandle, refuses_reentry
from ._validate import as_bool, as_features, as_int, as_labels, as_optional_split, as_path, as_weights
from ._weight_net import WeightNet
from .callbacks import CallbackLike, FitConfig, FitHooks
from .errors import (
    ClosedError,
    DTypeError,
    InvalidArgumentError,
    NonFiniteError,
    StateError,
)
from .methods import ClassBalancedSampling, FineTune, Method, resolve_method
from .models import Network
from .monitor import EPOCH_COLUMNS, CollapseMonitor, EpochDiagnostics, StepDiagnostics
from .optim import SGD, Constant, Optimizer, Schedule, _steps_per_epoch

__all__ = ["Augment", "EpochRecord", "History", "SkippedStep", "StepResult", "Trainer", "WeightNet"]

#: The default optimizer and schedule of :class:`Trainer` (immutable settings objects).
DEFAULT_OPTIMIZER = SGD()
DEFAULT_SCHEDULE = Constant()

PathLike = Union[str, "os.PathLike[str]"]

#: The raw step arrays of ``step(..., diagnostics=True)`` per method (``StepResult.raw``): L2RW's
#: scores u (N,); MW-Net's V outputs before and after V's update (N,); GDW's g = ∂L_meta/∂ω,
#: ω before the second stage and ω′ (N, C). Other methods have none.
RAW_ARRAYS: dict[str, tuple[str, ...]] = {
    "l2rw": ("u",),
    "mwnet": ("v_before", "v_after"),
    "gdw": ("g", "omega", "omega_prime"),
}
Callback = Callable[["Trainer", "EpochRecord"], Any]


@dataclass(frozen=True)
class Augment:
    """Data augmentation applied inside each training step to image batches.

    Args:
        crop_padding: zero-pad each side by this many pixels, then crop a random window of the
            original size (0 = no crop).
        flip: flip each image horizontally with probability 1/2.

    Raises:
        InvalidArgumentError: a negative padding or a non-boolean flip.
    """

    crop_padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        as_int(self.crop_padding, "Augment.crop_padding", minimum=0)
        as_bool(self.flip, "Augment.flip")


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


def _class_balanced_order(perm: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """An epoch order visiting the classes round-robin (in a random class order per round), each
    class's examples in the order they appear in ``perm``, re-used cyclically; same length as perm.

    Deterministic given the trainer's permutation, so it is reproducible and checkpointed.
    """
    by_class = [perm[y[perm] == c] for c in range(num_classes)]
    present = [c for c in range(num_classes) if len(by_class[c]) > 0]
    n = len(perm)
    out = np.empty(n, dtype=np.int64)
    pos = [0] * num_classes
    rounds = perm % max(len(present), 1)  # cheap deterministic per-round rotation
    k = 0
    r = 0
    while k < n:
        shift = int(rounds[r % n])
        for j in range(len(present)):
            if k >= n:
                break
            c = present[(j + shift) % len(present)]
            out[k] = by_class[c][pos[c] % len(by_class[c])]
            pos[c] += 1
            k += 1
        r += 1
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    losses: np.ndarray = lse - z[np.arange(len(y)), y]
    return losses


class Trainer(NativeHandle):
    """Trains a :class:`~metaweight.Network` with an optimizer, a learning-rate schedule and a method.

    Args:
        model: the network to train (trained in place; it stays usable through ``trainer.model``).
        optimizer: :class:`~metaweight.SGD` (default ``SGD(lr=0.1, momentum=0.9,
            weight_decay=5e-4)``) or :class:`~metaweight.Adam`.
        schedule: :class:`~metaweight.Constant` (default), :class:`~metaweight.MultiStep` or
            :class:`~metaweight.Cosine`. Positions in epochs are converted to steps by :meth:`fit`
            (``ceil(N / batch_size)`` steps per epoch) or with ``steps_per_epoch``.
        method: the training method, a name or object; ``"erm"`` (plain empirical risk
            minimisation) is the only one in this version.
        seed: seed of the trainer's randomness (shuffling, augmentation, dropout). The network's
            initialisation has its own seed.
        augment: :class:`Augment` for image networks (random crop and flip inside each step), or
            None.
        steps_per_epoch: steps per epoch used to convert an epoch-based schedule when you train
            with :meth:`step` yourself. Not needed with :meth:`fit`.
        on_nonfinite: what a step whose loss, gradient or weight becomes NaN or infinite does:
            ``"raise"`` (default) raises :class:`~metaweight.NonFiniteError` naming the step and
            the cause; ``"skip"`` leaves parameters, optimizer and method state unchanged, warns
            (``RuntimeWarning`` naming the step and cause), records a :class:`SkippedStep` in
            :attr:`skipped_steps` and goes on. Either way nothing trains on NaN.

    Raises:
        InvalidArgumentError: a bad argument (named in the message).
        ResourceError: the gradient, optimizer state and activations the trainer allocates are
            over the library's memory limit (also a ``MemoryError``).
        ClosedError: the network was closed.

    Note:
        Several trainers may train different networks in different threads at once. Two trainers
        on the *same* network would both update it; a step of one while the other is in a step
        raises :class:`~metaweight.BusyError`.
    """

    _noun = "trainer"
    _copy_advice = "use save() and load()"

    def __init__(
        self,
        model: Network,
        optimizer: Optimizer = DEFAULT_OPTIMIZER,
        schedule: Schedule = DEFAULT_SCHEDULE,
        *,
        method: str | Method = "erm",
        seed: int = 0,
        augment: Augment | None = None,
        steps_per_epoch: int | None = None,
        on_nonfinite: str = "raise",
    ) -> None:
        if on_nonfinite not in ("raise", "skip"):
            raise InvalidArgumentError(f"on_nonfinite: expected 'raise' or 'skip', got {on_nonfinite!r}")
        self._on_nonfinite = on_nonfinite
        #: Steps skipped because of NaN/inf (``on_nonfinite="skip"``), in order.
        self.skipped_steps: list[SkippedStep] = []
        if not isinstance(model, Network):
            raise InvalidArgumentError(f"model: expected a metaweight Network, got {type(model).__name__}")
        if model.closed:
            raise ClosedError("model: the network was closed; create a new one")
        _check_instance(optimizer, Optimizer, "optimizer", "SGD(...) or Adam(...)")
        _check_instance(schedule, Schedule, "schedule", "Constant(), MultiStep(...) or Cosine(...)")
        if augment is not None:
            _check_instance(augment, Augment, "augment", "Augment(crop_padding=4, flip=True) or None")
            if len(model.input_shape) != 3 and (augment.crop_padding or augment.flip):
                raise InvalidArgumentError(
                    f"augment: crop and flip need image inputs (C, H, W); this network takes {model.input_shape}"
                )
            if augment.crop_padding >= max(model.input_shape[1:] or (1,)):
                raise InvalidArgumentError(
                    f"augment.crop_padding: expected less than the image size {max(model.input_shape[1:])}, "
                    f"got {augment.crop_padding}"
                )
        self._model = model
        self._optimizer = optimizer
        self._schedule = schedule
        self._method = resolve_method(method)
        self._spec = self._method.spec()  # validates the method's options
        schedule._config(optimizer.lr, 1, 1)  # validates settings that depend on the base rate
        self._seed = as_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        self._augment = augment
        self._steps_per_epoch = (
            None if steps_per_epoch is None else as_int(steps_per_epoch, "steps_per_epoch", minimum=1)
        )
        self._strategy: Any = None  # an attached metaweight.law.Strategy
        self._last_spe: int | None = None
        self._warned_spe: int | None = None
        #: Statistics of every epoch :meth:`fit` ran on this trainer, across calls.
        self.history = History()
        if self._resolvable(self._steps_per_epoch, None):
            config = self._schedule_config(self._steps_per_epoch, None)
            self._provisional = False
            self._schedule_spe = self._steps_per_epoch
        else:
            # An epoch-based schedule without steps_per_epoch: fit() makes the real one.
            config = (0, [], 0.1, 0, 0.0, 0)
            self._provisional = True
            self._schedule_spe = None
        self._handle = self._create(config)

    # -- construction helpers -------------------------------------------------------------------------

    def _resolvable(self, spe: int | None, total: int | None) -> bool:
        s = self._schedule
        return not ((s._uses_epochs() and spe is None) or (s._needs_total() and total is None))

    def _schedule_config(self, spe: int | None, total: int | None) -> tuple[Any, ...]:
        return self._schedule._config(self._optimizer.lr, spe, total)

    def _create(self, schedule_config: tuple[Any, ...]) -> int:
        with self._model._hold("Trainer"):
            net = self._model._handle
            if net is None:
                raise ClosedError("model: the network was closed; create a new one")
            h = _core.trainer_create(net, self._optimizer._config(), schedule_config, self._seed)
            try:
                if self._augment is not None:
                    _core.trainer_set_augmentation(
                        h, int(self._augment.crop_padding), int(bool(self._augment.flip))
                    )
                if self._spec != "erm":
                    _core.trainer_set_method(h, self._spec, self._seed)
            except BaseException:
                _core.trainer_free(h)
                raise
        return h

    @contextlib.contextmanager
    def _use(self, what: str) -> Iterator[int]:
        """Holds the trainer (and its network) for one native call."""
        if self._handle is None:
            raise ClosedError(f"{what}: the trainer was closed; create a new one")
        with self._model._hold(f"trainer.{what}"):
            h = self._handle
            if h is None:
                raise ClosedError(f"{what}: the trainer was closed; create a new one")
            yield h

    def _prepare_fit(self, spe_fit: int, epochs: int) -> None:
        """Resolves an epoch-based schedule for a fit run of ``spe_fit`` steps per epoch."""
        s = self._schedule
        spe = self._steps_per_epoch if self._steps_per_epoch is not None else spe_fit
        if self._provisional:
            # The live trainer (and whatever it loaded) keeps everything; only its schedule,
            # now convertible to steps, is set.
            total = self.step_count + epochs * spe_fit
            config = self._schedule_config(spe, total)
            with self._use("fit") as h:
                _core.trainer_set_schedule(h, config)
            self._provisional = False
            self._schedule_spe = spe
        elif s._uses_epochs() and self._schedule_spe != spe_fit and self._warned_spe != spe_fit:
            self._warned_spe = spe_fit
            warnings.warn(
                f"fit: this run takes {spe_fit} steps per epoch, but the schedule's epochs were converted "
                f"to steps with {self._schedule_spe} steps per epoch; the schedule follows the latter",
                stacklevel=3,
            )

    # -- lifetime -------------------------------------------------------------------------------------

    def _free(self, handle: int) -> None:
        _core.trainer_free(handle)

    def _close_guard(self) -> contextlib.AbstractContextManager[object]:
        # The network stays usable through `model`; BusyError while a step of either runs.
        return self._model._hold("trainer.close")

    @classmethod
    def from_checkpoint(
        cls,
        path: PathLike,
        model: Network,
        optimizer: Optimizer = DEFAULT_OPTIMIZER,
        schedule: Schedule = DEFAULT_SCHEDULE,
        **kwargs: Any,
    ) -> Trainer:
        """Creates a trainer and restores a checkpoint into it (the resuming pattern in one call).

        The arguments must describe the run that saved the checkpoint: the same architecture and
        optimizer kind (checked), and normally the same settings and schedule (not checked).

        Args:
            path: the checkpoint written by :meth:`save`.
            model: a network of the same architecture (its parameters are overwritten).
            optimizer: the optimizer settings.
            schedule: the schedule.
            **kwargs: the other :class:`Trainer` arguments (``method``, ``seed``, ``augment``,
                ``steps_per_epoch``).

        Returns:
            The trainer, in the saved state.

        Raises:
            CheckpointError: see :meth:`load`.
        """
        trainer = cls(model, optimizer, schedule, **kwargs)
        try:
            trainer.load(path)
        except BaseException:
            trainer.close()
            raise
        return trainer

    # -- description ----------------------------------------------------------------------------------

    @property
    def model(self) -> Network:
        """The network being trained (the object passed in)."""
        return self._model

    @property
    def optimizer(self) -> Optimizer:
        """The optimizer settings."""
        return self._optimizer

    @property
    def schedule(self) -> Schedule:
        """The learning-rate schedule."""
        return self._schedule

    @property
    def method(self) -> Method:
        """The training method object."""
        return self._method

    @property
    def seed(self) -> int:
        """The trainer's seed."""
        return self._seed

    @property
    def augment(self) -> Augment | None:
        """The augmentation settings (None when off)."""
        return self._augment

    @property
    def steps_per_epoch(self) -> int | None:
        """Steps per epoch: the value given to the constructor, else that of the latest :meth:`fit`
        call (None before any)."""
        return self._steps_per_epoch if self._steps_per_epoch is not None else self._last_spe

    @property
    def step_count(self) -> int:
        """Number of updates taken (restored by :meth:`load`).

        Raises:
            ClosedError: the trainer was closed.
        """
        with self._use("step_count") as h:
            return int(_core.trainer_state(h)[0])

    @property
    def learning_rate(self) -> float:
        """The learning rate of the next update.

        Before :meth:`fit` has resolved a schedule given in epochs (without ``steps_per_epoch``),
        this is the base learning rate.

        Raises:
            ClosedError: the trainer was closed.
        """
        with self._use("learning_rate") as h:
            return float(_core.trainer_state(h)[1])

    def __repr__(self) -> str:
        if self.closed:
            return "Trainer(closed)"
        return (
            f"Trainer(model={self._model!r}, optimizer={self._optimizer!r}, schedule={self._schedule!r}, "
            f"method={self._method.name!r}, seed={self._seed}, step_count={self.step_count})"
        )

    # -- training -------------------------------------------------------------------------------------

    def _raw_step(
        self,
        x: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray | None,
        x_meta: np.ndarray | None,
        y_meta: np.ndarray | None,
        diagnostics: bool = False,
    ) -> StepResult:
        """One native step on already validated arrays (``diagnostics``: also its raw arrays)."""
        if self._spec == "erm":
            used = weights
            with self._use("step") as h:
                loss, acc, lr, step, meta_loss, diag = _core.trainer_step(h, x, y, weights)
                if weights is None and self._strategy is not None:
                    # An attached LAW strategy weighted this step: report its weights.
                    wbuf = np.empty(len(y), dtype=np.float32)
                    _, _, _, nw = _core.trainer_strategy_state(h, wbuf)
                    used = wbuf if int(nw) == len(y) else None
            return StepResult(loss, acc, lr, int(step), meta_loss,
                              used if used is not None else np.ones(len(y), dtype=np.float32),
                              diagnostics=StepDiagnostics.from_tuple(diag), raw={} if diagnostics else None)
        wout = np.empty(len(y), dtype=np.float32)
        cwout = (
            np.empty((len(y), self._model.num_classes), dtype=np.float32)
            if self._method.has_class_weights
            else None
        )
        names = RAW_ARRAYS.get(self._method.name, ()) if diagnostics else ()
        got: dict[str, np.ndarray] = {}
        with self._use("step") as h:
            if not names:
                loss, acc, lr, step, meta_loss, diag = _core.trainer_step_method(h, x, y, x_meta, y_meta, wout, cwout)
            else:
                # Recording is on for this one step only: off, a step copies nothing extra.
                _core.trainer_set_step_diagnostics(h, True)
                try:
                    loss, acc, lr, step, meta_loss, diag = _core.trainer_step_method(
                        h, x, y, x_meta, y_meta, wout, cwout)
                    for name in names:
                        length, rows = _core.trainer_step_diagnostics(h, name, None)
                        arr = np.empty(length, dtype=np.float32)
                        _core.trainer_step_diagnostics(h, name, arr)
                        got[name] = arr if length == rows else arr.reshape(rows, length // rows)
                finally:
                    _core.trainer_set_step_diagnostics(h, False)
        return StepResult(loss, acc, lr, int(step), meta_loss, wout, cwout,
                          diagnostics=StepDiagnostics.from_tuple(diag), raw=got if diagnostics else None)

    def weight_function(self, losses: Any) -> np.ndarray:
        """Evaluates the learned loss → weight function V of MW-Net or GDW.

        Args:
            losses: loss values (any shape), e.g. ``np.linspace(0, 10, 200)``.

        Returns:
            V(loss) for each value, float32, same shape.

        Raises:
            StateError: the method has no weighting function (only MW-Net and GDW do).
            NonFiniteError: a loss is NaN or infinite.
            ClosedError: the trainer was closed.
        """
        if self._handle is None:
            raise ClosedError("weight_function: the trainer was closed; create a new one")
        if not self._method.has_weight_function:
            raise StateError(f"weight_function: the {self._method.name!r} method has no weighting function "
                             "(MW-Net and GDW learn one)")
        arr = np.asarray(losses)
        if arr.dtype.kind not in "fiu":
            raise DTypeError(f"losses: expected real numbers, got dtype {arr.dtype}")
        flat = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)
        out = np.empty_like(flat)
        with self._use("weight_function") as h:
            _core.trainer_weight_function(h, flat, out)
        return out.reshape(arr.shape)

    @property
    def weight_net(self) -> WeightNet:
        """MW-Net's / GDW's weighting net V, read and set like any network: ``state_dict()``,
        ``load_state_dict(d)``, ``parameters()``, ``get_parameter(name)``, ``set_parameter(name, value)``
        with PyTorch's names and shapes for the official VNet (``linear1.weight`` (h, 1),
        ``linear1.bias`` (h,), ``linear2.weight`` (1, h), ``linear2.bias`` (1,)). Setting V keeps
        V's optimizer state (Adam moments); see :class:`~metaweight.trainer.WeightNet`.

        Raises:
            StateError: the method has no weighting net (only MW-Net and GDW do).
            ClosedError: the trainer was closed.
        """
        if self._handle is None:
            raise ClosedError("weight_net: the trainer was closed; create a new one")
        if not self._method.has_weight_function:
            raise StateError(f"weight_net: the {self._method.name!r} method has no weighting net "
                             "(MW-Net and GDW learn one)")
        return WeightNet(self)

    def _require_schedule(self, what: str) -> None:
        if self._provisional:
            s = self._schedule
            why = (
                "has positions in epochs"
                if s._uses_epochs() and self._steps_per_epoch is None
                else "has no total length (Cosine(total=None))"
            )
            raise StateError(
                f"{what}: the schedule {s!r} {why}, which only fit() can convert to steps; to train with "
                "step(), pass steps_per_epoch=... to Trainer, use unit='step', or give Cosine a total"
            )

    def step(
        self,
        x: Any,
        y: Any,
        *,
        sample_weights: Any = None,
        x_meta: Any = None,
        y_meta: Any = None,
        diagnostics: bool = False,
    ) -> StepResult:
        """Takes one training step (one optimizer update) on a batch.

        Args:
            x: features ``(N, *model.input_shape)``; float or integer dtype (converted to float32;
                non-contiguous arrays are copied).
            y: integer labels ``(N,)`` in ``[0, num_classes)``.
            sample_weights: optional non-negative per-example weights ``(N,)``: the loss becomes
                ``sum_i w_i l_i / N``.
            x_meta: the meta batch of meta-weighting methods; must be None for ``"erm"``.
            y_meta: its labels; must be None for ``"erm"``.
            diagnostics: also return the method's raw step arrays in :attr:`StepResult.raw`
                (L2RW's scores u, MW-Net's V outputs before and after V's update, GDW's g, ω and
                ω′; see :data:`RAW_ARRAYS`). Off (the default) nothing extra is copied; the step
                takes the same values either way.

        Returns:
            The :class:`StepResult` (loss and accuracy measured before the update).

        Raises:
            ShapeError: wrong rank or per-example shape, empty batch, or mismatched lengths.
            DTypeError: unsupported dtypes (e.g. float labels, bool or complex features).
            LabelError: a label outside ``[0, num_classes)``.
            NonFiniteError: NaN/inf in ``x`` or ``sample_weights``, or the loss or gradient became
                NaN/inf (the parameters are then left unchanged).
            InvalidArgumentError: negative sample weights, or a meta batch for ``"erm"``.
            StateError: the schedule is in epochs and the steps per epoch are unknown.
            ClosedError: the trainer was closed.
            BusyError: another thread is using this trainer or its network.
        """
        if self._handle is None:
            raise ClosedError("step: the trainer was closed; create a new one")
        self._require_schedule("step")
        diagnostics = as_bool(diagnostics, "diagnostics")
        net = self._model
        xa = as_features(x, "x", net.input_shape)
        ya = as_labels(y, "y", net.num_classes, n=len(xa))
        w = None
        if sample_weights is not None:
            if not self._method.supports_sample_weights:
                raise InvalidArgumentError(
                    f"sample_weights: the {self._method.name!r} method computes its own weights"
                )
            w = as_weights(sample_weights, "sample_weights", len(xa))
        xm, ym = self._meta_batch_arrays(x_meta, y_meta)
        return self._checked_step(xa, ya, w, xm, ym, "", diagnostics)

    def _checked_step(
        self,
        x: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray | None,
        x_meta: np.ndarray | None,
        y_meta: np.ndarray | None,
        where: str,
        diagnostics: bool = False,
    ) -> StepResult:
        """A native step applying the ``on_nonfinite`` policy (``where`` is added to messages)."""
        try:
            return self._raw_step(x, y, weights, x_meta, y_meta, diagnostics)
        except NonFiniteError as err:
            if self._on_nonfinite == "raise":
                if where:
                    raise NonFiniteError(f"{err} ({where}; try a lower learning rate)") from err
                raise
            step = self.step_count + 1
            reason = f"{err} ({where})" if where else str(err)
            self.skipped_steps.append(SkippedStep(step, reason))
            warnings.warn(f"step {step} skipped (on_nonfinite='skip'): {reason}", RuntimeWarning, stacklevel=3)
            n = len(y)
            return StepResult(math.nan, math.nan, self.learning_rate, step - 1, math.nan,
                              np.zeros(n, dtype=np.float32), None, skipped=True)

    def _meta_batch_arrays(self, x_meta: Any, y_meta: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self._method.needs_meta:
            if x_meta is not None or y_meta is not None:
                raise InvalidArgumentError(
                    f"x_meta, y_meta: the {self._method.name!r} method takes no meta batch; pass None "
                    "(or choose a meta-weighting method)"
                )
            return None, None
        if x_meta is None or y_meta is None:
            raise InvalidArgumentError(
                f"x_meta, y_meta: the {self._method.name!r} method needs a meta batch in every step"
            )
        net = self._model
        xm = as_features(x_meta, "x_meta", net.input_shape)
        ym = as_labels(y_meta, "y_meta", net.num_classes, n=len(xm), x_name="x_meta")
        return xm, ym

    def _permutation(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        with self._use("fit") as h:
            _core.trainer_permutation(h, out)
        return out

    @refuses_reentry("fit")
    def fit(
        self,
        x: Any,
        y: Any,
        *,
        epochs: int,
        batch_size: int = 100,
        x_val: Any = None,
        y_val: Any = None,
        meta: tuple[Any, Any] | None = None,
        meta_batch_size: int = 100,
        progress: bool = True,
        callbacks: Sequence[CallbackLike] | None = None,
        record_weights: bool = False,
        record_raw: bool | str = False,
        _plain: bool = False,
        _on_step: Callable[[np.ndarray, StepResult], None] | None = None,
    ) -> History:
        """Trains for a number of epochs over ``(x, y)``.

        Each epoch visits every example once in an order drawn from the trainer's random generator
        (so shuffling is reproducible and part of checkpoints), in ``ceil(N / batch_size)`` steps;
        the last batch is smaller when ``batch_size`` does not divide ``N`` (nothing is dropped).

        Args:
            x: training features ``(N, *model.input_shape)``.
            y: training labels ``(N,)``.
            epochs: number of epochs (>= 1).
            batch_size: examples per step.
            x_val: optional validation features, evaluated at the end of every epoch.
            y_val: validation labels (with ``x_val``).
            meta: the clean meta set ``(x_meta, y_meta)`` of meta-weighting methods; must be None
                for ``"erm"``.
            meta_batch_size: examples per meta batch (meta-weighting methods).
            progress: show progress: a tqdm bar per epoch when tqdm is installed, else one printed
                line per epoch. False prints nothing.
            callbacks: functions called as ``callback(trainer, record)`` after every epoch with its
                :class:`EpochRecord` (if one returns True, training stops after that epoch), and
                objects of the :class:`~metaweight.callbacks.Callback` protocol (``on_fit_start``,
                ``on_epoch_end``, ``on_fit_end``; e.g. the TensorBoard and MLflow callbacks of
                :mod:`metaweight.integrations`), in any mix.
            record_weights: keep the weight every training example received in each epoch
                (``EpochRecord.example_weights``, and ``class_weights`` for GDW).
            record_raw: keep the raw step arrays of ``step(..., diagnostics=True)``
                (:attr:`StepResult.raw`) in ``EpochRecord.raw``, aligned with ``x``: ``"last"``
                for the last epoch of this call only (its steps alone take the diagnostics; a
                callback stopping early leaves no record), ``True`` or ``"all"`` for every epoch.
                Memory: per recorded epoch, N floats (L2RW), 2N (MW-Net) or 3·N·C (GDW), as
                float32; the per-step arrays are not kept beyond that. False (default) records
                nothing and copies nothing.

        The data-level baselines act here: :class:`~metaweight.FineTune` trains on ``(x, y)`` and
        then on the meta set for its ``epochs`` (recorded as further epochs), and
        :class:`~metaweight.ClassBalancedSampling` visits the classes uniformly in every epoch.

        Returns:
            The :class:`History` of this call (one record per epoch). :attr:`history` accumulates
            the records of every call.

        Raises:
            ShapeError, DTypeError, LabelError, NonFiniteError: bad data (see :meth:`step`); or the
                loss diverged (NonFiniteError naming the epoch and batch).
            InvalidArgumentError: bad settings.
            ClosedError: the trainer was closed.
            BusyError: another thread is using this trainer or its network.
        """
        if self._handle is None:
            raise ClosedError("fit: the trainer was closed; create a new one")
        epochs = as_int(epochs, "epochs", minimum=1, maximum=2**31)
        batch_size = as_int(batch_size, "batch_size", minimum=1)
        progress = as_bool(progress, "progress")
        record_weights = as_bool(record_weights, "record_weights")
        if record_raw is True or record_raw == "all":
            raw_mode = "all"
        elif record_raw is False or record_raw is None:
            raw_mode = ""
        elif record_raw == "last":
            raw_mode = "last"
        else:
            raise InvalidArgumentError(
                f"record_raw: expected False, True, 'all' or 'last', got {record_raw!r}")
        net = self._model
        xa = as_features(x, "x", net.input_shape)
        ya = as_labels(y, "y", net.num_classes, n=len(xa))
        xv, yv = as_optional_split(x_val, y_val, "x_val", "y_val", net.input_shape, net.num_classes)
        xm = ym = None
        fine_tune = isinstance(self._method, FineTune) and not _plain
        if fine_tune:
            if meta is None:
                raise InvalidArgumentError("meta: the 'fine_tune' method fine-tunes on a meta set (x_meta, y_meta)")
            ft_x, ft_y = self._meta_set(meta)
        elif self._method.needs_meta:
            if meta is None:
                raise InvalidArgumentError(
                    f"meta: the {self._method.name!r} method needs a meta set (x_meta, y_meta)"
                )
            xm, ym = self._meta_set(meta)
            meta_batch_size = as_int(meta_batch_size, "meta_batch_size", minimum=1)
        elif meta is not None and not fine_tune:
            raise InvalidArgumentError(
                f"meta: the {self._method.name!r} method uses no meta set; pass meta=None "
                "(or choose a meta-weighting method)"
            )
        hooks = FitHooks(callbacks)
        cbs = hooks.epoch_functions
        record_weights = record_weights or hooks.needs_weights

        n = len(xa)
        spe = _steps_per_epoch(n, batch_size)
        before = len(self.history)
        hooks.start(self, FitConfig(
            epochs=epochs, fine_tune_epochs=int(getattr(self._method, "epochs", 0)) if fine_tune else 0,
            first_epoch=before + 1, batch_size=batch_size, steps_per_epoch=spe, num_train=n,
            num_val=0 if xv is None else len(xv),
            num_meta=len(ft_x) if fine_tune else (0 if xm is None else len(xm)),
            num_classes=net.num_classes, method=self._method.name, record_weights=record_weights), History())
        try:
            if fine_tune:
                run = self.fit(xa, ya, epochs=epochs, batch_size=batch_size, x_val=xv, y_val=yv,
                               progress=progress, callbacks=cbs, record_weights=record_weights,
                               _plain=True)
                ft_epochs = int(self._method.epochs)  # type: ignore[attr-defined]
                if ft_epochs > 0 and len(run) == epochs:
                    for record in self._fine_tune(ft_x, ft_y, ft_epochs, batch_size, xv, yv, progress, cbs):
                        run._append(record)
                hooks.end(self, run)
                return run
            self._prepare_fit(spe, epochs)
            self._last_spe = spe
            bar_cls = _tqdm() if progress else None
            run = History()
            monitor = CollapseMonitor(
                self._method.name, has_weight_net=self._method.has_weight_function,
                needs_meta=self._method.needs_meta, class_level=self._method.has_class_weights,
                window=max(50, spe), saturation_window=max(150, 3 * spe))
            first = len(self.history) + 1
            last = first + epochs - 1
            for e in range(epochs):
                epoch_no = first + e
                t0 = time.perf_counter()
                perm = self._permutation(n)
                if isinstance(self._method, ClassBalancedSampling):
                    perm = _class_balanced_order(perm, ya, net.num_classes)
                raw_on = raw_mode == "all" or (raw_mode == "last" and e == epochs - 1)
                raw_epoch: dict[str, np.ndarray] | None = {} if raw_on else None
                wsum = np.zeros(n, dtype=np.float64) if record_weights else None
                wcnt = np.zeros(n, dtype=np.int64) if record_weights else None
                cw = (
                    np.full((n, net.num_classes), np.nan, dtype=np.float32)
                    if record_weights and self._method.has_class_weights
                    else None
                )
                meta_iter = _MetaSampler(self, xm, ym, meta_batch_size) if xm is not None and ym is not None else None
                loss_sum = acc_sum = meta_sum = 0.0
                epoch_diag = EpochDiagnostics()
                seen = 0
                lr = 0.0
                bar = (
                    bar_cls(total=spe, desc=f"epoch {epoch_no}/{last}", unit="step", leave=True)
                    if bar_cls
                    else None
                )
                try:
                    for b in range(spe):
                        idx = perm[b * batch_size : (b + 1) * batch_size]
                        xb = np.take(xa, idx, axis=0)
                        yb = np.take(ya, idx)
                        mxb, myb = meta_iter.next() if meta_iter is not None else (None, None)
                        r = self._checked_step(xb, yb, None, mxb, myb, f"fit: epoch {epoch_no}, batch {b + 1}/{spe}",
                                               raw_on)
                        if raw_epoch is not None and r.raw:
                            for name, arr in r.raw.items():
                                if name not in raw_epoch:
                                    raw_epoch[name] = np.full((n, *arr.shape[1:]), np.nan, dtype=np.float32)
                                raw_epoch[name][idx] = arr
                        if r.skipped:
                            if bar is not None:
                                bar.update(1)
                            continue
                        k = len(idx)
                        epoch_diag.add(r.diagnostics)
                        if _on_step is not None:  # law.train's per-stage weight bookkeeping
                            _on_step(idx, r)
                        monitor.observe(r.step, r.diagnostics, k)
                        if wsum is not None and wcnt is not None and r.weights is not None:
                            np.add.at(wsum, idx, r.weights)
                            np.add.at(wcnt, idx, 1)
                            if cw is not None and r.class_weights is not None:
                                cw[idx] = r.class_weights
                        loss_sum += r.loss * k
                        acc_sum += r.accuracy * k
                        meta_sum += r.meta_loss * k
                        seen += k
                        lr = r.lr
                        if bar is not None:
                            bar.set_postfix(
                                loss=f"{loss_sum / seen:.4f}", acc=f"{acc_sum / seen:.4f}", refresh=False
                            )
                            bar.update(1)
                    val_loss = val_acc = None
                    if xv is not None and yv is not None:
                        ev = self._evaluate_arrays(xv, yv, 500)
                        val_loss, val_acc = ev["loss"], ev["accuracy"]
                    record = EpochRecord(
                        epoch=epoch_no,
                        step=self.step_count,
                        train_loss=loss_sum / (seen or math.nan),
                        train_accuracy=acc_sum / (seen or math.nan),
                        lr=lr,
                        time=time.perf_counter() - t0,
                        val_loss=val_loss,
                        val_accuracy=val_acc,
                        meta_loss=meta_sum / (seen or math.nan) if xm is not None else None,
                        example_weights=(
                            np.where(wcnt > 0, wsum / np.maximum(wcnt, 1), np.nan).astype(np.float32)
                            if wsum is not None and wcnt is not None
                            else None
                        ),
                        class_weights=cw,
                        **epoch_diag.means(),
                        raw=raw_epoch,
                    )
                    if bar is not None:
                        post = {"loss": f"{record.train_loss:.4f}", "acc": f"{record.train_accuracy:.4f}"}
                        if val_loss is not None and val_acc is not None:
                            post.update(val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}")
                        bar.set_postfix(post, refresh=True)
                finally:
                    if bar is not None:
                        bar.close()
                if progress and bar_cls is None:
                    print(_epoch_line(record, last), flush=True)
                self.history._append(record)
                run._append(record)
                stop = False
                for cb in cbs:
                    if cb(self, record) is True:
                        stop = True
                if stop:
                    break
            hooks.end(self, run)
            return run
        except BaseException as err:
            hooks.error(self, self.history[before:], err)
            raise

    def _fine_tune(
        self,
        x: np.ndarray,
        y: np.ndarray,
        epochs: int,
        batch_size: int,
        xv: np.ndarray | None,
        yv: np.ndarray | None,
        progress: bool,
        callbacks: list[Callback],
    ) -> History:
        """FineTune's second phase: a fresh optimizer of this trainer's kind at the method's
        constant rate over the meta set; the records continue this trainer's epoch and step count."""
        import dataclasses as _dc

        from .optim import Constant

        method = self._method
        lr = method.lr if method.lr is not None else self._optimizer.lr * 0.1  # type: ignore[attr-defined]
        bs = min(int(method.batch_size or batch_size), len(x))  # type: ignore[attr-defined]
        opt = _dc.replace(self._optimizer, lr=float(lr))  # type: ignore[type-var]
        epoch0 = len(self.history)
        step0 = self.step_count
        out = History()

        def shift(r: EpochRecord) -> EpochRecord:
            return _dc.replace(r, epoch=epoch0 + r.epoch, step=step0 + r.step)

        stop = {"now": False}

        def relay(_t: Any, r: EpochRecord) -> bool:
            rec = shift(r)
            self.history._append(rec)
            out._append(rec)
            for cb in callbacks:
                if cb(self, rec) is True:
                    stop["now"] = True
            return stop["now"]

        ft = Trainer(self._model, opt, Constant(), seed=self._seed, augment=self._augment)
        try:
            ft.fit(x, y, epochs=epochs, batch_size=bs, x_val=xv, y_val=yv, progress=progress,
                   callbacks=[relay])
        finally:
            ft.close()
        return out

    def _meta_set(self, meta: Any) -> tuple[np.ndarray, np.ndarray]:
        try:
            x_meta, y_meta = meta
        except (TypeError, ValueError):
            raise InvalidArgumentError("meta: expected a pair (x_meta, y_meta)") from None
        net = self._model
        xm = as_features(x_meta, "x_meta", net.input_shape)
        ym = as_labels(y_meta, "y_meta", net.num_classes, n=len(xm), x_name="x_meta")
        return xm, ym

    # -- evaluation -----------------------------------------------------------------------------------

    def logits(self, x: Any, *, batch_size: int = 1000) -> np.ndarray:
        """Eval-mode logits (batch norm uses running statistics, dropout is off).

        Args:
            x: features ``(N, *model.input_shape)``.
            batch_size: examples per native call (bounds memory; results depend on it only
                through floating-point rounding).

        Returns:
            float32 array ``(N, num_classes)``.

        Raises:
            ShapeError, DTypeError, NonFiniteError: bad ``x``.
            ClosedError: the trainer was closed.
        """
        batch_size = as_int(batch_size, "batch_size", minimum=1)
        xa = as_features(x, "x", self._model.input_shape)
        return self._logits_arrays(xa, batch_size)

    def _logits_arrays(self, xa: np.ndarray, batch_size: int) -> np.ndarray:
        n = len(xa)
        out = np.empty((n, self._model.num_classes), dtype=np.float32)
        for s in range(0, n, batch_size):
            with self._use("predict") as h:
                _core.trainer_predict(h, xa[s : s + batch_size], out[s : s + batch_size])
        return out

    def predict_proba(self, x: Any, *, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities (softmax of :meth:`logits`), float32 ``(N, num_classes)``.

        Raises:
            ShapeError, DTypeError, NonFiniteError: bad ``x``.
            ClosedError: the trainer was closed.
        """
        return _softmax(self.logits(x, batch_size=batch_size))

    def predict(self, x: Any, *, batch_size: int = 1000) -> np.ndarray:
        """Predicted labels (arg-max of :meth:`logits`), int64 ``(N,)``.

        Raises:
            ShapeError, DTypeError, NonFiniteError: bad ``x``.
            ClosedError: the trainer was closed.
        """
        classes: np.ndarray = np.argmax(self.logits(x, batch_size=batch_size), axis=1).astype(np.int64)
        return classes

    def losses(self, x: Any, y: Any, *, batch_size: int = 1000) -> np.ndarray:
        """Eval-mode per-example cross-entropy losses, float32 ``(N,)``. Nothing is updated.

        Raises:
            ShapeError, DTypeError, LabelError, NonFiniteError: bad ``x`` or ``y``.
            ClosedError: the trainer was closed.
        """
        batch_size = as_int(batch_size, "batch_size", minimum=1)
        net = self._model
        xa = as_features(x, "x", net.input_shape)
        ya = as_labels(y, "y", net.num_classes, n=len(xa))
        out = np.empty(len(xa), dtype=np.float32)
        for s in range(0, len(xa), batch_size):
            with self._use("losses") as h:
                _core.trainer_losses(
                    h, xa[s : s + batch_size], ya[s : s + batch_size], out[s : s + batch_size]
                )
        return out

    def evaluate(self, x: Any, y: Any, batch_size: int = 500) -> dict[str, float]:
        """Mean loss and accuracy in eval mode.

        Args:
            x: features ``(N, *model.input_shape)``.
            y: labels ``(N,)``.
            batch_size: examples per native call.

        Returns:
            ``{"loss": mean cross-entropy, "accuracy": fraction correct}``.

        Raises:
            ShapeError, DTypeError, LabelError, NonFiniteError: bad ``x`` or ``y``.
            ClosedError: the trainer was closed.
        """
        batch_size = as_int(batch_size, "batch_size", minimum=1)
        net = self._model
        xa = as_features(x, "x", net.input_shape)
        ya = as_labels(y, "y", net.num_classes, n=len(xa))
        return self._evaluate_arrays(xa, ya, batch_size)

    def _evaluate_arrays(self, xa: np.ndarray, ya: np.ndarray, batch_size: int) -> dict[str, float]:
        z = self._logits_arrays(xa, batch_size)
        loss = float(np.mean(_cross_entropy(z, ya)))
        acc = float(np.mean(np.argmax(z, axis=1) == ya))
        return {"loss": loss, "accuracy": acc}

    # -- checkpoints ----------------------------------------------------------------------------------

    def save(self, path: PathLike) -> None:
        """Writes a checkpoint: parameters, batch-norm statistics, optimizer state, the step count
        (schedule position) and the random generators' states.

        The file is written atomically (a temporary file renamed into place) with a checksum.
        The schedule, optimizer settings and :attr:`history` are not stored: resume by creating the
        same trainer and calling :meth:`load`.

        Args:
            path: file path (str or path-like); its directory must exist.

        Raises:
            CheckpointError: the file cannot be written.
            ClosedError: the trainer was closed.
        """
        p = as_path(path)
        with self._use("save") as h:
            _core.trainer_save(h, p)

    def load(self, path: PathLike) -> None:
        """Restores a checkpoint written by :meth:`save` into this trainer and its network.

        The file's format, checksum, architecture and optimizer kind are checked first; on any
        error nothing changes.

        Args:
            path: the checkpoint file.

        Raises:
            CheckpointError: the file is missing, unreadable, truncated or corrupted, not a
                regular file (a FIFO, device, directory or ``/proc`` file, refused without
                blocking), holds hostile values (NaN/inf, a negative Adam second moment, a step
                counter beyond 2**53), or was saved from a different architecture or optimizer
                kind. Nothing changes then.
            ClosedError: the trainer was closed.
        """
        p = as_path(path)
        with self._use("load") as h:
            _core.trainer_load(h, p)


class _MetaSampler:
    """Cycles through a meta set in shuffled meta batches (a fresh order each pass)."""

    def __init__(self, trainer: Trainer, x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
        self._trainer, self._x, self._y = trainer, x, y
        self._bs = min(batch_size, len(x))
        self._perm = trainer._permutation(len(x))
        self._pos = 0

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pos + self._bs > len(self._perm):
            self._perm = self._trainer._permutation(len(self._x))
            self._pos = 0
        idx = self._perm[self._pos : self._pos + self._bs]
        self._pos += self._bs
        return np.take(self._x, idx, axis=0), np.take(self._y, idx)


def _check_instance(value: Any, cls: type, name: str, example: str) -> None:
    if isinstance(value, type) and issubclass(value, cls):
        raise InvalidArgumentError(
            f"{name}: got the class {value.__name__}; pass an instance, e.g. {value.__name__}()"
        )
    if not isinstance(value, cls):
        raise InvalidArgumentError(f"{name}: expected {example}, got {type(value).__name__}")


def _tqdm() -> Callable[..., Any] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm  # type: ignore[no-any-return]


def _epoch_line(r: EpochRecord, last: int) -> str:
    s = f"epoch {r.epoch}/{last}  loss {r.train_loss:.4f}  acc {r.train_accuracy:.4f}"
    if r.val_loss is not None and r.val_accuracy is not None:
        s += f"  val_loss {r.val_loss:.4f}  val_acc {r.val_accuracy:.4f}"
    if r.meta_loss is not None:
        s += f"  meta_loss {r.meta_loss:.4f}"
    return s + f"  lr {r.lr:.4g}  {r.time:.1f}s"
