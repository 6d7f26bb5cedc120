"""metaweight.plots: every plot function draws a non-empty, non-blank PNG from real (tiny) runs.

The runs are tiny runner experiments on digits with 40% uniform noise (ERM, L2RW, MW-Net, GDW, LAW;
2 seeds) and, when the MNIST t10k files are present, the L2RW 4-vs-9 task at two ratios; the plots
are drawn both from the runner's folders and from in-memory objects (History, Trainer,
SearchResult).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import metaweight as mw
from metaweight import conditions, data, plots
from metaweight.experiments import load_results, mnist_directory, run_experiment
from metaweight.law import LAWConfig, LAWSearch

NOISY = {
    "name": "plots",
    "seeds": [0, 1],
    "defaults": {
        "dataset": "digits",
        "condition": {"noise": "uniform", "noise_rate": 0.4},
        "meta_per_class": 10,
        "model": {"name": "mlp", "hidden": [64]},
        "epochs": 4,
    },
    "grid": [
        {"method": ["erm", "l2rw", {"name": "mwnet", "lr": 0.01}, {"name": "gdw", "lr": 0.01}]},
        {"method": [{"name": "law", "episodes": 4, "stages": 3, "warmup_stages": 1}], "seed": [0]},
    ],
}


def _check_png(path: Path, min_kb: float = 8.0) -> None:
    from matplotlib.image import imread

    assert path.is_file(), path
    assert path.stat().st_size > min_kb * 1024, f"{path.name}: only {path.stat().st_size} bytes"
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    gray = img[..., :3].mean(axis=2)
    assert gray.std() > 0.03, f"{path.name} looks blank (pixel std {gray.std():.4f})"
    assert (gray < 0.5).mean() > 0.002, f"{path.name}: almost nothing drawn"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    results = tmp_path_factory.mktemp("plot_runs")
    report = run_experiment(NOISY, results=results, progress=False, log=None)
    assert report.failed == 0, [r.error for r in report.results if r.error]
    return load_results(report.folder)


def _by(runs, name):
    return [r for r in runs if r["config"]["method"]["name"] == name]


def test_accuracy_curves(runs, tmp_path):
    fig = plots.accuracy_curves(runs, path=tmp_path / "acc.png", title="test accuracy")
    # ERM, L2RW, MW-Net, GDW (mean over 2 seeds each) and LAW: every method has per-epoch curves.
    assert len(fig.axes[0].lines) == 5
    _check_png(tmp_path / "acc.png")


def test_weight_functions(runs, tmp_path):
    fig = plots.weight_functions(_by(runs, "mwnet") + _by(runs, "gdw"), path=tmp_path / "wf.png")
    assert {ln.get_label().split(" (")[0] for ln in fig.axes[0].lines} == {"MW-Net", "GDW"}
    _check_png(tmp_path / "wf.png")


@pytest.mark.parametrize("kind", ["hist", "violin"])
def test_weight_distributions(runs, tmp_path, kind):
    sel = _by(runs, "l2rw") + _by(runs, "mwnet") + _by(runs, "gdw") + _by(runs, "law")
    plots.weight_distributions(sel, kind=kind, path=tmp_path / f"wd_{kind}.png")
    _check_png(tmp_path / f"wd_{kind}.png")


def test_class_weights(runs, tmp_path):
    plots.class_weights(_by(runs, "gdw")[0], path=tmp_path / "cw.png")
    _check_png(tmp_path / "cw.png")


def test_law_loss_gap(runs, tmp_path):
    plots.law_loss_gap(_by(runs, "law")[0], path=tmp_path / "law.png")
    _check_png(tmp_path / "law.png")


def test_confusion_matrix(runs, tmp_path):
    plots.confusion_matrix(_by(runs, "erm")[0], path=tmp_path / "cm.png")
    _check_png(tmp_path / "cm.png")
    cm = np.array(_by(runs, "gdw")[0]["final"]["confusion_matrix"])
    plots.confusion_matrix(cm, normalize=False, path=tmp_path / "cm_counts.png")
    _check_png(tmp_path / "cm_counts.png")


def test_imbalance_error(tmp_path):
    try:
        mnist_directory()
    except FileNotFoundError:
        pytest.skip("MNIST t10k files not found")
    cfg = {
        "name": "imbalance",
        "seeds": [0, 1],
        "defaults": {
            "dataset": "mnist-4v9",
            "model": {"name": "mlp", "hidden": [32]},
            "epochs": 2,
            "optimizer": {"name": "sgd", "lr": 0.01},
            "meta_batch_size": 20,
        },
        "grid": {"condition.ratio": [9, 99], "method": ["erm", "l2rw"]},
    }
    report = run_experiment(cfg, results=tmp_path, progress=False, log=None)
    assert report.failed == 0
    fig = plots.imbalance_error(load_results(report.folder), path=tmp_path / "imb.png")
    assert len(fig.axes[0].get_legend().get_texts()) == 2
    _check_png(tmp_path / "imb.png")
    plots.imbalance_error(load_results(report.folder), x="ratio", path=tmp_path / "imb_ratio.png")
    _check_png(tmp_path / "imb_ratio.png")


def test_plots_from_objects(tmp_path):
    """History, Trainer, EpochRecord weights and a LAW SearchResult, without the runner."""
    ds = data.load_digits(flatten=True, seed=0)
    c = conditions.compose(ds.x_train, ds.y_train, 10, 0, meta_per_class=10, noise="flip", noise_rate=0.4)
    histories, trainers = {}, {}
    for name, method in [("ERM", "erm"), ("GDW", mw.GDW(lr=0.01))]:
        tr = mw.Trainer(
            mw.mlp(64, hidden=(32,), num_classes=10, seed=0), mw.SGD(lr=0.1), method=method, seed=0
        )
        histories[name] = tr.fit(
            c.x_train,
            c.y_train,
            epochs=3,
            x_val=ds.x_test,
            y_val=ds.y_test,
            meta=(c.x_meta, c.y_meta) if tr.method.needs_meta else None,
            progress=False,
            record_weights=True,
        )
        trainers[name] = tr
    plots.accuracy_curves(histories, path=tmp_path / "h.png")
    _check_png(tmp_path / "h.png")
    plots.weight_functions({"GDW": trainers["GDW"]}, losses=np.linspace(0, 6, 100), path=tmp_path / "v.png")
    _check_png(tmp_path / "v.png")
    last = histories["GDW"][-1]
    plots.weight_distributions({"GDW": (last.example_weights, c.corrupted)}, path=tmp_path / "w.png")
    _check_png(tmp_path / "w.png")
    plots.class_weights(last.class_weights, c.y_train, y_clean=c.y_train_clean, path=tmp_path / "cw.png")
    _check_png(tmp_path / "cw.png")
    cfg = LAWConfig(stages=3, warmup_stages=1, epochs=2, batch_size=64, parallel=2, fdu_epochs=1)
    result = LAWSearch("mlp(hidden=16, classes=10)", cfg, seed=0).search(
        c.x_train, c.y_train, c.x_meta, c.y_meta, 4, corrupted=c.corrupted, progress=False
    )
    plots.law_loss_gap(result, path=tmp_path / "law.png")
    _check_png(tmp_path / "law.png")
    fig = plots.imbalance_error(
        {"ERM": ([9, 99], [0.02, 0.08], [0.01, 0.02]), "L2RW": ([9, 99], [0.02, 0.03])}
    )
    assert fig.axes and not (tmp_path / "none.png").exists()
    for t in trainers.values():
        t.close()
