"""The logging callbacks the experiment runner attaches to a run (its ``[logging]`` table).

::

    [logging]
    tensorboard = "runs"            # each run: runs/<experiment>/<run-id>/ (event files)
    mlflow = "mlruns"               # a folder (a local file store) or a tracking URI
    mlflow_experiment = "digits"    # default: the experiment's results folder name

Each run's TensorBoard folder and MLflow run are named by its run id; MLflow gets the run's
settings as parameters (dotted keys such as ``method.lr``) and its labels as tags. The runner's
validation data is the test set, so the metrics are ``test/loss`` and ``test/accuracy`` (LAW's
final training validates on the meta set: ``meta_set/...``). Finished runs are skipped as before
and log nothing; the packages are imported only by runs that log.
"""

from __future__ import annotations

from typing import Any

from .config import RunSpec
from .datasets import Prepared

__all__ = ["callbacks_for"]


def callbacks_for(spec: RunSpec, prepared: Prepared, *, val_name: str = "test") -> list[Any]:
    """The TensorBoard and MLflow callbacks of one run (none without ``[logging]``).

    Args:
        spec: the run (its :attr:`RunSpec.logging` says where to log).
        prepared: its data (the corrupted mask, when the condition corrupted labels).
        val_name: the name of the run's validation data in the metric names.

    Returns:
        The callbacks for :meth:`Trainer.fit <metaweight.Trainer.fit>`.

    Raises:
        ImportError: tensorboardX or mlflow is not installed (the message names the extra).
    """
    where = spec.logging
    corrupted = prepared.corrupted if bool(prepared.corrupted.any()) else None
    weights = bool(spec.config.get("record_weights", True))  # record_weights = false: no weight logs
    out: list[Any] = []
    if where.get("tensorboard"):
        from ..integrations.tensorboard import TensorBoardCallback

        out.append(TensorBoardCallback(
            where["tensorboard"], corrupted=corrupted, val_name=val_name, weights=weights))
    if where.get("mlflow"):
        from ..integrations._common import flatten
        from ..integrations.mlflow import MLflowCallback

        tags = {"run_id": spec.run_id, **{f"label.{k}": v for k, v in spec.labels.items()}}
        out.append(MLflowCallback(
            where["mlflow"], experiment=where.get("mlflow_experiment") or "metaweight", run_name=spec.run_id,
            tags=tags, params=flatten(spec.config), corrupted=corrupted, val_name=val_name, weights=weights))
    return out
