"""Learned LAW strategies: :class:`Strategy` (apply, attach to a trainer, save/load) and
:func:`train` (a network trained with a strategy, or unweighted, through ``Trainer.fit``)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from ._handle import NativeHandle
from ._law_common import DENSITIES, LABEL_ENCODINGS, PathLike, as_mask, check_trainer, config_class
from ._law_logs import roc_auc
from ._validate import (
    as_bool,
    as_features,
    as_float,
    as_int,
    as_labels,
    as_optional_split,
    as_path,
    fmt_shape,
)
from .callbacks import FitHooks
from .errors import ClosedError, InvalidArgumentError, ShapeError, StateError

if TYPE_CHECKING:
    from .law import LAWConfig


class Strategy(NativeHandle):
    """A learned LAW weighting strategy: the actor μ, its stage embedding and the settings needed to
    apply it (number of stages, warm-up stages, feature encoding, state smoothing). Applying it is
    deterministic (no exploration noise).

    Get one from :attr:`SearchResult.strategy`, :meth:`LAWSearch.strategy` or :meth:`load`.
    Strategy files are metaweight checkpoints (atomic write, CRC-32, format version).
    """

    _noun = "strategy"
    _copy_advice = "use save() and Strategy.load()"

    def __init__(self, _handle: int) -> None:
        if not isinstance(_handle, int) or isinstance(_handle, bool):
            raise InvalidArgumentError("Strategy: use Strategy.load(path) or LAWSearch.strategy()")
        self._handle = _handle
        stages, classes, action_dim, warmup, enc, dens = _core.strategy_info(_handle)
        self._stages = int(stages)
        self._classes = int(classes)
        self._action_dim = int(action_dim)
        self._warmup = int(warmup)
        self._label_encoding = LABEL_ENCODINGS[int(enc)]
        self._density = DENSITIES[int(dens)]
        self._config_spec = str(_core.strategy_config(_handle))

    # -- lifetime

    @classmethod
    def load(cls, path: PathLike) -> Strategy:
        """Reads a strategy file.

        Raises:
            CheckpointError: missing, truncated or corrupt file, or not a LAW strategy.
        """
        return cls(_core.strategy_load(as_path(path)))

    def save(self, path: PathLike) -> None:
        """Writes the strategy atomically (temporary file, fsync, rename).

        Raises:
            CheckpointError: the file cannot be written.
        """
        _core.strategy_save(self._use("save"), as_path(path))

    def _free(self, handle: int) -> None:
        _core.strategy_free(handle)

    def _use(self, what: str) -> int:
        if self._handle is None:
            raise ClosedError(f"{what}: the strategy was closed")
        return self._handle

    # -- description

    @property
    def stages(self) -> int:
        """N′."""
        return self._stages

    @property
    def num_classes(self) -> int:
        """Classes of the task it was learned on (networks it weights must have as many)."""
        return self._classes

    @property
    def action_dim(self) -> int:
        """Size of (θ, b): the number of features plus one."""
        return self._action_dim

    @property
    def warmup_stages(self) -> int:
        """Stages trained unweighted at the start of a run."""
        return self._warmup

    @property
    def label_encoding(self) -> str:
        """``"onehot"`` or ``"scalar"``."""
        return self._label_encoding

    @property
    def density(self) -> str:
        """``"cosine"`` or ``"dot"``."""
        return self._density

    @property
    def config(self) -> LAWConfig:
        """The configuration of the search it came from (its classifier settings are the defaults of
        :meth:`train`)."""
        return config_class().from_spec(self._config_spec)

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"{self._stages} stages, {self._classes} classes"
        return f"Strategy({state}, label_encoding={self._label_encoding!r}, warmup_stages={self._warmup})"

    # -- use

    def action(self, stage: int, loss_smooth: float = 1.0, acc_smooth: float = 0.5) -> np.ndarray:
        """θ_T = μ(s_T): ``[θ_loss, θ_entropy, θ_density, θ_label..., b]`` for a state.

        Args:
            stage: stage index in ``[0, stages)``.
            loss_smooth: smoothed training loss divided by ln C (1 = uniform prediction).
            acc_smooth: smoothed validation accuracy in [0, 1].
        """
        stage = as_int(stage, "stage", minimum=0, maximum=self._stages - 1)
        out = np.zeros(self._action_dim, dtype=np.float32)
        _core.strategy_action(
            self._use("action"),
            stage,
            as_float(loss_smooth, "loss_smooth"),
            as_float(acc_smooth, "acc_smooth"),
            out,
        )
        return out

    def weights(
        self, logits: Any, labels: Any, stage: int, loss_smooth: float = 1.0, acc_smooth: float = 0.5
    ) -> np.ndarray:
        """Weights K of one batch from its logits ``(N, C)`` and labels (features are standardised
        over the batch, as in training; all ones in the warm-up stages)."""
        lg = as_features(logits, "logits")
        if lg.ndim != 2 or lg.shape[1] != self._classes:
            raise ShapeError(f"logits: expected shape (N, {self._classes}), got {fmt_shape(lg.shape)}")
        y = as_labels(labels, "labels", self._classes, n=len(lg), x_name="logits")
        stage = as_int(stage, "stage", minimum=0, maximum=self._stages - 1)
        out = np.zeros(len(lg), dtype=np.float32)
        _core.strategy_weights(
            self._use("weights"),
            stage,
            as_float(loss_smooth, "loss_smooth"),
            as_float(acc_smooth, "acc_smooth"),
            lg,
            y,
            out,
        )
        return out

    def attach(self, trainer: Any, total_steps: int, x_val: Any = None, y_val: Any = None) -> None:
        """Makes a :class:`~metaweight.Trainer` weight every ERM step with this strategy.

        The run of ``total_steps`` optimizer steps (counted from the trainer's current step) is
        split into the strategy's stages; the state uses ``(x_val, y_val)`` (or, without them, the
        mean training-batch accuracy). Steps with explicit ``sample_weights`` are not weighted.
        :meth:`detach` removes it.

        Raises:
            StateError: the trainer's schedule is not resolved yet (an epoch-based schedule before
                ``fit``: pass ``steps_per_epoch`` to the Trainer) or it is not an ERM trainer.
            InvalidArgumentError: a class-count mismatch or bad validation data.
        """
        h = self._use("attach")
        check_trainer(trainer, "attach")
        total = as_int(total_steps, "total_steps", minimum=1, maximum=2**48)
        if getattr(trainer, "_provisional", False):
            raise StateError(
                "attach: the trainer's schedule is in epochs and not resolved yet; pass steps_per_epoch=... "
                "to the Trainer (or use unit='step') before attaching a strategy"
            )
        method = getattr(trainer, "method", None)
        if method is not None and getattr(method, "name", "erm") != "erm":
            raise StateError(f"attach: strategies weight ERM steps; the trainer uses {method.name!r}")
        model = trainer.model
        xv, yv = as_optional_split(x_val, y_val, "x_val", "y_val", model.input_shape, model.num_classes)
        if model.num_classes != self._classes:
            raise InvalidArgumentError(
                f"attach: the strategy was learned for {self._classes} classes; the network has {model.num_classes}"
            )
        if int(trainer.step_count) != 0:
            raise StateError(
                f"attach: the trainer has already taken {int(trainer.step_count)} steps; the strategy's stages "
                "count from step 0, so attach it to a fresh trainer"
            )
        with trainer._use("attach_strategy") as th:
            _core.trainer_set_strategy(th, h, total, xv, yv)
        trainer._strategy = self

    @staticmethod
    def detach(trainer: Any) -> None:
        """Removes a strategy from a trainer (its steps are unweighted again)."""
        check_trainer(trainer, "detach")
        with trainer._use("detach_strategy") as th:
            _core.trainer_set_strategy(th, 0, 1, None, None)
        trainer._strategy = None

    def train(self, model: Any, x: Any, y: Any, **kwargs: Any) -> StrategyRun:
        """Trains ``model`` with this strategy: :func:`train` with ``strategy=self``."""
        return train(model, x, y, strategy=self, **kwargs)


@dataclass
class StrategyRun:
    """What :func:`train` returns.

    Attributes:
        trainer: the :class:`~metaweight.Trainer` (its ``model`` is the trained network).
        example_weights: ``(stages, N)`` mean weight of each training example in each stage (NaN
            where not drawn; ones throughout for an unweighted run).
        val_accuracy: validation accuracy after every epoch (empty without validation data).
        weight_corrupted, weight_clean: mean weight of corrupted / clean examples per stage (NaN
            without ``corrupted``).
        seconds: wall time.
        warmup_stages: the strategy's warm-up stages (unweighted).
        train_loss, train_accuracy: per epoch, the mean over its steps (measured before each
            update, weighted by batch size).
        test_loss, test_accuracy: per epoch, on ``(x_test, y_test)`` (empty without them).
        epoch_weights: ``(epochs, N)`` mean weight of each training example in each epoch (NaN
            where not drawn).
    """

    trainer: Any
    example_weights: np.ndarray
    val_accuracy: list[float]
    weight_corrupted: np.ndarray
    weight_clean: np.ndarray
    seconds: float
    warmup_stages: int = 0
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    epoch_weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def model(self) -> Any:
        """The trained network."""
        return self.trainer.model

    def auc(self, corrupted: Any) -> float:
        """:func:`roc_auc` of the example weights after the warm-up stages."""
        return roc_auc(self.example_weights[self.warmup_stages :], corrupted)


def train(
    model: Any,
    x: Any,
    y: Any,
    *,
    strategy: Strategy | None = None,
    config: LAWConfig | None = None,
    epochs: int | None = None,
    x_val: Any = None,
    y_val: Any = None,
    batch_size: int | None = None,
    optimizer: Any = None,
    lr_milestones: Sequence[float] | None = None,
    lr_decay: float | None = None,
    seed: int = 0,
    corrupted: Any = None,
    progress: bool = False,
    x_test: Any = None,
    y_test: Any = None,
    callbacks: Sequence[Any] | None = None,
) -> StrategyRun:
    """Trains a network, weighting every step with ``strategy`` (or unweighted when None), without
    any search: the strategy's actor is applied deterministically, once per stage.

    Training is :meth:`Trainer.fit` with the strategy attached: the batch order is a fresh
    permutation per epoch from the trainer's generator (seeded with ``seed``), so runs with and
    without a strategy (same seed) see the same batches. Defaults for ``epochs``,
    ``batch_size``, the optimizer and the learning-rate milestones come from ``config``, else from
    the strategy's search configuration, else from :class:`LAWConfig`'s defaults. To compare with
    unweighted training, pass the same ``config`` (or the same explicit values) to both runs.

    Args:
        model: a :class:`~metaweight.Network` (trained in place; any architecture with the
            strategy's number of classes) or a spec string (built for ``x``'s shape with ``seed``).
        x, y: training data.
        strategy: the strategy, or None for unweighted training.
        config: where the classifier defaults come from (e.g. ``strategy.config`` for an
            unweighted baseline of a strategy's runs).
        epochs: epochs over ``x``.
        x_val, y_val: validation data: the strategy's state uses its accuracy at every stage
            boundary (without it, the mean training-batch accuracy); also evaluated every epoch.
        batch_size: examples per step.
        optimizer: a :class:`~metaweight.SGD` or :class:`~metaweight.Adam` (default: the search's).
        lr_milestones: fractions of the run where the rate is multiplied by ``lr_decay``.
        lr_decay: the factor.
        seed: network initialisation (spec strings), trainer and batch-order seed.
        corrupted: optional mask of known-corrupted examples, for the per-stage weight means.
        progress: print one line per epoch.
        x_test, y_test: optional held-out data evaluated after every epoch (test curves; never
            seen by the strategy).
        callbacks: further callbacks of :meth:`Trainer.fit <metaweight.Trainer.fit>` (plain
            functions or :class:`~metaweight.callbacks.Callback` objects, e.g. the logging
            integrations), called after the test evaluation of each epoch.

    Raises:
        InvalidArgumentError, ShapeError, DTypeError, LabelError, NonFiniteError: bad arguments or a
            diverging run.
    """
    from .models import Network
    from .optim import SGD, Adam, MultiStep
    from .trainer import Trainer

    if strategy is not None and not isinstance(strategy, Strategy):
        raise InvalidArgumentError(f"strategy: expected a Strategy or None, got {type(strategy).__name__}")
    FitHooks(callbacks)  # checks the callbacks here, before any work
    extra_callbacks = list(callbacks or [])
    config_cls = config_class()
    if config is not None and not isinstance(config, config_cls):
        raise InvalidArgumentError(f"config: expected a LAWConfig or None, got {type(config).__name__}")
    cfg = config if config is not None else strategy.config if strategy is not None else config_cls()
    epochs = as_int(cfg.epochs if epochs is None else epochs, "epochs", minimum=1, maximum=100000)
    batch_size = as_int(
        cfg.batch_size if batch_size is None else batch_size, "batch_size", minimum=1, maximum=2**20
    )
    seed = as_int(seed, "seed", minimum=0, maximum=2**63 - 1)
    progress = as_bool(progress, "progress")
    milestones = cfg.lr_milestones if lr_milestones is None else tuple(lr_milestones)
    milestones = config_cls(lr_milestones=milestones).lr_milestones  # validates
    decay = as_float(
        cfg.lr_decay if lr_decay is None else lr_decay, "lr_decay", minimum=0.0, min_inclusive=False
    )
    if optimizer is None:
        optimizer = (
            SGD(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
            if cfg.optimizer == "sgd"
            else Adam(lr=cfg.lr, weight_decay=cfg.weight_decay)
        )
    if isinstance(model, str):
        xa0 = as_features(x, "x")
        net = Network(model, tuple(xa0.shape[1:]), seed=seed)
    elif isinstance(model, Network):
        net = model
    else:
        raise InvalidArgumentError(
            f"model: expected a metaweight Network or a spec string, got {type(model).__name__}"
        )
    xa = as_features(x, "x", net.input_shape)
    ya = as_labels(y, "y", net.num_classes, n=len(xa))
    n = len(xa)
    mask = as_mask(corrupted, n)
    xv, yv = as_optional_split(x_val, y_val, "x_val", "y_val", net.input_shape, net.num_classes)
    xt, yt = as_optional_split(x_test, y_test, "x_test", "y_test", net.input_shape, net.num_classes)
    spe = math.ceil(n / batch_size)
    total = epochs * spe
    # Same rounding as the core's search (half away from zero), duplicates merged.
    ms = sorted({math.floor(f * total + 0.5) for f in milestones})
    schedule = MultiStep(milestones=[m for m in ms], gamma=decay, unit="step")
    trainer = Trainer(net, optimizer, schedule, seed=seed)
    stages = strategy.stages if strategy is not None else 1
    warm = strategy.warmup_stages if strategy is not None else 0
    if strategy is not None:
        strategy.attach(trainer, total, xv, yv)
    wsum = np.zeros((stages, n), dtype=np.float64)
    wcnt = np.zeros((stages, n), dtype=np.int64)
    wbuf = np.zeros(batch_size, dtype=np.float32)
    te_loss: list[float] = []
    te_acc: list[float] = []

    def on_step(idx: np.ndarray, r: Any) -> None:
        # Which stage weighted this step: the attached strategy's running state.
        stage = 0
        if strategy is not None:
            with trainer._use("strategy_state") as th:
                stage = int(_core.trainer_strategy_state(th, wbuf)[0])
        wsum[stage, idx] += r.weights if r.weights is not None else 1.0
        wcnt[stage, idx] += 1

    def on_epoch(_t: Any, rec: Any) -> None:
        if xt is not None and yt is not None:
            ev = trainer.evaluate(xt, yt)
            te_loss.append(float(ev["loss"]))
            te_acc.append(float(ev["accuracy"]))
        if progress:
            extra = f"  val_acc {rec.val_accuracy:.4f}" if rec.val_accuracy is not None else ""
            extra += f"  test_acc {te_acc[-1]:.4f}" if te_acc else ""
            print(f"law.train epoch {rec.epoch}/{epochs}  loss {rec.train_loss:.4f}{extra}", flush=True)

    t0 = time.perf_counter()
    # The one training loop: fit, with the strategy (if any) weighting every step in the core.
    history = trainer.fit(xa, ya, epochs=epochs, batch_size=batch_size, x_val=xv, y_val=yv, progress=False,
                          callbacks=[on_epoch, *extra_callbacks], record_weights=True, _on_step=on_step)
    val_acc = [float(r.val_accuracy) for r in history if r.val_accuracy is not None]
    tr_loss = [float(v) for v in history.train_loss]
    tr_acc = [float(v) for v in history.train_accuracy]
    epoch_w = np.stack([r.example_weights for r in history if r.example_weights is not None]).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        ew = np.where(wcnt > 0, wsum / np.maximum(wcnt, 1), np.nan).astype(np.float32)
    wc = np.full(stages, np.nan)
    wk = np.full(stages, np.nan)
    if mask is not None:
        m = mask.astype(bool)
        for s in range(stages):
            if wcnt[s, m].sum() > 0:
                wc[s] = wsum[s, m].sum() / wcnt[s, m].sum()
            if wcnt[s, ~m].sum() > 0:
                wk[s] = wsum[s, ~m].sum() / wcnt[s, ~m].sum()
    return StrategyRun(
        trainer=trainer,
        example_weights=ew,
        val_accuracy=val_acc,
        weight_corrupted=wc,
        weight_clean=wk,
        seconds=time.perf_counter() - t0,
        warmup_stages=warm,
        train_loss=tr_loss,
        train_accuracy=tr_acc,
        test_loss=te_loss,
        test_accuracy=te_acc,
        epoch_weights=epoch_w,
    )
