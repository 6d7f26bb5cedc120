"""An experiment grid on a Ray cluster: each run is a Ray task (``run_experiment(..., ray=...)``,
``metaweight-experiments CONFIG --ray [auto|ADDRESS]``).

Imported only when a grid is asked to run on Ray; nothing else in metaweight imports :mod:`ray`.

- Each run is one task running :func:`~metaweight.experiments.runner.execute_run` (the same code
  as a local run) with ``num_cpus`` equal to the run's native threads, in a temporary folder on
  whichever node Ray picks. The task returns the run's files; the driver writes them atomically
  into ``<results>/<experiment>/<run-id>/`` as each task finishes, ``final.json`` last, so a grid
  stopped at any point leaves only finished runs marked finished, and a re-run skips them.
- Each distinct data set is loaded once, on the driver
  (:func:`~metaweight.experiments.datasets.load_source`), and put once into the object store; the
  tasks take it by reference, so the nodes need neither the files nor a user's data function.
- A task whose worker process dies (killed, out of memory, node lost) is run again, up to
  ``max_retries`` times (Ray's task retries); an exception inside a run is not retried: the run
  is recorded as failed with its traceback in ``error.txt``, as locally.
"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._ray import import_ray as _import_ray
from .._ray import ray_address
from ..errors import InvalidArgumentError
from .config import RunSpec
from .datasets import load_source
from .runner import CONFIG_FILE, ERROR_FILE, RUN_FILES, RunResult, execute_run, store_run_files

__all__ = ["RaySession", "import_ray", "ray_address"]


def import_ray() -> Any:
    """The ray module.

    Raises:
        ImportError: ray is not installed (the message names the ``metaweight[ray]`` extra).
    """
    return _import_ray("running a grid on Ray")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A quick TCP connection to ``HOST:PORT`` (Ray itself retries a missing head for minutes)."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConnectionError(
            f"ray: no Ray cluster at {address!r} ({e}); start its head with `ray start --head --port={port}`"
        ) from None


def _connect(ray: Any, address: str) -> bool:
    """Connects this process to the cluster at ``address`` unless it is connected already; returns
    whether it connected (and so must disconnect)."""
    if ray.is_initialized():
        return False
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConnectionError(f"ray: cannot connect to a Ray cluster at {address!r}: {e}") from e
    return True


def _check_threads(ray: Any, threads: int) -> None:
    """A run reserves ``threads`` CPUs on one node: refuse what no node of the cluster has (Ray
    would wait for such a node forever)."""
    cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    largest = max(cpus, default=0.0)
    if threads > largest:
        raise InvalidArgumentError(
            f"threads: {threads} CPUs per run, but the largest node of the Ray cluster has {largest:g}"
        )


def _run_task(spec: RunSpec, source: Any, threads: int) -> dict[str, Any]:
    """The body of a run's Ray task (on a worker): the run in a temporary folder, its files back."""
    import metaweight as mw

    mw.set_threads(threads)
    t0 = time.perf_counter()
    final: dict[str, Any] | None = None
    error: str | None = None
    tb = ""
    with tempfile.TemporaryDirectory(prefix="metaweight-run-") as tmp:
        folder = Path(tmp) / "run"
        try:
            final = execute_run(spec, folder, progress=False, source=source)
        except Exception as e:  # noqa: BLE001 - reported to the driver like a local run's failure
            error = f"{type(e).__name__}: {e}"
            tb = traceback.format_exc()
        files = {name: (folder / name).read_bytes() for name in RUN_FILES if (folder / name).is_file()}
    if error is not None:
        files.pop(ERROR_FILE, None)
        files[ERROR_FILE] = tb.encode("utf-8")
    return {"final": final, "files": files, "error": error, "seconds": time.perf_counter() - t0}


def _failed(spec: RunSpec, path: Path, error: str, detail: str, seconds: float) -> RunResult:
    """A run that failed outside its task: ``config.json`` and ``error.txt``, as a local failure."""
    config = json.dumps(spec.config, indent=2, default=str) + "\n"
    store_run_files(path, {CONFIG_FILE: config.encode("utf-8"), ERROR_FILE: detail.encode("utf-8")})
    return RunResult(spec, "failed", path, error=error, seconds=seconds)


class RaySession:
    """This process's connection to a Ray cluster for one grid.

    Args:
        ray: the cluster (see :func:`ray_address`); a process already connected (``ray.init``)
            uses its own connection, and stays connected after :meth:`close`.
        threads: each run's native threads, and the CPUs its task reserves.

    Raises:
        InvalidArgumentError: a malformed ``ray`` address; ``threads`` more than any node has.
        ImportError: ray is not installed.
        ConnectionError: no Ray cluster at that address.
    """

    def __init__(self, ray: str | bool, threads: int) -> None:
        address = ray_address(ray)
        self.ray = import_ray()
        self.threads = threads
        self._connected = _connect(self.ray, address)
        try:
            _check_threads(self.ray, threads)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Disconnects, if this session connected."""
        if self._connected:
            self._connected = False
            self.ray.shutdown()

    def run(
        self,
        todo: Sequence[RunSpec],
        folder: Path,
        *,
        max_retries: int,
        done: Callable[[RunResult], RunResult],
    ) -> list[RunResult]:
        """Runs ``todo`` as Ray tasks and writes each run's files under ``folder`` as it finishes.

        Args:
            todo: the runs to run.
            folder: the experiment folder.
            max_retries: how many times a run whose worker process died is started again.
            done: called on the driver with each run's result as soon as its files are written.

        Returns:
            One :class:`RunResult` per run, in the order of ``todo``.
        """
        rt, threads = self.ray, self.threads
        results: dict[str, RunResult] = {}
        pending: dict[Any, tuple[RunSpec, float]] = {}
        task = rt.remote(_run_task).options(
            num_cpus=threads, max_retries=max_retries, retry_exceptions=False, name="metaweight-run"
        )
        try:
            shipped: dict[str, Any] = {}
            for spec in todo:
                path = folder / spec.run_id
                t = time.perf_counter()
                try:
                    key, source = load_source(spec.config)
                except Exception as e:  # noqa: BLE001 - as a run that fails while loading its data
                    results[spec.run_id] = done(
                        _failed(spec, path, f"{type(e).__name__}: {e}", traceback.format_exc(), 0.0)
                    )
                    continue
                if key not in shipped:
                    shipped[key] = rt.put(source)
                pending[task.remote(spec, shipped[key], threads)] = (spec, t)
            while pending:
                ready, _ = rt.wait(list(pending), num_returns=1)
                for ref in ready:
                    spec, t = pending.pop(ref)
                    path = folder / spec.run_id
                    try:
                        out = rt.get(ref)
                    except rt.exceptions.RayError as e:  # the worker died more than max_retries times
                        first = f"{type(e).__name__}: {e}".splitlines()[0]
                        r = _failed(spec, path, first, str(e), time.perf_counter() - t)
                    else:
                        store_run_files(path, out["files"])
                        status = "ran" if out["error"] is None else "failed"
                        r = RunResult(
                            spec, status, path, final=out["final"], error=out["error"], seconds=float(out["seconds"])
                        )
                    results[spec.run_id] = done(r)
        except BaseException:
            for ref in pending:
                try:
                    rt.cancel(ref, force=True)
                except Exception:  # noqa: BLE001, S110 - finished meanwhile, or the cluster is gone
                    pass
            raise
        return [results[s.run_id] for s in todo if s.run_id in results]
