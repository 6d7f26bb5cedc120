"""Logging integrations: ready-made :class:`~metaweight.callbacks.Callback` objects for
:meth:`Trainer.fit <metaweight.Trainer.fit>` and the experiment runner.

- :class:`metaweight.integrations.tensorboard.TensorBoardCallback` writes TensorBoard event files
  (through ``tensorboardX``; ``pip install metaweight[tensorboard]``);
- :class:`metaweight.integrations.mlflow.MLflowCallback` logs to an MLflow tracking store, by
  default a local file store (``pip install metaweight[mlflow]``).

Both log, per epoch (the epoch number is the step): the training loss and accuracy, the
validation loss and accuracy (when ``fit`` has validation data), the learning rate, the meta loss,
the mean and standard deviation of the example weights, the mean weight of clean and of corrupted
examples (when the callback is given the ``corrupted`` mask), the step diagnostics' epoch means, a
histogram of the example weights and, for MW-Net and GDW, the learned loss → weight curve V
evaluated on a grid of losses. The names are in :data:`METRIC_NAMES`.

Neither package is imported by ``import metaweight``, nor by importing these modules: only
constructing a callback imports its package, and raises ``ImportError`` naming the extra to
install when it is missing.
"""

from __future__ import annotations

__all__ = ["METRIC_NAMES"]

#: The per-epoch scalar names both callbacks log (TensorBoard tags, MLflow metric keys), and their
#: sources; ``{val}`` is the callback's ``val_name`` (``"val"``; the experiment runner: ``"test"``).
#: The loss → weight curve adds ``weight_function/loss_<x>`` for every grid loss x.
METRIC_NAMES: dict[str, str] = {
    "train/loss": "EpochRecord.train_loss",
    "train/accuracy": "EpochRecord.train_accuracy",
    "{val}/loss": "EpochRecord.val_loss (with validation data)",
    "{val}/accuracy": "EpochRecord.val_accuracy (with validation data)",
    "lr": "EpochRecord.lr",
    "meta/loss": "EpochRecord.meta_loss (meta-weighting methods)",
    "weights/mean": "mean of EpochRecord.example_weights (finite entries)",
    "weights/std": "their standard deviation (population)",
    "weights/mean_clean": "mean weight of the examples not marked corrupted",
    "weights/mean_corrupted": "mean weight of the examples marked corrupted",
    "diagnostics/weight_ess": "EpochRecord.weight_ess",
    "diagnostics/saturated_low": "EpochRecord.saturated_low",
    "diagnostics/saturated_high": "EpochRecord.saturated_high",
    "diagnostics/prediction_majority": "EpochRecord.prediction_majority",
    "diagnostics/weight_loss_correlation": "EpochRecord.weight_loss_correlation",
    "time/epoch_seconds": "EpochRecord.time",
}
