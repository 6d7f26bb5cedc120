"""MLflow logging for :meth:`Trainer.fit <metaweight.Trainer.fit>`: :class:`MLflowCallback`.

::

    from metaweight.integrations.mlflow import MLflowCallback

    ml = MLflowCallback("mlruns", experiment="noisy-digits", run_name="gdw-s0", corrupted=noisy.corrupted)
    trainer.fit(x, y, epochs=40, meta=(x_meta, y_meta), x_val=x_test, y_val=y_test, callbacks=[ml])
    # MlflowClient(ml.tracking_uri).get_metric_history(ml.run_id, "val/accuracy")

Needs ``mlflow-skinny`` (``pip install metaweight[mlflow]``), which is enough for a local file store;
the full ``mlflow`` package (its UI, a SQLite store) works the same.

**The local file store.** MLflow 3 keeps its file store (``./mlruns``) in maintenance mode and refuses
it unless ``MLFLOW_ALLOW_FILE_STORE`` is true. Since a file store is what this callback is for
without a tracking server, constructing it for a file store sets ``MLFLOW_ALLOW_FILE_STORE=true``
in the process's environment when the variable is unset (an explicit value is respected; ``false``
then raises MLflow's own error at the first ``fit``). Reading the store back with ``MlflowClient``
in another process needs the same variable.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .._validate import as_path
from ..callbacks import FitConfig
from ..errors import InvalidArgumentError
from ._common import EpochLogger, curve_label, require

if TYPE_CHECKING:
    from ..trainer import EpochRecord, History, Trainer

__all__ = ["MLflowCallback", "local_store_uri", "prepare_experiment"]

PathLike = Union[str, "os.PathLike[str]"]

#: One experiment lookup-or-create at a time (the runner's parallel runs share an experiment).
_EXPERIMENT_LOCK = threading.Lock()
#: Bins of the per-epoch weight histogram artifact.
HISTOGRAM_BINS = 20


def local_store_uri(tracking_uri: PathLike | None) -> tuple[str, bool]:
    """The tracking URI to use, and whether it is a local file store.

    A URI with a scheme (``sqlite:///...``, ``http://...``, ``file:...``) is kept; a plain path
    becomes an absolute ``file://`` URI; None takes ``MLFLOW_TRACKING_URI``, else ``./mlruns``.

    Raises:
        InvalidArgumentError: an empty or malformed path.
    """
    if tracking_uri is None:
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
    text = as_path(tracking_uri, "tracking_uri")
    if text.startswith("file:"):
        return text, True
    if "://" in text or (":" in text.split("/", 1)[0] and len(text.split(":", 1)[0]) > 1):
        return text, False  # another scheme (sqlite:///, http://, databricks, ...)
    return Path(text).absolute().as_uri(), True


def prepare_experiment(tracking_uri: PathLike | None, experiment: str) -> str:
    """Opens the tracking store once and creates ``experiment`` in it if missing.

    The experiment runner calls this in the driver before it starts a grid's runs, so that
    parallel runs (``--jobs``, Ray workers) find a store that already exists instead of all
    creating a fresh file store's folder and default experiment at once.

    Args:
        tracking_uri: as :class:`MLflowCallback`'s.
        experiment: the experiment's name.

    Returns:
        The experiment's id.

    Raises:
        ImportError: mlflow is not installed.
        InvalidArgumentError: an empty or malformed path, an empty experiment name.
        mlflow.exceptions.MlflowException: the store cannot be opened or written.
    """
    if not isinstance(experiment, str) or not experiment.strip():
        raise InvalidArgumentError(f"experiment: expected a non-empty name, got {experiment!r}")
    uri, file_store = local_store_uri(tracking_uri)
    mlflow = require("mlflow", "prepare_experiment", "mlflow-skinny", "mlflow")
    if file_store:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    with _EXPERIMENT_LOCK:
        return _experiment_id(mlflow, uri, experiment)


def _experiment_id(mlflow: Any, uri: str, experiment: str) -> str:
    """The experiment's id in the store at ``uri``, created if missing (under the caller's lock).

    Another process may be doing the same at once (a grid's runs on Ray workers sharing a folder):
    a fresh local file store creates its folder and default experiment on first use, and the
    process that loses that race gets "... meta.yaml exists" (a plain Exception); so may one creating the experiment
    itself. Either way the store is there afterwards, and a second attempt with a new client reads
    it (at most ``_OPEN_ATTEMPTS`` attempts).
    """
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            client = mlflow.tracking.MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                return str(client.create_experiment(experiment))
            return str(exp.experiment_id)
        except Exception:  # MlflowException, or the file store's plain Exception("... exists")
            if attempt + 1 == _OPEN_ATTEMPTS:
                raise
            time.sleep(0.05 * (attempt + 1))  # let the other process finish writing
    raise AssertionError("unreachable")  # pragma: no cover


#: How many times :func:`_experiment_id` opens the store before giving up.
_OPEN_ATTEMPTS = 4


class MLflowCallback(EpochLogger):
    """Logs a ``fit`` run's per-epoch statistics to an MLflow run.

    Per epoch (the step is the epoch number, counted over the trainer's lifetime), one batch of
    metrics: ``train/loss``, ``train/accuracy``, ``val/loss``, ``val/accuracy`` (with validation
    data), ``lr``, ``meta/loss``, ``weights/mean``, ``weights/std``, ``weights/mean_clean`` and
    ``weights/mean_corrupted`` (given ``corrupted``), the step diagnostics and
    ``time/epoch_seconds`` (:data:`metaweight.integrations.METRIC_NAMES`), and for MW-Net/GDW
    ``weight_function/loss_<x>`` (V at each grid loss). Artifacts per epoch ``e`` (zero-padded to
    four digits):

    - ``weights/histogram_epoch_0001.json``: ``{"epoch", "edges", "counts"}`` over the epoch's
      finite example weights (20 equal bins from their minimum to their maximum), plus
      ``"counts_clean"`` and ``"counts_corrupted"`` on the same edges given ``corrupted``;
    - ``weight_function/epoch_0001.json`` (MW-Net/GDW): ``{"epoch", "losses", "weights"}``, V's curve.

    The run is created at the first ``fit`` with the trainer's settings as parameters (``method``,
    ``method_spec``, ``optimizer``, ``schedule``, ``seed``, ``batch_size``, ``epochs``, the data
    sizes) plus ``params``; it is marked ``FINISHED`` when ``fit`` returns, ``FAILED`` (``KILLED``
    on ``KeyboardInterrupt``) when it raises. A later ``fit`` with the same callback continues the
    same run (the steps continue too).

    Uses :class:`mlflow.MlflowClient` only (no global active run), so runs in several threads
    (the experiment runner's ``--jobs``) do not mix.

    Args:
        tracking_uri: where to log: a folder (a local file store; default ``./mlruns``, or
            ``MLFLOW_TRACKING_URI`` when set), a ``file:`` URI, or any URI MLflow takes
            (``sqlite:///mlflow.db`` with the full ``mlflow`` package, ``http://host:5000``).
        experiment: the MLflow experiment's name (created if missing).
        run_name: the run's name (MLflow picks one when None).
        tags: extra run tags.
        params: extra run parameters (values are written as text).
        corrupted: the training set's corrupted-label mask (booleans aligned with ``fit``'s ``x``).
        val_name: the name of ``fit``'s validation data in the metric keys (``"val"``).
        weights: log weight statistics and histograms (``fit`` then records the example weights).
        curve_losses: the losses at which V is evaluated (default 0, 1, ..., 10).

    Attributes:
        run_id: the MLflow run's id (None before the first ``fit``).
        tracking_uri: the resolved tracking URI.

    Raises:
        ImportError: mlflow (``mlflow-skinny`` or ``mlflow``) is not installed.
        InvalidArgumentError, ShapeError, DTypeError, NonFiniteError: a bad argument (named).
    """

    def __init__(
        self,
        tracking_uri: PathLike | None = None,
        *,
        experiment: str = "metaweight",
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        corrupted: Any = None,
        val_name: str = "val",
        weights: bool = True,
        curve_losses: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        super().__init__(corrupted=corrupted, val_name=val_name, weights=weights, curve_losses=curve_losses)
        if not isinstance(experiment, str) or not experiment.strip():
            raise InvalidArgumentError(f"experiment: expected a non-empty name, got {experiment!r}")
        if run_name is not None and not isinstance(run_name, str):
            raise InvalidArgumentError(f"run_name: expected a string or None, got {type(run_name).__name__}")
        self.tags = _text_mapping(tags, "tags")
        self.params = _text_mapping(params, "params")
        self.experiment = experiment
        self.run_name = run_name
        self.tracking_uri, file_store = local_store_uri(tracking_uri)
        self._mlflow = require("mlflow", "MLflowCallback", "mlflow-skinny", "mlflow")
        if file_store:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client: Any = None
        self.run_id: str | None = None

    def __repr__(self) -> str:
        return f"MLflowCallback({self.tracking_uri!r}, experiment={self.experiment!r}, run_id={self.run_id!r})"

    def on_fit_start(self, trainer: Trainer, config: FitConfig) -> None:
        """Checks the corrupted mask; creates the run (first ``fit``) or marks it running again."""
        super().on_fit_start(trainer, config)
        if self._client is not None and self.run_id is not None:
            self._client.update_run(self.run_id, status="RUNNING")
            return
        with _EXPERIMENT_LOCK:  # opens the store first: a fresh one may be being created elsewhere
            experiment_id = _experiment_id(self._mlflow, self.tracking_uri, self.experiment)
        client = self._client = self._mlflow.tracking.MlflowClient(tracking_uri=self.tracking_uri)
        run = client.create_run(experiment_id, run_name=self.run_name, tags=dict(self.tags))
        self.run_id = str(run.info.run_id)
        params = {
            "method": trainer.method.name,
            "method_spec": trainer.method.spec(),
            "optimizer": repr(trainer.optimizer),
            "schedule": repr(trainer.schedule),
            "seed": str(trainer.seed),
            "batch_size": str(config.batch_size),
            "epochs": str(config.epochs),
            "num_train": str(config.num_train),
            "num_val": str(config.num_val),
            "num_meta": str(config.num_meta),
            "num_classes": str(config.num_classes),
            **self.params,
        }
        Param = self._mlflow.entities.Param
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            client.log_batch(self.run_id, params=items[i : i + 100])

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        """Logs the epoch's metrics (one batch) and its histogram and curve artifacts."""
        client, run_id = self._client, self.run_id
        if client is None or run_id is None:  # used as a plain callback function, without on_fit_start
            return
        step = int(record.epoch)
        now = int(time.time() * 1000)
        values = self.scalars(record)
        curve = self.weight_curve(trainer)
        if curve is not None:
            for x, v in zip(self.curve_losses.tolist(), curve.tolist()):
                values[f"weight_function/loss_{curve_label(x)}"] = float(v)
        Metric = self._mlflow.entities.Metric
        client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])
        groups = self.weight_groups(record)
        if "all" in groups:
            lo, hi = float(groups["all"].min()), float(groups["all"].max())
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, HISTOGRAM_BINS + 1)
            hist: dict[str, Any] = {"epoch": step, "edges": edges.tolist()}
            for group, vals in groups.items():
                key = "counts" if group == "all" else f"counts_{group}"
                hist[key] = np.histogram(vals.astype(np.float64), bins=edges)[0].tolist()
            client.log_dict(run_id, hist, f"weights/histogram_epoch_{step:04d}.json")
        if curve is not None:
            client.log_dict(run_id, {"epoch": step, "losses": self.curve_losses.tolist(), "weights": curve.tolist()},
                            f"weight_function/epoch_{step:04d}.json")

    def on_fit_end(self, trainer: Trainer, history: History) -> None:
        """Marks the run ``FINISHED``."""
        self._terminate("FINISHED")

    def on_fit_error(self, trainer: Trainer, history: History, error: BaseException) -> None:
        """Marks the run ``KILLED`` (``KeyboardInterrupt``) or ``FAILED``, with the error as a tag."""
        if self._client is not None and self.run_id is not None:
            self._client.set_tag(self.run_id, "error", f"{type(error).__name__}: {error}"[:5000])
        self._terminate("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")

    def _terminate(self, status: str) -> None:
        if self._client is not None and self.run_id is not None:
            self._client.set_terminated(self.run_id, status=status)


def _text_mapping(value: Mapping[str, Any] | None, name: str) -> dict[str, str]:
    """A mapping of names to values as text (strings kept, others as JSON)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{name}: expected a mapping of names to values, got {type(value).__name__}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise InvalidArgumentError(f"{name}: expected non-empty string keys, got {k!r}")
        out[k] = v if isinstance(v, str) else json.dumps(v, default=str)
    return out
