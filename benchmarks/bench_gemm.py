"""SGEMM throughput of the OpenBLAS that metaweight links, per OpenBLAS core type.

Calls ``cblas_sgemm`` of the system ``libopenblas.so.0`` (the library the extension loads; numpy
bundles a different OpenBLAS) through ctypes, on the GEMM shapes a ResNet-32 training step runs
(convolutions as W[Cout, Cin·k·k] × col[Cin·k·k, N·OH·OW] for a batch of 100, plus the two
backward products) and a square reference. Each core type runs in a fresh subprocess because
OpenBLAS reads ``OPENBLAS_CORETYPE`` once, when it loads.

Usage:
    python benchmarks/bench_gemm.py [--cores unset,Haswell,SkylakeX,Cooperlake,Zen] [--threads T]
                                    [--repeats R] [--rounds K]

Prints a Markdown table of GFLOP/s (median of R timed calls after a warm-up) per shape and core,
the best of K rounds that visit the cores in turn (so that load from other processes on a shared
machine hits every core type alike), and per core the summed time of ResNet-32's nine convolution
products relative to the fastest core (the three stages carry equal FLOPs, so this is the share
of a step's GEMM time): the number metaweight's kernel table (python/metaweight/_blas.py) is
chosen by.
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
    ap.add_argument("--cores", default="unset,Haswell,SkylakeX,Cooperlake,Zen",
                    help="comma-separated OPENBLAS_CORETYPE values; 'unset' = OpenBLAS's own detection")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=1, help="best of this many rounds per core")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.threads, args.repeats)))
        return
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for r in run_round(args):
            old = best.get(r["requested"])
            if old is None:
                best[r["requested"]] = r
            else:
                for k, v in r["gflops"].items():
                    old["gflops"][k] = max(old["gflops"][k], v)
    results = list(best.values())
    print()
    print(f"sgemm GFLOP/s, threads={args.threads}, median of {args.repeats}, best of {args.rounds} rounds")
    print("| shape (M×N×K) | " + " | ".join(f"{r['requested']} ({r['core']})" for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for label, *_ in SHAPES:
        print(f"| {label} | " + " | ".join(f"{r['gflops'][label]:.0f}" for r in results) + " |")
    conv = [s for s in SHAPES if s[0].startswith("conv")]
    times = {r["requested"]: sum(2 * m * n * k / r["gflops"][lab] for lab, _, _, m, n, k in conv) / 1e9
             for r in results}
    fastest = min(times.values())
    print("| ResNet-32 conv GEMM time, relative | " + " | ".join(f"{times[r['requested']] / fastest:.2f}"
                                                            for r in results) + " |")


def run_round(args: argparse.Namespace) -> list[dict]:
    results = []
    for core in args.cores.split(","):
        env = dict(os.environ)
        env.pop("OPENBLAS_CORETYPE", None)
        if core == "unset":
            # OpenBLAS's own detection, whole: a cache-size override set for one kernel family
            # (OPENBLAS_L2_SIZE) would skew the blocking of the one it picks.
            env.pop("OPENBLAS_L2_SIZE", None)
        else:
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
    return results


if __name__ == "__main__":
    main()
