#!/usr/bin/env python3
"""Long fuzzing profile: property-based fuzzing of metaweight's whole public Python API.

Every example runs in a worker subprocess, so a crash (signal, abort) or a hang is caught,
counted and reported with the call that caused it; the worker is restarted and the run goes on.
Prints the counts table per family (calls tried / ok / documented errors / other exceptions /
lost state / crashes) and exits 1 if any call raised an exception outside metaweight's hierarchy
(a call blocked past its watchdog counts there too), any refused call changed a trainer's state
("lost": parameters, optimizer state, batch-norm statistics, weight net), or any worker crashed.

Families: the API groups (construct, network, trainer, fit, lifecycle, conditions, data, optim,
law, law_search, experiments, threads) and the attack classes (mutation: another thread rewrites
inputs during a call; alloc: allocation bombs; special_files: FIFOs, devices, /proc files,
directories for every load path; hostile_checkpoint: CRC-valid checkpoints with hostile contents;
handles: pickling/copying every handle type; reentry: re-entrant callbacks; surrogates: lone
surrogates in every string argument and huge or deeply nested experiment configs).

    python3 scripts/fuzz.py --examples 10000 --seed 0          # long profile (CI: fast profile in pytest)
    python3 scripts/fuzz.py --family alloc --family special_files --examples 500   # some families
    python3 scripts/fuzz.py --family trainer --task-seed 7 --examples 20   # reproduce one task
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
        what = "LOST STATE" if f["type"] == "LOST STATE" else "OTHER EXCEPTION"
        print(f"{what} in {f['family']}/{f['call']}({f['args']}): {f['type']}: {f['message']}\n{f['where']}")
    for c in rep.crash_log:
        print(
            f"CRASH task={c['task']} example={c['example']} call={c['call']} rc={c['returncode']} hang={c['hang']}\n{c['stderr'][-1500:]}"
        )
    for f in rep.failures[:20]:
        print(f"HARNESS FAILURE {f}")
    if args.json:
        args.json.write_text(json.dumps(rep.__dict__, indent=1, default=str))
    return 1 if (rep.other or rep.lost or rep.crashes or rep.failures) else 0


if __name__ == "__main__":
    sys.exit(main())
