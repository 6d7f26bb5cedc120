"""Data-parallel MW-Net steps (metaweight.distributed): time per step and per sync point, compute
against communication, the all-reduce's measured latency and bandwidth, and a scaling model.

Parts (all in one run, written to one JSON file):

1. ``single``: one worker, global batch B (and meta batch B), MW-Net (normalised, detached, low
   memory), SGD momentum 0.9: median s/step with 1 kernel thread and with ``--threads`` (all of
   this machine's cores), and the 1-thread compute time at local batches ``--fit-batches`` (for
   the compute model c0 + c1·b).
2. ``threads``: K = 2 workers in this process (metaweight.distributed.ThreadGroup), 1 kernel
   thread each, B/2 examples each: s/step, and per sync point the time spent inside the hook
   (the all-reduce plus waiting for the other worker), i.e. communication; compute = step − hook.
3. ``ray``: K = 2 Ray actors (one per node of scripts/ray_cluster.py's two-node loopback cluster,
   1 CPU each), summing through distributed's reducer actor via the object store: the same split.
   ``ray_single``: one worker as a Ray actor (1 and ``--threads`` kernel threads, global batch B),
   the baseline measured under the same scheduling as the K = 2 actors (on a shared machine, the
   kernel gives each Ray worker process's session its own share of the CPUs).
4. ``allreduce``: round trips of the Ray reducer alone for buffer sizes 1 … P floats (K = 2, and
   K = 1, 2, 4 for small buffers), fitted to t(S, K) = a0 + a1·K + 4·S·K/β_local (least squares).
5. ``model``: the scaling model of benchmarks/README.md ("Data-parallel scaling model") for
   K = 2 … 64 machines on a 10 Gbit/s network, with this run's fitted constants.

Usage:
    python benchmarks/bench_distributed.py [--models resnet32,wrn28_10] [--steps N] [--threads T]
        [--address HOST:PORT] [--json benchmarks/results_distributed.json]

Without ``--address`` it starts scripts/ray_cluster.py's cluster (loopback only) and stops it at
the end. Nothing is downloaded: the images are Gaussian noise of CIFAR's shape (timing only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# name: (builder, global batch B, timed steps)
MODELS: dict[str, tuple[str, int, int]] = {
    "resnet32": ("resnet32", 100, 3),
    "wrn28_10": ("wide_resnet", 4, 1),
}
PARAMS_FLOAT_BYTES = 4
NET_BITS_PER_S = 10e9  # the modelled network: 10 Gbit/s
NET_LATENCY_S = 50e-6  # one message's network latency on such a LAN (switch + stack), added per hop


def _data(b: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, b)


def make_trainer(model: str) -> Any:
    import metaweight as mw

    net = mw.resnet32(seed=0) if model == "resnet32" else mw.wide_resnet(28, 10, seed=0)
    return mw.Trainer(net, mw.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4), method=mw.MWNet(), seed=0)


class TimedHook:
    """Wraps a hook and adds the seconds spent in it per sync point."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def __call__(self, values: memoryview, point: str) -> None:
        t0 = time.perf_counter()
        self.inner(values, point)
        self.seconds[point] = self.seconds.get(point, 0.0) + time.perf_counter() - t0
        self.calls[point] = self.calls.get(point, 0) + 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def time_steps(trainer: Any, x: np.ndarray, y: np.ndarray, steps: int, hook: TimedHook | None = None) -> dict[str, Any]:
    trainer.step(x, y, x_meta=x, y_meta=y)  # warm-up (buffers, tapes)
    if hook is not None:
        hook.reset()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.step(x, y, x_meta=x, y_meta=y)
        times.append(time.perf_counter() - t0)
    out: dict[str, Any] = {"step_s": statistics.median(times), "steps": steps}
    if hook is not None:
        out["sync_s_per_step"] = {k: v / steps for k, v in hook.seconds.items()}
        out["sync_calls_per_step"] = {k: v // steps for k, v in hook.calls.items()}
        out["communication_s"] = sum(hook.seconds.values()) / steps
        out["compute_s"] = out["step_s"] - out["communication_s"]
    return out


def single(model: str, batch: int, steps: int, threads: int, fit_batches: list[int]) -> dict[str, Any]:
    import metaweight as mw

    out: dict[str, Any] = {}
    t = make_trainer(model)
    x, y = _data(batch, 0)
    for nt in sorted({1, threads}):
        mw.set_threads(nt)
        out[f"threads_{nt}"] = time_steps(t, x, y, steps)
        print(f"  single worker, {nt} thread(s), batch {batch}: {out[f'threads_{nt}']['step_s']:.3f} s/step", flush=True)
    mw.set_threads(1)
    out["compute_1_thread"] = {}
    for b in fit_batches:
        xb, yb = _data(b, 1)
        r = time_steps(t, xb, yb, steps)
        out["compute_1_thread"][str(b)] = r["step_s"]
        print(f"  single worker, 1 thread, batch {b}: {r['step_s']:.3f} s/step", flush=True)
    out["parameters"] = t.model.num_parameters
    t.close()
    return out


def in_threads(model: str, batch: int, steps: int) -> dict[str, Any]:
    import metaweight as mw
    from metaweight import distributed as dist

    mw.set_threads(1)  # process-wide: one kernel thread per worker thread
    k = 2
    group = dist.ThreadGroup(k)
    trainers = [make_trainer(model) for _ in range(k)]
    hooks = [TimedHook(group.hook(r)) for r in range(k)]
    for t, h in zip(trainers, hooks, strict=True):
        dist.attach(t, h)
    x, y = _data(batch, 0)
    results = group.run([
        (lambda r=r: time_steps(trainers[r], x[r::k], y[r::k], steps, hooks[r])) for r in range(k)])
    for t in trainers:
        t.close()
    print(f"  K=2 threads: {results[0]['step_s']:.3f} s/step, communication {results[0]['communication_s']:.3f} s", flush=True)
    return {"rank0": results[0], "rank1": results[1]}


def ray_workers(model: str, batch: int, steps: int, ray: Any) -> dict[str, Any]:
    from metaweight import distributed as dist

    k = 2

    class BenchWorker:
        def __init__(self, rank: int, reducer: Any) -> None:
            import metaweight as mw

            mw.set_threads(1)
            self.rank = rank
            self.trainer = make_trainer(model)
            self.seq = 0
            self.node = ray.get_runtime_context().get_node_id()

            def hook(values: memoryview, point: str) -> None:
                buf = np.frombuffer(values, dtype=np.float32)
                self.seq += 1
                buf[:] = ray.get(reducer.reduce.remote(rank, self.seq, point, buf.copy()))

            self.hook = TimedHook(hook)
            dist.attach(self.trainer, self.hook)

        def run(self) -> dict[str, Any]:
            x, y = _data(batch, 0)
            r = time_steps(self.trainer, x[self.rank :: k], y[self.rank :: k], steps, self.hook)
            r["node"] = self.node
            return r

    reducer = ray.remote(num_cpus=0, max_concurrency=4)(dist._Reducer).remote(k)
    actors = [ray.remote(num_cpus=1)(BenchWorker).remote(r, reducer) for r in range(k)]
    try:
        results = ray.get([a.run.remote() for a in actors])
    finally:
        for a in [*actors, reducer]:
            ray.kill(a)
    print(f"  K=2 Ray: {results[0]['step_s']:.3f} s/step, communication {results[0]['communication_s']:.3f} s, "
          f"nodes {len({r['node'] for r in results})}", flush=True)
    return {"rank0": results[0], "rank1": results[1]}


def ray_single(model: str, batch: int, steps: int, threads: int, ray: Any) -> dict[str, Any]:
    """One worker as a Ray actor (so under the same scheduling as the K = 2 actors: each Ray
    worker process runs in its own session), 1 and `threads` kernel threads, global batch B."""

    class Single:
        def run(self, nt: int) -> dict[str, Any]:
            import metaweight as mw

            mw.set_threads(nt)
            t = make_trainer(model)
            x, y = _data(batch, 0)
            r = time_steps(t, x, y, steps)
            t.close()
            return r

    out = {}
    for nt in sorted({1, threads}):
        actor = ray.remote(num_cpus=1)(Single).remote()
        out[f"threads_{nt}"] = ray.get(actor.run.remote(nt))
        ray.kill(actor)
        print(f"  single worker as a Ray actor, {nt} thread(s), batch {batch}: "
              f"{out[f'threads_{nt}']['step_s']:.3f} s/step", flush=True)
    return out


def allreduce_costs(ray: Any, sizes: list[int], repeats: int) -> dict[str, Any]:
    """Round trips of the reducer alone: K callers each send S floats and get the sum back."""
    from metaweight import distributed as dist

    class Caller:
        def __init__(self, rank: int, reducer: Any) -> None:
            self.rank, self.reducer, self.seq = rank, reducer, 0

        def rounds(self, size: int, n: int) -> float:
            buf = np.ones(size, dtype=np.float32)
            times = []
            for _ in range(n + 1):
                self.seq += 1
                t0 = time.perf_counter()
                ray.get(self.reducer.reduce.remote(self.rank, self.seq, "gradient", buf))
                times.append(time.perf_counter() - t0)
            return statistics.median(times[1:])

    rows = []
    for k in (1, 2, 4):
        for size in sizes if k == 2 else [s for s in sizes if s <= 1000]:
            reducer = ray.remote(num_cpus=0, max_concurrency=2 * k + 2)(dist._Reducer).remote(k)
            callers = [ray.remote(num_cpus=0)(Caller).remote(r, reducer) for r in range(k)]
            n = repeats if size < 10**6 else max(3, repeats // 4)
            t = max(ray.get([c.rounds.remote(size, n) for c in callers]))
            rows.append({"k": k, "floats": size, "seconds": t})
            print(f"  all-reduce K={k} {size:>10} floats: {t * 1e3:8.2f} ms", flush=True)
            for a in [*callers, reducer]:
                ray.kill(a)
    # Latency from the small buffers: t = a0 + a1·K; then the reducer's per-byte cost from the large
    # ones (K = 2): the reducer takes in K·4S bytes and sends K·4S back, t − (a0 + a1·K) = 2·K·4S / β.
    small = [r for r in rows if r["floats"] <= 1000]
    a = np.array([[1.0, r["k"]] for r in small])
    (a0, a1), *_ = np.linalg.lstsq(a, np.array([r["seconds"] for r in small]), rcond=None)
    large = [r for r in rows if r["floats"] >= 10**5]
    moved = np.array([2 * r["k"] * 4 * r["floats"] for r in large], dtype=float)
    spent = np.array([r["seconds"] - (a0 + a1 * r["k"]) for r in large])
    per_byte = float(moved @ spent / (moved @ moved))
    return {"rows": rows, "fit": {"a0_s": float(a0), "a1_s_per_worker": float(a1),
                                  "local_bytes_per_s": 1 / per_byte if per_byte > 0 else None}}


def scaling_model(
    params: int, batch: int, compute_fit: tuple[float, float], fit: dict[str, Any], points: dict[str, int],
    weight_net: int,
) -> list[dict[str, Any]]:
    """The README's model: T(K) = c0 + c1·B/K + Σ_points n_p·t(S_p, K) for three collectives:

    - ``measured``: our reducer with this run's constants, t = a0 + a1·K + 2·K·4S/β_local
      (β_local: the reducer path's bytes per second measured here, Ray's object transfer included);
    - ``reducer_10g``: our reducer on a 10 Gbit/s network, bound by the reducer node's NIC:
      t = a0 + a1·K + 2λ + 2·K·4S/β_net;
    - ``ring_10g``: a ring all-reduce (what gloo/NCCL do) on the same network:
      t = 2(K−1)(λ + o) + 2(K−1)/K·4S/β_net, o = (a0 + a1)/2 (one message's software overhead:
      half of a K = 1 round trip). c0 is clamped at 0.
    """
    c0, c1 = max(compute_fit[0], 0.0), compute_fit[1]
    a0, a1 = fit["a0_s"], fit["a1_s_per_worker"]
    hop = max(a0 + a1, 0.0) / 2  # software overhead of one message: half a K = 1 round trip
    beta_local = fit["local_bytes_per_s"] or float("inf")
    beta = NET_BITS_PER_S / 8
    sizes = {"virtual_gradient": params, "meta_gradient": params, "gradient": params,
             "weight_net_gradient": weight_net, "counts": 2, "weight_sums": 2, "chain_sums": 1, "metrics": 3,
             "l2rw_normalizer": 1, "gradient_norm": 1}
    lam = NET_LATENCY_S

    def measured(s: int, k: int) -> float:
        return a0 + a1 * k + 2 * k * 4 * s / beta_local

    def reducer(s: int, k: int) -> float:
        return a0 + a1 * k + 2 * lam + 2 * k * 4 * s / beta

    def ring(s: int, k: int) -> float:
        return 2 * (k - 1) * (lam + hop) + 2 * (k - 1) / k * 4 * s / beta

    t1 = c0 + c1 * batch
    rows = []
    for k in (2, 4, 8, 16, 32, 64):
        comp = c0 + c1 * batch / k
        row: dict[str, Any] = {"k": k, "compute_s": comp, "single_s": t1}
        for name, f in (("measured", measured), ("reducer_10g", reducer), ("ring_10g", ring)):
            comm = sum(n * f(sizes[p], k) for p, n in points.items())
            row[f"{name}_comm_s"] = comm
            row[f"{name}_speedup"] = t1 / (comp + comm)
            row[f"{name}_efficiency"] = t1 / (k * (comp + comm))
        rows.append(row)
    return rows


def tables(report: dict[str, Any]) -> str:
    """benchmarks/README.md's tables from a results file."""
    lines = []
    fit = report["allreduce"]["fit"]
    lines.append(f"All-reduce fit (Ray reducer, loopback): a0 = {fit['a0_s'] * 1e3:.2f} ms, "
                 f"a1 = {fit['a1_s_per_worker'] * 1e3:.2f} ms per worker, local bandwidth "
                 f"{(fit['local_bytes_per_s'] or 0) / 1e9:.2f} GB/s")
    lines.append("")
    lines.append("| model (global batch) | one worker, 1 thread | one worker, 2 threads | K=2 Ray: step | compute | in hooks "
                 "| throughput vs one worker (1 / 2 threads) | same, one worker as a Ray actor |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, m in report["models"].items():
        s1, s2 = m["single"]["threads_1"]["step_s"], m["single"]["threads_2"]["step_s"]
        r = m["ray"]["rank0"]
        rs = m.get("ray_single", {})
        actor = (f"{m['ray']['throughput_vs_single_ray_actor_1_threads']:.2f}× / "
                 f"{m['ray']['throughput_vs_single_ray_actor_2_threads']:.2f}×") if rs else "—"
        lines.append(f"| {name} ({m['batch']}) | {s1:.2f} s | {s2:.2f} s | {r['step_s']:.2f} s | {r['compute_s']:.2f} s "
                     f"| {r['communication_s'] * 1e3:.0f} ms | {m['ray']['throughput_vs_single_1_thread']:.2f}× / "
                     f"{m['ray']['throughput_vs_single_2_threads']:.2f}× | {actor} |")
    lines.append("")
    for name, m in report["models"].items():
        per = m["ray"]["rank0"]["sync_s_per_step"]
        calls = m["ray"]["rank0"]["sync_calls_per_step"]
        lines.append(f"{name}, K=2 Ray, time in the hook per step: " + ", ".join(
            f"{p} {per[p] * 1e3:.0f} ms" + (f" ({calls[p]}×)" if calls[p] > 1 else "") for p in per))
        lines.append("")
    for name, m in report["models"].items():
        c = m["compute_fit_1_thread"]
        lines.append(f"{name}: compute c0 = {c['c0_s']:.3f} s + c1 = {c['c1_s_per_example'] * 1e3:.1f} ms per example "
                     f"(1 thread); P = {m['single']['parameters']:,} parameters")
        lines.append("")
        lines.append("| K | compute/worker | comm: reducer as measured here | speedup | comm: reducer, 10 Gbit/s | speedup "
                     "| efficiency | comm: ring, 10 Gbit/s | speedup | efficiency |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for row in m["model"]:
            lines.append(
                f"| {row['k']} | {row['compute_s']:.3f} s | {row['measured_comm_s']:.2f} s | {row['measured_speedup']:.1f}× "
                f"| {row['reducer_10g_comm_s'] * 1e3:.0f} ms | {row['reducer_10g_speedup']:.1f}× | {row['reducer_10g_efficiency']:.0%} "
                f"| {row['ring_10g_comm_s'] * 1e3:.0f} ms | {row['ring_10g_speedup']:.1f}× | {row['ring_10g_efficiency']:.0%} |")
        lines.append("")
    return "\n".join(lines)


def start_cluster() -> tuple[str, Path]:
    d = Path(tempfile.mkdtemp(prefix="mwdpb-", dir="/tmp"))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "ray_cluster.py"), "start", f"--dir={d}"],
                         capture_output=True, text=True, timeout=300, check=True)
    return out.stdout.strip().splitlines()[-1], d


def stop_cluster(d: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "ray_cluster.py"), "stop", f"--dir={d}"],
                   capture_output=True, text=True, timeout=300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet32,wrn28_10")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per measurement (0: the model's default)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--address", default=None, help="an existing Ray cluster (default: start the loopback one)")
    ap.add_argument("--repeats", type=int, default=20, help="round trips per all-reduce size")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_distributed.json"))
    ap.add_argument("--table", metavar="JSON", help="print the README tables of a results file and exit")
    args = ap.parse_args()
    if args.table:
        print(tables(json.loads(Path(args.table).read_text())))
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import metaweight as mw
    import ray

    cluster_dir = None
    address = args.address
    if address is None:
        address, cluster_dir = start_cluster()
    ray.init(address=address, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    report: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "blas_core": mw.blas_core() if hasattr(mw, "blas_core") else None,
                    "python": platform.python_version(), "load_average_at_start": os.getloadavg()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "network_model": {"bits_per_s": NET_BITS_PER_S, "latency_s": NET_LATENCY_S},
        "models": {},
    }
    try:
        print("all-reduce costs (Ray reducer, loopback):", flush=True)
        largest = 0
        for name in args.models.split(","):
            t = make_trainer(name)
            largest = max(largest, t.model.num_parameters)
            t.close()
        sizes = sorted({1, 3, 301, 10**3, 10**4, 10**5, 10**6, 464154, largest})
        report["allreduce"] = allreduce_costs(ray, sizes, args.repeats)
        for name in args.models.split(","):
            _, batch, steps = MODELS[name]
            steps = args.steps or steps
            print(f"{name}: global batch {batch}, MW-Net", flush=True)
            m: dict[str, Any] = {"batch": batch, "meta_batch": batch}
            fit_batches = sorted({max(2, batch // 8), batch // 2, batch})
            m["single"] = single(name, batch, steps, args.threads, fit_batches)
            m["threads"] = in_threads(name, batch, steps)
            m["ray"] = ray_workers(name, batch, steps, ray)
            m["ray_single"] = ray_single(name, batch, steps, args.threads, ray)
            comp = m["single"]["compute_1_thread"]
            bs = np.array([float(b) for b in comp])
            ts = np.array(list(comp.values()))
            c1, c0 = (float(v) for v in np.polyfit(bs, ts, 1))
            m["compute_fit_1_thread"] = {"c0_s": c0, "c1_s_per_example": c1}
            one = m["single"]["threads_1"]["step_s"]
            full = m["single"][f"threads_{args.threads}"]["step_s"]
            for kind in ("threads", "ray"):
                step = max(m[kind]["rank0"]["step_s"], m[kind]["rank1"]["step_s"])
                m[kind]["throughput_vs_single_1_thread"] = one / step
                m[kind][f"throughput_vs_single_{args.threads}_threads"] = full / step
            step = max(m["ray"]["rank0"]["step_s"], m["ray"]["rank1"]["step_s"])
            for nt in sorted({1, args.threads}):
                m["ray"][f"throughput_vs_single_ray_actor_{nt}_threads"] = m["ray_single"][f"threads_{nt}"]["step_s"] / step
            points = m["ray"]["rank0"]["sync_calls_per_step"]
            m["model"] = scaling_model(m["single"]["parameters"], batch, (c0, c1), report["allreduce"]["fit"],
                                       points, 3 * 100 + 1)
            report["models"][name] = m
            print(f"  throughput K=2 Ray vs one worker in this process: {m['ray']['throughput_vs_single_1_thread']:.2f}x "
                  f"(1 thread), {m['ray'][f'throughput_vs_single_{args.threads}_threads']:.2f}x ({args.threads} threads); "
                  f"vs one Ray actor: {m['ray']['throughput_vs_single_ray_actor_1_threads']:.2f}x (1 thread), "
                  f"{m['ray'][f'throughput_vs_single_ray_actor_{args.threads}_threads']:.2f}x ({args.threads} threads)",
                  flush=True)
    finally:
        ray.shutdown()
        if cluster_dir is not None:
            stop_cluster(cluster_dir)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
