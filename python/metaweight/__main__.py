"""``python -m metaweight``: the version, and what this installation runs on.

Usage::

    python -m metaweight --version    # "metaweight 0.1.0"
    python -m metaweight info         # version, OpenBLAS kernel and threads, CPU, optional extras
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import re
import sys
from collections.abc import Sequence


def extras() -> dict[str, list[str]]:
    """The optional extras this installation declares and the distributions each needs, read from
    the installed package's metadata (pyproject.toml's optional-dependencies: one place)."""
    try:
        meta = importlib.metadata.metadata("metaweight")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
        return {}
    out: dict[str, list[str]] = {e: [] for e in meta.get_all("Provides-Extra") or []}
    for req in meta.get_all("Requires-Dist") or []:
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)[^;]*;\s*extra\s*==\s*[\"']([^\"']+)[\"']", req)
        if m and m.group(2) in out:
            out[m.group(2)].append(m.group(1))
    return out


#: CPU flags that decide which kernels run (OpenBLAS's and metaweight's own).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile")


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_info() -> dict[str, str]:
    """Vendor, family, model, model name and the kernel-relevant flags of this CPU (Linux's
    /proc/cpuinfo; elsewhere what :mod:`platform` knows)."""
    info = {"vendor": "", "family": "", "model": "", "model name": platform.processor() or platform.machine()}
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "vendor_id" and not info["vendor"]:
                    info["vendor"] = value
                elif key == "cpu family" and not info["family"]:
                    info["family"] = value
                elif key == "model" and not info["model"]:
                    info["model"] = value
                elif key == "model name":
                    info["model name"] = value
                elif key == "flags" and not flags:
                    have = set(value.split())
                    flags = [f for f in CPU_FLAGS if f in have]
                if key == "" and flags:  # end of the first processor's block
                    break
    except OSError:
        pass
    info["flags"] = " ".join(flags)
    return info


def _kernel_source_line() -> str:
    """Where the OpenBLAS core type came from (and, when the environment overrode it, the pick)."""
    from metaweight import _blas

    source, pick = _blas.coretype_source()
    if source == "environment":
        user = _blas.chosen_coretype()
        if pick and pick.lower() != str(user).lower():
            return (f"OpenBLAS kernel choice: OPENBLAS_CORETYPE={user} from the environment; metaweight's "
                    f"choice for this CPU is {pick} (benchmarks/README.md, 'The kernel table'; unset "
                    "OPENBLAS_CORETYPE to use it)")
        return f"OpenBLAS kernel choice: OPENBLAS_CORETYPE={user} from the environment"
    if source == "table":
        return "OpenBLAS kernel choice: the measured table's entry for this CPU family"
    if source == "flags":
        return "OpenBLAS kernel choice: by instruction set (this CPU family is not in the measured table)"
    return "OpenBLAS kernel choice: OpenBLAS's own detection"


def info_lines() -> list[str]:
    """The lines ``python -m metaweight info`` prints."""
    import metaweight as mw

    cpu = cpu_info()
    lines = [
        f"metaweight {mw.__version__} ({mw.__file__})",
        f"python {platform.python_version()} ({sys.executable})",
        f"numpy {_distribution_version('numpy') or 'not installed'}",
        f"OpenBLAS kernel: {mw.blas_core()}  threads: {mw.get_threads()}",
        _kernel_source_line(),
        f"OpenBLAS config: {mw.blas_config()}",
        f"CPU: {cpu['model name']} (vendor {cpu['vendor'] or '?'}, family {cpu['family'] or '?'}, "
        f"model {cpu['model'] or '?'}; {platform.machine()})",
        f"CPU flags: {cpu['flags'] or 'none of ' + ', '.join(CPU_FLAGS)}",
        "optional extras:",
    ]
    declared = extras()
    if not declared:
        lines.append("  (no installed metadata: run from a source tree)")
    for extra, dists in declared.items():
        found = [(d, _distribution_version(d)) for d in dists]
        status = ", ".join(f"{d} {v}" if v else f"{d} missing" for d, v in found)
        mark = "yes" if all(v for _, v in found) else "no "
        lines.append(f"  [{extra}] {mark}  {status}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m metaweight``; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m metaweight", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    ap.add_argument("command", nargs="?", choices=["info"], help="info: version, OpenBLAS, CPU, extras")
    args = ap.parse_args(argv)
    if args.version:
        import metaweight as mw

        print(f"metaweight {mw.__version__}")
        return 0
    if args.command == "info":
        print("\n".join(info_lines()))
        return 0
    ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
