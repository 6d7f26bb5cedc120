"""A scikit-learn classifier that trains a metaweight network: :class:`MetaWeightClassifier`.

Import it from here (scikit-learn is needed only by this module, ``pip install metaweight[sklearn]``)::

    from metaweight.sklearn import MetaWeightClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), MetaWeightClassifier(method="gdw", epochs=100))
    clf.fit(X_train, y_train)                       # meta set carved from (X_train, y_train): see below
    clf.score(X_test, y_test)

    clf = MetaWeightClassifier(method="l2rw").fit(X_noisy, y_noisy, X_meta=X_clean, y_meta=y_clean)

The estimator follows scikit-learn's conventions (constructor parameters only stored, fitted
attributes ending in ``_``, ``get_params``/``set_params``/``clone``, pickling) and passes
``sklearn.utils.estimator_checks.check_estimator`` (``python/tests/test_sklearn.py`` lists the
checks it is run with).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from . import conditions
from . import set_threads as _set_threads
from .methods import ClassBalanced, FineTune, InverseFrequency, Method, resolve_method
from .models import Network, mlp
from .optim import SGD, Adam, Constant, Cosine, Optimizer, Schedule
from .trainer import History, Trainer

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sk_validate_data = None

__all__ = ["MetaWeightClassifier"]

#: A model builder: ``builder(n_features, n_classes, seed) -> Network``.
ModelBuilder = Callable[[int, int, int], Network]
MethodLike = Union[str, Method]
OptimizerLike = Union[str, Optimizer]
ScheduleLike = Union[str, Schedule, None]

#: The settings ``optimizer="sgd"`` / ``"adam"`` start from (``lr``, ``momentum``, ``weight_decay``
#: override them when not None). SGD's rate 0.02 with momentum 0.9 keeps L2RW stable on MLPs without
#: batch norm (README, "Choosing the defaults").
_BASE_OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": SGD(lr=0.02, momentum=0.9, weight_decay=5e-4),
    "adam": Adam(lr=1e-3),
}


def _validate(est: Any, X: Any, y: Any = "no_validation", *, reset: bool) -> Any:
    """scikit-learn's input validation (sets/checks ``n_features_in_`` and ``feature_names_in_``).

    ``y="no_validation"`` validates ``X`` alone; ``y=None`` (a missing target) raises.
    """
    kwargs: dict[str, Any] = {"dtype": [np.float64, np.float32], "reset": reset}
    if isinstance(y, str) and y == "no_validation":
        if _sk_validate_data is not None:
            return _sk_validate_data(est, X, **kwargs)
        return est._validate_data(X, **kwargs)  # pragma: no cover
    if _sk_validate_data is not None:
        return _sk_validate_data(est, X, y, **kwargs)
    return est._validate_data(X, y, **kwargs)  # pragma: no cover


def _as_float32(X: np.ndarray, name: str) -> np.ndarray:
    """Casts validated features to C-contiguous float32, refusing values beyond float32's range."""
    out = np.ascontiguousarray(X, dtype=np.float32)
    if out.size and not np.isfinite(out).all():
        raise ValueError(f"{name}: values beyond float32's range (|x| > 3.4e38) are not supported")
    return out


def _softmax64(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


class MetaWeightClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A scikit-learn classifier trained with a metaweight method (ERM, L2RW, MW-Net, GDW, baselines).

    The constructor only stores its arguments; everything is checked and built in :meth:`fit`,
    which creates a fresh network and :class:`~metaweight.Trainer` each time it is called.

    **The meta set.** L2RW, MW-Net and GDW (and the ``fine_tune`` baseline) need a small *clean*
    meta set. Pass it to :meth:`fit` as ``X_meta``/``y_meta`` whenever you have one. Without it,
    :meth:`fit` carves a class-balanced meta set out of the training data with a seeded split
    (:func:`metaweight.conditions.meta_split` with ``seed``): ``k`` examples of every class, where
    ``k = meta_per_class``, or ``max(1, floor(meta_fraction * n_samples / n_classes))`` when
    ``meta_fraction`` is set, capped at half of the smallest class (``floor(min_count / 2)``). Those
    examples are removed from the training set (``meta_indices_`` lists them). **This assumes the
    carved labels are clean**: if the training labels are noisy, so is the carved meta set, and the
    meta methods then learn to follow the noise; it exists so that the estimator works unchanged in
    ``cross_val_score``/``GridSearchCV`` and on data known to be mostly clean. Set both
    ``meta_per_class`` and ``meta_fraction`` to None to make a meta method without ``X_meta`` raise
    ``ValueError`` instead. Methods that use no meta set ignore ``X_meta``/``y_meta`` and carve
    nothing. In a ``Pipeline``, a meta set passed as ``pipe.fit(X, y, <step>__X_meta=...)``
    reaches this estimator *without* going through the pipeline's transformers: transform it
    yourself. ``GridSearchCV``/``cross_val_score`` pass it whole to every fold (scikit-learn splits
    only fit parameters with as many rows as ``X``).

    Args:
        method: a method name (``"erm"``, ``"l2rw"``, ``"mwnet"``, ``"gdw"``, ``"focal"``, ... — the
            README's Methods table) or a :class:`~metaweight.Method` object such as
            ``mw.GDW(lr=1e-2)``. ``class_balanced`` and ``inverse_frequency`` without
            ``class_counts`` get the training set's class counts.
        method_options: options applied to the method (``dataclasses.replace``), e.g.
            ``{"lr": 1e-2}`` for MW-Net's/GDW's weighting net; handy in a parameter grid next to
            ``method``. None: the method's defaults.
        model: ``"mlp"`` (``mw.mlp(n_features, hidden, n_classes, batch_norm, dropout, seed)``) or a
            callable ``model(n_features, n_classes, seed) -> mw.Network`` returning a network whose
            ``num_classes`` is ``n_classes`` and whose input shape has ``n_features`` values in all
            (an image shape ``(C, H, W)`` is fine: rows of ``X`` are reshaped to it). Use a
            module-level function (not a lambda) if the estimator is to be pickled or cloned
            across processes.
        hidden: hidden-layer widths of the ``"mlp"`` model (``()`` for logistic regression).
        batch_norm: batch normalisation after each hidden layer of the ``"mlp"`` model.
        dropout: dropout rate after each hidden layer of the ``"mlp"`` model.
        optimizer: ``"sgd"`` (``SGD(lr=0.02, momentum=0.9, weight_decay=5e-4)``), ``"adam"``
            (``Adam(lr=1e-3)``) or an :class:`~metaweight.SGD`/:class:`~metaweight.Adam` object.
        lr: learning rate; None keeps the optimizer's.
        momentum: SGD momentum; None keeps the optimizer's (must be None for Adam).
        weight_decay: weight decay; None keeps the optimizer's.
        schedule: None or ``"constant"`` (constant rate), ``"cosine"`` (cosine decay to 0 over the
            run) or a :class:`~metaweight.Schedule` object (positions in epochs by default).
        epochs: training epochs over the (remaining) training set.
        batch_size: training examples per step.
        meta_batch_size: meta examples per meta step (meta methods).
        meta_per_class: meta examples carved per class when a meta method gets no ``X_meta``
            (see above).
        meta_fraction: if not None, carve ``floor(meta_fraction * n_samples / n_classes)`` (at
            least 1) per class instead of ``meta_per_class``; in (0, 1).
        seed: seed of the network's initialisation, the trainer (shuffling, dropout, the method's
            randomness) and the meta split. The same seed and thread count give the same model.
        threads: if not None, ``metaweight.set_threads(threads)`` before training (process-wide:
            it also sets OpenBLAS's thread count).
        verbose: show per-epoch progress (a tqdm bar when tqdm is installed).

    Attributes:
        classes_: the class labels (sorted, any values ``numpy.unique`` orders: ints, strings, ...).
        n_features_in_: number of features seen in :meth:`fit`.
        feature_names_in_: column names, when ``X`` was a pandas DataFrame with string column names.
        trainer_: the fitted :class:`~metaweight.Trainer` (its ``model`` is the network; e.g.
            ``trainer_.weight_function(losses)`` for MW-Net/GDW).
        history_: the :class:`~metaweight.History` of the fit (one record per epoch, with each
            epoch's per-example weights in ``example_weights``, aligned with the training rows
            that were not carved into the meta set).
        example_weights_: float32 ``(n_samples,)`` aligned with ``X``: each example's weight as the
            method gave it, averaged first within an epoch and then **over all epochs** (1 for plain
            ERM; L2RW's weights sum to 1 per batch; MW-Net/GDW: V's outputs). NaN for rows carved
            into the meta set (and for rows a sampling baseline never visited).
        meta_indices_: int64 indices of the rows of ``X`` carved into the meta set (empty when a
            meta set was given or the method needs none).
    """

    def __init__(
        self,
        method: MethodLike = "erm",
        *,
        method_options: Mapping[str, Any] | None = None,
        model: str | ModelBuilder = "mlp",
        hidden: Sequence[int] = (100,),
        batch_norm: bool = False,
        dropout: float = 0.0,
        optimizer: OptimizerLike = "sgd",
        lr: float | None = None,
        momentum: float | None = None,
        weight_decay: float | None = None,
        schedule: ScheduleLike = None,
        epochs: int = 100,
        batch_size: int = 100,
        meta_batch_size: int = 100,
        meta_per_class: int | None = 10,
        meta_fraction: float | None = None,
        seed: int = 0,
        threads: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.method = method
        self.method_options = method_options
        self.model = model
        self.hidden = hidden
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.epochs = epochs
        self.batch_size = batch_size
        self.meta_batch_size = meta_batch_size
        self.meta_per_class = meta_per_class
        self.meta_fraction = meta_fraction
        self.seed = seed
        self.threads = threads
        self.verbose = verbose

    # -- resolving the settings ------------------------------------------------------------------------

    def _resolve_method(self, class_counts: np.ndarray) -> Method:
        method = resolve_method(self.method)
        if self.method_options:
            try:
                method = dataclasses.replace(method, **dict(self.method_options))
            except TypeError as e:
                raise ValueError(f"method_options: {e} (method {method.name!r})") from None
        if isinstance(method, (ClassBalanced, InverseFrequency)) and method.class_counts is None:
            method = dataclasses.replace(method, class_counts=tuple(int(c) for c in class_counts))
        method.spec()  # validates the options
        return method

    def _resolve_optimizer(self) -> Optimizer:
        opt = self.optimizer
        if isinstance(opt, str):
            base = _BASE_OPTIMIZERS.get(opt.strip().lower())
            if base is None:
                raise ValueError(f"optimizer: expected 'sgd', 'adam' or an SGD/Adam object, got {opt!r}")
        elif isinstance(opt, Optimizer):
            base = opt
        else:
            raise ValueError(f"optimizer: expected 'sgd', 'adam' or an SGD/Adam object, got {type(opt).__name__}")
        changes: dict[str, Any] = {}
        if self.lr is not None:
            changes["lr"] = self.lr
        if self.momentum is not None:
            if not isinstance(base, SGD):
                raise ValueError(f"momentum: only SGD has momentum; got momentum={self.momentum!r} with Adam")
            changes["momentum"] = self.momentum
        if self.weight_decay is not None:
            changes["weight_decay"] = self.weight_decay
        out: Optimizer = dataclasses.replace(base, **changes) if changes else base  # type: ignore[type-var]
        return out

    def _resolve_schedule(self) -> Schedule:
        s = self.schedule
        if s is None or (isinstance(s, str) and s.strip().lower() == "constant"):
            return Constant()
        if isinstance(s, str) and s.strip().lower() == "cosine":
            return Cosine()
        if isinstance(s, Schedule):
            return s
        raise ValueError(f"schedule: expected None, 'constant', 'cosine' or a Schedule object, got {s!r}")

    def _build_network(self, n_features: int, n_classes: int) -> Network:
        if isinstance(self.model, str):
            if self.model.strip().lower() != "mlp":
                raise ValueError(f"model: expected 'mlp' or a callable (n_features, n_classes, seed) -> Network, "
                                 f"got {self.model!r}")
            return mlp(n_features, hidden=self.hidden, num_classes=n_classes, batch_norm=self.batch_norm,
                       dropout=self.dropout, seed=self.seed)
        if not callable(self.model):
            raise ValueError(f"model: expected 'mlp' or a callable (n_features, n_classes, seed) -> Network, "
                             f"got {type(self.model).__name__}")
        net = self.model(n_features, n_classes, self.seed)
        if not isinstance(net, Network):
            raise ValueError(f"model: the callable must return a metaweight Network, got {type(net).__name__}")
        if net.num_classes != n_classes:
            raise ValueError(f"model: the network has {net.num_classes} outputs but y has {n_classes} classes")
        if math.prod(net.input_shape) != n_features:
            raise ValueError(f"model: the network takes inputs of shape {net.input_shape} "
                             f"({math.prod(net.input_shape)} values) but X has {n_features} features")
        return net

    def _carve_meta(self, y_enc: np.ndarray, n_classes: int, method: Method) -> np.ndarray:
        """Indices of a class-balanced meta set drawn from the training rows (see the class doc)."""
        n = len(y_enc)
        if self.meta_fraction is not None:
            frac = float(self.meta_fraction)
            if not 0.0 < frac < 1.0:
                raise ValueError(f"meta_fraction: expected a value in (0, 1) or None, got {self.meta_fraction!r}")
            k = max(1, math.floor(frac * n / n_classes))
        elif self.meta_per_class is not None:
            k = int(self.meta_per_class)
            if k < 1 or k != self.meta_per_class:
                raise ValueError(f"meta_per_class: expected an integer >= 1 or None, got {self.meta_per_class!r}")
        else:
            raise ValueError(
                f"the {method.name!r} method needs a clean meta set: pass X_meta and y_meta to fit "
                "(or set meta_per_class / meta_fraction to carve one from the training data)"
            )
        counts = np.bincount(y_enc, minlength=n_classes)
        k = min(k, int(counts.min()) // 2)
        if k < 1:
            smallest = self.classes_[int(np.argmin(counts))]
            raise ValueError(
                f"cannot carve a class-balanced meta set for the {method.name!r} method: class {smallest!r} "
                f"has {int(counts.min())} example(s) (at least 2 per class needed); pass X_meta and y_meta"
            )
        split = conditions.meta_split(y_enc, per_class=k, num_classes=n_classes, seed=int(self.seed))
        meta: np.ndarray = split.meta_indices
        return meta

    def _encode_meta_labels(self, y_meta: Any, n: int) -> np.ndarray:
        ym = column_or_1d(y_meta, warn=True)
        if len(ym) != n:
            raise ValueError(f"y_meta: expected {n} labels (one per row of X_meta), got {len(ym)}")
        try:
            idx = np.searchsorted(self.classes_, ym)
            ok = (idx < len(self.classes_)) & (self.classes_[np.minimum(idx, len(self.classes_) - 1)] == ym)
        except TypeError:
            ok = np.zeros(len(ym), dtype=bool)
            idx = np.zeros(len(ym), dtype=np.intp)
        if not np.all(ok):
            bad = ym[~np.asarray(ok, dtype=bool)][:5]
            raise ValueError(f"y_meta: labels {list(bad)!r} are not among the training classes {list(self.classes_)!r}")
        out: np.ndarray = idx.astype(np.int64)
        return out

    def _shape(self, X: np.ndarray) -> np.ndarray:
        shape = self.trainer_.model.input_shape
        out: np.ndarray = X.reshape((len(X), *shape)) if len(shape) > 1 else X
        return out

    # -- fitting -----------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any, *, X_meta: Any = None, y_meta: Any = None) -> MetaWeightClassifier:
        """Builds a fresh network and trainer and trains them on ``(X, y)``.

        Args:
            X: features, array-like ``(n_samples, n_features)`` (a pandas DataFrame sets
                ``feature_names_in_``); cast to float32.
            y: labels ``(n_samples,)`` of any values ``numpy.unique`` can sort (at least 2 classes).
            X_meta: the clean meta set's features (meta methods); None carves one from ``(X, y)``
                as described in the class documentation. Ignored by methods without a meta set.
            y_meta: the meta set's labels, each one of the classes in ``y``.

        Returns:
            self.

        Raises:
            ValueError: bad data (NaN/inf, sparse or non-numeric ``X``, one class only, regression
                targets, meta labels not in ``y``, too few examples to carve a meta set) or bad
                settings (metaweight's ``InvalidArgumentError`` is a ``ValueError``).
            metaweight.NonFiniteError: training diverged (a ``FloatingPointError``).
        """
        X, y = _validate(self, X, y, reset=True)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        y_enc = np.asarray(y_enc, dtype=np.int64).reshape(-1)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                "Classifier can't train when only one class is present: y has one class "
                f"({self.classes_[0]!r}); metaweight needs at least 2"
            )
        Xf = _as_float32(X, "X")
        counts = np.bincount(y_enc, minlength=n_classes)
        method = self._resolve_method(counts)
        optimizer = self._resolve_optimizer()
        schedule = self._resolve_schedule()
        if self.threads is not None:
            _set_threads(self.threads)
        needs_meta = method.needs_meta or isinstance(method, FineTune)
        if (X_meta is None) != (y_meta is None):
            raise ValueError("X_meta and y_meta: pass both or neither")

        meta_idx = np.empty(0, dtype=np.int64)
        train_idx = np.arange(len(y_enc), dtype=np.int64)
        meta: tuple[np.ndarray, np.ndarray] | None = None
        if needs_meta:
            if X_meta is not None:
                xm = check_array(X_meta, dtype=[np.float64, np.float32])
                if xm.shape[1] != self.n_features_in_:
                    raise ValueError(f"X_meta: expected {self.n_features_in_} features (as X), got {xm.shape[1]}")
                meta = (_as_float32(xm, "X_meta"), self._encode_meta_labels(y_meta, len(xm)))
            else:
                meta_idx = self._carve_meta(y_enc, n_classes, method)
                train_idx = np.setdiff1d(train_idx, meta_idx)
                meta = (Xf[meta_idx], y_enc[meta_idx])

        net = self._build_network(self.n_features_in_, n_classes)
        try:
            trainer = Trainer(net, optimizer, schedule, method=method, seed=int(self.seed))
        except BaseException:
            net.close()
            raise
        self.trainer_ = trainer
        if meta is not None:
            meta = (self._shape(meta[0]), meta[1])
        history = trainer.fit(
            self._shape(Xf[train_idx]), y_enc[train_idx], epochs=self.epochs, batch_size=self.batch_size,
            meta=meta, meta_batch_size=self.meta_batch_size, progress=bool(self.verbose),
            record_weights=True,
        )
        self.history_: History = history
        self.meta_indices_ = meta_idx
        self.example_weights_ = self._mean_weights(history, train_idx, len(y_enc))
        return self

    @staticmethod
    def _mean_weights(history: History, train_idx: np.ndarray, n: int) -> np.ndarray:
        per_epoch = [r.example_weights for r in history
                     if r.example_weights is not None and len(r.example_weights) == len(train_idx)]
        out = np.full(n, np.nan, dtype=np.float32)
        if per_epoch:
            stacked = np.stack(per_epoch).astype(np.float64)
            visited = np.isfinite(stacked)
            total = np.where(visited, stacked, 0.0).sum(axis=0)
            count = visited.sum(axis=0)
            out[train_idx] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return out

    # -- prediction --------------------------------------------------------------------------------------

    def _logits(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "trainer_")
        Xv = _validate(self, X, reset=False)
        z: np.ndarray = self.trainer_.logits(self._shape(_as_float32(Xv, "X"))).astype(np.float64)
        return z

    def decision_function(self, X: Any) -> np.ndarray:
        """The network's logits (eval mode: batch norm with running statistics, dropout off).

        Args:
            X: features ``(n_samples, n_features)``.

        Returns:
            float64 ``(n_samples, n_classes)`` logits; for two classes, scikit-learn's binary
            convention: ``(n_samples,)``, the second class's logit minus the first's (> 0 means
            ``classes_[1]``).

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
            ValueError: bad ``X`` (wrong feature count, NaN/inf, ...).
        """
        z = self._logits(X)
        if z.shape[1] == 2:
            out: np.ndarray = z[:, 1] - z[:, 0]
            return out
        return z

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities: the softmax of the logits, in the order of ``classes_``.

        Args:
            X: features ``(n_samples, n_features)``.

        Returns:
            float64 ``(n_samples, n_classes)``, rows summing to 1.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
            ValueError: bad ``X``.
        """
        return _softmax64(self._logits(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba` (computed stably from the logits).

        Args:
            X: features ``(n_samples, n_features)``.

        Returns:
            float64 ``(n_samples, n_classes)``.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
            ValueError: bad ``X``.
        """
        z = self._logits(X)
        z = z - z.max(axis=1, keepdims=True)
        out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (the arg-max of the logits), values of ``classes_``.

        Args:
            X: features ``(n_samples, n_features)``.

        Returns:
            ``(n_samples,)`` labels with ``classes_``'s dtype.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
            ValueError: bad ``X``.
        """
        z = self._logits(X)
        out: np.ndarray = self.classes_[np.argmax(z, axis=1)]
        return out

    # ``score`` (mean accuracy) comes from ClassifierMixin.

    # -- pickling through a checkpoint --------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """The estimator's state; a fitted trainer travels as a checkpoint's bytes.

        Returns:
            A picklable dict.

        Raises:
            metaweight.CheckpointError: the checkpoint could not be written to a temporary file.
        """
        state = dict(super().__getstate__())
        trainer: Trainer | None = state.pop("trainer_", None)
        if trainer is not None:
            net = trainer.model
            with tempfile.TemporaryDirectory(prefix="metaweight-pickle-") as tmp:
                path = os.path.join(tmp, "trainer.ckpt")
                trainer.save(path)
                with open(path, "rb") as f:
                    blob = f.read()
            state["_trainer_state"] = {
                "checkpoint": blob,
                "spec": net.spec,
                "input_shape": tuple(net.input_shape),
                "net_seed": net.seed,
                "optimizer": trainer.optimizer,
                "schedule": trainer.schedule,
                "method": trainer.method,
                "seed": trainer.seed,
                "steps_per_epoch": trainer.steps_per_epoch,
                "history": trainer.history,
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restores the state from :meth:`__getstate__`, rebuilding the network and trainer.

        Args:
            state: the dict :meth:`__getstate__` returned.

        Raises:
            metaweight.CheckpointError: the checkpoint bytes are corrupt.
        """
        state = dict(state)
        saved = state.pop("_trainer_state", None)
        super().__setstate__(state)
        if saved is None:
            return
        net = Network(saved["spec"], saved["input_shape"], saved["net_seed"])
        trainer = Trainer(net, saved["optimizer"], saved["schedule"], method=saved["method"],
                          seed=saved["seed"], steps_per_epoch=saved["steps_per_epoch"])
        try:
            with tempfile.TemporaryDirectory(prefix="metaweight-pickle-") as tmp:
                path = os.path.join(tmp, "trainer.ckpt")
                with open(path, "wb") as f:
                    f.write(saved["checkpoint"])
                trainer.load(path)
        except BaseException:
            trainer.close()
            net.close()
            raise
        trainer.history = saved["history"]
        self.trainer_ = trainer
