"""LAW: learning to auto weight (Li et al. 2020), searched by reinforcement learning in the core.

A LAW search trains many short classifier runs ("episodes"). Each run of ``epochs`` epochs is split
into ``stages`` stages (3SM); at every stage start the strategy model's actor maps the training
state ``s_T = [e_T, smoothed loss, smoothed validation accuracy]`` to the parameters ``(θ_T, b)``
of the weighting function ``K = 1 + tanh(θ_T·f + b)`` over per-example features
``f = [loss, entropy, density, label]``. Beside every weighted *target* network an unweighted
*reference* network with the same initial parameters and batches is trained; the reward at each
stage end is ``r_w·(acc_target − acc_reference)`` on the validation set (DNR). DDPG learns the actor
from all transitions of the replay buffer at every stage end (FDU); ``parallel`` episodes run at
once on threads and share the strategy model.

Typical use::

    from metaweight.law import LAWConfig, LAWSearch, Strategy, roc_auc

    cfg = LAWConfig(stages=10, epochs=30, parallel=2)
    search = LAWSearch("mlp(hidden=100, classes=10)", cfg, seed=0)
    result = search.search(x, y, x_val, y_val, episodes=40, corrupted=mask)
    result.strategy.save("digits.law")

    strategy = Strategy.load("digits.law")
    run = strategy.train("mlp(hidden=256x256, classes=10)", x, y, x_val=x_val, y_val=y_val)
    print(run.trainer.evaluate(x_test, y_test), roc_auc(run.example_weights, mask))

Every choice the paper leaves open is a :class:`LAWConfig` field; ``Sources/MetaweightLAW/
README.md`` lists them with the reasons for their defaults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import numpy as np

from . import _core
from ._handle import NativeHandle, refuses_reentry
from ._validate import (
    as_bool,
    as_features,
    as_float,
    as_int,
    as_labels,
    as_optional_split,
    as_path,
    as_shape,
    as_text,
    fmt_shape,
)
from .callbacks import FitHooks
from .errors import (
    ClosedError,
    DTypeError,
    InvalidArgumentError,
    ShapeError,
    StateError,
)
from .trainer import _tqdm

__all__ = [
    "LOG_COLUMNS",
    "EpisodeLog",
    "LAWConfig",
    "LAWSearch",
    "SearchResult",
    "StageLog",
    "Strategy",
    "StrategyRun",
    "roc_auc",
    "train",
]

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

_OPTIMIZERS = ("sgd", "adam")
_LABEL_ENCODINGS = ("onehot", "scalar")
_DENSITIES = ("cosine", "dot")


# ---- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LAWConfig:
    """Every setting of a LAW search. The paper fixes N′ = 20 stages, 4-layer actor and critic MLPs
    and their Adam learning rates (1e-5, 1e-4); everything else is left open and chosen here.

    Args:
        stages: N′, stages a training run is split into (uniformly by optimizer steps).
        warmup_stages: the first stages train unweighted (K = 1) and store no transitions.
        parallel: N_a, episodes run at once on threads (each single-threaded while N_a > 1).
        epochs: epochs over the training set per episode.
        batch_size: classifier batch size.
        optimizer: classifier optimizer, ``"sgd"`` or ``"adam"``.
        lr: classifier base learning rate.
        momentum: SGD momentum.
        weight_decay: classifier L2 weight decay (the paper: 2e-5).
        lr_milestones: fractions of the run in (0, 1) where the rate is multiplied by ``lr_decay``
            (the paper: stages 10, 13, 16 of 20).
        lr_decay: factor at each milestone.
        crop_padding: random-crop padding for image inputs (same draws for both networks).
        flip: random horizontal flips for image inputs.
        label_encoding: label feature, ``"onehot"`` (C columns) or ``"scalar"`` (c/(C−1)).
        density: similarity of the density feature, ``"cosine"`` or ``"dot"`` (Lo·Loᵀ).
        action_scale: the actor outputs ``action_scale·tanh(·)``, bounding every entry of (θ, b).
        state_ema: β of the EMA (over stages) of the state's loss and validation accuracy.
        normalize_weights: divide each batch's weights by their mean, so a strategy can only
            redistribute weight between examples, not scale the effective learning rate (the paper
            does not normalise).
        embedding_dim: d, size of the learned stage embedding.
        embedding_std: std of its Gaussian initialisation (small: stages start alike and share
            what is learned until the embedding separates them).
        actor_hidden: hidden width of the actor's three hidden layers.
        critic_hidden: hidden width of the critic's three hidden layers.
        actor_lr: Adam learning rate of the actor and the embedding.
        critic_lr: Adam learning rate of the critic.
        actor_l2: λ of an L2 penalty on the actor's pre-tanh outputs (keeps actions off the tanh
            bounds and pulls actions the critic is indifferent to back toward K = 1).
        gamma: discount γ of the stage-level returns.
        tau: soft-update rate of the target actor/critic after every FDU minibatch (1 = copy).
        noise: σ₀ of the Gaussian exploration noise on the action.
        noise_decay: σ is multiplied by this after every episode round.
        noise_correlation: ρ of the noise between consecutive stages of an episode (AR(1) with
            stationary std σ; 0 = independent per stage, 1 = one draw per episode).
        buffer_size: replay buffer capacity (oldest overwritten).
        fdu_epochs: En, passes over the whole buffer at every stage end.
        fdu_batch: FDU minibatch size.
        reward_k: k in ``r_w = exp(k·epoch/epochs)·s``.
        reward_scale: s in the same.

    Raises:
        InvalidArgumentError: a value out of range (named in the message).
    """

    stages: int = 20
    warmup_stages: int = 2
    parallel: int = 2
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-5
    lr_milestones: Sequence[float] = (0.5, 0.65, 0.8)
    lr_decay: float = 0.1
    crop_padding: int = 0
    flip: bool = False
    label_encoding: str = "onehot"
    density: str = "cosine"
    action_scale: float = 1.0
    state_ema: float = 0.5
    normalize_weights: bool = False
    embedding_dim: int = 8
    embedding_std: float = 0.1
    actor_hidden: int = 64
    critic_hidden: int = 64
    actor_lr: float = 1e-5
    critic_lr: float = 1e-4
    actor_l2: float = 0.1
    gamma: float = 0.9
    tau: float = 0.01
    noise: float = 0.3
    noise_decay: float = 0.95
    noise_correlation: float = 0.5
    buffer_size: int = 10000
    fdu_epochs: int = 5
    fdu_batch: int = 64
    reward_k: float = 1.0
    reward_scale: float = 10.0

    def __post_init__(self) -> None:
        def setv(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        setv("stages", as_int(self.stages, "stages", minimum=1, maximum=10000))
        setv("warmup_stages", as_int(self.warmup_stages, "warmup_stages", minimum=0, maximum=self.stages - 1))
        setv("parallel", as_int(self.parallel, "parallel", minimum=1, maximum=256))
        setv("epochs", as_int(self.epochs, "epochs", minimum=1, maximum=100000))
        setv("batch_size", as_int(self.batch_size, "batch_size", minimum=1, maximum=2**20))
        if self.optimizer not in _OPTIMIZERS:
            raise InvalidArgumentError(f"optimizer: expected 'sgd' or 'adam', got {self.optimizer!r}")
        setv("lr", as_float(self.lr, "lr", minimum=0.0, min_inclusive=False))
        setv("momentum", as_float(self.momentum, "momentum", minimum=0.0, maximum=1.0, max_inclusive=False))
        setv("weight_decay", as_float(self.weight_decay, "weight_decay", minimum=0.0))
        if isinstance(self.lr_milestones, (str, bytes)):
            raise InvalidArgumentError(
                f"lr_milestones: expected a list of fractions, got {self.lr_milestones!r}"
            )
        try:
            ms = tuple(self.lr_milestones)
        except TypeError:
            raise InvalidArgumentError(
                f"lr_milestones: expected a list of fractions, got {self.lr_milestones!r}"
            ) from None
        ms = tuple(
            as_float(
                m, f"lr_milestones[{i}]", minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False
            )
            for i, m in enumerate(ms)
        )
        if len(ms) > 100:
            raise InvalidArgumentError(f"lr_milestones: expected at most 100 entries, got {len(ms)}")
        setv("lr_milestones", ms)
        setv("lr_decay", as_float(self.lr_decay, "lr_decay", minimum=0.0, min_inclusive=False))
        setv("crop_padding", as_int(self.crop_padding, "crop_padding", minimum=0, maximum=64))
        setv("flip", as_bool(self.flip, "flip"))
        if self.label_encoding not in _LABEL_ENCODINGS:
            raise InvalidArgumentError(
                f"label_encoding: expected 'onehot' or 'scalar', got {self.label_encoding!r}"
            )
        if self.density not in _DENSITIES:
            raise InvalidArgumentError(f"density: expected 'cosine' or 'dot', got {self.density!r}")
        setv(
            "action_scale",
            as_float(self.action_scale, "action_scale", minimum=0.0, maximum=100.0, min_inclusive=False),
        )
        setv(
            "state_ema", as_float(self.state_ema, "state_ema", minimum=0.0, maximum=1.0, max_inclusive=False)
        )
        setv("normalize_weights", as_bool(self.normalize_weights, "normalize_weights"))
        setv("embedding_dim", as_int(self.embedding_dim, "embedding_dim", minimum=1, maximum=4096))
        setv("embedding_std", as_float(self.embedding_std, "embedding_std", minimum=0.0, maximum=100.0))
        setv("actor_hidden", as_int(self.actor_hidden, "actor_hidden", minimum=1, maximum=4096))
        setv("critic_hidden", as_int(self.critic_hidden, "critic_hidden", minimum=1, maximum=4096))
        setv("actor_lr", as_float(self.actor_lr, "actor_lr", minimum=0.0, min_inclusive=False))
        setv("critic_lr", as_float(self.critic_lr, "critic_lr", minimum=0.0, min_inclusive=False))
        setv("actor_l2", as_float(self.actor_l2, "actor_l2", minimum=0.0))
        setv("gamma", as_float(self.gamma, "gamma", minimum=0.0, maximum=1.0, max_inclusive=False))
        setv("tau", as_float(self.tau, "tau", minimum=0.0, maximum=1.0, min_inclusive=False))
        setv("noise", as_float(self.noise, "noise", minimum=0.0))
        setv(
            "noise_decay",
            as_float(self.noise_decay, "noise_decay", minimum=0.0, maximum=1.0, min_inclusive=False),
        )
        setv(
            "noise_correlation",
            as_float(self.noise_correlation, "noise_correlation", minimum=0.0, maximum=1.0),
        )
        setv("buffer_size", as_int(self.buffer_size, "buffer_size", minimum=1, maximum=10**7))
        setv("fdu_epochs", as_int(self.fdu_epochs, "fdu_epochs", minimum=1, maximum=10000))
        setv("fdu_batch", as_int(self.fdu_batch, "fdu_batch", minimum=1, maximum=2**20))
        setv("reward_k", as_float(self.reward_k, "reward_k", minimum=-50.0, maximum=50.0))
        setv("reward_scale", as_float(self.reward_scale, "reward_scale", minimum=0.0, min_inclusive=False))

    def spec(self) -> str:
        """The ``key=value, ...`` string the core parses (``mw_law_create``)."""
        parts = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "lr_milestones":
                s = "x".join(repr(float(m)) for m in v) if v else "none"
            elif isinstance(v, bool):
                s = str(int(v))
            elif isinstance(v, float):
                s = repr(v)
            else:
                s = str(v)
            parts.append(f"{f.name}={s}")
        return ", ".join(parts)

    @classmethod
    def from_spec(cls, spec: str) -> LAWConfig:
        """Parses a spec written by :meth:`spec` (or the core); unknown keys raise.

        Raises:
            InvalidArgumentError: an unknown key or a bad value.
        """
        if not isinstance(spec, str):
            raise InvalidArgumentError(f"spec: expected a string, got {type(spec).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise InvalidArgumentError(f"spec: expected key=value, got {part!r}")
            key, raw = (s.strip() for s in part.split("=", 1))
            if key not in names:
                raise InvalidArgumentError(f"spec: unknown key {key!r}")
            default = names[key].default
            try:
                if key == "lr_milestones":
                    kwargs[key] = () if raw in ("", "none") else tuple(float(v) for v in raw.split("x"))
                elif isinstance(default, bool):
                    kwargs[key] = raw.lower() in ("1", "true", "yes")
                elif isinstance(default, int):
                    kwargs[key] = int(raw)
                elif isinstance(default, float):
                    kwargs[key] = float(raw)
                else:
                    kwargs[key] = raw
            except ValueError:
                raise InvalidArgumentError(f"spec: {key}: cannot parse {raw!r}") from None
        return cls(**kwargs)


# ---- logs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageLog:
    """Summary of one stage of one episode round (all parallel episodes, then the FDU).

    Attributes:
        round: episode round; its episodes are ``round*parallel .. round*parallel + parallel - 1``.
        stage: the stage run (0-based).
        round_done: whether it was the round's last stage.
        warmup: a warm-up stage (K = 1, no transitions, no FDU).
        parallel: N_a.
        reward, target_acc, reference_acc, loss_gap, weight_corrupted, weight_clean: means over the
            parallel episodes (see :class:`EpisodeLog`); the weights are NaN without a mask.
        noise_sigma: σ of the exploration noise (0 in warm-up).
        critic_loss, actor_q: mean critic loss and Q(s, μ(s)) over the FDU's last epoch (NaN when
            no update ran).
        fdu_updates: FDU minibatch updates (``fdu_epochs·ceil(buffer_size/fdu_batch)``).
        buffer_size: transitions in the replay buffer.
        seconds: wall time of the stage.
        fdu_seconds: of which the FDU took.
    """

    round: int
    stage: int
    round_done: bool
    warmup: bool
    parallel: int
    reward: float
    target_acc: float
    reference_acc: float
    loss_gap: float
    weight_corrupted: float
    weight_clean: float
    noise_sigma: float
    critic_loss: float
    actor_q: float
    fdu_updates: int
    buffer_size: int
    seconds: float
    fdu_seconds: float


def roc_auc(weights: Any, corrupted: Any) -> float:
    """How well weights separate clean from known-corrupted examples: the probability that a clean
    example has a higher weight than a corrupted one (ties count 1/2), i.e. the ROC AUC of the
    weight as a score for "clean". 1.0: every corrupted example weighs less than every clean one;
    0.5: no separation.

    Args:
        weights: per-example weights ``(N,)``, or per-stage weights ``(S, N)`` (every finite
            entry counts, NaN entries are skipped).
        corrupted: boolean mask ``(N,)`` of the corrupted examples.

    Returns:
        The AUC, or NaN when there are no finite weights of clean or of corrupted examples.

    Raises:
        ShapeError: the mask's length differs from the weights' last dimension.
        DTypeError: the mask is not boolean or 0/1 integers.
    """
    try:
        w = np.asarray(weights, dtype=np.float64)
        c = np.asarray(corrupted)
    except (TypeError, ValueError):
        raise DTypeError(
            f"weights, corrupted: expected real weights and a boolean mask, got {weights!r:.60}"
        ) from None
    if c.dtype.kind not in "biu":
        raise DTypeError(f"corrupted: expected a boolean mask, got dtype {c.dtype}")
    if c.ndim != 1:
        raise ShapeError(f"corrupted: expected a 1-d mask (N,), got shape {fmt_shape(c.shape)}")
    if w.ndim == 0 or w.shape[-1] != c.shape[0]:
        raise ShapeError(
            f"weights: expected last dimension {c.shape[0]} (the mask's length), got {fmt_shape(w.shape)}"
        )
    c = np.broadcast_to(c.astype(bool), w.shape).ravel()
    w = w.ravel()
    ok = np.isfinite(w)
    w, c = w[ok], c[ok]
    n_pos, n_neg = int((~c).sum()), int(c.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Average ranks (ties share their mean rank), then the Mann-Whitney U statistic.
    order = np.argsort(w, kind="mergesort")
    sorted_w = w[order]
    ranks = np.empty(len(w), dtype=np.float64)
    _, first, counts = np.unique(sorted_w, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[~c].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass
class EpisodeLog:
    """Per-stage record of one search episode (one target/reference pair).

    Per-stage arrays (length ``stages``; NaN for stages not run): ``reward``; ``target_acc`` and
    ``reference_acc`` (validation accuracy at the stage end); ``loss_gap`` (mean train-batch loss of
    the target minus the reference, both on the same batch before their updates: negative when the
    target fits the training labels less); ``weight_corrupted``, ``weight_clean``, ``weight_mean``
    (mean K over the stage's draws of known-corrupted / clean / all examples); ``target_loss``,
    ``reference_loss``; ``state_loss``, ``state_acc`` (the state's smoothed values at the stage
    start). ``actions`` is ``(stages, action_dim)`` (zeros in warm-up stages; with noise) and
    ``example_weights`` ``(stages, N)``, the mean K of each training example in each stage (NaN
    where it was not drawn), or None when not recorded.
    """

    episode: int
    round: int
    slot: int
    stages: int
    warmup_stages: int
    stages_done: int
    reward: np.ndarray
    target_acc: np.ndarray
    reference_acc: np.ndarray
    loss_gap: np.ndarray
    weight_corrupted: np.ndarray
    weight_clean: np.ndarray
    weight_mean: np.ndarray
    target_loss: np.ndarray
    reference_loss: np.ndarray
    state_loss: np.ndarray
    state_acc: np.ndarray
    actions: np.ndarray
    example_weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        """Whether every stage ran."""
        return self.stages_done == self.stages

    @property
    def total_reward(self) -> float:
        """Sum of the rewards of the stages run."""
        return float(np.nansum(self.reward))

    @property
    def final_gap(self) -> float:
        """Target minus reference validation accuracy after the last stage run (NaN if none)."""
        if self.stages_done == 0:
            return float("nan")
        t = self.stages_done - 1
        return float(self.target_acc[t] - self.reference_acc[t])

    def auc(self, corrupted: Any, stages: Sequence[int] | None = None) -> float:
        """:func:`roc_auc` of :attr:`example_weights` over ``stages`` (default: every stage after
        the warm-up) against the mask ``corrupted``.

        Raises:
            StateError: the example weights were not recorded.
        """
        if self.example_weights is None:
            raise StateError("auc: the example weights were not recorded (search(..., example_weights=True))")
        sel = range(self.warmup_stages, self.stages) if stages is None else list(stages)
        return roc_auc(self.example_weights[list(sel)], corrupted)


@dataclass
class SearchResult:
    """What :meth:`LAWSearch.search` returns.

    Attributes:
        strategy: the strategy model at the end (a snapshot; deterministic, no noise).
        episodes: one :class:`EpisodeLog` per episode run by this call, in order (the last ones are
            incomplete when the search was interrupted).
        stages: one :class:`StageLog` per stage run by this call.
        interrupted: whether Ctrl-C (KeyboardInterrupt, also from ``callback``) or a callback
            returning True stopped the search at a stage boundary.
        seconds: wall time.
    """

    strategy: Strategy
    episodes: list[EpisodeLog]
    stages: list[StageLog]
    interrupted: bool
    seconds: float

    @property
    def episodes_completed(self) -> int:
        """Episodes that ran every stage."""
        return sum(1 for e in self.episodes if e.complete)

    def rewards(self) -> np.ndarray:
        """Total reward of each complete episode, in order (a learning curve)."""
        return np.array([e.total_reward for e in self.episodes if e.complete])


# ---- helpers -----------------------------------------------------------------------------------------


def _check_trainer(trainer: Any, what: str) -> None:
    """InvalidArgumentError unless ``trainer`` is a :class:`~metaweight.Trainer`."""
    from .trainer import Trainer

    if not isinstance(trainer, Trainer):
        raise InvalidArgumentError(
            f"{what}: trainer: expected a metaweight.Trainer, got {type(trainer).__name__}"
        )


def _as_mask(corrupted: Any, n: int) -> np.ndarray | None:
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


def _model_spec(model: Any, name: str = "model") -> tuple[str, tuple[int, ...] | None]:
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


# ---- strategies ----------------------------------------------------------------------------------------


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
        self._label_encoding = _LABEL_ENCODINGS[int(enc)]
        self._density = _DENSITIES[int(dens)]
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
        return LAWConfig.from_spec(self._config_spec)

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
        _check_trainer(trainer, "attach")
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
        _check_trainer(trainer, "detach")
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
    if config is not None and not isinstance(config, LAWConfig):
        raise InvalidArgumentError(f"config: expected a LAWConfig or None, got {type(config).__name__}")
    cfg = config if config is not None else strategy.config if strategy is not None else LAWConfig()
    epochs = as_int(cfg.epochs if epochs is None else epochs, "epochs", minimum=1, maximum=100000)
    batch_size = as_int(
        cfg.batch_size if batch_size is None else batch_size, "batch_size", minimum=1, maximum=2**20
    )
    seed = as_int(seed, "seed", minimum=0, maximum=2**63 - 1)
    progress = as_bool(progress, "progress")
    milestones = cfg.lr_milestones if lr_milestones is None else tuple(lr_milestones)
    milestones = LAWConfig(lr_milestones=milestones).lr_milestones  # validates
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
    mask = _as_mask(corrupted, n)
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


# ---- the search ------------------------------------------------------------------------------------------


class LAWSearch(NativeHandle):
    """A LAW search: rounds of ``config.parallel`` episodes sharing one strategy model.

    Args:
        model: the classifier searched with: a spec string in the core's spec language (e.g.
            ``"mlp(hidden=100, classes=10)"``; the input shape comes from the data, or pass
            ``input_shape``) or a :class:`~metaweight.Network` (only its architecture is used;
            every episode initialises its own networks).
        config: :class:`LAWConfig` (default: its defaults).
        seed: seed of everything (strategy model, episodes' initialisations, batches, noise).
        input_shape: per-example input shape, to create the native search before :meth:`search`.

    Raises:
        InvalidArgumentError: a bad spec, configuration or seed.
    """

    _noun = "search"
    _copy_advice = "use save() and load() (checkpoints)"

    def __init__(
        self, model: Any, config: LAWConfig | None = None, seed: int = 0, *, input_shape: Any = None
    ) -> None:
        spec, shape = _model_spec(model)
        if config is None:
            config = LAWConfig()
        if not isinstance(config, LAWConfig):
            raise InvalidArgumentError(f"config: expected a LAWConfig, got {type(config).__name__}")
        self._spec = spec
        self._config = config
        self._seed = as_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        self._shape: tuple[int, ...] | None = None
        self._closed = False
        self._data_key: tuple[Any, ...] | None = None
        self._classes = 0
        self._action_dim = 0
        if input_shape is not None:
            shape = as_shape(input_shape, "input_shape")
        if shape is not None:
            self._create(tuple(shape))

    def _create(self, shape: tuple[int, ...]) -> None:
        self._handle = _core.law_create(self._config.spec(), self._spec, shape, self._seed)
        self._shape = shape
        info = _core.law_info(self._handle)
        self._classes = int(info[2])
        self._action_dim = int(info[3])

    def _use(self, what: str) -> int:
        if self._closed:
            raise ClosedError(f"{what}: the search was closed")
        if self._handle is None:
            raise StateError(f"{what}: the search has no data yet; call search() (or pass input_shape)")
        return self._handle

    def _free(self, handle: int) -> None:
        _core.law_free(handle)

    # -- description

    @property
    def config(self) -> LAWConfig:
        """The settings."""
        return self._config

    @property
    def spec(self) -> str:
        """The classifier's spec."""
        return self._spec

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Per-example input shape (None before the first :meth:`search`)."""
        return self._shape

    @property
    def rounds_completed(self) -> int:
        """Episode rounds run to the end."""
        return int(_core.law_info(self._use("rounds_completed"))[4])

    @property
    def buffer_size(self) -> int:
        """Transitions in the replay buffer."""
        return int(_core.law_info(self._use("buffer_size"))[6])

    def __repr__(self) -> str:
        return f"LAWSearch({self._spec!r}, stages={self._config.stages}, parallel={self._config.parallel}, seed={self._seed})"

    # -- strategies

    def strategy(self) -> Strategy:
        """A snapshot of the current strategy."""
        return Strategy(_core.law_strategy(self._use("strategy")))

    def save_strategy(self, path: PathLike) -> None:
        """Saves the current strategy (atomic, checksummed).

        Raises:
            CheckpointError: the file cannot be written.
        """
        _core.law_save_strategy(self._use("save_strategy"), as_path(path))

    def load_strategy(self, path: PathLike) -> None:
        """Starts the actor (and target actor) from a saved strategy with the same sizes.

        Raises:
            CheckpointError: unreadable or corrupt file.
            InvalidArgumentError: its sizes differ from this search's.
        """
        _core.law_load_strategy(self._use("load_strategy"), as_path(path))

    # -- search checkpoints

    def save(self, path: PathLike) -> None:
        """Saves the whole search state so that a resumed search is bit-identical to one never stopped.

        The file (atomic, versioned, checksummed) holds the strategy model (actor, stage embedding,
        critic, their target copies and Adam states), the replay buffer, the random generators, the
        round and stage counters and, in the middle of a round (also after an interrupted stage),
        every episode's classifiers, optimizers, generators, noise, logs and progress. The data is
        not saved: pass the same arrays to :meth:`search` after :meth:`load`.

        Raises:
            StateError: the search has no native state yet (no data and no ``input_shape``).
            CheckpointError: the file cannot be written.
        """
        _core.law_save(self._use("save"), as_path(path))

    def load(self, path: PathLike) -> None:
        """Restores a state written by :meth:`save` into this search.

        The search must have the same model spec, input shape, configuration and seed (pass
        ``input_shape`` when creating it). A round in progress continues at the next :meth:`search`
        with the same data (with different data it is abandoned, as when the data changes).

        Raises:
            CheckpointError: missing, truncated, corrupt, wrong-version or mismatching file (the
                message names which); the search is then unchanged.
            StateError: the search has no native state yet (pass ``input_shape``).
        """
        _core.law_load(self._use("load"), as_path(path))
        self._data_key = None  # the next search() hands the data over again

    def _run_stage(self, h: int) -> tuple[dict[str, Any] | None, bool]:
        """Runs one native stage; returns (its log or None, whether Ctrl-C interrupted it).

        On the main thread the stage runs in a worker thread, so that a KeyboardInterrupt reaches
        this thread at once; it then asks the core to stop every episode before its next optimizer
        step (the stage keeps its progress: the next call continues it bit-identically).
        """
        if threading.current_thread() is not threading.main_thread():
            return _core.law_run_stage(h), False  # signals are delivered to the main thread only
        _core.law_cancel(h, False)
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["log"] = _core.law_run_stage(h)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                box["err"] = err
            finally:
                done.set()

        worker = threading.Thread(target=work, name="metaweight-law-stage", daemon=True)
        interrupted = False
        try:
            worker.start()
            while not done.wait(0.05):
                pass
        except KeyboardInterrupt:
            interrupted = True
        if interrupted:
            _core.law_cancel(h, True)
            idle = 0
            while not done.is_set():
                with contextlib.suppress(KeyboardInterrupt):
                    if not done.wait(0.05) and worker.ident is None and not worker.is_alive():
                        idle += 1  # Ctrl-C came inside start(), maybe before the thread was spawned
                        if idle > 40:
                            return None, True
        err = box.get("err")
        if isinstance(err, KeyboardInterrupt):  # the core stopped the stage (MW_E_INTERRUPTED)
            return None, True
        if err is not None:
            raise err
        return box.get("log"), interrupted

    # -- searching

    def _episode_logs(self, h: int, example_weights: bool, n: int) -> list[EpisodeLog]:
        cfg = self._config
        out = []
        cols = len(LOG_COLUMNS)
        for slot in range(cfg.parallel):
            table: np.ndarray = np.empty(cfg.stages * cols, dtype=np.float64)
            try:
                ep, rd, done = _core.law_episode_log(h, slot, table)
            except StateError:
                return []
            table = table.reshape(cfg.stages, cols)
            actions = np.empty(cfg.stages * self._action_dim, dtype=np.float32)
            _core.law_episode_actions(h, slot, actions)
            ew: np.ndarray | None = None
            if example_weights:
                ew = np.empty(cfg.stages * n, dtype=np.float32)
                _core.law_episode_weights(h, slot, ew)
                ew = ew.reshape(cfg.stages, n)
            cols_d = {name: table[:, i].copy() for i, name in enumerate(LOG_COLUMNS)}
            out.append(
                EpisodeLog(
                    episode=int(ep),
                    round=int(rd),
                    slot=slot,
                    stages=cfg.stages,
                    warmup_stages=cfg.warmup_stages,
                    stages_done=int(done),
                    actions=actions.reshape(cfg.stages, self._action_dim),
                    example_weights=ew,
                    **cols_d,
                )
            )
        return out

    @refuses_reentry("search")
    def search(
        self,
        x: Any,
        y: Any,
        x_val: Any,
        y_val: Any,
        episodes: int,
        *,
        corrupted: Any = None,
        progress: bool = True,
        callback: Callable[[StageLog], Any] | None = None,
        example_weights: bool = True,
    ) -> SearchResult:
        """Runs ``episodes`` more episodes (rounded up to a multiple of ``config.parallel``).

        Each native call runs one stage of the round's parallel episodes plus the FDU with the GIL
        released; between calls the progress display is updated, ``callback(stage_log)`` is called
        (returning True stops the search), and Ctrl-C is honoured: a KeyboardInterrupt (from the
        keyboard or raised by the callback) stops the search cleanly and the result is returned
        with ``interrupted=True`` (the unfinished round's episodes are logged as incomplete). Ctrl-C
        during a stage stops every episode before its next optimizer step (the stage runs in a
        worker thread; the core polls a cancellation flag) and keeps the stage's progress. Calling
        :meth:`search` again with the same arrays (or :meth:`save`, then :meth:`load` in a new
        process) continues where it stopped, bit-identically to an uninterrupted search.

        Args:
            x, y: training data (``y`` may be noisy).
            x_val, y_val: clean validation data for the DNR reward and the state.
            episodes: episodes to run (>= 1).
            corrupted: optional boolean mask of the known-corrupted training examples; only used in
                the logs (mean weight of corrupted vs clean examples), never for training.
            progress: a tqdm bar over stages when tqdm is installed, else one printed line per stage.
            callback: called after every stage with its :class:`StageLog`.
            example_weights: record every example's mean weight per stage in the episode logs
                (``stages × N`` floats per episode).

        Returns:
            A :class:`SearchResult`.

        Raises:
            ShapeError, DTypeError, LabelError, NonFiniteError, InvalidArgumentError: bad data or
                settings (e.g. a run with fewer optimizer steps than stages).
            NonFiniteError: a classifier diverged (the round is abandoned).
        """
        t0 = time.perf_counter()
        episodes = as_int(episodes, "episodes", minimum=1, maximum=2**31)
        progress = as_bool(progress, "progress")
        example_weights = as_bool(example_weights, "example_weights")
        if callback is not None and not callable(callback):
            raise InvalidArgumentError(f"callback: expected a callable, got {type(callback).__name__}")
        if self._closed:
            raise ClosedError("search: the search was closed")
        xa = as_features(x, "x", self._shape)
        if self._handle is None:
            self._create(tuple(int(d) for d in xa.shape[1:]))
        h = self._use("search")
        ya = as_labels(y, "y", self._classes, n=len(xa))
        xv = as_features(x_val, "x_val", self._shape)
        yv = as_labels(y_val, "y_val", self._classes, n=len(xv), x_name="x_val")
        mask = _as_mask(corrupted, len(xa))
        key = (xa.shape, xv.shape, _digest(xa, ya, xv, yv, mask))
        if key != self._data_key:
            _core.law_set_data(h, xa, ya, mask, xv, yv)
            self._data_key = key
        cfg = self._config
        na, stages = cfg.parallel, cfg.stages
        info = _core.law_info(h)
        next_stage = int(info[5])
        rounds = math.ceil(episodes / na)
        total_stages = rounds * stages - next_stage if next_stage else rounds * stages
        bar_cls = _tqdm() if progress else None
        bar = bar_cls(total=total_stages, desc="LAW", unit="stage") if bar_cls else None
        logs: list[StageLog] = []
        eps: list[EpisodeLog] = []
        interrupted = False
        done_stages = 0
        try:
            while done_stages < total_stages:
                try:
                    d, stopped = self._run_stage(h)
                    if d is None:  # interrupted inside the stage (its progress is kept)
                        interrupted = True
                        break
                    log = StageLog(**d)
                    logs.append(log)
                    done_stages += 1
                    if log.round_done:
                        eps.extend(self._episode_logs(h, example_weights, len(xa)))
                    if bar is not None:
                        first = log.round * na
                        bar.set_description(
                            f"LAW episodes {first}-{first + na - 1}" if na > 1 else f"LAW episode {first}",
                            refresh=False,
                        )
                        bar.set_postfix(
                            stage=f"{log.stage + 1}/{stages}",
                            reward=f"{log.reward:+.3f}",
                            acc=f"{log.target_acc:.3f}/{log.reference_acc:.3f}",
                            refresh=False,
                        )
                        bar.update(1)
                    elif progress:
                        print(_stage_line(log, na, stages), flush=True)
                    if stopped or (callback is not None and callback(log) is True):
                        interrupted = True
                        break
                except KeyboardInterrupt:
                    interrupted = True
                    break
        finally:
            if bar is not None:
                bar.close()
        if interrupted:
            info = _core.law_info(h)
            if int(info[5]) != 0:  # an unfinished round: log its episodes as they are
                eps.extend(self._episode_logs(h, example_weights, len(xa)))
        return SearchResult(
            strategy=self.strategy(),
            episodes=eps,
            stages=logs,
            interrupted=interrupted,
            seconds=time.perf_counter() - t0,
        )


def _digest(*arrays: np.ndarray | None) -> str:
    """A fingerprint of the data (shapes, dtypes and every byte), to notice new arrays."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        h.update(repr((a.shape, str(a.dtype))).encode())
        # numpy's stubs declare the buffer protocol (__buffer__) only for Python >= 3.12.
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))  # type: ignore[arg-type,unused-ignore]
    return h.hexdigest()


def _stage_line(log: StageLog, na: int, stages: int) -> str:
    first = log.round * na
    eps = f"episodes {first}-{first + na - 1}" if na > 1 else f"episode {first}"
    s = (
        f"LAW {eps} stage {log.stage + 1}/{stages}: reward {log.reward:+.4f}  "
        f"acc target {log.target_acc:.4f} reference {log.reference_acc:.4f}"
    )
    if not math.isnan(log.weight_corrupted):
        s += f"  K corrupted {log.weight_corrupted:.3f} clean {log.weight_clean:.3f}"
    if log.warmup:
        s += "  (warm-up)"
    else:
        s += f"  buffer {log.buffer_size}  critic {log.critic_loss:.4f}"
    return s + f"  {log.seconds:.2f}s"
