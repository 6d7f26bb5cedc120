"""MW-Net and GDW's ``memory`` option: ``"low"`` (the meta batch's activations laid over the train
batch's dead ones) trains exactly like ``"fast"`` (a tape of its own), bit for bit."""

from __future__ import annotations

import metaweight as mw
import numpy as np
import pytest


def _fit(method, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((120, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    xm = rng.standard_normal((40, 1, 12, 12)).astype(np.float32)
    ym = rng.integers(0, 3, 40)
    model = mw.Sequential(
        [mw.Conv2d(4, 3, padding=1), mw.BatchNorm(), mw.ReLU(), mw.Dropout(0.3), mw.MaxPool2d(2), mw.Flatten(),
         mw.Linear(16), mw.ReLU(), mw.Linear(3)],
        input_shape=(1, 12, 12), seed=1)
    tr = mw.Trainer(model, mw.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4), method=method, seed=3,
                    augment=mw.Augment(crop_padding=1, flip=True))
    tr.fit(x, y, epochs=2, batch_size=30, meta=(xm, ym), progress=False)
    return tr


@pytest.mark.parametrize("cls", [mw.MWNet, mw.GDW], ids=["mwnet", "gdw"])
def test_low_memory_mode_trains_like_fast_mode(cls):
    fast, low = _fit(cls(memory="fast")), _fit(cls(memory="low"))
    assert "memory=low" in low.method.spec()
    np.testing.assert_array_equal(low.model.get_flat(), fast.model.get_flat())
    grid = np.linspace(0, 5, 11)
    np.testing.assert_array_equal(low.weight_function(grid), fast.weight_function(grid))


def test_bad_memory_mode_raises_naming_the_option():
    with pytest.raises(mw.InvalidArgumentError, match="memory"):
        mw.Trainer(mw.mlp(4, hidden=(4,), num_classes=3), method=mw.MWNet(memory="tiny"))
