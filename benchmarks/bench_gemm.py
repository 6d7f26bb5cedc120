"""SGEMM throughput of the OpenBLAS that metaweight links, per OpenBLAS core type.

Calls ``cblas_sgemm`` of the system ``libopenblas.so.0`` (the library the extension loads; numpy
bundles a different OpenBLAS) through ctypes, on the GEMM shapes a ResNet-32 training step runs
(convolutions as W[Cout, Cin·k·k] × col[Cin·k·k, N·OH·OW] for a batch of 100, plus the two
backward products) and a square reference. Each core type runs in a fresh subprocess because
OpenBLAS reads ``OPENBLAS_CORETYPE`` once, when it loads.

Usage:
    python benchmarks/bench_gemm.py [--cores unset,Haswell,SkylakeX,Cooperlake] [--threads T]
                                    [--repeats R]

Prints a Markdown table of GFLOP/s (median of R timed calls after a warm-up) per shape and core.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
import time

# (label, transA, transB, M, N, K): row-major C[M×N] = op(A)[M×K] · op(B)[K×N].
SHAPES = [
    ("square 1024", False, False, 1024, 1024, 1024),
    ("conv16 fwd  16×102400×144", False, False, 16, 102400, 144),
    ("conv16 dW   16×144×102400", False, True, 16, 144, 102400),
    ("conv16 dcol 144×102400×16", True, False, 144, 102400, 16),
    ("conv32 fwd  32×25600×288", False, False, 32, 25600, 288),
    ("conv32 dW   32×288×25600", False, True, 32, 288, 25600),
    ("conv32 dcol 288×25600×32", True, False, 288, 25600, 32),
    ("conv64 fwd  64×6400×576", False, False, 64, 6400, 576),
    ("conv64 dW   64×576×6400", False, True, 64, 576, 6400),
    ("conv64 dcol 576×6400×64", True, False, 576, 6400, 64),
]

CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 101, 111, 112


def load_openblas() -> ctypes.CDLL:
    for name in ("libopenblas.so.0", ctypes.util.find_library("openblas")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    raise SystemExit("bench_gemm: libopenblas.so.0 not found (Debian: apt-get install libopenblas-dev)")


def child(threads: int, repeats: int) -> dict:
    import numpy as np

    lib = load_openblas()
    lib.openblas_get_corename.restype = ctypes.c_char_p
    lib.openblas_set_num_threads(threads)
    fp = ctypes.POINTER(ctypes.c_float)
    sgemm = lib.cblas_sgemm
    sgemm.restype = None
    sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, fp, ctypes.c_int, fp, ctypes.c_int,
                                           ctypes.c_float, fp, ctypes.c_int]
    out = {"core": lib.openblas_get_corename().decode(), "gflops": {}}
    rng = np.random.default_rng(0)
    for label, ta, tb, m, n, k in SHAPES:
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        c = np.zeros((m, n), dtype=np.float32)
        args = (CBLAS_ROW_MAJOR, CBLAS_TRANS if ta else CBLAS_NO_TRANS, CBLAS_TRANS if tb else CBLAS_NO_TRANS,
                m, n, k, 1.0, a.ctypes.data_as(fp), a.shape[1], b.ctypes.data_as(fp), b.shape[1], 0.0,
                c.ctypes.data_as(fp), n)
        for _ in range(2):
            sgemm(*args)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sgemm(*args)
            times.append(time.perf_counter() - t0)
        times.sort()
        out["gflops"][label] = 2 * m * n * k / times[len(times) // 2] / 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", default="unset,Haswell,SkylakeX,Cooperlake",
                    help="comma-separated OPENBLAS_CORETYPE values; 'unset' = OpenBLAS's own detection")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.threads, args.repeats)))
        return
    results = []
    for core in args.cores.split(","):
        env = dict(os.environ)
        env.pop("OPENBLAS_CORETYPE", None)
        if core != "unset":
            env["OPENBLAS_CORETYPE"] = core
        cmd = [sys.executable, __file__, "--child", "--threads", str(args.threads), "--repeats", str(args.repeats)]
        p = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"core {core} failed:\n{p.stderr[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["requested"] = core
        results.append(r)
        print(f"  {core:10s} -> {r['core']}", flush=True)
    print()
    print(f"sgemm GFLOP/s, threads={args.threads}, median of {args.repeats}")
    print("| shape (M×N×K) | " + " | ".join(f"{r['requested']} ({r['core']})" for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for label, *_ in SHAPES:
        print(f"| {label} | " + " | ".join(f"{r['gflops'][label]:.0f}" for r in results) + " |")


if __name__ == "__main__":
    main()
