"""The native core's settings tables, read once: the one place every method and LAW setting is
declared (name, type, range, default, doc). :mod:`metaweight.methods` and
:class:`metaweight.law.LAWConfig` build their fields, defaults and docs from them; values are
checked by the core (:func:`check_spec`), whose errors name the key.

Python converts types only: a value becomes spec text (``True`` → ``1``, a tuple → ``AxB``,
``None`` → ``none``); ranges and choices are the core's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from . import _core
from ._validate import as_text
from .errors import InvalidArgumentError

__all__ = [
    "MethodInfo",
    "SettingInfo",
    "check_spec",
    "law_settings",
    "method_info",
    "methods_table",
]

T = TypeVar("T")
#: Characters of the spec grammar that no value can hold (``metaweight.h``).
_GRAMMAR = frozenset(",();{}|=")


@dataclass(frozen=True)
class SettingInfo:
    """One setting as the core declares it (``mw_settings_table``)."""

    name: str
    type: str  # int, float, bool, enum, ints, floats
    default: Any
    doc: str
    expected: str
    choices: tuple[str, ...] = ()
    count: int | None = None
    none: str | None = None  # what None means, when allowed
    minimum: float | None = None
    maximum: float | None = None
    minimum_inclusive: bool = True
    maximum_inclusive: bool = True

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SettingInfo:
        """A setting from its JSON object."""
        default = d["default"]
        if isinstance(default, list):
            default = tuple(default)
        return cls(
            name=str(d["name"]), type=str(d["type"]), default=default, doc=str(d["doc"]),
            expected=str(d["expected"]), choices=tuple(d.get("choices") or ()), count=d.get("count"),
            none=d.get("none"), minimum=d.get("minimum"), maximum=d.get("maximum"),
            minimum_inclusive=bool(d.get("minimum_inclusive", True)),
            maximum_inclusive=bool(d.get("maximum_inclusive", True)),
        )

    @property
    def annotation(self) -> str:
        """The Python type of the setting, as an annotation."""
        base = {"int": "int", "float": "float", "bool": "bool", "enum": "str"}.get(self.type)
        if base is None:
            item = "int" if self.type == "ints" else "float"
            base = f"tuple[{', '.join([item] * self.count)}]" if self.count else f"tuple[{item}, ...]"
        return f"{base} | None" if self.optional else base

    @property
    def optional(self) -> bool:
        """Whether None is a value (``none`` in the core, or a list nobody has given yet)."""
        return self.none is not None or (self.type == "ints" and self.default == ())

    @property
    def python_default(self) -> Any:
        """The default as the Python value (None for an empty required list)."""
        if self.type == "ints" and self.default == ():
            return None
        if self.type == "float" and self.default is not None:
            return float(self.default)
        return self.default

    def describe(self) -> str:
        """The docstring line: doc, default and what None means."""
        text = self.doc.rstrip(".")
        if self.none is not None:
            text += f"; None = {self.none}"
        if self.type == "enum":
            text += f" ({', '.join(repr(c) for c in self.choices)})"
        return f"{text} (default {self.python_default!r})."

    def convert(self, value: Any, owner: str) -> Any:
        """``value`` converted to the setting's Python type (not range-checked: the core does
        that).

        Raises:
            InvalidArgumentError: a value of the wrong type, naming ``owner.name``.
        """
        where = f"{owner}.{self.name}" if owner else self.name

        def bad() -> InvalidArgumentError:
            return InvalidArgumentError(
                f"{where}: expected {self.annotation}, got {value!r} ({type(value).__name__})")

        if value is None:
            if self.optional:
                return None
            raise bad()
        if self.type == "bool":
            if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral) and int(value) in (0, 1)):
                return bool(value)
            raise bad()
        if self.type == "int":
            if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
                return int(value)
            raise bad()
        if self.type == "float":
            return _real(value, bad)
        if self.type == "enum":
            if isinstance(value, str):
                expected = f"one of {', '.join(repr(c) for c in self.choices)}"
                text = as_text(value, where, expected)
                if not text or any(c.isspace() or c in _GRAMMAR for c in text):  # not a spec value at all
                    raise InvalidArgumentError(f"{where}: expected {expected}, got {value!r}")
                return text
            raise bad()
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray)):
            raise bad()
        items = list(np.asarray(value).reshape(-1)) if isinstance(value, np.ndarray) else list(value)
        if self.type == "ints":
            if not all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in items):
                raise bad()
            return tuple(int(v) for v in items)
        return tuple(_real(v, bad) for v in items)

    def spec_text(self, value: Any) -> str:
        """A converted value as the core's spec text."""
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, float):
            return repr(value)
        if isinstance(value, tuple):
            return "x".join(repr(v) if isinstance(v, float) else str(v) for v in value) or "none"
        return str(value)

    def from_text(self, text: str) -> Any:
        """Spec text (canonical, from the core) as the Python value."""
        if text == "none":
            return () if self.type in ("floats",) and not self.optional else None
        if self.type == "bool":
            return text == "1"
        if self.type == "int":
            return int(text)
        if self.type == "float":
            return float(text)
        if self.type == "ints":
            return tuple(int(v) for v in text.split("x"))
        if self.type == "floats":
            return tuple(float(v) for v in text.split("x"))
        return text


def _real(value: Any, bad: Callable[[], InvalidArgumentError]) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise bad()
    try:
        return float(value)
    except OverflowError:
        raise bad() from None


@dataclass(frozen=True)
class MethodInfo:
    """A weighting method as the core declares it."""

    name: str
    doc: str
    needs_meta: bool
    weight_net: bool
    class_weights: bool
    sample_weights: bool
    settings: tuple[SettingInfo, ...]


@functools.cache
def methods_table() -> dict[str, MethodInfo]:
    """The core's methods and their settings (read once)."""
    raw = json.loads(_core.settings_table("methods"))
    return {
        m["name"]: MethodInfo(
            name=m["name"], doc=m["doc"], needs_meta=bool(m["needs_meta"]), weight_net=bool(m["weight_net"]),
            class_weights=bool(m["class_weights"]), sample_weights=bool(m["sample_weights"]),
            settings=tuple(SettingInfo.from_json(s) for s in m["settings"]),
        )
        for m in raw["methods"]
    }


def method_info(name: str) -> MethodInfo:
    """The core's method ``name`` (e.g. ``"gdw"``)."""
    return methods_table()[name]


@functools.cache
def law_settings() -> tuple[SettingInfo, ...]:
    """The core's LAW settings, in spec order (read once)."""
    raw = json.loads(_core.settings_table("law"))
    return tuple(SettingInfo.from_json(s) for s in raw["settings"])


def check_spec(kind: str, spec: str) -> str:
    """The canonical spec of a method (``kind="method"``) or LAW (``"law"``) spec, checked by
    the core.

    Raises:
        InvalidArgumentError: a bad value or key, named by the core.
    """
    return _core.spec_check(kind, spec)


def parse_arguments(canonical: str) -> dict[str, str]:
    """``key=value`` pairs of a canonical spec (``name(k=v, ...)`` or the bare list) written by the
    core (values never hold ``,`` ``(`` ``)``)."""
    body = canonical
    if "(" in canonical:
        body = canonical[canonical.index("(") + 1 : canonical.rindex(")")]
    out: dict[str, str] = {}
    for part in body.split(","):
        if part.strip():
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def docs_section(
    settings: Sequence[SettingInfo], extra: Sequence[tuple[str, str]] = (), auto: Mapping[str, str] | None = None
) -> str:
    """A Google-style ``Args:`` section for ``settings`` (and ``extra`` (name, text) pairs);
    ``auto`` gives the text for settings whose Python default is None."""
    lines = ["Args:"]
    for s in settings:
        if auto and s.name in auto:
            lines.append(f"    {s.name}: {s.doc.rstrip('.')} (default None: {auto[s.name]}).")
        else:
            lines.append(f"    {s.name}: {s.describe()}")
    for name, text in extra:
        lines.append(f"    {name}: {text}")
    return "\n".join(lines)


def add_fields(cls: type[T], settings: Sequence[SettingInfo], defaults: Mapping[str, Any] | None = None) -> None:
    """Adds a dataclass field per setting to ``cls``'s annotations and defaults (before
    ``dataclass`` is applied); ``defaults`` overrides a setting's default."""
    own = dict(cls.__dict__.get("__annotations__", {}))
    ann: dict[str, Any] = {}
    for s in settings:
        ann[s.name] = s.annotation
        value = (defaults or {}).get(s.name, s.python_default)
        setattr(cls, s.name, dataclasses.field(default=value))
    ann.update(own)  # the class's own (Python-side) fields come after the table's
    cls.__annotations__ = ann


def _finite(value: float) -> bool:
    """Whether ``value`` is a finite float."""
    return math.isfinite(value)


def config_class(settings: Callable[[], Sequence[SettingInfo]]) -> Callable[[type[T]], type[T]]:
    """Makes a frozen dataclass of a configuration class with one field per setting of the core's
    table (in its order, defaults from it) and appends the ``Args`` docs built from it."""

    def build(cls: type[T]) -> type[T]:
        table = settings()
        add_fields(cls, table)
        doc = (cls.__doc__ or "").rstrip()
        head, sep, tail = doc.partition("\n\n    Raises:")
        args = docs_section(table).replace("\n", "\n    ")
        cls.__doc__ = head + "\n\n    " + args + (sep + tail if sep else "") + "\n"
        return dataclass(frozen=True)(cls)

    return build
