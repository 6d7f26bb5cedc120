#!/usr/bin/env bash
# Set-up, then every test: the Swift unit tests (swift test) and the Python suite (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v swift >/dev/null 2>&1; then export PATH="/opt/swift/usr/bin:$PATH"; fi

echo "== swift test"
swift test --scratch-path .build-test 2>&1 | tail -n 25

echo "== pytest"
python3 -m pytest -q -p no:cacheprovider python/tests
