"""The callback protocol of Trainer.fit (metaweight.callbacks).

- Callback objects get on_fit_start once (with the run's FitConfig), on_epoch_end per epoch, and
  on_fit_end once with the call's History; plain callables keep working alongside them.
- needs_weights makes fit record the example weights; True from on_epoch_end stops training.
- When fit raises, the started callbacks get on_fit_error (not on_fit_end) and the error propagates;
  a failing on_fit_start stops fit before any step.
- FineTune: one start and one end around both phases, every epoch reported.
"""

from __future__ import annotations

from typing import Any

import metaweight as mw
import numpy as np
import pytest
from _api_support import small_mlp
from metaweight.callbacks import BaseCallback, Callback, FitConfig


class Recorder(BaseCallback):
    """Logs every hook call as (hook, payload)."""

    def __init__(self, *, needs_weights: bool = False, stop_at: int | None = None) -> None:
        self.needs_weights = needs_weights
        self.stop_at = stop_at
        self.calls: list[tuple[str, Any]] = []

    def on_fit_start(self, trainer: mw.Trainer, config: FitConfig) -> None:
        self.calls.append(("start", config))

    def on_epoch_end(self, trainer: mw.Trainer, record: mw.EpochRecord) -> bool | None:
        self.calls.append(("epoch", record))
        return self.stop_at is not None and record.epoch >= self.stop_at

    def on_fit_end(self, trainer: mw.Trainer, history: mw.History) -> None:
        self.calls.append(("end", history))

    def on_fit_error(self, trainer: mw.Trainer, history: mw.History, error: BaseException) -> None:
        self.calls.append(("error", (len(history), error)))

    def hooks(self) -> list[str]:
        return [h for h, _ in self.calls]


@pytest.fixture
def data(digits):
    x, y, xt, yt = digits
    return x[:300], y[:300], xt[:100], yt[:100]


def test_hooks_run_in_order_with_the_runs_config_and_history(data):
    x, y, xt, yt = data
    rec = Recorder()
    plain: list[int] = []
    with mw.Trainer(small_mlp(), mw.SGD(lr=0.05), seed=0) as tr:
        tr.fit(x, y, epochs=1, batch_size=50, progress=False)  # a previous call: epochs continue from 2
        run = tr.fit(x, y, epochs=3, batch_size=64, x_val=xt, y_val=yt, progress=False,
                     callbacks=[rec, lambda _t, r: plain.append(r.epoch)])
    assert rec.hooks() == ["start", "epoch", "epoch", "epoch", "end"]
    config = rec.calls[0][1]
    assert config == FitConfig(epochs=3, fine_tune_epochs=0, first_epoch=2, batch_size=64, steps_per_epoch=5,
                               num_train=300, num_val=100, num_meta=0, num_classes=10, method="erm",
                               record_weights=False)
    assert [r.epoch for h, r in rec.calls if h == "epoch"] == [2, 3, 4] == plain
    assert rec.calls[-1][1] is run
    assert isinstance(rec, Callback)


def test_needs_weights_records_example_weights(data):
    x, y, _, _ = data
    with mw.Trainer(small_mlp(), mw.SGD(lr=0.05), seed=0) as tr:
        plain = tr.fit(x, y, epochs=1, batch_size=50, progress=False, callbacks=[Recorder()])
        asked = tr.fit(x, y, epochs=1, batch_size=50, progress=False, callbacks=[Recorder(needs_weights=True)])
    assert plain[-1].example_weights is None
    w = asked[-1].example_weights
    assert w is not None and w.shape == (300,)
    np.testing.assert_array_equal(w, np.ones(300, dtype=np.float32))  # ERM: every example weighs 1


def test_true_from_on_epoch_end_stops_and_fit_end_still_runs(data):
    x, y, _, _ = data
    rec = Recorder(stop_at=2)
    with mw.Trainer(small_mlp(), mw.SGD(lr=0.05), seed=0) as tr:
        run = tr.fit(x, y, epochs=5, batch_size=50, progress=False, callbacks=[rec])
    assert len(run) == 2
    assert rec.hooks() == ["start", "epoch", "epoch", "end"]


def test_an_error_during_training_calls_on_fit_error_and_propagates(data):
    x, y, _, _ = data
    rec = Recorder()

    def boom(_t: mw.Trainer, r: mw.EpochRecord) -> None:
        if r.epoch == 2:
            raise RuntimeError("callback failed")

    with mw.Trainer(small_mlp(), mw.SGD(lr=0.05), seed=0) as tr:
        with pytest.raises(RuntimeError, match="callback failed"):
            tr.fit(x, y, epochs=4, batch_size=50, progress=False, callbacks=[rec, boom])
        assert len(tr.history) == 2
    assert rec.hooks() == ["start", "epoch", "epoch", "error"]
    n, err = rec.calls[-1][1]
    assert n == 2 and isinstance(err, RuntimeError)


def test_a_failing_on_fit_start_stops_fit_before_any_step(data):
    x, y, _, _ = data
    first = Recorder()

    class Refuses(BaseCallback):
        def on_fit_start(self, trainer: mw.Trainer, config: FitConfig) -> None:
            raise ValueError("not today")

    with mw.Trainer(small_mlp(), mw.SGD(lr=0.05), seed=0) as tr:
        with pytest.raises(ValueError, match="not today"):
            tr.fit(x, y, epochs=2, batch_size=50, progress=False, callbacks=[first, Refuses()])
        assert tr.step_count == 0 and len(tr.history) == 0
    assert first.hooks() == ["start", "error"]


def test_an_error_hook_that_raises_becomes_a_warning(data):
    x, y, _, _ = data

    class BadCleanup(BaseCallback):
        def on_fit_error(self, trainer: mw.Trainer, history: mw.History, error: BaseException) -> None:
            raise OSError("disk gone")

    def boom(_t: mw.Trainer, _r: mw.EpochRecord) -> None:
        raise KeyError("original")

    with mw.Trainer(small_mlp(), mw.SGD(lr=0.05), seed=0) as tr:
        with pytest.warns(RuntimeWarning, match="disk gone"), pytest.raises(KeyError, match="original"):
            tr.fit(x, y, epochs=2, batch_size=50, progress=False, callbacks=[BadCleanup(), boom])


def test_fine_tune_is_one_run_for_the_callbacks(data):
    x, y, xt, yt = data
    rec = Recorder()
    with mw.Trainer(small_mlp(), mw.SGD(lr=0.05), method=mw.FineTune(epochs=2), seed=0) as tr:
        run = tr.fit(x, y, epochs=3, batch_size=50, meta=(xt[:40], yt[:40]), progress=False, callbacks=[rec])
    assert rec.hooks() == ["start"] + ["epoch"] * 5 + ["end"]
    config = rec.calls[0][1]
    assert (config.epochs, config.fine_tune_epochs, config.num_meta) == (3, 2, 40)
    assert [r.epoch for h, r in rec.calls if h == "epoch"] == [1, 2, 3, 4, 5]
    assert len(run) == 5


def test_bad_callbacks_are_refused_before_training(data):
    x, y, _, _ = data
    with mw.Trainer(small_mlp(), mw.SGD(lr=0.05), seed=0) as tr:
        with pytest.raises(mw.InvalidArgumentError, match=r"callbacks: expected a list of callbacks, got one Recorder"):
            tr.fit(x, y, epochs=1, progress=False, callbacks=Recorder())  # type: ignore[arg-type]
        with pytest.raises(mw.InvalidArgumentError, match=r"callbacks\[1\]"):
            tr.fit(x, y, epochs=1, progress=False, callbacks=[Recorder(), 42])  # type: ignore[list-item]
        with pytest.raises(mw.InvalidArgumentError, match=r"callbacks: expected a list"):
            tr.fit(x, y, epochs=1, progress=False, callbacks=3)  # type: ignore[arg-type]
        assert tr.step_count == 0


def test_law_train_passes_callbacks_to_its_fit(data):
    x, y, xt, yt = data
    rec = Recorder()
    run = mw.law.train(small_mlp(), x, y, strategy=None, epochs=2, batch_size=50, x_test=xt, y_test=yt,
                       callbacks=[rec])
    assert rec.hooks() == ["start", "epoch", "epoch", "end"]
    assert [r.epoch for h, r in rec.calls if h == "epoch"] == [1, 2]
    assert rec.calls[0][1].record_weights  # law.train records the weights itself
    run.trainer.close()
    run.model.close()
    with pytest.raises(mw.InvalidArgumentError, match=r"callbacks\[0\]"):
        mw.law.train(small_mlp(), x, y, strategy=None, epochs=1, callbacks=[7])
