"""The experiment runner on the user's own data (issue 14, item 1) and its label-issue report.

- Every table of a configuration is strict: an unknown key names the key, its section and the
  allowed keys (``dataset = {path = "mine.npz"}`` no longer trains on digits).
- Data sets from files: ``.npz`` (given test set, or a seeded stratified ``test_fraction`` split),
  ``.npy`` pairs (memory-mapped; only the rows used are read), an MNIST-layout IDX folder, a CIFAR-10
  python folder, a ``package.module:function``; optional class names, input shape, normalisation,
  a given clean meta set (index file or second file) and known true labels.
- ``label_issues = true`` / ``--label-issues`` writes ``label_issues.csv`` per run.
"""

from __future__ import annotations

import csv
import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from metaweight.experiments import ConfigError, load_config, prepare, run_experiment
from metaweight.experiments.__main__ import main
from metaweight.experiments.datasets import gather

REPO = Path(__file__).resolve().parents[2]


def _blobs(n: int, c: int = 3, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    centers = np.random.default_rng(99).normal(0, 3, (c, d))
    x = (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    return x, y.astype(np.int64)


def _run(dataset: dict, **defaults) -> dict:
    cfg = {
        "defaults": {
            "dataset": dataset,
            "meta_per_class": 5,
            "model": {"name": "mlp", "hidden": [8]},
            "epochs": 1,
            **defaults,
        }
    }
    (spec,) = load_config(cfg).runs
    return spec.config


# ---- strict configurations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "words"),
    [
        ({"defaults": {"dataset": {"path": "mine.npz"}}}, ["dataset", "'path'", "npz"]),
        ({"defaults": {"dataset": {"name": "npz", "pth": "m.npz"}}}, ["dataset", "'pth'", "path"]),
        ({"defaults": {"condition": {"nosie": "uniform"}}}, ["condition", "'nosie'", "noise_rate"]),
        ({"defaults": {"model": {"name": "mlp", "hiden": [3]}}}, ["model", "'hiden'", "hidden"]),
        ({"defaults": {"optimizer": {"name": "sgd", "lr": 0.1, "mom": 0.9}}}, ["optimizer", "'mom'"]),
        ({"defaults": {"schedule": {"name": "multistep", "fraction": [0.5]}}}, ["schedule", "'fraction'"]),
        ({"defaults": {"method": {"name": "mwnet", "lrr": 0.1}}}, ["method", "'lrr'", "lr"]),
        ({"grid": {"method": [{"name": "gdw", "bogus": 1}]}}, ["method", "'bogus'"]),
        ({"grid": {"condition.nosie": ["uniform"]}}, ["condition", "'nosie'"]),
        ({"grid": {"epoch": [1]}}, ["epoch"]),
        ({"override": [{"where": {"methd": "erm"}, "set": {"epochs": 1}}]}, ["override[0].where", "methd"]),
        ({"override": [{"where": {}, "set": {"epochs": 1}, "when": 1}]}, ["override[0]", "'when'"]),
        ({"override": [{"set": {"epoch": 1}}]}, ["epoch"]),
        ({"sizes": {"small": {"epoch": 1}}}, ["sizes.small", "epoch"]),
        ({"summary": {"metrc": "test_error"}}, ["summary", "'metrc'", "metric"]),
        ({"seeds": [0], "nmae": "x"}, ["top-level", "nmae"]),
        ({"defaults": {"label_issues": 0}}, ["label_issues"]),
    ],
)
def test_unknown_keys_are_errors(cfg, words):
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_shipped_configs_still_load():
    for c in sorted((REPO / "examples" / "configs").glob("*.toml")) + sorted(
        (REPO / "examples" / "configs").glob("*.json")
    ):
        assert load_config(c).runs and load_config(c, size="small").runs, c
    own = load_config(REPO / "examples" / "configs" / "own_data.toml")
    assert {r.config["dataset"]["name"] for r in own.runs} == {"npz"}


# ---- data sets from files ---------------------------------------------------------------------------------


def test_npz_with_test_set(tmp_path):
    x, y = _blobs(120)
    xt, yt = _blobs(30, seed=1)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    cfg = _run(
        {"name": "npz", "path": str(tmp_path / "d.npz"), "class_names": ["a", "b", "c"]},
        condition={"noise": "uniform", "noise_rate": 0.5},
    )
    p = prepare(cfg)
    assert p.num_classes == 3 and p.class_names == ("a", "b", "c") and p.name == "d"
    assert len(p.x_train) + len(p.x_meta) == 120 and len(p.x_meta) == 15
    np.testing.assert_array_equal(p.x_test, xt)
    assert p.corrupted.any() and np.array_equal(p.corrupted, p.y_train != p.y_clean)


def test_npz_split_by_test_fraction_is_seeded_and_stratified(tmp_path):
    x, y = _blobs(150)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = {"name": "npz", "path": str(tmp_path / "d.npz"), "test_fraction": 0.2, "split_seed": 3}
    a, b = prepare(_run(ds, meta_per_class=0)), prepare(_run(ds, meta_per_class=0, seed=1))
    assert len(a.x_test) == 30 and np.bincount(a.y_test).tolist() == [10, 10, 10]
    np.testing.assert_array_equal(a.x_test, b.x_test)  # the split depends on split_seed only
    c = prepare(_run({**ds, "split_seed": 4}, meta_per_class=0))
    assert not np.array_equal(a.x_test, c.x_test)


def test_npy_pair_memory_mapped(tmp_path, monkeypatch):
    x, y = _blobs(200)
    xt, yt = _blobs(30, seed=2)
    for name, a in (("x", x), ("y", y), ("xt", xt), ("yt", yt)):
        np.save(tmp_path / f"{name}.npy", a)
    loads = []
    real_load = np.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("mmap_mode"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    ds = {
        "name": "npy",
        "x": str(tmp_path / "x.npy"),
        "y": str(tmp_path / "y.npy"),
        "x_test": str(tmp_path / "xt.npy"),
        "y_test": str(tmp_path / "yt.npy"),
    }
    p = prepare(_run(ds, max_train=50))
    assert loads.count("r") == 2  # both feature files memory-mapped
    assert len(p.x_train) == 50 and len(p.x_meta) == 15
    np.testing.assert_array_equal(p.x_test, xt)
    # every training row is the file's row with that label
    for row, label in zip(p.x_train, p.y_train):
        (i,) = np.flatnonzero((x == row).all(axis=1))
        assert y[i] == label


def test_gather_reads_only_the_rows_used():
    class Rows:
        shape = (1000, 4)
        seen: list[int] = []

        def __getitem__(self, idx):
            Rows.seen.extend(np.asarray(idx).tolist())
            return np.asarray(idx, dtype=np.float32)[:, None].repeat(4, axis=1)

    out = gather(Rows(), np.array([7, 3, 900]))
    assert sorted(Rows.seen) == [3, 7, 900] and Rows.seen == [3, 7, 900]  # ascending reads
    assert out[:, 0].tolist() == [7.0, 3.0, 900.0]  # requested order


def test_input_shape_and_normalisation(tmp_path):
    x, y = _blobs(90, d=2 * 3 * 3)
    x[:, :9] += 5.0
    np.savez(tmp_path / "d.npz", x=x, y=y)
    base = {"name": "npz", "path": str(tmp_path / "d.npz"), "input_shape": [2, 3, 3]}
    p = prepare(_run({**base, "normalize": "auto"}, model={"name": "lenet5"}, meta_per_class=2))
    assert p.x_train.shape[1:] == (2, 3, 3)
    np.testing.assert_allclose(p.x_train.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(p.x_train.std(axis=(0, 2, 3)), 1.0, atol=1e-3)
    q = prepare(
        _run({**base, "normalize": {"mean": [5.0, 0.0], "std": [2.0, 1.0]}}, model={"name": "lenet5"})
    )
    raw = prepare(_run(base, model={"name": "lenet5"}))
    np.testing.assert_allclose(q.x_test[:, 0], (raw.x_test[:, 0] - 5.0) / 2.0, rtol=1e-5)
    flat = prepare(_run(base))  # the MLP flattens
    assert flat.x_train.shape[1:] == (18,)


def test_given_meta_set_by_index_file_or_second_file(tmp_path):
    x, y = _blobs(120)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    idx = np.array([0, 1, 2, 3, 4, 5])
    np.save(tmp_path / "meta.npy", idx)
    (tmp_path / "meta.txt").write_text("\n".join(map(str, idx)))
    for f in ("meta.npy", "meta.txt"):
        p = prepare(_run({"name": "npz", "path": str(tmp_path / "d.npz"), "meta_indices": str(tmp_path / f)}))
        np.testing.assert_array_equal(p.x_meta, x[idx])
        np.testing.assert_array_equal(p.y_meta, y[idx])
        assert len(p.x_train) + len(p.x_test) == 114 and p.steps[0] == "meta set: given (6 examples)"
        assert not any((p.x_train == x[0]).all(axis=1))
    xm, ym = _blobs(9, seed=5)
    np.savez(tmp_path / "clean.npz", x=xm, y=ym)
    p = prepare(_run({"name": "npz", "path": str(tmp_path / "d.npz"), "meta": str(tmp_path / "clean.npz")}))
    np.testing.assert_array_equal(p.x_meta, xm)
    assert len(p.x_train) + len(p.x_test) == 120


def test_true_labels_give_the_corruption_mask(tmp_path):
    x, y_true = _blobs(100)
    y_given = y_true.copy()
    y_given[:20] = (y_given[:20] + 1) % 3  # natural noise the user knows about
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y_given, x_test=x[:10], y_test=y_true[:10])
    np.save(tmp_path / "truth.npy", y_true)
    p = prepare(
        _run(
            {"name": "npz", "path": str(tmp_path / "d.npz"), "true_labels": str(tmp_path / "truth.npy")},
            meta_per_class=0,
        )
    )
    assert p.corrupted.sum() == 20
    np.testing.assert_array_equal(p.y_clean, y_true)


def _write_idx(path: Path, a: np.ndarray) -> None:
    code = {1: 0x801, 3: 0x803}[a.ndim]
    header = struct.pack(">I", code) + b"".join(struct.pack(">I", s) for s in a.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + a.astype(np.uint8).tobytes())


def test_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(100) % 10
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (100, 6, 6)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y)
    p = prepare(_run({"name": "idx", "directory": str(tmp_path), "test_fraction": 0.2}, meta_per_class=1))
    assert p.num_classes == 10 and len(p.x_test) == 20 and p.x_train.shape[1:] == (36,)
    assert len(p.x_meta) == 10
    conv = prepare(_run({"name": "idx", "directory": str(tmp_path)}, model={"name": "lenet5"}))
    assert conv.x_train.shape[1:] == (1, 6, 6)


def test_cifar_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8),
            b"labels": list(np.arange(20) % 10),
        }
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    (tmp_path / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]})
    )
    p = prepare(
        _run({"name": "cifar", "directory": str(tmp_path)}, model={"name": "lenet5"}, meta_per_class=1)
    )
    assert p.x_train.shape[1:] == (3, 32, 32) and len(p.x_test) == 20 and len(p.x_train) == 90
    assert p.class_names[0] == "c0"


def test_function_returning_arrays_or_a_dataset(tmp_path, monkeypatch):
    (tmp_path / "my_data_mod.py").write_text(
        "import numpy as np\n"
        "from metaweight.data import Dataset\n"
        "def arrays(n=60):\n"
        "    y = np.arange(n) % 3\n"
        "    return (np.eye(3, dtype=np.float32)[y].repeat(2, axis=1), y)\n"
        "def four():\n"
        "    x, y = arrays()\n"
        "    return x, y, x[:9], y[:9]\n"
        "def dataset():\n"
        "    x, y = arrays()\n"
        "    return Dataset(x, y, x[:9], y[:9], 3, 'mine', ('a', 'b', 'c'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    p = prepare(
        _run({"name": "function", "function": "my_data_mod:arrays", "kwargs": {"n": 90}}, meta_per_class=2)
    )
    assert len(p.x_train) + len(p.x_meta) + len(p.x_test) == 90 and p.x_train.shape[1:] == (6,)
    q = prepare(_run({"name": "function", "function": "my_data_mod:four"}, meta_per_class=2))
    assert len(q.x_test) == 9
    r = prepare(_run({"name": "function", "function": "my_data_mod:dataset"}, meta_per_class=2))
    assert r.name == "mine" and r.class_names == ("a", "b", "c")
    with pytest.raises(ConfigError, match="cannot import"):
        prepare(_run({"name": "function", "function": "my_data_mod:nope"}))


def test_bad_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        prepare(_run({"name": "npz", "path": str(tmp_path / "none.npz")}))
    np.savez(tmp_path / "d.npz", a=np.zeros(3))
    with pytest.raises(ConfigError, match="x_train and y_train"):
        prepare(_run({"name": "npz", "path": str(tmp_path / "d.npz")}))


# ---- label issues ---------------------------------------------------------------------------------------


def test_label_issues_csv_per_run(tmp_path):
    x, y = _blobs(150)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg = {
        "name": "own",
        "defaults": {
            "dataset": {"name": "npz", "path": str(tmp_path / "d.npz")},
            "condition": {"noise": "uniform", "noise_rate": 0.4},
            "meta_per_class": 5,
            "model": {"name": "mlp", "hidden": [8]},
            "epochs": 3,
            "label_issues": 2,
        },
        "grid": {"method": ["gdw", "mwnet"]},
    }
    report = run_experiment(cfg, results=tmp_path / "results", progress=False, log=None)
    assert report.failed == 0 and report.ran == 2
    for d in (tmp_path / "results" / "own").iterdir():
        if not d.is_dir():
            continue
        with open(d / "label_issues.csv") as f:
            rows = list(csv.DictReader(f))
        final = json.loads((d / "final.json").read_text())
        assert len(rows) == final["n_train"]
        assert list(rows[0])[:6] == ["rank", "index", "given_label", "suggested_label", "score", "weight"]
        assert "corrupted" in rows[0]
        scores = [float(r["score"]) for r in rows]
        assert scores == sorted(scores, reverse=True)
        assert sorted(int(r["index"]) for r in rows) == list(range(final["n_train"]))
        with np.load(d / "weights.npz") as z:
            assert [int(r["given_label"]) for r in rows[:5]] == z["y_train"][
                [int(r["index"]) for r in rows[:5]]
            ].tolist()
            if "class_weights" in z:  # GDW: ω at the run's end suggests the class (mw.label_issues' rule)
                cw = z["class_weights"].astype(np.float64)
                for r in rows[:10]:
                    i = int(r["index"])
                    off = cw[i].copy()
                    off[int(r["given_label"])] = np.inf
                    assert int(r["suggested_label"]) == int(np.argmin(off))


def test_label_issues_command_line_option(tmp_path, capsys):
    x, y = _blobs(90)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "c.toml").write_text(
        f'name = "cli"\n[defaults]\ndataset = {{name = "npz", path = "{tmp_path / "d.npz"}"}}\n'
        'model = {name = "mlp", hidden = [8]}\nepochs = 2\nmeta_per_class = 3\nmethod = "l2rw"\n'
    )
    assert (
        main([str(tmp_path / "c.toml"), "--results", str(tmp_path / "r"), "--quiet", "--label-issues"]) == 0
    )
    (run_dir,) = [d for d in (tmp_path / "r" / "cli").iterdir() if d.is_dir()]
    assert json.loads((run_dir / "config.json").read_text())["label_issues"] == 5
    assert (run_dir / "label_issues.csv").is_file()
    assert main([str(tmp_path / "c.toml"), "--results", str(tmp_path / "r2"), "--quiet"]) == 0
    (run_dir,) = [d for d in (tmp_path / "r2" / "cli").iterdir() if d.is_dir()]
    assert not (run_dir / "label_issues.csv").exists()


def test_user_data_sets_are_labelled_by_their_file():
    def label(ds):
        (spec,) = load_config({"defaults": {"dataset": ds}}).runs
        return spec.labels["dataset"], spec.run_id

    assert label({"name": "npz", "path": "data/mine.npz"}) == ("mine", "mine_clean_mlp-256x256_erm_s0")
    assert label({"name": "npy", "x": "feats.npy", "y": "labels.npy"})[0] == "feats"
    assert label({"name": "idx", "directory": "/data/fashion/"})[0] == "fashion"
    assert label({"name": "function", "function": "pkg.mod:load"})[0] == "load"
    assert label({"name": "npz", "path": "m.npz", "label": "Mine"})[0] == "Mine"


@pytest.mark.parametrize(
    ("extra", "word"),
    [
        ({"test_fraction": 1.5}, "test_fraction"),
        ({"split_seed": -1}, "split_seed"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_data_set_options(tmp_path, extra, word):
    x, y = _blobs(30)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(ConfigError, match=word):
        prepare(_run({"name": "npz", "path": str(tmp_path / "d.npz"), **extra}, meta_per_class=0))


def test_rewritten_file_is_read_again(tmp_path):
    x, y = _blobs(60)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = {"name": "npz", "path": str(tmp_path / "d.npz")}
    a = prepare(_run(ds, meta_per_class=0))
    np.savez(tmp_path / "d.npz", x=x[:45] + 1, y=y[:45])
    b = prepare(_run(ds, meta_per_class=0))
    assert len(a.x_train) + len(a.x_test) == 60 and len(b.x_train) + len(b.x_test) == 45
