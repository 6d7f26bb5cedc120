"""Chooses OpenBLAS's kernel set before the native library loads.

Debian's OpenBLAS (0.3.21) misdetects recent AVX-512 CPUs (Sapphire Rapids, Zen 4/5) and falls
back to older kernels that run GEMM several times slower. Unless the user has set
``OPENBLAS_CORETYPE`` themselves, we pick a core from the CPU flags in ``/proc/cpuinfo``.
"""

from __future__ import annotations

import os

__all__ = ["chosen_coretype", "configure_openblas"]

_CHOSEN: str | None = None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _pick(flags: set[str]) -> str | None:
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def configure_openblas() -> str | None:
    """Sets ``OPENBLAS_CORETYPE`` from the CPU flags unless the user already set it.

    Returns:
        The core type in effect (the user's own value when set), or None when unknown.
    """
    global _CHOSEN
    user = os.environ.get("OPENBLAS_CORETYPE")
    if user:
        _CHOSEN = user
        return user
    core = _pick(_cpu_flags())
    if core:
        os.environ["OPENBLAS_CORETYPE"] = core
    _CHOSEN = core
    return core


def chosen_coretype() -> str | None:
    """The core type configured at import time (None if left to OpenBLAS)."""
    return _CHOSEN
