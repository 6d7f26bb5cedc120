"""The data conditions the papers train under: label noise, class imbalance, the clean meta set.

Every function is a deterministic function of its ``seed`` (an int, or a numpy ``Generator`` to
draw from) and reports exactly which examples it changed:

* label noise (:func:`uniform_noise`, :func:`flip_noise`, :func:`background_flip`,
  :func:`transition_noise`) returns a :class:`Corruption`: the new labels, a ``corrupted`` mask
  that is ``True`` exactly where the new label differs from the given one, a ``resampled`` mask of
  the examples the process touched (a resampled label may land on its own class), and the noise
  transition matrix;
* subsampling (:func:`long_tailed`, :func:`two_class_imbalance`) returns a :class:`Subsample`:
  indices into the input plus the labels of the selected examples;
* :func:`meta_split` returns a :class:`MetaSplit`: a class-balanced clean meta set and the
  disjoint training remainder, as indices.

Conditions combine by indexing; :func:`compose` does the usual order (meta set first, then the
long-tailed subsample of the remainder, then label noise on that subsample), so its
``corrupted`` mask refers to the final training set. By hand::

    ms = meta_split(y, per_class=10, num_classes=10, seed=0)
    lt = long_tailed(y[ms.train_indices], imbalance_factor=100, num_classes=10, seed=1)
    train_idx = ms.train_indices[lt.indices]          # indices into the original arrays
    noise = uniform_noise(y[train_idx], rate=0.4, num_classes=10, seed=2)
    x_train, y_train = x[train_idx], noise.labels     # noise.corrupted aligns with x_train
    x_meta, y_meta = x[ms.meta_indices], y[ms.meta_indices]

Conventions for ambiguous points of the papers are documented in each function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _core
from ._validate import is_finite_number
from .data import (
    SeedLike,
    _as_labels,
    _check_fraction,
    _check_int,
    _check_num_classes,
    _check_xy,
    _rng,
)

__all__ = [
    "Composed",
    "Corruption",
    "MetaSplit",
    "Subsample",
    "background_flip",
    "compose",
    "flip_noise",
    "long_tailed",
    "meta_split",
    "transition_noise",
    "two_class_imbalance",
    "uniform_noise",
]


# ----------------------------------------------------------------------------------------------
# Result types
# ----------------------------------------------------------------------------------------------


#: Largest class count of the conditions (they build dense C × C transition matrices).
MAX_CLASSES = 10_000


def _classes(num_classes: Any, minimum: int = 1) -> int:
    c = _check_num_classes(num_classes, minimum)
    if c > MAX_CLASSES:
        raise _core.InvalidArgumentError(
            f"num_classes: expected at most {MAX_CLASSES} (a C x C transition matrix is built), got {c}"
        )
    return c


@dataclass(frozen=True)
class Corruption:
    """Result of a label-noise process.

    Attributes:
        labels: The new (observed) labels, int64, same length as the input.
        corrupted: Bool mask, ``True`` exactly where ``labels`` differs from the input labels.
        resampled: Bool mask of the examples the process acted on; it includes examples whose
            resampled label happened to equal the true one (so ``corrupted`` implies
            ``resampled``).
        transition: The ``(C, C)`` matrix T with ``T[i, j] = P(observed j | true i)`` that the
            process samples from (for :func:`background_flip`, the expected matrix).
        description: One line describing the process.
        params: The arguments used, for logging and reproduction.
    """

    labels: np.ndarray
    corrupted: np.ndarray
    resampled: np.ndarray
    transition: np.ndarray
    description: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def noise_rate(self) -> float:
        """The fraction of labels that actually changed."""
        return float(self.corrupted.mean()) if self.corrupted.size else 0.0

    @property
    def clean(self) -> np.ndarray:
        """Bool mask of the labels left unchanged (``~corrupted``)."""
        return ~self.corrupted


@dataclass(frozen=True)
class Subsample:
    """Result of a subsampling condition.

    Attributes:
        indices: Selected example indices into the input, int64, sorted ascending.
        labels: Labels of the selected examples (relabelled for :func:`two_class_imbalance`).
        counts: Examples per (new) class in the selection.
        description: One line describing the condition.
        params: The arguments used.
    """

    indices: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    description: str
    params: dict[str, Any] = field(default_factory=dict)

    def take(self, x: np.ndarray) -> np.ndarray:
        """Returns ``x[indices]``: the selected rows of an array aligned with the input labels.

        Args:
            x: An array whose first axis matches the labels the subsample was drawn from.

        Returns:
            The selected rows.
        """
        rows: np.ndarray = np.asarray(x)[self.indices]
        return rows


@dataclass(frozen=True)
class MetaSplit:
    """A class-balanced clean meta set and the disjoint training remainder.

    Attributes:
        meta_indices: Indices of the meta set, ``per_class`` per class, sorted ascending.
        train_indices: Every other index, sorted ascending.
        per_class: Meta examples per class.
        params: The arguments used.
    """

    meta_indices: np.ndarray
    train_indices: np.ndarray
    per_class: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Composed:
    """A training set under combined conditions plus its clean meta set (see :func:`compose`).

    Attributes:
        x_train: Training features.
        y_train: Observed (possibly noisy) training labels, int64.
        y_train_clean: True training labels.
        corrupted: Bool mask over the final training set, ``y_train != y_train_clean``.
        train_indices: Indices of the training examples in the input arrays.
        x_meta: Clean meta features (empty when ``meta_per_class == 0``).
        y_meta: Clean meta labels.
        meta_indices: Indices of the meta examples in the input arrays.
        steps: Descriptions of the conditions applied, in order.
        corruption: The :class:`Corruption`, or ``None`` without noise.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    y_train_clean: np.ndarray
    corrupted: np.ndarray
    train_indices: np.ndarray
    x_meta: np.ndarray
    y_meta: np.ndarray
    meta_indices: np.ndarray
    steps: tuple[str, ...]
    corruption: Corruption | None = None


# ----------------------------------------------------------------------------------------------
# Label noise
# ----------------------------------------------------------------------------------------------


def _finish(
    y: np.ndarray,
    new: np.ndarray,
    resampled: np.ndarray,
    transition: np.ndarray,
    description: str,
    params: dict[str, Any],
) -> Corruption:
    return Corruption(
        labels=new.astype(np.int64, copy=False),
        corrupted=new != y,
        resampled=resampled,
        transition=transition,
        description=description,
        params=params,
    )


def uniform_noise(
    y: np.ndarray,
    rate: float,
    num_classes: int,
    seed: SeedLike = 0,
    include_true_class: bool = True,
) -> Corruption:
    """Uniform (symmetric) label noise.

    Each label independently, with probability ``rate``, is replaced by a class drawn uniformly:

    * ``include_true_class=True`` (default): from all C classes, the MW-Net/GDW code's
      transition matrix ``T = rate * J / C + (1 - rate) * I``. The drawn class can be the true
      one, so the expected fraction of changed labels is ``rate * (C - 1) / C``.
    * ``include_true_class=False``: from the C - 1 other classes, so every resampled label
      changes and the expected changed fraction is ``rate``
      (``T = (1 - rate) * I + rate * (J - I) / (C - 1)``).

    Args:
        y: True labels, 1-D integers in ``[0, num_classes)``.
        rate: Resampling probability r in [0, 1].
        num_classes: Number of classes C (>= 2).
        seed: Seed or numpy Generator.
        include_true_class: Whether the uniform draw can return the true class.

    Returns:
        A :class:`Corruption`; ``resampled`` marks the examples whose label was redrawn.

    Raises:
        InvalidArgumentError: For a rate outside [0, 1], ``num_classes`` < 2 or a bad seed
            (LabelError for labels outside ``[0, num_classes)``).
    """
    c = _classes(num_classes, 2)
    labels = _as_labels(y, c)
    r = _check_fraction(rate, "rate")
    rng = _rng(seed)
    n = labels.shape[0]
    resampled = rng.random((n,)) < r
    new = labels.copy()
    k = int(resampled.sum())
    if include_true_class:
        new[resampled] = rng.integers(0, c, size=k)
        transition = r * np.full((c, c), 1.0 / c) + (1.0 - r) * np.eye(c)
    else:
        new[resampled] = (labels[resampled] + rng.integers(1, c, size=k)) % c
        transition = (1.0 - r) * np.eye(c) + r * (np.ones((c, c)) - np.eye(c)) / (c - 1)
    pool = "all classes" if include_true_class else "the other classes"
    return _finish(
        labels,
        new,
        resampled,
        transition,
        f"uniform noise: rate {r:g}, class drawn from {pool} (C={c})",
        {"kind": "uniform", "rate": r, "num_classes": c, "include_true_class": bool(include_true_class)},
    )


def _flip_mapping(mapping: Any, c: int, targets: int, rng: np.random.Generator) -> np.ndarray:
    """Returns a (C, targets) int64 array of flip targets, validated."""
    if mapping is None:
        m = (np.arange(c)[:, None] + np.arange(1, targets + 1)[None, :]) % c
    elif isinstance(mapping, str):
        if mapping != "random":
            raise _core.InvalidArgumentError(
                f"mapping: expected None, 'random' or an array of target classes, got {mapping!r}"
            )
        m = np.empty((c, targets), dtype=np.int64)
        for i in range(c):
            others = np.delete(np.arange(c), i)
            m[i] = rng.choice(others, size=targets, replace=False)
    else:
        arr = np.asarray(mapping)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise _core.DTypeError(f"mapping: expected integer class indices, got dtype {arr.dtype}")
        if targets == 1 and arr.shape == (c,):
            arr = arr[:, None]
        if arr.shape != (c, targets):
            want = f"({c},) or ({c}, 1)" if targets == 1 else f"({c}, {targets})"
            raise _core.ShapeError(f"mapping: expected shape {want} for targets={targets}, got {arr.shape}")
        m = arr.astype(np.int64)
        if m.min() < 0 or m.max() >= c:
            raise _core.InvalidArgumentError(
                f"mapping: target classes must lie in [0, {c}), got {m.tolist()}"
            )
        for i in range(c):
            if i in m[i]:
                raise _core.InvalidArgumentError(f"mapping: class {i} maps to itself ({m[i].tolist()})")
            if len(set(m[i].tolist())) != targets:
                raise _core.InvalidArgumentError(f"mapping: class {i} has repeated targets {m[i].tolist()}")
    return m.astype(np.int64)


def flip_noise(
    y: np.ndarray,
    rate: float,
    num_classes: int,
    seed: SeedLike = 0,
    targets: int = 1,
    mapping: Any = None,
) -> Corruption:
    """Flip (pair / structured) label noise: each class flips to fixed other classes.

    With ``targets=1`` a label of class c becomes ``mapping[c]`` with probability ``rate``; with
    ``targets=2`` it becomes ``mapping[c][0]`` or ``mapping[c][1]`` with probability ``rate / 2``
    each (total ``rate``). Every flip changes the label, so the expected changed fraction is
    ``rate``.

    Target classes (``mapping``):

    * ``None`` (default): cyclic, ``c -> (c + 1) mod C`` (and ``(c + 2) mod C`` as the second
      target), the common "pair flip" convention; deterministic and independent of the seed.
    * ``"random"``: the MW-Net/GDW official code's ``flip_labels_C`` / ``flip_labels_C_two``: for
      each class, one (two distinct) other classes drawn at random from the seed.
    * an int array of shape ``(C,)`` / ``(C, 1)`` (``targets=1``) or ``(C, 2)`` (``targets=2``).

    Args:
        y: True labels, 1-D integers in ``[0, num_classes)``.
        rate: Total flip probability r in [0, 1].
        num_classes: Number of classes C (>= 2, >= 3 for two targets).
        seed: Seed or numpy Generator.
        targets: 1 or 2 fixed target classes per class.
        mapping: The target classes, see above.

    Returns:
        A :class:`Corruption`; ``params["mapping"]`` holds the ``(C, targets)`` targets used.

    Raises:
        InvalidArgumentError: For a rate outside [0, 1], ``targets`` not 1 or 2, too few classes, or
            an invalid mapping (a class mapping to itself, repeated or out-of-range targets).
        ShapeError: For a mapping of the wrong shape.
    """
    t = _check_int(targets, "targets", 1)
    if t not in (1, 2):
        raise _core.InvalidArgumentError(f"targets: expected 1 or 2, got {targets!r}")
    c = _classes(num_classes, t + 1)
    labels = _as_labels(y, c)
    r = _check_fraction(rate, "rate")
    rng = _rng(seed)
    m = _flip_mapping(mapping, c, t, rng)
    u = rng.random((labels.shape[0],))
    resampled = u < r
    new = labels.copy()
    if t == 1:
        new[resampled] = m[labels[resampled], 0]
    else:
        first = u < r / 2.0
        second = resampled & ~first
        new[first] = m[labels[first], 0]
        new[second] = m[labels[second], 1]
    transition = (1.0 - r) * np.eye(c)
    for i in range(c):
        transition[i, m[i]] += r / t
    kind = "cyclic" if mapping is None else ("random" if isinstance(mapping, str) else "given")
    return _finish(
        labels,
        new,
        resampled,
        transition,
        f"flip noise: rate {r:g} to {t} fixed other class(es) per class ({kind} mapping, C={c})",
        {
            "kind": "flip",
            "rate": r,
            "num_classes": c,
            "targets": t,
            "mapping": m.copy(),
            "mapping_kind": kind,
        },
    )


def background_flip(y: np.ndarray, rate: float, background_class: int, seed: SeedLike = 0) -> Corruption:
    """L2RW's BackgroundFlip: a fraction ``rate`` of labels flips to one background class.

    As in the L2RW code (``_flip_data_background``), exactly ``floor(rate * N)`` examples, chosen
    uniformly without replacement among *all* N labels, get the background label. Examples that
    already had it are ``resampled`` but not ``corrupted``, so the changed fraction is
    ``rate * (1 - fraction of background labels)`` on average.

    Args:
        y: True labels, 1-D non-negative integers.
        rate: Fraction r in [0, 1] of labels set to the background class.
        background_class: The background class b (>= 0). The number of classes C (for the
            transition matrix) is ``max(max(y), b) + 1``.
        seed: Seed or numpy Generator.

    Returns:
        A :class:`Corruption`; ``transition`` is the expected matrix
        ``(1 - r) * I + r * e_b`` (every row moves mass r to column b).

    Raises:
        InvalidArgumentError: For a rate outside [0, 1] or a negative background class
            (LabelError for negative labels).
    """
    b = _check_int(background_class, "background_class", 0)
    labels = _as_labels(y)
    if labels.size and labels.min() < 0:
        raise _core.LabelError(f"y: labels must be non-negative, got {labels.min()}")
    r = _check_fraction(rate, "rate")
    rng = _rng(seed)
    n = labels.shape[0]
    c = max(int(labels.max()) if n else 0, b) + 1
    if c > MAX_CLASSES:
        raise _core.InvalidArgumentError(
            f"y, background_class: they give {c} classes; expected at most {MAX_CLASSES} (a C x C transition "
            f"matrix is built), got background_class {b} and labels up to {int(labels.max()) if n else 0}"
        )
    k = int(np.floor(r * n + 1e-9))
    chosen = rng.choice(n, size=k, replace=False) if k else np.empty(0, dtype=np.int64)
    resampled = np.zeros(n, dtype=bool)
    resampled[chosen] = True
    new = labels.copy()
    new[resampled] = b
    transition = (1.0 - r) * np.eye(c)
    transition[:, b] += r
    return _finish(
        labels,
        new,
        resampled,
        transition,
        f"background flip: {k} of {n} labels (rate {r:g}) set to class {b}",
        {"kind": "background", "rate": r, "background_class": b, "num_flipped": k},
    )


def transition_noise(y: np.ndarray, transition: np.ndarray, seed: SeedLike = 0) -> Corruption:
    """General label noise: each label of class i is redrawn from row i of a transition matrix.

    Args:
        y: True labels, 1-D integers in ``[0, C)``.
        transition: ``(C, C)`` row-stochastic matrix, ``T[i, j] = P(observed j | true i)``.
        seed: Seed or numpy Generator.

    Returns:
        A :class:`Corruption`; every example counts as ``resampled``.

    Raises:
        ShapeError: If ``transition`` is not square.
        InvalidArgumentError: If a row has negative entries or does not sum to 1.
    """
    try:
        t = np.asarray(transition, dtype=np.float64)
    except (TypeError, ValueError):
        raise _core.DTypeError(
            f"transition: expected a (C, C) matrix of real numbers, got {transition!r:.80}"
        ) from None
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 1:
        raise _core.ShapeError(f"transition: expected a square (C, C) matrix, got shape {t.shape}")
    c = t.shape[0]
    if not np.all(np.isfinite(t)) or t.min() < 0 or not np.allclose(t.sum(axis=1), 1.0, atol=1e-6):
        raise _core.InvalidArgumentError("transition: every row must be non-negative and sum to 1")
    labels = _as_labels(y, c)
    rng = _rng(seed)
    cdf = np.cumsum(t, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random((labels.shape[0],))
    new = (u[:, None] >= cdf[labels]).sum(axis=1).astype(np.int64)
    return _finish(
        labels,
        np.minimum(new, c - 1),
        np.ones(labels.shape[0], dtype=bool),
        t.copy(),
        f"transition-matrix noise (C={c})",
        {"kind": "transition", "num_classes": c},
    )


# ----------------------------------------------------------------------------------------------
# Imbalance and the meta set
# ----------------------------------------------------------------------------------------------


def _check_at_least_one(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _core.InvalidArgumentError(f"{name}: expected a number >= 1, got {value!r}")
    if not is_finite_number(value) or float(value) < 1.0:
        raise _core.InvalidArgumentError(f"{name}: expected a number >= 1, got {value!r}")
    return float(value)


def long_tailed(
    y: np.ndarray,
    imbalance_factor: float,
    num_classes: int,
    seed: SeedLike = 0,
    n_max: int | None = None,
) -> Subsample:
    """Long-tailed subsample: ``n_c = floor(n_max * mu ** (c / (C - 1)))``, ``mu = 1 / imbalance_factor``.

    Class 0 keeps ``n_max`` examples and class C-1 keeps ``n_max / imbalance_factor`` (the MW-Net
    code's ``img_max * (imb_factor ** (c / (C - 1)))`` with ``int`` truncation), at least 1 each.
    Which examples of a class are kept is a seeded random choice. ``imbalance_factor = 1`` keeps
    ``n_max`` of every class (everything, for a balanced input with the default ``n_max``).

    Args:
        y: Labels, 1-D integers in ``[0, num_classes)``.
        imbalance_factor: ``n_max / n_min`` >= 1.
        num_classes: Number of classes C.
        seed: Seed or numpy Generator.
        n_max: Size of the largest (first) class; default: the smallest class count in ``y``, so
            that every class can supply its share (equal to the per-class count for balanced
            data such as CIFAR).

    Returns:
        A :class:`Subsample` (indices sorted ascending; ``counts[c] = n_c``).

    Raises:
        InvalidArgumentError: For ``imbalance_factor`` < 1, a bad ``n_max``, or a class with fewer
            examples than its target (or none at all).
    """
    c = _classes(num_classes)
    labels = _as_labels(y, c)
    f = _check_at_least_one(imbalance_factor, "imbalance_factor")
    rng = _rng(seed)
    avail = np.bincount(labels, minlength=c)
    if n_max is None:
        top = int(avail.min())
        if top == 0:
            empty = np.flatnonzero(avail == 0).tolist()
            raise _core.InvalidArgumentError(
                f"y: class(es) {empty} have no examples; cannot build a long tail"
            )
    else:
        top = _check_int(n_max, "n_max", 1)
    mu = 1.0 / f
    expo = np.arange(c) / (c - 1) if c > 1 else np.zeros(1)
    want = np.maximum(np.floor(top * mu**expo + 1e-9).astype(np.int64), 1)
    short = np.flatnonzero(want > avail)
    if short.size:
        k = int(short[0])
        raise _core.InvalidArgumentError(
            f"n_max: class {k} needs {want[k]} examples for n_max={top}, "
            f"imbalance_factor={f:g} but has {avail[k]}"
        )
    chosen = []
    for k in range(c):
        idx = np.flatnonzero(labels == k)
        chosen.append(idx[rng.permutation(idx.shape[0])[: want[k]]])
    indices = np.sort(np.concatenate(chosen)).astype(np.int64)
    return Subsample(
        indices=indices,
        labels=labels[indices],
        counts=want.copy(),
        description=f"long-tailed: imbalance factor {f:g}, n_max {top}, n_min {int(want[-1])} (C={c})",
        params={"kind": "long_tailed", "imbalance_factor": f, "num_classes": c, "n_max": top},
    )


def two_class_imbalance(
    y: np.ndarray,
    classes: tuple[int, int] = (4, 9),
    majority: int = 9,
    ratio: float = 100.0,
    total: int | None = 5000,
    seed: SeedLike = 0,
) -> Subsample:
    """L2RW's imbalanced binary task (MNIST: 5,000 images of digits 4 and 9, 9 dominating).

    The L2RW paper: "We select a total of 5,000 images ... on class 4 and 9, where 9 dominates
    the training data distribution", with imbalance ratios up to 200:1. As in its code
    (``get_imbalance_dataset(class_0=4, class_1=9)``) labels are ``classes[0] -> 0`` and
    ``classes[1] -> 1``, so by default the minority digit 4 is label 0 and the majority digit 9
    is label 1. The minority class gets ``round(total / (1 + ratio))`` examples (at least 1) and
    the majority the rest. The L2RW meta and test sets are class-balanced: draw the meta set
    first with :func:`meta_split` on the two classes and apply this to the remainder.

    Args:
        y: Labels (e.g. MNIST digits), 1-D non-negative integers.
        classes: The two original classes, in the order of the new labels 0 and 1.
        majority: Which of ``classes`` is the majority.
        ratio: Majority : minority ratio, >= 1 (L2RW goes up to 200).
        total: Images in the result; ``None`` uses as many as the data allow at this ratio.
        seed: Seed or numpy Generator.

    Returns:
        A :class:`Subsample` whose ``labels`` are the new 0/1 labels and ``counts`` their counts;
        ``params`` records ``n_majority`` and ``n_minority``.

    Raises:
        InvalidArgumentError: For equal or negative classes, a majority not in ``classes``,
            ``ratio`` < 1, or too few examples for ``total`` at ``ratio``.
    """
    labels = _as_labels(y)
    if len(classes) != 2:
        raise _core.InvalidArgumentError(f"classes: expected two classes, got {classes!r}")
    a = _check_int(classes[0], "classes[0]", 0)
    b = _check_int(classes[1], "classes[1]", 0)
    if a == b:
        raise _core.InvalidArgumentError(f"classes: the two classes must differ, got {classes!r}")
    maj = _check_int(majority, "majority", 0)
    if maj not in (a, b):
        raise _core.InvalidArgumentError(f"majority: expected one of classes {classes!r}, got {majority!r}")
    q = _check_at_least_one(ratio, "ratio")
    mino = b if maj == a else a
    rng = _rng(seed)
    idx_maj = np.flatnonzero(labels == maj)
    idx_min = np.flatnonzero(labels == mino)
    if total is None:
        n_min = min(idx_min.shape[0], int(np.floor(idx_maj.shape[0] / q + 1e-9)))
        n_maj = min(idx_maj.shape[0], round(n_min * q))
        if n_min < 1:
            raise _core.InvalidArgumentError(
                f"y: {idx_maj.shape[0]} majority and {idx_min.shape[0]} minority examples "
                f"are too few for ratio {q:g}"
            )
    else:
        tot = _check_int(total, "total", 2)
        n_min = max(1, round(tot / (1.0 + q)))
        n_maj = tot - n_min
        if n_maj > idx_maj.shape[0] or n_min > idx_min.shape[0]:
            raise _core.InvalidArgumentError(
                f"total: {tot} at ratio {q:g} needs {n_maj} of class {maj} and {n_min} of class {mino}, "
                f"but y has {idx_maj.shape[0]} and {idx_min.shape[0]}"
            )
    pick_maj = idx_maj[rng.permutation(idx_maj.shape[0])[:n_maj]]
    pick_min = idx_min[rng.permutation(idx_min.shape[0])[:n_min]]
    indices = np.sort(np.concatenate([pick_maj, pick_min])).astype(np.int64)
    new = (labels[indices] == b).astype(np.int64)
    return Subsample(
        indices=indices,
        labels=new,
        counts=np.bincount(new, minlength=2).astype(np.int64),
        description=f"two-class imbalance: {n_maj} x class {maj} vs {n_min} x class {mino} (ratio {q:g}:1)",
        params={
            "kind": "two_class",
            "classes": (a, b),
            "majority": maj,
            "minority": mino,
            "ratio": q,
            "n_majority": int(n_maj),
            "n_minority": int(n_min),
        },
    )


def meta_split(y: np.ndarray, per_class: int, num_classes: int, seed: SeedLike = 0) -> MetaSplit:
    """Draws a class-balanced clean meta set, disjoint from the training remainder.

    As in the MW-Net/GDW code (``num_meta`` per class taken from the training set before noise or
    imbalance is applied) and L2RW (10 clean images per class for BackgroundFlip).

    Args:
        y: Clean labels, 1-D integers in ``[0, num_classes)``.
        per_class: Meta examples per class (>= 0; the papers use 10 or 100).
        num_classes: Number of classes C.
        seed: Seed or numpy Generator.

    Returns:
        A :class:`MetaSplit`; ``meta_indices`` holds ``per_class * C`` indices and
        ``train_indices`` the rest.

    Raises:
        InvalidArgumentError: If some class has fewer than ``per_class`` examples, or for bad
            arguments.
    """
    c = _classes(num_classes)
    labels = _as_labels(y, c)
    k = _check_int(per_class, "per_class", 0)
    rng = _rng(seed)
    avail = np.bincount(labels, minlength=c)
    short = np.flatnonzero(avail < k)
    if short.size:
        detail = ", ".join(f"class {int(i)} has {int(avail[i])}" for i in short[:5])
        raise _core.InvalidArgumentError(
            f"per_class: {k} meta examples per class requested but {detail}"
            + (f" (and {short.size - 5} more)" if short.size > 5 else "")
        )
    meta = np.zeros(labels.shape[0], dtype=bool)
    for cls in range(c):
        idx = np.flatnonzero(labels == cls)
        meta[idx[rng.permutation(idx.shape[0])[:k]]] = True
    return MetaSplit(
        meta_indices=np.flatnonzero(meta).astype(np.int64),
        train_indices=np.flatnonzero(~meta).astype(np.int64),
        per_class=k,
        params={"per_class": k, "num_classes": c},
    )


# ----------------------------------------------------------------------------------------------
# Composition
# ----------------------------------------------------------------------------------------------

_NOISES = ("uniform", "flip", "flip2", "background")


def compose(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    seed: SeedLike = 0,
    *,
    meta_per_class: int = 0,
    imbalance_factor: float = 1.0,
    noise: str | None = None,
    noise_rate: float = 0.0,
    **noise_options: Any,
) -> Composed:
    """Applies the papers' conditions in their order and returns train and meta arrays.

    1. :func:`meta_split` draws ``meta_per_class`` clean examples per class (skipped for 0);
    2. :func:`long_tailed` subsamples the remainder (skipped for ``imbalance_factor == 1``);
    3. label noise on that training set: ``noise`` is ``"uniform"`` (:func:`uniform_noise`),
       ``"flip"`` / ``"flip2"`` (:func:`flip_noise` with one / two targets), ``"background"``
       (:func:`background_flip`, pass ``background_class=``) or ``None``.

    The meta set is never corrupted, and ``corrupted`` refers to the final training set. Each
    step draws from its own child of ``np.random.SeedSequence(seed)``, so changing e.g. the noise
    rate leaves the meta set and the subsample unchanged.

    Args:
        x: Features, first axis N.
        y: Clean labels, 1-D integers in ``[0, num_classes)``.
        num_classes: Number of classes C.
        seed: Non-negative int seed (or a ``SeedSequence``; not a ``Generator``).
        meta_per_class: Meta examples per class (0 for none).
        imbalance_factor: Long-tail imbalance factor (>= 1).
        noise: Noise kind, see above.
        noise_rate: Noise rate r in [0, 1].
        **noise_options: Passed to the noise function (``include_true_class``, ``mapping``,
            ``background_class``).

    Returns:
        A :class:`Composed`.

    Raises:
        InvalidArgumentError: For an unknown noise kind or any invalid argument of the steps.
        ShapeError: If ``x`` and ``y`` disagree on N.
    """
    xa = np.asarray(x)
    c = _classes(num_classes)
    labels = _as_labels(y, c)
    _check_xy(xa, labels)
    if noise is not None and noise not in _NOISES:
        raise _core.InvalidArgumentError(f"noise: expected one of {_NOISES} or None, got {noise!r}")
    if isinstance(seed, np.random.Generator):
        raise _core.InvalidArgumentError("seed: compose needs an int seed (it spawns one stream per step)")
    _rng(seed)  # validates
    base = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    s_meta, s_tail, s_noise = base.spawn(3)
    steps: list[str] = []

    ms = meta_split(labels, meta_per_class, c, np.random.default_rng(s_meta))
    train_idx = ms.train_indices
    if ms.per_class:
        steps.append(f"meta set: {ms.per_class} per class ({ms.meta_indices.shape[0]} examples)")
    if _check_at_least_one(imbalance_factor, "imbalance_factor") != 1.0:
        lt = long_tailed(labels[train_idx], imbalance_factor, c, np.random.default_rng(s_tail))
        train_idx = train_idx[lt.indices]
        steps.append(lt.description)

    clean = labels[train_idx]
    corruption: Corruption | None = None
    if noise is not None:
        g = np.random.default_rng(s_noise)
        if noise == "uniform":
            corruption = uniform_noise(clean, noise_rate, c, g, **noise_options)
        elif noise in ("flip", "flip2"):
            corruption = flip_noise(
                clean, noise_rate, c, g, targets=1 if noise == "flip" else 2, **noise_options
            )
        else:
            bg = noise_options.get("background_class")
            if bg is None:
                raise _core.InvalidArgumentError("background_class: required for noise='background'")
            if _check_int(bg, "background_class", 0) >= c:
                raise _core.InvalidArgumentError(f"background_class: must lie in [0, {c}), got {bg}")
            corruption = background_flip(clean, noise_rate, seed=g, **noise_options)
        steps.append(corruption.description)
        observed = corruption.labels
        corrupted = corruption.corrupted
    else:
        if noise_options:
            raise _core.InvalidArgumentError(
                f"noise options {sorted(noise_options)} given without a noise kind"
            )
        observed = clean.copy()
        corrupted = np.zeros(clean.shape[0], dtype=bool)

    meta_idx = ms.meta_indices
    return Composed(
        x_train=xa[train_idx],
        y_train=observed,
        y_train_clean=clean,
        corrupted=corrupted,
        train_indices=train_idx,
        x_meta=xa[meta_idx],
        y_meta=labels[meta_idx],
        meta_indices=meta_idx,
        steps=tuple(steps),
        corruption=corruption,
    )
