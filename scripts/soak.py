#!/usr/bin/env python3
"""Soak test: resident memory over a long run of training steps, for every method.

For each method an MLP (64-256-256-10) is trained with ``Trainer.step`` on the digits (batches of
64, a meta batch of 64 for the meta-weighting methods); the process's resident set size (VmRSS) is
read at step ``--first`` and at step ``--last``, and the growth between them must stay under
``--limit`` percent. Prints a table; exits 1 if a method grows more.

    python3 scripts/soak.py                       # 1,000 -> 20,000 steps, every method
    python3 scripts/soak.py --last 5000 --methods erm gdw
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

import metaweight as mw


def rss_kib() -> int:
    """The process's current resident set size in KiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def methods(counts: list[int]) -> dict[str, mw.Method]:
    """Every method with per-step weighting (the data-level ones are ERM steps inside fit)."""
    return {
        "erm": mw.ERM(),
        "l2rw": mw.L2RW(),
        "mwnet": mw.MWNet(),
        "gdw": mw.GDW(),
        "focal": mw.Focal(),
        "class_balanced": mw.ClassBalanced(class_counts=counts),
        "inverse_frequency": mw.InverseFrequency(class_counts=counts),
        "hard_mining": mw.HardMining(),
        "random": mw.RandomWeights(),
        "self_paced": mw.SelfPaced(),
        "bootstrap": mw.Bootstrap(),
        "bootstrap_hard": mw.Bootstrap(hard=True),
    }


def soak(
    method: mw.Method, x: np.ndarray, y: np.ndarray, first: int, last: int, hidden: tuple[int, ...] = (256, 256)
) -> tuple[int, int, float]:
    """Trains `last` steps; returns (RSS at `first`, RSS at `last` in KiB, seconds)."""
    net = mw.mlp(64, hidden=hidden, num_classes=10, seed=0)
    tr = mw.Trainer(net, mw.SGD(lr=0.02, momentum=0.9), method=method, seed=0)
    meta = method.needs_meta
    n, b = len(x), 64
    rng = np.random.default_rng(0)
    at_first = 0
    t0 = time.perf_counter()
    for step in range(1, last + 1):
        i = int(rng.integers(0, n - b))
        kwargs = {"x_meta": x[-b:], "y_meta": y[-b:]} if meta else {}
        tr.step(x[i : i + b], y[i : i + b], **kwargs)
        if step == first:
            gc.collect()
            at_first = rss_kib()
    gc.collect()
    at_last = rss_kib()
    seconds = time.perf_counter() - t0
    tr.close()
    net.close()
    return at_first, at_last, seconds


def main() -> int:
    """Runs the soak and prints the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--first", type=int, default=1000, help="step of the first RSS reading")
    p.add_argument("--last", type=int, default=20000, help="step of the last RSS reading")
    p.add_argument("--limit", type=float, default=1.0, help="allowed growth in percent")
    p.add_argument("--methods", nargs="*", help="subset of methods (default: all)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    mw.set_threads(args.threads)
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    all_methods = methods(np.bincount(y, minlength=10).tolist())
    names = args.methods or list(all_methods)
    handles0 = mw._core.live_handles()
    print(f"| method | RSS at step {args.first:,} (MiB) | RSS at step {args.last:,} (MiB) | growth | seconds |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name in names:
        a, b, s = soak(all_methods[name], x, y, args.first, args.last)
        growth = 100.0 * (b - a) / a
        worst = max(worst, growth)
        print(f"| {name} | {a / 1024:.1f} | {b / 1024:.1f} | {growth:+.2f}% | {s:.1f} |", flush=True)
    leaked = mw._core.live_handles() - handles0
    print(f"\nworst growth {worst:+.2f}% (limit {args.limit}%), native handles left: {leaked}")
    return 0 if worst < args.limit and leaked == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
