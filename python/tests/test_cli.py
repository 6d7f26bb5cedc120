"""``python -m metaweight``: the version (written once, in the C header) and the ``info`` report."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import metaweight as mw
import pytest
from metaweight.__main__ import cpu_info, extras, info_lines

ROOT = Path(__file__).resolve().parents[2]


def _header_version() -> str:
    text = (ROOT / "Sources" / "CMetaweight" / "include" / "metaweight.h").read_text(encoding="utf-8")
    m = re.search(r'^#define MW_VERSION "([^"]+)"', text, re.M)
    assert m, "MW_VERSION missing from metaweight.h"
    return m.group(1)


def _run(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "metaweight", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_version_is_the_one_in_the_c_header_everywhere():
    v = _header_version()
    assert mw.__version__ == v  # the core's mw_version()
    assert importlib.metadata.version("metaweight") == v  # the installed package's metadata (setup.py)
    assert _run("--version").strip() == f"metaweight {v}"


def test_info_reports_version_blas_threads_cpu_and_every_declared_extra():
    out = _run("info")
    assert f"metaweight {mw.__version__}" in out
    assert f"OpenBLAS kernel: {mw.blas_core()}  threads: {mw.get_threads()}" in out
    assert "CPU: " in out and "CPU flags: " in out
    for extra in extras():
        assert f"[{extra}]" in out
    assert info_lines()[0].startswith("metaweight ")


def test_info_says_where_the_kernel_choice_came_from():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env["OPENBLAS_CORETYPE"] = "Haswell"
    out = subprocess.run([sys.executable, "-m", "metaweight", "info"], check=True, capture_output=True,
                         text=True, env=env).stdout
    assert "OpenBLAS kernel choice: OPENBLAS_CORETYPE=Haswell from the environment" in out
    del env["OPENBLAS_CORETYPE"]
    out = subprocess.run([sys.executable, "-m", "metaweight", "info"], check=True, capture_output=True,
                         text=True, env=env).stdout
    assert "OpenBLAS kernel choice: " in out
    assert "from the environment" not in out


def test_extras_come_from_the_installed_metadata_as_declared_in_pyproject():
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    found = extras()
    assert set(found) == set(declared)
    for extra, reqs in declared.items():
        names = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in reqs}
        assert {d.lower() for d in found[extra]} == names, extra


def test_cpu_info_names_vendor_family_and_flags_on_linux():
    info = cpu_info()
    if Path("/proc/cpuinfo").exists():
        assert info["vendor"] and info["family"]
    assert set(info) >= {"vendor", "family", "model", "model name", "flags"}
