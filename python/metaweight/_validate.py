"""Conversion and validation of user arrays and settings before they reach the native core.

Rules (the public API documents them where it takes arrays):

* Features become C-contiguous ``float32``. float16/32/64 and integer dtypes are converted; bool,
  complex, object, string, bytes, datetime/timedelta and structured dtypes are rejected with
  :class:`DTypeError`. Non-contiguous, strided, reversed or big-endian arrays are copied, never
  rejected. Nested Python lists work too.
* Labels become ``int64``. Integer dtypes (and Python ints) are accepted; floats are rejected even
  when their values are whole numbers (a float array of labels is almost always a mistake such as
  passing probabilities), as are bool and object arrays.
* Shapes are checked against the model: rank, per-example shape, emptiness and matching lengths
  raise :class:`ShapeError` naming the argument, the expected and the actual shape.
* NaN or infinite features (including float64 values that overflow float32) raise
  :class:`NonFiniteError` naming the argument and the first bad index.
* Labels outside ``[0, num_classes)`` raise :class:`LabelError` with the first bad index.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .errors import DTypeError, InvalidArgumentError, LabelError, NonFiniteError, ResourceError, ShapeError

_DTYPE_WHAT = {
    "b": "bool",
    "c": "complex",
    "O": "object",
    "U": "string",
    "S": "bytes",
    "M": "datetime",
    "m": "timedelta",
    "V": "structured/void",
}


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` converts to a finite float (False for ints too large for a float,
    NaN/inf and anything that is not a number)."""
    try:
        return math.isfinite(float(value))
    except (OverflowError, TypeError, ValueError):
        return False


def fmt_shape(shape: Sequence[int]) -> str:
    """Formats a shape like numpy does: ``(64,)``, ``(1, 8, 8)``."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _asarray(value: Any, name: str) -> np.ndarray:
    if value is None:
        raise InvalidArgumentError(f"{name}: expected an array, got None")
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except ValueError as e:  # ragged nested sequences
        raise ShapeError(f"{name}: cannot make an array of it ({e})") from None
    except TypeError as e:
        raise DTypeError(f"{name}: cannot make an array of {type(value).__name__} ({e})") from None


@contextlib.contextmanager
def _memory_for(name: str, a: np.ndarray, what: str) -> Iterator[None]:
    """Turns numpy's MemoryError while converting or checking ``a`` into :class:`ResourceError`
    (an allocation whose size the caller controls failed), e.g. the float32 copy of a huge
    broadcast view that costs nothing to make."""
    try:
        yield
    except ResourceError:
        raise
    except MemoryError:
        raise ResourceError(
            f"{name}: not enough memory for {what} of an array of shape {fmt_shape(a.shape)} "
            f"({a.size} values); pass fewer examples per call"
        ) from None


def _dtype_name(a: np.ndarray) -> str:
    what = _DTYPE_WHAT.get(a.dtype.kind)
    return f"{a.dtype} ({what})" if what and what not in str(a.dtype) else str(a.dtype)


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    idx = np.argwhere(mask)[0]
    return tuple(int(i) for i in idx)


def _fmt_index(idx: tuple[int, ...]) -> str:
    return str(idx[0]) if len(idx) == 1 else str(idx)


def check_finite(a: np.ndarray, name: str) -> None:
    """Raises NonFiniteError naming ``name`` and the first NaN/inf index of float array ``a``."""
    if not a.size:
        return
    # One read of ``a``: it may be the caller's own array, which another thread can rewrite between
    # two reads (a second mask could then be all finite, and the error lost as an IndexError).
    bad = ~np.isfinite(a)
    if bad.any():
        idx = _first_bad(bad)
        raise NonFiniteError(f"{name}: expected finite values, got {a[idx]} at index {_fmt_index(idx)}")


def as_features(
    x: Any, name: str = "x", input_shape: Sequence[int] | None = None, *, check_values: bool = True
) -> np.ndarray:
    """Converts a batch of features to a C-contiguous float32 array and checks it.

    Args:
        x: array-like of shape ``(N, *input_shape)``.
        name: argument name used in error messages.
        input_shape: the model's per-example shape; when None only dtype, emptiness and finiteness
            are checked.
        check_values: check for NaN/inf.

    Returns:
        A C-contiguous float32 array (``x`` itself when it already is one).

    Raises:
        DTypeError: unsupported dtype.
        ShapeError: wrong rank or per-example shape, or no examples.
        NonFiniteError: NaN or infinity.
    """
    a = _asarray(x, name)
    kind = a.dtype.kind
    if kind not in "fiu":
        raise DTypeError(
            f"{name}: expected a float or integer array, got dtype {_dtype_name(a)}"
            + (" (convert with x.astype(np.float32))" if kind == "b" else "")
        )
    if input_shape is not None:
        expected = tuple(int(d) for d in input_shape)
        want = "(N, " + ", ".join(str(d) for d in expected) + ")"
        if a.ndim != len(expected) + 1:
            hint = ""
            if a.ndim == len(expected) and tuple(a.shape) == expected:
                hint = f"; for a single example pass {name}[None]"
            elif a.ndim >= 1 and a.shape[0] > 0 and math.prod(a.shape[1:]) == math.prod(expected):
                hint = f"; reshape with {name}.reshape(-1, {', '.join(str(d) for d in expected)})"
            raise ShapeError(
                f"{name}: expected a {len(expected) + 1}-d array of shape {want}, "
                f"got a {a.ndim}-d array of shape {fmt_shape(a.shape)}{hint}"
            )
        if tuple(a.shape[1:]) != expected:
            hint = ""
            if math.prod(a.shape[1:]) == math.prod(expected):
                hint = f"; reshape with {name}.reshape(-1, {', '.join(str(d) for d in expected)})"
            raise ShapeError(
                f"{name}: expected per-example shape {fmt_shape(expected)} (array shape {want}), "
                f"got per-example shape {fmt_shape(a.shape[1:])} (array shape {fmt_shape(a.shape)}){hint}"
            )
    elif a.ndim < 1:
        raise ShapeError(f"{name}: expected an array with a batch dimension, got a 0-d value")
    if a.shape[0] == 0:
        raise ShapeError(
            f"{name}: expected at least one example, got an empty array of shape {fmt_shape(a.shape)}"
        )
    with _memory_for(name, a, "a float32 copy"):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported below
            out = np.ascontiguousarray(a, dtype=np.float32)
        if check_values and kind == "f":
            check_finite(out, name)
    return out


def as_labels(
    y: Any,
    name: str = "y",
    num_classes: int | None = None,
    n: int | None = None,
    x_name: str = "x",
) -> np.ndarray:
    """Converts class labels to a C-contiguous int64 vector and checks it.

    Args:
        y: integer array-like of shape ``(N,)``.
        name: argument name used in error messages.
        num_classes: when given, labels must lie in ``[0, num_classes)``.
        n: when given, the number of examples of the matching feature array.
        x_name: the name of that feature array (for the length-mismatch message).

    Returns:
        A C-contiguous int64 array that is a private copy of ``y`` (never a view of it).

    Raises:
        DTypeError: float, bool, object or other non-integer dtype.
        ShapeError: not 1-d, empty, or a length different from ``n``.
        LabelError: a label outside ``[0, num_classes)``.
    """
    a = _asarray(y, name)
    kind = a.dtype.kind
    if a.ndim == 1 and a.shape[0] == 0:
        raise ShapeError(f"{name}: expected at least one label, got an empty array")
    if kind == "f":
        raise DTypeError(
            f"{name}: expected integer class labels, got dtype {a.dtype} "
            f"(if the values are whole numbers, convert with {name}.astype(np.int64))"
        )
    if kind not in "iu":
        raise DTypeError(f"{name}: expected integer class labels, got dtype {_dtype_name(a)}")
    if a.ndim != 1:
        hint = ""
        if a.ndim == 2 and a.shape[1] == 1:
            hint = f"; use {name}.ravel()"
        elif a.ndim == 2:
            hint = f"; for one-hot labels use {name}.argmax(1)"
        raise ShapeError(f"{name}: expected a 1-d array of labels (N,), got shape {fmt_shape(a.shape)}{hint}")
    if a.shape[0] == 0:
        raise ShapeError(f"{name}: expected at least one label, got an empty array")
    if n is not None and a.shape[0] != n:
        raise ShapeError(
            f"{name}: expected {n} labels (one per example of {x_name}), got {a.shape[0]} "
            f"({x_name} has {n} examples, {name} has {a.shape[0]})"
        )
    if kind == "u" and a.dtype.itemsize == 8 and a.size and int(a.max()) > np.iinfo(np.int64).max:
        idx = int(np.argmax(a > np.iinfo(np.int64).max))
        raise LabelError(f"{name}: got label {int(a[idx])} at index {idx}, too large for int64")
    # A private copy, checked and then used instead of ``y``: another thread rewriting ``y`` during
    # a call cannot turn a checked label into an out-of-range index (numpy's fancy indexing, as
    # the core, would otherwise read the caller's memory again after the check).
    with _memory_for(name, a, "an int64 copy"):
        out = np.array(a, dtype=np.int64, order="C", copy=True)
        bad = (out < 0) | (out >= num_classes) if num_classes is not None else None
    if num_classes is not None and bad is not None:
        if bad.any():
            i = int(np.argmax(bad))
            raise LabelError(
                f"{name}: expected labels in [0, {num_classes}), got {int(out[i])} at index {i}"
                + (" (labels must be non-negative)" if out[i] < 0 else "")
            )
    return out


def as_weights(w: Any, name: str, n: int, *, check_values: bool = True) -> np.ndarray:
    """Converts per-example weights to a C-contiguous float32 vector of ``n`` finite values >= 0
    (``check_values=False``: conversion only, for an array the core checks itself).

    Raises:
        DTypeError: a non-numeric or bool dtype.
        ShapeError: not of shape ``(n,)``.
        NonFiniteError: NaN or infinity.
        InvalidArgumentError: a negative weight.
    """
    a = _asarray(w, name)
    if a.dtype.kind not in "fiu":
        raise DTypeError(f"{name}: expected a float array, got dtype {_dtype_name(a)}")
    if a.shape != (n,):
        raise ShapeError(f"{name}: expected shape ({n},) (one weight per example), got {fmt_shape(a.shape)}")
    with _memory_for(name, a, "a float32 copy"):
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.ascontiguousarray(a, dtype=np.float32)
        if not check_values:
            return out
        check_finite(out, name)
    if (out < 0).any():
        i = int(np.argmax(out < 0))
        raise InvalidArgumentError(f"{name}: expected non-negative weights, got {out[i]} at index {i}")
    return out


# ---- scalar settings ------------------------------------------------------------------------------


def as_optional_split(
    x: Any, y: Any, x_name: str, y_name: str, input_shape: Sequence[int], num_classes: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """An optional evaluation split (features and labels, both or neither), validated.

    Returns:
        ``(None, None)`` when both are None, else the arrays from :func:`as_features` and
        :func:`as_labels`.

    Raises:
        InvalidArgumentError: only one of the two given; otherwise as those two functions.
    """
    if (x is None) != (y is None):
        raise InvalidArgumentError(f"{x_name}, {y_name}: pass both or neither")
    if x is None:
        return None, None
    xa = as_features(x, x_name, input_shape)
    return xa, as_labels(y, y_name, num_classes, n=len(xa), x_name=x_name)


def as_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Checks an integer setting (bools are rejected) and returns it as ``int``.

    Raises:
        InvalidArgumentError: not an integer, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{name}: expected an integer, got {value!r} ({type(value).__name__})")
    v = int(value)
    if minimum is not None and v < minimum:
        raise InvalidArgumentError(f"{name}: expected an integer >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise InvalidArgumentError(f"{name}: expected an integer <= {maximum}, got {v}")
    return v


def as_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """Checks a finite real setting (bools are rejected) and returns it as ``float``.

    Raises:
        InvalidArgumentError: not a real number, NaN/inf, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name}: expected a number, got {value!r} ({type(value).__name__})")
    if not is_finite_number(value):
        raise InvalidArgumentError(f"{name}: expected a finite number, got {value!r}")
    v = float(value)
    if minimum is not None and (v < minimum or (not min_inclusive and v == minimum)):
        op = ">=" if min_inclusive else ">"
        raise InvalidArgumentError(f"{name}: expected a value {op} {minimum}, got {v}")
    if maximum is not None and (v > maximum or (not max_inclusive and v == maximum)):
        op = "<=" if max_inclusive else "<"
        raise InvalidArgumentError(f"{name}: expected a value {op} {maximum}, got {v}")
    return v


def as_bool(value: Any, name: str) -> bool:
    """Checks a boolean setting (``True``/``False``/numpy bool, or the ints 0 and 1)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise InvalidArgumentError(f"{name}: expected True or False, got {value!r}")


def as_shape(value: Any, name: str) -> tuple[int, ...]:
    """Checks a per-example input shape: an int ``D`` or a tuple ``(D,)`` / ``(C, H, W)``.

    Raises:
        ShapeError: wrong number of dimensions or a non-positive size.
        InvalidArgumentError: not integers.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        dims: tuple[int, ...] = (int(value),)
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise InvalidArgumentError(f"{name}: expected an int or a tuple of ints, got {value!r}") from None
        dims = tuple(as_int(d, f"{name}[{i}]") for i, d in enumerate(items))
    if len(dims) not in (1, 3):
        raise ShapeError(f"{name}: expected (D,) or (C, H, W), got {len(dims)} dimensions {dims}")
    if any(d <= 0 for d in dims):
        raise ShapeError(f"{name}: expected positive sizes, got {dims}")
    limit = 2**28 if len(dims) == 1 else 2**16
    if any(d >= limit for d in dims):
        raise ShapeError(f"{name}: expected sizes below {limit}, got {dims}")
    return dims


def as_text(value: Any, name: str, expected: str = "a string") -> str:
    """A text argument (a spec, a name) as ``str`` that the native core can read as UTF-8.

    Raises:
        InvalidArgumentError: not a ``str``, a NUL character, or a lone surrogate (text that is not
            valid Unicode and has no UTF-8 form, e.g. ``"\\ud800"``), naming ``name``.
    """
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name}: expected {expected}, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidArgumentError(f"{name}: expected {expected}, got one with a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgumentError(
            f"{name}: expected {expected}, got one with a lone surrogate {value[e.start]!r} at "
            f"position {e.start} (not valid Unicode text)"
        ) from None
    return value


def as_path(path: Any, name: str = "path") -> str:
    """A file path argument as ``str``: str, bytes or os.PathLike; not empty, no NUL characters.

    Raises:
        InvalidArgumentError: anything else, naming ``name``.
    """
    try:
        p: str | bytes = os.fspath(path)
    except TypeError:
        raise InvalidArgumentError(
            f"{name}: expected a path (str or os.PathLike), got {type(path).__name__}"
        ) from None
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if "\x00" in p:
        raise InvalidArgumentError(f"{name}: expected a file path, got one with a NUL character")
    if not p:
        raise InvalidArgumentError(f"{name}: expected a file path, got an empty string")
    try:
        os.fsencode(p)  # what the native side does; surrogateescape'd bytes pass, lone surrogates not
    except UnicodeEncodeError as e:
        raise InvalidArgumentError(
            f"{name}: expected a file path, got one with a lone surrogate {p[e.start]!r} at position {e.start} "
            "that has no file-system encoding"
        ) from None
    return p
