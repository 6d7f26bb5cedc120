"""LAW search throughput: episodes per hour, and the gain of parallel episodes (N_a = 2 vs 1).

Configuration: sklearn digits (1000 training examples with 40% uniform label noise, 300 clean
validation examples), classifier mlp(hidden=100) on the flat 64 features, episodes of 5 epochs in
10 stages (1 warm-up stage), batch 128, the default DDPG/FDU settings. Each measurement runs in a
fresh subprocess: a search of `--episodes` episodes (the same number for every N_a, so the replay
buffer and the FDU's work per stage grow alike), timed end to end (episode training, validation,
FDU and the Python loop). Reported: the median over `--repeats` runs of episodes per hour, and
the ratio of N_a = 2 to N_a = 1, both end to end and for the episode phase alone (the FDU time,
measured by the core, excluded): the FDU runs once per stage for all N_a episodes, so with a fixed
number of episodes N_a = 2 also halves the FDU work, which makes the end-to-end gain exceed 2x.

While N_a > 1, each episode thread runs metaweight's kernels and OpenBLAS single-threaded. With
N_a = 1 the episode may use every core for its kernels (level "1"), or is restricted to one thread
(level "1t1", metaweight.set_threads(1)): for this small MLP splitting a product across the thread
pool costs more than it saves, so "1t1" is the stronger single-episode baseline.

For this small classifier an episode trains in milliseconds and the FDU dominates; to measure the
parallel episodes themselves, use a heavier one, e.g. `--spec "mlp(hidden=512x512, classes=10)"
--epochs 20 --episodes 8`.

Usage:
    python benchmarks/bench_law.py [--episodes 24] [--repeats 3] [--levels 1,1t1,2] [--epochs 5]
        [--stages 10] [--spec "mlp(hidden=100, classes=10)"]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def run_once(
    parallel: int, episodes: int, epochs: int, stages: int, seed: int, threads: int, spec: str
) -> dict:
    import time

    import metaweight as mw
    import numpy as np
    from metaweight.law import LAWConfig, LAWSearch
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    p = rng.permutation(len(x))
    tr, va = p[:1000], p[1000:1300]
    y_noisy = y[tr].copy()
    flip = rng.random(len(tr)) < 0.4
    y_noisy[flip] = rng.integers(0, 10, int(flip.sum()))
    if threads > 0:
        mw.set_threads(threads)
    cfg = LAWConfig(stages=stages, epochs=epochs, warmup_stages=1, parallel=parallel)
    search = LAWSearch(spec, cfg, seed=seed)
    t0 = time.perf_counter()
    c0 = time.process_time()
    r = search.search(x[tr], y_noisy, x[va], y[va], episodes=episodes, progress=False, example_weights=False)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    n = r.episodes_completed
    fdu = sum(s.fdu_seconds for s in r.stages)
    return {
        "parallel": parallel,
        "threads": mw.get_threads(),
        "episodes": n,
        "seconds": wall,
        "cpu_seconds": cpu,
        "fdu_seconds": fdu,
        "episodes_per_hour": n / wall * 3600.0,
        "episodes_per_hour_without_fdu": n / max(wall - fdu, 1e-9) * 3600.0,
        "fdu_updates": sum(s.fdu_updates for s in r.stages),
    }


def parse_level(v: str) -> tuple[int, int]:
    """ "2" -> (N_a=2, default threads); "1t1" -> (N_a=1, one kernel/BLAS thread)."""
    if "t" in v:
        p, t = v.split("t", 1)
        return int(p), int(t)
    return int(v), 0


def label(v: str) -> str:
    p, t = parse_level(v)
    return f"N_a={p}" + (f" (threads={t})" if t else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--levels",
        default="1,1t1,2",
        help="comma-separated N_a values; NtT also sets metaweight's thread count to T (default: all CPUs)",
    )
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--stages", type=int, default=10)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spec", default="mlp(hidden=100, classes=10)", help="the classifier")
    args = ap.parse_args()
    if args.child is not None:
        p, t = parse_level(args.child)
        print(json.dumps(run_once(p, args.episodes, args.epochs, args.stages, args.seed, t, args.spec)))
        return
    levels = args.levels.split(",")
    print(
        f"LAW search throughput: digits {args.spec}, {args.epochs} epochs x {args.stages} stages, "
        f"{args.episodes} episodes per run, {os.cpu_count()} CPUs"
    )
    results: dict[str, list[dict]] = {v: [] for v in levels}
    for rep in range(args.repeats):
        for v in levels:  # interleaved, so machine load affects every level alike
            cmd = [sys.executable, __file__, "--child", v, "--episodes", str(args.episodes)]
            cmd += ["--epochs", str(args.epochs), "--stages", str(args.stages), "--seed", str(args.seed)]
            cmd += ["--spec", args.spec]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[v].append(r)
            print(
                f"  repeat {rep + 1}: {label(v)}: {r['episodes']} episodes in {r['seconds']:.2f}s "
                f"(FDU {r['fdu_seconds']:.2f}s, {r['fdu_updates']} updates) = {r['episodes_per_hour']:.0f} "
                f"episodes/hour; without the FDU {r['episodes_per_hour_without_fdu']:.0f}; "
                f"CPU/wall {r['cpu_seconds'] / r['seconds']:.2f}",
                flush=True,
            )
    # Two cores shared with other work may not both be free: CPU/wall of the N_a = 2 runs near 1
    # means the threads could not run at the same time, whatever the code does.
    for v in levels:
        util = statistics.median(r["cpu_seconds"] / r["seconds"] for r in results[v])
        print(f"{label(v)}: median CPU time / wall time {util:.2f}")
    singles = [v for v in levels if parse_level(v)[0] == 1]
    for key, what in (
        ("episodes_per_hour", "end to end"),
        ("episodes_per_hour_without_fdu", "episode phase (FDU excluded)"),
    ):
        med = {v: statistics.median(r[key] for r in results[v]) for v in levels}
        print(f"{what}: median " + ", ".join(f"{label(v)} {med[v]:.0f}/h" for v in levels))
        for v in levels:
            if parse_level(v)[0] > 1:
                gains = ", ".join(f"over {label(b)} {med[v] / med[b]:.2f}x" for b in singles)
                print(f"  gain of {label(v)}: {gains}")


if __name__ == "__main__":
    main()
