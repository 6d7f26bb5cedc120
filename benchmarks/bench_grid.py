"""Experiment-grid throughput (runs per minute): local threads (``--jobs``) against Ray tasks.

One fixed grid (digits with 40% uniform noise, MLP 64-128-128-10, ERM / GDW / focal / MW-Net,
seeds 0-1: 8 runs of ``--epochs`` epochs each, every run on one native thread) is run, from scratch
(``force=True``) in a fresh results folder, in each mode:

- ``local-jobs1``: ``run_experiment(jobs=1, threads=1)``, one run after the other;
- ``local-jobs2``: ``run_experiment(jobs=2, threads=1)``, two runs at once on threads;
- ``ray-1node``: ``run_experiment(ray=ADDRESS, threads=1)`` on a one-node Ray cluster of 1 CPU;
- ``ray-2nodes``: the same on a two-node cluster (head + one worker node, 1 CPU each).

The clusters are real ``ray start`` clusters on 127.0.0.1 (``scripts/ray_cluster.py``), started
before and stopped after their modes; their start-up is not timed, the driver's connection
(``ray.init``) and every task's scheduling, data shipping and result writing are. Each mode runs
``--repeats`` times (modes interleaved) and the best wall time counts; a one-epoch run before
the timing loads the data set and the imports in the driver. A grid on Ray is a new Ray job, so
its workers start cold (a new process importing numpy and metaweight) each time: that is part of
what is timed. Results go to
``benchmarks/results_grid.json`` (``--json``).

Usage:
    python benchmarks/bench_grid.py [--epochs 40] [--repeats 3] [--modes local-jobs1,ray-2nodes]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "scripts" / "ray_cluster.py"
MODES = ("local-jobs1", "local-jobs2", "ray-1node", "ray-2nodes")


def grid(epochs: int) -> dict[str, Any]:
    return {
        "name": "bench_grid",
        "seeds": [0, 1],
        "defaults": {
            "dataset": "digits",
            "condition": {"noise": "uniform", "noise_rate": 0.4},
            "meta_per_class": 10,
            "model": {"name": "mlp", "hidden": [128, 128]},
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
            "schedule": {"name": "constant"},
            "epochs": epochs,
        },
        "grid": [{"method": ["erm", {"name": "gdw", "lr": 0.01}, "focal", {"name": "mwnet", "lr": 0.01}]}],
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def start_cluster(nodes: int, directory: str) -> str:
    out = subprocess.run(
        [sys.executable, str(CLUSTER), "start", f"--dir={directory}", f"--nodes={nodes}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the {nodes}-node Ray cluster did not start: {out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def stop_cluster(directory: str) -> None:
    subprocess.run([sys.executable, str(CLUSTER), "stop", f"--dir={directory}"], capture_output=True, timeout=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_grid.json"))
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        ap.error(f"--modes: unknown {sorted(unknown)}; choose from {MODES}")
    # Ray keeps 127.0.0.1 as the nodes' address only with this (scripts/ray_cluster.py explains).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    from metaweight.experiments import load_config, run_experiment

    load_before = os.getloadavg()
    exp = load_config(grid(args.epochs))
    n_runs = len(exp.runs)
    # Warm-up, not timed: the data set loaded and cached in this process, the imports done.
    with tempfile.TemporaryDirectory(prefix="mw-grid-") as results:
        run_experiment(load_config(grid(1)), results=results, only=["seed=0", "method=erm"], progress=False, log=None)
    clusters: dict[str, tuple[str, str]] = {}
    times: dict[str, list[float]] = {m: [] for m in modes}
    try:
        for mode in modes:
            if mode.startswith("ray-"):
                nodes = 1 if mode == "ray-1node" else 2
                d = tempfile.mkdtemp(prefix="mwbench-", dir="/tmp")
                clusters[mode] = (start_cluster(nodes, d), d)
        for rep in range(args.repeats):
            for mode in modes:
                with tempfile.TemporaryDirectory(prefix="mw-grid-") as results:
                    kwargs: dict[str, Any] = {"threads": 1}
                    if mode == "local-jobs2":
                        kwargs["jobs"] = 2
                    if mode in clusters:
                        kwargs["ray"] = clusters[mode][0]
                    t = time.perf_counter()
                    report = run_experiment(exp, results=results, force=True, progress=False, log=None, **kwargs)
                    dt = time.perf_counter() - t
                    if report.ran != n_runs:
                        raise RuntimeError(f"{mode}: {report.ran} of {n_runs} runs finished")
                times[mode].append(dt)
                print(f"repeat {rep + 1} {mode:<12} {dt:6.2f} s  {60 * n_runs / dt:6.1f} runs/min", flush=True)
    finally:
        for _address, d in clusters.values():
            stop_cluster(d)
    base = min(times["local-jobs1"]) if "local-jobs1" in times else None
    rows = []
    print(f"\n{n_runs} runs of {args.epochs} epochs, 1 thread each; best of {args.repeats}")
    print(f"{'mode':<12} {'seconds':>8} {'runs/min':>9} {'vs jobs 1':>10}")
    for mode in modes:
        best = min(times[mode])
        ratio = base / best if base else None
        rows.append({"mode": mode, "seconds": best, "all_seconds": times[mode], "runs_per_minute": 60 * n_runs / best,
                     "speedup_vs_local_jobs1": ratio})
        print(f"{mode:<12} {best:8.2f} {60 * n_runs / best:9.1f} {ratio if ratio else float('nan'):10.2f}")
    import metaweight as mw
    import ray

    result = {
        "benchmark": "grid throughput",
        "runs": n_runs,
        "epochs": args.epochs,
        "threads_per_run": 1,
        "repeats": args.repeats,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "metaweight": mw.__version__,
        "ray": ray.__version__,
        "command": "python benchmarks/bench_grid.py " + " ".join(sys.argv[1:]),
        "modes": rows,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
