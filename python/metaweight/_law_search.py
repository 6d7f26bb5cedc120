"""The LAW search: :class:`LAWSearch` (rounds of parallel episodes sharing one strategy model, on
threads or as Ray actors), its checkpoints and progress display."""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import _core
from ._handle import NativeHandle, refuses_reentry
from ._law_common import LOG_COLUMNS, PathLike, as_mask, config_class, model_spec
from ._law_logs import EpisodeLog, SearchResult, StageLog
from ._law_strategy import Strategy
from ._validate import as_bool, as_features, as_int, as_labels, as_path, as_shape
from .errors import ClosedError, InvalidArgumentError, StateError
from .trainer import _tqdm

if TYPE_CHECKING:
    from .law import LAWConfig


class LAWSearch(NativeHandle):
    """A LAW search: rounds of ``config.parallel`` episodes sharing one strategy model.

    Args:
        model: the classifier searched with: a spec string in the core's spec language (e.g.
            ``"mlp(hidden=100, classes=10)"``; the input shape comes from the data, or pass
            ``input_shape``) or a :class:`~metaweight.Network` (only its architecture is used;
            every episode initialises its own networks).
        config: :class:`LAWConfig` (default: its defaults).
        seed: seed of everything (strategy model, episodes' initialisations, batches, noise).
        input_shape: per-example input shape, to create the native search before :meth:`search`.

    Raises:
        InvalidArgumentError: a bad spec, configuration or seed.
    """

    _noun = "search"
    _copy_advice = "use save() and load() (checkpoints)"

    def __init__(
        self, model: Any, config: LAWConfig | None = None, seed: int = 0, *, input_shape: Any = None
    ) -> None:
        spec, shape = model_spec(model)
        cfg_cls = config_class()
        if config is None:
            config = cfg_cls()
        if not isinstance(config, cfg_cls):
            raise InvalidArgumentError(f"config: expected a LAWConfig, got {type(config).__name__}")
        self._spec = spec
        self._config = config
        self._seed = as_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        self._shape: tuple[int, ...] | None = None
        self._closed = False
        self._data_key: tuple[Any, ...] | None = None
        self._classes = 0
        self._action_dim = 0
        self._ray: Any = None  # RayEpisodes while searching on Ray (metaweight._law_ray)
        if input_shape is not None:
            shape = as_shape(input_shape, "input_shape")
        if shape is not None:
            self._create(tuple(shape))

    def _create(self, shape: tuple[int, ...]) -> None:
        self._handle = _core.law_create(self._config.spec(), self._spec, shape, self._seed)
        self._shape = shape
        info = _core.law_info(self._handle)
        self._classes = int(info[2])
        self._action_dim = int(info[3])

    def _use(self, what: str) -> int:
        if self._closed:
            raise ClosedError(f"{what}: the search was closed")
        if self._handle is None:
            raise StateError(f"{what}: the search has no data yet; call search() (or pass input_shape)")
        return self._handle

    def _free(self, handle: int) -> None:
        self._close_ray()
        _core.law_free(handle)

    # -- episodes on Ray

    def _ray_round_open(self) -> bool:
        """Whether a round of episodes on Ray is in progress."""
        return self._ray is not None and self._ray.round_open

    def _close_ray(self) -> None:
        if self._ray is not None:
            ray, self._ray = self._ray, None
            ray.close()

    # -- description

    @property
    def config(self) -> LAWConfig:
        """The settings."""
        return self._config

    @property
    def spec(self) -> str:
        """The classifier's spec."""
        return self._spec

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Per-example input shape (None before the first :meth:`search`)."""
        return self._shape

    @property
    def rounds_completed(self) -> int:
        """Episode rounds run to the end."""
        return int(_core.law_info(self._use("rounds_completed"))[4])

    @property
    def buffer_size(self) -> int:
        """Transitions in the replay buffer."""
        return int(_core.law_info(self._use("buffer_size"))[6])

    def __repr__(self) -> str:
        return f"LAWSearch({self._spec!r}, stages={self._config.stages}, parallel={self._config.parallel}, seed={self._seed})"

    # -- strategies

    def strategy(self) -> Strategy:
        """A snapshot of the current strategy."""
        return Strategy(_core.law_strategy(self._use("strategy")))

    def save_strategy(self, path: PathLike) -> None:
        """Saves the current strategy (atomic, checksummed).

        Raises:
            CheckpointError: the file cannot be written.
        """
        _core.law_save_strategy(self._use("save_strategy"), as_path(path))

    def load_strategy(self, path: PathLike) -> None:
        """Starts the actor (and target actor) from a saved strategy with the same sizes.

        Raises:
            CheckpointError: unreadable or corrupt file.
            InvalidArgumentError: its sizes differ from this search's.
        """
        _core.law_load_strategy(self._use("load_strategy"), as_path(path))

    # -- search checkpoints

    def save(self, path: PathLike) -> None:
        """Saves the whole search state so that a resumed search is bit-identical to one never stopped.

        The file (atomic, versioned, checksummed) holds the strategy model (actor, stage embedding,
        critic, their target copies and Adam states), the replay buffer, the random generators, the
        round and stage counters and, in the middle of a round (also after an interrupted stage),
        every episode's classifiers, optimizers, generators, noise, logs and progress. The data is
        not saved: pass the same arrays to :meth:`search` after :meth:`load`.

        Raises:
            StateError: the search has no native state yet (no data and no ``input_shape``).
            CheckpointError: the file cannot be written.
        """
        _core.law_save(self._use("save"), as_path(path))

    def load(self, path: PathLike) -> None:
        """Restores a state written by :meth:`save` into this search.

        The search must have the same model spec, input shape, configuration and seed (pass
        ``input_shape`` when creating it). A round in progress continues at the next :meth:`search`
        with the same data (with different data it is abandoned, as when the data changes).

        Raises:
            CheckpointError: missing, truncated, corrupt, wrong-version or mismatching file (the
                message names which); the search is then unchanged.
            StateError: the search has no native state yet (pass ``input_shape``).
        """
        _core.law_load(self._use("load"), as_path(path))
        self._close_ray()  # the restored state is the driver's; episodes on Ray start afresh
        self._data_key = None  # the next search() hands the data over again

    def _run_stage(self, h: int) -> tuple[dict[str, Any] | None, bool]:
        """Runs one native stage; returns (its log or None, whether Ctrl-C interrupted it).

        On the main thread the stage runs in a worker thread, so that a KeyboardInterrupt reaches
        this thread at once; it then asks the core to stop every episode before its next optimizer
        step (the stage keeps its progress: the next call continues it bit-identically).
        """
        if threading.current_thread() is not threading.main_thread():
            return _core.law_run_stage(h), False  # signals are delivered to the main thread only
        _core.law_cancel(h, False)
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["log"] = _core.law_run_stage(h)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                box["err"] = err
            finally:
                done.set()

        worker = threading.Thread(target=work, name="metaweight-law-stage", daemon=True)
        interrupted = False
        try:
            worker.start()
            while not done.wait(0.05):
                pass
        except KeyboardInterrupt:
            interrupted = True
        if interrupted:
            _core.law_cancel(h, True)
            idle = 0
            while not done.is_set():
                with contextlib.suppress(KeyboardInterrupt):
                    if not done.wait(0.05) and worker.ident is None and not worker.is_alive():
                        idle += 1  # Ctrl-C came inside start(), maybe before the thread was spawned
                        if idle > 40:
                            return None, True
        err = box.get("err")
        if isinstance(err, KeyboardInterrupt):  # the core stopped the stage (MW_E_INTERRUPTED)
            return None, True
        if err is not None:
            raise err
        return box.get("log"), interrupted

    # -- searching

    def _episode_logs(self, h: int, example_weights: bool, n: int, on_ray: bool = False) -> list[EpisodeLog]:
        cfg = self._config
        out = []
        cols = len(LOG_COLUMNS)
        remote = self._ray.episode_logs(example_weights) if on_ray and self._ray is not None else None
        for slot in range(cfg.parallel):
            ew: np.ndarray | None = None
            if remote is not None:
                info, table, actions, ew = remote[slot]
                ep, rd, done = info[0], info[1], info[3]
            else:
                table = np.empty(cfg.stages * cols, dtype=np.float64)
                try:
                    ep, rd, done = _core.law_episode_log(h, slot, table)
                except StateError:
                    return []
                actions = np.empty(cfg.stages * self._action_dim, dtype=np.float32)
                _core.law_episode_actions(h, slot, actions)
                if example_weights:
                    ew = np.empty(cfg.stages * n, dtype=np.float32)
                    _core.law_episode_weights(h, slot, ew)
            table = table.reshape(cfg.stages, cols)
            if ew is not None:
                ew = ew.reshape(cfg.stages, n)
            cols_d = {name: table[:, i].copy() for i, name in enumerate(LOG_COLUMNS)}
            out.append(
                EpisodeLog(
                    episode=int(ep),
                    round=int(rd),
                    slot=slot,
                    stages=cfg.stages,
                    warmup_stages=cfg.warmup_stages,
                    stages_done=int(done),
                    actions=actions.reshape(cfg.stages, self._action_dim),
                    example_weights=ew,
                    **cols_d,
                )
            )
        return out

    @refuses_reentry("search")
    def search(
        self,
        x: Any,
        y: Any,
        x_val: Any,
        y_val: Any,
        episodes: int,
        *,
        corrupted: Any = None,
        progress: bool = True,
        callback: Callable[[StageLog], Any] | None = None,
        example_weights: bool = True,
        ray: Any = None,
        ray_options: dict[str, Any] | None = None,
    ) -> SearchResult:
        """Runs ``episodes`` more episodes (rounded up to a multiple of ``config.parallel``).

        Each native call runs one stage of the round's parallel episodes plus the FDU with the GIL
        released; between calls the progress display is updated, ``callback(stage_log)`` is called
        (returning True stops the search), and Ctrl-C is honoured: a KeyboardInterrupt (from the
        keyboard or raised by the callback) stops the search cleanly and the result is returned
        with ``interrupted=True`` (the unfinished round's episodes are logged as incomplete). Ctrl-C
        during a stage stops every episode before its next optimizer step (the stage runs in a
        worker thread; the core polls a cancellation flag) and keeps the stage's progress. Calling
        :meth:`search` again with the same arrays (or :meth:`save`, then :meth:`load` in a new
        process) continues where it stopped, bit-identically to an uninterrupted search.

        Args:
            x, y: training data (``y`` may be noisy).
            x_val, y_val: clean validation data for the DNR reward and the state.
            episodes: episodes to run (>= 1).
            corrupted: optional boolean mask of the known-corrupted training examples; only used in
                the logs (mean weight of corrupted vs clean examples), never for training.
            progress: a tqdm bar over stages when tqdm is installed, else one printed line per stage.
            callback: called after every stage with its :class:`StageLog`.
            example_weights: record every example's mean weight per stage in the episode logs
                (``stages × N`` floats per episode).
            ray: run the episodes as Ray actors (``metaweight._law_ray``): ``True`` or ``"auto"``
                (the cluster this machine belongs to, or the one this process is connected to) or
                an address ``"HOST:PORT"``. The strategy model, buffer and FDU stay here; for the
                same seed and ``parallel`` the result is bit-identical to the threaded search. A
                lost actor is replaced and its episode restarts from the last finished stage. A
                round started on threads must be finished on threads (and vice versa), and a
                Ray round in progress cannot be saved (save between rounds).
            ray_options: Ray options of each episode actor (default ``{"num_cpus": 1}``).

        Returns:
            A :class:`SearchResult`.

        Raises:
            ShapeError, DTypeError, LabelError, NonFiniteError, InvalidArgumentError: bad data or
                settings (e.g. a run with fewer optimizer steps than stages).
            NonFiniteError: a classifier diverged (the round is abandoned).
            StateError: ``ray`` given while a threaded round is in progress, or not given while a
                Ray round is.
            ImportError, ConnectionError: ``ray`` given but Ray is not installed or no cluster.
        """
        t0 = time.perf_counter()
        episodes = as_int(episodes, "episodes", minimum=1, maximum=2**31)
        progress = as_bool(progress, "progress")
        example_weights = as_bool(example_weights, "example_weights")
        if callback is not None and not callable(callback):
            raise InvalidArgumentError(f"callback: expected a callable, got {type(callback).__name__}")
        if self._closed:
            raise ClosedError("search: the search was closed")
        xa = as_features(x, "x", self._shape)
        if self._handle is None:
            self._create(tuple(int(d) for d in xa.shape[1:]))
        h = self._use("search")
        ya = as_labels(y, "y", self._classes, n=len(xa))
        xv = as_features(x_val, "x_val", self._shape)
        yv = as_labels(y_val, "y_val", self._classes, n=len(xv), x_name="x_val")
        mask = as_mask(corrupted, len(xa))
        key = (xa.shape, xv.shape, _digest(xa, ya, xv, yv, mask))
        if key != self._data_key:
            _core.law_set_data(h, xa, ya, mask, xv, yv)
            self._data_key = key
            self._close_ray()  # a round on other data was abandoned by the core
        cfg = self._config
        remote = self._ray_round_open()
        if ray is None and remote:
            raise StateError("search: a round of episodes on Ray is in progress; pass ray=... to finish it")
        if ray is not None:
            if not remote and int(_core.law_info(h)[5]) != 0:
                raise StateError(
                    "search: a round of episodes on threads is in progress; finish it without ray=... first"
                )
            if self._ray is None:
                from ._law_ray import RayEpisodes

                assert self._shape is not None
                self._ray = RayEpisodes(
                    h, self._spec, cfg.spec(), self._shape, self._seed, (xa, ya, mask, xv, yv), cfg.parallel,
                    ray, actor_options=ray_options,
                )
        na, stages = cfg.parallel, cfg.stages
        info = _core.law_info(h)
        next_stage = int(info[5])
        rounds = math.ceil(episodes / na)
        total_stages = rounds * stages - next_stage if next_stage else rounds * stages
        bar_cls = _tqdm() if progress else None
        bar = bar_cls(total=total_stages, desc="LAW", unit="stage") if bar_cls else None
        logs: list[StageLog] = []
        eps: list[EpisodeLog] = []
        interrupted = False
        done_stages = 0
        try:
            while done_stages < total_stages:
                try:
                    if self._ray is not None and ray is not None:
                        d, stopped = self._ray.run_stage(), False
                    else:
                        d, stopped = self._run_stage(h)
                    if d is None:  # interrupted inside the stage (its progress is kept)
                        interrupted = True
                        break
                    log = StageLog(**d)
                    logs.append(log)
                    done_stages += 1
                    if log.round_done:
                        eps.extend(self._episode_logs(h, example_weights, len(xa), ray is not None))
                    if bar is not None:
                        first = log.round * na
                        bar.set_description(
                            f"LAW episodes {first}-{first + na - 1}" if na > 1 else f"LAW episode {first}",
                            refresh=False,
                        )
                        bar.set_postfix(
                            stage=f"{log.stage + 1}/{stages}",
                            reward=f"{log.reward:+.3f}",
                            acc=f"{log.target_acc:.3f}/{log.reference_acc:.3f}",
                            refresh=False,
                        )
                        bar.update(1)
                    elif progress:
                        print(_stage_line(log, na, stages), flush=True)
                    if stopped or (callback is not None and callback(log) is True):
                        interrupted = True
                        break
                except KeyboardInterrupt:
                    interrupted = True
                    break
        finally:
            if bar is not None:
                bar.close()
        if interrupted:
            info = _core.law_info(h)
            if int(info[5]) != 0:  # an unfinished round: log its episodes as they are
                eps.extend(self._episode_logs(h, example_weights, len(xa), ray is not None))
        return SearchResult(
            strategy=self.strategy(),
            episodes=eps,
            stages=logs,
            interrupted=interrupted,
            seconds=time.perf_counter() - t0,
        )


def _digest(*arrays: np.ndarray | None) -> str:
    """A fingerprint of the data (shapes, dtypes and every byte), to notice new arrays."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        h.update(repr((a.shape, str(a.dtype))).encode())
        # numpy's stubs declare the buffer protocol (__buffer__) only for Python >= 3.12.
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))  # type: ignore[arg-type,unused-ignore]
    return h.hexdigest()


def _stage_line(log: StageLog, na: int, stages: int) -> str:
    first = log.round * na
    eps = f"episodes {first}-{first + na - 1}" if na > 1 else f"episode {first}"
    s = (
        f"LAW {eps} stage {log.stage + 1}/{stages}: reward {log.reward:+.4f}  "
        f"acc target {log.target_acc:.4f} reference {log.reference_acc:.4f}"
    )
    if not math.isnan(log.weight_corrupted):
        s += f"  K corrupted {log.weight_corrupted:.3f} clean {log.weight_clean:.3f}"
    if log.warmup:
        s += "  (warm-up)"
    else:
        s += f"  buffer {log.buffer_size}  critic {log.critic_loss:.4f}"
    return s + f"  {log.seconds:.2f}s"
