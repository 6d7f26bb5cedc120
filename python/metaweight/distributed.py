"""Exact synchronous data-parallel training: K workers, one native trainer each, on Ray or threads.

Each of the K workers owns a :class:`~metaweight.Trainer` built by the same factory (so the same
network, optimizer, method and seed) and a shard of the training set and of the meta set. A step
is one native call per worker on its shard (``batch_size / K`` train and ``meta_batch_size / K``
meta examples); inside it, at every *sync point* (the global batch sizes, the virtual step's
gradient, ``v = ∇L_meta(θ̂)``, L2RW's normaliser, MW-Net's weight sums, GDW's ``‖g‖₁``, V's
gradient, the real gradient, the step's loss and accuracy) the core hands a float32 buffer to the
worker's all-reduce hook, which replaces it by the sum over the workers, summed in rank order so
that every worker gets bit-identical values. The per-example losses, JVPs and weights stay local.

For ERM, L2RW, MW-Net and GDW on networks without batch norm, a K-worker step on K shards equals
the single-process step on the concatenated batch up to float32 summation order (tested in
``python/tests/test_distributed.py``). By default batch norm normalises each worker's shard with
its own batch statistics (as PyTorch's DDP does), so with batch norm the step is *not* the
single-process step on the concatenated batch and the running statistics saved are rank 0's; with
``sync_batch_norm=True`` every batch-norm layer also sums its per-channel statistics and their
derivatives' sums over the workers, and the equality holds for networks with batch norm too.

Two engines implement the hook:

- :class:`ThreadGroup`: K threads of this process with a barrier (every step releases the GIL;
  the hook takes it back). Fast, for tests and for one machine.
- Ray (``fit(..., backend="ray")``): K Ray actors, anywhere on a Ray cluster, each summing through
  a reducer actor via Ray's object store (no sockets or protocol of our own). Ray's
  ``ray.util.collective`` needs the ``pygloo`` or ``cupy``/NCCL backends, which are not
  dependencies of this package.

:func:`fit` trains for a number of epochs with :meth:`Trainer.fit` on every worker (one training
loop), saving rank 0's checkpoint — the same format as a single-process run, loadable by
:meth:`Trainer.load` — after every epoch. A worker that dies (its process killed, its node lost)
restarts the whole group from the last checkpoint, up to ``max_failures`` times; a re-run of
:func:`fit` with the same checkpoint path resumes from it. Since every worker holds the same
state (same seed, all-reduced updates), a resumed run takes exactly the steps the uninterrupted
run would have taken.

Example::

    import metaweight as mw
    from metaweight import distributed

    def make_trainer() -> mw.Trainer:          # a module-level function (Ray pickles it)
        model = mw.mlp(64, hidden=(256, 256), num_classes=10, seed=0)
        return mw.Trainer(model, mw.SGD(lr=0.1, momentum=0.9), method=mw.MWNet(), seed=0)

    result = distributed.fit(make_trainer, x, y, workers=2, epochs=10, batch_size=100,
                             meta=(x_meta, y_meta), checkpoint="run.ckpt", backend="ray",
                             address="auto")
    trainer = make_trainer()
    trainer.load(result.checkpoint)            # the trained model, as after a single-process fit
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import pickle
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validate import as_bool, as_features, as_int, as_labels, as_optional_split
from .errors import InvalidArgumentError, MetaweightError, StateError
from .trainer import EpochRecord, History, Trainer

__all__ = [
    "SYNC_POINTS",
    "DistributedFit",
    "GroupAborted",
    "ThreadGroup",
    "WorkerFailure",
    "attach",
    "detach",
    "fit",
]

#: The core's sync points, in the order a step can reach them (``metaweight.h``).
SYNC_POINTS = (
    "counts",
    "virtual_gradient",
    "meta_gradient",
    "l2rw_normalizer",
    "weight_sums",
    "chain_sums",
    "gradient_norm",
    "weight_net_gradient",
    "gradient",
    "metrics",
    "batch_norm_statistics",
    "batch_norm_gradient",
    "batch_norm_tangent",
)

#: A hook ``hook(values, sync_point)``: sums the float32 ``values`` over the workers, in place.
Hook = Callable[[memoryview, str], None]


class GroupAborted(StateError):
    """The group's collective was aborted: another worker failed (its error is in the message)."""


class WorkerFailure(MetaweightError, RuntimeError):
    """Distributed training failed more often than ``max_failures`` allows (also a ``RuntimeError``)."""


def attach(trainer: Trainer, hook: Hook, *, sync_batch_norm: bool = False) -> None:
    """Makes ``trainer`` one worker of a data-parallel group.

    From now on every step of ``trainer`` (``step`` and ``fit``) calls ``hook(values, sync_point)``
    at each sync point; ``hook`` must replace the float32 memoryview ``values`` by its sum over the
    group's workers, identical on every worker, and the K workers must take the same steps.

    Args:
        trainer: a trainer with method ERM, L2RW, MW-Net or GDW.
        hook: the collective, e.g. :meth:`ThreadGroup.hook`.
        sync_batch_norm: synchronised batch norm: every batch-norm layer normalises with the
            statistics of the global batch (two more small all-reduces per layer and forward pass,
            one per backward and tangent pass), so that the K-worker step equals the
            single-process step on the concatenated batch for networks with batch norm too.
            False (default): each worker's own batch statistics, as PyTorch's DDP.

    Raises:
        InvalidArgumentError: ``hook`` is not callable.
        StateError: the trainer's method is another one, or it has an attached LAW strategy.
        ClosedError: the trainer was closed.
        BusyError: the trainer is in use by another thread.
    """
    from . import _core

    if not callable(hook):
        raise InvalidArgumentError(f"hook: expected a callable hook(values, sync_point), got {type(hook).__name__}")
    sync_batch_norm = as_bool(sync_batch_norm, "sync_batch_norm")
    with trainer._use("distributed.attach") as h:
        _core.trainer_set_allreduce(h, hook)
        _core.trainer_set_batch_norm_sync(h, sync_batch_norm)


def detach(trainer: Trainer) -> None:
    """Makes ``trainer`` a single-process trainer again (its steps call no hook).

    Args:
        trainer: a trainer.

    Raises:
        ClosedError: the trainer was closed.
        BusyError: the trainer is in use by another thread.
    """
    from . import _core

    with trainer._use("distributed.detach") as h:
        _core.trainer_set_allreduce(h, None)
        _core.trainer_set_batch_norm_sync(h, False)


def _sum_in_rank_order(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Σ parts in rank order (the same order, so the same bits, on every worker)."""
    total = np.array(parts[0], dtype=np.float32, copy=True)
    for p in parts[1:]:
        total += p
    return total


class ThreadGroup:
    """An in-process all-reduce for K workers on K threads of this process.

    Each worker's hook deposits its buffer, waits for the others at a barrier, and receives the sum
    computed once by rank 0 in rank order.

    Args:
        workers: the number of workers K (>= 1).
        timeout: seconds a worker waits for the others at a sync point before the group aborts.

    Raises:
        InvalidArgumentError: bad ``workers`` or ``timeout``.
    """

    def __init__(self, workers: int, *, timeout: float = 600.0) -> None:
        self.workers = as_int(workers, "workers", minimum=1, maximum=4096)
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InvalidArgumentError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        self._timeout = float(timeout)
        self._deposit = threading.Barrier(self.workers)
        self._collect = threading.Barrier(self.workers)
        self._parts: list[tuple[str, np.ndarray] | None] = [None] * self.workers
        self._result: np.ndarray | None = None
        self._reason = ""

    def hook(self, rank: int) -> Hook:
        """The hook of worker ``rank`` (0 <= rank < workers).

        Raises:
            InvalidArgumentError: ``rank`` out of range.
        """
        rank = as_int(rank, "rank", minimum=0, maximum=self.workers - 1)

        def allreduce(values: memoryview, sync_point: str) -> None:
            buf = np.frombuffer(values, dtype=np.float32)
            self._parts[rank] = (sync_point, buf.copy())
            self._wait(self._deposit)
            if rank == 0:
                parts = [p for p in self._parts if p is not None]
                points = {p[0] for p in parts}
                sizes = {p[1].size for p in parts}
                if len(parts) != self.workers or len(points) != 1 or len(sizes) != 1:
                    self.abort(f"workers reached different sync points {sorted(points)} (sizes {sorted(sizes)})")
                else:
                    self._result = _sum_in_rank_order([p[1] for p in parts])
            self._wait(self._collect)
            assert self._result is not None
            buf[:] = self._result

        return allreduce

    def _wait(self, barrier: threading.Barrier) -> None:
        try:
            barrier.wait(self._timeout)
        except threading.BrokenBarrierError:
            reason = self._reason or f"a worker did not reach the sync point within {self._timeout} s"
            self._reason = reason
            raise GroupAborted(f"the data-parallel group was aborted: {reason}") from None

    def abort(self, reason: str) -> None:
        """Fails every worker waiting at (or later reaching) a sync point with :class:`GroupAborted`.

        Args:
            reason: what happened (in the waiting workers' errors).
        """
        if not self._reason:
            self._reason = reason
        self._deposit.abort()
        self._collect.abort()

    def run(self, functions: Sequence[Callable[[], Any]]) -> list[Any]:
        """Runs ``functions[r]()`` on one thread per rank and returns their results in rank order.

        A worker that raises aborts the group (the others fail at their next sync point); the
        first failure, in rank order, is re-raised.

        Args:
            functions: K zero-argument callables, the workers.

        Returns:
            Their return values, in rank order.

        Raises:
            InvalidArgumentError: not K functions.
            Exception: the first worker's error.
        """
        if len(functions) != self.workers:
            raise InvalidArgumentError(f"functions: expected {self.workers} (one per worker), got {len(functions)}")
        results: list[Any] = [None] * self.workers
        errors: list[BaseException | None] = [None] * self.workers

        def body(r: int) -> None:
            try:
                results[r] = functions[r]()
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller below
                errors[r] = e
                self.abort(f"worker {r} failed: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=body, args=(r,), name=f"metaweight-dp-{r}") for r in range(self.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # The worker that failed is the cause; the others' GroupAborted (or step errors caused by
        # it) follow from it.
        first = next((e for e in errors if e is not None and not _aborted(e)), None)
        first = first or next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return results


def _aborted(e: BaseException) -> bool:
    """Whether ``e`` is (or was caused by) the group's abort."""
    while e is not None:
        if isinstance(e, GroupAborted):
            return True
        e = e.__cause__  # type: ignore[assignment]
    return False


@dataclass
class DistributedFit:
    """What :func:`fit` returns.

    Attributes:
        history: rank 0's :class:`~metaweight.History` of the whole run (resumed parts included);
            losses and accuracies are global (over all workers' shards).
        checkpoint: the run's checkpoint path: rank 0's trainer after the last epoch, in the
            single-process format (:meth:`Trainer.load`).
        failures: how many times the group restarted from the checkpoint.
        resumed_from_epoch: epochs already done by a previous run when this call started (0: none).
        epoch_seconds: wall-clock seconds of each epoch this call trained (rank 0's).
    """

    history: History
    checkpoint: Path
    failures: int = 0
    resumed_from_epoch: int = 0
    epoch_seconds: list[float] = field(default_factory=list)


@dataclass
class _Shard:
    x: np.ndarray
    y: np.ndarray
    x_meta: np.ndarray | None
    y_meta: np.ndarray | None
    x_val: np.ndarray | None
    y_val: np.ndarray | None


@dataclass
class _Plan:
    epochs: int
    batch_size: int
    meta_batch_size: int
    checkpoint: str
    every: int
    sync_batch_norm: bool = False


def _history_path(checkpoint: str) -> str:
    return checkpoint + ".history"


def _epochs_done(trainer: Trainer, steps_per_epoch: int) -> int:
    return trainer.step_count // steps_per_epoch


def _run_worker(
    rank: int, trainer: Trainer, shard: _Shard, plan: _Plan, steps_per_epoch: int
) -> list[EpochRecord]:
    """One worker's part of :func:`fit`: resume from the checkpoint when there is one, then
    :meth:`Trainer.fit` on its shard for the remaining epochs; rank 0 saves the checkpoint (and
    the history so far) every ``plan.every`` epochs and at the end."""
    done = 0
    records: list[EpochRecord] = []
    if os.path.exists(plan.checkpoint):
        trainer.load(plan.checkpoint)
        done = _epochs_done(trainer, steps_per_epoch)
        if rank == 0 and os.path.exists(_history_path(plan.checkpoint)):
            with open(_history_path(plan.checkpoint), "rb") as f:
                records = list(pickle.load(f))[:done]
    remaining = plan.epochs - done
    if remaining <= 0:
        return records

    def save(t: Trainer, record: EpochRecord) -> None:
        # This fit counts its epochs from 1 (a fresh trainer's history); the run's count goes on.
        record = dataclasses.replace(record, epoch=done + record.epoch - first_epoch + 1)
        records.append(record)
        last = record.epoch == plan.epochs
        if rank == 0 and (record.epoch % plan.every == 0 or last):
            tmp = _history_path(plan.checkpoint) + ".tmp"
            with open(tmp, "wb") as f:
                pickle.dump(records, f)
            os.replace(tmp, _history_path(plan.checkpoint))
            t.save(plan.checkpoint)  # atomic; the history may run ahead of it, never behind

    first_epoch = len(trainer.history) + 1
    meta = None if shard.x_meta is None else (shard.x_meta, shard.y_meta)
    trainer.fit(
        shard.x, shard.y, epochs=remaining, batch_size=plan.batch_size, meta=meta,
        meta_batch_size=plan.meta_batch_size, x_val=shard.x_val, y_val=shard.y_val, progress=False,
        callbacks=[save])
    return records


def _shards(
    x: np.ndarray, y: np.ndarray, meta: tuple[np.ndarray, np.ndarray] | None,
    x_val: np.ndarray | None, y_val: np.ndarray | None, workers: int,
) -> list[_Shard]:
    """Strided shards of equal size (so every worker takes the same number of steps)."""
    n = len(x) // workers
    out = []
    for r in range(workers):
        idx = np.arange(r, n * workers, workers)
        xm = ym = None
        if meta is not None:
            mn = len(meta[0]) // workers
            midx = np.arange(r, mn * workers, workers)
            xm, ym = meta[0][midx], meta[1][midx]
        out.append(_Shard(x[idx], y[idx], xm, ym, x_val if r == 0 else None, y_val if r == 0 else None))
    return out


def fit(
    make_trainer: Callable[[], Trainer],
    x: Any,
    y: Any,
    *,
    workers: int,
    epochs: int,
    checkpoint: str | os.PathLike[str],
    batch_size: int = 100,
    meta: tuple[Any, Any] | None = None,
    meta_batch_size: int = 100,
    x_val: Any = None,
    y_val: Any = None,
    backend: str = "ray",
    address: str | None = None,
    max_failures: int = 3,
    checkpoint_every: int = 1,
    threads_per_worker: int = 1,
    sync_batch_norm: bool = False,
) -> DistributedFit:
    """Trains with K data-parallel workers, exact synchronous steps, checkpoints and restarts.

    Every worker builds its trainer with ``make_trainer()`` and trains with :meth:`Trainer.fit`
    on its shard (every K-th example, starting at its rank; the last ``len(x) % K`` examples are
    left out so that every worker takes the same number of steps) with ``batch_size / K`` train
    and ``meta_batch_size / K`` meta examples per step: one step is one global batch of
    ``batch_size``. Each worker shuffles its own shard every epoch.

    Args:
        make_trainer: a zero-argument callable returning a new :class:`~metaweight.Trainer`
            (method ERM, L2RW, MW-Net or GDW), the same on every call (same seeds). With Ray it is
            pickled to the workers: a module-level function.
        x: training features ``(N, *input_shape)``.
        y: training labels ``(N,)``.
        workers: K, the number of workers (>= 1).
        epochs: the run's total number of epochs (a resumed run trains the remaining ones).
        checkpoint: the run's checkpoint path. When it exists, the run resumes from it; rank 0
            writes it (atomically) every ``checkpoint_every`` epochs and after the last, with the
            history so far beside it (``<checkpoint>.history``). With Ray, each (re)start of the
            group records its workers' ranks, process IDs and node IDs in
            ``<checkpoint>.workers.json``.
        batch_size: the global batch size, a multiple of K.
        meta: the meta set ``(x_meta, y_meta)`` of L2RW, MW-Net and GDW (sharded like ``x``).
        meta_batch_size: the global meta batch size, a multiple of K.
        x_val: validation features, evaluated by rank 0 at the end of every epoch.
        y_val: validation labels.
        backend: ``"ray"`` (K Ray actors) or ``"threads"`` (K threads of this process).
        address: the Ray cluster to join for this call (``ray.init(address=...)``, e.g.
            ``"auto"``, ``"127.0.0.1:6379"`` or ``"ray://host:10001"``; ``"local"`` starts one in
            this process); None uses the cluster this process is already connected to. Ignored
            with ``"threads"``.
        max_failures: how many worker failures are recovered by restarting the group from the
            last checkpoint before :class:`WorkerFailure` is raised.
        checkpoint_every: epochs between checkpoints.
        threads_per_worker: kernel threads of each worker (:func:`metaweight.set_threads`; Ray
            workers only; thread workers share this process's setting).
        sync_batch_norm: synchronised batch norm (see :func:`attach`); False: each worker's own
            batch statistics (rank 0's running statistics are saved).

    Returns:
        A :class:`DistributedFit` with rank 0's history and the checkpoint's path.

    Raises:
        InvalidArgumentError: bad arguments (named), e.g. a batch size that K does not divide or
            a shard smaller than one batch.
        WorkerFailure: workers failed more than ``max_failures`` times.
        MetaweightError: an error a worker's training raised (e.g. ``NonFiniteError``): the
            checkpoint keeps the last completed epoch.
    """
    workers = as_int(workers, "workers", minimum=1, maximum=4096)
    epochs = as_int(epochs, "epochs", minimum=1, maximum=2**31)
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    meta_batch_size = as_int(meta_batch_size, "meta_batch_size", minimum=1)
    max_failures = as_int(max_failures, "max_failures", minimum=0)
    checkpoint_every = as_int(checkpoint_every, "checkpoint_every", minimum=1)
    threads_per_worker = as_int(threads_per_worker, "threads_per_worker", minimum=1, maximum=1024)
    sync_batch_norm = as_bool(sync_batch_norm, "sync_batch_norm")
    if backend not in ("ray", "threads"):
        raise InvalidArgumentError(f"backend: expected 'ray' or 'threads', got {backend!r}")
    if not callable(make_trainer):
        raise InvalidArgumentError(f"make_trainer: expected a callable returning a Trainer, got {type(make_trainer).__name__}")
    if batch_size % workers:
        raise InvalidArgumentError(f"batch_size: expected a multiple of workers={workers}, got {batch_size}")
    ckpt = os.fspath(checkpoint)
    if not isinstance(ckpt, str) or not ckpt:
        raise InvalidArgumentError(f"checkpoint: expected a file path, got {checkpoint!r}")

    probe = make_trainer()
    try:
        if not isinstance(probe, Trainer):
            raise InvalidArgumentError(f"make_trainer: expected it to return a Trainer, got {type(probe).__name__}")
        net = probe.model
        xa = as_features(x, "x", net.input_shape)
        ya = as_labels(y, "y", net.num_classes, n=len(xa))
        xv, yv = as_optional_split(x_val, y_val, "x_val", "y_val", net.input_shape, net.num_classes)
        method = probe.method
        if method.name not in ("erm", "l2rw", "mwnet", "gdw"):
            raise InvalidArgumentError(
                f"make_trainer: data-parallel training supports the methods erm, l2rw, mwnet and gdw, got {method.name!r}")
        meta_arrays: tuple[np.ndarray, np.ndarray] | None = None
        if method.needs_meta:
            if meta is None:
                raise InvalidArgumentError(f"meta: the {method.name!r} method needs a meta set (x_meta, y_meta)")
            xm = as_features(meta[0], "meta[0]", net.input_shape)
            meta_arrays = (xm, as_labels(meta[1], "meta[1]", net.num_classes, n=len(xm), x_name="meta[0]"))
            if meta_batch_size % workers:
                raise InvalidArgumentError(
                    f"meta_batch_size: expected a multiple of workers={workers}, got {meta_batch_size}")
            if len(xm) // workers < meta_batch_size // workers:
                raise InvalidArgumentError(
                    f"meta: {len(xm)} meta examples give each of {workers} workers fewer than "
                    f"meta_batch_size / K = {meta_batch_size // workers}")
        elif meta is not None:
            raise InvalidArgumentError(f"meta: the {method.name!r} method uses no meta set; pass None")
    finally:
        probe.close()
    if len(xa) // workers < 1:
        raise InvalidArgumentError(f"x: {len(xa)} examples cannot be split over {workers} workers")
    if len(xa) % workers:
        warnings.warn(
            f"distributed.fit: the last {len(xa) % workers} of {len(xa)} examples are left out so that "
            f"each of the {workers} workers takes the same steps", RuntimeWarning, stacklevel=2)
    shards = _shards(xa, ya, meta_arrays, xv, yv, workers)
    local_batch = batch_size // workers
    spe = -(-len(shards[0].x) // local_batch)
    plan = _Plan(epochs, local_batch, meta_batch_size // workers, ckpt, checkpoint_every, sync_batch_norm)
    Path(ckpt).parent.mkdir(parents=True, exist_ok=True)

    resumed = _resumed_epochs(make_trainer, ckpt, spe)
    failures = 0
    while True:
        try:
            if backend == "threads":
                records = _fit_threads(make_trainer, shards, plan, spe)
            else:
                records = _fit_ray(make_trainer, shards, plan, spe, address, threads_per_worker)
            break
        except _Recoverable as e:
            failures += 1
            if failures > max_failures:
                raise WorkerFailure(
                    f"distributed.fit: {failures} worker failures (max_failures={max_failures}); the last: {e}. "
                    f"The checkpoint {ckpt!r} keeps the last completed epoch; run again to resume") from e
            warnings.warn(
                f"distributed.fit: {e}; restarting the {workers} workers from the last checkpoint "
                f"({failures}/{max_failures})", RuntimeWarning, stacklevel=2)
    history = History(records)
    return DistributedFit(history, Path(ckpt), failures, resumed,
                          [r.time for r in records[resumed:]])


def _resumed_epochs(make_trainer: Callable[[], Trainer], checkpoint: str, spe: int) -> int:
    if not os.path.exists(checkpoint):
        return 0
    t = make_trainer()
    try:
        t.load(checkpoint)
        return _epochs_done(t, spe)
    finally:
        t.close()


class _Recoverable(Exception):
    """A worker died or was lost: the group restarts from the checkpoint."""


def _fit_threads(
    make_trainer: Callable[[], Trainer], shards: list[_Shard], plan: _Plan, spe: int
) -> list[EpochRecord]:
    k = len(shards)
    group = ThreadGroup(k)
    trainers = [make_trainer() for _ in range(k)]
    try:
        for r, t in enumerate(trainers):
            attach(t, group.hook(r), sync_batch_norm=plan.sync_batch_norm)
        results = group.run([functools.partial(_run_worker, r, trainers[r], shards[r], plan, spe) for r in range(k)])
    finally:
        for t in trainers:
            t.close()
    return list(results[0])


# ---- Ray --------------------------------------------------------------------------------------------


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is an optional dependency
        raise StateError("distributed.fit(backend='ray'): Ray is not installed (pip install 'ray[default]')") from e
    return ray


class _Reducer:
    """The Ray reducer actor: round ``seq`` completes when all K workers sent their part; each gets
    the rank-ordered sum back through the object store."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.rounds: dict[int, dict[str, Any]] = {}
        self.reason = ""

    def abort(self, reason: str) -> None:
        """Fails every round in progress and every later one with :class:`GroupAborted`."""
        self.reason = self.reason or reason
        for r in self.rounds.values():
            r["event"].set()

    async def reduce(self, rank: int, seq: int, point: str, part: np.ndarray) -> np.ndarray:
        r = self.rounds.setdefault(seq, {"parts": [None] * self.workers, "event": asyncio.Event(),
                                         "result": None, "taken": 0})
        r["parts"][rank] = (point, part)
        if self.reason:
            r["event"].set()
        elif all(p is not None for p in r["parts"]):
            points = {p[0] for p in r["parts"]}
            if len(points) != 1:
                self.reason = f"workers reached different sync points {sorted(points)} in round {seq}"
            else:
                r["result"] = _sum_in_rank_order([p[1] for p in r["parts"]])
            r["event"].set()
        await r["event"].wait()
        r["taken"] += 1
        result: np.ndarray | None = r["result"]
        if r["taken"] == self.workers:
            del self.rounds[seq]
        if result is None:
            raise GroupAborted(f"the data-parallel group was aborted: {self.reason}")
        return result


class _RayWorker:
    """A Ray actor owning one worker's native trainer and shard."""

    def __init__(self, rank: int, make_trainer: Callable[[], Trainer], reducer: Any, threads: int) -> None:
        import metaweight

        metaweight.set_threads(threads)
        ray = _ray()
        self.rank = rank
        self.reducer = reducer
        self.trainer = make_trainer()
        self.seq = 0

        def hook(values: memoryview, sync_point: str) -> None:
            buf = np.frombuffer(values, dtype=np.float32)
            self.seq += 1
            buf[:] = ray.get(reducer.reduce.remote(rank, self.seq, sync_point, buf.copy()))

        attach(self.trainer, hook)

    def where(self) -> dict[str, Any]:
        ray = _ray()
        return {"rank": self.rank, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def run(self, shard: _Shard, plan: _Plan, spe: int) -> list[EpochRecord]:
        if plan.sync_batch_norm:
            from . import _core

            with self.trainer._use("distributed.fit") as h:
                _core.trainer_set_batch_norm_sync(h, True)
        try:
            return _run_worker(self.rank, self.trainer, shard, plan, spe)
        except BaseException as e:
            if not isinstance(e, GroupAborted):  # release the others waiting at a sync point
                self.reducer.abort.remote(f"worker {self.rank} failed: {type(e).__name__}: {e}")
            raise


def _fit_ray(
    make_trainer: Callable[[], Trainer], shards: list[_Shard], plan: _Plan, spe: int,
    address: str | None, threads: int,
) -> list[EpochRecord]:
    ray = _ray()
    connected_here = False
    if not ray.is_initialized():
        if address is None:
            raise StateError(
                "distributed.fit(backend='ray'): not connected to a Ray cluster; call ray.init(address=...) first "
                "or pass address= (e.g. 'auto', '127.0.0.1:6379', or 'local' to start one in this process)")
        ray.init(address=address, log_to_driver=False)
        connected_here = True
    try:
        return _fit_ray_connected(ray, make_trainer, shards, plan, spe, threads)
    finally:
        if connected_here:
            ray.shutdown()


def _fit_ray_connected(
    ray: Any, make_trainer: Callable[[], Trainer], shards: list[_Shard], plan: _Plan, spe: int, threads: int,
) -> list[EpochRecord]:
    k = len(shards)
    reducer_cls = ray.remote(num_cpus=0, max_concurrency=max(2, 2 * k))(_Reducer)
    worker_cls = ray.remote(num_cpus=1, max_restarts=0)(_RayWorker)
    reducer = reducer_cls.remote(k)
    actors = [worker_cls.remote(r, make_trainer, reducer, threads) for r in range(k)]
    try:
        # Where the workers run, for operators (and the fault tests): <checkpoint>.workers.json.
        places = ray.get([a.where.remote() for a in actors])
        tmp = plan.checkpoint + ".workers.json.tmp"
        with open(tmp, "w") as f:
            json.dump(places, f)
        os.replace(tmp, plan.checkpoint + ".workers.json")
        futures = [a.run.remote(shards[r], plan, spe) for r, a in enumerate(actors)]
        pending = list(futures)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError) as e:
                raise _Recoverable(f"a worker was lost ({type(e).__name__})") from e
            except ray.exceptions.RayTaskError as e:
                cause = e.as_instanceof_cause()
                if _aborted(cause) or "GroupAborted" in str(e):
                    continue  # another worker's failure; its own error is raised when it arrives
                raise cause from None
        results = ray.get(futures)
    finally:
        for a in [*actors, reducer]:
            with contextlib.suppress(Exception):
                ray.kill(a)
    return list(results[0])
