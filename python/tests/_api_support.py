"""Shared helpers of the public-API tests: the digits data and small networks."""

from __future__ import annotations

import functools

import metaweight as mw
import numpy as np


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (np.asarray(d.data, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(d.target, dtype=np.int64)
    return x, y


def digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's 1,797 8x8 digits scaled to [0, 1], split 70/30 with a seeded permutation.

    Returns copies: (x_train (N, 64) float32, y_train int64, x_test, y_test).
    """
    x, y = _digits()
    perm = np.random.default_rng(seed).permutation(len(x))
    n_train = round(0.7 * len(x))
    tr, te = perm[:n_train], perm[n_train:]
    return x[tr].copy(), y[tr].copy(), x[te].copy(), y[te].copy()


def small_mlp(seed: int = 0, **kwargs: object) -> mw.Network:
    """A quick 64-32-10 MLP for tests that do not need accuracy."""
    return mw.mlp(64, hidden=(32,), num_classes=10, seed=seed, **kwargs)  # type: ignore[arg-type]


def small_cnn(seed: int = 0) -> mw.Network:
    """A small residual CNN with batch norm for (1, 8, 8) digits."""
    return mw.build(
        [
            mw.Conv2d(8, 3, padding=1),
            mw.BatchNorm(),
            mw.ReLU(),
            mw.MaxPool2d(2),
            mw.Residual([mw.Conv2d(8, 3, padding=1), mw.BatchNorm(), mw.ReLU()]),
            mw.Residual([mw.Conv2d(16, 3, stride=2, padding=1), mw.BatchNorm()], [mw.ShortcutA(16, 2)]),
            mw.GlobalAvgPool(),
            mw.Linear(10),
        ],
        input_shape=(1, 8, 8),
        seed=seed,
    )
