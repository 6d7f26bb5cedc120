#!/usr/bin/env bash
# Set-up, then the main job: reweighting methods on the digits data with 40% uniform label noise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 examples/noisy_digits.py "$@"
