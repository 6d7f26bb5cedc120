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

This module is the public face; the code lives in ``_law_logs`` (stage and episode logs, search
results, :func:`roc_auc`), ``_law_strategy`` (:class:`Strategy`, :func:`train`), ``_law_search``
(:class:`LAWSearch`), ``_law_ray`` (episodes as Ray actors) and ``_law_common``; the settings
(:class:`LAWConfig`) are here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._law_common import LOG_COLUMNS
from ._law_logs import EpisodeLog, SearchResult, StageLog, roc_auc
from ._validate import (
    as_bool,
    as_float,
    as_int,
)
from .errors import (
    InvalidArgumentError,
)

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


# The modules below use LAWConfig (through _law_common.config_class), so they come after it.
from ._law_search import LAWSearch  # noqa: E402
from ._law_strategy import Strategy, StrategyRun, train  # noqa: E402
