"""Checkpoints: bit-identical resumption (step and fit, across epoch boundaries, with shuffling,
dropout and batch norm), and every way a load can fail."""

from __future__ import annotations

import os
from pathlib import Path

import metaweight as mw
import numpy as np
import pytest
from _api_support import digits_split, small_cnn, small_mlp


def _bn_dropout_mlp(seed: int) -> mw.Network:
    return mw.mlp(64, hidden=(32, 16), num_classes=10, batch_norm=True, dropout=0.2, seed=seed)


def test_resuming_with_step_is_bit_identical(digits, tmp_path):
    x, y, _, _ = digits
    batches = [(x[i : i + 50], y[i : i + 50]) for i in range(0, 500, 50)]
    k, m = 4, 6
    net = _bn_dropout_mlp(seed=1)
    trainer = mw.Trainer(net, mw.SGD(lr=0.05, nesterov=True), mw.MultiStep([5], unit="step"), seed=3)
    for xb, yb in batches[:k]:
        trainer.step(xb, yb)
    path = tmp_path / "run.ckpt"
    trainer.save(path)
    results_1 = [trainer.step(xb, yb) for xb, yb in batches[k : k + m]]
    p1 = net.state_dict()

    other = _bn_dropout_mlp(seed=99)  # different initialisation: everything comes from the file
    resumed = mw.Trainer(other, mw.SGD(lr=0.05, nesterov=True), mw.MultiStep([5], unit="step"), seed=123)
    resumed.load(path)
    assert resumed.step_count == k
    assert resumed.learning_rate == pytest.approx(0.05)
    results_2 = [resumed.step(xb, yb) for xb, yb in batches[k : k + m]]
    assert results_2 == results_1  # losses, accuracies, learning rates (schedule position), step counts
    p2 = other.state_dict()
    for name in p1:
        np.testing.assert_array_equal(p2[name], p1[name], err_msg=name)


def test_resuming_fit_across_epoch_boundaries_with_shuffling_is_bit_identical(digits, tmp_path):
    x, y, _, _ = digits
    x, y = x[:600], y[:600]

    def make(seed):
        net = _bn_dropout_mlp(seed=seed)
        return net, mw.Trainer(net, mw.Adam(lr=3e-3), mw.MultiStep([2], gamma=0.5), seed=seed)

    net, trainer = make(1)
    trainer.fit(x, y, epochs=1, batch_size=64, progress=False)  # 10 steps; the last batch has 24
    trainer.save(tmp_path / "epoch1.ckpt")
    history_1 = trainer.fit(x, y, epochs=2, batch_size=64, progress=False)
    p1 = net.state_dict()

    other, resumed = make(2)
    resumed.load(tmp_path / "epoch1.ckpt")  # epoch-based schedule: resolved by fit after the load
    history_2 = resumed.fit(x, y, epochs=2, batch_size=64, progress=False)
    assert history_2.train_loss == history_1.train_loss
    assert history_2.lr == history_1.lr == pytest.approx([3e-3, 1.5e-3])
    for name, value in other.state_dict().items():
        np.testing.assert_array_equal(value, p1[name], err_msg=name)


def test_resuming_a_cnn_with_augmentation_is_bit_identical(digits, tmp_path):
    x, y, _, _ = digits
    x = x[:300].reshape(-1, 1, 8, 8)
    y = y[:300]

    def make(seed):
        net = small_cnn(seed=seed)
        return net, mw.Trainer(net, mw.SGD(lr=0.05), seed=seed, augment=mw.Augment(crop_padding=2, flip=True))

    net, trainer = make(1)
    trainer.fit(x, y, epochs=1, batch_size=64, progress=False)
    trainer.save(tmp_path / "cnn.ckpt")
    trainer.fit(x, y, epochs=1, batch_size=64, progress=False)
    other, resumed = make(1)
    resumed.load(tmp_path / "cnn.ckpt")
    resumed.fit(x, y, epochs=1, batch_size=64, progress=False)
    np.testing.assert_array_equal(other.get_flat(), net.get_flat())
    np.testing.assert_array_equal(
        other.buffers()["1.batchnorm.running_mean"], net.buffers()["1.batchnorm.running_mean"]
    )


def test_from_checkpoint_creates_and_loads_in_one_call(digits, tmp_path):
    x, y, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    trainer.fit(x[:200], y[:200], epochs=1, progress=False)
    trainer.save(str(tmp_path / "a.ckpt"))
    resumed = mw.Trainer.from_checkpoint(tmp_path / "a.ckpt", small_mlp(seed=4), mw.SGD(lr=0.05))
    assert resumed.step_count == trainer.step_count
    np.testing.assert_array_equal(resumed.model.get_flat(), trainer.model.get_flat())


def test_save_overwrites_atomically_and_leaves_no_temporary_files(digits, tmp_path):
    x, y, _, _ = digits
    trainer = mw.Trainer(small_mlp())
    path = tmp_path / "a.ckpt"
    trainer.save(path)
    trainer.step(x[:10], y[:10])
    trainer.save(path)
    assert os.listdir(tmp_path) == ["a.ckpt"]
    fresh = mw.Trainer(small_mlp(seed=3))
    fresh.load(path)
    assert fresh.step_count == 1


# ---- failures ----------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, digits):
    x, y, _, _ = digits
    trainer = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    trainer.step(x[:20], y[:20])
    path = tmp_path / "good.ckpt"
    trainer.save(path)
    return path


def _assert_load_fails_and_changes_nothing(path, pattern, make=small_mlp, optimizer=None):
    net = make(seed=5)
    trainer = mw.Trainer(net, optimizer or mw.SGD(lr=0.05))
    before = net.get_flat()
    with pytest.raises(mw.CheckpointError, match=pattern) as info:
        trainer.load(path)
    assert isinstance(info.value, OSError)
    np.testing.assert_array_equal(net.get_flat(), before)
    assert trainer.step_count == 0


def test_loading_into_a_different_architecture_raises_checkpoint_error(saved):
    _assert_load_fails_and_changes_nothing(
        saved, "architecture", make=lambda seed: mw.mlp(64, hidden=(33,), seed=seed)
    )
    _assert_load_fails_and_changes_nothing(
        saved, "architecture", make=lambda seed: mw.mlp(64, hidden=(32,), num_classes=9)
    )


def test_loading_into_a_different_optimizer_kind_raises_checkpoint_error(saved):
    _assert_load_fails_and_changes_nothing(saved, "optimizer", optimizer=mw.Adam())


def test_loading_a_missing_file_raises_checkpoint_error(tmp_path):
    _assert_load_fails_and_changes_nothing(tmp_path / "nope.ckpt", "cannot open")
    _assert_load_fails_and_changes_nothing(tmp_path, "directory")


@pytest.mark.parametrize("keep", [0, 10, 19, 100, -1])
def test_loading_a_truncated_file_raises_checkpoint_error(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    _assert_load_fails_and_changes_nothing(saved, "truncated|checksum|magic")


@pytest.mark.parametrize("where", [0.05, 0.5, 0.99])
def test_loading_a_corrupted_file_raises_checkpoint_error(saved, where):
    data = bytearray(saved.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0x5A
    saved.write_bytes(bytes(data))
    _assert_load_fails_and_changes_nothing(saved, "checksum|magic|version|corrupt")


def test_loading_a_file_that_is_not_a_checkpoint_raises_checkpoint_error(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, w=np.zeros(100))
    _assert_load_fails_and_changes_nothing(path, "not a metaweight checkpoint")


def test_saving_into_a_missing_directory_raises_checkpoint_error(tmp_path):
    trainer = mw.Trainer(small_mlp())
    with pytest.raises(mw.CheckpointError, match="cannot create"):
        trainer.save(tmp_path / "no" / "such" / "dir" / "a.ckpt")


def test_bad_paths_raise_invalid_argument():
    trainer = mw.Trainer(small_mlp())
    with pytest.raises(mw.InvalidArgumentError, match="path"):
        trainer.save("")
    with pytest.raises(mw.InvalidArgumentError, match="path"):
        trainer.load(42)  # type: ignore[arg-type]
    assert isinstance(Path("x"), os.PathLike)


# ---- every method, LAW searches and strategies ---------------------------------------------------------

COUNTS = [10] * 10


def _all_methods():
    return [
        mw.ERM(),
        mw.L2RW(),
        mw.MWNet(),
        mw.GDW(),
        mw.Focal(),
        mw.ClassBalanced(class_counts=COUNTS),
        mw.InverseFrequency(class_counts=COUNTS),
        mw.HardMining(),
        mw.RandomWeights(),
        mw.SelfPaced(interval=3),
        mw.Bootstrap(),
        mw.Bootstrap(hard=True),
        mw.FineTune(epochs=1),
        mw.ClassBalancedSampling(),
    ]


@pytest.mark.parametrize("method", _all_methods(), ids=lambda m: repr(m)[:40])
def test_resuming_fit_is_bit_identical_for_every_method(digits, tmp_path, method):
    x, y, _, _ = digits
    xb, yb = x[:256], y[:256]
    meta = (x[300:360], y[300:360])

    def make():
        return mw.Trainer(mw.mlp(64, hidden=(32,), num_classes=10, dropout=0.1, seed=1), method=method, seed=3)

    def go(t, epochs):
        uses_meta = t.method.needs_meta or isinstance(t.method, mw.FineTune)
        t.fit(xb, yb, epochs=epochs, batch_size=64, meta=meta if uses_meta else None, progress=False)

    a = make()
    go(a, 2)
    path = tmp_path / "ck.mw"
    a.save(path)
    go(a, 2)
    b = make()
    b.load(path)
    go(b, 2)
    np.testing.assert_array_equal(a.model.get_flat(), b.model.get_flat())
    for k, v in a.model.state_dict().items():
        np.testing.assert_array_equal(v, b.model.state_dict()[k])


def _law_setup():
    from metaweight.law import LAWConfig

    x, y, _, _ = digits_split(seed=0)
    cfg = LAWConfig(stages=4, warmup_stages=1, epochs=4, batch_size=32, parallel=2, fdu_epochs=1,
                    actor_hidden=16, critic_hidden=16)
    return cfg, x[:320], y[:320], x[400:560], y[400:560]


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("stop_after", [2, 4, 5])  # mid-round, at a round's end, after a round
def test_resuming_a_law_search_from_its_checkpoint_is_bit_identical(tmp_path, stop_after):
    from metaweight.law import LAWSearch

    cfg, x, y, xv, yv = _law_setup()
    spec = "mlp(hidden=32, classes=10)"
    full = LAWSearch(spec, cfg, seed=3)
    full.search(x, y, xv, yv, episodes=6, progress=False)
    full.save(tmp_path / "full.ckpt")

    part = LAWSearch(spec, cfg, seed=3)
    stages = []
    res = part.search(x, y, xv, yv, episodes=6, progress=False,
                      callback=lambda log: stages.append(log) or len(stages) == stop_after)
    assert res.interrupted
    part.save(tmp_path / "mid.ckpt")
    part.close()

    resumed = LAWSearch(spec, cfg, seed=3, input_shape=(64,))
    resumed.load(tmp_path / "mid.ckpt")
    done_rounds = stop_after // cfg.stages
    resumed.search(x, y, xv, yv, episodes=6 - done_rounds * cfg.parallel, progress=False)
    resumed.save(tmp_path / "resumed.ckpt")
    assert _sha(tmp_path / "resumed.ckpt") == _sha(tmp_path / "full.ckpt")
    assert resumed.rounds_completed == full.rounds_completed == 3


def test_law_search_checkpoint_errors_name_the_problem(tmp_path):
    from metaweight.law import LAWConfig, LAWSearch

    cfg, x, y, xv, yv = _law_setup()
    spec = "mlp(hidden=32, classes=10)"
    s = LAWSearch(spec, cfg, seed=3)
    s.search(x, y, xv, yv, episodes=2, progress=False, callback=lambda log: log.stage == 1)
    path = tmp_path / "s.ckpt"
    s.save(path)
    data = path.read_bytes()
    fresh = LAWSearch(spec, cfg, seed=3, input_shape=(64,))
    (tmp_path / "trunc").write_bytes(data[: len(data) // 2])
    with pytest.raises(mw.CheckpointError, match="truncated|checksum"):
        fresh.load(tmp_path / "trunc")
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    (tmp_path / "corrupt").write_bytes(bytes(bad))
    with pytest.raises(mw.CheckpointError, match="checksum"):
        fresh.load(tmp_path / "corrupt")
    ver = bytearray(data)
    ver[8] = 99
    (tmp_path / "version").write_bytes(bytes(ver))
    with pytest.raises(mw.CheckpointError, match="version 99"):
        fresh.load(tmp_path / "version")
    with pytest.raises(mw.CheckpointError, match="architecture"):
        LAWSearch("mlp(hidden=16, classes=10)", cfg, seed=3, input_shape=(64,)).load(path)
    with pytest.raises(mw.CheckpointError, match="configuration"):
        LAWSearch(spec, LAWConfig(stages=5), seed=3, input_shape=(64,)).load(path)
    with pytest.raises(mw.CheckpointError, match="seed"):
        LAWSearch(spec, cfg, seed=4, input_shape=(64,)).load(path)
    trainer = mw.Trainer(small_mlp(), seed=0)
    trainer.save(tmp_path / "trainer.ckpt")
    with pytest.raises(mw.CheckpointError, match="not a LAW search"):
        fresh.load(tmp_path / "trainer.ckpt")
    with pytest.raises(mw.StateError, match="input_shape"):
        LAWSearch(spec, cfg, seed=3).load(path)
    fresh.load(path)  # the failed loads changed nothing; the good file still loads


def _strategy_trainer(strategy, x_val, y_val, total):
    t = mw.Trainer(mw.mlp(64, hidden=(32,), num_classes=10, seed=2), mw.SGD(lr=0.05), seed=5)
    strategy.attach(t, total, x_val, y_val)
    return t


def test_a_trainer_with_a_law_strategy_resumes_bit_identically(tmp_path):
    from metaweight.law import LAWSearch

    cfg, x, y, xv, yv = _law_setup()
    search = LAWSearch("mlp(hidden=32, classes=10)", cfg, seed=1)
    search.search(x, y, xv, yv, episodes=2, progress=False)
    strategy = search.strategy()
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 320, 32)]
    total = 2 * len(batches)
    a = _strategy_trainer(strategy, xv, yv, total)
    for xb, yb in batches:
        a.step(xb, yb)
    a.save(tmp_path / "a.ckpt")
    wa = [a.step(xb, yb).weights for xb, yb in batches]
    b = _strategy_trainer(strategy, xv, yv, total)
    b.load(tmp_path / "a.ckpt")
    wb = [b.step(xb, yb).weights for xb, yb in batches]
    np.testing.assert_array_equal(a.model.get_flat(), b.model.get_flat())
    np.testing.assert_array_equal(np.concatenate(wa), np.concatenate(wb))
    plain = mw.Trainer(mw.mlp(64, hidden=(32,), num_classes=10, seed=2), mw.SGD(lr=0.05), seed=5)
    with pytest.raises(mw.CheckpointError, match="attach the same strategy"):
        plain.load(tmp_path / "a.ckpt")
    other = _strategy_trainer(strategy, xv, yv, total + 1)
    with pytest.raises(mw.CheckpointError, match="strategy mismatch"):
        other.load(tmp_path / "a.ckpt")
    plain.save(tmp_path / "plain.ckpt")
    with pytest.raises(mw.CheckpointError, match="without a LAW strategy"):
        _strategy_trainer(strategy, xv, yv, total).load(tmp_path / "plain.ckpt")
