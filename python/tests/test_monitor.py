"""Per-step diagnostics (StepResult.diagnostics, the history's columns) and the warnings that keep a
run from collapsing or saturating silently (issue 16, "no silent collapse or inversion")."""

from __future__ import annotations

import math
import warnings

import metaweight as mw
import numpy as np
import pytest
from _api_support import digits_split
from metaweight import conditions
from metaweight.monitor import CollapseMonitor, StepDiagnostics


def _noisy_digits(seed: int = 0):
    x, y, xt, yt = digits_split(seed)
    split = conditions.meta_split(y, 10, 10, seed=seed)
    xm, ym = x[split.meta_indices], y[split.meta_indices]
    x, y = x[split.train_indices], y[split.train_indices]
    noisy = conditions.uniform_noise(y, 0.4, 10, seed=seed)
    return x, noisy.labels, xm, ym, xt, yt


def _digits_clean():
    x, y, xt, yt = digits_split(0)
    return x, y, None, None, xt, yt


def _trainer(method: mw.Method, lr: float = 0.1, hidden: tuple[int, ...] = (64,)) -> mw.Trainer:
    net = mw.mlp(64, hidden=hidden, num_classes=10, seed=0)
    return mw.Trainer(net, mw.SGD(lr=lr, momentum=0.9), method=method, seed=0)


def _expected(w: np.ndarray, losses: np.ndarray, logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The diagnostics' definitions, in float64 from the step's reported weights."""
    w = w.astype(np.float64)
    n = len(w)
    out = {
        "effective_sample_size": float(w.sum() ** 2 / (n * (w * w).sum())) if (w * w).sum() > 0 else 0.0,
        "prediction_majority": float(np.bincount(logits.argmax(1), minlength=10).max() / n),
        "label_majority": float(np.bincount(y, minlength=10).max() / n),
    }
    out["weight_loss_correlation"] = float(np.corrcoef(w, losses)[0, 1]) if w.std() > 1e-6 * abs(w.mean()) else math.nan
    return out


@pytest.mark.parametrize("method", [mw.L2RW(), mw.MWNet(), mw.GDW()], ids=["l2rw", "mwnet", "gdw"])
def test_step_diagnostics_match_their_definitions_on_the_steps_weights(method: mw.Method) -> None:
    x, y, xm, ym, _, _ = _noisy_digits()
    tr = _trainer(method)
    for _ in range(3):  # a few steps so that V has moved away from its initialisation
        tr.step(x[:100], y[:100], x_meta=xm, y_meta=ym)
    xb, yb = x[100:164], y[100:164]
    logits = tr.logits(xb)
    losses = tr.losses(xb, yb)  # no batch norm or dropout: eval mode equals the step's forward pass
    r = tr.step(xb, yb, x_meta=xm, y_meta=ym)
    d = r.diagnostics
    assert d is not None and r.weights is not None
    exp = _expected(r.weights, losses, logits, yb)
    assert d.effective_sample_size == pytest.approx(exp["effective_sample_size"], rel=1e-5, abs=1e-7)
    assert d.prediction_majority == exp["prediction_majority"]
    assert d.label_majority == exp["label_majority"]
    # The correlation uses the float32 losses of the step: agreement to float32 rounding.
    if math.isnan(exp["weight_loss_correlation"]):
        assert math.isnan(d.weight_loss_correlation)
    else:
        assert d.weight_loss_correlation == pytest.approx(exp["weight_loss_correlation"], abs=1e-3)
    if isinstance(method, mw.L2RW):
        w = r.weights.astype(np.float64)
        assert d.saturated_low == pytest.approx(np.mean(w <= 0.01 * w.mean()))
        assert d.saturated_high == 0.0
    elif isinstance(method, mw.GDW):
        v = tr.weight_function(losses)  # V after this step's update; the step saw V before it
        assert 0.0 <= d.saturated_low <= 1.0 and 0.0 <= d.saturated_high <= 1.0
        assert v.shape == losses.shape
    else:
        v = r.weights  # MW-Net reports V(loss) itself
        assert d.saturated_high == pytest.approx(np.mean(v > 0.95))
        assert d.saturated_low == pytest.approx(np.mean(v < 0.05))


def test_erm_step_reports_uniform_weights_and_no_correlation() -> None:
    x, y, _, _, _, _ = _noisy_digits()
    r = _trainer(mw.ERM()).step(x[:100], y[:100])
    d = r.diagnostics
    assert d is not None
    assert d.effective_sample_size == 1.0
    assert d.saturated_low == 0.0 and d.saturated_high == 0.0
    assert math.isnan(d.weight_loss_correlation)


def test_all_zero_weights_have_zero_effective_sample_size() -> None:
    x, y, _, _, _, _ = _noisy_digits()
    r = _trainer(mw.ERM()).step(x[:20], y[:20], sample_weights=np.zeros(20, np.float32))
    assert r.diagnostics is not None and r.diagnostics.effective_sample_size == 0.0
    assert r.diagnostics.saturated_low == 1.0


def test_history_holds_the_epoch_means_of_the_diagnostics() -> None:
    x, y, xm, ym, _, _ = _noisy_digits()
    h = _trainer(mw.L2RW()).fit(x, y, epochs=2, meta=(xm, ym), progress=False)
    cols = h.to_dict()
    for c in ("weight_ess", "saturated_low", "saturated_high", "prediction_majority", "weight_loss_correlation"):
        assert len(cols[c]) == 2 and all(v is not None and math.isfinite(v) for v in cols[c])
    assert all(0.0 < v < 1.0 for v in cols["weight_ess"])  # L2RW's max(u, 0) weights are not uniform
    e = _trainer(mw.ERM()).fit(x, y, epochs=1, progress=False)
    assert e[0].weight_ess == 1.0 and e[0].saturated_low == 0.0 and e[0].weight_loss_correlation is None


def test_epoch_diagnostics_average_finite_values_only() -> None:
    from metaweight.monitor import EpochDiagnostics

    acc = EpochDiagnostics()
    acc.add(StepDiagnostics(0.2, 0.1, 0.0, 0.3, 0.2, math.nan))
    acc.add(None)  # a skipped step
    acc.add(StepDiagnostics(0.6, 0.3, 0.5, 0.5, 0.2, 0.4))
    means = acc.means()
    assert means["weight_ess"] == pytest.approx(0.4)
    assert means["saturated_low"] == pytest.approx(0.2)
    assert means["saturated_high"] == pytest.approx(0.25)
    assert means["prediction_majority"] == pytest.approx(0.4)
    assert means["weight_loss_correlation"] == pytest.approx(0.4)
    assert EpochDiagnostics().means()["weight_ess"] is None


def test_collapse_warning_fires_once_when_one_class_is_predicted_for_every_input() -> None:
    x, y, _, _, _, _ = _noisy_digits()
    tr = _trainer(mw.ERM(), lr=3.0, hidden=(256, 256))
    with pytest.warns(mw.TrainingCollapseWarning, match=r"erm: training has collapsed by step \d+") as rec:
        tr.fit(x, y, epochs=10, progress=False)
    assert sum(issubclass(w.category, mw.TrainingCollapseWarning) for w in rec) == 1


def test_effective_sample_size_warning_fires_when_every_update_follows_one_example() -> None:
    # A meta set of zeros only, and batches of 99 other digits plus a single zero: only the zero's
    # gradient agrees with the meta gradient, so L2RW puts (nearly) all the weight on it.
    x, y, _, _, _, _ = _digits_clean()
    zeros, others = np.flatnonzero(y == 0), np.flatnonzero(y != 0)
    xm, ym = x[zeros[:10]], y[zeros[:10]]
    idx = np.concatenate([others[:99], zeros[10:11]])
    tr = _trainer(mw.L2RW(), lr=0.01)
    with pytest.warns(mw.TrainingCollapseWarning, match="l2rw: the weights' effective sample size") as rec:
        tr.fit(x[idx], y[idx], epochs=60, batch_size=100, meta=(xm, ym), progress=False)
    assert any("examples per batch" in str(w.message) for w in rec)


def test_effective_sample_size_warning_is_silent_under_a_strong_imbalance() -> None:
    # The same concentration when the batch's labels are themselves ~one class is the method
    # working (L2RW's 100:1 tasks), not a collapse.
    m = CollapseMonitor("l2rw", has_weight_net=False, needs_meta=True, window=5)
    d = StepDiagnostics(0.011, 0.98, 0.0, prediction_majority=0.97, label_majority=0.99, weight_loss_correlation=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mw.MetaweightWarning)
        for s in range(20):
            m.observe(s + 1, d, 100)


def test_saturation_warning_fires_when_the_weight_net_saturates() -> None:
    x, y, xm, ym, _, _ = _noisy_digits()
    tr = _trainer(mw.MWNet(normalize=False, lr=0.1), hidden=(256, 256))
    with pytest.warns(mw.WeightSaturationWarning, match="mwnet: .* no longer distinguish examples"):
        tr.fit(x, y, epochs=20, meta=(xm, ym), progress=False)


HEALTHY = [
    mw.ERM(),
    mw.L2RW(),
    mw.MWNet(),
    mw.GDW(),
    mw.Focal(),
    mw.HardMining(),
    mw.RandomWeights(),
    mw.SelfPaced(),
    mw.Bootstrap(),
    mw.FineTune(),
    mw.ClassBalancedSampling(),
]


@pytest.mark.parametrize("method", HEALTHY, ids=[m.name for m in HEALTHY])
def test_no_warning_on_a_healthy_run_of_every_method(method: mw.Method) -> None:
    x, y, xm, ym, xt, yt = _noisy_digits()
    tr = _trainer(method, lr=0.1, hidden=(256, 256))
    needs_meta = method.needs_meta or isinstance(method, mw.FineTune)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mw.MetaweightWarning)
        tr.fit(x, y, epochs=20, meta=(xm, ym) if needs_meta else None, progress=False)
    assert tr.evaluate(xt, yt)["accuracy"] > 0.6


def test_monitor_ignores_a_one_class_batch_of_a_long_tailed_task() -> None:
    m = CollapseMonitor("l2rw", has_weight_net=False, needs_meta=True, window=5)
    d = StepDiagnostics(0.5, 0.0, 0.0, prediction_majority=1.0, label_majority=0.95, weight_loss_correlation=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mw.MetaweightWarning)
        for s in range(20):
            m.observe(s + 1, d, 100)
    assert m.warned == {}


def test_monitor_waits_for_a_full_window_and_warns_once() -> None:
    m = CollapseMonitor("gdw", has_weight_net=True, needs_meta=True, window=5, saturation_window=8)
    d = StepDiagnostics(1.0, 0.0, 1.0, prediction_majority=0.2, label_majority=0.15, weight_loss_correlation=0.9)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for s in range(7):
            m.observe(s + 1, d, 100)
        assert not rec
        for s in range(7, 20):
            m.observe(s + 1, d, 100)
    assert [type(w.message) for w in rec] == [mw.WeightSaturationWarning]
    assert "step 8" in str(rec[0].message)
