"""The experiment runner (issue: experiments, plots and notebooks on real data).

- A tiny grid (digits, 2 epochs, 2 methods, 2 seeds) writes config.json, history.csv, final.json and
  weights.npz per run plus summary.md / summary.csv.
- Running it again skips every finished run (files untouched); a changed setting re-runs.
- The summary's mean ± std equals the mean and sample std of the per-run final.json accuracies.
- Configuration: grids, overrides, sizes, filters, TOML and JSON files, the command line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from metaweight.experiments import (
    ConfigError,
    load_config,
    load_results,
    mnist_directory,
    prepare,
    run_experiment,
)
from metaweight.experiments.__main__ import main

REPO = Path(__file__).resolve().parents[2]

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "defaults": {
        "dataset": "digits",
        "condition": {"noise": "uniform", "noise_rate": 0.4},
        "meta_per_class": 5,
        "model": {"name": "mlp", "hidden": [32]},
        "epochs": 2,
        "batch_size": 100,
    },
    "grid": {"method": ["erm", {"name": "mwnet", "lr": 0.01}]},
}

TINY_TOML = """
name = "tiny_toml"
seeds = [0]
[defaults]
dataset = "digits"
condition = {noise = "flip", noise_rate = 0.2}
model = {name = "mlp", hidden = [16]}
epochs = 1
[grid]
method = ["erm", "focal"]
"""


def _mnist_available() -> bool:
    try:
        mnist_directory()
    except FileNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    report = run_experiment(TINY, results=results, progress=False, log=None)
    return results, report


def test_runner_writes_every_file(tiny):
    results, report = tiny
    assert (report.ran, report.skipped, report.failed) == (4, 0, 0)
    folder = results / "tiny"
    assert report.folder == folder
    run_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(run_dirs) == 4
    for d in run_dirs:
        assert {"config.json", "history.csv", "final.json", "weights.npz"} <= {p.name for p in d.iterdir()}
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["epochs"] == 2 and cfg["dataset"]["name"] == "digits"
        with open(d / "history.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["epoch"]) for r in rows] == [1, 2]
        assert {"train_loss", "test_accuracy", "weight_mean_clean", "weight_mean_corrupted"} <= set(rows[0])
        final = json.loads((d / "final.json").read_text())
        assert 0.0 <= final["test_accuracy"] <= 1.0
        assert final["test_accuracy"] == pytest.approx(float(rows[-1]["test_accuracy"]))
        cm = np.array(final["confusion_matrix"])
        assert cm.shape == (10, 10) and cm.sum() == final["n_test"]
        assert np.trace(cm) / cm.sum() == pytest.approx(final["test_accuracy"])
        assert len(final["per_class_accuracy"]) == 10
        w = final["weights"]
        assert w["clean"]["n"] + w["corrupted"]["n"] == final["n_train"]
        assert final["n_meta"] == 50 and final["time_seconds"] > 0
        with np.load(d / "weights.npz") as z:
            assert z["example_weights"].shape == (final["n_train"],)
            assert z["corrupted"].sum() == w["corrupted"]["n"]
            if cfg["method"]["name"] == "mwnet":
                assert z["weight_function"].shape == z["weight_function_losses"].shape
    assert (folder / "summary.md").is_file() and (folder / "summary.csv").is_file()


def test_rerun_skips_finished_runs(tiny):
    results, _ = tiny
    finals = sorted((results / "tiny").glob("*/final.json"))
    before = {p: p.stat().st_mtime_ns for p in finals}
    again = run_experiment(TINY, results=results, progress=False, log=None)
    assert (again.ran, again.skipped, again.failed) == (0, 4, 0)
    assert {p: p.stat().st_mtime_ns for p in finals} == before
    assert all(r.final is not None for r in again.results)


def test_changed_settings_rerun(tmp_path):
    cfg = {**TINY, "seeds": [0], "grid": {"method": ["erm"]}}
    first = run_experiment(cfg, results=tmp_path, progress=False, log=None)
    assert first.ran == 1
    changed = {**cfg, "defaults": {**cfg["defaults"], "epochs": 1}}
    second = run_experiment(changed, results=tmp_path, progress=False, log=None)
    assert (second.ran, second.skipped) == (1, 0)  # same run id, different config: trained again
    (d,) = [p for p in (tmp_path / "tiny").iterdir() if p.is_dir()]
    assert json.loads((d / "config.json").read_text())["epochs"] == 1
    forced = run_experiment(changed, results=tmp_path, progress=False, log=None, force=True)
    assert forced.ran == 1


def test_summary_matches_final_files(tiny):
    results, report = tiny
    folder = results / "tiny"
    by_method: dict[str, list[float]] = {}
    for run in load_results(folder):
        by_method.setdefault(run["labels"]["method"], []).append(run["final"]["test_accuracy"])
    assert set(by_method) == {"ERM", "MW-Net"} and all(len(v) == 2 for v in by_method.values())
    with open(folder / "summary.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    md = (folder / "summary.md").read_text()
    for method, accs in by_method.items():
        mean, std = float(np.mean(accs)), float(np.std(accs, ddof=1))
        row = rows[method]
        assert int(row["n_seeds"]) == 2
        assert float(row["mean_test_accuracy"]) == pytest.approx(mean, abs=1e-12)
        assert float(row["std_test_accuracy"]) == pytest.approx(std, abs=1e-12)
        assert f"{100 * mean:.1f} ± {100 * std:.1f}" in md
    summary = {r.method: r for r in report.summary}
    assert summary["ERM"].mean == pytest.approx(np.mean(by_method["ERM"]))
    assert "| digits | uniform 40% |" in md and "| ERM | MW-Net |" in md
    # The transposed layout (a row per method) shows the same cells.
    from metaweight.experiments.summary import summary_markdown

    rows_md = summary_markdown(report.summary, options={"layout": "methods_as_rows"})
    assert "| method | digits / uniform 40% |" in rows_md
    for method, accs in by_method.items():
        mean, std = float(np.mean(accs)), float(np.std(accs, ddof=1))
        line = next(ln for ln in rows_md.splitlines() if ln.startswith(f"| {method} |"))
        assert f"{100 * mean:.1f} ± {100 * std:.1f}" in line


def test_dry_run_and_filters(tmp_path):
    dry = run_experiment(TINY, results=tmp_path, dry_run=True, progress=False, log=None)
    assert len(dry.planned) == 4 and dry.results == [] and not (tmp_path / "tiny").exists()
    only = run_experiment(TINY, results=tmp_path, only=["method=mw-net", "seed=1"], progress=False, log=None)
    assert only.ran == 1 and only.results[0].spec.labels["method"] == "MW-Net"
    assert only.results[0].spec.seed == 1


def test_grid_overrides_and_sizes(tmp_path):
    cfg = {
        "name": "g",
        "seeds": [0, 1, 2],
        "defaults": {"epochs": 20, "schedule": {"name": "multistep", "milestones": [10, 15]}},
        "grid": [
            {
                "dataset": ["digits"],
                "condition": [{"noise": "uniform", "noise_rate": 0.4}],
                "method": ["erm", "l2rw"],
            },
            {
                "condition": [{"imbalance_factor": 10}],
                "method": ["class_balanced"],
                "condition.imbalance_factor": [10, 50],
            },
        ],
        "override": [{"where": {"method": "l2rw"}, "set": {"optimizer.lr": 0.03, "meta_batch_size": 50}}],
        "sizes": {"quick": {"epochs": 3, "seeds": [0]}},
    }
    exp = load_config(cfg)
    assert len(exp.runs) == 2 * 3 + 2 * 3
    l2rw = [r for r in exp.runs if r.config["method"]["name"] == "l2rw"]
    assert all(
        r.config["optimizer"] == {"name": "sgd", "lr": 0.03, "momentum": 0.9, "weight_decay": 5e-4}
        for r in l2rw
    )
    assert all(r.config["meta_batch_size"] == 50 for r in l2rw)
    labels = {r.labels["condition"] for r in exp.runs}
    assert labels == {"uniform 40%", "long-tailed 10", "long-tailed 50"}
    assert len({r.run_id for r in exp.runs}) == len(exp.runs)
    quick = load_config(cfg, size="quick")
    assert len(quick.runs) == 4 and {r.config["epochs"] for r in quick.runs} == {3}
    assert quick.folder_name == "g-quick"
    scaled = load_config(cfg, size=0.1)
    assert {r.config["epochs"] for r in scaled.runs} == {2}
    assert scaled.runs[0].config["schedule"]["milestones"] == [1]
    small = load_config(cfg, size="small")  # built-in: epochs x 0.1
    assert {r.config["epochs"] for r in small.runs} == {2}
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config({"defaults": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown top-level"):
        load_config({"method": "erm"})
    with pytest.raises(ConfigError, match="size"):
        load_config(cfg, size="huge")


def test_toml_json_and_command_line(tmp_path, capsys):
    toml = tmp_path / "t.toml"
    toml.write_text(TINY_TOML)
    js = tmp_path / "t.json"
    js.write_text(json.dumps({**TINY, "name": "tiny_json", "seeds": [0], "grid": {"method": ["erm"]}}))
    assert main([str(toml), str(js), "--results", str(tmp_path / "r"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| digits | flip 20% |" in out and "2 ran, 0 skipped" in out and "1 ran, 0 skipped" in out
    assert len(list((tmp_path / "r" / "tiny_toml").glob("*/final.json"))) == 2
    assert main([str(toml), "--results", str(tmp_path / "r"), "--quiet"]) == 0
    assert "0 ran, 2 skipped" in capsys.readouterr().out
    assert main([str(toml), "--results", str(tmp_path / "r"), "--dry-run", "--only", "method=focal"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 runs selected" in out and "[done]" in out
    assert main([str(toml), "--results", str(tmp_path / "r"), "--summary-only"]) == 0
    assert "Focal" in capsys.readouterr().out
    # A failing run is recorded and reported; the others still run.
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "name": "bad",
                "defaults": {"epochs": 1, "model": {"name": "mlp", "hidden": [8]}},
                "grid": {"method": ["erm", {"name": "focal", "gamma": -1}]},
            }
        )
    )
    assert main([str(bad), "--results", str(tmp_path / "r"), "--quiet"]) == 1
    assert "1 ran, 0 skipped, 1 failed" in capsys.readouterr().out
    (err,) = (tmp_path / "r" / "bad").glob("*/error.txt")
    assert "gamma" in err.read_text()
    assert main([str(tmp_path / "missing.toml")]) == 2


def test_law_run_writes_episode_logs(tmp_path):
    cfg = {
        "name": "law",
        "defaults": {
            "dataset": "digits",
            "condition": {"noise": "uniform", "noise_rate": 0.4},
            "model": {"name": "mlp", "hidden": [32]},
            "epochs": 2,
            "method": {
                "name": "law",
                "episodes": 2,
                "stages": 2,
                "warmup_stages": 1,
                "search_model": {"name": "mlp", "hidden": [16]},
            },
        },
    }
    report = run_experiment(cfg, results=tmp_path, progress=False, log=None)
    assert report.ran == 1, report.results[0].error
    (run,) = load_results(tmp_path / "law")
    final = run["final"]
    assert final["law"]["episodes"] == 2 and final["weights"]["corrupted"]["n"] > 0
    with open(run["path"] / "law_episodes.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 and {"reward", "loss_gap", "weight_corrupted"} <= set(rows[0])
    with np.load(run["path"] / "weights.npz") as z:
        assert z["stage_weights"].shape == (2, final["n_train"])
        assert z["epoch_weights"].shape == (2, final["n_train"])
    # LAW runs have the same per-epoch curves as the other methods (test accuracy, weights).
    with open(run["path"] / "history.csv") as f:
        hist = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in hist] == [1, 2]
    assert all(0.0 < float(r["test_accuracy"]) <= 1.0 for r in hist)
    assert float(hist[-1]["test_accuracy"]) == pytest.approx(final["test_accuracy"], abs=1e-6)
    assert all(r["weight_mean_clean"] != "" and r["weight_mean_corrupted"] != "" for r in hist)


def test_data_conditions():
    base = {"dataset": {"name": "digits"}, "model": {"name": "mlp"}, "meta_per_class": 10, "seed": 3}
    lt = prepare({**base, "condition": {"imbalance_factor": 20}})
    counts = np.bincount(lt.y_train, minlength=10)
    assert counts[-1] == counts[0] // 20 and np.all(np.diff(counts) <= 0) and not lt.corrupted.any()
    assert np.bincount(lt.y_meta).tolist() == [10] * 10
    noisy = prepare({**base, "condition": {"noise": "flip", "noise_rate": 0.3}})
    assert 0.2 < noisy.corrupted.mean() < 0.4
    assert np.all(noisy.y_train[noisy.corrupted] == (noisy.y_clean[noisy.corrupted] + 1) % 10)
    capped = prepare({**base, "condition": {}, "max_train": 200})
    assert len(capped.x_train) == 200


@pytest.mark.skipif(not _mnist_available(), reason="MNIST t10k files not found")
def test_mnist_4v9_task():
    p = prepare(
        {
            "dataset": {"name": "mnist-4v9"},
            "model": {"name": "mlp"},
            "meta_per_class": 10,
            "seed": 0,
            "condition": {"ratio": 50},
        }
    )
    counts = np.bincount(p.y_train, minlength=2)
    assert p.num_classes == 2 and counts[1] / counts[0] == pytest.approx(50, rel=0.05)
    assert np.bincount(p.y_meta).tolist() == [10, 10]
    assert np.bincount(p.y_test).tolist()[0] == np.bincount(p.y_test).tolist()[1]
    assert p.x_train.shape[1] == 784


def test_example_configs_parse():
    configs = sorted((REPO / "examples" / "configs").glob("*.toml")) + sorted(
        (REPO / "examples" / "configs").glob("*.json")
    )
    assert any(c.name == "readme_table.toml" for c in configs)
    for c in configs:
        exp = load_config(c)
        assert exp.runs, c
        assert len({r.run_id for r in exp.runs}) == len(exp.runs), c
        small = load_config(c, size="small")
        assert small.runs and all(r.config["epochs"] <= 5 for r in small.runs), c
    readme = load_config(REPO / "examples" / "configs" / "readme_table.toml")
    methods = {r.config["method"]["name"] for r in readme.runs}
    assert {"erm", "l2rw", "mwnet", "gdw", "focal", "bootstrap", "class_balanced"} <= methods
    assert {r.labels["condition"] for r in readme.runs} == {"uniform 40%", "flip 40%", "long-tailed 100"}
    assert {r.config["seed"] for r in readme.runs} == {0, 1, 2, 3, 4}
