"""Fixtures shared by the Python tests (helpers that are plain functions live in _api_support.py).

A module may define a fixture of the same name to narrow it (e.g. a ``digits`` of 200 examples).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import metaweight as mw
import numpy as np
import pytest
from _api_support import digits_split, small_mlp


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's digits split 70/30 (seed 0): (x_train, y_train, x_test, y_test), fresh per module."""
    return digits_split(seed=0)


@pytest.fixture(scope="module")
def digits_xy(digits: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The training half of :func:`digits` as (x, y)."""
    return digits[0], digits[1]


@pytest.fixture
def network() -> Iterator[mw.Network]:
    """A fresh 64-32-10 MLP, closed after the test."""
    net = small_mlp()
    yield net
    net.close()


@pytest.fixture
def trainer(network: mw.Network) -> Iterator[mw.Trainer]:
    """An SGD trainer (lr 0.05) on :func:`network`, closed after the test."""
    t = mw.Trainer(network, mw.SGD(lr=0.05))
    yield t
    t.close()


# ---- a real Ray cluster (tests marked `ray`) --------------------------------------------------------------

# Ray reads this when it is imported: with it, 127.0.0.1 stays 127.0.0.1 (instead of this machine's
# outward address), which the loopback cluster of scripts/ray_cluster.py needs (see that script).
# The cluster runs without token authentication (loopback only; scripts/ray_cluster.py, LOOPBACK_ENV).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["RAY_AUTH_MODE"] = "disabled"

_RAY_CLUSTER_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ray_cluster.py"


def ray_cluster_tools() -> Any:
    """scripts/ray_cluster.py as a module (process and socket helpers)."""
    spec = importlib.util.spec_from_file_location("metaweight_ray_cluster", _RAY_CLUSTER_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class RayCluster:
    """A running Ray cluster: ``address`` (``127.0.0.1:PORT``) and ``directory``, the folder where
    scripts/ray_cluster.py recorded it (None for a cluster given only by its address)."""

    address: str
    directory: Path | None

    def pids(self) -> list[int]:
        """The cluster's live processes (GCS, raylets, agents, workers); needs ``directory``."""
        if self.directory is None:
            pytest.skip("METAWEIGHT_RAY_ADDRESS without METAWEIGHT_RAY_DIR: the cluster's processes are unknown")
        return list(ray_cluster_tools().cluster_pids(self.directory))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A real two-node Ray cluster on loopback for the session.

    With ``METAWEIGHT_RAY_ADDRESS`` set (scripts/test.sh starts the cluster before pytest and sets
    it, with ``METAWEIGHT_RAY_DIR``), that cluster; otherwise one started here with
    ``scripts/ray_cluster.py start`` (head + one worker node, 1 CPU each, everything on 127.0.0.1)
    and stopped, exactly its own processes, at the end of the session. Its workers inherit this
    process's environment (``PYTHONPATH`` included)."""
    pytest.importorskip("ray")
    address = os.environ.get("METAWEIGHT_RAY_ADDRESS")
    if address:
        d = os.environ.get("METAWEIGHT_RAY_DIR")
        yield RayCluster(address, Path(d) if d else None)
        return
    directory = Path(tempfile.mkdtemp(prefix="mwray-", dir="/tmp"))  # short: Ray's socket paths
    cmd = [sys.executable, str(_RAY_CLUSTER_SCRIPT)]
    started = subprocess.run([*cmd, "start", f"--dir={directory}"], capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        subprocess.run([*cmd, "stop", f"--dir={directory}"], capture_output=True, timeout=120)
        pytest.fail(f"could not start the Ray cluster: {started.stderr[-3000:]}")
    try:
        yield RayCluster(started.stdout.strip().splitlines()[-1], directory)
    finally:
        stopped = subprocess.run([*cmd, "stop", f"--dir={directory}"], capture_output=True, text=True, timeout=120)
        if stopped.returncode == 0:
            shutil.rmtree(directory, ignore_errors=True)
