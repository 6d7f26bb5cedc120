"""Winograd F(4x4,3x3) against im2col + GEMM, per convolution shape: the measurement behind
``Conv2D.prefersWinograd`` (what ``algorithm="auto"`` picks).

For each of ResNet-32's 3x3 stride-1 layer shapes (16 channels at 32x32, 32 at 16x16, 64 at 8x8)
a network of four such convolutions, global average pooling and a linear layer takes ERM training
steps (forward, backward, update; batch 100) once with ``algo=1`` (GEMM) and once with ``algo=2``
(Winograd). Both networks of a shape are built in one process and stepped alternately for
``--rounds`` rounds; the minimum step time of each is kept (a guard against other load on a
shared machine). Times are the process's CPU time (``time.process_time``; with ``--threads 1``,
the default, that is the step's compute time, which time slices taken by other processes do not
inflate the way they inflate wall time). The ratio GEMM / Winograd > 1 means Winograd is faster.

With ``--resnet32`` the whole ResNet-32 ERM step (batch 100) is timed the same way for
``algo=1`` (every convolution on GEMM: the code path before Winograd), ``auto`` (the default) and
``algo=2`` (Winograd wherever eligible).

Usage:
    python benchmarks/bench_conv_algorithms.py [--threads T] [--rounds R] [--resnet32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SHAPES = [(16, 32), (32, 16), (64, 8)]  # (channels, side)
BATCH = 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--resnet32", action="store_true", help="also time whole ResNet-32 steps")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from metaweight import _core

    _core.set_threads(args.threads)
    rng = np.random.default_rng(0)
    runs = []
    for c, side in SHAPES:
        x = rng.standard_normal((BATCH, c, side, side)).astype(np.float32)
        y = rng.integers(0, 10, BATCH).astype(np.int64)
        for algo in (1, 2):
            spec = ";".join([f"conv(out={c},k=3,p=1,algo={algo})"] * 4) + ";gap;linear(out=10)"
            net = _core.network_create(spec, (c, side, side), 0)
            tr = _core.trainer_create(net, (0, 0.01, 0.9, 0, 5e-4, 0, 0.9, 0.999, 1e-8), (0, [], 0.1, 0, 0.0, 0), 0)
            _core.trainer_step(tr, x, y, None)
            runs.append({"channels": c, "side": side, "algo": "gemm" if algo == 1 else "winograd",
                         "net": net, "trainer": tr, "x": x, "y": y, "times": []})
    if args.resnet32:
        x = rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, BATCH).astype(np.int64)
        for name, suffix in (("resnet32 gemm", ", algo=1"), ("resnet32 auto", ""), ("resnet32 winograd", ", algo=2")):
            net = _core.network_create(f"resnet32(classes=10{suffix})", (3, 32, 32), 0)
            tr = _core.trainer_create(
                net, (0, 0.01, 0.9, 0, 5e-4, 0, 0.9, 0.999, 1e-8), (0, [], 0.1, 0, 0.0, 0), 0
            )
            _core.trainer_step(tr, x, y, None)
            runs.append({"channels": 0, "side": 0, "algo": name, "net": net, "trainer": tr, "x": x, "y": y, "times": []})
    for _ in range(args.rounds):
        for r in runs:
            t0 = time.process_time()
            _core.trainer_step(r["trainer"], r["x"], r["y"], None)
            r["times"].append(time.process_time() - t0)
    print(f"ERM step of 4 conv layers + GAP + linear, batch {BATCH}, threads {args.threads}, "
          f"CPU time, min of {args.rounds} alternating rounds, OpenBLAS core {_core.blas_core()}")
    print()
    print("| layer shape | GEMM ms | Winograd ms | GEMM / Winograd |")
    print("|---|---|---|---|")
    out = []
    for c, side in SHAPES:
        g = min(next(r for r in runs if r["channels"] == c and r["algo"] == "gemm")["times"])
        w = min(next(r for r in runs if r["channels"] == c and r["algo"] == "winograd")["times"])
        print(f"| {c}→{c} ch, {side}×{side} | {1000 * g:.1f} | {1000 * w:.1f} | {g / w:.2f} |")
        out.append({"channels": c, "side": side, "gemm_ms": 1000 * g, "winograd_ms": 1000 * w, "ratio": g / w})
    for r in runs:
        if r["algo"].startswith("resnet32"):
            print(f"| ResNet-32 step, {r['algo'].split()[1]} | {1000 * min(r['times']):.1f} ms |")
            out.append({"model": r["algo"], "ms": 1000 * min(r["times"])})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
