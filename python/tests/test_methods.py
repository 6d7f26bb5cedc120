"""Behaviour of the weighting methods through the public API (issue: L2RW, MW-Net, GDW).

- With 40% of the labels flipped on an easily separable problem (digits), corrupted examples get a
  lower mean weight than clean ones under L2RW, MW-Net and GDW (GDW: ω at the label).
- On MNIST 4 vs 9 at 100:1 imbalance with 10 clean images per class, L2RW's test error is clearly
  below ERM's over several seeds (small version; the full one is examples/l2rw_mnist_imbalance.py).
- Every baseline trains through the same API; options are validated; checkpoints resume methods
  bit-identically.
"""

from __future__ import annotations

import os
from pathlib import Path

import metaweight as mw
import numpy as np
import pytest
from metaweight import conditions, data


def _mnist_dir() -> Path:
    env = os.environ.get("METAWEIGHT_MNIST_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist-t10k"


@pytest.fixture(scope="module")
def noisy_digits():
    ds = data.load_digits(flatten=True, seed=0)
    split = conditions.meta_split(ds.y_train, 10, ds.num_classes, seed=0)
    x_meta, y_meta = ds.x_train[split.meta_indices], ds.y_train[split.meta_indices]
    x, y_clean = ds.x_train[split.train_indices], ds.y_train[split.train_indices]
    noisy = conditions.uniform_noise(y_clean, 0.4, ds.num_classes, seed=0, include_true_class=False)
    return ds, x, noisy, x_meta, y_meta


def _train(method, x, y, meta, epochs, seed=0, record=True, val=None):
    model = mw.mlp(x.shape[1], hidden=(128, 128), num_classes=10, seed=seed)
    trainer = mw.Trainer(model, mw.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4),
                         mw.MultiStep([int(epochs * 0.6)]), method=method, seed=seed)
    history = trainer.fit(x, y, epochs=epochs, batch_size=100, meta=meta if trainer.method.needs_meta else None,
                          progress=False, record_weights=record)
    return trainer, history


@pytest.mark.parametrize(
    "method",
    [mw.L2RW(), mw.MWNet(lr=1e-2), mw.GDW(lr=1e-2)],
    ids=["l2rw", "mwnet", "gdw"],
)
def test_flipped_labels_get_lower_mean_weight_than_clean_ones(noisy_digits, method):
    _ds, x, noisy, x_meta, y_meta = noisy_digits
    assert noisy.corrupted.mean() == pytest.approx(0.4, abs=0.05)
    trainer, history = _train(method, x, noisy.labels, (x_meta, y_meta), epochs=40)
    w = history[-1].example_weights
    assert w is not None and np.isfinite(w).all()
    clean, flipped = float(w[~noisy.corrupted].mean()), float(w[noisy.corrupted].mean())
    assert flipped < 0.6 * clean, (clean, flipped)
    if isinstance(method, mw.GDW):
        cw = history[-1].class_weights
        assert cw is not None and cw.shape == (len(x), 10)
        # ω at the label is the per-example weight the trainer reports.
        np.testing.assert_allclose(cw[np.arange(len(x)), noisy.labels], w, rtol=1e-5)
    if method.has_weight_function:
        v = trainer.weight_function(np.array([0.05, 4.0], dtype=np.float32))
        assert v[0] > v[1], "the learned weighting function should give small losses more weight"


def test_meta_weighting_beats_erm_under_noise(noisy_digits):
    ds, x, noisy, x_meta, y_meta = noisy_digits
    erm, _ = _train("erm", x, noisy.labels, None, epochs=60, record=False)
    l2rw, _ = _train("l2rw", x, noisy.labels, (x_meta, y_meta), epochs=60, record=False)
    a_erm = erm.evaluate(ds.x_test, ds.y_test)["accuracy"]
    a_l2rw = l2rw.evaluate(ds.x_test, ds.y_test)["accuracy"]
    assert a_l2rw > a_erm + 0.02, (a_erm, a_l2rw)


def _mnist_4v9(seed: int, ratio: float):
    ds = data.load_mnist_t10k(_mnist_dir(), test_fraction=0.3, seed=0, flatten=True)
    # Meta: 10 clean images per class of 4 and 9, disjoint from training.
    keep = np.isin(ds.y_train, (4, 9))
    xs, ys = ds.x_train[keep], np.where(ds.y_train[keep] == 4, 0, 1)
    split = conditions.meta_split(ys, 10, 2, seed=seed)
    x_meta, y_meta = xs[split.meta_indices], ys[split.meta_indices]
    rest_x, rest_y = xs[split.train_indices], ds.y_train[keep][split.train_indices]
    sub = conditions.two_class_imbalance(rest_y, classes=(4, 9), majority=9, ratio=ratio, total=None, seed=seed)
    x_train, y_train = rest_x[sub.indices], sub.labels
    test = np.isin(ds.y_test, (4, 9))
    return x_train, y_train, x_meta, y_meta, ds.x_test[test], np.where(ds.y_test[test] == 4, 0, 1)


@pytest.mark.skipif(not _mnist_dir().exists(), reason="shared MNIST t10k files not found")
def test_l2rw_test_error_is_clearly_below_erm_on_mnist_4v9_at_100_to_1():
    # lr 0.02 with momentum 0.9: the README's rule for L2RW on a network without batch norm,
    # lr/(1 − μ) ≲ 0.3. At lr 0.05 (0.5) single seeds fall back to ERM's error (seeds 2 and 3 of six:
    # 0.38-0.49 under the Haswell and Cooperlake kernels alike), which made the mean over three seeds
    # depend on the OpenBLAS kernel; at 0.02 all six seeds stay at 0.15-0.32 under both.
    errs = {"erm": [], "l2rw": []}
    for seed in range(3):
        x, y, xm, ym, xt, yt = _mnist_4v9(seed, 100)
        assert (y == 0).sum() * 50 < (y == 1).sum()  # strongly imbalanced
        for name, errors in errs.items():
            model = mw.mlp(784, hidden=(100,), num_classes=2, seed=seed)
            tr = mw.Trainer(model, mw.SGD(lr=0.02, momentum=0.9, weight_decay=1e-4), method=name, seed=seed)
            tr.fit(x, y, epochs=15, batch_size=100, meta=(xm, ym) if name == "l2rw" else None,
                   meta_batch_size=20, progress=False)
            errors.append(1 - tr.evaluate(xt, yt)["accuracy"])
    erm, l2rw = np.mean(errs["erm"]), np.mean(errs["l2rw"])
    assert l2rw < 0.6 * erm and l2rw < erm - 0.05, errs


@pytest.mark.parametrize(
    "method",
    [mw.Focal(gamma=2), mw.Bootstrap(), mw.Bootstrap(hard=True), mw.HardMining(fraction=0.7), mw.RandomWeights(),
     mw.SelfPaced(), mw.ClassBalancedSampling(), mw.FineTune(epochs=3),
     "class_balanced", "inverse_frequency"],
    ids=lambda m: m if isinstance(m, str) else repr(m),
)
def test_every_baseline_trains_through_the_same_api(noisy_digits, method):
    ds, x, noisy, x_meta, y_meta = noisy_digits
    if isinstance(method, str):
        counts = tuple(np.bincount(noisy.labels, minlength=10))
        method = mw.ClassBalanced(class_counts=counts) if method == "class_balanced" else \
            mw.InverseFrequency(class_counts=counts)
    model = mw.mlp(64, hidden=(64,), num_classes=10, seed=0)
    tr = mw.Trainer(model, mw.SGD(lr=0.1, momentum=0.9), method=method, seed=0)
    meta = (x_meta, y_meta) if isinstance(method, mw.FineTune) else None
    hist = tr.fit(x, noisy.labels, epochs=5, meta=meta, progress=False, record_weights=True)
    assert len(hist) == 5 + (3 if isinstance(method, mw.FineTune) else 0)
    assert tr.evaluate(ds.x_test, ds.y_test)["accuracy"] > 0.3  # learns (chance is 0.1)
    assert np.isfinite(hist[-1].train_loss)


def test_self_paced_defaults_learn_from_most_examples_and_drop_corrupted_ones(noisy_digits):
    ds, x, noisy, _xm, _ym = noisy_digits
    trainer, history = _train(mw.SelfPaced(), x, noisy.labels, None, epochs=10)
    w = history[-1].example_weights
    assert w is not None
    # The default threshold starts above ln(C): training does not lock onto a few easy classes.
    assert trainer.evaluate(ds.x_test, ds.y_test)["accuracy"] > 0.85
    assert w[~noisy.corrupted].mean() > 0.8 and w[noisy.corrupted].mean() < 0.5 * w[~noisy.corrupted].mean()


def test_fine_tune_uses_its_own_constant_rate_and_continues_the_epoch_count(noisy_digits):
    ds, x, noisy, x_meta, y_meta = noisy_digits
    model = mw.mlp(64, hidden=(32,), num_classes=10, seed=0)
    seen = []
    tr = mw.Trainer(model, mw.SGD(lr=0.1, momentum=0.9), mw.Cosine(), method=mw.FineTune(epochs=2), seed=0)
    hist = tr.fit(x, noisy.labels, epochs=3, meta=(x_meta, y_meta), x_val=ds.x_test, y_val=ds.y_test,
                  progress=False, callbacks=[lambda t, r: seen.append((t, r.epoch))])
    assert [r.epoch for r in hist] == [1, 2, 3, 4, 5] == [e for _, e in seen]
    assert all(t is tr for t, _ in seen)
    # Cosine ends near 0; the fine-tuning phase uses a tenth of the base rate instead.
    assert hist[2].lr < 1e-3 and hist[3].lr == pytest.approx(0.01) and hist[4].lr == pytest.approx(0.01)
    assert [r.epoch for r in tr.history] == [1, 2, 3, 4, 5]
    steps = int(np.ceil(len(x_meta) / 100))
    assert hist[4].step == hist[2].step + 2 * steps
    tr2 = mw.Trainer(mw.mlp(64, hidden=(32,), num_classes=10, seed=0), mw.SGD(lr=0.1), method=mw.FineTune(epochs=1, lr=0.5))
    h2 = tr2.fit(x, noisy.labels, epochs=1, meta=(x_meta, y_meta), progress=False)
    assert h2[-1].lr == pytest.approx(0.5)
    with pytest.raises(mw.InvalidArgumentError, match="lr"):
        mw.Trainer(mw.mlp(64, hidden=(8,), num_classes=10), method=mw.FineTune(lr=-1.0))


def test_class_count_baselines_need_counts():
    with pytest.raises(mw.InvalidArgumentError, match="class_counts"):
        mw.Trainer(mw.mlp(4, hidden=(4,), num_classes=3), method="class_balanced")


@pytest.mark.parametrize(
    ("method", "pattern"),
    [(mw.GDW(eta=-1), "eta"), (mw.GDW(clip=0), "clip"), (mw.MWNet(optimizer="rmsprop"), "optimizer"),
     (mw.MWNet(hidden=0), "hidden"), (mw.Focal(gamma=-1), "gamma"), (mw.HardMining(fraction=0), "fraction"),
     (mw.L2RW(virtual_lr=-1), "virtual_lr"), (mw.GDW(normalize=True), "normalize")],
)
def test_bad_method_options_raise_naming_the_option(method, pattern):
    with pytest.raises(mw.InvalidArgumentError, match=pattern):
        mw.Trainer(mw.mlp(4, hidden=(4,), num_classes=3), method=method)


def test_meta_methods_require_a_meta_batch(noisy_digits):
    _, x, noisy, _, _ = noisy_digits
    tr = mw.Trainer(mw.mlp(64, hidden=(8,), num_classes=10), method="l2rw", steps_per_epoch=1)
    with pytest.raises(mw.InvalidArgumentError, match="meta"):
        tr.step(x[:10], noisy.labels[:10])
    with pytest.raises(mw.InvalidArgumentError, match="meta"):
        tr.fit(x, noisy.labels, epochs=1, progress=False)


def test_step_returns_weights_and_gdw_class_weights(noisy_digits):
    _, x, noisy, x_meta, y_meta = noisy_digits
    tr = mw.Trainer(mw.mlp(64, hidden=(16,), num_classes=10), method=mw.GDW(), steps_per_epoch=10)
    r = tr.step(x[:50], noisy.labels[:50], x_meta=x_meta[:30], y_meta=y_meta[:30])
    assert r.weights.shape == (50,) and r.class_weights.shape == (50, 10)
    assert r.meta_loss > 0
    grid = np.linspace(0, 10, 21)
    assert tr.weight_function(grid).shape == (21,)
    with pytest.raises(mw.StateError):
        mw.Trainer(mw.mlp(64, hidden=(8,), num_classes=10), method="l2rw").weight_function(grid)


@pytest.mark.parametrize("method", ["l2rw", mw.MWNet(), mw.GDW(), mw.RandomWeights()], ids=str)
def test_checkpoint_resume_is_bit_identical_for_methods(tmp_path, noisy_digits, method):
    _, x, noisy, x_meta, y_meta = noisy_digits
    xb, yb = x[:200], noisy.labels[:200]
    meta = (x_meta, y_meta)

    def make():
        t = mw.Trainer(mw.mlp(64, hidden=(32,), num_classes=10, seed=1), method=method, seed=3)
        return t

    def go(t, epochs):
        t.fit(xb, yb, epochs=epochs, batch_size=64, meta=meta if t.method.needs_meta else None, progress=False)

    a = make()
    go(a, 2)
    path = tmp_path / "ck.mw"
    a.save(path)
    go(a, 2)
    b = make()
    b.load(path)
    go(b, 2)
    np.testing.assert_array_equal(a.model.get_flat(), b.model.get_flat())
    if a.method.has_weight_function:
        grid = np.linspace(0, 5, 11)
        np.testing.assert_array_equal(a.weight_function(grid), b.weight_function(grid))
