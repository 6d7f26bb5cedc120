"""Chooses OpenBLAS's kernel set before the native library loads.

Debian's OpenBLAS (0.3.21) misdetects recent AVX-512 CPUs (Sapphire Rapids, Zen 4/5) and falls
back to older kernels that run GEMM several times slower. Unless the user has set
``OPENBLAS_CORETYPE`` themselves (their value always wins), we pick a core type for the CPU from
``/proc/cpuinfo``: first from ``KERNEL_TABLE``, measured per CPU family with
``benchmarks/bench_gemm.py`` on ResNet-32's GEMM shapes (see benchmarks/README.md), and for a CPU
not in the table from its instruction-set flags.
"""

from __future__ import annotations

import os

__all__ = ["KERNEL_TABLE", "chosen_coretype", "configure_openblas", "coretype_source"]

_CHOSEN: str | None = None
_SOURCE: tuple[str, str | None] = ("unknown", None)

# (vendor_id, cpu family) -> OPENBLAS_CORETYPE with the lowest summed time over ResNet-32's nine
# convolution GEMM shapes (forward, dW and dcol of the 16-, 32- and 64-channel stages, which
# carry equal FLOPs), measured with benchmarks/bench_gemm.py; the table in benchmarks/README.md
# has the numbers. A family is added here only when measured.
KERNEL_TABLE: dict[tuple[str, int], str] = {
    # AMD EPYC Zen 5 (family 26, AVX-512): Cooperlake 0.185 s-units vs SkylakeX 0.214,
    # Haswell 0.219, Zen 0.227.
    ("AuthenticAMD", 26): "Cooperlake",
    # AMD Zen 4 (family 25, AVX-512): SkylakeX kernels lose up to 1.5x to Zen/Haswell on the
    # 16-channel shapes (measurement reported in issue 11). Zen 3 (also family 25, no AVX-512)
    # gets the same AVX2 kernels.
    ("AuthenticAMD", 25): "Zen",
    ("AuthenticAMD", 23): "Zen",
}


def _cpu_info() -> tuple[str, int | None, set[str]]:
    vendor, family, flags = "", None, set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "cpu family" and family is None:
                    try:
                        family = int(value.strip())
                    except ValueError:
                        family = None
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return vendor, family, flags


def _pick(vendor: str, family: int | None, flags: set[str]) -> str | None:
    if family is not None and (vendor, family) in KERNEL_TABLE:
        return KERNEL_TABLE[(vendor, family)]
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def configure_openblas() -> str | None:
    """Sets ``OPENBLAS_CORETYPE`` for this CPU unless the user already set it.

    Returns:
        The core type in effect (the user's own value when set), or None when unknown.
    """
    global _CHOSEN, _SOURCE
    user = os.environ.get("OPENBLAS_CORETYPE")
    vendor, family, flags = _cpu_info()
    core = _pick(vendor, family, flags)
    how = "table" if family is not None and (vendor, family) in KERNEL_TABLE else "flags"
    if user:
        _CHOSEN = user
        _SOURCE = ("environment", core)
        return user
    if core:
        os.environ["OPENBLAS_CORETYPE"] = core
    _CHOSEN = core
    _SOURCE = (how if core else "openblas", core)
    return core


def coretype_source() -> tuple[str, str | None]:
    """Where the core type in effect came from, and what the package would pick for this CPU.

    Returns:
        ``(source, pick)``: source is ``"environment"`` (``OPENBLAS_CORETYPE`` was set before
        import and wins), ``"table"`` (``KERNEL_TABLE``'s entry for this CPU family), ``"flags"``
        (the instruction-set fallback) or ``"openblas"`` (nothing picked: OpenBLAS's own
        detection); pick is the table's or the flags' choice for this CPU (None if neither).
    """
    return _SOURCE


def chosen_coretype() -> str | None:
    """The core type configured at import time (None if left to OpenBLAS)."""
    return _CHOSEN
