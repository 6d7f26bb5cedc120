"""Opt-in raw step diagnostics (issue 14, item 3): ``step(..., diagnostics=True)`` and
``fit(record_raw=...)`` expose L2RW's raw scores u, MW-Net's V outputs before and after V's update,
and GDW's g, ω before the second stage and ω′; checked against independent numpy recomputations.
Off, ``StepResult.raw`` is None and the step is bit-identical."""

from __future__ import annotations

import metaweight as mw
import numpy as np
import pytest
from metaweight import data


@pytest.fixture(scope="module")
def digits():
    ds = data.load_digits(flatten=True, seed=0)
    rng = np.random.default_rng(0)
    y = ds.y_train.copy()
    flip = rng.random(len(y)) < 0.4
    y[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    return ds.x_train[:300], y[:300], ds.x_train[300:400], ds.y_train[300:400]


def _trainer(method, seed=0):
    model = mw.mlp(64, hidden=(32,), num_classes=10, seed=seed)  # no dropout/BN: eval = train mode
    return mw.Trainer(model, mw.SGD(lr=0.1, momentum=0.9), method=method, seed=seed, steps_per_epoch=10)


def _softmax(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _warm(tr, x, y, xm, ym, steps=3):
    for s in range(steps):
        tr.step(x[s * 50:(s + 1) * 50], y[s * 50:(s + 1) * 50], x_meta=xm[:50], y_meta=ym[:50])


def test_l2rw_weights_are_normalised_positive_part_of_raw_u(digits):
    x, y, xm, ym = digits
    tr = _trainer(mw.L2RW())
    _warm(tr, x, y, xm, ym)
    r = tr.step(x[150:250], y[150:250], x_meta=xm, y_meta=ym, diagnostics=True)
    assert r.raw is not None and set(r.raw) == {"u"}
    u = r.raw["u"].astype(np.float64)
    assert u.shape == (100,) and np.isfinite(u).all()
    assert (u < 0).any() and (u > 0).any()  # negative scores are kept
    pos = np.maximum(u, 0)
    np.testing.assert_allclose(r.weights, pos / pos.sum(), rtol=1e-5, atol=1e-9)
    assert (r.weights[u <= 0] == 0).all()


def test_mwnet_before_is_v_before_the_update_and_after_is_the_weights(digits):
    x, y, xm, ym = digits
    tr = _trainer(mw.MWNet(lr=1e-2))
    _warm(tr, x, y, xm, ym)
    xb, yb = x[150:250], y[150:250]
    p = _softmax(tr.logits(xb))
    losses = -np.log(p[np.arange(len(yb)), yb])
    v_expected = tr.weight_function(losses.astype(np.float32))  # V before this step's update
    r = tr.step(xb, yb, x_meta=xm, y_meta=ym, diagnostics=True)
    assert r.raw is not None and set(r.raw) == {"v_before", "v_after"}
    before, after = r.raw["v_before"], r.raw["v_after"]
    assert before.shape == after.shape == (100,)
    np.testing.assert_array_equal(after, r.weights)
    np.testing.assert_allclose(before, v_expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(after, tr.weight_function(losses.astype(np.float32)), rtol=1e-4, atol=1e-6)
    assert not np.array_equal(before, after)  # V moved


def _constrain(omega, p, y, pc):
    out = omega.copy()
    pcl = np.minimum(p, pc)
    for i, t in enumerate(y):
        off = np.arange(p.shape[1]) != t
        out[i, t] = (omega[i, off] * pcl[i, off]).sum() / max(p[i, off].sum(), 1 - pc)
    return out


def test_gdw_second_stage_recomputed_from_raw_g_and_omega(digits):
    x, y, xm, ym = digits
    method = mw.GDW(lr=1e-2)
    tr = _trainer(method)
    _warm(tr, x, y, xm, ym)
    xb, yb = x[150:250], y[150:250]
    p = _softmax(tr.logits(xb))
    r = tr.step(xb, yb, x_meta=xm, y_meta=ym, diagnostics=True)
    assert r.raw is not None and set(r.raw) == {"g", "omega", "omega_prime"}
    g, omega, omega_p = (r.raw[k].astype(np.float64) for k in ("g", "omega", "omega_prime"))
    assert g.shape == omega.shape == omega_p.shape == (100, 10)
    np.testing.assert_array_equal(r.raw["omega_prime"], r.class_weights)
    np.testing.assert_array_equal(r.weights, r.class_weights[np.arange(100), yb])
    pc = method.prob_clamp
    # ω: the first stage V(l)·1 (equal off-target entries), with the zero-mean constraint applied.
    off = np.ones_like(omega, dtype=bool)
    off[np.arange(100), yb] = False
    rows = omega[off].reshape(100, 9)
    np.testing.assert_allclose(rows, rows[:, :1].repeat(9, axis=1), rtol=1e-6)
    np.testing.assert_allclose(omega, _constrain(omega, p, yb, pc), rtol=1e-4, atol=1e-7)
    # ω′ = constraint(clamp(ω − clip(η g/‖g‖₁, ±clip), [lo, hi])).
    eta = 100.0  # the default for 10 classes
    upd = np.clip(eta * g / np.abs(g).sum(), -method.clip, method.clip)
    expected = _constrain(np.clip(omega - upd, *method.clamp), p, yb, pc)
    np.testing.assert_allclose(omega_p, expected, rtol=1e-4, atol=1e-6)
    assert np.abs(upd).max() > 1e-3  # the second stage moved ω


@pytest.mark.parametrize("method", [mw.L2RW(), mw.MWNet(lr=1e-2), mw.GDW(lr=1e-2)], ids=["l2rw", "mwnet", "gdw"])
def test_diagnostics_off_leaves_raw_none_and_the_step_bit_identical(digits, method):
    x, y, xm, ym = digits
    a, b = _trainer(method), _trainer(method)
    for s in range(4):
        xb, yb = x[s * 60:(s + 1) * 60], y[s * 60:(s + 1) * 60]
        ra = a.step(xb, yb, x_meta=xm[:40], y_meta=ym[:40])
        rb = b.step(xb, yb, x_meta=xm[:40], y_meta=ym[:40], diagnostics=s % 2 == 0)
        assert ra.raw is None
        assert (rb.raw is not None) == (s % 2 == 0)
        assert (ra.loss, ra.meta_loss) == (rb.loss, rb.meta_loss)
        np.testing.assert_array_equal(ra.weights, rb.weights)
    pa, pb = a.model.state_dict(), b.model.state_dict()
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])
    np.testing.assert_array_equal(a.logits(xm), b.logits(xm))
    if method.has_weight_function:
        grid = np.linspace(0, 5, 50, dtype=np.float32)
        np.testing.assert_array_equal(a.weight_function(grid), b.weight_function(grid))


def test_methods_without_raw_arrays_return_an_empty_dict(digits):
    x, y, _xm, _ym = digits
    for method in ("erm", mw.Focal()):
        tr = _trainer(method)
        r = tr.step(x[:50], y[:50], diagnostics=True)
        assert r.raw == {}
        assert tr.step(x[:50], y[:50]).raw is None
    with pytest.raises(mw.InvalidArgumentError, match="diagnostics"):
        _trainer("erm").step(x[:50], y[:50], diagnostics="yes")


@pytest.mark.parametrize("mode", ["last", True])
def test_fit_record_raw_aligns_the_epochs_raw_arrays_with_x(digits, mode):
    x, y, xm, ym = digits
    tr = _trainer(mw.L2RW())
    h = tr.fit(x, y, epochs=2, batch_size=64, meta=(xm, ym), meta_batch_size=50, progress=False,
               record_weights=True, record_raw=mode)
    assert (h[0].raw is not None) == (mode is True)
    raw = h[-1].raw
    assert raw is not None and set(raw) == {"u"}
    u = raw["u"]
    assert u.shape == (len(x),) and np.isfinite(u).all()
    w = h[-1].example_weights
    assert w is not None
    assert ((w > 0) == (u > 0)).all()  # each example's weight is positive exactly when its u is
    plain = _trainer(mw.L2RW()).fit(x, y, epochs=2, batch_size=64, meta=(xm, ym), meta_batch_size=50,
                                    progress=False, record_weights=True)
    assert plain[-1].raw is None
    np.testing.assert_array_equal(plain[-1].example_weights, w)  # recording changes nothing


def test_fit_record_raw_gdw_shapes_and_validation(digits):
    x, y, xm, ym = digits
    tr = _trainer(mw.GDW(lr=1e-2))
    h = tr.fit(x, y, epochs=1, batch_size=100, meta=(xm, ym), meta_batch_size=50, progress=False,
               record_weights=True, record_raw="all")
    raw = h[-1].raw
    assert raw is not None and {k: v.shape for k, v in raw.items()} == {
        "g": (300, 10), "omega": (300, 10), "omega_prime": (300, 10)}
    np.testing.assert_array_equal(raw["omega_prime"], h[-1].class_weights)
    with pytest.raises(mw.InvalidArgumentError, match="record_raw"):
        tr.fit(x, y, epochs=1, meta=(xm, ym), progress=False, record_raw="every")
