"""Exact synchronous data-parallel steps (metaweight.distributed), in threads and on a Ray cluster.

Tolerance of the exactness tests. A K-worker step computes the same sums as the single-process
step on the concatenated batch, only grouped differently: each worker sums its shard (in BLAS
kernels whose blocking depends on the OpenBLAS kernel family and the batch size), then the
workers' partial sums are added in rank order. Reassociating a float32 sum of N terms changes it
by at most (N - 1)·u·Σ|terms| with u = 2^-24 ≈ 6e-8 whatever the order, so the bound holds under
any kernel family. Here N <= 24 examples (and the per-example sums over 32 hidden units inside
the same kernels either way): ≤ 1.4e-6 relative to Σ|terms| per gradient entry. Three SGD steps
(lr 0.1, momentum 0.9: a gradient error enters the parameters with a factor ≤ 0.1·(1 + 1.9 + 2.71))
and V's Adam steps (lr 1e-3 per step whatever the gradient's size, so V's error is a sign flip
only where a gradient entry is ~0) keep the parameter differences under ~1e-6 of the parameters'
scale (≤ 1): we allow atol 2e-6 + rtol 1e-5 and measure ~3e-8. The control test shows that what
these tolerances reject is real: the same steps without synchronisation differ by > 1e-3.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import metaweight as mw
import numpy as np
import pytest
from metaweight import distributed as dist

ATOL, RTOL = 2e-6, 1e-5
N, M, D, C = 24, 12, 16, 5
METHODS = ["erm", "l2rw", "mwnet", "gdw"]


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = rng.integers(0, C, N)
    xm = rng.normal(size=(M, D)).astype(np.float32)
    ym = rng.integers(0, C, M)
    return x, y, xm, ym


def _trainer(method: str, batch_norm: bool = False) -> mw.Trainer:
    model = mw.mlp(D, hidden=(32,), num_classes=C, batch_norm=batch_norm, seed=0)
    return mw.Trainer(model, mw.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4), method=method, seed=0)


IMAGE = (2, 5, 5)


def _conv_trainer(method: str) -> mw.Trainer:
    """A small conv net with batch norm after the convolution and inside a residual block."""
    model = mw.build(
        [mw.Conv2d(6, 3, padding=1), mw.BatchNorm(), mw.ReLU(),
         mw.Residual([mw.Conv2d(6, 3, padding=1), mw.BatchNorm(), mw.ReLU()]),
         mw.GlobalAvgPool(), mw.Linear(C)],
        input_shape=IMAGE, seed=0)
    return mw.Trainer(model, mw.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4), method=method, seed=0)


def _image_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (rng.normal(size=(N, *IMAGE)).astype(np.float32), rng.integers(0, C, N),
            rng.normal(size=(M, *IMAGE)).astype(np.float32), rng.integers(0, C, M))


def _meta(method: str, xm: np.ndarray, ym: np.ndarray) -> dict[str, Any]:
    return {} if method == "erm" else {"x_meta": xm, "y_meta": ym}


def _state(t: mw.Trainer) -> dict[str, np.ndarray]:
    """Parameters, running statistics and (MW-Net, GDW) V's parameters."""
    s = {k: np.asarray(v).copy() for k, v in t.model.state_dict().items()}
    if t.method.has_weight_function:
        s.update({"V." + k: np.asarray(v).copy() for k, v in t.weight_net.state_dict().items()})
    return s


def _sharded_steps(
    method: str, k: int, steps: int, *, synchronised: bool = True, batch_norm: bool = False
) -> tuple[list[mw.Trainer], list[list[mw.StepResult]]]:
    """`steps` K-worker steps on the strided shards of _data (rank r: examples r, r+K, ...)."""
    x, y, xm, ym = _data()
    workers = [_trainer(method, batch_norm) for _ in range(k)]
    group = dist.ThreadGroup(k)
    if synchronised:
        for r, t in enumerate(workers):
            dist.attach(t, group.hook(r))
    results: list[list[mw.StepResult]] = []
    for _ in range(steps):
        def work(r: int) -> mw.StepResult:
            return workers[r].step(x[r::k], y[r::k], **_meta(method, xm[r::k], ym[r::k]))

        if synchronised:
            results.append(group.run([lambda r=r: work(r) for r in range(k)]))
        else:
            results.append([work(r) for r in range(k)])
    return workers, results


def _single_steps(method: str, steps: int, batch_norm: bool = False) -> tuple[mw.Trainer, list[mw.StepResult]]:
    x, y, xm, ym = _data()
    t = _trainer(method, batch_norm)
    return t, [t.step(x, y, **_meta(method, xm, ym)) for _ in range(steps)]


def _interleave(parts: list[np.ndarray]) -> np.ndarray:
    k = len(parts)
    out = np.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype)
    for r, p in enumerate(parts):
        out[r::k] = p
    return out


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("method", METHODS)
def test_k_worker_steps_equal_the_single_process_steps_on_the_concatenated_batch(method: str, k: int) -> None:
    single, expected = _single_steps(method, 3)
    workers, got = _sharded_steps(method, k, 3)
    want = _state(single)
    for t in workers:
        have = _state(t)
        assert have.keys() == want.keys()
        for name in want:
            np.testing.assert_allclose(have[name], want[name], rtol=RTOL, atol=ATOL, err_msg=name)
    # Every worker holds bit-identical parameters, V and optimizer step counts.
    for t in workers[1:]:
        for name, v in _state(t).items():
            assert np.array_equal(v, _state(workers[0])[name]), name
        assert t.step_count == single.step_count == 3
    for step, results in zip(expected, got, strict=True):
        # The reported loss, accuracy and meta loss are the global ones.
        for r in results:
            assert r.loss == pytest.approx(step.loss, rel=1e-6)
            assert r.accuracy == pytest.approx(step.accuracy, abs=1e-9)
            assert r.meta_loss == pytest.approx(step.meta_loss, rel=1e-6, abs=1e-12)
        # Each worker's weights are its own examples' weights of the single step.
        np.testing.assert_allclose(_interleave([r.weights for r in results]), step.weights, rtol=1e-4, atol=1e-7)
        if method == "gdw":
            assert step.class_weights is not None
            np.testing.assert_allclose(
                _interleave([np.asarray(r.class_weights) for r in results]), step.class_weights, rtol=1e-4, atol=1e-7)
    if method == "l2rw":  # L2RW's weights sum to 1 over the global batch, not per worker
        assert sum(float(r.weights.sum()) for r in got[-1]) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("method", ["erm", "mwnet"])
def test_unsynchronised_shard_steps_differ_beyond_the_tolerance(method: str) -> None:
    single, _ = _single_steps(method, 3)
    workers, _ = _sharded_steps(method, 2, 3, synchronised=False)
    want, have = _state(single), _state(workers[0])
    assert max(float(np.abs(have[k] - want[k]).max()) for k in want) > 1e-3


def test_per_worker_batch_norm_runs_but_is_not_the_concatenated_step() -> None:
    # Batch norm normalises each worker's shard with its own statistics (DDP's default), so the
    # workers agree with each other (all-reduced updates) but not with the single-process step.
    single, _ = _single_steps("mwnet", 3, batch_norm=True)
    workers, results = _sharded_steps("mwnet", 2, 3, batch_norm=True)
    want = _state(single)
    a, b = _state(workers[0]), _state(workers[1])
    params = [k for k in want if "running" not in k]
    assert all(np.array_equal(a[k], b[k]) for k in params)
    assert max(float(np.abs(a[k] - want[k]).max()) for k in params) > 1e-4
    assert all(np.isfinite(r.loss) for rs in results for r in rs)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("method", METHODS)
def test_with_synchronised_batch_norm_k_worker_steps_equal_the_concatenated_step_on_a_conv_net(
    method: str, k: int
) -> None:
    # Same tolerance argument: the per-channel sums of a batch-norm layer (over the N·H·W values of
    # the batch) are regrouped by worker, in float64 locally and float32 on the wire (relative
    # 6e-8 per partial sum); the variance is taken about the global mean, so nothing cancels.
    x, y, xm, ym = _image_data()
    single = _conv_trainer(method)
    workers = [_conv_trainer(method) for _ in range(k)]
    group = dist.ThreadGroup(k)
    for r, t in enumerate(workers):
        dist.attach(t, group.hook(r), sync_batch_norm=True)
    for _ in range(3):
        expected = single.step(x, y, **_meta(method, xm, ym))
        got = group.run([
            (lambda r=r: workers[r].step(x[r::k], y[r::k], **_meta(method, xm[r::k], ym[r::k])))
            for r in range(k)])
    want = _state(single)  # parameters, running statistics, V
    for t in workers:
        have = _state(t)
        for name in want:
            np.testing.assert_allclose(have[name], want[name], rtol=RTOL, atol=ATOL, err_msg=name)
            assert np.array_equal(have[name], _state(workers[0])[name]), name
    np.testing.assert_allclose(_interleave([r.weights for r in got]), expected.weights, rtol=1e-4, atol=1e-7)
    for r in got:
        assert r.loss == pytest.approx(expected.loss, rel=1e-6)


def test_a_failing_batch_norm_all_reduce_fails_the_step_and_changes_nothing(tmp_path: Path) -> None:
    x, y, xm, ym = _image_data()
    for point in ("batch_norm_statistics", "batch_norm_gradient", "batch_norm_tangent"):
        t = _conv_trainer("mwnet")
        t.step(x, y, x_meta=xm, y_meta=ym)
        before, after = tmp_path / f"{point}-before.ckpt", tmp_path / f"{point}-after.ckpt"
        t.save(before)

        def hook(values: memoryview, sync_point: str, fail: str = point) -> None:
            if sync_point == fail:
                raise ConnectionError(f"lost at {sync_point}")

        dist.attach(t, hook, sync_batch_norm=True)
        with pytest.raises(mw.StateError, match="batch-norm|" + point):
            t.step(x, y, x_meta=xm, y_meta=ym)
        t.save(after)
        assert before.read_bytes() == after.read_bytes(), point
        dist.detach(t)
        t.step(x, y, x_meta=xm, y_meta=ym)  # a single-process trainer again
        t.close()


def _points_of_a_step(method: str) -> list[str]:
    x, y, xm, ym = _data()
    t = _trainer(method)
    seen: list[str] = []
    dist.attach(t, lambda values, point: seen.append(point))
    t.step(x, y, **_meta(method, xm, ym))
    t.close()
    return seen


def test_sync_points_of_each_method() -> None:
    assert _points_of_a_step("erm") == ["counts", "gradient", "metrics"]
    assert _points_of_a_step("l2rw") == ["counts", "meta_gradient", "l2rw_normalizer", "gradient", "metrics"]
    assert _points_of_a_step("mwnet") == [
        "counts", "weight_sums", "virtual_gradient", "meta_gradient", "chain_sums", "weight_net_gradient",
        "weight_sums", "gradient", "metrics"]
    assert _points_of_a_step("gdw") == [
        "counts", "virtual_gradient", "meta_gradient", "gradient_norm", "weight_net_gradient", "gradient", "metrics"]
    batch_norm_points = {"batch_norm_statistics", "batch_norm_gradient", "batch_norm_tangent"}
    assert set().union(*(_points_of_a_step(m) for m in METHODS)) == set(dist.SYNC_POINTS) - batch_norm_points
    # Synchronised batch norm adds its sums in the forward, backward and tangent passes.
    x, y, xm, ym = _image_data()
    t = _conv_trainer("mwnet")
    seen: list[str] = []
    dist.attach(t, lambda values, point: seen.append(point), sync_batch_norm=True)
    t.step(x, y, x_meta=xm, y_meta=ym)
    assert batch_norm_points <= set(seen)
    assert seen[0] == "counts" and seen[1] == "batch_norm_statistics" and seen[-1] == "metrics"


@pytest.mark.parametrize("method", METHODS)
def test_a_failing_all_reduce_at_any_sync_point_fails_the_step_and_changes_nothing(
    method: str, tmp_path: Path
) -> None:
    x, y, xm, ym = _data()
    points = _points_of_a_step(method)
    for index, point in enumerate(points):
        t = _trainer(method)
        t.step(x, y, **_meta(method, xm, ym))  # V and the optimizer have state to lose
        before = tmp_path / f"{point}-{index}-before.ckpt"
        t.save(before)
        def hook(values: memoryview, sync_point: str, stop: int = index, calls: list[int] = [0]) -> None:  # noqa: B006
            calls[0] += 1
            if calls[0] - 1 == stop:
                raise ConnectionError(f"lost at {sync_point}")

        dist.attach(t, hook)
        with pytest.raises(mw.StateError, match=f"sync point '{point}'") as info:
            t.step(x, y, **_meta(method, xm, ym))
        assert isinstance(info.value.__cause__, ConnectionError)
        after = tmp_path / f"{point}-{index}-after.ckpt"
        t.save(after)
        assert before.read_bytes() == after.read_bytes(), f"{method}: state changed by a failure at {point}"
        # The same trainer steps on once the collective works again.
        dist.attach(t, lambda values, point: None)
        t.step(x, y, **_meta(method, xm, ym))
        assert t.step_count == 2
        t.close()


def test_a_hook_that_changes_the_counts_inconsistently_is_refused() -> None:
    x, y, _, _ = _data()
    t = _trainer("erm")

    def shrink(values: memoryview, point: str) -> None:
        if point == "counts":
            np.frombuffer(values, dtype=np.float32)[0] = 1.0

    dist.attach(t, shrink)
    with pytest.raises(mw.StateError, match="counts"):
        t.step(x, y)
    assert t.step_count == 0
    dist.detach(t)
    t.step(x, y)
    t.close()


def test_methods_that_are_not_exact_data_parallel_are_refused() -> None:
    t = _trainer("focal")
    with pytest.raises(mw.StateError, match="erm, l2rw, mwnet and gdw"):
        dist.attach(t, lambda values, point: None)
    with pytest.raises(mw.InvalidArgumentError, match="hook"):
        dist.attach(_trainer("erm"), 3)  # type: ignore[arg-type]
    t.close()


def test_detached_trainer_takes_the_single_process_step_bit_for_bit() -> None:
    x, y, xm, ym = _data()
    a, b = _trainer("mwnet"), _trainer("mwnet")
    dist.attach(b, lambda values, point: None)  # K = 1: the sums are the values themselves
    dist.detach(b)
    a.step(x, y, x_meta=xm, y_meta=ym)
    b.step(x, y, x_meta=xm, y_meta=ym)
    for k, v in _state(a).items():
        assert np.array_equal(v, _state(b)[k]), k


def test_one_worker_failing_aborts_the_others_instead_of_hanging() -> None:
    group = dist.ThreadGroup(2, timeout=60)
    x, y, _, _ = _data()
    workers = [_trainer("erm") for _ in range(2)]
    for r, t in enumerate(workers):
        dist.attach(t, group.hook(r))
    def fail() -> None:
        raise ValueError("worker 1 broke")

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="worker 1 broke"):
        group.run([lambda: workers[0].step(x[::2], y[::2]), fail])
    assert time.perf_counter() - t0 < 30
    assert workers[0].step_count == 0


# ---- distributed.fit in threads (fast) ---------------------------------------------------------------------


def _make_digits_trainer() -> mw.Trainer:
    model = mw.mlp(64, hidden=(32,), num_classes=10, seed=0)
    return mw.Trainer(model, mw.SGD(lr=0.05, momentum=0.9), mw.MultiStep([2]), method=mw.MWNet(), seed=0)


def _make_digits_bn_trainer() -> mw.Trainer:
    model = mw.mlp(64, hidden=(32,), num_classes=10, batch_norm=True, seed=0)
    return mw.Trainer(model, mw.SGD(lr=0.05, momentum=0.9), method=mw.GDW(), seed=0)


def _digits_run(
    digits_xy: tuple[np.ndarray, np.ndarray], path: Path, epochs: int, backend: str = "threads",
    make: Any = _make_digits_trainer, **kw: Any
) -> dist.DistributedFit:
    x, y = digits_xy
    return dist.fit(
        make, x[:400], y[:400], workers=2, epochs=epochs, batch_size=40,
        meta=(x[400:460], y[400:460]), meta_batch_size=20, checkpoint=path, backend=backend, **kw)


def _params_of(path: Path, make: Any = _make_digits_trainer) -> dict[str, np.ndarray]:
    t = make()
    t.load(path)
    s = _state(t)
    t.close()
    return s


def test_fit_in_threads_trains_and_a_rerun_resumes_exactly(
    digits_xy: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = digits_xy
    full = _digits_run(digits_xy, tmp_path / "full.ckpt", 3, x_val=x[460:560], y_val=y[460:560])
    assert [r.epoch for r in full.history] == [1, 2, 3]
    assert all(r.val_accuracy is not None for r in full.history)  # rank 0 validates every epoch
    assert full.history[-1].train_loss < full.history[0].train_loss
    # The checkpoint is a single-process one: a plain trainer loads it.
    plain = _make_digits_trainer()
    plain.load(full.checkpoint)
    assert plain.step_count == 3 * 10  # 200 examples per worker, 20 per step
    plain.close()
    # Two epochs, then a re-run of the same call for three: it trains the third only.
    part = tmp_path / "part.ckpt"
    first = _digits_run(digits_xy, part, 2)
    assert len(first.history) == 2
    second = _digits_run(digits_xy, part, 3)
    assert second.resumed_from_epoch == 2 and len(second.epoch_seconds) == 1
    assert [r.epoch for r in second.history] == [1, 2, 3]
    want, have = _params_of(full.checkpoint), _params_of(part)
    for k in want:
        assert np.array_equal(want[k], have[k]), k


def test_fit_validates_its_arguments(digits_xy: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, y = digits_xy
    with pytest.raises(mw.InvalidArgumentError, match="batch_size"):
        dist.fit(_make_digits_trainer, x, y, workers=3, epochs=1, batch_size=40, meta=(x[:30], y[:30]),
                 meta_batch_size=30, checkpoint=tmp_path / "c", backend="threads")
    with pytest.raises(mw.InvalidArgumentError, match="backend"):
        dist.fit(_make_digits_trainer, x, y, workers=2, epochs=1, checkpoint=tmp_path / "c", backend="mpi")
    with pytest.raises(mw.InvalidArgumentError, match="meta"):
        dist.fit(_make_digits_trainer, x, y, workers=2, epochs=1, checkpoint=tmp_path / "c", backend="threads")
    assert not (tmp_path / "c").exists()


# ---- on a real Ray cluster -------------------------------------------------------------------------------


@pytest.fixture
def ray_session(ray_cluster: Any) -> Any:
    ray = pytest.importorskip("ray")
    ray.init(address=ray_cluster.address, log_to_driver=False)
    # This module is not importable in Ray's workers: its functions travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_fit_on_ray_equals_fit_in_threads_bit_for_bit(
    ray_session: Any, digits_xy: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    on_ray = _digits_run(digits_xy, tmp_path / "ray.ckpt", 2, backend="ray")
    in_threads = _digits_run(digits_xy, tmp_path / "threads.ckpt", 2)
    want, have = _params_of(in_threads.checkpoint), _params_of(on_ray.checkpoint)
    for k in want:
        assert np.array_equal(want[k], have[k]), k
    assert on_ray.failures == 0
    assert [r.train_loss for r in on_ray.history] == [r.train_loss for r in in_threads.history]


@pytest.mark.ray
def test_fit_on_ray_with_synchronised_batch_norm_equals_fit_in_threads_bit_for_bit(
    ray_session: Any, digits_xy: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    make = _make_digits_bn_trainer
    on_ray = _digits_run(digits_xy, tmp_path / "ray.ckpt", 2, backend="ray", make=make, sync_batch_norm=True)
    in_threads = _digits_run(digits_xy, tmp_path / "threads.ckpt", 2, make=make, sync_batch_norm=True)
    want, have = _params_of(in_threads.checkpoint, make), _params_of(on_ray.checkpoint, make)
    assert any("running_var" in k for k in want)
    for k in want:
        assert np.array_equal(want[k], have[k]), k


def _worker_pids(checkpoint: Path) -> list[int]:
    places = json.loads(Path(str(checkpoint) + ".workers.json").read_text())
    return [int(p["pid"]) for p in places]


@pytest.mark.ray
@pytest.mark.slow_ray
@pytest.mark.filterwarnings("ignore:distributed.fit.*restarting:RuntimeWarning")
def test_a_killed_worker_restarts_from_the_last_checkpoint_and_loses_nothing(
    ray_session: Any, digits_xy: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    ckpt = tmp_path / "run.ckpt"
    epochs = 10  # ~0.2 s each at the least: the kill lands well before the end
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = _digits_run(digits_xy, ckpt, epochs, backend="ray", max_failures=2)
        except BaseException as e:  # noqa: BLE001 - reported below
            out["error"] = e

    driver = threading.Thread(target=run)
    driver.start()
    try:
        deadline = time.monotonic() + 240
        while not ckpt.exists() and time.monotonic() < deadline and driver.is_alive():
            time.sleep(0.05)
        assert ckpt.exists(), out
        time.sleep(0.3)  # into the next epoch
        pids = _worker_pids(ckpt)
        assert len(pids) == 2
        os.kill(pids[1], signal.SIGKILL)
    finally:
        driver.join(600)
    assert "error" not in out, out.get("error")
    result: dist.DistributedFit = out["result"]
    assert result.failures == 1
    assert [r.epoch for r in result.history] == list(range(1, epochs + 1))
    reference = _digits_run(digits_xy, tmp_path / "reference.ckpt", epochs)
    want, have = _params_of(reference.checkpoint), _params_of(ckpt)
    for k in want:
        assert np.array_equal(want[k], have[k]), k


_DRIVER = textwrap.dedent(
    """
    import sys
    import metaweight as mw
    import numpy as np
    import ray
    from metaweight import distributed as dist
    from sklearn.datasets import load_digits

    def make_trainer():
        model = mw.mlp(64, hidden=(32,), num_classes=10, seed=0)
        return mw.Trainer(model, mw.SGD(lr=0.05, momentum=0.9), mw.MultiStep([2]), method=mw.MWNet(), seed=0)

    address, path, epochs, backend = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    if backend == "ray":
        ray.init(address=address, log_to_driver=False)
    r = dist.fit(make_trainer, x[:400], y[:400], workers=2, epochs=epochs, batch_size=40,
                 meta=(x[400:460], y[400:460]), meta_batch_size=20, checkpoint=path, backend=backend)
    print("resumed", r.resumed_from_epoch, "epochs", len(r.history))
    """
)


@pytest.mark.ray
@pytest.mark.slow_ray
def test_a_killed_driver_resumes_when_run_again(ray_cluster: Any, tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    ckpt = tmp_path / "run.ckpt"

    def start(backend: str = "ray", epochs: int = 10) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), ray_cluster.address, str(ckpt if backend == "ray" else tmp_path / "ref.ckpt"),
             str(epochs), backend], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    driver = start()
    deadline = time.monotonic() + 240
    while not ckpt.exists() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), driver.communicate(timeout=60)
    time.sleep(0.3)
    driver.kill()  # the driver process, mid-run (Ray then ends its job's actors)
    driver.wait(60)
    rerun = start()
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-3000:]
    resumed = int(stdout.split()[1])
    assert 1 <= resumed < 10
    assert stdout.split()[3] == "10"
    reference = start("threads")
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]
    want, have = _params_of(tmp_path / "ref.ckpt"), _params_of(ckpt)
    for k in want:
        assert np.array_equal(want[k], have[k]), k
