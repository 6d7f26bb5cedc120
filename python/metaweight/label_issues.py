"""Suspect labels: training examples ranked by how likely their label is wrong, from the weights a
meta-reweighting run gave them.

Every meta-reweighting method here (L2RW, MW-Net, GDW, LAW) learns to give a training example whose
label disagrees with the clean meta set a low weight. :func:`label_issues` turns the recorded
per-example weights (``fit(record_weights=True)``) into a ranked list::

    history = trainer.fit(x, y, epochs=40, meta=(x_meta, y_meta), record_weights=True)
    issues = mw.label_issues(trainer, y, history=history, x=x, last=10)
    issues.to_csv("label_issues.csv")          # rank, index, given_label, suggested_label, score, weight
    print(issues.index[:20])                   # the 20 most suspect training examples

The score is rank-based, so it is comparable across methods whose weights live on different scales
(L2RW's and MW-Net's are normalised per batch, GDW's ω′ sum to about one per class, LAW's
K = 1 + tanh(·) lies in (0, 2)): an example's score is the fraction of the (visited) training
examples whose mean weight is at least its own, 1.0 for the lowest weight, near 0 for the highest.
GDW's class-level weights ω′ (n × C) also suggest the likely true class: in each epoch the
off-label class with the *smallest* weight gets a vote, and the class with the most votes is
suggested. (For a class c other than the label, ω′_c scales the gradient that pushes logit c down;
GDW lowers it for the class the meta set says the example belongs to. The off-label *maximum* is
the true class for only 2% (uniform) and 25% (flip) of the corrupted labels on digits with 40%
noise; averaging ω′ over the epochs before taking the minimum lets the epochs where the example
weighed most dominate (MNIST t10k flip 40%: 8% right, the vote 56%). The README's "Suspect labels"
table compares the suggestions with the model's predictions.) Otherwise the suggested label is the model's prediction when one is given,
else the given label.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DTypeError, InvalidArgumentError, ShapeError, StateError

__all__ = ["LabelIssues", "label_issues"]

_COLUMNS = ("rank", "index", "given_label", "suggested_label", "score", "weight")


@dataclass(frozen=True)
class LabelIssues:
    """Training examples ranked most-suspect first (what :func:`label_issues` returns).

    Attributes:
        index: position of each example in the training set ``(N,)``, most suspect first.
        given_label: the training label as given.
        suggested_label: the likely true label (GDW: the off-label class with the smallest class
            weight in most epochs; else the model's prediction when given; else the given label).
        score: suspicion in ``[0, 1]``, higher = more suspect (rank-based; NaN for examples whose
            weight was never recorded, ranked last).
        weight: the example's mean recorded weight over the epochs used.
    """

    index: np.ndarray
    given_label: np.ndarray
    suggested_label: np.ndarray
    score: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __repr__(self) -> str:
        return f"LabelIssues({len(self)} examples, top {self.index[:5].tolist()})"

    def top(self, k: int) -> LabelIssues:
        """The ``k`` most suspect examples."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise InvalidArgumentError(f"k: expected an integer >= 0, got {k!r}")
        s = slice(0, int(k))
        return LabelIssues(self.index[s], self.given_label[s], self.suggested_label[s], self.score[s],
                           self.weight[s])

    def scores_by_index(self) -> np.ndarray:
        """The scores in training-set order ``(N,)`` (NaN where not scored)."""
        out = np.full(len(self), np.nan)
        out[self.index] = self.score
        return out

    def to_array(self) -> np.ndarray:
        """A structured numpy array with the columns ``rank, index, given_label, suggested_label,
        score, weight``."""
        dt = np.dtype([("rank", np.int64), ("index", np.int64), ("given_label", np.int64),
                       ("suggested_label", np.int64), ("score", np.float64), ("weight", np.float64)])
        a = np.empty(len(self), dtype=dt)
        a["rank"] = np.arange(1, len(self) + 1)
        a["index"], a["given_label"], a["suggested_label"] = self.index, self.given_label, self.suggested_label
        a["score"], a["weight"] = self.score, self.weight
        return a

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Writes ``rank, index, given_label, suggested_label, score, weight`` (one row per example,
        most suspect first, rank counted from 1) to ``path``."""
        with open(os.fspath(path), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(_COLUMNS)
            for r, (i, g, s, sc, wt) in enumerate(
                zip(self.index.tolist(), self.given_label.tolist(), self.suggested_label.tolist(),
                    self.score.tolist(), self.weight.tolist()),
                start=1,
            ):
                w.writerow((r, i, g, s, repr(float(sc)), repr(float(wt))))

    @classmethod
    def read_csv(cls, path: str | os.PathLike[str]) -> LabelIssues:
        """Reads a file written by :meth:`to_csv`.

        Raises:
            InvalidArgumentError: the file lacks one of the columns.
        """
        with open(os.fspath(path), newline="") as f:
            rows = list(csv.DictReader(f))
            missing = [c for c in _COLUMNS[1:] if rows and c not in rows[0]]
        if missing:
            raise InvalidArgumentError(f"{os.fspath(path)}: missing column(s) {missing}")

        def col(name: str, dtype: Any) -> np.ndarray:
            return np.array([r[name] for r in rows], dtype=dtype) if rows else np.zeros(0, dtype=dtype)

        return cls(col("index", np.int64), col("given_label", np.int64), col("suggested_label", np.int64),
                   col("score", np.float64), col("weight", np.float64))

    def evaluate(self, corrupted: Any, k: int | None = None) -> dict[str, float]:
        """Scores the ranking against a known corruption mask.

        Args:
            corrupted: boolean mask ``(N,)`` in training-set order.
            k: how many top-ranked examples to flag (default: the number of corrupted examples).

        Returns:
            ``precision`` and ``recall`` at ``k``, ``auc`` (ROC AUC of the score for "corrupted";
            ties count 1/2, unscored examples count as score 0) and ``k``.

        Raises:
            ShapeError: the mask's length differs from the number of examples.
        """
        m = np.asarray(corrupted).astype(bool)
        if m.ndim != 1 or m.shape[0] != len(self):
            raise ShapeError(f"corrupted: expected a mask of shape ({len(self)},), got {m.shape}")
        n_bad = int(m.sum())
        k = n_bad if k is None else int(k)
        flagged = np.zeros(len(self), dtype=bool)
        flagged[self.index[:k]] = True
        tp = int((flagged & m).sum())
        s = np.nan_to_num(self.scores_by_index(), nan=0.0)
        return {
            "k": float(k),
            "precision": tp / k if k > 0 else float("nan"),
            "recall": tp / n_bad if n_bad > 0 else float("nan"),
            "auc": _auc(s, m),
        }

    def suggestion_accuracy(self, true_labels: Any, corrupted: Any) -> float:
        """Share of the corrupted examples whose suggested label is their true label."""
        t = np.asarray(true_labels)
        m = np.asarray(corrupted).astype(bool)
        if t.shape != (len(self),) or m.shape != (len(self),):
            raise ShapeError(f"true_labels, corrupted: expected shape ({len(self)},)")
        sug = np.empty(len(self), dtype=np.int64)
        sug[self.index] = self.suggested_label
        return float((sug[m] == t[m]).mean()) if m.any() else float("nan")


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``positive`` (Mann-Whitney, ties 1/2)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks of ``v`` ascending, ties sharing their mean rank."""
    order = np.argsort(v, kind="mergesort")
    _, first, counts = np.unique(v[order], return_index=True, return_counts=True)
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks


def _as_weights(weights: Any, name: str) -> np.ndarray:
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise DTypeError(f"{name}: expected real per-example weights, got {type(weights).__name__}") from None
    if w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2:
        raise ShapeError(f"{name}: expected (N,) or (epochs, N) weights, got shape {w.shape}")
    if np.isinf(w).any():
        raise InvalidArgumentError(f"{name}: infinite weights (NaN marks an example not visited)")
    return w


def _last(last: Any, epochs: int) -> int:
    if last is None:
        return epochs
    if isinstance(last, bool) or not isinstance(last, (int, np.integer)) or last < 1:
        raise InvalidArgumentError(f"last: expected an integer >= 1 (epochs to average) or None, got {last!r}")
    if last > epochs:
        raise InvalidArgumentError(f"last: {last} epochs asked, but only {epochs} were recorded")
    return int(last)


def _from_history(history: Any) -> tuple[np.ndarray, np.ndarray | None]:
    recs = list(history)
    if not recs:
        raise StateError("history: empty (no epoch was trained)")
    ew = [r.example_weights for r in recs if r.example_weights is not None]
    if not ew:
        raise StateError(
            "history: no per-example weights were recorded; train with fit(..., record_weights=True)"
        )
    cw_list = [r.class_weights for r in recs if r.example_weights is not None]
    cw = np.stack(cw_list).astype(np.float64) if all(c is not None for c in cw_list) else None
    return np.stack(ew).astype(np.float64), cw


def label_issues(
    weights: Any,
    labels: Any,
    *,
    class_weights: Any = None,
    predicted: Any = None,
    last: int | None = None,
    history: Any = None,
    x: Any = None,
) -> LabelIssues:
    """Ranks training examples by how likely their label is wrong, from the weights a
    meta-reweighting run (L2RW, MW-Net, GDW, LAW) gave them: low weight = suspect.

    Args:
        weights: the run, as one of
            - per-example weights ``(N,)`` or per-epoch weights ``(epochs, N)`` (NaN = not visited);
            - a :class:`~metaweight.History` from ``fit(record_weights=True)`` (GDW's class
              weights are taken from it);
            - a :class:`~metaweight.Trainer`, with ``history=`` (and optionally ``x=``, its
              training inputs, for the suggested labels);
            - a :class:`metaweight.law.StrategyRun` (its per-epoch weights; with ``x=``, its
              trainer's predictions are the suggested labels).
        labels: the training labels as given (noisy), ``(N,)``.
        class_weights: GDW's class-level weights ``(N, C)`` or ``(epochs, N, C)``: the off-label
            class with the smallest weight in most epochs is the suggested label (see the module's
            notes).
        predicted: the model's predicted classes ``(N,)``, the suggested label when there are no
            class weights (default: the given label).
        last: average the weights of the last ``last`` epochs only (default: every epoch).
        history: with a Trainer: the History of its ``fit(record_weights=True)``.
        x: with a Trainer or StrategyRun: the training inputs, to suggest the model's predictions.

    Returns:
        A :class:`LabelIssues`, most suspect first (ties keep training-set order).

    Raises:
        StateError: the run recorded no per-example weights (train with ``record_weights=True``),
            or a Trainer was given without its ``history``.
        ShapeError: weights, labels, class weights or predictions disagree in length.
        InvalidArgumentError: ``last`` is not an integer in ``[1, epochs]``, weights are infinite.
        DTypeError: non-numeric weights or labels.
    """
    from .law import StrategyRun
    from .trainer import History, Trainer

    if isinstance(weights, Trainer):
        trainer = weights
        if history is None:
            raise StateError("label_issues(trainer, labels): pass history= (the History of fit(record_weights=True))")
        weights = history
        if predicted is None and x is not None:
            predicted = trainer.predict(x)
    elif isinstance(weights, StrategyRun):
        run = weights
        if run.epoch_weights is not None:
            weights = run.epoch_weights
        else:
            weights = run.example_weights[run.warmup_stages:]
        if predicted is None and x is not None:
            predicted = run.trainer.predict(x)
    elif history is not None:
        raise InvalidArgumentError("history: only with a Trainer as the first argument")
    elif x is not None:
        raise InvalidArgumentError("x: only with a Trainer or a StrategyRun as the first argument")
    if isinstance(weights, History):
        weights, cw_hist = _from_history(weights)
        if class_weights is None:
            class_weights = cw_hist
    w = _as_weights(weights, "weights")
    epochs, n = w.shape
    k = _last(last, epochs)
    w = w[epochs - k:]

    y = np.asarray(labels)
    if y.dtype.kind not in "iub":
        raise DTypeError(f"labels: expected integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.shape != (n,):
        raise ShapeError(f"labels: expected shape ({n},) (the weights' examples), got {y.shape}")

    visited = ~np.isnan(w)
    cnt = visited.sum(axis=0)
    mean_w = np.where(cnt > 0, np.where(visited, w, 0.0).sum(axis=0) / np.maximum(cnt, 1), np.nan)
    ok = ~np.isnan(mean_w)
    # Score: the fraction of scored examples weighing at least as much (ties share their mean rank).
    score = np.full(n, np.nan)
    if ok.any():
        r = _average_ranks(-mean_w[ok])  # rank 1 = the highest weight
        score[ok] = r / ok.sum()

    if class_weights is not None:
        cw = np.asarray(class_weights, dtype=np.float64)
        if cw.ndim == 2:
            cw = cw[None]
        if cw.ndim != 3 or cw.shape[1] != n:
            raise ShapeError(f"class_weights: expected (N, C) or (epochs, N, C) with N = {n}, got {cw.shape}")
        if cw.shape[0] >= k:
            cw = cw[cw.shape[0] - k:]
        c = cw.shape[2]
        if (y >= c).any() or (y < 0).any():
            raise ShapeError(f"labels: outside [0, {c}) (the class weights' classes)")
        # Per epoch, the off-label class with the smallest class weight; the suggestion is the
        # class chosen in most epochs (ties: the lowest class). Epochs whose off-label weights are
        # all equal (or NaN: not visited) carry no vote.
        votes = np.zeros((n, c))
        rows = np.arange(n)
        for e in range(cw.shape[0]):
            off = cw[e].copy()
            off[rows, y] = np.nan
            ok_e = ~np.isnan(off).all(axis=1)
            with np.errstate(invalid="ignore"):
                lo = np.nanmin(np.where(ok_e[:, None], off, 0.0), axis=1)
                hi = np.nanmax(np.where(ok_e[:, None], off, 0.0), axis=1)
            ok_e &= hi > lo
            off[np.isnan(off)] = np.inf
            pick = np.argmin(off, axis=1)
            votes[rows[ok_e], pick[ok_e]] += 1
        votes[rows, y] = -1.0
        suggested = np.argmax(votes, axis=1).astype(np.int64)
        never = votes.max(axis=1) <= 0
        suggested[never] = y[never]
    elif predicted is not None:
        suggested = np.asarray(predicted)
        if suggested.dtype.kind not in "iub":
            raise DTypeError(f"predicted: expected integer classes, got dtype {suggested.dtype}")
        suggested = suggested.astype(np.int64)
        if suggested.shape != (n,):
            raise ShapeError(f"predicted: expected shape ({n},), got {suggested.shape}")
    else:
        suggested = y.copy()

    key = np.where(ok, -np.nan_to_num(score, nan=0.0), np.inf)
    order = np.argsort(key, kind="mergesort")
    return LabelIssues(
        index=order.astype(np.int64),
        given_label=y[order],
        suggested_label=suggested[order],
        score=score[order],
        weight=mean_w[order],
    )
