#!/usr/bin/env python3
"""Long fuzzing profile: property-based fuzzing of metaweight's whole public Python API.

Every example runs in a worker subprocess, so a crash (signal, abort) or a hang is caught,
counted and reported with the call that caused it; the worker is restarted and the run goes on.
Prints the counts table (calls tried / ok / documented errors / other exceptions / crashes) and
exits 1 if any call raised an exception outside metaweight's hierarchy or any worker crashed.

    python3 scripts/fuzz.py --examples 10000 --seed 0          # long profile (CI: fast profile in pytest)
    python3 scripts/fuzz.py --family trainer --seed 7 --examples 20 --per-task 20   # reproduce
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python" / "tests"))

import fuzz_harness


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=10_000, help="examples in all (default 10000)")
    ap.add_argument("--seed", type=int, default=0, help="base seed; the same seed gives the same calls")
    ap.add_argument(
        "--family",
        action="append",
        choices=sorted(fuzz_harness.FAMILIES),
        help="only these families (repeatable)",
    )
    ap.add_argument("--per-task", type=int, default=20, help="examples per worker task (default 20)")
    ap.add_argument(
        "--task-seed", type=int, help="run exactly one task with this hypothesis seed (with one --family)"
    )
    ap.add_argument("--json", type=Path, help="also write the full report (findings, crash log) here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    tasks = None
    if args.task_seed is not None:
        if not args.family or len(args.family) != 1:
            ap.error("--task-seed needs exactly one --family")
        tasks = [{"family": args.family[0], "seed": args.task_seed, "examples": args.examples}]
    log = None if args.quiet else (lambda m: print(m, flush=True))
    rep = fuzz_harness.run(
        args.examples, seed=args.seed, families=args.family, per_task=args.per_task, log=log, tasks=tasks
    )
    print(rep.table())
    for f in rep.findings[:30]:
        print(
            f"OTHER EXCEPTION in {f['family']}/{f['call']}({f['args']}): {f['type']}: {f['message']}\n{f['where']}"
        )
    for c in rep.crash_log:
        print(
            f"CRASH task={c['task']} example={c['example']} call={c['call']} rc={c['returncode']} hang={c['hang']}\n{c['stderr'][-1500:]}"
        )
    for f in rep.failures[:20]:
        print(f"HARNESS FAILURE {f}")
    if args.json:
        args.json.write_text(json.dumps(rep.__dict__, indent=1, default=str))
    return 1 if (rep.other or rep.crashes or rep.failures) else 0


if __name__ == "__main__":
    sys.exit(main())
