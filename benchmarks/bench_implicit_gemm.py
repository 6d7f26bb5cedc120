"""The products of one chunk of a 3×3 "same" convolution: column matrix against implicit GEMM.

The measurement behind ``Conv2D.prefersImplicit`` (issue 15, item 2). For one chunk of
``--examples`` examples of a ``--channels``-channel layer (``--side``² pixels), with the OpenBLAS
that metaweight links (``libopenblas.so.0``, core type from ``OPENBLAS_CORETYPE`` or its own
detection), one thread:

- ``column products``: the K = 9·C product W · col(x) in the column blocks the core uses
  (``BLAS.gemmColumnBlocks``: each block within OpenBLAS's small-matrix kernels where they exist);
  ``+ im2col`` adds writing the column matrix (NumPy slicing here, slower than the core's copies);
- ``implicit products``: the nine accumulating K = C products over shifted views of the padded
  chunk (``Conv2D.implicitConvolve``); ``+ padding`` adds copying the chunk into the padded buffer.

Prints the minimum of 300 calls of each and the largest difference between the two outputs.

Usage:
    OPENBLAS_CORETYPE=Cooperlake python benchmarks/bench_implicit_gemm.py [--channels 16] [--side 32] [--examples 3]
"""

from __future__ import annotations

import argparse
import ctypes
import time

import numpy as np

FLOAT_P = ctypes.POINTER(ctypes.c_float)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--side", type=int, default=32)
    ap.add_argument("--examples", type=int, default=3)
    args = ap.parse_args()
    lib = ctypes.CDLL("libopenblas.so.0")
    lib.openblas_set_num_threads(1)
    lib.openblas_get_corename.restype = ctypes.c_char_p
    c, h, w, n = args.channels, args.side, args.side, args.examples

    def sgemm(m: int, cols: int, k: int, a: np.ndarray, lda: int, b: np.ndarray, ldb: int, beta: float,
              out: np.ndarray, ldc: int) -> None:
        lib.cblas_sgemm(101, 111, 111, m, cols, k, ctypes.c_float(1.0), a.ctypes.data_as(FLOAT_P), lda,
                        b.ctypes.data_as(FLOAT_P), ldb, ctypes.c_float(beta), out.ctypes.data_as(FLOAT_P), ldc)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((c, n, h, w)).astype(np.float32)
    weights = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
    wcol = np.ascontiguousarray(weights.reshape(c, -1))
    taps = np.ascontiguousarray(weights.transpose(2, 3, 0, 1))  # [3, 3, Cout, Cin]
    wp = w + 2
    grid = n * (h + 2) * wp
    ld = grid + 2 * wp + 2
    xpad = np.zeros((c, ld), np.float32)
    ygrid = np.zeros((c, grid), np.float32)
    xpad4 = np.zeros((c, n, h + 2, w + 2), np.float32)
    xpad4[:, :, 1:-1, 1:-1] = x
    cols = n * h * w
    col = np.zeros((c * 9, cols), np.float32)
    y = np.zeros((c, cols), np.float32)
    width = (1_000_000 // (c * c * 9)) & ~15  # the core's block width for the small-matrix kernels

    def im2col() -> None:
        for a in range(3):
            for b in range(3):
                col.reshape(c, 9, n, h, w)[:, a * 3 + b] = xpad4[:, :, a:a + h, b:b + w]

    def column_products() -> None:
        j = 0
        while j < cols:
            k = min(width, cols - j)
            sgemm(c, k, 9 * c, wcol, 9 * c, col[:, j:], cols, 0.0, y[:, j:], cols)
            j += k

    def pad() -> None:
        xpad[:, :grid].reshape(c, n, h + 2, wp)[:, :, 1:-1, 1:-1] = x

    def implicit_products() -> None:
        for a in range(3):
            for b in range(3):
                off = a * wp + b
                sgemm(c, grid, c, taps[a, b], c, xpad[:, off:], ld, 0.0 if a + b == 0 else 1.0, ygrid, grid)

    im2col()
    pad()
    column_products()
    implicit_products()
    diff = np.abs(y.reshape(c, n, h, w) - ygrid.reshape(c, n, h + 2, wp)[:, :, :h, :w]).max()
    print(f"OpenBLAS core {lib.openblas_get_corename().decode()}, {c} channels, {h}x{w}, {n} examples; "
          f"max |difference| {diff:.1e}")

    def both(f, g):  # type: ignore[no-untyped-def]
        return lambda: (f(), g())

    for name, f in [("column products", column_products), ("column products + im2col", both(im2col, column_products)),
                    ("implicit products", implicit_products), ("implicit products + padding", both(pad, implicit_products))]:
        times = []
        for _ in range(300):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        print(f"{name:30s} {1000 * min(times):.3f} ms")


if __name__ == "__main__":
    main()
