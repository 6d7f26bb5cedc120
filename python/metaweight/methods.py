"""Training methods: how a :class:`~metaweight.Trainer` weights the examples of each step.

A method is chosen with the trainer's ``method`` argument, as a name or an object::

    Trainer(net, method="gdw")
    Trainer(net, method=GDW(eta=100))

Every method is a frozen dataclass whose fields are its options, with the defaults fixed by
``ALGORITHMS.md`` (the papers' official settings).

- Meta-gradient methods (need a clean meta batch in every step): :class:`L2RW`, :class:`MWNet`,
  :class:`GDW`. Their meta-gradients are exact: one forward-mode Jacobian-vector product of the
  train logits along ∇L_meta(θ̂) replaces double back-propagation.
- Loss and weighting baselines (train batch only): :class:`ERM`, :class:`Focal`,
  :class:`ClassBalanced`, :class:`InverseFrequency`, :class:`HardMining`, :class:`RandomWeights`,
  :class:`SelfPaced`, :class:`Bootstrap`.
- Data-level baselines handled by :meth:`Trainer.fit`: :class:`FineTune` (ERM, then fine-tuning on
  the meta set) and :class:`ClassBalancedSampling` (class-balanced batches).

A method object tells the trainer what its steps need (``needs_meta``; ``supports_sample_weights``:
user-given per-example weights) and how the native core names it (:meth:`Method.spec`).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ._validate import is_finite_number
from .errors import InvalidArgumentError

__all__ = [
    "ERM",
    "GDW",
    "L2RW",
    "Bootstrap",
    "ClassBalanced",
    "ClassBalancedSampling",
    "FineTune",
    "Focal",
    "HardMining",
    "InverseFrequency",
    "MWNet",
    "Method",
    "RandomWeights",
    "SelfPaced",
    "register_method",
    "resolve_method",
]


def _f(v: float) -> str:
    return repr(float(v))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidArgumentError(message)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _option_type_ok(annotation: str, v: Any) -> bool | None:
    """Whether ``v`` fits an option annotated ``annotation`` (None: an annotation not checked)."""
    a = annotation.replace(" ", "")
    if a.endswith("|None"):
        return True if v is None else _option_type_ok(a[: -len("|None")], v)
    if a == "bool":
        return isinstance(v, (bool, np.bool_)) or (isinstance(v, numbers.Integral) and int(v) in (0, 1))
    if a == "int":
        return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
    if a == "float":
        return _is_real(v)
    if a == "str":
        return isinstance(v, str)
    if a.startswith("tuple["):
        if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, (Sequence, np.ndarray)):
            return False
        items = list(np.asarray(v).reshape(-1)) if isinstance(v, np.ndarray) else list(v)
        if a == "tuple[float,float]" and len(items) != 2:
            return False
        return all(_is_real(x) for x in items)
    return None


class _OptionTypes:
    """Checks, at construction, that every option of a method dataclass has its annotated type
    (values are checked by ``spec()``); InvalidArgumentError naming the option otherwise."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if _option_type_ok(str(f.type), v) is False:
                raise InvalidArgumentError(
                    f"{type(self).__name__}.{f.name}: expected {f.type}, got {v!r} ({type(v).__name__})")
            if str(f.type).startswith("float") and isinstance(v, numbers.Integral) and not isinstance(v, bool):
                try:  # an int for a float option: store it as a float (checks then work on huge ints)
                    object.__setattr__(self, f.name, float(v))
                except OverflowError:
                    raise InvalidArgumentError(f"{type(self).__name__}.{f.name}: {v} is too large") from None


class Method(_OptionTypes):
    """Base class of the training methods."""

    #: The name accepted by ``Trainer(method=...)``.
    name: ClassVar[str] = ""
    #: Whether every step needs a meta batch (``x_meta``, ``y_meta``).
    needs_meta: ClassVar[bool] = False
    #: Whether ``Trainer.step`` accepts user ``sample_weights``.
    supports_sample_weights: ClassVar[bool] = False
    #: Whether the method learns a loss → weight function (``Trainer.weight_function``).
    has_weight_function: ClassVar[bool] = False
    #: Whether the method has class-level weights (GDW).
    has_class_weights: ClassVar[bool] = False

    def spec(self) -> str:
        """The method in the native core's method-spec language, e.g. ``"gdw(eta=100.0)"``."""
        raise NotImplementedError


@dataclass(frozen=True)
class ERM(Method):
    """Empirical risk minimisation: the mean cross-entropy of the batch (optionally weighted by
    user-given ``sample_weights``: loss = sum_i w_i l_i / N)."""

    name: ClassVar[str] = "erm"
    supports_sample_weights: ClassVar[bool] = True

    def spec(self) -> str:
        return "erm"


def _virtual(parts: list[str], virtual_momentum: bool, virtual_lr: float | None) -> None:
    if virtual_momentum:
        parts.append("virtual_momentum=1")
    if virtual_lr is not None:
        _check(virtual_lr > 0, f"virtual_lr: expected a positive step size or None, got {virtual_lr}")
        parts.append(f"virtual_lr={_f(virtual_lr)}")


@dataclass(frozen=True)
class L2RW(Method):
    """Learning to Reweight (Ren et al. 2018): per-step example weights from the meta gradient.

    Each step computes u_i = <∇L_meta(θ), ∇l_i(θ)> for every example with one JVP, and trains on
    w = max(u, 0) / Σ max(u, 0) (w = 0 for the batch when no u is positive).

    Args:
        virtual_momentum: Include the optimizer's momentum and weight decay in the look-ahead step
            (L2RW's look-ahead is at ε = 0, so θ̂ = θ; kept for symmetry with MW-Net/GDW).
        virtual_lr: Look-ahead step size; None uses the classifier's current learning rate (it
            cancels in the normalisation).
    """

    name: ClassVar[str] = "l2rw"
    needs_meta: ClassVar[bool] = True
    virtual_momentum: bool = False
    virtual_lr: float | None = None

    def spec(self) -> str:
        parts: list[str] = []
        _virtual(parts, self.virtual_momentum, self.virtual_lr)
        return f"l2rw({', '.join(parts)})" if parts else "l2rw"


@dataclass(frozen=True)
class MWNet(Method):
    """Meta-Weight-Net (Shu et al. 2019): a learned loss → weight function V.

    V is Linear(1, hidden) → ReLU → Linear(hidden, 1) → Sigmoid of the example's loss. Each step
    takes a look-ahead θ̂ = θ − α (1/n) Σ V(l_i) ∇l_i, updates V on the meta loss at θ̂, then trains
    θ on (1/n) Σ V(l_i) l_i with the updated V.

    Args:
        normalize: Normalise the weights by their batch sum (the official imbalance script; the
            default) instead of dividing by n (the official noisy-label script). Without it the
            meta-gradient pushes every weight the same way on top of the relative push, and Adam's
            per-parameter steps turn that common push into a V that *increases* with the loss, so
            that corrupted labels weigh more than clean ones (README, "Choosing the defaults").
        detach_loss: Feed V the detached loss (the noisy-label script; default).
        hidden: Hidden width of V.
        optimizer: V's optimizer, ``"adam"`` (noisy-label code) or ``"sgd"`` (imbalance code).
        lr: V's learning rate (1e-3; the imbalance code uses SGD with 1e-5).
        weight_decay: V's weight decay.
        momentum: V's SGD momentum (imbalance code: 0.9).
        virtual_momentum: Include the classifier optimizer's momentum/weight decay in θ̂.
        virtual_lr: Look-ahead step size α; None uses the classifier's current learning rate.
        memory: ``"low"`` (default) lays the meta batch's activations over the train batch's
            dead ones (those no later pass reads: batch-norm outputs read only by a ReLU, linear
            and convolution outputs read only by a batch norm or ReLU, residual branch outputs),
            allocating only what does not fit: about 1.1-1.25x ERM's memory, nothing recomputed.
            ``"fast"`` keeps a second tape of its own for the meta batch (about 1.5-1.9x; kept to
            cross-check). Both run the same passes at the same speed and take identical steps.
    """

    name: ClassVar[str] = "mwnet"
    needs_meta: ClassVar[bool] = True
    has_weight_function: ClassVar[bool] = True
    normalize: bool = True
    detach_loss: bool = True
    hidden: int = 100
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.0
    virtual_momentum: bool = False
    virtual_lr: float | None = None
    memory: str = "low"

    def _weight_net(self) -> list[str]:
        _check(self.memory in ("fast", "low"), f"memory: expected 'fast' or 'low', got {self.memory!r}")
        _check(self.optimizer in ("adam", "sgd"), f"optimizer: expected 'adam' or 'sgd', got {self.optimizer!r}")
        _check(isinstance(self.hidden, (int, np.integer)) and 0 < int(self.hidden) <= 100_000,
               f"hidden: expected a width in 1..100000, got {self.hidden!r}")
        _check(is_finite_number(self.lr) and self.lr >= 0, f"lr: expected a finite value >= 0, got {self.lr}")
        _check(is_finite_number(self.weight_decay) and self.weight_decay >= 0,
               f"weight_decay: expected a finite value >= 0, got {self.weight_decay}")
        _check(0 <= self.momentum < 1, f"momentum: expected 0 <= momentum < 1, got {self.momentum}")
        parts = [f"hidden={int(self.hidden)}", f"wn_opt={self.optimizer}", f"wn_lr={_f(self.lr)}",
                 f"wn_wd={_f(self.weight_decay)}", f"wn_momentum={_f(self.momentum)}",
                 f"memory={self.memory}"]
        _virtual(parts, self.virtual_momentum, self.virtual_lr)
        return parts

    def spec(self) -> str:
        parts = [f"normalize={int(bool(self.normalize))}", f"detach={int(bool(self.detach_loss))}"]
        return f"mwnet({', '.join(parts + self._weight_net())})"


@dataclass(frozen=True)
class GDW(MWNet):
    """Generalized Data Weighting (Chen et al. 2021): class-level weights ω ∈ R^{n×C}.

    First stage ω_i = V(l_i)·1 with the zero-mean constraint at the label; the look-ahead uses the
    manipulated logit gradient ω_ic (p_ic − y_ic)/n; V is updated through all C columns; the second
    stage moves ω by −clip(η g/‖g‖₁) with g = ∂L_meta/∂ω, clamps and re-applies the constraint.

    Args:
        eta: Outer step η; None = 100 for up to 10 classes, 1000 above (the paper's settings).
        clip: Clip of the second-stage update.
        clamp: Range ω′ is clamped to.
        prob_clamp: Probabilities are clamped to at most this in p − y and in the constraint.
        hidden, optimizer, lr, weight_decay, momentum, virtual_momentum, virtual_lr, memory: as MW-Net.
    """

    name: ClassVar[str] = "gdw"
    has_class_weights: ClassVar[bool] = True
    normalize: bool = False
    eta: float | None = None
    clip: float = 0.2
    clamp: tuple[float, float] = (1e-6, 1e6)
    prob_clamp: float = 0.999

    def spec(self) -> str:
        _check(not self.normalize, "normalize: GDW does not normalise its weights (it uses 1/n)")
        _check(self.detach_loss, "detach_loss: GDW feeds V the detached loss")
        _check(self.eta is None or (is_finite_number(self.eta) and self.eta > 0), f"eta: expected > 0 or None, got {self.eta}")
        _check(is_finite_number(self.clip) and self.clip > 0, f"clip: expected > 0, got {self.clip}")
        _check(len(self.clamp) == 2 and 0 < self.clamp[0] < self.clamp[1],
               f"clamp: expected (low, high) with 0 < low < high, got {self.clamp}")
        _check(0 < self.prob_clamp < 1, f"prob_clamp: expected 0 < value < 1, got {self.prob_clamp}")
        parts = self._weight_net() + [f"clip={_f(self.clip)}", f"clamp_min={_f(self.clamp[0])}",
                                      f"clamp_max={_f(self.clamp[1])}", f"prob_clamp={_f(self.prob_clamp)}"]
        if self.eta is not None:
            parts.append(f"eta={_f(self.eta)}")
        return f"gdw({', '.join(parts)})"


@dataclass(frozen=True)
class Focal(Method):
    """Focal loss (Lin et al. 2017): −(1 − p_t)^γ log p_t.

    Args:
        gamma: Focusing parameter γ ≥ 0 (0 is cross-entropy).
    """

    name: ClassVar[str] = "focal"
    gamma: float = 2.0

    def spec(self) -> str:
        _check(is_finite_number(self.gamma) and self.gamma >= 0, f"gamma: expected a finite value >= 0, got {self.gamma}")
        return f"focal(gamma={_f(self.gamma)})"


def _counts(name: str, counts: Sequence[int] | None) -> str:
    if counts is None:
        raise InvalidArgumentError(
            f"class_counts: {name} needs the per-class training counts, e.g. "
            f"{name.title().replace('_', '')}(class_counts=numpy.bincount(y_train, minlength=num_classes))")
    values = [int(c) for c in counts]
    _check(len(values) > 0 and all(c > 0 for c in values), f"class_counts: expected positive counts, got {values}")
    return "x".join(str(c) for c in values)


@dataclass(frozen=True)
class ClassBalanced(Method):
    """Class-balanced loss (Cui et al. 2019): class weights (1 − β)/(1 − β^{n_c}), normalised to sum to C.

    Args:
        class_counts: Per-class training counts n_c (e.g. ``np.bincount(y_train)``).
        beta: β in [0, 1); 0.9999 is the paper's usual choice.
    """

    name: ClassVar[str] = "class_balanced"
    class_counts: tuple[int, ...] | None = None
    beta: float = 0.9999

    def spec(self) -> str:
        _check(0 <= self.beta < 1, f"beta: expected 0 <= beta < 1, got {self.beta}")
        return f"class_balanced(beta={_f(self.beta)}, counts={_counts(self.name, self.class_counts)})"


@dataclass(frozen=True)
class InverseFrequency(Method):
    """Inverse class-frequency ("proportion") weights 1/n_c, normalised to sum to C.

    Args:
        class_counts: Per-class training counts n_c.
    """

    name: ClassVar[str] = "inverse_frequency"
    class_counts: tuple[int, ...] | None = None

    def spec(self) -> str:
        return f"inverse_frequency(counts={_counts(self.name, self.class_counts)})"


@dataclass(frozen=True)
class HardMining(Method):
    """Hard-example mining: only the highest-loss fraction of each batch is trained on.

    Args:
        fraction: Fraction of the batch kept (0 < fraction ≤ 1).
    """

    name: ClassVar[str] = "hard_mining"
    fraction: float = 0.5

    def spec(self) -> str:
        _check(0 < self.fraction <= 1, f"fraction: expected 0 < fraction <= 1, got {self.fraction}")
        return f"hard_mining(fraction={_f(self.fraction)})"


@dataclass(frozen=True)
class RandomWeights(Method):
    """Random example weights from a rectified Gaussian, normalised per batch (L2RW's baseline)."""

    name: ClassVar[str] = "random"

    def spec(self) -> str:
        return "random_gaussian"


@dataclass(frozen=True)
class SelfPaced(Method):
    """Self-paced learning (Kumar et al. 2010): examples with loss below λ count; λ grows.

    Args:
        threshold: Initial λ₀; None = 1.3·ln(C), a little above the loss of a uniform prediction, so
            training starts from (nearly) every example and drops those the model cannot fit (a
            threshold at or below ln(C) selects a few easy classes early and never recovers).
        growth: λ is multiplied by this every ``interval`` steps (≥ 1).
        interval: Steps between growths.
    """

    name: ClassVar[str] = "self_paced"
    threshold: float | None = None
    growth: float = 1.1
    interval: int = 100

    def spec(self) -> str:
        _check(self.threshold is None or (is_finite_number(self.threshold) and self.threshold > 0),
               f"threshold: expected > 0 or None, got {self.threshold}")
        _check(is_finite_number(self.growth) and self.growth >= 1, f"growth: expected >= 1, got {self.growth}")
        _check(int(self.interval) > 0, f"interval: expected > 0 steps, got {self.interval}")
        t = 0.0 if self.threshold is None else float(self.threshold)
        return f"self_paced(threshold={_f(t)}, growth={_f(self.growth)}, interval={int(self.interval)})"


@dataclass(frozen=True)
class Bootstrap(Method):
    """Reed et al. (2015) bootstrapping: the target mixes the label with the model's prediction.

    Soft: L = −Σ_k (β y_k + (1−β) q_k) log q_k; hard: the target is β y + (1−β) onehot(argmax q).

    Args:
        beta: Weight of the given label; None = 0.95 (soft) or 0.8 (hard), the paper's values.
        hard: Use the arg-max prediction instead of the probabilities.
    """

    name: ClassVar[str] = "bootstrap"
    beta: float | None = None
    hard: bool = False

    def spec(self) -> str:
        beta = self.beta if self.beta is not None else (0.8 if self.hard else 0.95)
        _check(0 <= beta <= 1, f"beta: expected 0 <= beta <= 1, got {beta}")
        return f"bootstrap_{'hard' if self.hard else 'soft'}(beta={_f(beta)})"


@dataclass(frozen=True)
class FineTune(Method):
    """Baseline: ERM on the training set, then ERM on the clean meta set for ``epochs`` more epochs.

    ``Trainer.fit(..., meta=(x_meta, y_meta))`` runs the fine-tuning after the main epochs, with
    its own constant learning rate and a fresh optimizer of the trainer's kind and settings
    (momentum, weight decay), so it does not inherit the main run's decayed (e.g. cosine → 0) rate.

    Args:
        epochs: Fine-tuning epochs over the meta set.
        batch_size: Fine-tuning batch size (None: the main batch size, capped at the meta set size).
        lr: Fine-tuning learning rate (None: a tenth of the optimizer's base rate).
    """

    name: ClassVar[str] = "fine_tune"
    supports_sample_weights: ClassVar[bool] = True
    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None

    def spec(self) -> str:
        _check(int(self.epochs) >= 0, f"epochs: expected >= 0, got {self.epochs}")
        _check(self.batch_size is None or int(self.batch_size) >= 1,
               f"batch_size: expected >= 1 or None, got {self.batch_size}")
        _check(self.lr is None or (is_finite_number(self.lr) and self.lr > 0),
               f"lr: expected > 0 or None, got {self.lr}")
        return "erm"


@dataclass(frozen=True)
class ClassBalancedSampling(Method):
    """Baseline: ERM on class-balanced batches (every class equally often, examples re-used).

    ``Trainer.fit`` draws each epoch's order so classes alternate uniformly; the epoch has as many
    steps as with plain shuffling.
    """

    name: ClassVar[str] = "class_balanced_sampling"
    supports_sample_weights: ClassVar[bool] = True

    def spec(self) -> str:
        return "erm"


_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Registers a method class under its ``name`` (usable as a class decorator).

    Args:
        cls: a :class:`Method` subclass with a non-empty ``name``.

    Returns:
        ``cls``.
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)) or not cls.name:
        raise InvalidArgumentError(f"method: expected a Method subclass with a name, got {cls!r}")
    _METHODS[cls.name.lower()] = cls
    return cls


for _cls in (ERM, L2RW, MWNet, GDW, Focal, ClassBalanced, InverseFrequency, HardMining, RandomWeights,
             SelfPaced, Bootstrap, FineTune, ClassBalancedSampling):
    register_method(_cls)
_ALIASES: dict[str, Any] = {
    "mw-net": MWNet, "mw_net": MWNet, "proportion": InverseFrequency, "random_gaussian": RandomWeights,
    "bootstrap_soft": Bootstrap, "bootstrap_hard": lambda: Bootstrap(hard=True), "finetune": FineTune,
}


def resolve_method(method: str | Method | type[Method]) -> Method:
    """Turns a method name, class or object into a method object.

    Args:
        method: a name (case-insensitive), e.g. ``"gdw"``; a :class:`Method` subclass (its
            defaults are used); or a method object.

    Returns:
        The method object.

    Raises:
        InvalidArgumentError: an unknown name or an unsupported object.
    """
    if isinstance(method, str):
        key = method.strip().lower()
        factory = _METHODS.get(key) or _ALIASES.get(key)
        if factory is None:
            raise InvalidArgumentError(f"method: expected one of {sorted(_METHODS)}, got {method!r}")
        return factory()
    if isinstance(method, Method):
        return method
    if isinstance(method, type) and issubclass(method, Method) and method is not Method:
        return method()
    raise InvalidArgumentError(
        f"method: expected a method name such as 'erm' or a method object, got {type(method).__name__}"
    )
