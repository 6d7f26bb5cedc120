#!/usr/bin/env bash
# Set-up, then lint (ruff, mypy, swift-format report) and every test: the Swift unit tests (swift
# test) under each OpenBLAS kernel family, the same tests under AddressSanitizer + LeakSanitizer,
# the Python suite (pytest), and the manylinux wheel installed in a fresh Debian root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v swift >/dev/null 2>&1; then export PATH="/opt/swift/usr/bin:$PATH"; fi

# Lint and types first (seconds): ruff's rules and mypy's strict settings are in pyproject.toml.
echo "== ruff check"
python3 -m ruff check python benchmarks scripts examples
echo "== mypy (strict, python/metaweight)"
python3 -m mypy
# swift-format's findings (.swift-format) are reported, not fatal: the Swift sources predate the
# configuration and are not mass-reformatted.
if swift format --version >/dev/null 2>&1; then
  echo "== swift format lint (report only)"
  findings=$(swift format lint --recursive --configuration .swift-format Sources Tests Package.swift 2>&1 | grep -c "warning:" || true)
  echo "swift-format: $findings findings"
fi

# Runs the Swift suite once per OpenBLAS kernel family in $1.. (OPENBLAS_CORETYPE values; "auto" =
# OpenBLAS's own detection, with OPENBLAS_L2_SIZE unset too), building once. The full log goes to a
# file; every failing assertion and crash line is printed in full, then the summary.
swift_suite() {
  swift build --build-tests --scratch-path .build-test 2>&1 | grep -E "error:|Build complete" || true
  local failed=0 core log
  for core in "$@"; do
    log=$(mktemp)
    echo "== swift test (OPENBLAS_CORETYPE=$core)"
    if [ "$core" = auto ]; then
      env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE swift test --skip-build --scratch-path .build-test >"$log" 2>&1 || failed=1
    else
      OPENBLAS_CORETYPE=$core swift test --skip-build --scratch-path .build-test >"$log" 2>&1 || failed=1
    fi
    grep -E "error:|Fatal error|fatal error|[Ee]xited with .*signal|Test Case .* failed" "$log" || true
    grep -E "Executed [0-9]+ tests" "$log" | tail -n 1 || tail -n 40 "$log"
    rm -f "$log"
  done
  return "$failed"
}

# The kernel families metaweight itself can select (python/metaweight/_blas.py: by CPU family from
# a measured table, see benchmarks/README.md), plus OpenBLAS's automatic choice: tolerances must
# hold under every summation order a user can get.
swift_suite auto Haswell SkylakeX Cooperlake Zen

# The whole Swift suite under ASan (LeakSanitizer comes with it on Linux): ~1.5 min of tests plus
# a debug build in its own scratch path. LSan's exit code is off; .ci/lsan_check.py fails the run
# on any ASan error or any leak whose stack touches metaweight's code, and ignores the XCTest
# harness's own leaks on Linux (test-case objects it never releases).
echo "== swift test (AddressSanitizer + LeakSanitizer)"
asan_log=$(mktemp)
LSAN_OPTIONS=exitcode=0 swift test --scratch-path .build-asan -Xswiftc -sanitize=address >"$asan_log" 2>&1 || {
  grep -E "error:|Fatal error|fatal error|ERROR: AddressSanitizer|Test Case .* failed" "$asan_log" || true
  tail -n 60 "$asan_log"
  exit 1
}
grep -E "Executed [0-9]+ tests" "$asan_log" | tail -n 1
python3 .ci/lsan_check.py "$asan_log"
rm -f "$asan_log"

# A real two-node Ray cluster on this machine, everything bound to 127.0.0.1 (scripts/ray_cluster.py:
# a head node and a second node, 1 CPU each, Ray's files under $METAWEIGHT_RAY_DIR). The tests
# marked `ray` (grids, LAW, data-parallel training, the worker-kill tests marked `slow_ray`) run
# against it through METAWEIGHT_RAY_ADDRESS; the trap stops exactly its processes on any exit.
echo "== Ray cluster (two nodes on 127.0.0.1)"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
export METAWEIGHT_RAY_DIR="${METAWEIGHT_RAY_DIR:-/tmp/metaweight-ray-ci}"
python3 scripts/ray_cluster.py stop --dir "$METAWEIGHT_RAY_DIR" >/dev/null 2>&1 || true  # a previous run's, if any
trap 'python3 scripts/ray_cluster.py stop --dir "$METAWEIGHT_RAY_DIR" || true' EXIT
METAWEIGHT_RAY_ADDRESS=$(python3 scripts/ray_cluster.py start --dir "$METAWEIGHT_RAY_DIR")
export METAWEIGHT_RAY_ADDRESS
echo "Ray cluster at $METAWEIGHT_RAY_ADDRESS"
python3 scripts/ray_cluster.py sockets --dir "$METAWEIGHT_RAY_DIR" | tail -n 1

echo "== pytest"
python3 -m pytest -q -p no:cacheprovider python/tests
python3 scripts/ray_cluster.py stop --dir "$METAWEIGHT_RAY_DIR"
# Once more under the other OpenBLAS kernel family: the package's own choice for this CPU when the
# environment presets OPENBLAS_CORETYPE (some machines preset Haswell), else the AVX2 Haswell
# kernels. Accuracy thresholds and float32 tolerances must hold under either (a test once passed
# only under the preset). The cluster restarts under the same setting: the Ray tests compare the
# workers' results with the driver's bit for bit, so both must run the same kernels.
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  echo "== pytest again, OPENBLAS_CORETYPE unset (the package's kernel table; was $OPENBLAS_CORETYPE)"
  unset OPENBLAS_CORETYPE
else
  echo "== pytest again, OPENBLAS_CORETYPE=Haswell"
  export OPENBLAS_CORETYPE=Haswell
fi
METAWEIGHT_RAY_ADDRESS=$(python3 scripts/ray_cluster.py start --dir "$METAWEIGHT_RAY_DIR")
export METAWEIGHT_RAY_ADDRESS
echo "Ray cluster at $METAWEIGHT_RAY_ADDRESS"
python3 -m pytest -q -p no:cacheprovider python/tests
python3 scripts/ray_cluster.py stop --dir "$METAWEIGHT_RAY_DIR"
trap - EXIT

# The self-contained wheel (scripts/wheel.sh: pip wheel + auditwheel repair), installed with pip into
# a fresh venv inside a minimal Debian root (debootstrap, cached in /var/cache/metaweight-debootstrap)
# with no Swift and no OpenBLAS: training, a checkpoint round trip and the OpenBLAS kernel choice
# there. Fails the run on any failure; prints "SKIPPED" only where debootstrap/chroot cannot run
# (not root, or an unprivileged container). ~0.5-1 min warm, ~3.5 min cold (debootstrap).
echo "== wheel in a fresh Debian root (scripts/wheel_test.sh)"
bash scripts/wheel_test.sh
