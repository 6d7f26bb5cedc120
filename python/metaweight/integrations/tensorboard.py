"""TensorBoard logging for :meth:`Trainer.fit <metaweight.Trainer.fit>`: :class:`TensorBoardCallback`.

::

    from metaweight.integrations.tensorboard import TensorBoardCallback

    tb = TensorBoardCallback("runs/gdw", corrupted=noisy.corrupted)
    trainer.fit(x, y, epochs=40, meta=(x_meta, y_meta), x_val=x_test, y_val=y_test, callbacks=[tb])
    # tensorboard --logdir runs

The event files are written with ``tensorboardX`` (``pip install metaweight[tensorboard]``): a
pure-Python writer that needs only ``protobuf`` and ``numpy``, where TensorBoard's own package
brings a web server (grpcio, werkzeug, markdown, its data server) that writing files does not need.
Viewing them takes the ``tensorboard`` package; any TensorBoard reads them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .._validate import as_bool, as_int, as_path
from ..callbacks import FitConfig
from ._common import EpochLogger, curve_label, require

if TYPE_CHECKING:
    from ..trainer import EpochRecord, History, Trainer

__all__ = ["TensorBoardCallback"]

PathLike = Union[str, "os.PathLike[str]"]

#: Distinguishes event files opened in the same second by one process (their names carry seconds).
_FILE_NUMBER = itertools.count(1)


class TensorBoardCallback(EpochLogger):
    """Writes a ``fit`` run's per-epoch statistics to TensorBoard event files in ``logdir``.

    Per epoch (the step is the epoch number, counted over the trainer's lifetime):

    - scalars: ``train/loss``, ``train/accuracy``, ``val/loss``, ``val/accuracy`` (with validation
      data), ``lr``, ``meta/loss``, ``weights/mean``, ``weights/std``, ``weights/mean_clean`` and
      ``weights/mean_corrupted`` (given ``corrupted``), the step diagnostics
      ``diagnostics/weight_ess`` ... and ``time/epoch_seconds``
      (:data:`metaweight.integrations.METRIC_NAMES`);
    - histograms of the example weights: ``weights/example``, and given ``corrupted``
      ``weights/example_clean`` and ``weights/example_corrupted`` (one count per training example
      visited in the epoch);
    - MW-Net and GDW: the learned loss → weight curve V at ``curve_losses``, as one scalar series
      per grid loss, ``weight_function/loss_<x>`` (how V(x) moves over the epochs), a text table
      ``weight_function/table`` (loss | V(loss)) and, with ``figure=True``, a plot
      ``weight_function/curve`` (needs matplotlib).

    ``fit``'s settings are written once per ``fit`` call as the text ``run/config`` (tensorboardX
    stores text under ``<tag>/text_summary``). The events
    are flushed after every epoch; the file is closed when ``fit`` returns or raises, and a later
    ``fit`` call with the same callback appends a new event file to ``logdir`` (TensorBoard shows
    them as one run, the steps continuing).

    Args:
        logdir: the run's folder (created if missing); give each run its own folder.
        corrupted: the training set's corrupted-label mask (booleans aligned with ``fit``'s
            ``x``), e.g. ``conditions.uniform_noise(...).corrupted``; None if unknown.
        val_name: the name of ``fit``'s validation data in the tags (``"val"``).
        weights: log weight statistics and histograms (``fit`` then records the example
            weights, as ``record_weights=True``).
        curve_losses: the losses at which V is evaluated (default 0, 1, ..., 10).
        figure: also plot the curve as an image per epoch (needs matplotlib).
        flush_secs: the writer's background flush interval (it also flushes every epoch).

    Raises:
        ImportError: tensorboardX (or, with ``figure=True``, matplotlib) is not installed.
        InvalidArgumentError, ShapeError, DTypeError, NonFiniteError: a bad argument (named).
    """

    def __init__(
        self,
        logdir: PathLike,
        *,
        corrupted: Any = None,
        val_name: str = "val",
        weights: bool = True,
        curve_losses: Sequence[float] | np.ndarray | None = None,
        figure: bool = False,
        flush_secs: int = 120,
    ) -> None:
        super().__init__(corrupted=corrupted, val_name=val_name, weights=weights, curve_losses=curve_losses)
        self.logdir = as_path(logdir, "logdir")
        self.figure = as_bool(figure, "figure")
        self.flush_secs = as_int(flush_secs, "flush_secs", minimum=1)
        self._tbx = require("tensorboardX", "TensorBoardCallback", "tensorboardX", "tensorboard")
        if self.figure:
            require("matplotlib", "TensorBoardCallback(figure=True)", "matplotlib", "plots")
        self._writer: Any = None

    def __repr__(self) -> str:
        return f"TensorBoardCallback({self.logdir!r})"

    def __enter__(self) -> TensorBoardCallback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_fit_start(self, trainer: Trainer, config: FitConfig) -> None:
        """Checks the corrupted mask, opens an event file and writes the run's settings."""
        super().on_fit_start(trainer, config)
        if self._writer is None:
            self._writer = self._tbx.SummaryWriter(
                logdir=self.logdir, flush_secs=self.flush_secs,
                filename_suffix=f".{os.getpid()}.{next(_FILE_NUMBER)}")
        lines = [f"- trainer: `{trainer!r}`", f"- method: `{trainer.method.spec()}`"]
        lines += [f"- {k}: {v}" for k, v in vars(config).items()]
        self._writer.add_text("run/config", "\n".join(lines), config.first_epoch - 1)
        self._writer.flush()

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        """Writes the epoch's scalars, weight histograms and V's curve, then flushes."""
        w = self._writer
        if w is None:  # used as a plain callback function, without on_fit_start
            return
        step = int(record.epoch)
        for tag, value in self.scalars(record).items():
            w.add_scalar(tag, value, step)
        for group, values in self.weight_groups(record).items():
            tag = "weights/example" if group == "all" else f"weights/example_{group}"
            w.add_histogram(tag, values.astype(np.float64), step)
        curve = self.weight_curve(trainer)
        if curve is not None:
            for x, v in zip(self.curve_losses.tolist(), curve.tolist()):
                w.add_scalar(f"weight_function/loss_{curve_label(x)}", v, step)
            rows = "\n".join(f"| {curve_label(x)} | {v:.6g} |" for x, v in zip(self.curve_losses.tolist(), curve.tolist()))
            w.add_text("weight_function/table", f"| loss | V(loss) |\n|---|---|\n{rows}", step)
            if self.figure:
                w.add_image("weight_function/curve", _curve_image(self.curve_losses, curve, step), step,
                            dataformats="HWC")
        w.flush()

    def on_fit_end(self, trainer: Trainer, history: History) -> None:
        """Closes the event file."""
        self.close()

    def close(self) -> None:
        """Flushes and closes the event file (a later ``fit`` opens a new one)."""
        w, self._writer = self._writer, None
        if w is not None:
            w.close()


def _curve_image(losses: np.ndarray, weights: np.ndarray, epoch: int) -> np.ndarray:
    """V's curve drawn with matplotlib's Agg canvas (no pyplot state): an (H, W, 3) uint8 image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3), dpi=80)
    canvas: Any = FigureCanvasAgg(fig)  # matplotlib leaves draw() untyped
    ax = fig.add_subplot()
    ax.plot(losses, weights, marker="o", markersize=3)
    ax.set_xlabel("loss")
    ax.set_ylabel("V(loss)")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(f"learned loss → weight, epoch {epoch}")
    fig.tight_layout()
    canvas.draw()
    image: np.ndarray = np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
    return image
