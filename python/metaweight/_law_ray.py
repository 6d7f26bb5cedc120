"""LAW episodes on Ray (``LAWSearch.search(..., ray=...)``): each of a round's ``parallel`` episodes
runs as a Ray actor, on any node of the cluster, owning its target and reference networks; the
strategy model, the replay buffer and the full-data update (FDU) stay with the driver's native
search.

A stage goes exactly as in the threaded search (``mw_law_run_stage``), so that for the same seed
and ``parallel`` the strategy is bit-identical:

1. at a round's start the driver's search names the round (``law_remote_begin_round``); each
   actor makes its episode from its own native search (same configuration, network, seed and
   data: the episode's seeds derive from them) and measures it (``law_episode_begin``); the
   driver starts the round from their initial states, in slot order;
2. the driver draws the stage's actions (shared actor plus each episode's noise, kept by the
   driver) and sends each to its actor, which runs the stage (``law_episode_run_stage``) and
   returns the stage's outcome and a snapshot of its episode;
3. the driver appends the outcomes' transitions in slot order and runs the FDU
   (``law_remote_finish_stage``).

Each actor runs its episode single-threaded when ``parallel > 1`` (as the search's threads do).
The driver keeps the snapshot of every episode at its last finished stage: an actor that is lost
(its process or node dies) is replaced by a new actor, which restores the snapshot and runs the
lost stage again, so the search continues as if nothing had happened.

Imported only when a search is asked to run on Ray; nothing else in metaweight imports :mod:`ray`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from . import _core
from ._ray import import_ray, ray_address
from .errors import StateError

__all__ = ["RayEpisodes", "ray_address"]

#: Values of a stage outcome (``MW_LAW_OUTCOME_VALUES`` in ``metaweight.h``).
OUTCOME_VALUES = 12


def _import_ray() -> Any:
    return import_ray("LAW episodes on Ray")


class EpisodeWorker:
    """The body of one episode actor: a native search made like the driver's (configuration,
    network, input shape, seed, data) that only makes and runs episodes."""

    def __init__(
        self, spec: str, config_spec: str, shape: tuple[int, ...], seed: int, data: tuple[Any, ...], threads: int
    ) -> None:
        import metaweight as mw

        mw.set_threads(threads)
        x, y, mask, xv, yv = data
        self._search = _core.law_create(config_spec, spec, shape, seed)
        _core.law_set_data(self._search, x, y, mask, xv, yv)
        self._episode: int | None = None
        self._key: tuple[int, int] | None = None

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()

    def _make(self, round_: int, slot: int) -> int:
        if self._episode is not None:
            _core.law_episode_free(self._episode)
            self._episode = None
        self._episode = _core.law_episode_create(self._search, round_, slot)
        self._key = (round_, slot)
        return self._episode

    def begin(self, round_: int, slot: int) -> tuple[np.ndarray, bytes]:
        """Makes episode ``slot`` of round ``round_`` and measures it: (initial state, snapshot)."""
        e = self._make(round_, slot)
        out = np.zeros(3, dtype=np.float64)
        _core.law_episode_begin(e, out)
        return out, _core.law_episode_snapshot(e)

    def run_stage(
        self, round_: int, slot: int, stage: int, action: np.ndarray | None, snapshot: bytes | None
    ) -> tuple[np.ndarray, bytes]:
        """Runs ``stage`` of the episode (restored from ``snapshot`` first when given, or when this
        actor does not hold it): (outcome, snapshot after the stage)."""
        if snapshot is not None or self._key != (round_, slot):
            if snapshot is None:
                raise StateError(f"LAW actor: episode {slot} of round {round_} is not here and no snapshot was given")
            _core.law_episode_restore(self._make(round_, slot), snapshot)
        assert self._episode is not None
        out = np.zeros(OUTCOME_VALUES, dtype=np.float64)
        _core.law_episode_run_stage(self._episode, stage, action, out)
        return out, _core.law_episode_snapshot(self._episode)

    def log(
        self, round_: int, slot: int, example_weights: bool, snapshot: bytes | None
    ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray | None]:
        """The episode's (info, table, actions, example weights or None), restored from
        ``snapshot`` first when given."""
        if snapshot is not None:
            _core.law_episode_restore(self._make(round_, slot), snapshot)
        if self._episode is None or self._key != (round_, slot):
            raise StateError(f"LAW actor: episode {slot} of round {round_} is not here and no snapshot was given")
        info = tuple(int(v) for v in _core.law_episode_info(self._episode))
        return info, *self._arrays(example_weights, info[4])

    def _arrays(self, example_weights: bool, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        assert self._episode is not None
        stages, _, _, actions = (int(v) for v in _core.law_info(self._search)[:4])
        table = np.empty(stages * 11, dtype=np.float64)
        acts = np.empty(stages * actions, dtype=np.float32)
        weights = np.empty(stages * n, dtype=np.float32) if example_weights else None
        _core.law_episode_get_log(self._episode, table, acts, weights)
        return table, acts, weights


class RayEpisodes:
    """Runs a native search's stages with its episodes as Ray actors (see the module docstring).

    Args:
        handle: the driver's native search (with its data set).
        spec, config_spec, shape, seed: how the search was made (the actors make theirs alike).
        data: ``(x, y, corrupted mask or None, x_val, y_val)`` as given to ``law_set_data``.
        parallel: N_a.
        ray: the cluster (``True``/``"auto"`` or an address); a process already connected keeps
            its connection.
        actor_options: Ray options of each actor (default ``{"num_cpus": 1}`` when N_a > 1).
        max_restarts: how many times one stage may replace a lost actor before giving up.

    Raises:
        ImportError: ray is not installed.
        ConnectionError: no cluster at the address.
    """

    def __init__(
        self,
        handle: int,
        spec: str,
        config_spec: str,
        shape: tuple[int, ...],
        seed: int,
        data: tuple[Any, ...],
        parallel: int,
        ray: Any,
        actor_options: dict[str, Any] | None = None,
        max_restarts: int = 3,
    ) -> None:
        import metaweight as mw

        address = ray_address(ray)
        self.ray = _import_ray()
        self._connected = False
        if not self.ray.is_initialized():
            try:
                self.ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConnectionError(f"ray: cannot connect to a Ray cluster at {address!r}: {e}") from e
            self._connected = True
        self.handle = handle
        self.parallel = parallel
        self.max_restarts = max_restarts
        threads = 1 if parallel > 1 else mw.get_threads()
        opts = dict(actor_options) if actor_options else {"num_cpus": 1 if parallel > 1 else threads}
        self._actor_cls = self.ray.remote(**opts)(EpisodeWorker)
        self._args = (spec, config_spec, tuple(shape), seed, self.ray.put(data), threads)
        self.actors: list[Any] = [self._new_actor() for _ in range(parallel)]
        self.restarts = 0  # lost actors replaced so far
        self._round: int | None = None  # the remote round in progress
        self._snapshots: list[bytes | None] = [None] * parallel
        self._synced = [False] * parallel
        self._last_round = 0  # the round of the last stage run (whose episodes the actors hold)

    @property
    def round_open(self) -> bool:
        """Whether a round is in progress (begun, not finished nor abandoned)."""
        return self._round is not None

    def _new_actor(self) -> Any:
        return self._actor_cls.remote(*self._args)

    def close(self) -> None:
        """Ends the actors and disconnects, if this object connected."""
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - an actor already gone
                pass
        self.actors = []
        if self._connected:
            self._connected = False
            self.ray.shutdown()

    def pids(self) -> list[int]:
        """The actors' process ids, in slot order."""
        return [int(p) for p in self.ray.get([a.pid.remote() for a in self.actors])]

    def interrupted(self) -> None:
        """After a stage was abandoned half-way (Ctrl-C): the actors may have run ahead, so each
        restores its episode from the driver's snapshot at the next stage."""
        self._synced = [False] * self.parallel

    def _gather(self, submit: Any) -> list[Any]:
        """``submit(slot, actor)`` for every slot, then the results in slot order; a lost actor is
        replaced (and ``submit`` called again for its slot, now unsynced) up to ``max_restarts``
        times per call."""
        refs = [submit(i, a) for i, a in enumerate(self.actors)]
        out: list[Any] = [None] * self.parallel
        lost = 0
        for i in range(self.parallel):
            while True:
                try:
                    out[i] = self.ray.get(refs[i])
                    break
                except (self.ray.exceptions.RayActorError, self.ray.exceptions.WorkerCrashedError) as e:
                    lost += 1
                    if lost > self.max_restarts:
                        raise RuntimeError(
                            f"LAW on Ray: episode actor of slot {i} lost {lost} times in one stage: {e}"
                        ) from e
                    try:
                        self.ray.kill(self.actors[i])
                    except Exception:  # noqa: BLE001 - gone already
                        pass
                    self.actors[i] = self._new_actor()
                    self.restarts += 1
                    self._synced[i] = False
                    refs[i] = submit(i, self.actors[i])
        return out

    def run_stage(self) -> dict[str, Any]:
        """One stage of every episode of the round (a new round when none is in progress), then the
        FDU; returns the stage log (as ``_core.law_run_stage``)."""
        t0 = time.perf_counter()
        h = self.handle
        na = self.parallel
        if self._round is None:
            idx = np.zeros(na, dtype=np.int64)
            _core.law_remote_begin_round(h, idx)
            rnd = int(idx[0]) // na
            got = self._gather(lambda i, a: a.begin.remote(rnd, i))
            _core.law_remote_start_round(h, np.ascontiguousarray(np.stack([g[0] for g in got]).ravel()))
            self._snapshots = [g[1] for g in got]
            self._synced = [True] * na
            self._round = rnd
        rnd = self._round
        stage = int(_core.law_info(h)[5])
        action_dim = int(_core.law_info(h)[3])
        acts = np.zeros(na * action_dim, dtype=np.float32)
        mask = np.zeros(na, dtype=np.uint8)
        _core.law_remote_actions(h, acts, mask)
        rows = acts.reshape(na, action_dim)
        snaps = self._snapshots

        def submit(i: int, a: Any) -> Any:
            action = np.ascontiguousarray(rows[i]) if mask[i] else None
            return a.run_stage.remote(rnd, i, stage, action, None if self._synced[i] else snaps[i])

        try:
            got = self._gather(submit)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                self.interrupted()  # the stage stays in progress: the next call runs it again
            else:
                # A diverged episode (or actors lost too often): the round is abandoned, as in
                # the threaded search (its transitions already in the buffer stay).
                _core.law_remote_abandon_round(h)
                self._round = None
            raise
        outcomes = np.ascontiguousarray(np.stack([g[0] for g in got]).ravel())
        log: dict[str, Any] = _core.law_remote_finish_stage(h, outcomes, time.perf_counter() - t0)
        self._snapshots = [g[1] for g in got]
        self._synced = [True] * na
        self._last_round = rnd
        if log["round_done"]:
            self._round = None
        log["seconds"] = time.perf_counter() - t0
        return log

    def episode_logs(self, example_weights: bool) -> list[tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray | None]]:
        """The logs of the round's episodes (the current or just completed round), in slot order."""
        rnd = self._last_round
        snaps = self._snapshots
        return list(
            self._gather(lambda i, a: a.log.remote(rnd, i, example_weights, None if self._synced[i] else snaps[i]))
        )
