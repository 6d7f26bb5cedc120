"""The logging integrations (metaweight.integrations): TensorBoard and MLflow callbacks.

Short fits on digits (40% uniform noise, MW-Net, GDW and ERM) log through each callback; the event
files and the MLflow file store are then read back and every logged value is checked against the
run's History:

- scalars: one point per epoch (step = epoch number), equal to the record's value — exactly in
  MLflow (float64 text), and to float32 rounding in TensorBoard (its scalars are float32);
- weight statistics from the record's example weights, clean vs corrupted from the noise mask;
- histograms count every training example (clean + corrupted = all);
- the loss → weight curve equals trainer.weight_function at the grid after that epoch, and that
  equals V evaluated from trainer.weight_net's parameters in float64 (bound below).

The event files are parsed here from their TFRecord framing, CRC-checked, with tensorboardX's
protobuf classes, independently of the writer. Also: importing metaweight imports neither
package, a missing package raises ImportError naming the extra, and the experiment runner's
[logging] table.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import metaweight as mw
import numpy as np
import pytest
from _api_support import digits_split
from metaweight import conditions

tensorboardX = pytest.importorskip("tensorboardX")
mlflow = pytest.importorskip("mlflow")
from metaweight.integrations.mlflow import MLflowCallback  # noqa: E402
from metaweight.integrations.tensorboard import TensorBoardCallback  # noqa: E402

EPOCHS = 3
F32 = np.float32

# ---- reading TensorBoard event files --------------------------------------------------------------------

_CRC_TABLE: list[int] = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1  # CRC-32C (Castagnoli), reflected
    _CRC_TABLE.append(_c)


def _masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(logdir: Path) -> list[Any]:
    """Every Event of every event file in ``logdir`` (TFRecord: u64 length, masked CRC of it, the
    record, masked CRC of the record), with both CRCs checked."""
    from tensorboardX.proto import event_pb2

    events = []
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {logdir}"
    for f in files:
        data = f.read_bytes()
        pos = 0
        while pos < len(data):
            header = data[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == _masked_crc32c(header)
            body = data[pos + 12 : pos + 12 + length]
            assert struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] == _masked_crc32c(body)
            events.append(event_pb2.Event.FromString(body))
            pos += 16 + length
    return events


def summaries(logdir: Path) -> dict[str, list[tuple[int, Any]]]:
    """tag → [(step, summary value), ...] in file order."""
    out: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for e in read_events(logdir):
        if e.HasField("summary"):
            for v in e.summary.value:
                out[v.tag].append((int(e.step), v))
    return out


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(s, v.simple_value) for s, v in vals] for tag, vals in summaries(logdir).items()
            if vals[0][1].WhichOneof("value") == "simple_value"}


# ---- the runs ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_digits():
    x, y_clean, xt, yt = digits_split(seed=0)
    split = conditions.meta_split(y_clean, per_class=5, num_classes=10, seed=0)
    xm, ym = x[split.meta_indices], y_clean[split.meta_indices]
    x, y_clean = x[split.train_indices], y_clean[split.train_indices]
    noisy = conditions.uniform_noise(y_clean, 0.4, num_classes=10, seed=0)
    return x, noisy.labels, noisy.corrupted, (xm, ym), xt, yt


def v_from_parameters(state: dict[str, np.ndarray], losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V(l) = sigmoid(W2 relu(W1 l + b1) + b2) in float64 from weight_net.state_dict(), and a bound
    on the float32 core's error: the pre-activation z sums h + 1 products, each rounded, so
    |z32 - z| <= (h + 3) * eps32 * (|b2| + sum_j |W2_j| |hidden_j|) (plus the hidden layer's own
    rounding, inside the same term as |W1 l| + |b1| stays within a few ulps of each hidden unit),
    and sigmoid's slope is at most 1/4; the stored value adds one float32 rounding of V <= 1. This
    holds whatever order an OpenBLAS kernel sums in."""
    w1, b1 = state["linear1.weight"][:, 0].astype(np.float64), state["linear1.bias"].astype(np.float64)
    w2, b2 = state["linear2.weight"][0].astype(np.float64), float(state["linear2.bias"][0])
    pre = np.outer(losses.astype(np.float64), w1) + b1
    hidden = np.maximum(pre, 0.0)
    z = hidden @ w2 + b2
    eps = float(np.finfo(np.float32).eps)
    scale = abs(b2) + np.abs(hidden) @ np.abs(w2) + (np.abs(np.outer(losses, w1)) + np.abs(b1)) @ np.abs(w2)
    bound = 0.25 * (len(w1) + 3) * eps * scale + eps
    return 1.0 / (1.0 + np.exp(-z)), bound


def fit_logged(noisy_digits, method: Any, callbacks: list[Any], **kw: Any) -> tuple[mw.History, list[Any]]:
    """Trains EPOCHS epochs with ``callbacks`` and, after them, a callback keeping per epoch
    trainer.weight_function at the default grid and V's parameters (None without V)."""
    x, y, _corrupted, meta, xt, yt = noisy_digits
    seen: list[Any] = []
    grid = np.arange(11, dtype=np.float32)

    def keep(trainer: mw.Trainer, _r: mw.EpochRecord) -> None:
        if trainer.method.has_weight_function:
            seen.append((trainer.weight_function(grid), trainer.weight_net.state_dict()))
        else:
            seen.append(None)

    net = mw.mlp(64, hidden=(32,), num_classes=10, seed=0)
    with mw.Trainer(net, mw.SGD(lr=0.1, momentum=0.9), method=method, seed=0) as tr:
        history = tr.fit(x, y, epochs=EPOCHS, batch_size=100, meta=meta if method != "erm" else None,
                         x_val=xt, y_val=yt, progress=False, callbacks=[*callbacks, keep], **kw)
    net.close()
    return history, seen


def expected_scalars(history: mw.History, corrupted: np.ndarray | None, val: str = "val") -> dict[str, list[float]]:
    """What each scalar must be, per epoch, from the history alone."""
    out: dict[str, list[float]] = defaultdict(list)
    for r in history:
        out["train/loss"].append(r.train_loss)
        out["train/accuracy"].append(r.train_accuracy)
        out[f"{val}/loss"].append(r.val_loss)
        out[f"{val}/accuracy"].append(r.val_accuracy)
        out["lr"].append(r.lr)
        if r.meta_loss is not None:
            out["meta/loss"].append(r.meta_loss)
        w = r.example_weights.astype(np.float64)
        out["weights/mean"].append(float(w.mean()))
        out["weights/std"].append(float(w.std()))
        if corrupted is not None:
            out["weights/mean_clean"].append(float(w[~corrupted].mean()))
            out["weights/mean_corrupted"].append(float(w[corrupted].mean()))
        out["diagnostics/weight_ess"].append(r.weight_ess)
        out["time/epoch_seconds"].append(r.time)
    return out


# ---- TensorBoard ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [mw.MWNet(lr=1e-2), mw.GDW(lr=1e-2)], ids=["mwnet", "gdw"])
def test_tensorboard_event_files_hold_the_history(tmp_path, noisy_digits, method):
    _, _, corrupted, _, _, _ = noisy_digits
    logdir = tmp_path / "tb"
    history, seen = fit_logged(noisy_digits, method, [TensorBoardCallback(logdir, corrupted=corrupted, figure=True)])
    got = scalars(logdir)
    epochs = list(range(1, EPOCHS + 1))
    assert history.epochs == epochs
    for tag, values in expected_scalars(history, corrupted).items():
        assert [s for s, _ in got[tag]] == epochs, tag
        # TensorBoard stores scalars as float32: exactly the float32 rounding of the history's value.
        np.testing.assert_array_equal([v for _, v in got[tag]], F32(values), err_msg=tag)

    hist = summaries(logdir)
    n, n_corrupted = len(corrupted), int(corrupted.sum())
    for tag, count in (("weights/example", n), ("weights/example_clean", n - n_corrupted),
                       ("weights/example_corrupted", n_corrupted)):
        assert [s for s, _ in hist[tag]] == epochs, tag
        for (_, v), r in zip(hist[tag], history):
            h = v.histo
            assert h.num == count and sum(h.bucket) == count, tag
            sel = {"weights/example": slice(None), "weights/example_clean": ~corrupted,
                   "weights/example_corrupted": corrupted}[tag]
            w = r.example_weights[sel].astype(np.float64)
            assert (h.min, h.max) == (w.min(), w.max())
            assert h.sum == pytest.approx(w.sum(), rel=1e-12)

    for e, (curve, state) in enumerate(seen, start=1):
        for x, v in zip(range(11), curve):
            assert got[f"weight_function/loss_{x}"][e - 1] == (e, v)  # float32 V, stored exactly
        v64, bound = v_from_parameters(state, np.arange(11.0))
        assert np.all(np.abs(curve - v64) <= bound), (curve, v64, bound)
    table = hist["weight_function/table/text_summary"]  # tensorboardX suffixes text tags
    assert [s for s, _ in table] == epochs
    text = table[-1][1].tensor.string_val[0].decode()
    assert text.splitlines()[2] == f"| 0 | {seen[-1][0][0]:.6g} |"
    images = hist["weight_function/curve"]
    assert [s for s, _ in images] == epochs
    assert images[0][1].image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    assert [s for s, _ in hist["run/config/text_summary"]] == [0]


def test_tensorboard_erm_logs_uniform_weights_and_no_curve(tmp_path, noisy_digits):
    logdir = tmp_path / "tb"
    history, _ = fit_logged(noisy_digits, "erm", [TensorBoardCallback(logdir)])
    got = scalars(logdir)
    for tag, values in expected_scalars(history, None).items():
        np.testing.assert_array_equal([v for _, v in got[tag]], F32(values), err_msg=tag)
    assert [v for _, v in got["weights/mean"]] == [1.0] * EPOCHS
    assert "meta/loss" not in got and "weights/mean_clean" not in got
    assert not any(t.startswith("weight_function") for t in summaries(logdir))
    assert all(v.histo.num == len(noisy_digits[0]) for _, v in summaries(logdir)["weights/example"])


def test_tensorboard_second_fit_appends_a_file_with_continuing_steps(tmp_path, noisy_digits):
    x, y, _, _, _, _ = noisy_digits
    logdir = tmp_path / "tb"
    cb = TensorBoardCallback(logdir, weights=False)
    with mw.Trainer(mw.mlp(64, hidden=(16,), num_classes=10, seed=0), mw.SGD(lr=0.1), seed=0) as tr:
        tr.fit(x, y, epochs=2, progress=False, callbacks=[cb])
        history = tr.fit(x, y, epochs=1, progress=False, callbacks=[cb])
        assert history[0].example_weights is None  # weights=False asks for nothing
        assert len(list(logdir.glob("events.out.tfevents.*"))) == 2
        loss = scalars(logdir)["train/loss"]
        assert [s for s, _ in loss] == [1, 2, 3]
        assert loss[-1][1] == F32(tr.history[-1].train_loss)
        assert "weights/mean" not in scalars(logdir)
        tr.model.close()


# ---- MLflow ----------------------------------------------------------------------------------------------


def test_mlflow_store_holds_the_history(tmp_path, noisy_digits):
    _, _, corrupted, _, _, _ = noisy_digits
    cb = MLflowCallback(tmp_path / "mlruns", experiment="digits", run_name="mwnet-s0", corrupted=corrupted,
                        params={"note": "test"}, tags={"who": "pytest"})
    assert cb.run_id is None
    history, seen = fit_logged(noisy_digits, mw.MWNet(lr=1e-2), [cb])
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    run = client.get_run(cb.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "mwnet-s0"
    assert client.get_experiment(run.info.experiment_id).name == "digits"
    assert run.data.params["method"] == "mwnet" and run.data.params["note"] == "test"
    assert run.data.params["method_spec"].startswith("mwnet(") and run.data.params["epochs"] == str(EPOCHS)
    assert run.data.tags["who"] == "pytest"
    epochs = list(range(1, EPOCHS + 1))
    for key, values in expected_scalars(history, corrupted).items():
        metrics = sorted(client.get_metric_history(cb.run_id, key), key=lambda m: m.step)
        assert [m.step for m in metrics] == epochs, key
        assert [m.value for m in metrics] == values, key  # float64 text: exact
    for e, (curve, state) in enumerate(seen, start=1):
        for x in range(11):
            metric = [m for m in client.get_metric_history(cb.run_id, f"weight_function/loss_{x}") if m.step == e]
            assert [m.value for m in metric] == [float(curve[x])]
        art = json.loads(Path(client.download_artifacts(cb.run_id, f"weight_function/epoch_{e:04d}.json",
                                                          str(tmp_path / "dl"))).read_text())
        assert art == {"epoch": e, "losses": [float(v) for v in range(11)], "weights": curve.tolist()}
        v64, bound = v_from_parameters(state, np.arange(11.0))
        assert np.all(np.abs(curve - v64) <= bound)
        h = json.loads(Path(client.download_artifacts(cb.run_id, f"weights/histogram_epoch_{e:04d}.json",
                                                        str(tmp_path / "dl"))).read_text())
        assert h["epoch"] == e and len(h["edges"]) == 21
        w = history[e - 1].example_weights
        assert (h["edges"][0], h["edges"][-1]) == (float(w.min()), float(w.max()))
        assert sum(h["counts"]) == len(corrupted)
        assert sum(h["counts_clean"]) == int((~corrupted).sum())
        assert sum(h["counts_corrupted"]) == int(corrupted.sum())
        assert np.array_equal(np.add(h["counts_clean"], h["counts_corrupted"]), h["counts"])


def test_mlflow_callback_opens_a_fresh_file_store_another_process_is_creating(tmp_path, noisy_digits, monkeypatch):
    # Two Ray workers logging to one fresh folder: both find it missing, both create it and its
    # default experiment, and MLflow's FileStore raises "... meta.yaml exists" in the slower one.
    # Here the "other process" wins inside this one's creation: the callback must reopen the store.
    from mlflow.store.tracking.file_store import FileStore

    original = FileStore._create_default_experiment
    calls: list[str] = []

    def racing(self):
        calls.append(self.root_directory)
        if len(calls) == 1:
            original(self)  # the other process, first
        original(self)  # then this one, which finds the files written

    monkeypatch.setattr(FileStore, "_create_default_experiment", racing)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    with pytest.raises(Exception, match="meta.yaml. exists"):  # the race, reproduced (a plain Exception)
        mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    calls.clear()
    import shutil

    shutil.rmtree(store)
    history, _ = fit_logged(noisy_digits, "erm", [cb := MLflowCallback(store, experiment="raced")])
    assert len(calls) == 1  # the store was created once, by the "other process"
    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    run = client.get_run(cb.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_experiment_by_name("raced").experiment_id
    assert len(client.get_metric_history(cb.run_id, "train/loss")) == len(history)


def test_mlflow_erm_and_a_failed_fit(tmp_path, noisy_digits):
    x, y, _, _, _, _ = noisy_digits
    uri = (tmp_path / "mlruns").as_uri()
    history, _ = fit_logged(noisy_digits, "erm", [cb := MLflowCallback(uri, experiment="erm")])
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    assert [m.value for m in sorted(client.get_metric_history(cb.run_id, "weights/mean"), key=lambda m: m.step)] \
        == [1.0] * EPOCHS
    assert not client.list_artifacts(cb.run_id, "weight_function")
    assert client.get_metric_history(cb.run_id, "meta/loss") == []

    failing = MLflowCallback(uri, experiment="erm", run_name="diverges")

    def boom(_t: mw.Trainer, r: mw.EpochRecord) -> None:
        if r.epoch == 2:
            raise RuntimeError("stop here")

    with mw.Trainer(mw.mlp(64, hidden=(16,), num_classes=10, seed=0), mw.SGD(lr=0.1), seed=0) as tr:
        with pytest.raises(RuntimeError, match="stop here"):
            tr.fit(x, y, epochs=4, progress=False, callbacks=[failing, boom])
        tr.model.close()
    run = client.get_run(failing.run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "RuntimeError: stop here"
    assert [m.step for m in client.get_metric_history(failing.run_id, "train/loss")] == [1, 2]
    assert run.info.experiment_id == client.get_run(cb.run_id).info.experiment_id


def test_a_wrong_corrupted_mask_stops_fit_before_anything_is_written(tmp_path, noisy_digits):
    x, y, corrupted, _, _, _ = noisy_digits
    tb = TensorBoardCallback(tmp_path / "tb", corrupted=corrupted[:-1])
    ml = MLflowCallback(tmp_path / "mlruns", corrupted=corrupted[:-1])
    with mw.Trainer(mw.mlp(64, hidden=(16,), num_classes=10, seed=0), mw.SGD(lr=0.1), seed=0) as tr:
        for cb in (tb, ml):
            with pytest.raises(mw.ShapeError, match=rf"corrupted: expected {len(x)} entries"):
                tr.fit(x, y, epochs=1, progress=False, callbacks=[cb])
        assert tr.step_count == 0
        tr.model.close()
    assert not (tmp_path / "tb").exists() and ml.run_id is None


def test_bad_arguments_are_named():
    with pytest.raises(mw.InvalidArgumentError, match="logdir"):
        TensorBoardCallback("")
    with pytest.raises(mw.DTypeError, match="corrupted"):
        TensorBoardCallback("x", corrupted=np.array([0.5, 1.0]))
    with pytest.raises(mw.ShapeError, match="corrupted"):
        MLflowCallback("x", corrupted=np.zeros((2, 2), dtype=bool))
    with pytest.raises(mw.NonFiniteError, match="curve_losses"):
        TensorBoardCallback("x", curve_losses=[0.0, np.nan])
    with pytest.raises(mw.InvalidArgumentError, match="curve_losses"):
        MLflowCallback("x", curve_losses=[-1.0])
    with pytest.raises(mw.InvalidArgumentError, match="val_name"):
        TensorBoardCallback("x", val_name="a b")
    with pytest.raises(mw.InvalidArgumentError, match="experiment"):
        MLflowCallback("x", experiment="")
    with pytest.raises(mw.InvalidArgumentError, match="params"):
        MLflowCallback("x", params=["a"])  # type: ignore[arg-type]


# ---- optional imports ------------------------------------------------------------------------------------


def test_importing_metaweight_imports_neither_package():
    code = (
        "import sys, metaweight, metaweight.callbacks, metaweight.integrations, "
        "metaweight.integrations.tensorboard, metaweight.integrations.mlflow, metaweight.experiments\n"
        "print(sorted(m for m in ('tensorboardX', 'mlflow', 'tensorboard') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("module", "make", "extra"), [
    ("tensorboardX", lambda: TensorBoardCallback("x"), "metaweight[tensorboard]"),
    ("mlflow", lambda: MLflowCallback("x"), "metaweight[mlflow]"),
])
def test_a_missing_package_names_its_extra(monkeypatch, module, make, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=r"pip install .*\(or pip install " + re.escape(extra) + r"\)"):
        make()


# ---- the experiment runner ---------------------------------------------------------------------------------


def test_runner_logging_table_attaches_both_callbacks(tmp_path):
    from metaweight.experiments import load_config, read_history, run_experiment

    config = {
        "name": "logged",
        "seeds": [0],
        "defaults": {"dataset": "digits", "condition": {"noise": "uniform", "noise_rate": 0.4},
                     "meta_per_class": 5, "model": {"name": "mlp", "hidden": [16]}, "epochs": 2},
        "grid": {"method": ["erm", {"name": "mwnet", "lr": 0.01}]},
        "logging": {"tensorboard": str(tmp_path / "tb"), "mlflow": str(tmp_path / "mlruns")},
    }
    report = run_experiment(config, results=tmp_path / "results", progress=False, log=None)
    assert (report.ran, report.failed) == (2, 0)
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    exp = client.get_experiment_by_name("logged")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {r.run_id for r in report.results}
    for r in report.results:
        csv = read_history(r.path / "history.csv")
        tb = scalars(tmp_path / "tb" / "logged" / r.run_id)
        for key in ("train_loss", "test_accuracy", "weight_mean_clean", "weight_mean_corrupted"):
            name = {"train_loss": "train/loss", "test_accuracy": "test/accuracy",
                    "weight_mean_clean": "weights/mean_clean", "weight_mean_corrupted": "weights/mean_corrupted"}[key]
            ml = sorted(client.get_metric_history(runs[r.run_id].info.run_id, name), key=lambda m: m.step)
            # history.csv averages the float32 weights in float32 (numpy's pairwise sum: relative error
            # <= (log2(n) + 1) eps32 ~ 1.4e-6 for n ~ 1,100), the callbacks in float64; the other
            # columns are the records' own floats, written with repr: exact.
            rtol = 5e-6 if key.startswith("weight") else 0.0
            np.testing.assert_allclose([m.value for m in ml], csv[key], rtol=rtol, atol=0, err_msg=key)
            np.testing.assert_allclose([v for _, v in tb[name]], F32(csv[key]), rtol=rtol, atol=0, err_msg=key)
        params = runs[r.run_id].data.params
        assert params["dataset.name"] == "digits" and params["epochs"] == "2"
        assert runs[r.run_id].data.tags["label.method"] == r.spec.labels["method"]
    assert "weight_function/loss_2" in scalars(tmp_path / "tb" / "logged" / next(
        r.run_id for r in report.results if "mw-net" in r.run_id))

    # Logging is not a run setting: the finished runs are skipped, whatever it says.
    again = run_experiment(load_config(config, logging={"tensorboard": str(tmp_path / "tb2")}),
                           results=tmp_path / "results", progress=False, log=None)
    assert again.skipped == 2 and not (tmp_path / "tb2").exists()


def test_runner_opens_the_mlflow_store_before_any_run_starts(tmp_path, monkeypatch):
    from metaweight.experiments import run_experiment, runner

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    seen: list[bool] = []
    execute = runner.execute_run

    def recording(spec, path, **kw):
        client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri()) if store.exists() else None
        seen.append(client is not None and client.get_experiment_by_name("early") is not None)
        return execute(spec, path, **kw)

    monkeypatch.setattr(runner, "execute_run", recording)
    config = {"name": "early", "seeds": [0, 1],
              "defaults": {"dataset": "digits", "model": {"name": "mlp", "hidden": [8]}, "epochs": 1},
              "grid": {"method": ["erm"]}, "logging": {"mlflow": str(store)}}
    report = run_experiment(config, results=tmp_path / "results", jobs=2, progress=False, log=None)
    assert (report.ran, report.failed) == (2, 0)
    assert seen == [True, True]


def test_runner_refuses_unknown_logging_keys():
    from metaweight.experiments import ConfigError, load_config

    base = {"name": "x", "defaults": {"epochs": 1}}
    with pytest.raises(ConfigError, match=r"logging: unknown key 'wandb'; allowed keys: mlflow, mlflow_experiment, tensorboard"):
        load_config({**base, "logging": {"wandb": "x"}})
    with pytest.raises(ConfigError, match=r"logging.tensorboard: expected a folder or URI"):
        load_config({**base, "logging": {"tensorboard": 3}})
    with pytest.raises(ConfigError, match=r"logging.mlflow_experiment: set logging.mlflow too"):
        load_config({**base, "logging": {"mlflow_experiment": "e"}})
    exp = load_config({**base, "logging": {"tensorboard": "runs", "mlflow": "sqlite:///m.db"}})
    spec = exp.runs[0]
    assert spec.logging["tensorboard"] == str(Path("runs").absolute() / "x" / spec.run_id)
    assert spec.logging == {**spec.logging, "mlflow": "sqlite:///m.db", "mlflow_experiment": "x"}
    assert "logging" not in spec.config


def test_command_line_tensorboard_flag(tmp_path):
    from metaweight.experiments.__main__ import main

    config = tmp_path / "cli.toml"
    config.write_text('name = "cli"\nseeds = [0]\n[defaults]\ndataset = "digits"\nmodel = {name = "mlp", hidden = [8]}\n'
                      f'epochs = 1\n[grid]\nmethod = ["erm"]\n[logging]\ntensorboard = "{tmp_path / "ignored"}"\n')
    assert main([str(config), "--results", str(tmp_path / "results"), "--quiet",
                 "--tensorboard", str(tmp_path / "tb")]) == 0
    (run_dir,) = (tmp_path / "tb" / "cli").iterdir()  # the flag replaced the table's folder
    assert [s for s, _ in scalars(run_dir)["test/accuracy"]] == [1]
    assert not (tmp_path / "ignored").exists()


@pytest.mark.ray
def test_runner_logs_from_ray_workers(ray_cluster, tmp_path, monkeypatch):
    from metaweight.experiments import read_history, run_experiment

    # The callbacks run in the workers (they opt into MLflow's file store there); reading back here:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    config = {
        "name": "on_ray",
        "seeds": [0],
        "defaults": {"dataset": "digits", "condition": {"noise": "uniform", "noise_rate": 0.4},
                     "meta_per_class": 5, "model": {"name": "mlp", "hidden": [16]}, "epochs": 2},
        "grid": {"method": ["erm", {"name": "gdw", "lr": 0.01}]},
        "logging": {"tensorboard": str(tmp_path / "tb"), "mlflow": str(tmp_path / "mlruns")},
    }
    report = run_experiment(config, results=tmp_path / "results", ray=ray_cluster.address, threads=1,
                            progress=False, log=None)
    assert (report.ran, report.failed) == (2, 0)
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("on_ray").experiment_id])}
    assert set(runs) == {r.run_id for r in report.results}
    for r in report.results:
        csv = read_history(r.path / "history.csv")
        ml = sorted(client.get_metric_history(runs[r.run_id].info.run_id, "test/accuracy"), key=lambda m: m.step)
        assert [m.value for m in ml] == csv["test_accuracy"]
        tb = scalars(tmp_path / "tb" / "on_ray" / r.run_id)["train/loss"]
        assert [s for s, _ in tb] == [1, 2]
        np.testing.assert_array_equal([v for _, v in tb], F32(csv["train_loss"]))
        assert runs[r.run_id].info.status == "FINISHED"
