"""Per-step diagnostics and the warnings that stop a run from collapsing or inverting silently.

Every step reports cheap statistics the native core computes from numbers the step already has
(:class:`StepDiagnostics`, in :attr:`StepResult.diagnostics`); :meth:`Trainer.fit` averages them
per epoch into the :class:`~metaweight.EpochRecord` and the history, and watches them with a
:class:`CollapseMonitor`, which warns once per ``fit`` call and kind, naming the method, the step
and the numbers:

- :class:`TrainingCollapseWarning` — training has collapsed: one class is predicted for (almost)
  every input although the labels are varied, or the weights' effective sample size has stayed
  near a single example.
- :class:`WeightSaturationWarning` — a weight net's outputs have saturated near 0 or 1 for almost
  every example, so the weights no longer distinguish examples.

The thresholds are documented on :class:`CollapseMonitor`; each warning's text names its remedy.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CollapseMonitor",
    "MetaweightWarning",
    "StepDiagnostics",
    "TrainingCollapseWarning",
    "WeightSaturationWarning",
]


class MetaweightWarning(RuntimeWarning):
    """Base class of metaweight's warnings about a training run."""


class TrainingCollapseWarning(MetaweightWarning):
    """Training collapsed: one class for every input, or weights concentrated on ~one example."""


class WeightSaturationWarning(MetaweightWarning):
    """A weight net's outputs saturated near 0 or 1: the weights no longer distinguish examples."""


@dataclass(frozen=True)
class StepDiagnostics:
    """Collapse and saturation statistics of one step (computed by the core; cheap).

    Attributes:
        effective_sample_size: the weights' effective sample size relative to the batch,
            ``(Σw)² / (n Σw²)`` in [0, 1]: 1 for uniform weights, ``1/n`` when one example carries
            all the weight, 0 when every weight is 0.
        saturated_low: fraction of the batch whose weight is saturated near 0: ``V(loss) < 0.05``
            for MW-Net/GDW, otherwise a weight of at most 1% of the batch's mean weight.
        saturated_high: fraction with ``V(loss) > 0.95`` (MW-Net/GDW); 0 for other methods.
        prediction_majority: share of the batch predicted as the batch's most frequently
            predicted class (1.0: one class for every input).
        label_majority: share of the batch carrying its most frequent label.
        weight_loss_correlation: Pearson correlation of the examples' weights with their losses
            over the batch (negative: high-loss examples weigh less); NaN when the weights (or the
            losses) are constant, e.g. ERM.
    """

    effective_sample_size: float
    saturated_low: float
    saturated_high: float
    prediction_majority: float
    label_majority: float
    weight_loss_correlation: float

    @classmethod
    def from_tuple(cls, values: Sequence[float]) -> StepDiagnostics:
        """From the core's tuple (the order of the fields above)."""
        return cls(*(float(v) for v in values))


#: The EpochRecord/History columns averaged from the steps' diagnostics, and their source field.
EPOCH_COLUMNS: dict[str, str] = {
    "weight_ess": "effective_sample_size",
    "saturated_low": "saturated_low",
    "saturated_high": "saturated_high",
    "prediction_majority": "prediction_majority",
    "weight_loss_correlation": "weight_loss_correlation",
}


class EpochDiagnostics:
    """Running means of the steps' diagnostics over one epoch (NaN steps are left out)."""

    def __init__(self) -> None:
        self._sums = dict.fromkeys(EPOCH_COLUMNS, 0.0)
        self._counts = dict.fromkeys(EPOCH_COLUMNS, 0)

    def add(self, d: StepDiagnostics | None) -> None:
        """Adds one step's diagnostics (None: a skipped step)."""
        if d is None:
            return
        for column, name in EPOCH_COLUMNS.items():
            v = getattr(d, name)
            if math.isfinite(v):
                self._sums[column] += v
                self._counts[column] += 1

    def means(self) -> dict[str, float | None]:
        """Column → mean over the epoch's steps (None when no step had a finite value)."""
        return {c: (self._sums[c] / self._counts[c] if self._counts[c] else None) for c in EPOCH_COLUMNS}


class CollapseMonitor:
    """Watches the steps of one ``fit`` call and warns once per kind when training has collapsed
    or the weights have saturated.

    Each condition is judged on the mean over a sliding window of the last ``window`` steps, and
    only once the window is full (the first steps of a run are allowed to be odd):

    - **collapse** (:class:`TrainingCollapseWarning`, every method): the mean prediction majority
      is at least ``majority`` (0.9) while it exceeds the mean label majority by at least 0.3 — one
      class is predicted for almost every input although the labels are varied (a long-tailed
      batch whose labels are one class does not trigger it);
    - **effective sample size near one example** (:class:`TrainingCollapseWarning`, meta methods):
      the mean of ``effective_sample_size · n`` is at most ``min_examples`` (1.5 examples) while
      the batches' labels are varied (mean label majority at most 0.9): under a strong imbalance,
      e.g. L2RW's 100:1 MNIST task with one rare example per batch, concentrating the weight on
      that example is the method working, not collapsing;
    - **saturation** (:class:`WeightSaturationWarning`, MW-Net and GDW), judged over the longer
      window of ``saturation_window`` steps: the mean fraction of weight-net outputs above 0.95,
      or below 0.05, is at least ``saturated`` (0.95); or the weights the steps used have stayed
      uniform (mean effective sample size at least ``uniform`` = 0.99, a coefficient of variation
      of at most 0.1: the method trains like ERM) while at least half of V's outputs sit above 0.95
      or below 0.05. Uniform weights alone do not warn: V starts near 0.5 and a weight net with a
      small learning rate may take a while to move. GDW distinguishes examples through its
      second stage (class-level weights), so a saturated V alone is expected there; for GDW the
      warning needs V saturated for almost every example *and* weights at the label that stayed
      uniform to within a coefficient of variation of 0.03 (effective sample size ≥ 0.999).

    Args:
        method: the method's name, used in the messages.
        has_weight_net: whether the method has a weight net V (saturation is judged on it).
        class_level: whether the method's weights are class-level (GDW; see above).
        needs_meta: whether the method weights from a meta set (effective sample size is judged).
        window: steps in the sliding window of the collapse conditions.
        saturation_window: steps in the sliding window of the saturation condition.
        majority, min_examples, uniform, saturated: the thresholds above.
        stacklevel: passed to :func:`warnings.warn`.
    """

    def __init__(
        self,
        method: str,
        *,
        has_weight_net: bool,
        needs_meta: bool,
        class_level: bool = False,
        window: int = 50,
        saturation_window: int = 150,
        majority: float = 0.9,
        min_examples: float = 1.5,
        uniform: float = 0.99,
        saturated: float = 0.95,
        stacklevel: int = 4,
    ) -> None:
        self.method = method
        self.has_weight_net = has_weight_net
        self.needs_meta = needs_meta
        self.class_level = class_level
        self.window = max(1, int(window))
        self.saturation_window = max(1, int(saturation_window))
        self.majority = majority
        self.min_examples = min_examples
        self.uniform = uniform
        self.saturated = saturated
        self.stacklevel = stacklevel
        self._recent: deque[tuple[StepDiagnostics, int]] = deque(maxlen=max(self.window, self.saturation_window))
        #: The warnings issued so far by this monitor (kind → message).
        self.warned: dict[str, str] = {}

    def _mean(self, value: str, steps: int) -> float:
        """Mean of a diagnostic over the last ``steps`` steps (NaN values left out)."""
        recent = list(self._recent)[-steps:]
        vals = [getattr(d, value) for d, _ in recent]
        vals = [v for v in vals if math.isfinite(v)]
        return sum(vals) / len(vals) if vals else math.nan

    def observe(self, step: int, d: StepDiagnostics | None, batch: int) -> None:
        """Takes the diagnostics of step ``step`` (a batch of ``batch`` examples) and warns when a
        condition holds over the full window."""
        if d is None:
            return
        self._recent.append((d, batch))
        if len(self._recent) < self.window:
            return
        pm, lm = self._mean("prediction_majority", self.window), self._mean("label_majority", self.window)
        if "collapse" not in self.warned and pm >= self.majority and pm - lm >= 0.3:
            self._warn(
                "collapse", TrainingCollapseWarning,
                f"{self.method}: training has collapsed by step {step}: over the last {self.window} steps "
                f"{pm:.0%} of each batch was predicted as one class, while the most frequent label was only "
                f"{lm:.0%} of it. Remedy: lower the learning rate (e.g. L2RW on a network without batch norm "
                "at lr <= 0.03 with momentum 0.9; see the README's 'Choosing the defaults'), or use a "
                "method whose weights are not normalised per batch (MWNet, GDW).")
        if self.needs_meta and "ess" not in self.warned:
            ess_values = [d.effective_sample_size * n for d, n in list(self._recent)[-self.window:]
                          if math.isfinite(d.effective_sample_size)]
            mean_ess = sum(ess_values) / len(ess_values) if ess_values else math.nan
            if math.isfinite(mean_ess) and mean_ess <= self.min_examples and lm <= 0.9:
                self._warn(
                    "ess", TrainingCollapseWarning,
                    f"{self.method}: the weights' effective sample size has stayed near one example: "
                    f"{mean_ess:.2f} examples per batch on average over the {self.window} steps up to step "
                    f"{step}. Every update follows ~one example, which destabilises training. Remedy: lower "
                    "the learning rate, enlarge the meta batch, or use MWNet/GDW.")
        if self.has_weight_net and "saturation" not in self.warned and len(self._recent) >= self.saturation_window:
            sw = self.saturation_window
            ess = self._mean("effective_sample_size", sw)
            hi, lo = self._mean("saturated_high", sw), self._mean("saturated_low", sw)
            if (hi >= self.saturated or lo >= self.saturated) and (not self.class_level or ess >= 0.999):
                where, frac = ("1", hi) if hi >= lo else ("0", lo)
                what = f"the weight net's outputs have saturated near {where} for {frac:.0%} of the examples"
            elif not self.class_level and ess >= self.uniform and max(hi, lo) >= 0.5:
                what = (f"the weights have stayed uniform (mean effective sample size {ess:.3f} of the batch; "
                        f"weight-loss correlation {self._mean('weight_loss_correlation', sw):+.2f})")
            else:
                return
            self._warn(
                "saturation", WeightSaturationWarning,
                f"{self.method}: {what} over the {sw} steps up to step {step}, so the weights no longer "
                "distinguish examples and the method trains like ERM. Remedy: MWNet(normalize=True) (the "
                "default), which learns relative weights, or another weight-net learning rate (lr=...).")

    def _warn(self, kind: str, category: type[Warning], message: str) -> None:
        self.warned[kind] = message
        warnings.warn(message, category, stacklevel=self.stacklevel)
