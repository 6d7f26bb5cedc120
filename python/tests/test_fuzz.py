"""Fast fuzzing profile: property-based fuzzing of the whole public Python API (hypothesis).

Every example runs in a worker subprocess (``fuzz_harness``), so a crash of the interpreter is
caught and counted instead of ending pytest. Every call must either work or raise a
:class:`metaweight.MetaweightError`; the long profile is ``python3 scripts/fuzz.py --examples 10000``.
Seeded: the same seed makes the same calls, so a failure is reproducible with
``scripts/fuzz.py --family F --task-seed S --examples N`` (the task is printed on failure).
"""

from __future__ import annotations

import fuzz_harness
import pytest

pytest.importorskip("hypothesis")

FAST_EXAMPLES = 1200


@pytest.fixture(scope="module")
def report() -> fuzz_harness.Report:
    return fuzz_harness.run(FAST_EXAMPLES, seed=0, per_task=25)


def _details(rep: fuzz_harness.Report) -> str:
    lines = [rep.table()]
    lines += [
        f"{f['family']}/{f['call']}({f['args']}): {f['type']}: {f['message']}\n{f['where']}"
        for f in rep.findings[:10]
    ]
    lines += [
        f"crash: {c['task']} {c['example']} {c['call']} rc={c['returncode']} hang={c['hang']}\n{c['stderr'][-800:]}"
        for c in rep.crash_log
    ]
    lines += rep.failures[:5]
    return "\n".join(lines)


def test_fuzzed_calls_never_crash_the_interpreter(report: fuzz_harness.Report) -> None:
    assert report.crashes == 0, _details(report)


def test_fuzzed_calls_only_raise_documented_errors(report: fuzz_harness.Report) -> None:
    assert report.other == 0, _details(report)
    assert not report.failures, _details(report)


def test_fast_profile_covers_every_api_family_with_both_outcomes(report: fuzz_harness.Report) -> None:
    print(report.table())  # shown with pytest -s: the counts of the fast profile
    assert set(report.by_family) == set(fuzz_harness.FAMILIES)
    for name, counts in report.by_family.items():
        assert counts["calls"] > 0, name
    assert report.ok > 0 and report.documented > 0
    assert report.calls == report.ok + report.documented + report.other
    assert report.examples >= FAST_EXAMPLES * 0.9


def test_a_worker_that_dies_is_counted_as_a_crash_and_replaced() -> None:
    """The harness itself: a worker killed by a signal is a counted crash, and the run goes on."""
    tasks = [
        {"family": "_abort", "seed": 0, "examples": 1},
        {"family": "metrics_probe", "seed": 1, "examples": 3},
    ]
    rep = fuzz_harness.run(0, tasks=tasks)
    assert rep.crashes == 1 and rep.crash_log[0]["returncode"] != 0
    assert "abort" in rep.crash_log[0]["call"]
    assert rep.calls >= 1 and rep.ok >= 1 and rep.other == 0  # the replacement worker ran the next task
