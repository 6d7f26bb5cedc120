"""Interrupts: Ctrl-C (SIGINT / KeyboardInterrupt) during ``Trainer.fit`` or a LAW search stops at
a step boundary, leaves the model, optimizer and search consistent, and the run can be saved and
resumed bit-identically.

No assertion here is on wall-clock time: each SIGINT test bounds the child only by a generous
timeout (an unstoppable child would run for minutes) and asserts *where* it stopped (how many steps
or stages it completed); the measured signal-to-stop latency is printed (``pytest -s``) and
reported by ``benchmarks/interrupt_latency.py``.
"""

from __future__ import annotations

import _thread
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import metaweight as mw
import numpy as np
import pytest
from _api_support import digits_split

PYTHON_DIR = str(Path(mw.__file__).resolve().parent.parent)
TESTS_DIR = str(Path(__file__).resolve().parent)


@pytest.fixture(autouse=True)
def _sigint_delivered() -> Iterator[None]:
    """These tests are about Ctrl-C, so SIGINT must reach Python. A shell starts background jobs
    with SIGINT ignored (and a process inherits that), and then ``_thread.interrupt_main`` and a
    real SIGINT do nothing: restore Python's handler for the test, whatever launched pytest."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _sigint_default() -> None:
    # In the child before exec: SIG_DFL, so that the child's Python installs its KeyboardInterrupt
    # handler (an inherited SIG_IGN would be kept).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PYTHON_DIR, TESTS_DIR, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-u", "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_sigint_default,
    )


def _interrupt(child: subprocess.Popen[str], delay: float) -> tuple[float, list[str]]:
    """Waits for the child's READY line, sends SIGINT after ``delay`` s and returns (the latency
    from the signal to the child's STOPPED time, the child's remaining output lines)."""
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "READY", line + (child.stderr.read() if child.stderr else "")
    time.sleep(delay)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    try:
        out, err = child.communicate(timeout=120)  # the generous bound: a child that ignored it runs for minutes
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail("the child did not stop after SIGINT")
    assert child.returncode == 0, err
    lines = out.split("\n")
    stopped = [ln for ln in lines if ln.startswith("STOPPED")]
    assert stopped, out + err
    return float(stopped[0].split()[-1]) - sent, lines


FIT_CHILD = """
    import sys, time
    import numpy as np
    import metaweight as mw
    from _api_support import digits_split
    x, y, _, _ = digits_split(seed=0)
    net = mw.mlp(64, hidden=(256, 256), num_classes=10, dropout=0.1, seed=0)
    tr = mw.Trainer(net, mw.SGD(lr=0.05, momentum=0.9), seed=0)
    def ready(trainer, record):
        if record.epoch == 1:
            print("READY", flush=True)
    try:
        tr.fit(x, y, epochs=100000, batch_size=50, progress=False, callbacks=[ready])
    except KeyboardInterrupt:
        stopped = time.monotonic()
        tr.save(sys.argv[1])
        print("STEPS", tr.step_count)
        print("STOPPED", stopped, flush=True)
"""


def test_sigint_during_fit_stops_at_a_step_boundary_and_the_state_can_be_resumed(tmp_path):
    x, y, _, _ = digits_split(seed=0)
    ckpt = tmp_path / "fit.ckpt"
    latency, lines = _interrupt(_child(FIT_CHILD, str(ckpt)), delay=0.3)
    steps = int(next(ln for ln in lines if ln.startswith("STEPS")).split()[1])
    print(f"fit: SIGINT -> stop {latency * 1000:.1f} ms after {steps} steps")
    assert steps > 26  # it was past the first epoch (26 steps of 50)

    # The saved state is exactly the state after `steps` whole steps: replay them here.
    def make():
        net = mw.mlp(64, hidden=(256, 256), num_classes=10, dropout=0.1, seed=0)
        return mw.Trainer(net, mw.SGD(lr=0.05, momentum=0.9), seed=0)

    replay = make()
    spe = -(-len(x) // 50)
    while replay.step_count < steps:
        perm = replay._permutation(len(x))
        for b in range(spe):
            if replay.step_count == steps:
                break
            idx = perm[b * 50 : (b + 1) * 50]
            replay.step(x[idx], y[idx])
    loaded = make()
    loaded.load(ckpt)
    assert loaded.step_count == steps
    np.testing.assert_array_equal(loaded.model.get_flat(), replay.model.get_flat())
    assert np.isfinite(loaded.model.get_flat()).all()
    # ... and both go on identically (optimizer momentum and random generators included).
    for tr in (loaded, replay):
        tr.step(x[:50], y[:50])
    np.testing.assert_array_equal(loaded.model.get_flat(), replay.model.get_flat())


LAW_CHILD = """
    import sys, time
    import metaweight as mw
    from metaweight.law import LAWConfig, LAWSearch
    from _api_support import digits_split
    x, y, _, _ = digits_split(seed=0)
    # One stage is ~500,000 optimizer steps of two classifiers in each of two episodes: many seconds.
    cfg = LAWConfig(stages=2, warmup_stages=0, epochs=30000, batch_size=32, parallel=2, fdu_epochs=1,
                    actor_hidden=16, critic_hidden=16)
    search = LAWSearch("mlp(hidden=64, classes=10)", cfg, seed=0)
    print("READY", flush=True)
    res = search.search(x[:1000], y[:1000], x[1000:1200], y[1000:1200], episodes=2, progress=False)
    stopped = time.monotonic()
    search.save(sys.argv[1])
    print("INTERRUPTED", res.interrupted, "STAGES", len(res.stages))
    print("STOPPED", stopped, flush=True)
"""


def test_sigint_during_a_law_stage_stops_inside_the_stage(tmp_path):
    from metaweight.law import LAWConfig, LAWSearch

    ckpt = tmp_path / "law.ckpt"
    latency, lines = _interrupt(_child(LAW_CHILD, str(ckpt)), delay=1.0)
    print(f"LAW: SIGINT -> stop {latency * 1000:.1f} ms")
    report = next(ln for ln in lines if ln.startswith("INTERRUPTED")).split()
    assert report[1] == "True"
    assert report[3] == "0"  # stopped inside the first stage, which had not finished
    # The interrupted stage's state is consistent and loads into a new search.
    cfg = LAWConfig(stages=2, warmup_stages=0, epochs=30000, batch_size=32, parallel=2, fdu_epochs=1,
                    actor_hidden=16, critic_hidden=16)
    LAWSearch("mlp(hidden=64, classes=10)", cfg, seed=0, input_shape=(64,)).load(ckpt)


def _law_run():
    from metaweight.law import LAWConfig

    x, y, _, _ = digits_split(seed=0)
    cfg = LAWConfig(stages=4, warmup_stages=1, epochs=1000, batch_size=32, parallel=2, fdu_epochs=1,
                    actor_hidden=16, critic_hidden=16)
    return cfg, x[:800], y[:800], x[1000:1200], y[1000:1200]


def test_ctrl_c_many_times_during_a_law_search_then_resuming_is_bit_identical(tmp_path):
    from metaweight.law import LAWSearch

    cfg, x, y, xv, yv = _law_run()
    spec = "mlp(hidden=32, classes=10)"
    episodes = 6
    full = LAWSearch(spec, cfg, seed=2)
    full.search(x, y, xv, yv, episodes=episodes, progress=False)
    full.save(tmp_path / "full.ckpt")

    search = LAWSearch(spec, cfg, seed=2)
    inside = []
    original = search._run_stage

    def recording(h):
        log, interrupted = original(h)
        if log is None:
            inside.append(True)
        return log, interrupted

    search._run_stage = recording  # type: ignore[method-assign]
    rng = random.Random(0)
    done = threading.Event()

    def press_ctrl_c():
        for _ in range(12):
            if done.wait(rng.uniform(0.03, 0.12)):
                return
            _thread.interrupt_main()

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    interrupted = 0
    try:
        while True:
            try:
                rounds = search.rounds_completed if search._handle is not None else 0
                if rounds == episodes // cfg.parallel:
                    break
                res = search.search(x, y, xv, yv, episodes=episodes - rounds * cfg.parallel, progress=False)
                interrupted += res.interrupted
            except KeyboardInterrupt:  # landed outside the search loop (e.g. in this loop)
                interrupted += 1
    finally:
        done.set()
        presser.join()
    try:
        time.sleep(0.01)  # let a last pending interrupt fire here, not in the next test
    except KeyboardInterrupt:
        pass
    if search.rounds_completed < episodes // cfg.parallel:
        search.search(x, y, xv, yv, episodes=episodes - search.rounds_completed * cfg.parallel, progress=False)
    search.save(tmp_path / "interrupted.ckpt")
    print(f"interrupts: {interrupted}, inside a stage: {len(inside)}")
    assert interrupted >= 3
    assert inside, "no interrupt landed inside a stage"
    assert (tmp_path / "interrupted.ckpt").read_bytes() == (tmp_path / "full.ckpt").read_bytes()


def test_law_cancel_on_a_closed_search_raises_closed_error():
    from metaweight.law import LAWSearch

    s = LAWSearch("mlp(hidden=8, classes=10)", seed=0, input_shape=(64,))
    h = s._handle
    s.close()
    with pytest.raises(mw.ClosedError):
        mw._core.law_cancel(h, True)
