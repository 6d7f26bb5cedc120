"""Training methods: how a :class:`~metaweight.Trainer` weights the examples of each step.

A method is chosen with the trainer's ``method`` argument, as a name or an object::

    Trainer(net, method="gdw")
    Trainer(net, method=GDW(eta=100))

Every method is a frozen dataclass with keyword-only options. The options, their types, defaults
(``ALGORITHMS.md``'s, the papers' official settings, except where README "Choosing the defaults"
says otherwise) and docs come from the native core's settings table (``mw_settings_table``, read
once by :mod:`metaweight._settings`); the core checks the values when the method is used, and its
error names the option. ``scripts/gen_settings.py`` writes the typed signatures below from the same
table (a test fails when they drift).

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from . import _settings
from ._settings import SettingInfo
from ._validate import as_bool, as_int, is_finite_number
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

M = TypeVar("M", bound="type[Method]")


class Method:
    """Base class of the training methods.

    A method class names the core's method it runs; its options, their defaults and docs, and what
    its steps need come from the core's settings table (``mw_settings_table``), and the core checks
    the values when the method is used (:meth:`spec`).
    """

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
    #: The core's method (``metaweight.h``) and its settings.
    _core_method: ClassVar[str] = "erm"
    _settings: ClassVar[tuple[SettingInfo, ...]] = ()
    #: Settings whose Python default is None: "the core's default for the method" (omitted from specs).
    _auto: ClassVar[frozenset[str]] = frozenset()
    if TYPE_CHECKING:  # every method class is a dataclass (built by ``_from_table``)
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        # Types only (an int for a float option becomes a float); the core checks the values.
        for s in self._settings:
            v = getattr(self, s.name)
            if not (v is None and s.name in self._auto):
                object.__setattr__(self, s.name, s.convert(v, type(self).__name__))

    def _core_name(self) -> str:
        return self._core_method

    def spec(self) -> str:
        """The method as the core's canonical spec, e.g. ``"gdw(..., eta=100.0, ...)"``.

        Raises:
            InvalidArgumentError: an option out of range, named by the core.
        """
        parts = []
        for s in self._settings:
            v = getattr(self, s.name)
            if v is None and s.none is None:
                continue  # not given: the core's default, or its error when it needs one
            parts.append(f"{s.name}={s.spec_text(v)}")
        name = self._core_name()
        return _settings.check_spec("method", f"{name}({', '.join(parts)})" if parts else name)


def _from_table(core: str, auto: Mapping[str, str] | None = None,
                extra_docs: tuple[tuple[str, str], ...] = ()) -> Callable[[M], M]:
    """Builds a method dataclass from the core's table of method ``core``: one keyword-only field
    per setting, the ``Args`` docs, and what its steps need. ``auto``: settings whose Python
    default is None (the core's default for the method chosen), with what None means."""

    def build(cls: M) -> M:
        info = _settings.method_info(core)
        cls._core_method = core
        cls._settings = info.settings
        cls.needs_meta = info.needs_meta
        cls.has_weight_function = info.weight_net
        cls.has_class_weights = info.class_weights
        cls.supports_sample_weights = info.sample_weights
        cls._auto = frozenset(auto or ())
        _settings.add_fields(cls, info.settings, dict.fromkeys(auto or ()))
        doc = (cls.__doc__ or "").rstrip()
        if info.settings or extra_docs:
            indent = "\n    "
            doc += "\n\n    " + _settings.docs_section(info.settings, extra_docs, auto).replace("\n", indent)
        cls.__doc__ = doc + "\n"
        return dataclass(frozen=True, kw_only=True)(cls)  # type: ignore[return-value]

    return build


@_from_table("erm")
class ERM(Method):
    """Empirical risk minimisation: the mean cross-entropy of the batch (optionally weighted by
    user-given ``sample_weights``: loss = sum_i w_i l_i / N)."""

    name: ClassVar[str] = "erm"


@_from_table("l2rw")
class L2RW(Method):
    """Learning to Reweight (Ren et al. 2018): per-step example weights from the meta gradient.

    Each step computes u_i = <∇L_meta(θ), ∇l_i(θ)> for every example with one JVP, and trains on
    w = max(u, 0) / Σ max(u, 0) (w = 0 for the batch when no u is positive). L2RW's look-ahead is
    at ε = 0, so θ̂ = θ; its step size cancels in the normalisation.
    """

    name: ClassVar[str] = "l2rw"
    # BEGIN generated by scripts/gen_settings.py: L2RW
    if TYPE_CHECKING:
        virtual_momentum: bool
        virtual_lr: float | None

        def __init__(self, *, virtual_momentum: bool = ..., virtual_lr: float | None = ...) -> None: ...
    # END generated: L2RW


@_from_table("mwnet")
class MWNet(Method):
    """Meta-Weight-Net (Shu et al. 2019): a learned loss → weight function V.

    V is Linear(1, hidden) → ReLU → Linear(hidden, 1) → Sigmoid of the example's loss. Each step
    takes a look-ahead θ̂ = θ − α (1/n) Σ V(l_i) ∇l_i, updates V on the meta loss at θ̂, then trains
    θ on (1/n) Σ V(l_i) l_i with the updated V. Without ``normalize`` the meta-gradient pushes
    every weight the same way on top of the relative push, and Adam's per-parameter steps turn that
    common push into a V that *increases* with the loss (README, "Choosing the defaults").
    ``memory="low"`` lays the meta batch's activations over the train batch's dead ones (about
    1.1-1.25x ERM's memory, nothing recomputed); ``"fast"`` keeps a second tape (about 1.5-1.9x).
    """

    name: ClassVar[str] = "mwnet"
    # BEGIN generated by scripts/gen_settings.py: MWNet
    if TYPE_CHECKING:
        virtual_momentum: bool
        virtual_lr: float | None
        normalize: bool
        detach_loss: bool
        hidden: int
        optimizer: str
        lr: float
        weight_decay: float
        momentum: float
        memory: str

        def __init__(
            self,
            *,
            virtual_momentum: bool = ...,
            virtual_lr: float | None = ...,
            normalize: bool = ...,
            detach_loss: bool = ...,
            hidden: int = ...,
            optimizer: str = ...,
            lr: float = ...,
            weight_decay: float = ...,
            momentum: float = ...,
            memory: str = ...,
        ) -> None: ...
    # END generated: MWNet


@_from_table("gdw")
class GDW(MWNet):
    """Generalized Data Weighting (Chen et al. 2021): class-level weights ω ∈ R^{n×C}.

    First stage ω_i = V(l_i)·1 with the zero-mean constraint at the label; the look-ahead uses the
    manipulated logit gradient ω_ic (p_ic − y_ic)/n; V is updated through all C columns; the second
    stage moves ω by −clip(η g/‖g‖₁) with g = ∂L_meta/∂ω, clamps and re-applies the constraint.
    """

    name: ClassVar[str] = "gdw"
    # BEGIN generated by scripts/gen_settings.py: GDW
    if TYPE_CHECKING:
        virtual_momentum: bool
        virtual_lr: float | None
        normalize: bool
        detach_loss: bool
        hidden: int
        optimizer: str
        lr: float
        weight_decay: float
        momentum: float
        memory: str
        eta: float | None
        clip: float
        clamp: tuple[float, float]
        prob_clamp: float

        def __init__(
            self,
            *,
            virtual_momentum: bool = ...,
            virtual_lr: float | None = ...,
            normalize: bool = ...,
            detach_loss: bool = ...,
            hidden: int = ...,
            optimizer: str = ...,
            lr: float = ...,
            weight_decay: float = ...,
            momentum: float = ...,
            memory: str = ...,
            eta: float | None = ...,
            clip: float = ...,
            clamp: Sequence[float] = ...,
            prob_clamp: float = ...,
        ) -> None: ...
    # END generated: GDW


@_from_table("focal")
class Focal(Method):
    """Focal loss (Lin et al. 2017): −(1 − p_t)^γ log p_t."""

    name: ClassVar[str] = "focal"
    # BEGIN generated by scripts/gen_settings.py: Focal
    if TYPE_CHECKING:
        gamma: float

        def __init__(self, *, gamma: float = ...) -> None: ...
    # END generated: Focal


@_from_table("class_balanced")
class ClassBalanced(Method):
    """Class-balanced loss (Cui et al. 2019): class weights (1 − β)/(1 − β^{n_c}), normalised to sum
    to C. ``class_counts`` is required (e.g. ``numpy.bincount(y_train, minlength=num_classes)``)."""

    name: ClassVar[str] = "class_balanced"
    # BEGIN generated by scripts/gen_settings.py: ClassBalanced
    if TYPE_CHECKING:
        beta: float
        class_counts: tuple[int, ...] | None

        def __init__(self, *, beta: float = ..., class_counts: Sequence[int] | None = ...) -> None: ...
    # END generated: ClassBalanced


@_from_table("inverse_frequency")
class InverseFrequency(Method):
    """Inverse class-frequency ("proportion") weights 1/n_c, normalised to sum to C.
    ``class_counts`` is required."""

    name: ClassVar[str] = "inverse_frequency"
    # BEGIN generated by scripts/gen_settings.py: InverseFrequency
    if TYPE_CHECKING:
        class_counts: tuple[int, ...] | None

        def __init__(self, *, class_counts: Sequence[int] | None = ...) -> None: ...
    # END generated: InverseFrequency


@_from_table("hard_mining")
class HardMining(Method):
    """Hard-example mining: only the highest-loss fraction of each batch is trained on."""

    name: ClassVar[str] = "hard_mining"
    # BEGIN generated by scripts/gen_settings.py: HardMining
    if TYPE_CHECKING:
        fraction: float

        def __init__(self, *, fraction: float = ...) -> None: ...
    # END generated: HardMining


@_from_table("random_gaussian")
class RandomWeights(Method):
    """Random example weights from a rectified Gaussian, normalised per batch (L2RW's baseline)."""

    name: ClassVar[str] = "random"


@_from_table("self_paced")
class SelfPaced(Method):
    """Self-paced learning (Kumar et al. 2010): examples with loss below λ count; λ grows. A
    threshold at or below ln(C) selects a few easy classes early and never recovers; the default
    starts from (nearly) every example and drops those the model cannot fit."""

    name: ClassVar[str] = "self_paced"
    # BEGIN generated by scripts/gen_settings.py: SelfPaced
    if TYPE_CHECKING:
        threshold: float | None
        growth: float
        interval: int

        def __init__(self, *, threshold: float | None = ..., growth: float = ..., interval: int = ...) -> None: ...
    # END generated: SelfPaced


def _bootstrap_beta_doc() -> str:
    soft = _settings.method_info("bootstrap_soft").settings[0].python_default
    hard = _settings.method_info("bootstrap_hard").settings[0].python_default
    return f"{soft} soft, {hard} hard, Reed et al.'s values"


@_from_table("bootstrap_soft", auto={"beta": _bootstrap_beta_doc()},
             extra_docs=(("hard", "use the arg-max prediction instead of the probabilities (default False)."),))
class Bootstrap(Method):
    """Reed et al. (2015) bootstrapping: the target mixes the label with the model's prediction.

    Soft: L = −Σ_k (β y_k + (1−β) q_k) log q_k; hard: the target is β y + (1−β) onehot(argmax q).
    """

    name: ClassVar[str] = "bootstrap"
    hard: bool = False
    # BEGIN generated by scripts/gen_settings.py: Bootstrap
    if TYPE_CHECKING:
        beta: float | None

        def __init__(self, *, beta: float | None = ..., hard: bool = ...) -> None: ...
    # END generated: Bootstrap

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "hard", as_bool(self.hard, "Bootstrap.hard"))

    def _core_name(self) -> str:
        return "bootstrap_hard" if self.hard else "bootstrap_soft"


@_from_table("erm", extra_docs=(
    ("epochs", "fine-tuning epochs over the meta set (default 10)."),
    ("batch_size", "fine-tuning batch size (None: the main batch size, capped at the meta set size)."),
    ("lr", "fine-tuning learning rate (None: a tenth of the optimizer's base rate)."),
))
class FineTune(Method):
    """Baseline: ERM on the training set, then ERM on the clean meta set for ``epochs`` more epochs.

    ``Trainer.fit(..., meta=(x_meta, y_meta))`` runs the fine-tuning after the main epochs, with
    its own constant learning rate and a fresh optimizer of the trainer's kind and settings
    (momentum, weight decay), so it does not inherit the main run's decayed (e.g. cosine → 0) rate.
    These options are ``fit``'s, not the core's: they are checked here.
    """

    name: ClassVar[str] = "fine_tune"
    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    # BEGIN generated by scripts/gen_settings.py: FineTune
    if TYPE_CHECKING:
        def __init__(self, *, epochs: int = ..., batch_size: int | None = ..., lr: float | None = ...) -> None: ...
    # END generated: FineTune

    def spec(self) -> str:
        """``"erm"`` (the steps are ERM's), after checking the fine-tuning options.

        Raises:
            InvalidArgumentError: an option out of range.
        """
        as_int(self.epochs, "epochs", minimum=0)
        if self.batch_size is not None:
            as_int(self.batch_size, "batch_size", minimum=1)
        if self.lr is not None and not (is_finite_number(self.lr) and self.lr > 0):
            raise InvalidArgumentError(f"lr: expected > 0 or None, got {self.lr!r}")
        return super().spec()


@_from_table("erm")
class ClassBalancedSampling(Method):
    """Baseline: ERM on class-balanced batches (every class equally often, examples re-used).

    ``Trainer.fit`` draws each epoch's order so classes alternate uniformly; the epoch has as many
    steps as with plain shuffling.
    """

    name: ClassVar[str] = "class_balanced_sampling"


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
