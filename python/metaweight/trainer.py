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
import functools
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from . import _core, _fit
from ._handle import NativeHandle, refuses_reentry
from ._history import EpochRecord, History, SkippedStep, StepResult
from ._validate import as_bool, as_features, as_int, as_labels, as_path, as_weights
from ._weight_net import WeightNet
from .errors import (
    ClosedError,
    DTypeError,
    InvalidArgumentError,
    NonFiniteError,
    StateError,
)
from .methods import Method, resolve_method
from .models import Network
from .monitor import StepDiagnostics
from .optim import SGD, Constant, Optimizer, Schedule


def _closed_trainer(what: str) -> ClosedError:
    """The ClosedError for ``what`` on a closed trainer."""
    return ClosedError(f"{what}: the trainer was closed; create a new one")


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

    def _use(self, what: str) -> contextlib.AbstractContextManager[int]:
        """Holds the trainer (and its network) for one native call and gives the trainer's handle.

        The network's lock is released in C (:class:`metaweight._core.Hold`), so an interrupt cannot
        leave it held.
        """
        if self._handle is None:
            raise _closed_trainer(what)
        model = self._model
        return _core.Hold(
            model._lock,
            functools.partial(model._busy_error, f"trainer.{what}"),
            self,
            functools.partial(_closed_trainer, what),
        )

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
        """One native step (one C call, ``mw_trainer_step``) on converted arrays; the core checks
        their values (``diagnostics``: also the method's raw arrays)."""
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
                loss, acc, lr, step, meta_loss, diag = _core.trainer_step(
                    h, x, y, weights, x_meta, y_meta, wout, cwout
                )
            else:
                # Recording is on for this one step only: off, a step copies nothing extra.
                _core.trainer_set_step_diagnostics(h, True)
                try:
                    loss, acc, lr, step, meta_loss, diag = _core.trainer_step(
                        h, x, y, weights, x_meta, y_meta, wout, cwout
                    )
                    for name in names:
                        length, rows = _core.trainer_step_diagnostics(h, name, None)
                        arr = np.empty(length, dtype=np.float32)
                        _core.trainer_step_diagnostics(h, name, arr)
                        got[name] = arr if length == rows else arr.reshape(rows, length // rows)
                finally:
                    _core.trainer_set_step_diagnostics(h, False)
        return StepResult(
            loss,
            acc,
            lr,
            int(step),
            meta_loss,
            wout,
            cwout,
            diagnostics=StepDiagnostics.from_tuple(diag),
            raw=got if diagnostics else None,
        )

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
            raise StateError(
                f"weight_function: the {self._method.name!r} method has no weighting function "
                "(MW-Net and GDW learn one)"
            )
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
            raise StateError(
                f"weight_net: the {self._method.name!r} method has no weighting net "
                "(MW-Net and GDW learn one)"
            )
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
        # Conversion only (dtype, contiguity, shape against the model); the values (NaN/inf, label
        # range, negative weights) and the method's rules (meta batch, sample weights) are checked
        # once, by the core, in the step's one C call.
        net = self._model
        xa = as_features(x, "x", net.input_shape, check_values=False)
        ya = as_labels(y, "y", n=len(xa))
        w = (
            None
            if sample_weights is None
            else as_weights(sample_weights, "sample_weights", len(xa), check_values=False)
        )
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
            warnings.warn(
                f"step {step} skipped (on_nonfinite='skip'): {reason}", RuntimeWarning, stacklevel=3
            )
            n = len(y)
            return StepResult(
                math.nan,
                math.nan,
                self.learning_rate,
                step - 1,
                math.nan,
                np.zeros(n, dtype=np.float32),
                None,
                skipped=True,
            )

    def _meta_batch_arrays(self, x_meta: Any, y_meta: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The meta batch converted (whether the method takes one is the core's rule)."""
        net = self._model
        xm = None if x_meta is None else as_features(x_meta, "x_meta", net.input_shape, check_values=False)
        ym = (
            None
            if y_meta is None
            else as_labels(y_meta, "y_meta", n=None if xm is None else len(xm), x_name="x_meta")
        )
        return xm, ym

    fit = refuses_reentry("fit")(_fit.fit)
    _fine_tune = _fit.fine_tune
    _meta_set = _fit.meta_set

    def _permutation(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        with self._use("fit") as h:
            _core.trainer_permutation(h, out)
        return out

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
