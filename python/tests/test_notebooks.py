"""The notebooks: generated from notebooks/make_notebooks.py, committed without outputs, and each one
executes top to bottom at METAWEIGHT_NOTEBOOK_SIZE=small (nbclient, kernel python3) in a
temporary working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
NAMES = [
    "01_quickstart.ipynb",
    "02_l2rw_mnist_imbalance.ipynb",
    "03_mwnet_gdw_noisy_labels.ipynb",
    "04_law_search.ipynb",
]
NEEDS_MNIST = {"02_l2rw_mnist_imbalance.ipynb"}
TIMEOUT = 240  # seconds per cell; a small notebook runs in well under a minute


def _mnist_available() -> bool:
    from metaweight.experiments import mnist_directory

    try:
        mnist_directory()
    except FileNotFoundError:
        return False
    return True


def test_notebooks_are_generated_and_clean():
    nbformat = pytest.importorskip("nbformat")
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert nb.nbformat == 4 and nb.metadata["kernelspec"]["name"] == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert 'SIZE = os.environ.get("METAWEIGHT_NOTEBOOK_SIZE", "small")' in code[0].source, name
        for c in code:
            assert c.outputs == [] and c.execution_count is None, f"{name}: committed with outputs"
    # The .ipynb files are exactly what the generator writes.
    r = subprocess.run(
        [sys.executable, str(NOTEBOOKS / "make_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    if name in NEEDS_MNIST and not _mnist_available():
        pytest.skip("MNIST t10k files not found")
    monkeypatch.setenv("METAWEIGHT_NOTEBOOK_SIZE", "small")
    if _mnist_available():  # the kernel runs in a temporary folder: tell it where the data are
        from metaweight.experiments import mnist_directory

        monkeypatch.setenv("METAWEIGHT_MNIST_DIR", str(mnist_directory()))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # The kernel must import the same metaweight as this test process.
    import metaweight

    pkg_root = str(Path(metaweight.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [pkg_root, os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, json.dumps(errors)[:2000]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, f"{name}: only {len(images)} figures displayed"
    assert any("SIZE = 'small'" in "".join(o.get("text", "")) for o in outputs)
