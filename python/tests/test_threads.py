"""Threads: independent trainers run concurrently with sequential results; one trainer (or network)
used from two threads at once is refused with BusyError, never corrupted."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import metaweight as mw
import numpy as np
import pytest
from _api_support import digits_split, small_mlp


@pytest.fixture(scope="module")
def digits():
    x, y, _, _ = digits_split(seed=0)
    return x[:600], y[:600]


def _train(seed: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, list[float]]:
    net = mw.mlp(64, hidden=(256, 256), num_classes=10, dropout=0.1, seed=seed)
    trainer = mw.Trainer(net, mw.SGD(lr=0.05), seed=seed)
    history = trainer.fit(x, y, epochs=3, batch_size=50, progress=False)
    return net.get_flat(), history.train_loss


def _run_in_threads(targets):
    """Runs the callables at once, one thread each; re-raises the first exception."""
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = [pool.submit(fn) for fn in targets]
        for f in futures:
            f.result(timeout=120)


def test_two_trainers_in_two_threads_match_running_them_sequentially(digits):
    x, y = digits
    sequential = {seed: _train(seed, x, y) for seed in (1, 2)}
    concurrent: dict[int, tuple[np.ndarray, list[float]]] = {}
    _run_in_threads([lambda s=s: concurrent.__setitem__(s, _train(s, x, y)) for s in (1, 2)])
    for seed in (1, 2):
        np.testing.assert_array_equal(concurrent[seed][0], sequential[seed][0])
        assert concurrent[seed][1] == sequential[seed][1]


def test_one_trainer_used_from_two_threads_serialises_or_raises_busy_error(digits):
    x, y = digits
    net = small_mlp()
    trainer = mw.Trainer(net, mw.SGD(lr=0.05))
    calls = 150
    outcomes: list[str] = []
    lock = threading.Lock()

    def hammer():
        for i in range(calls):
            lo = (i * 50) % 550
            try:
                trainer.step(x[lo : lo + 50], y[lo : lo + 50])
                result = "ok"
            except mw.BusyError:
                result = "busy"
            with lock:
                outcomes.append(result)

    _run_in_threads([hammer, hammer])
    assert len(outcomes) == 2 * calls
    assert set(outcomes) <= {"ok", "busy"}
    assert trainer.step_count == outcomes.count("ok")  # every accepted call took exactly one step
    assert np.isfinite(net.get_flat()).all()
    assert trainer.evaluate(x, y)["accuracy"] > 0.5  # still a working model


def test_a_busy_trainer_refuses_a_second_thread_deterministically(digits):
    """While one call holds the trainer, a call from another thread raises BusyError."""
    x, y = digits
    net = small_mlp()
    trainer = mw.Trainer(net)
    seen: list[BaseException] = []
    with net._hold("test"):  # what a running step holds
        for use in (lambda: trainer.step(x[:10], y[:10]), lambda: trainer.predict(x[:10]), net.get_flat):
            t = threading.Thread(target=lambda u=use: _capture(u, seen))
            t.start()
            t.join()
    assert len(seen) == 3 and all(isinstance(e, mw.BusyError) for e in seen)
    assert "another thread" in str(seen[0])
    assert isinstance(seen[0], RuntimeError)
    assert trainer.step_count == 0
    trainer.step(x[:10], y[:10])  # free again afterwards
    assert trainer.step_count == 1


def _capture(fn, sink):
    try:
        fn()
    except mw.MetaweightError as e:
        sink.append(e)


def test_reading_parameters_while_another_thread_trains_is_safe(digits):
    x, y = digits
    net = small_mlp()
    trainer = mw.Trainer(net, mw.SGD(lr=0.05))
    snapshots: list[np.ndarray] = []
    busy = 0
    done = threading.Event()

    def train():
        try:
            trainer.fit(x, y, epochs=3, batch_size=20, progress=False)
        except mw.BusyError:
            pass  # the reader held the network at that moment: fit stops, nothing is corrupted
        finally:
            done.set()

    def read():
        nonlocal busy
        while not done.is_set():
            try:
                snapshots.append(net.get_flat())
            except mw.BusyError:
                busy += 1

    _run_in_threads([train, read])
    assert all(np.isfinite(s).all() for s in snapshots)
    assert np.isfinite(net.get_flat()).all()
