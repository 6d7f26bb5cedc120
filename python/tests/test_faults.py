"""Faults: a process killed in the middle of a save leaves the previous checkpoint intact, and NaN
or infinite losses, gradients and weights are caught at the step where they appear (raised by
default, or skipped and counted with ``on_nonfinite="skip"``) for every method."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import metaweight as mw
import numpy as np
import pytest
from _api_support import digits_split

PYTHON_DIR = str(Path(mw.__file__).resolve().parent.parent)

# ---- killed in the middle of a save ---------------------------------------------------------------------

#: The child: a network big enough that a save takes tens of milliseconds (~8.6 M parameters,
#: ~69 MB with the momentum buffer); before each save it appends the parameters' digest to a log.
SAVER = textwrap.dedent(
    """
    import hashlib, os, sys
    import numpy as np
    import metaweight as mw
    path, log = sys.argv[1], sys.argv[2]
    net = mw.mlp(1024, hidden=(2048, 2048, 1024), num_classes=10, seed=0)
    tr = mw.Trainer(net, mw.SGD(lr=1e-3, momentum=0.9), seed=0)
    rng = np.random.default_rng(int(sys.argv[3]))
    x = rng.normal(size=(8, 1024)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    with open(log, "a") as f:
        while True:
            tr.step(x, y)
            f.write(hashlib.sha256(net.get_flat().tobytes()).hexdigest() + "\\n")
            f.flush()
            os.fsync(f.fileno())
            tr.save(path)
    """
)


def _digest_of_checkpoint(path: Path) -> str:
    net = mw.mlp(1024, hidden=(2048, 2048, 1024), num_classes=10, seed=1)
    tr = mw.Trainer(net, mw.SGD(lr=1e-3, momentum=0.9), seed=0)
    tr.load(path)
    digest = hashlib.sha256(net.get_flat().tobytes()).hexdigest()
    tr.close()
    net.close()
    return digest


def test_killing_a_process_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    path, log = tmp_path / "big.ckpt", tmp_path / "digests.log"
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rng = np.random.default_rng(0)
    loaded = set()
    for kill in range(5):
        lines_before = len(log.read_text().split()) if log.exists() else 0
        child = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(log), str(kill)], env=env)
        try:
            deadline = time.monotonic() + 120
            # Wait until this child has finished at least one save of its own, then kill it at a
            # random moment of its next saves.
            while (len(log.read_text().split()) if log.exists() else 0) < lines_before + 2:
                assert child.poll() is None, "the saving child died on its own"
                assert time.monotonic() < deadline, "the saving child made no progress"
                time.sleep(0.01)
            time.sleep(float(rng.uniform(0.0, 1.0)))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        saved = set(log.read_text().split())
        digest = _digest_of_checkpoint(path)  # loads: never torn, truncated or half-renamed
        assert digest in saved
        loaded.add(digest)
    leftovers = [p for p in tmp_path.iterdir() if ".tmp." in p.name]
    # Leftover temporaries (from kills between create and rename) break nothing: a new save
    # replaces the checkpoint and it loads.
    tr = mw.Trainer(mw.mlp(1024, hidden=(2048, 2048, 1024), num_classes=10, seed=0), mw.SGD(lr=1e-3, momentum=0.9))
    tr.save(path)
    assert _digest_of_checkpoint(path) == hashlib.sha256(tr.model.get_flat().tobytes()).hexdigest()
    assert len(loaded) >= 2, "every kill found the same checkpoint: the child did not advance"
    print(f"kills: 5, distinct checkpoints loaded: {len(loaded)}, leftover temporaries: {len(leftovers)}")


# ---- NaN and infinity -----------------------------------------------------------------------------------

COUNTS = [10] * 10
META = {"l2rw", "mwnet", "gdw"}


def _methods():
    return [
        mw.ERM(),
        mw.L2RW(),
        mw.MWNet(),
        mw.GDW(),
        mw.Focal(),
        mw.ClassBalanced(class_counts=COUNTS),
        mw.InverseFrequency(class_counts=COUNTS),
        mw.HardMining(),
        mw.RandomWeights(),
        mw.SelfPaced(),
        mw.Bootstrap(),
        mw.Bootstrap(hard=True),
    ]


@pytest.fixture(scope="module")
def digits():
    x, y, _, _ = digits_split(seed=0)
    return x[:200], y[:200]


def _trainer(method, lr: float, on_nonfinite: str = "raise") -> mw.Trainer:
    net = mw.mlp(64, hidden=(32,), num_classes=10, seed=0)
    return mw.Trainer(net, mw.SGD(lr=lr, momentum=0.9), method=method, seed=0, on_nonfinite=on_nonfinite)


def _meta(trainer, x, y):
    return {"x_meta": x[:32], "y_meta": y[:32]} if trainer.method.name in META else {}


@pytest.mark.parametrize("method", _methods(), ids=lambda m: repr(m)[:40])
def test_a_diverging_run_raises_naming_the_step_and_the_cause(digits, method):
    x, y = digits
    tr = _trainer(method, lr=1e8)
    with pytest.raises(mw.NonFiniteError, match=r"step (\d+): .*(NaN|nan|inf)") as info:
        for _ in range(100):
            before = tr.model.get_flat()
            tr.step(x[:64], y[:64], **_meta(tr, x, y))
    failed_at = int(str(info.value).split("step ")[1].split(":")[0])
    assert failed_at == tr.step_count + 1  # named the step that failed, which took no update
    np.testing.assert_array_equal(tr.model.get_flat(), before)
    assert np.isfinite(before).all()


@pytest.mark.parametrize("method", _methods(), ids=lambda m: repr(m)[:40])
def test_skip_mode_skips_counts_and_warns_without_touching_the_model(digits, method):
    x, y = digits
    tr = _trainer(method, lr=1e8, on_nonfinite="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(12):
            before = tr.model.get_flat()
            steps_before = tr.step_count
            r = tr.step(x[:64], y[:64], **_meta(tr, x, y))
            if r.skipped:
                np.testing.assert_array_equal(tr.model.get_flat(), before)
                assert tr.step_count == steps_before
    assert tr.skipped_steps, "the run never diverged"
    assert all(s.step == tr.step_count + 1 for s in tr.skipped_steps[1:])
    assert np.isfinite(tr.model.get_flat()).all()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == len(tr.skipped_steps)
    assert f"step {tr.skipped_steps[0].step} skipped" in messages[0]
    assert "NaN" in messages[0] or "nan" in messages[0] or "inf" in messages[0]


def test_fit_skips_batches_with_exploding_inputs_and_names_them(digits):
    x, y = digits
    x = x.copy()
    x[7] = 3e38  # finite input, but its activations overflow: its batches' loss is NaN
    tr = mw.Trainer(mw.mlp(64, hidden=(32,), num_classes=10, seed=0), mw.SGD(lr=0.05), seed=0, on_nonfinite="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = tr.fit(x, y, epochs=3, batch_size=50, progress=False)
    assert len(tr.skipped_steps) == 3  # one batch per epoch holds example 7
    assert tr.step_count == 3 * 4 - 3
    assert all("fit: epoch" in s.reason for s in tr.skipped_steps)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 3
    assert np.isfinite(tr.model.get_flat()).all()
    assert all(np.isfinite(v) for v in history.train_loss)

    strict = mw.Trainer(mw.mlp(64, hidden=(32,), num_classes=10, seed=0), mw.SGD(lr=0.05), seed=0)
    with pytest.raises(mw.NonFiniteError, match=r"step \d+: the training loss is (nan|inf).*fit: epoch 1, batch \d/4"):
        strict.fit(x, y, epochs=3, batch_size=50, progress=False)


def test_a_law_strategy_run_with_exploding_inputs_raises_or_skips(digits):
    from metaweight.law import LAWConfig, LAWSearch

    x, y = digits
    cfg = LAWConfig(stages=2, warmup_stages=0, epochs=2, batch_size=50, parallel=1, fdu_epochs=1,
                    actor_hidden=8, critic_hidden=8)
    search = LAWSearch("mlp(hidden=16, classes=10)", cfg, seed=0)
    search.search(x, y, x[:50], y[:50], episodes=1, progress=False)
    strategy = search.strategy()
    bad = x[:50] * np.float32(3e38)  # finite, but its loss (~1e37) and update wreck the weights
    for mode in ("raise", "skip"):
        tr = mw.Trainer(mw.mlp(64, hidden=(16,), num_classes=10, seed=0), mw.SGD(lr=0.05), seed=0, on_nonfinite=mode)
        strategy.attach(tr, 10)
        tr.step(x[:50], y[:50])
        tr.step(bad, y[:50])
        before = tr.model.get_flat()
        if mode == "raise":
            with pytest.raises(mw.NonFiniteError, match="step 3: "):
                tr.step(x[:50], y[:50])
        else:
            with pytest.warns(RuntimeWarning, match="step 3 skipped"):
                assert tr.step(x[:50], y[:50]).skipped
            assert [s.step for s in tr.skipped_steps] == [3]
        np.testing.assert_array_equal(tr.model.get_flat(), before)
        assert tr.step_count == 2


def test_a_law_search_with_a_diverging_classifier_raises_naming_the_episode():
    from metaweight.law import LAWConfig, LAWSearch

    x, y, _, _ = digits_split(seed=0)
    cfg = LAWConfig(stages=2, warmup_stages=0, epochs=2, batch_size=50, parallel=1, lr=1e8, fdu_epochs=1,
                    actor_hidden=8, critic_hidden=8)
    search = LAWSearch("mlp(hidden=16, classes=10)", cfg, seed=0)
    with pytest.raises(mw.NonFiniteError, match=r"LAW episode 0, stage \d: .*(nan|inf|NaN)"):
        search.search(x[:200], y[:200], x[200:300], y[200:300], episodes=1, progress=False)


def test_bad_on_nonfinite_raises_naming_the_argument():
    with pytest.raises(mw.InvalidArgumentError, match="on_nonfinite: expected 'raise' or 'skip', got 'ignore'"):
        mw.Trainer(mw.mlp(64, hidden=(8,), num_classes=10), on_nonfinite="ignore")
