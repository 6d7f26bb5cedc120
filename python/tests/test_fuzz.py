"""Fast fuzzing profile: property-based fuzzing of the whole public Python API (hypothesis).

Every example runs in a worker subprocess (``fuzz_harness``), so a crash of the interpreter is
caught and counted instead of ending pytest. Every call must either work or raise a
:class:`metaweight.MetaweightError`, and a refused call on a trainer must change nothing
(parameters, optimizer state, batch-norm statistics, weight net: "nothing lost"). The profile
covers every family, the attack classes of issue 11 included (another thread rewriting inputs,
allocation bombs, special files, CRC-valid hostile checkpoints, copying handles, re-entrant
callbacks, lone surrogates and huge configs); the long profile is
``python3 scripts/fuzz.py --examples 10000``.
Seeded: the same seed makes the same calls, so a failure is reproducible with
``scripts/fuzz.py --family F --task-seed S --examples N`` (the task is printed on failure).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import fuzz_harness
import numpy as np
import pytest

pytest.importorskip("hypothesis")

FAST_EXAMPLES = 1500


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


def test_refused_calls_lose_nothing(report: fuzz_harness.Report) -> None:
    """After every refused call on a trainer its parameters, optimizer state, batch-norm
    statistics and weight net are unchanged, and a hostile checkpoint that loads leaves a sane state."""
    assert report.lost == 0, _details(report)


def test_fast_profile_runs_every_attack_class_of_issue_11(report: fuzz_harness.Report) -> None:
    for name in ("mutation", "alloc", "special_files", "hostile_checkpoint", "handles", "reentry", "surrogates"):
        counts = report.by_family[name]
        assert counts["calls"] >= 10 and counts["documented"] > 0, (name, counts)


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


def test_the_nothing_lost_check_counts_a_refused_call_that_changed_the_parameters() -> None:
    rep = fuzz_harness.run(0, tasks=[{"family": "_lost_probe", "seed": 0, "examples": 1}])
    assert rep.lost == 1 and rep.documented == 1 and rep.crashes == 0, rep.table()
    assert rep.findings[0]["type"] == "LOST STATE" and "parameters" in rep.findings[0]["message"]


def test_the_watchdog_reports_a_blocked_call_and_releases_it() -> None:
    rep = fuzz_harness.run(0, tasks=[{"family": "_hang_probe", "seed": 0, "examples": 1}])
    assert rep.other == 1 and rep.crashes == 0, rep.table()
    assert rep.findings[0]["type"].endswith("_Hang") and "released" in rep.findings[0]["message"]


# ---------------------------------------------------------------------------------------------
# Regressions for what the attack classes found


def test_a_huge_broadcast_batch_raises_resource_error_not_numpy_memory_error() -> None:
    """fuzz 'alloc': the float32/int64 copy of a broadcast view of 2**40 examples (free to make)
    raised numpy's MemoryError from _validate.as_features/as_labels, outside the hierarchy."""
    import metaweight as mw

    n = 2**40
    x = np.broadcast_to(np.zeros((1, 4), np.float32), (n, 4))
    y = np.broadcast_to(np.zeros(1, np.int64), (n,))
    model = mw.mlp(4, hidden=(5,), num_classes=3, seed=0)
    tr = mw.Trainer(model, mw.SGD(lr=0.1), seed=0)
    before = model.get_flat().copy()
    for call in (lambda: tr.step(x, y), lambda: tr.predict(x), lambda: tr.evaluate(x, y)):
        with pytest.raises(mw.ResourceError, match="not enough memory"):
            call()
    from metaweight._validate import as_labels, as_weights

    with pytest.raises(mw.ResourceError, match="y: not enough memory"):
        as_labels(y, "y", 3)
    with pytest.raises(mw.ResourceError, match="w: not enough memory"):
        as_weights(np.broadcast_to(np.float64(1), (n,)), "w", n)
    np.testing.assert_array_equal(model.get_flat(), before)
    tr.close()
    model.close()


def test_batches_refuses_a_ragged_order_with_a_library_error() -> None:
    """fuzz 'data': data.batches(order=[[1], [2, 3]]) raised numpy's ValueError."""
    import metaweight as mw

    x, y = np.zeros((20, 3), np.float32), np.arange(20) % 4
    with pytest.raises(mw.ShapeError, match="order"):
        list(mw.data.batches(x, y, 8, order=[[1], [2, 3]]))


def test_check_finite_reads_the_array_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """fuzz 'mutation': Trainer.losses raised IndexError when another thread rewrote x (a float32
    C-contiguous array, checked in place) between check_finite's two reads of it."""
    import metaweight as mw
    from metaweight import _validate

    real = np.isfinite
    calls: list[int] = []

    def rewritten_meanwhile(a: Any) -> Any:  # the second read sees the other thread's finite values
        calls.append(1)
        m = real(a)
        if len(calls) > 1:
            m[...] = True
        return m

    monkeypatch.setattr(_validate.np, "isfinite", rewritten_meanwhile)
    with pytest.raises(mw.NonFiniteError, match="x: expected finite values"):
        _validate.check_finite(np.array([1.0, np.nan], np.float32), "x")


def _run_child(code: str, tmp_path: Path) -> None:
    """Runs ``code`` in a child process (the metaweight this process imported) with a 4 GiB address
    space and a 60 s limit: a regression there (a blocked open, an endless read of /dev/zero)
    fails this test instead of hanging it or eating the machine."""
    import resource
    import subprocess
    import sys
    import textwrap

    import metaweight as mw

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))

    package_dir = str(Path(mw.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_dir, os.environ.get("PYTHONPATH", "")]))
    try:
        r = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), str(tmp_path)],
            capture_output=True, text=True, env=env, timeout=60, preexec_fn=limit,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the child blocked (no answer in 60 s)")
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout[-2000:] + r.stderr[-2000:]


def test_dataset_loaders_refuse_fifos_devices_and_directories_without_blocking(tmp_path: Path) -> None:
    """fuzz 'special_files': data.load_idx on a FIFO blocked in open() for ever (and read
    /dev/zero without bound)."""
    _run_child(
        """
        import os, sys
        from pathlib import Path
        import metaweight as mw
        tmp = Path(sys.argv[1])
        fifo = tmp / "train-images-idx3-ubyte"
        os.mkfifo(fifo)
        for path in (fifo, Path("/dev/zero"), Path("/dev/null"), tmp):
            try:
                mw.data.load_idx(path)
                raise SystemExit(f"load_idx({path}) worked")
            except mw.DataFileError as e:
                assert "not a regular file" in str(e), e
        cifar = tmp / "cifar"
        cifar.mkdir()
        for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
            (cifar / name).symlink_to("/dev/zero")
        for call in (lambda: mw.data.load_cifar(cifar), lambda: mw.data.load_mnist(tmp)):
            try:
                call()
                raise SystemExit("a loader worked on special files")
            except mw.MetaweightError:
                pass
        print("OK")
        """,
        tmp_path,
    )


def test_load_results_skips_fifos_devices_and_non_object_json_without_blocking(tmp_path: Path) -> None:
    """fuzz 'special_files': load_results blocked on a FIFO named final.json (and read /dev/zero
    without bound); a final.json holding a list raised AttributeError."""
    for name, final in (("fifo-run", None), ("zero-run", "/dev/zero"), ("list-run", "[]"),
                        ("good-run", json.dumps({"labels": {"a": 1}}))):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text("{}")
        if final is None:
            os.mkfifo(run / "final.json")
        elif final.startswith("/dev"):
            (run / "final.json").symlink_to(final)
        else:
            (run / "final.json").write_text(final)
    _run_child(
        """
        import sys
        from metaweight.experiments.runner import load_results
        runs = load_results(sys.argv[1])
        assert [r["run_id"] for r in runs] == ["good-run"], runs
        print("OK")
        """,
        tmp_path,
    )
