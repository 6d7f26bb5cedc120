"""The records of a LAW search: per-stage (:class:`StageLog`) and per-episode (:class:`EpisodeLog`)
logs, the search's result and :func:`roc_auc`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._validate import fmt_shape
from .errors import DTypeError, ShapeError, StateError

if TYPE_CHECKING:
    from ._law_strategy import Strategy


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
