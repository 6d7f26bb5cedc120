"""Determinism: the same seed and thread count give bit-identical parameters after N steps, in
separate processes, for every method and for a LAW search (the whole search state).

metaweight claims reproducibility for a fixed seed, data and thread count (not across thread
counts: reductions are split by thread), so each thread count is checked on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import metaweight as mw
import pytest

PYTHON_DIR = str(Path(mw.__file__).resolve().parent.parent)
TESTS_DIR = str(Path(__file__).resolve().parent)

CHILD = textwrap.dedent(
    """
    import hashlib, json, sys, tempfile, os
    import numpy as np
    import metaweight as mw
    from metaweight.law import LAWConfig, LAWSearch
    from _api_support import digits_split
    mw.set_threads(int(sys.argv[1]))
    x, y, _, _ = digits_split(seed=0)
    x, y, xm, ym = x[:400], y[:400], x[400:500], y[400:500]
    counts = np.bincount(y, minlength=10).tolist()
    methods = {
        "erm": mw.ERM(), "l2rw": mw.L2RW(), "mwnet": mw.MWNet(), "gdw": mw.GDW(), "focal": mw.Focal(),
        "class_balanced": mw.ClassBalanced(class_counts=counts),
        "inverse_frequency": mw.InverseFrequency(class_counts=counts), "hard_mining": mw.HardMining(),
        "random": mw.RandomWeights(), "self_paced": mw.SelfPaced(interval=5), "bootstrap": mw.Bootstrap(),
        "bootstrap_hard": mw.Bootstrap(hard=True), "fine_tune": mw.FineTune(epochs=1),
        "class_balanced_sampling": mw.ClassBalancedSampling(),
    }
    out = {}
    for name, method in methods.items():
        net = mw.mlp(64, hidden=(64, 32), num_classes=10, dropout=0.1, batch_norm=True, seed=7)
        tr = mw.Trainer(net, mw.SGD(lr=0.05, momentum=0.9), method=method, seed=11)
        uses_meta = method.needs_meta or isinstance(method, mw.FineTune)
        tr.fit(x, y, epochs=3, batch_size=32, meta=(xm, ym) if uses_meta else None, progress=False)
        h = hashlib.sha256(net.get_flat().tobytes())
        for v in net.state_dict().values():
            h.update(np.ascontiguousarray(v).tobytes())
        out[name] = [tr.step_count, h.hexdigest()]
    cfg = LAWConfig(stages=3, warmup_stages=1, epochs=3, batch_size=32, parallel=2, fdu_epochs=2,
                    actor_hidden=16, critic_hidden=16)
    search = LAWSearch("mlp(hidden=32, classes=10)", cfg, seed=5)
    search.search(x, y, xm, ym, episodes=4, progress=False)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "law.ckpt")
        search.save(p)
        out["law_search"] = [search.rounds_completed, hashlib.sha256(open(p, "rb").read()).hexdigest()]
    strategy = search.strategy()
    net = mw.mlp(64, hidden=(32,), num_classes=10, seed=3)
    tr = mw.Trainer(net, mw.SGD(lr=0.05), seed=3)
    strategy.attach(tr, 26, xm, ym)
    for i in range(26):
        j = (i * 32) % 384
        tr.step(x[j : j + 32], y[j : j + 32])
    out["law_strategy"] = [tr.step_count, hashlib.sha256(net.get_flat().tobytes()).hexdigest()]
    print(json.dumps(out))
    """
)


def _run(threads: int) -> dict[str, list]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PYTHON_DIR, TESTS_DIR, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads)], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("threads", [1, 2])
def test_two_processes_with_the_same_seed_and_threads_give_identical_parameters(threads):
    first, second = _run(threads), _run(threads)
    assert set(first) >= {"erm", "l2rw", "mwnet", "gdw", "fine_tune", "law_search", "law_strategy"}
    for name in first:
        assert first[name][0] > 0, name
        assert first[name] == second[name], f"{name}: {first[name]} != {second[name]}"
