"""Experiment grids on Ray (``run_experiment(..., ray=...)``, ``metaweight-experiments --ray``),
against a real two-node Ray cluster on loopback (the ``ray_cluster`` fixture in conftest.py).

Unmarked tests need no Ray at all (a local grid never imports it; bad arguments fail before any
work). Tests marked ``ray`` use the cluster; ``slow_ray`` ones also kill Ray worker processes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import metaweight as mw
import numpy as np
import pytest
from conftest import RayCluster, ray_cluster_tools
from metaweight.experiments import run_experiment
from metaweight.experiments.ray_grid import ray_address

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "defaults": {
        "dataset": "digits",
        "condition": {"noise": "uniform", "noise_rate": 0.4},
        "meta_per_class": 10,
        "model": {"name": "mlp", "hidden": [32]},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "schedule": {"name": "constant"},
        "epochs": 3,
    },
    "grid": [{"method": ["erm", {"name": "gdw", "lr": 0.01}]}],
}

#: Per-run values that measure the run, not its result (wall time, when it finished).
TIMING = {"time_seconds", "finished"}


def _config(**changes: Any) -> dict[str, Any]:
    cfg = json.loads(json.dumps(TINY))
    defaults = changes.pop("defaults", {})
    cfg["defaults"].update(defaults)
    cfg.update(changes)
    return cfg


def _history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


def _assert_same_run(a: Path, b: Path) -> None:
    """The same files, the same results: final.json but its timing, history.csv but its time
    column, every array of weights.npz bit for bit."""
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    fa, fb = (json.loads((p / "final.json").read_text()) for p in (a, b))
    assert {k: v for k, v in fa.items() if k not in TIMING} == {k: v for k, v in fb.items() if k not in TIMING}
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    assert _history(a / "history.csv") == _history(b / "history.csv")
    with np.load(a / "weights.npz") as za, np.load(b / "weights.npz") as zb:
        assert sorted(za.files) == sorted(zb.files)
        for k in za.files:
            np.testing.assert_array_equal(za[k], zb[k], err_msg=k)


def _run_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


# ---- without a cluster -----------------------------------------------------------------------------------


def test_local_grid_and_cli_never_import_ray(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(_config(seeds=[0], defaults={"epochs": 1})))
    code = textwrap.dedent(
        f"""
        import sys
        from metaweight.experiments import run_experiment
        from metaweight.experiments.__main__ import main
        report = run_experiment({str(cfg)!r}, results={str(tmp_path / "a")!r}, progress=False, log=None)
        assert report.ran == 2, report.results
        assert main([{str(cfg)!r}, "--results", {str(tmp_path / "b")!r}, "--quiet"]) == 0
        print("ray imported:", "ray" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ray imported: False" in out.stdout


def test_ray_address_accepts_auto_and_host_port_and_rejects_the_rest() -> None:
    assert ray_address(True) == "auto"
    assert ray_address("auto") == "auto"
    assert ray_address(" 10.0.0.5:6379 ") == "10.0.0.5:6379"
    assert ray_address("head.example:6379") == "head.example:6379"
    assert ray_address("ray://head:10001") == "ray://head:10001"
    for bad in ("", "head", "head:", ":6379", "head:0", "head:65536", "head:port", 6379, 1.5):
        with pytest.raises(mw.InvalidArgumentError, match="^ray: "):
            ray_address(bad)  # type: ignore[arg-type]


def test_bad_ray_threads_or_retries_fail_before_any_work(tmp_path: Path) -> None:
    for kwargs, name in (
        ({"ray": "no-port"}, "ray"),
        ({"ray": "auto", "threads": 0}, "threads"),
        ({"ray": "auto", "threads": True}, "threads"),
        ({"ray": "auto", "max_retries": -1}, "max_retries"),
    ):
        with pytest.raises(mw.InvalidArgumentError, match=f"^{name}: "):
            run_experiment(_config(), results=tmp_path, progress=False, log=None, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_ray_missing_is_an_import_error_naming_the_extra(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(_config(seeds=[0], defaults={"epochs": 1})))
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["ray"] = None  # as if not installed
        from metaweight.experiments import run_experiment
        from metaweight.experiments.__main__ import main
        try:
            run_experiment({str(cfg)!r}, results={str(tmp_path / "r")!r}, ray="auto", progress=False, log=None)
        except ImportError as e:
            print("ImportError:", e)
        print("cli:", main([{str(cfg)!r}, "--results", {str(tmp_path / "r")!r}, "--ray", "--quiet"]))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ImportError: ray: running a grid on Ray needs the ray package: pip install 'metaweight[ray]'" in out.stdout
    assert "cli: 2" in out.stdout
    assert "metaweight[ray]" in out.stderr
    assert not (tmp_path / "r" / "tiny").exists() or not any((tmp_path / "r" / "tiny").iterdir())


def test_no_cluster_at_the_address_is_a_quick_connection_error(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(ConnectionError, match=f"^ray: no Ray cluster at '127.0.0.1:{port}'"):
        run_experiment(_config(), results=tmp_path, ray=f"127.0.0.1:{port}", progress=False, log=None)
    assert time.monotonic() - t < 60
    assert list(tmp_path.iterdir()) == []


# ---- on the cluster ----------------------------------------------------------------------------------------


@pytest.mark.ray
def test_cluster_has_two_nodes_and_only_loopback_sockets(ray_cluster: RayCluster, tmp_path: Path) -> None:
    # Run a grid first so that the nodes' worker processes exist and hold their sockets too.
    report = run_experiment(
        _config(seeds=[0]), results=tmp_path, ray=ray_cluster.address, progress=False, log=None
    )
    assert report.ran == 2
    import ray

    ray.init(address=ray_cluster.address, log_to_driver=False)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        driver_pid = os.getpid()
        tools = ray_cluster_tools()
        driver_sockets = tools.process_sockets([driver_pid])
    finally:
        ray.shutdown()
    assert len(nodes) >= 2
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    pids = ray_cluster.pids()
    found = tools.process_sockets(pids) + driver_sockets
    listening = [s for s in found if s[2] == "LISTEN"]
    # The GCS (the address's port) and each node's raylet listen; every one of them on loopback.
    assert any(s[3] == ray_cluster.address for s in listening), listening
    assert len({s[0] for s in listening}) >= 3
    unbound = ("0.0.0.0:0", ":::0", "::0")
    bad = [s for s in found if not tools.is_loopback(s[3]) or not (s[4] in unbound or tools.is_loopback(s[4]))]
    assert bad == [], bad


@pytest.mark.ray
def test_grid_on_ray_gives_the_local_grid_file_for_file(ray_cluster: RayCluster, tmp_path: Path) -> None:
    local = run_experiment(_config(), results=tmp_path / "local", threads=1, progress=False, log=None)
    on_ray = run_experiment(
        _config(), results=tmp_path / "ray", ray=ray_cluster.address, threads=1, progress=False, log=None
    )
    assert (local.ran, on_ray.ran, on_ray.failed) == (4, 4, 0)
    assert [r.run_id for r in on_ray.results] == [s.run_id for s in on_ray.planned]
    a, b = _run_dirs(local.folder), _run_dirs(on_ray.folder)
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 4
    for pa, pb in zip(a, b):
        _assert_same_run(pa, pb)
    untimed = [{**vars(row), "time_mean": None} for row in local.summary]
    assert untimed == [{**vars(row), "time_mean": None} for row in on_ray.summary] and len(untimed) == 2
    # No temporary file is left next to the results.
    assert not [p for p in on_ray.folder.rglob(".*")]


@pytest.mark.ray
def test_one_progress_bar_counts_the_runs_across_the_cluster(
    ray_cluster: RayCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    lines: list[str] = []
    report = run_experiment(_config(), results=tmp_path, ray=ray_cluster.address, progress=True, log=lines.append)
    assert report.ran == 4
    captured = capsys.readouterr()
    assert "runs: 100%" in captured.err and "4/4" in captured.err
    assert "epoch" not in captured.err  # no per-run epoch bars from the workers
    # One line per run, written through the bar (tqdm.write) as each run's files land on the driver.
    done = [ln for ln in captured.out.replace("\r", "\n").splitlines() if ln.startswith("done ")]
    assert len(done) == 4 and lines[0].startswith("tiny: 4 runs selected")


@pytest.mark.ray
def test_cli_on_ray_skips_finished_runs_and_reruns_an_unfinished_one(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(_config()))
    cli = [sys.executable, "-m", "metaweight.experiments", str(cfg), "--results", str(tmp_path / "r")]
    first = subprocess.run([*cli, "--ray", ray_cluster.address], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "4 ran, 0 skipped, 0 failed" in first.stdout
    folder = tmp_path / "r" / "tiny"
    runs = _run_dirs(folder)
    before = {p.name: (p / "final.json").read_text() for p in runs}
    (runs[1] / "final.json").unlink()  # as if the driver stopped before this run's final.json
    second = subprocess.run([*cli, "--ray", ray_cluster.address], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "1 ran, 3 skipped, 0 failed" in second.stdout
    after = {p.name: (p / "final.json").read_text() for p in runs}
    assert {k: v for k, v in after.items() if k != runs[1].name} == {
        k: v for k, v in before.items() if k != runs[1].name
    }
    assert json.loads(after[runs[1].name])["test_accuracy"] == json.loads(before[runs[1].name])["test_accuracy"]
    # Nothing left to run: the cluster is not even contacted (nothing listens at this address).
    third = run_experiment(json.loads(cfg.read_text()), results=tmp_path / "r", ray="127.0.0.1:1", progress=False,
                           log=None)
    assert (third.ran, third.skipped, third.failed) == (0, 4, 0)


@pytest.mark.ray
def test_failing_run_on_ray_is_reported_and_left_out_of_the_summary(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    # GDW without a meta set fails when the run starts (a ConfigError raised on the worker).
    cfg = _config(
        grid=[{"method": ["erm", {"name": "gdw", "label": "broken"}]}],
        override=[{"where": {"method": "gdw"}, "set": {"meta_per_class": 0}}],
    )
    report = run_experiment(cfg, results=tmp_path, ray=ray_cluster.address, progress=False, log=None)
    assert (report.ran, report.failed) == (2, 2)
    for r in report.results:
        if r.status == "failed":
            assert r.error is not None and r.error.startswith("ConfigError: meta_per_class")
            assert "Traceback" in (r.path / "error.txt").read_text()
            assert not (r.path / "final.json").exists()
    assert "broken" not in (report.folder / "summary.md").read_text()
    assert len(report.summary) == 1 and report.summary[0].n == 2


@pytest.mark.ray
def test_a_data_set_the_driver_cannot_load_fails_its_runs_as_locally(ray_cluster: RayCluster, tmp_path: Path) -> None:
    cfg = _config(defaults={"dataset": {"name": "npz", "path": str(tmp_path / "missing.npz")}})
    local = run_experiment(cfg, results=tmp_path / "local", progress=False, log=None)
    on_ray = run_experiment(cfg, results=tmp_path / "ray", ray=ray_cluster.address, progress=False, log=None)
    assert (local.failed, on_ray.failed, on_ray.ran) == (4, 4, 0)
    for a, b in zip(local.results, on_ray.results):
        assert a.error == b.error and b.error is not None and "missing.npz not found" in b.error
        assert sorted(p.name for p in a.path.iterdir()) == sorted(p.name for p in b.path.iterdir())
        assert json.loads((a.path / "config.json").read_text()) == json.loads((b.path / "config.json").read_text())
        assert "Traceback" in (b.path / "error.txt").read_text()
    assert on_ray.summary == []


@pytest.mark.ray
def test_data_set_is_loaded_on_the_driver_and_shipped_once(
    ray_cluster: RayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The data set comes from a module only the driver can import: the workers never load it.
    module_dir = tmp_path / "driver_only"
    module_dir.mkdir()
    (module_dir / "mw_driver_only_data.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            calls = 0
            def make():
                global calls
                calls += 1
                rng = np.random.default_rng(0)
                x = rng.normal(size=(300, 6)).astype(np.float32)
                y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
                return x, y
            """
        )
    )
    monkeypatch.syspath_prepend(str(module_dir))
    import mw_driver_only_data  # type: ignore[import-not-found]
    import ray

    puts = []
    real_put = ray.put

    def counting_put(value: Any, *args: Any, **kwargs: Any) -> Any:
        puts.append(type(value).__name__)
        return real_put(value, *args, **kwargs)

    monkeypatch.setattr(ray, "put", counting_put)
    cfg = _config(defaults={"dataset": {"name": "function", "function": "mw_driver_only_data:make"}})
    report = run_experiment(cfg, results=tmp_path / "r", ray=ray_cluster.address, progress=False, log=None)
    assert (report.ran, report.failed) == (4, 0), [r.error for r in report.results]
    assert mw_driver_only_data.calls == 1
    assert puts == ["_UserData"]


@pytest.mark.ray
def test_more_threads_per_run_than_any_node_has_is_refused(ray_cluster: RayCluster, tmp_path: Path) -> None:
    with pytest.raises(mw.InvalidArgumentError, match="^threads: 64 CPUs per run"):
        run_experiment(_config(), results=tmp_path, ray=ray_cluster.address, threads=64, progress=False, log=None)
    assert not any((tmp_path / "tiny").glob("*/final.json"))


def _busy_workers(ray_cluster: RayCluster) -> list[int]:
    """The cluster's worker processes executing a run's task now (Ray titles them by the task)."""
    busy = []
    for pid in ray_cluster.pids():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::metaweight-run"):
            busy.append(pid)
    return busy


def _kill_one_busy_worker(ray_cluster: RayCluster, grid_done: threading.Event) -> int | None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not grid_done.is_set():
        busy = _busy_workers(ray_cluster)
        if busy:
            time.sleep(0.5)  # well into the run (each takes several seconds)
            if busy[0] in _busy_workers(ray_cluster):
                os.kill(busy[0], signal.SIGKILL)
                return busy[0]
        time.sleep(0.02)
    return None


#: Two runs of several seconds each on one thread: long enough to be killed mid-run.
SLOW = {"seeds": [0], "defaults": {"epochs": 150, "model": {"name": "mlp", "hidden": [256, 256]}},
        "grid": [{"method": ["erm", "focal"]}]}


def _grid_with_a_kill(ray_cluster: RayCluster, results: Path, max_retries: int) -> tuple[Any, int | None]:
    done = threading.Event()
    out: dict[str, Any] = {}

    def grid() -> None:
        try:
            out["report"] = run_experiment(
                _config(**SLOW), results=results, ray=ray_cluster.address, max_retries=max_retries,
                progress=False, log=None,
            )
        finally:
            done.set()

    t = threading.Thread(target=grid)
    t.start()
    killed = _kill_one_busy_worker(ray_cluster, done)
    t.join(timeout=600)
    assert not t.is_alive()
    assert "report" in out, "the grid raised"
    return out["report"], killed


@pytest.mark.ray
@pytest.mark.slow_ray
def test_run_whose_worker_is_killed_is_retried_and_completes(ray_cluster: RayCluster, tmp_path: Path) -> None:
    report, killed = _grid_with_a_kill(ray_cluster, tmp_path / "ray", max_retries=3)
    assert killed is not None, "no run's worker was seen running"
    assert (report.ran, report.failed) == (2, 0), [r.error for r in report.results]
    assert killed not in ray_cluster.pids()
    # The retried run is whole and the same as an undisturbed local one.
    local = run_experiment(_config(**SLOW), results=tmp_path / "local", threads=1, progress=False, log=None)
    for pa, pb in zip(_run_dirs(local.folder), _run_dirs(report.folder)):
        _assert_same_run(pa, pb)
    assert len(report.summary) == 2 and all(row.n == 1 for row in report.summary)


@pytest.mark.ray
@pytest.mark.slow_ray
def test_run_whose_worker_dies_without_retries_fails_and_stays_out_of_the_summary(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    report, killed = _grid_with_a_kill(ray_cluster, tmp_path, max_retries=0)
    assert killed is not None, "no run's worker was seen running"
    assert (report.ran, report.failed) == (1, 1)
    failed = next(r for r in report.results if r.status == "failed")
    assert failed.error is not None and "Worker" in failed.error
    assert not (failed.path / "final.json").exists()
    assert (failed.path / "error.txt").is_file()
    assert not (failed.path / "history.csv").exists()  # nothing of the dead attempt
    ran = next(r for r in report.results if r.status == "ran")
    assert [row.n for row in report.summary] == [1]
    assert report.summary[0].method == ran.spec.labels["method"]
    # A re-run completes the grid, running only the failed run.
    again = run_experiment(_config(**SLOW), results=tmp_path, ray=ray_cluster.address, progress=False, log=None)
    assert (again.ran, again.skipped, again.failed) == (1, 1, 0)


@pytest.mark.ray
@pytest.mark.slow_ray
def test_cluster_script_stops_exactly_its_own_processes_workers_included(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    tools = ray_cluster_tools()
    directory = Path(f"/tmp/mwray-own-{os.getpid()}")  # short: Ray's socket paths
    cmd = [sys.executable, str(tools.__file__)]
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        started = subprocess.run([*cmd, "start", f"--dir={directory}", "--nodes=2"], capture_output=True, text=True,
                                 timeout=300)
        assert started.returncode == 0, started.stderr
        address = started.stdout.strip().splitlines()[-1]
        assert address.startswith("127.0.0.1:")
        # Workers exist only while a job runs: start one on each node and keep them busy.
        code = textwrap.dedent(
            f"""
            import time, ray
            ray.init(address={address!r}, log_to_driver=False)
            def hold(): time.sleep(30)
            refs = [ray.remote(hold).options(name="metaweight-run", num_cpus=1).remote() for _ in range(2)]
            time.sleep(60)
            """
        )
        driver = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.monotonic() + 120
        cluster = RayCluster(address, directory)
        while time.monotonic() < deadline and len(_busy_workers(cluster)) < 2:
            time.sleep(0.2)
        busy = _busy_workers(cluster)
        assert len(busy) == 2
        sockets = subprocess.run([*cmd, "sockets", f"--dir={directory}"], capture_output=True, text=True, timeout=60)
        assert sockets.returncode == 0, sockets.stdout
        pids = cluster.pids()
        assert set(busy) <= set(pids) and len(pids) >= 8  # GCS, 2 raylets, agents, monitors, workers
        stopped = subprocess.run([*cmd, "stop", f"--dir={directory}"], capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        driver.kill()
        driver.wait()
        state = json.loads((directory / "cluster.json").read_text())
        assert state["stopped"] is True
        assert not tools._alive(state["keeper_pid"])  # (reaping the keeper is its parent's job: PID 1's)
        for pid in pids:
            # Every Ray process is gone, and reaped by the keeper (no zombie), whatever PID 1 is.
            stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
            assert not stat or stat.split(")")[1].split()[0] != "Z", stat
        assert bystander.poll() is None  # a process the script did not start is untouched
    finally:
        subprocess.run([*cmd, "stop", f"--dir={directory}"], capture_output=True, timeout=120)
        bystander.kill()
        bystander.wait()
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def _sigint_default() -> None:
    # In the child before exec: SIG_DFL, so that its Python installs the KeyboardInterrupt handler
    # even when pytest runs in a shell's background job (which ignores SIGINT).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.ray
@pytest.mark.slow_ray
def test_ctrl_c_on_the_driver_cancels_the_runs_and_keeps_no_partial_one(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    cfg = tmp_path / "slow.json"
    cfg.write_text(json.dumps(_config(**{**SLOW, "seeds": [0, 1]})))  # 4 runs of several seconds
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaweight.experiments", str(cfg), "--results", str(tmp_path / "r"),
         "--ray", ray_cluster.address, "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _busy_workers(ray_cluster) and proc.poll() is None:
        time.sleep(0.05)
    assert _busy_workers(ray_cluster), "no run started"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; finished runs are kept" in err
    # The cancelled runs' workers stop (force-cancelled), and no unfinished run is marked finished.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _busy_workers(ray_cluster):
        time.sleep(0.2)
    assert _busy_workers(ray_cluster) == []
    folder = tmp_path / "r" / "tiny"
    finished = [p for p in folder.iterdir() if (p / "final.json").exists()] if folder.exists() else []
    assert len(finished) < 4
    for p in finished:
        assert (p / "history.csv").is_file() and (p / "weights.npz").is_file()
