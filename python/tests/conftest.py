"""Fixtures shared by the Python tests (helpers that are plain functions live in _api_support.py).

A module may define a fixture of the same name to narrow it (e.g. a ``digits`` of 200 examples).
"""

from __future__ import annotations

from collections.abc import Iterator

import metaweight as mw
import numpy as np
import pytest
from _api_support import digits_split, small_mlp


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's digits split 70/30 (seed 0): (x_train, y_train, x_test, y_test), fresh per module."""
    return digits_split(seed=0)


@pytest.fixture(scope="module")
def digits_xy(digits: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The training half of :func:`digits` as (x, y)."""
    return digits[0], digits[1]


@pytest.fixture
def network() -> Iterator[mw.Network]:
    """A fresh 64-32-10 MLP, closed after the test."""
    net = small_mlp()
    yield net
    net.close()


@pytest.fixture
def trainer(network: mw.Network) -> Iterator[mw.Trainer]:
    """An SGD trainer (lr 0.05) on :func:`network`, closed after the test."""
    t = mw.Trainer(network, mw.SGD(lr=0.05))
    yield t
    t.close()
