"""The one training loop, :meth:`Trainer.fit <metaweight.Trainer.fit>` (epochs, batches, the
meta sampler, validation, callbacks, collapse monitoring, FineTune's second phase), kept apart from
the :class:`~metaweight.Trainer` class that binds it as its ``fit`` method."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ._history import EpochRecord, History, StepResult
from ._validate import as_bool, as_features, as_int, as_labels, as_optional_split
from .callbacks import CallbackLike, FitConfig, FitHooks
from .errors import ClosedError, InvalidArgumentError
from .methods import ClassBalancedSampling, FineTune
from .monitor import CollapseMonitor, EpochDiagnostics
from .optim import _steps_per_epoch

if TYPE_CHECKING:
    from .trainer import Trainer

Callback = Callable[["Trainer", "EpochRecord"], Any]


def _trainer_module() -> Any:
    """:mod:`metaweight.trainer`, where ``fit`` looks up the progress bar (``_tqdm``)."""
    from . import trainer

    return trainer


def fit(
    self: Trainer,
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
        bar_cls = _trainer_module()._tqdm() if progress else None
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


def fine_tune(
    self: Trainer,
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

    from .trainer import Trainer

    ft = Trainer(self._model, opt, Constant(), seed=self._seed, augment=self._augment)
    try:
        ft.fit(x, y, epochs=epochs, batch_size=bs, x_val=xv, y_val=yv, progress=progress,
               callbacks=[relay])
    finally:
        ft.close()
    return out

def meta_set(self: Trainer, meta: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        x_meta, y_meta = meta
    except (TypeError, ValueError):
        raise InvalidArgumentError("meta: expected a pair (x_meta, y_meta)") from None
    net = self._model
    xm = as_features(x_meta, "x_meta", net.input_shape)
    ym = as_labels(y_meta, "y_meta", net.num_classes, n=len(xm), x_name="x_meta")
    return xm, ym


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


def _epoch_line(r: EpochRecord, last: int) -> str:
    s = f"epoch {r.epoch}/{last}  loss {r.train_loss:.4f}  acc {r.train_accuracy:.4f}"
    if r.val_loss is not None and r.val_accuracy is not None:
        s += f"  val_loss {r.val_loss:.4f}  val_acc {r.val_accuracy:.4f}"
    if r.meta_loss is not None:
        s += f"  meta_loss {r.meta_loss:.4f}"
    return s + f"  lr {r.lr:.4g}  {r.time:.1f}s"
