#!/usr/bin/env bash
# Installs everything metaweight needs on a fresh Debian machine with the Swift toolchain, then
# builds and installs the package (`pip install .`). Idempotent: re-running skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
  echo "== installing libopenblas-dev (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libopenblas-dev >/dev/null
fi
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
  export PATH="/opt/swift/usr/bin:$PATH"
fi

echo "== installing Python dependencies (pip)"
# onnx/onnxruntime: the ONNX export tests; pandas: the scikit-learn estimator's DataFrame checks;
# tensorboardX/mlflow-skinny: the logging integrations' tests (metaweight[tensorboard], metaweight[mlflow]).
python3 -m pip install -q setuptools wheel numpy scikit-learn tqdm matplotlib pytest hypothesis \
  nbformat nbclient ipykernel ruff mypy typing_extensions onnx onnxruntime pandas tensorboardX mlflow-skinny
# Ray (metaweight[ray], core only: no dashboard): experiment grids on a cluster; scripts/test.sh
# starts a two-node loopback cluster for the tests marked `ray`.
python3 -m pip install -q "ray==2.60.0"
# PyTorch (CPU build, no CUDA libraries) runs the transcribed official MW-Net/GDW/L2RW steps that
# python/tests/test_reference_side_by_side.py checks metaweight's steps against.
if ! python3 -c "import torch" >/dev/null 2>&1; then
  echo "== installing PyTorch, CPU build (pip)"
  python3 -m pip install -q "torch==2.13.0+cpu"
fi

echo "== building and installing metaweight (pip install .)"
python3 -m pip install -q --no-build-isolation .
(cd / && python3 -c "import metaweight, sys; print('metaweight', metaweight.__version__, 'from', metaweight.__file__, '| OpenBLAS core', metaweight.blas_core())")
