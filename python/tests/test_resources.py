"""Resources: resident memory stays flat over many steps for every method, and objects free their
native memory when collected (the core's live-handle count returns to its baseline and RSS stays
flat over create/drop cycles). The long profile (1,000 -> 20,000 steps) is ``scripts/soak.py``."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import metaweight as mw
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import soak


@pytest.fixture(scope="module")
def digits(digits_xy):
    return digits_xy


@pytest.mark.parametrize("name", ["erm", "l2rw", "mwnet", "gdw", "self_paced"])
def test_rss_stays_flat_between_step_200_and_step_3000(digits, name):
    x, y = digits
    method = soak.methods([100] * 10)[name]
    first, last, _ = soak.soak(method, x, y, 200, 3000, hidden=(64,))
    assert (last - first) / first < 0.01, f"{name}: RSS {first} KiB -> {last} KiB"


def _cycle(x, y, strategy):
    from metaweight.law import LAWConfig, LAWSearch

    net = mw.mlp(64, hidden=(128,), num_classes=10, seed=0)
    tr = mw.Trainer(net, method=mw.GDW(), seed=0)
    tr.step(x[:32], y[:32], x_meta=x[32:64], y_meta=y[32:64])
    erm = mw.Trainer(mw.mlp(64, hidden=(16,), num_classes=10, seed=0), mw.SGD(lr=0.1), seed=0)
    strategy.attach(erm, 10)
    erm.step(x[:32], y[:32])
    s = LAWSearch("mlp(hidden=8, classes=10)", LAWConfig(stages=2, warmup_stages=0, epochs=1, batch_size=64,
                                                         parallel=1, actor_hidden=4, critic_hidden=4), seed=0)
    s.search(x[:128], y[:128], x[128:160], y[128:160], episodes=1, progress=False)
    snap = s.strategy()
    del net, tr, erm, s, snap  # dropped without close(): collection must free them


def test_dropped_objects_free_their_native_memory(digits):
    from metaweight.law import LAWConfig, LAWSearch

    x, y = digits
    search = LAWSearch("mlp(hidden=8, classes=10)", LAWConfig(stages=2, warmup_stages=0, epochs=1, batch_size=64,
                                                              parallel=1, actor_hidden=4, critic_hidden=4), seed=0)
    search.search(x[:128], y[:128], x[128:160], y[128:160], episodes=1, progress=False)
    strategy = search.strategy()
    for _ in range(20):
        _cycle(x, y, strategy)
    gc.collect()
    handles = mw._core.live_handles()
    rss = soak.rss_kib()
    for _ in range(150):
        _cycle(x, y, strategy)
    gc.collect()
    assert mw._core.live_handles() == handles
    grown = soak.rss_kib() - rss
    assert grown < 0.01 * rss, f"RSS grew {grown} KiB over 150 create/drop cycles (from {rss} KiB)"
    search.close()


def test_live_handles_counts_created_and_freed_objects():
    before = mw._core.live_handles()
    net = mw.mlp(64, hidden=(8,), num_classes=10)
    tr = mw.Trainer(net)
    assert mw._core.live_handles() >= before + 2
    tr.close()
    net.close()
    gc.collect()
    assert mw._core.live_handles() == before
    assert isinstance(np.int64(before).item(), int)
