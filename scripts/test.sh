#!/usr/bin/env bash
# Set-up, then every test: the Swift unit tests (swift test), the same tests under
# AddressSanitizer + LeakSanitizer, and the Python suite (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v swift >/dev/null 2>&1; then export PATH="/opt/swift/usr/bin:$PATH"; fi

echo "== swift test"
swift test --scratch-path .build-test 2>&1 | tail -n 25

# The whole Swift suite under ASan (LeakSanitizer comes with it on Linux): ~1.5 min of tests plus
# a debug build in its own scratch path. LSan's exit code is off; .ci/lsan_check.py fails the run
# on any ASan error or any leak whose stack touches metaweight's code, and ignores the XCTest
# harness's own leaks on Linux (test-case objects it never releases).
echo "== swift test (AddressSanitizer + LeakSanitizer)"
asan_log=$(mktemp)
LSAN_OPTIONS=exitcode=0 swift test --scratch-path .build-asan -Xswiftc -sanitize=address >"$asan_log" 2>&1 || {
  tail -n 60 "$asan_log"
  exit 1
}
grep -E "Executed [0-9]+ tests" "$asan_log" | tail -n 1
python3 .ci/lsan_check.py "$asan_log"
rm -f "$asan_log"

echo "== pytest"
python3 -m pytest -q -p no:cacheprovider python/tests
