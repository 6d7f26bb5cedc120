#!/usr/bin/env python3
"""Ctrl-C latency: the time from SIGINT to the process reporting that ``Trainer.fit`` or a LAW
search stopped (at a step boundary), over several runs each.

    python3 benchmarks/interrupt_latency.py [--runs 5]

Uses the children of python/tests/test_interrupts.py (a long fit of a 64-256-256-10 MLP; a LAW
search whose first stage is ~500,000 optimizer steps), each interrupted 0.3-1.3 s after it starts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "python"), str(ROOT / "python" / "tests")]

import test_interrupts as ti


def main() -> None:
    """Runs and prints the latencies."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    rng = random.Random(0)
    for name, code in (("Trainer.fit", ti.FIT_CHILD), ("LAWSearch.search", ti.LAW_CHILD)):
        lat = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as d:
                latency, _ = ti._interrupt(ti._child(code, str(Path(d) / "ck")), delay=rng.uniform(0.3, 1.3))
                lat.append(latency * 1000)
        print(f"{name}: SIGINT -> stopped: median {statistics.median(lat):.1f} ms, max {max(lat):.1f} ms "
              f"over {args.runs} runs ({', '.join(f'{v:.1f}' for v in lat)})")


if __name__ == "__main__":
    main()
