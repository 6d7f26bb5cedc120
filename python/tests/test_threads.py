"""Threads: independent trainers run concurrently with sequential results; one trainer (or network)
used from two threads at once is refused with BusyError, never corrupted."""

from __future__ import annotations

import contextlib
import dis
import re
import sys
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


# -- the core's exclusion is per underlying object (not per handle) ----------------------------------

from metaweight import _core

_SGD = (
    0,
    0.05,
    0.0,
    0,
    0.0,
    0,
    0.9,
    0.999,
    1e-8,
)  # (kind, lr, momentum, nesterov, wd, decoupled, b1, b2, eps)
_CONSTANT = (0, [], 0.1, 0, 0.0, 0)


def _core_trainer(seed: int = 3) -> tuple[int, int, int]:
    """(network handle, trainer handle, second network handle from trainer_network) on one network."""
    net = _core.network_create("mlp(hidden=64, classes=10)", (64,), seed)
    tr = _core.trainer_create(net, _SGD, _CONSTANT, seed)
    return net, tr, _core.trainer_network(tr)


def _flat(h: int) -> np.ndarray:
    out = np.empty(_core.network_info(h)[0], np.float32)
    _core.network_get_flat(h, 0, out)
    return out


def test_core_refuses_a_network_handle_while_the_trainer_on_it_steps_with_a_named_busy_error(digits):
    """Handles that share a network share one lock: a read through another handle while a step runs
    is MW_E_BUSY (BusyError) naming the call refused and the call holding the network."""
    x, y = digits
    xb = np.ascontiguousarray(np.tile(x, (20, 1)), dtype=np.float32)  # a long step (12,000 examples)
    yb = np.ascontiguousarray(np.tile(y, 20), dtype=np.int64)
    net, tr, net2 = _core_trainer()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            for h in (net, net2):
                try:
                    _flat(h)
                except mw.BusyError as e:
                    errors.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(20):
            with contextlib.suppress(mw.BusyError):  # the reader may hold the network: retry
                _core.trainer_step(tr, xb, yb, None)
            if any("mw_trainer_step on trainer" in str(e) for e in errors):
                break
    finally:
        stop.set()
        reader.join()
    assert errors, "no read was refused while steps ran (the lock is not shared by the handles?)"
    named = [str(e) for e in errors if "mw_trainer_step on trainer" in str(e)]
    assert named, [str(e) for e in errors[:3]]
    msg = named[0]
    assert isinstance(errors[0], mw.StateError)
    assert re.search(
        r"mw_network_(info|get_flat): network \d+ is in use by another thread \(mw_trainer_step on trainer \d+\)",
        msg,
    ), msg
    for h in (net2, tr, net):
        (_core.trainer_free if h == tr else _core.network_free)(h)


def test_core_steps_and_reads_through_two_handles_are_serial_and_never_torn(digits):
    """Thread A steps the trainer (same batch every step), thread B reads the parameters through the
    network handle from trainer_network: every call works or raises BusyError, each snapshot B got
    equals the parameters after some whole number of steps of a serial replay (no torn read), and
    the final parameters equal the serial replay of exactly the steps that succeeded."""
    x, y = digits
    xb = np.ascontiguousarray(x[:200], dtype=np.float32)
    yb = np.ascontiguousarray(y[:200], dtype=np.int64)
    steps = 40
    # serial replay: parameters after k steps, k = 0..steps
    net, tr, net2 = _core_trainer(seed=5)
    replay = [_flat(net)]
    for _ in range(steps):
        _core.trainer_step(tr, xb, yb, None)
        replay.append(_flat(net))
    for h in (net2, net):
        _core.network_free(h)
    _core.trainer_free(tr)

    net, tr, net2 = _core_trainer(seed=5)
    ok_steps = 0
    busy = {"step": 0, "read": 0}
    snapshots: list[np.ndarray] = []
    done = threading.Event()

    def train():
        nonlocal ok_steps
        try:
            for _ in range(steps):
                try:
                    _core.trainer_step(tr, xb, yb, None)
                    ok_steps += 1
                except mw.BusyError:
                    busy["step"] += 1
        finally:
            done.set()

    def read():
        while not done.is_set():
            try:
                snapshots.append(_flat(net2))
            except mw.BusyError:
                busy["read"] += 1

    _run_in_threads([train, read])
    index = {r.tobytes(): k for k, r in enumerate(replay)}
    seen = [index.get(s.tobytes()) for s in snapshots]
    assert None not in seen, "a snapshot matched no whole number of steps (a torn read)"
    assert seen == sorted(seen), "snapshots went back in time"
    np.testing.assert_array_equal(_flat(net), replay[ok_steps])
    assert _core.trainer_state(tr)[0] == ok_steps
    for h in (net2, net):
        _core.network_free(h)
    _core.trainer_free(tr)


def test_independent_trainers_in_two_threads_overlap_inside_the_core(digits):
    """The GIL is released around compute: two threads' calls are inside the core at the same moment
    (the core's in-flight peak reaches 2), and each thread's result equals its serial run."""
    x, y = digits
    xb = np.ascontiguousarray(np.tile(x, (4, 1)), dtype=np.float32)
    yb = np.ascontiguousarray(np.tile(y, 4), dtype=np.int64)

    def run(seed: int) -> np.ndarray:
        net, tr, net2 = _core_trainer(seed)
        for _ in range(15):
            _core.trainer_step(tr, xb, yb, None)
        out = _flat(net)
        for h in (net2, net):
            _core.network_free(h)
        _core.trainer_free(tr)
        return out

    serial = {s: run(s) for s in (11, 12)}
    _core.calls_in_flight_peak(True)
    assert _core.calls_in_flight_peak(False) <= 1
    parallel: dict[int, np.ndarray] = {}
    _run_in_threads([lambda s=s: parallel.__setitem__(s, run(s)) for s in (11, 12)])
    assert _core.calls_in_flight_peak(False) >= 2, "the two trainers never ran inside the core at once"
    for s in (11, 12):
        np.testing.assert_array_equal(parallel[s], serial[s])


_CALLS = {
    dis.opmap[n]
    for n in ("CALL", "CALL_FUNCTION", "CALL_METHOD", "CALL_FUNCTION_KW", "CALL_FUNCTION_EX")
    if n in dis.opmap
}


class _InterruptAt:
    """A tracer that raises KeyboardInterrupt at the n-th point where CPython runs a SIGINT handler:
    on entering (or resuming) a Python function, and right after a call returns (the interpreter
    checks for pending signals in RESUME and at the end of CALL, never between other bytecodes).
    ``fired`` tells whether it got that far."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.fired = False
        self.last: dict[int, int | None] = {}  # frame id -> offset of the call it runs, if one

    def _maybe_fire(self) -> None:
        self.seen += 1
        if self.seen == self.n:
            self.fired = True
            raise KeyboardInterrupt

    def __call__(self, frame, event, arg):
        frame.f_trace_opcodes = True
        if self.fired:
            return self
        if event == "call":
            self._maybe_fire()
        elif event == "opcode":
            code, here = frame.f_code, frame.f_lasti
            call_at = self.last.get(id(frame))
            self.last[id(frame)] = here if code.co_code[here] in _CALLS else None
            # A signal at the end of the call at `call_at` is handled as if raised there; raising it
            # here instead is the same only where both offsets have the same exception handler.
            if call_at is not None and _handler(code, call_at) == _handler(code, here):
                self._maybe_fire()
        return self


def _handler(code, offset: int) -> int | None:
    """The exception handler covering bytecode ``offset`` (3.11+ exception tables)."""
    for entry in dis.Bytecode(code).exception_entries:
        if entry.start <= offset < entry.end:
            return entry.target
    return None


def _interrupt_everywhere(call, locked):
    """Runs ``call`` once per bytecode boundary with a KeyboardInterrupt raised there; returns how
    many boundaries left ``locked()`` true inside the ``except KeyboardInterrupt`` (where a script
    would save its model)."""
    stuck = 0
    for n in range(1, 10_000):
        tracer = _InterruptAt(n)
        sys.settrace(tracer)
        try:
            call()
        except KeyboardInterrupt:
            sys.settrace(None)
            stuck += locked()
        finally:
            sys.settrace(None)
        if not tracer.fired:
            return stuck
    raise AssertionError("the call never finished without an interrupt")


_NEEDS_311 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="models CPython 3.11's signal check points and exception tables"
)


@_NEEDS_311
def test_an_interrupt_wherever_a_signal_can_land_in_a_call_never_leaves_the_network_locked(digits):
    """A KeyboardInterrupt landing anywhere in a trainer's or network's call (the with-statement's
    exit included) leaves the lock free, so the script's `except KeyboardInterrupt: save()` works.
    The lock is released by metaweight._core.Hold in C; a generator context manager's Python
    __exit__ left it held when the interrupt landed inside it."""
    x, y = digits
    net = small_mlp()
    trainer = mw.Trainer(net)

    def step():
        with trainer._use("step") as h:
            assert h == trainer._handle

    def get():
        with net._use("get_flat") as h:
            assert h == net._handle

    for call in (step, get, lambda: trainer.step(x[:10], y[:10]), net.get_flat):
        assert _interrupt_everywhere(call, net._lock.locked) == 0
    assert not net._lock.locked()
    before = trainer.step_count  # interrupts after the native call returned kept their step
    trainer.step(x[:10], y[:10])  # still usable afterwards
    assert trainer.step_count == before + 1


@_NEEDS_311
def test_the_old_generator_holder_is_what_an_interrupt_could_leave_locked():
    """The test above can fail: the generator context manager it replaced leaves the lock held at
    some bytecode boundary of its __exit__."""
    state = {"lock": threading.Lock()}

    @contextlib.contextmanager
    def generator_hold():
        lock = state["lock"]
        if not lock.acquire(blocking=False):
            raise mw.BusyError("busy")
        try:
            yield
        finally:
            lock.release()

    def call():
        with generator_hold():
            pass

    def check():
        held = state["lock"].locked()
        if held:  # the traceback keeps the suspended generator (and its lock) alive; start afresh
            state["lock"] = threading.Lock()
        return held

    assert _interrupt_everywhere(call, check) > 0


def test_hold_raises_the_factorys_errors_and_releases_on_closed(digits):
    lock = threading.Lock()
    with mw._core.Hold(lock, lambda: mw.BusyError("b")) as h:
        assert h is None and lock.locked()
        with pytest.raises(mw.BusyError, match="b"), mw._core.Hold(lock, lambda: mw.BusyError("b")):
            pass
    assert not lock.locked()

    class Owner:
        _handle = None

    with (
        pytest.raises(mw.ClosedError, match="gone"),
        mw._core.Hold(lock, lambda: mw.BusyError("b"), Owner(), lambda: mw.ClosedError("gone")),
    ):
        pass
    assert not lock.locked()
    Owner._handle = 7  # type: ignore[assignment]
    with (
        pytest.raises(ValueError),
        mw._core.Hold(lock, lambda: mw.BusyError("b"), Owner(), lambda: mw.ClosedError("c")) as h,
    ):
        assert h == 7 and lock.locked()
        raise ValueError("body failed")
    assert not lock.locked()
    with pytest.raises(TypeError, match="on_busy"):
        mw._core.Hold(lock, None)
