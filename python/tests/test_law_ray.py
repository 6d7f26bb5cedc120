"""LAW episodes on Ray (issue 12, item 2): ``LAWSearch.search(..., ray=ADDRESS)`` against a real
two-node cluster on loopback (the ``ray_cluster`` fixture): the strategy, the replay buffer's
effect and every episode log are bit-identical to the threaded search for the same seed and
``parallel``; a killed actor's episode restarts from the stage where it was lost."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from metaweight.errors import InvalidArgumentError, StateError
from metaweight.law import LAWConfig, LAWSearch, SearchResult

pytestmark = pytest.mark.ray

SPEC = "mlp(hidden=16, classes=3)"


def _data() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 2, size=(3, 6)).astype(np.float32)
    y = rng.integers(0, 3, 240)
    x = (centers[y] + rng.normal(0, 1, size=(240, 6))).astype(np.float32)
    noisy = y.copy()
    flip = rng.random(240) < 0.3
    noisy[flip] = (y[flip] + 1) % 3
    yv = rng.integers(0, 3, 60)
    xv = (centers[yv] + rng.normal(0, 1, size=(60, 6))).astype(np.float32)
    return x, noisy.astype(np.int64), xv, yv.astype(np.int64), flip


def _config() -> LAWConfig:
    return LAWConfig(stages=4, warmup_stages=1, parallel=2, epochs=4, batch_size=32, normalize_weights=True,
                     label_encoding="scalar", actor_lr=1e-3, critic_lr=1e-3)


def _search(path: Path, **kwargs: Any) -> tuple[SearchResult, bytes]:
    x, y, xv, yv, flip = _data()
    with LAWSearch(SPEC, _config(), seed=7) as s:
        r = s.search(x, y, xv, yv, 4, corrupted=flip, progress=False, **kwargs)
        s.save_strategy(path)
    return r, path.read_bytes()


def _same_episodes(a: SearchResult, b: SearchResult) -> None:
    assert [e.episode for e in a.episodes] == [e.episode for e in b.episodes] == [0, 1, 2, 3]
    for ea, eb in zip(a.episodes, b.episodes):
        assert ea.stages_done == eb.stages_done == 4
        for name in ("reward", "target_acc", "reference_acc", "loss_gap", "weight_corrupted", "state_acc"):
            np.testing.assert_array_equal(getattr(ea, name), getattr(eb, name), err_msg=name)
        np.testing.assert_array_equal(ea.actions, eb.actions)
        assert ea.example_weights is not None and eb.example_weights is not None
        np.testing.assert_array_equal(ea.example_weights, eb.example_weights)
    np.testing.assert_array_equal(  # NaN critic loss in warm-up stages compares equal here
        [(s.round, s.stage, s.buffer_size, s.critic_loss, s.actor_q, s.reward) for s in a.stages],
        [(s.round, s.stage, s.buffer_size, s.critic_loss, s.actor_q, s.reward) for s in b.stages],
    )


def test_ray_episodes_give_the_threaded_search_bit_for_bit(ray_cluster: Any, tmp_path: Path) -> None:
    threads, strategy_threads = _search(tmp_path / "threads.law")
    on_ray, strategy_ray = _search(tmp_path / "ray.law", ray=ray_cluster.address)
    assert strategy_ray == strategy_threads  # the whole strategy file: actor, embedding, settings
    _same_episodes(on_ray, threads)
    assert not on_ray.interrupted and on_ray.episodes_completed == 4


@pytest.mark.slow_ray
def test_killed_actor_restarts_its_episode_from_the_stage_where_it_was_lost(
    ray_cluster: Any, tmp_path: Path
) -> None:
    _, strategy_threads = _search(tmp_path / "threads.law")
    threads, _ = _search(tmp_path / "threads2.law")
    x, y, xv, yv, flip = _data()
    killed: list[int] = []
    with LAWSearch(SPEC, _config(), seed=7) as s:

        def kill_slot0_after_stage_2_of_round_1(log: Any) -> None:
            if log.round == 1 and log.stage == 1 and not killed:
                pid = s._ray.pids()[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                deadline = time.monotonic() + 30
                while pid in ray_cluster.pids() and time.monotonic() < deadline:
                    time.sleep(0.1)

        r = s.search(x, y, xv, yv, 4, corrupted=flip, progress=False, ray=ray_cluster.address,
                     callback=kill_slot0_after_stage_2_of_round_1)
        assert killed, "the callback did not run"
        assert s._ray.restarts >= 1  # the lost actor was replaced ...
        assert killed[0] not in s._ray.pids()
        s.save_strategy(tmp_path / "ray.law")
    # ... and its episode continued from its last finished stage: nothing differs.
    assert (tmp_path / "ray.law").read_bytes() == strategy_threads
    _same_episodes(r, threads)


def test_ray_round_in_progress_is_finished_on_ray_and_saved_only_between_rounds(
    ray_cluster: Any, tmp_path: Path
) -> None:
    _, strategy_threads = _search(tmp_path / "threads.law")
    x, y, xv, yv, flip = _data()
    with LAWSearch(SPEC, _config(), seed=7) as s:
        stop_after = {"n": 2}

        def stop(log: Any) -> bool:
            stop_after["n"] -= 1
            return stop_after["n"] == 0

        first = s.search(x, y, xv, yv, 4, corrupted=flip, progress=False, ray=ray_cluster.address, callback=stop)
        assert first.interrupted and len(first.stages) == 2
        with pytest.raises(StateError, match="between rounds"):
            s.save(tmp_path / "mid.ckpt")
        with pytest.raises(StateError, match="on Ray is in progress"):
            s.search(x, y, xv, yv, 2, corrupted=flip, progress=False)
        rest = s.search(x, y, xv, yv, 4, corrupted=flip, progress=False, ray=ray_cluster.address)
        assert not rest.interrupted and s.rounds_completed == 2
        s.save(tmp_path / "between.ckpt")  # a finished round: the driver's state is the search's
        s.save_strategy(tmp_path / "ray.law")
    assert (tmp_path / "ray.law").read_bytes() == strategy_threads


def test_a_threaded_round_in_progress_refuses_ray_and_bad_addresses_are_refused(tmp_path: Path) -> None:
    x, y, xv, yv, flip = _data()
    with LAWSearch(SPEC, _config(), seed=7) as s:
        with pytest.raises(InvalidArgumentError, match="ray"):
            s.search(x, y, xv, yv, 2, progress=False, ray="no address")
        s.search(x, y, xv, yv, 2, progress=False, callback=lambda log: True)
        with pytest.raises(StateError, match="on threads is in progress"):
            s.search(x, y, xv, yv, 2, progress=False, ray="127.0.0.1:1")
