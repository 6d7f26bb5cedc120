"""Training: accuracy on clean digits, fit's epochs and history, reproducibility, schedules,
evaluation helpers, progress output and callbacks."""

from __future__ import annotations

import math

import metaweight as mw
import metaweight.trainer as trainer_module
import numpy as np
import pytest
from _api_support import small_cnn, small_mlp


def test_mlp_on_clean_digits_reaches_95_percent_test_accuracy(digits):
    x_train, y_train, x_test, y_test = digits
    assert x_train.shape == (1258, 64) and x_test.shape == (539, 64)
    net = mw.mlp(64, hidden=(256, 256), num_classes=10, seed=0)
    trainer = mw.Trainer(net, mw.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4), mw.MultiStep([15]), seed=0)
    history = trainer.fit(
        x_train, y_train, epochs=20, batch_size=100, x_val=x_test, y_val=y_test, progress=False
    )
    result = trainer.evaluate(x_test, y_test)
    assert result["accuracy"] >= 0.95, result
    assert history[-1].val_accuracy == pytest.approx(result["accuracy"])
    assert history[-1].train_accuracy > 0.99
    assert mw.accuracy(y_test, trainer.predict(x_test)) == pytest.approx(result["accuracy"])


def test_fit_history_has_one_record_per_epoch_and_includes_the_last_partial_batch(digits):
    x_train, y_train, x_test, y_test = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    history = trainer.fit(
        x_train, y_train, epochs=3, batch_size=100, x_val=x_test, y_val=y_test, progress=False
    )
    steps_per_epoch = math.ceil(1258 / 100)  # 12 full batches and one of 58
    assert len(history) == 3
    assert history.epochs == [1, 2, 3]
    assert [r.step for r in history] == [13, 26, 39]
    assert trainer.step_count == 3 * steps_per_epoch
    assert trainer.steps_per_epoch == steps_per_epoch
    assert all(t > 0 for t in history.time)
    assert all(0 <= a <= 1 for a in history.train_accuracy + history.val_accuracy)
    assert history.train_loss[-1] < history.train_loss[0]
    columns = history.to_dict()
    assert set(columns) >= {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "time"}
    assert all(len(v) == 3 for v in columns.values())


def test_history_accumulates_across_fit_calls_and_each_call_returns_its_own(digits):
    x_train, y_train, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    first = trainer.fit(x_train, y_train, epochs=2, progress=False)
    second = trainer.fit(x_train, y_train, epochs=1, progress=False)
    assert len(first) == 2 and len(second) == 1
    assert second[0].epoch == 3
    assert len(trainer.history) == 3
    assert trainer.history[0] == first[0] and trainer.history[2] == second[0]
    assert second[0].val_loss is None and second[0].val_accuracy is None
    assert "3 epochs" in repr(trainer.history)


def test_each_epoch_visits_every_example_once_in_a_new_order(digits):
    x_train, y_train, _, _ = digits
    x, y = x_train[:250].copy(), y_train[:250]
    x[:, 0] = np.arange(250) / 250  # tag each example
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    batches = []
    real_step = trainer._raw_step

    def spy(xb, yb, *args):
        batches.append(np.rint(xb[:, 0] * 250).astype(int))
        return real_step(xb, yb, *args)

    trainer._raw_step = spy  # type: ignore[method-assign]
    trainer.fit(x, y, epochs=2, batch_size=64, progress=False)
    assert [len(b) for b in batches] == [64, 64, 64, 58] * 2  # the last partial batch is kept
    first, second = np.concatenate(batches[:4]), np.concatenate(batches[4:])
    assert sorted(first) == list(range(250)) and sorted(second) == list(range(250))
    assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(250))


def test_the_same_seed_gives_bit_identical_training_twice(digits):
    x_train, y_train, _, _ = digits

    def run(seed):
        net = mw.mlp(64, hidden=(32,), num_classes=10, dropout=0.2, batch_norm=True, seed=seed)
        trainer = mw.Trainer(net, mw.SGD(lr=0.05), seed=seed)
        history = trainer.fit(x_train, y_train, epochs=2, batch_size=64, progress=False)
        return net.state_dict(), history.train_loss

    a_state, a_loss = run(7)
    b_state, b_loss = run(7)
    c_state, _ = run(8)
    assert a_loss == b_loss
    for name in a_state:
        np.testing.assert_array_equal(a_state[name], b_state[name])
    assert not np.array_equal(a_state["0.0.linear.weight"], c_state["0.0.linear.weight"])


def test_the_trainer_seed_alone_changes_the_shuffling(digits):
    x_train, y_train, _, _ = digits
    a = mw.Trainer(small_mlp(seed=0), seed=1)
    b = mw.Trainer(small_mlp(seed=0), seed=2)
    a.fit(x_train, y_train, epochs=1, progress=False)
    b.fit(x_train, y_train, epochs=1, progress=False)
    assert not np.array_equal(a.model.get_flat(), b.model.get_flat())


def test_step_returns_a_step_result_and_counts_updates(digits):
    x_train, y_train, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    r = trainer.step(x_train[:100], y_train[:100])
    assert isinstance(r, mw.StepResult)
    assert r.step == 1 and trainer.step_count == 1
    assert r.lr == pytest.approx(0.05)
    assert 0 < r.loss < 10 and 0 <= r.accuracy <= 1
    assert r.meta_loss == 0.0 and r.class_weights is None
    np.testing.assert_array_equal(r.weights, np.ones(100, dtype=np.float32))  # ERM: every example counts 1
    # the reported loss is the batch loss before the update
    fresh = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    assert r.loss == pytest.approx(float(fresh.losses(x_train[:100], y_train[:100]).mean()), rel=1e-5)


def test_zero_sample_weights_leave_the_parameters_unchanged(digits):
    x_train, y_train, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.1, momentum=0.0, weight_decay=0.0))
    before = trainer.model.get_flat()
    trainer.step(x_train[:50], y_train[:50], sample_weights=np.zeros(50))
    np.testing.assert_array_equal(trainer.model.get_flat(), before)


def test_sample_weights_scale_the_gradient(digits):
    x_train, y_train, _, _ = digits
    x, y = x_train[:50], y_train[:50]
    doubled = mw.Trainer(small_mlp(), mw.SGD(lr=0.05, momentum=0.0, weight_decay=0.0))
    double_lr = mw.Trainer(small_mlp(), mw.SGD(lr=0.1, momentum=0.0, weight_decay=0.0))
    doubled.step(x, y, sample_weights=np.full(50, 2.0))
    double_lr.step(x, y)
    np.testing.assert_allclose(doubled.model.get_flat(), double_lr.model.get_flat(), rtol=1e-6, atol=1e-7)


def test_adam_trains(digits):
    x_train, y_train, x_test, y_test = digits
    trainer = mw.Trainer(small_mlp(), mw.Adam(lr=1e-2))
    trainer.fit(x_train, y_train, epochs=3, progress=False)
    assert trainer.evaluate(x_test, y_test)["accuracy"] > 0.85
    adamw = mw.Trainer(small_mlp(), mw.Adam(lr=1e-2, weight_decay=1e-2, decoupled=True))
    adamw.fit(x_train, y_train, epochs=1, progress=False)
    assert np.isfinite(adamw.model.get_flat()).all()


def test_a_residual_cnn_with_augmentation_trains_on_digit_images(digits):
    x_train, y_train, x_test, y_test = digits
    trainer = mw.Trainer(small_cnn(), mw.SGD(lr=0.05), augment=mw.Augment(crop_padding=1, flip=False))
    history = trainer.fit(x_train.reshape(-1, 1, 8, 8), y_train, epochs=4, batch_size=64, progress=False)
    assert history.train_loss[-1] < history.train_loss[0]
    assert trainer.evaluate(x_test.reshape(-1, 1, 8, 8), y_test)["accuracy"] > 0.5


def test_augmentation_is_refused_for_flat_networks_and_oversized_padding():
    with pytest.raises(mw.InvalidArgumentError, match="augment"):
        mw.Trainer(small_mlp(), augment=mw.Augment())
    with pytest.raises(mw.InvalidArgumentError, match="crop_padding"):
        mw.Trainer(small_cnn(), augment=mw.Augment(crop_padding=8))
    with pytest.raises(mw.InvalidArgumentError, match="Augment.crop_padding"):
        mw.Augment(crop_padding=-1)


# ---- evaluation --------------------------------------------------------------------------------------


def test_evaluate_predict_logits_and_losses_agree(digits):
    x_train, y_train, x_test, y_test = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    trainer.fit(x_train, y_train, epochs=2, progress=False)
    logits = trainer.logits(x_test)
    proba = trainer.predict_proba(x_test)
    labels = trainer.predict(x_test)
    losses = trainer.losses(x_test, y_test)
    assert logits.shape == proba.shape == (len(x_test), 10) and logits.dtype == np.float32
    assert labels.dtype == np.int64 and losses.shape == (len(x_test),)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(labels, logits.argmax(axis=1))
    np.testing.assert_allclose(losses, -np.log(proba[np.arange(len(y_test)), y_test]), rtol=1e-4, atol=1e-5)
    result = trainer.evaluate(x_test, y_test)
    assert result["loss"] == pytest.approx(float(losses.mean()), rel=1e-5)
    assert result["accuracy"] == pytest.approx(float((labels == y_test).mean()))
    # results do not depend on the batch size (up to BLAS rounding)
    np.testing.assert_allclose(trainer.logits(x_test, batch_size=7), logits, rtol=1e-5, atol=1e-6)
    assert trainer.evaluate(x_test, y_test, batch_size=33)["loss"] == pytest.approx(result["loss"], rel=1e-5)


def test_evaluation_changes_nothing(digits):
    x_train, y_train, x_test, y_test = digits
    net = mw.mlp(64, hidden=(32,), num_classes=10, batch_norm=True, dropout=0.3)
    trainer = mw.Trainer(net, mw.SGD(lr=0.05))
    trainer.fit(x_train, y_train, epochs=1, progress=False)
    state = net.state_dict()
    first = trainer.logits(x_test)
    trainer.evaluate(x_test, y_test)
    trainer.losses(x_test, y_test)
    np.testing.assert_array_equal(trainer.logits(x_test), first)  # eval mode: dropout off, running stats
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, state[name])


def test_a_diverging_run_raises_non_finite_error_and_keeps_the_last_finite_parameters(digits):
    x_train, y_train, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=1e30, momentum=0.0, weight_decay=0.0))
    with pytest.raises(mw.NonFiniteError, match=r"epoch 1, batch 2/13.*lower learning rate"):
        trainer.fit(x_train, y_train, epochs=3, progress=False)
    assert trainer.step_count == 1
    assert np.isfinite(trainer.model.get_flat()).all()


# ---- schedules -----------------------------------------------------------------------------------------


def test_multistep_in_steps_with_step(digits):
    x_train, y_train, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.1), mw.MultiStep([2, 4], gamma=0.5, unit="step"))
    lrs = [trainer.step(x_train[:20], y_train[:20]).lr for _ in range(6)]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert trainer.learning_rate == pytest.approx(0.025)


def test_cosine_with_warmup_in_steps(digits):
    x_train, y_train, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.1), mw.Cosine(total=10, min_lr=0.0, unit="step", warmup=2))
    lrs = [trainer.step(x_train[:20], y_train[:20]).lr for _ in range(11)]
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * s / 10)) for s in range(11)]
    expected[0] *= 0.5  # warm-up: (step + 1) / warmup
    assert lrs == pytest.approx(expected, abs=1e-6)


def test_epoch_schedules_are_converted_by_fit(digits):
    x_train, y_train, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.1), mw.MultiStep([2], gamma=0.1))
    assert trainer.steps_per_epoch is None
    history = trainer.fit(x_train[:500], y_train[:500], epochs=3, batch_size=100, progress=False)
    assert history.lr == pytest.approx([0.1, 0.1, 0.01])
    assert trainer.steps_per_epoch == 5


def test_cosine_without_total_spans_the_first_fit(digits):
    x_train, y_train, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.1), mw.Cosine())
    history = trainer.fit(x_train[:500], y_train[:500], epochs=4, batch_size=100, progress=False)
    assert history.lr[0] < 0.1 and history.lr[-1] == pytest.approx(
        0.1 * 0.5 * (1 + math.cos(math.pi * 19 / 20))
    )
    assert trainer.learning_rate == pytest.approx(0.0, abs=1e-9)


def test_epoch_schedules_with_step_need_steps_per_epoch(digits):
    x_train, y_train, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.1), mw.MultiStep([1]))
    with pytest.raises(mw.StateError, match="steps_per_epoch"):
        trainer.step(x_train[:10], y_train[:10])
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.1), mw.MultiStep([1]), steps_per_epoch=3)
    lrs = [trainer.step(x_train[:10], y_train[:10]).lr for _ in range(4)]
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01])


def test_fit_warns_when_the_epoch_length_differs_from_the_schedule_conversion(digits):
    x_train, y_train, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.1), mw.MultiStep([5]), steps_per_epoch=3)
    with pytest.warns(UserWarning, match="steps per epoch"):
        trainer.fit(x_train[:100], y_train[:100], epochs=1, batch_size=50, progress=False)


# ---- progress and callbacks ----------------------------------------------------------------------------


def test_progress_false_prints_nothing(digits, capsys):
    x_train, y_train, x_test, y_test = digits
    trainer = mw.Trainer(small_mlp())
    trainer.fit(x_train[:200], y_train[:200], epochs=2, x_val=x_test, y_val=y_test, progress=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_progress_without_tqdm_prints_one_line_per_epoch(digits, capsys, monkeypatch):
    x_train, y_train, x_test, y_test = digits
    monkeypatch.setattr(trainer_module, "_tqdm", lambda: None)
    trainer = mw.Trainer(small_mlp())
    trainer.fit(x_train[:200], y_train[:200], epochs=3, x_val=x_test, y_val=y_test)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1/3") and "val_acc" in lines[0] and "lr" in lines[0]


def test_progress_with_tqdm_draws_a_bar_per_epoch_on_stderr(digits, capsys):
    pytest.importorskip("tqdm")
    x_train, y_train, _, _ = digits
    trainer = mw.Trainer(small_mlp())
    trainer.fit(x_train[:200], y_train[:200], epochs=2)
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch 1/2" in err and "epoch 2/2" in err


def test_callbacks_see_every_epoch_and_returning_true_stops_training(digits):
    x_train, y_train, _, _ = digits
    seen = []

    def record(trainer, rec):
        seen.append((trainer.step_count, rec.epoch))

    def stop_after_two(trainer, rec):
        return rec.epoch >= 2

    trainer = mw.Trainer(small_mlp())
    history = trainer.fit(
        x_train[:200],
        y_train[:200],
        epochs=5,
        batch_size=50,
        callbacks=[record, stop_after_two],
        progress=False,
    )
    assert len(history) == 2
    assert seen == [(4, 1), (8, 2)]


def test_a_callback_can_evaluate_during_fit(digits):
    x_train, y_train, x_test, y_test = digits
    scores = []
    trainer = mw.Trainer(small_mlp())
    trainer.fit(
        x_train[:200],
        y_train[:200],
        epochs=2,
        progress=False,
        callbacks=[lambda t, r: scores.append(t.evaluate(x_test, y_test)["accuracy"])],
    )
    assert len(scores) == 2


# ---- configuration errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"optimizer": mw.SGD}, "instance"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"schedule": mw.Constant}, "instance"),
        ({"schedule": [30, 60]}, "schedule"),
        ({"method": "no_such_method"}, "method"),
        ({"method": 3}, "method"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"augment": True}, "augment"),
        ({"schedule": mw.Cosine(total=5, min_lr=1.0)}, "min_lr"),
    ],
)
def test_bad_trainer_settings_raise_invalid_argument_naming_them(kwargs, pattern):
    with pytest.raises(mw.InvalidArgumentError, match=pattern):
        mw.Trainer(small_mlp(), **kwargs)


def test_the_model_must_be_a_network():
    with pytest.raises(mw.InvalidArgumentError, match="model"):
        mw.Trainer("mlp")  # type: ignore[arg-type]


def test_method_names_and_objects_are_accepted():
    assert mw.Trainer(small_mlp(), method="ERM").method == mw.ERM()
    assert mw.Trainer(small_mlp(), method=mw.ERM()).method.name == "erm"


def test_trainer_properties_and_repr():
    net = small_mlp()
    trainer = mw.Trainer(net, mw.SGD(lr=0.2), seed=5)
    assert trainer.model is net
    assert trainer.optimizer == mw.SGD(lr=0.2)
    assert trainer.schedule == mw.Constant()
    assert trainer.seed == 5 and trainer.augment is None
    assert trainer.step_count == 0 and trainer.learning_rate == pytest.approx(0.2)
    assert "Trainer(" in repr(trainer) and "step_count=0" in repr(trainer)
    trainer.close()
    assert repr(trainer) == "Trainer(closed)"


def test_library_functions():
    assert mw.__version__ == mw._core.version()
    assert isinstance(mw.blas_core(), str) and isinstance(mw.blas_config(), str)
    n = mw.get_threads()
    try:
        mw.set_threads(1)
        assert mw.get_threads() == 1
    finally:
        mw.set_threads(n)
    with pytest.raises(mw.InvalidArgumentError, match="n"):
        mw.set_threads(0)


def test_a_failed_step_leaves_batch_norm_statistics_unchanged(digits):
    x_train, y_train, _, _ = digits
    net = mw.mlp(64, hidden=(32,), num_classes=10, batch_norm=True)
    trainer = mw.Trainer(net, mw.SGD(lr=1e30, momentum=0.0, weight_decay=0.0))
    trainer.step(x_train[:100], y_train[:100])
    before = net.state_dict()
    with pytest.raises(mw.NonFiniteError):
        trainer.step(x_train[100:200], y_train[100:200])
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_an_epoch_schedule_is_set_on_the_live_trainer_without_swapping_it(digits_xy):
    x, y = digits_xy
    net = mw.mlp(64, hidden=(16,), num_classes=10, seed=0)
    tr = mw.Trainer(net, mw.SGD(lr=0.1), mw.MultiStep([1]), seed=0)  # epoch positions: fit resolves them
    handle = tr._handle
    tr.fit(x, y, epochs=2, batch_size=100, progress=False)
    assert tr._handle == handle  # the same native trainer: nothing saved, reloaded or recreated
    h = tr.history
    assert h[0].lr == pytest.approx(0.1) and h[1].lr == pytest.approx(0.01)


def test_setting_an_invalid_schedule_on_a_live_trainer_changes_nothing(digits_xy):
    x, y = digits_xy
    tr = mw.Trainer(mw.mlp(64, hidden=(16,), num_classes=10, seed=0), mw.SGD(lr=0.1), seed=0)
    tr.step(x[:50], y[:50])
    before = tr.learning_rate
    with tr._use("test") as h:
        with pytest.raises(mw.InvalidArgumentError, match="schedule.kind"):
            mw._core.trainer_set_schedule(h, (9, [], 0.1, 0, 0.0, 0))
        with pytest.raises(mw.InvalidArgumentError):
            mw._core.trainer_set_schedule(h, (1, [-1], 0.1, 0, 0.0, 0))  # a negative milestone
    assert tr.learning_rate == before
    with tr._use("test") as h:
        mw._core.trainer_set_schedule(h, (1, [1], 0.5, 0, 0.0, 0))  # x0.5 from step 1 on
    assert tr.learning_rate == pytest.approx(0.05)
