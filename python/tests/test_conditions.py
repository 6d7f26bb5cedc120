"""Tests for metaweight.conditions: label noise, imbalance, meta split and their composition."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from metaweight import _core, conditions
from metaweight.data import class_counts

N = 20_000
C = 10


@pytest.fixture(scope="module")
def y() -> np.ndarray:
    """20,000 balanced labels in random order."""
    return np.random.default_rng(123).permutation(np.repeat(np.arange(C), N // C)).astype(np.int64)


def _check_mask(y: np.ndarray, res: conditions.Corruption) -> None:
    assert res.labels.dtype == np.int64 and res.labels.shape == y.shape
    assert res.corrupted.dtype == np.bool_
    np.testing.assert_array_equal(res.corrupted, res.labels != y)
    assert not np.any(res.corrupted & ~res.resampled)
    np.testing.assert_allclose(res.transition.sum(axis=1), 1.0)


# ----------------------------------------------------------------------------------------------
# uniform noise
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6, 1.0])
def test_uniform_noise_include_true_class(y: np.ndarray, rate: float) -> None:
    res = conditions.uniform_noise(y, rate, C, seed=0)
    _check_mask(y, res)
    assert abs(res.resampled.mean() - rate) < 0.015
    # effective flip rate r (C-1)/C: the uniform draw may return the true class
    assert abs(res.noise_rate - rate * (C - 1) / C) < 0.015
    expected = rate * np.full((C, C), 1.0 / C) + (1 - rate) * np.eye(C)
    np.testing.assert_allclose(res.transition, expected)
    if 0 < rate:
        # resampled labels are uniform over all classes, true class included
        same = (res.labels == y)[res.resampled].mean()
        assert abs(same - 1.0 / C) < 0.02


@pytest.mark.parametrize("rate", [0.2, 0.5, 1.0])
def test_uniform_noise_other_classes_only(y: np.ndarray, rate: float) -> None:
    res = conditions.uniform_noise(y, rate, C, seed=1, include_true_class=False)
    _check_mask(y, res)
    np.testing.assert_array_equal(res.corrupted, res.resampled)  # every draw changes the label
    assert abs(res.noise_rate - rate) < 0.015
    # targets of class 0 spread evenly over classes 1..9
    targets = res.labels[(y == 0) & res.corrupted]
    counts = np.bincount(targets, minlength=C)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] / targets.size - 1 / (C - 1)) < 0.04)
    np.testing.assert_allclose(np.diag(res.transition), 1 - rate)


def test_uniform_noise_empirical_transition(y: np.ndarray) -> None:
    res = conditions.uniform_noise(y, 0.4, C, seed=7)
    emp = np.zeros((C, C))
    np.add.at(emp, (y, res.labels), 1)
    emp /= emp.sum(axis=1, keepdims=True)
    assert np.max(np.abs(emp - res.transition)) < 0.04


def test_noise_seeds_reproduce_and_differ(y: np.ndarray) -> None:
    for fn in (
        lambda s: conditions.uniform_noise(y, 0.3, C, seed=s),
        lambda s: conditions.flip_noise(y, 0.3, C, seed=s),
        lambda s: conditions.flip_noise(y, 0.3, C, seed=s, targets=2, mapping="random"),
        lambda s: conditions.background_flip(y, 0.3, 3, seed=s),
    ):
        a, b, c = fn(5), fn(5), fn(6)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.corrupted, b.corrupted)
        assert not np.array_equal(a.labels, c.labels)
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    np.testing.assert_array_equal(
        conditions.uniform_noise(y, 0.3, C, seed=g1).labels,
        conditions.uniform_noise(y, 0.3, C, seed=g2).labels,
    )


def test_noise_does_not_modify_input(y: np.ndarray) -> None:
    before = y.copy()
    conditions.uniform_noise(y, 1.0, C, seed=0)
    conditions.flip_noise(y, 1.0, C, seed=0)
    conditions.background_flip(y, 1.0, 0, seed=0)
    np.testing.assert_array_equal(y, before)


# ----------------------------------------------------------------------------------------------
# flip noise
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_flip_noise_cyclic_default(y: np.ndarray, rate: float) -> None:
    res = conditions.flip_noise(y, rate, C, seed=0)
    _check_mask(y, res)
    np.testing.assert_array_equal(res.corrupted, res.resampled)
    assert abs(res.noise_rate - rate) < 0.015
    changed = res.corrupted
    np.testing.assert_array_equal(res.labels[changed], (y[changed] + 1) % C)
    np.testing.assert_array_equal(res.params["mapping"][:, 0], (np.arange(C) + 1) % C)
    for c in range(C):
        assert abs(res.corrupted[y == c].mean() - rate) < 0.05


def test_flip_noise_two_targets(y: np.ndarray) -> None:
    rate = 0.4
    res = conditions.flip_noise(y, rate, C, seed=2, targets=2)
    _check_mask(y, res)
    assert abs(res.noise_rate - rate) < 0.015
    changed = res.corrupted
    to_first = res.labels[changed] == (y[changed] + 1) % C
    to_second = res.labels[changed] == (y[changed] + 2) % C
    assert np.all(to_first | to_second)
    assert abs(to_first.mean() - 0.5) < 0.03  # rate split equally
    expected = (1 - rate) * np.eye(C)
    for c in range(C):
        expected[c, (c + 1) % C] += rate / 2
        expected[c, (c + 2) % C] += rate / 2
    np.testing.assert_allclose(res.transition, expected)


def test_flip_noise_explicit_and_random_mapping(y: np.ndarray) -> None:
    mapping = np.array([9, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    res = conditions.flip_noise(y, 0.5, C, seed=3, mapping=mapping)
    np.testing.assert_array_equal(res.labels[res.corrupted], mapping[y[res.corrupted]])
    rnd = conditions.flip_noise(y, 0.5, C, seed=3, targets=2, mapping="random")
    m = rnd.params["mapping"]
    assert m.shape == (C, 2)
    for c in range(C):
        assert c not in m[c] and m[c, 0] != m[c, 1]
        assert set(np.unique(rnd.labels[(y == c) & rnd.corrupted]).tolist()) == set(m[c].tolist())
    again = conditions.flip_noise(y, 0.5, C, seed=3, targets=2, mapping="random")
    np.testing.assert_array_equal(again.params["mapping"], m)


def test_flip_noise_bad_mapping(y: np.ndarray) -> None:
    with pytest.raises(_core.InvalidArgumentError, match="maps to itself"):
        conditions.flip_noise(y, 0.2, C, mapping=np.arange(C))
    with pytest.raises(_core.ShapeError, match="mapping"):
        conditions.flip_noise(y, 0.2, C, targets=2, mapping=(np.arange(C) + 1) % C)
    with pytest.raises(_core.InvalidArgumentError, match="repeated"):
        conditions.flip_noise(y, 0.2, C, targets=2, mapping=np.stack([(np.arange(C) + 1) % C] * 2, axis=1))
    with pytest.raises(_core.InvalidArgumentError, match="mapping"):
        conditions.flip_noise(y, 0.2, C, mapping=np.full(C, 10))
    with pytest.raises(_core.InvalidArgumentError, match="mapping"):
        conditions.flip_noise(y, 0.2, C, mapping="pairs")
    with pytest.raises(_core.InvalidArgumentError, match="targets"):
        conditions.flip_noise(y, 0.2, C, targets=3)
    with pytest.raises(_core.InvalidArgumentError, match="num_classes"):
        conditions.flip_noise(np.array([0, 1]), 0.2, 2, targets=2)


# ----------------------------------------------------------------------------------------------
# background flip
# ----------------------------------------------------------------------------------------------


def test_background_flip(y: np.ndarray) -> None:
    res = conditions.background_flip(y, 0.4, background_class=3, seed=0)
    _check_mask(y, res)
    assert res.resampled.sum() == int(0.4 * N)  # an exact fraction, as in the L2RW code
    assert np.all(res.labels[res.resampled] == 3)
    assert np.all(res.labels[res.corrupted] == 3)
    np.testing.assert_array_equal(res.corrupted, res.resampled & (y != 3))
    assert abs(res.noise_rate - 0.4 * (C - 1) / C) < 0.015
    assert res.transition[5, 3] == pytest.approx(0.4) and res.transition[3, 3] == pytest.approx(1.0)
    with pytest.raises(_core.InvalidArgumentError, match="background_class"):
        conditions.background_flip(y, 0.4, background_class=-1)


def test_transition_noise(y: np.ndarray) -> None:
    t = conditions.uniform_noise(y, 0.5, C).transition
    res = conditions.transition_noise(y, t, seed=4)
    _check_mask(y, res)
    assert abs(res.noise_rate - 0.5 * (C - 1) / C) < 0.015
    ident = conditions.transition_noise(y, np.eye(C), seed=0)
    assert not ident.corrupted.any()
    with pytest.raises(_core.InvalidArgumentError, match="sum to 1"):
        conditions.transition_noise(y, np.full((C, C), 0.5))
    with pytest.raises(_core.ShapeError):
        conditions.transition_noise(y, np.ones((C, C - 1)))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda y: conditions.uniform_noise(y, 1.5, C), "rate"),
        (lambda y: conditions.uniform_noise(y, -0.1, C), "rate"),
        (lambda y: conditions.uniform_noise(y, float("nan"), C), "rate"),
        (lambda y: conditions.uniform_noise(y, 0.1, 1), "num_classes"),
        (lambda y: conditions.uniform_noise(y, 0.1, 5), "outside"),
        (lambda y: conditions.uniform_noise(y, 0.1, C, seed=-3), "seed"),
        (lambda y: conditions.uniform_noise(y, 0.1, C, seed=1.5), "seed"),
        (lambda y: conditions.flip_noise(y, 2, C), "rate"),
        (lambda y: conditions.background_flip(y, 1.01, 0), "rate"),
    ],
)
def test_noise_bad_arguments(y: np.ndarray, call: Callable[[np.ndarray], object], match: str) -> None:
    with pytest.raises(_core.InvalidArgumentError, match=match):
        call(y)


def test_noise_label_validation() -> None:
    with pytest.raises(_core.DTypeError):
        conditions.uniform_noise(np.array([0.0, 1.0]), 0.1, C)
    with pytest.raises(_core.ShapeError):
        conditions.uniform_noise(np.zeros((2, 2), dtype=np.int64), 0.1, C)
    res = conditions.uniform_noise(np.array([], dtype=np.int64), 0.5, C)
    assert res.labels.shape == (0,) and res.noise_rate == 0.0


# ----------------------------------------------------------------------------------------------
# long-tailed and two-class imbalance
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 10, 50, 100, 200])
def test_long_tailed_counts_follow_formula(y: np.ndarray, factor: float) -> None:
    res = conditions.long_tailed(y, factor, C, seed=0)
    n_max = N // C
    expected = np.floor(n_max * (1 / factor) ** (np.arange(C) / (C - 1)) + 1e-9).astype(np.int64)
    np.testing.assert_array_equal(res.counts, expected)
    np.testing.assert_array_equal(class_counts(y[res.indices], C), expected)
    np.testing.assert_array_equal(res.labels, y[res.indices])
    assert res.counts.max() / res.counts.min() == pytest.approx(factor)
    assert np.all(np.diff(res.counts) <= 0)
    assert np.all(np.diff(res.indices) > 0)  # sorted, no repeats
    if factor == 1:
        np.testing.assert_array_equal(res.indices, np.arange(N))


def test_long_tailed_determinism_and_n_max(y: np.ndarray) -> None:
    a = conditions.long_tailed(y, 100, C, seed=1)
    b = conditions.long_tailed(y, 100, C, seed=1)
    c = conditions.long_tailed(y, 100, C, seed=2)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    small = conditions.long_tailed(y, 10, C, seed=0, n_max=500)
    assert small.counts[0] == 500 and small.counts[-1] == 50
    with pytest.raises(_core.InvalidArgumentError, match="needs"):
        conditions.long_tailed(y, 10, C, n_max=5000)
    with pytest.raises(_core.InvalidArgumentError, match="imbalance_factor"):
        conditions.long_tailed(y, 0.5, C)
    with pytest.raises(_core.InvalidArgumentError, match="no examples"):
        conditions.long_tailed(np.array([0, 0, 1]), 2, 3)


def test_two_class_imbalance_l2rw_defaults() -> None:
    digits = np.random.default_rng(0).integers(0, 10, size=60_000)
    res = conditions.two_class_imbalance(digits, ratio=99, total=5000, seed=0)
    sel = digits[res.indices]
    assert set(np.unique(sel).tolist()) == {4, 9}
    # 9 dominates (paper) and keeps label 1; 4 is the minority with label 0 (official code)
    assert (sel == 9).sum() == 4950 and (sel == 4).sum() == 50
    np.testing.assert_array_equal(res.labels, (sel == 9).astype(np.int64))
    np.testing.assert_array_equal(res.counts, [50, 4950])
    assert res.params["majority"] == 9 and res.params["n_minority"] == 50
    again = conditions.two_class_imbalance(digits, ratio=99, total=5000, seed=0)
    np.testing.assert_array_equal(again.indices, res.indices)
    assert np.array_equal(res.take(np.arange(60_000)), res.indices)


def test_two_class_imbalance_options_and_errors() -> None:
    digits = np.repeat(np.arange(10), 1000)
    r200 = conditions.two_class_imbalance(digits, ratio=200, total=1005, seed=1)
    assert r200.params["n_minority"] == 5 and r200.params["n_majority"] == 1000
    swapped = conditions.two_class_imbalance(digits, classes=(4, 9), majority=4, ratio=10, total=1100)
    assert (digits[swapped.indices] == 4).sum() == 1000
    whole = conditions.two_class_imbalance(digits, ratio=50, total=None)
    assert whole.params["n_majority"] == 1000 and whole.params["n_minority"] == 20
    with pytest.raises(_core.InvalidArgumentError, match="total"):
        conditions.two_class_imbalance(digits, ratio=2, total=5000)
    with pytest.raises(_core.InvalidArgumentError, match="majority"):
        conditions.two_class_imbalance(digits, majority=3)
    with pytest.raises(_core.InvalidArgumentError, match="ratio"):
        conditions.two_class_imbalance(digits, ratio=0.5)
    with pytest.raises(_core.InvalidArgumentError, match="classes"):
        conditions.two_class_imbalance(digits, classes=(4, 4))


# ----------------------------------------------------------------------------------------------
# meta split and compose
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_class", [0, 10, 100])
def test_meta_split_balanced_and_disjoint(y: np.ndarray, per_class: int) -> None:
    ms = conditions.meta_split(y, per_class, C, seed=0)
    np.testing.assert_array_equal(class_counts(y[ms.meta_indices], C), np.full(C, per_class))
    assert np.intersect1d(ms.meta_indices, ms.train_indices).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([ms.meta_indices, ms.train_indices])), np.arange(N))
    again = conditions.meta_split(y, per_class, C, seed=0)
    np.testing.assert_array_equal(again.meta_indices, ms.meta_indices)
    if per_class:
        other = conditions.meta_split(y, per_class, C, seed=1)
        assert not np.array_equal(other.meta_indices, ms.meta_indices)


def test_meta_split_too_few() -> None:
    labels = np.array([0] * 20 + [1] * 3 + [2] * 20)
    with pytest.raises(_core.InvalidArgumentError, match="class 1 has 3"):
        conditions.meta_split(labels, 10, 3)
    with pytest.raises(_core.InvalidArgumentError, match="per_class"):
        conditions.meta_split(labels, -1, 3)


def test_compose_meta_longtail_noise(y: np.ndarray) -> None:
    x = np.arange(N, dtype=np.float32)[:, None]
    out = conditions.compose(
        x, y, C, seed=0, meta_per_class=10, imbalance_factor=10, noise="uniform", noise_rate=0.4
    )
    # meta set: clean, balanced, disjoint from the training set
    np.testing.assert_array_equal(class_counts(out.y_meta, C), np.full(C, 10))
    np.testing.assert_array_equal(out.y_meta, y[out.meta_indices])
    assert np.intersect1d(out.meta_indices, out.train_indices).size == 0
    # training set: long-tailed clean labels, noise mask refers to the final training set
    np.testing.assert_array_equal(out.x_train[:, 0].astype(np.int64), out.train_indices)
    np.testing.assert_array_equal(out.y_train_clean, y[out.train_indices])
    counts = class_counts(out.y_train_clean, C)
    assert counts.max() / counts.min() == pytest.approx(10, rel=0.01)
    np.testing.assert_array_equal(out.corrupted, out.y_train != out.y_train_clean)
    assert out.corrupted.shape == (out.x_train.shape[0],)
    assert abs(out.corrupted.mean() - 0.4 * 0.9) < 0.03
    assert len(out.steps) == 3
    # changing only the noise rate keeps the meta set and the subsample
    other = conditions.compose(
        x, y, C, seed=0, meta_per_class=10, imbalance_factor=10, noise="flip", noise_rate=0.2
    )
    np.testing.assert_array_equal(other.meta_indices, out.meta_indices)
    np.testing.assert_array_equal(other.train_indices, out.train_indices)


def test_compose_plain_and_background_and_errors(y: np.ndarray) -> None:
    x = np.zeros((N, 2), dtype=np.float32)
    plain = conditions.compose(x, y, C)
    assert plain.x_train.shape == (N, 2) and not plain.corrupted.any() and plain.x_meta.shape == (0, 2)
    bg = conditions.compose(x, y, C, seed=1, noise="background", noise_rate=0.3, background_class=0)
    assert np.all(bg.y_train[bg.corrupted] == 0)
    with pytest.raises(_core.InvalidArgumentError, match="background_class"):
        conditions.compose(x, y, C, noise="background", noise_rate=0.3)
    with pytest.raises(_core.InvalidArgumentError, match="background_class"):
        conditions.compose(x, y, C, noise="background", noise_rate=0.3, background_class=C)
    with pytest.raises(_core.InvalidArgumentError, match="noise"):
        conditions.compose(x, y, C, noise="gaussian")
    with pytest.raises(_core.InvalidArgumentError, match="imbalance_factor"):
        conditions.compose(x, y, C, imbalance_factor=0.5)
    with pytest.raises(_core.ShapeError):
        conditions.compose(x[:10], y, C)
