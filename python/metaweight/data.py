"""Data sets, loaders and preprocessing.

Everything here works on numpy arrays and nothing downloads: the loaders read files that are
already on disk (or, for :func:`load_digits`, the copy bundled with scikit-learn). Conventions
used throughout metaweight:

* features are ``float32``; images are ``(N, C, H, W)``, flat features ``(N, D)``;
* labels are ``int64`` in ``[0, num_classes)``.

Loaders return a :class:`Dataset`. The data conditions of the papers (label noise, long-tailed
subsampling, the clean meta set) live in :mod:`metaweight.conditions`.

Example::

    from metaweight import data
    ds = data.load_mnist("/path/to/mnist")
    (x_train, x_test), (mean, std) = data.normalize(ds.x_train, ds.x_test)
    for xb, yb in data.batches(x_train, ds.y_train, 100, order=rng.permutation(len(x_train))):
        ...
"""

from __future__ import annotations

import gzip
import os
import pickle
import stat
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np

from . import _core
from ._validate import is_finite_number
from .errors import DataFileError

__all__ = [
    "Dataset",
    "batches",
    "class_counts",
    "load_cifar",
    "load_digits",
    "load_idx",
    "load_mnist",
    "load_mnist_t10k",
    "normalize",
    "split",
    "split_indices",
]

PathLike = Union[str, "os.PathLike[str]"]
SeedLike = Union[int, np.integer, np.random.Generator, np.random.SeedSequence]


# ----------------------------------------------------------------------------------------------
# Validation helpers (shared with metaweight.conditions)
# ----------------------------------------------------------------------------------------------


def _rng(seed: SeedLike, name: str = "seed") -> np.random.Generator:
    """Returns a generator for ``seed`` (an int >= 0, a SeedSequence or a Generator)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise _core.InvalidArgumentError(
            f"{name}: expected a non-negative int or numpy Generator, got {type(seed).__name__} {seed!r}"
        )
    if seed < 0:
        raise _core.InvalidArgumentError(f"{name}: expected a non-negative int, got {seed}")
    return np.random.default_rng(int(seed))


def _check_int(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise _core.InvalidArgumentError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise _core.InvalidArgumentError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def _check_fraction(value: Any, name: str, *, open_low: bool = False, open_high: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _core.InvalidArgumentError(f"{name}: expected a number in [0, 1], got {type(value).__name__}")
    v = float(value) if is_finite_number(value) else float("nan")
    low_ok = v > 0.0 if open_low else v >= 0.0
    high_ok = v < 1.0 if open_high else v <= 1.0
    if not (np.isfinite(v) and low_ok and high_ok):
        lo = "(0" if open_low else "[0"
        hi = "1)" if open_high else "1]"
        raise _core.InvalidArgumentError(f"{name}: expected a number in {lo}, {hi}, got {value!r}")
    return v


def _as_labels(y: Any, num_classes: int | None = None, name: str = "y") -> np.ndarray:
    """Validates a 1-D integer label array and returns it as a new int64 array."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError):
        raise _core.ShapeError(
            f"{name}: expected a 1-D label array, got a ragged {type(y).__name__}"
        ) from None
    if arr.ndim != 1:
        raise _core.ShapeError(f"{name}: expected a 1-D label array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise _core.DTypeError(f"{name}: expected integer labels, got dtype {arr.dtype}")
    out = arr.astype(np.int64, copy=True)
    if num_classes is not None and out.size:
        lo, hi = int(out.min()), int(out.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise _core.LabelError(
                f"{name}: label {bad} is outside [0, {num_classes}) (num_classes={num_classes})"
            )
    return out


#: Largest class count the helpers accept (per-class arrays of this length are allocated).
MAX_CLASSES = 1_000_000


def _check_num_classes(num_classes: Any, minimum: int = 1) -> int:
    c = _check_int(num_classes, "num_classes", minimum)
    if c > MAX_CLASSES:
        raise _core.InvalidArgumentError(f"num_classes: expected at most {MAX_CLASSES}, got {c}")
    return c


def _check_xy(x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise _core.ShapeError(
            f"x and y: expected the same number of examples, got x {x.shape} and y {y.shape}"
        )


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A train/test pair of feature and label arrays.

    Attributes:
        x_train: Training features, float32, ``(N, C, H, W)`` or ``(N, D)``.
        y_train: Training labels, int64, ``(N,)``.
        x_test: Test features, same layout as ``x_train``.
        y_test: Test labels, int64.
        num_classes: Number of classes C; labels lie in ``[0, C)``.
        name: A short name, e.g. ``"digits"``, ``"mnist"``, ``"cifar10"``.
        classes: Optional class names, one per class.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_xy(self.x_train, self.y_train)
        _check_xy(self.x_test, self.y_test)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise _core.ShapeError(
                f"Dataset: train and test feature shapes differ: {self.x_train.shape} vs {self.x_test.shape}"
            )
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise _core.InvalidArgumentError(
                f"Dataset: {len(self.classes)} class names for num_classes={self.num_classes}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. ``(1, 28, 28)`` or ``(784,)``."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, num_classes={self.num_classes}, "
            f"x_train={self.x_train.shape}, x_test={self.x_test.shape})"
        )


# ----------------------------------------------------------------------------------------------
# Splits, batches, counts
# ----------------------------------------------------------------------------------------------


def _largest_remainder(quotas: np.ndarray, total: int) -> np.ndarray:
    """Integer allocation of ``total`` proportional to ``quotas`` (ties to the lower index)."""
    base: np.ndarray = np.floor(quotas).astype(np.int64)
    short = total - int(base.sum())
    if short > 0:
        order = np.argsort(-(quotas - base), kind="stable")
        base[order[:short]] += 1
    return base


def split_indices(
    y: np.ndarray, fraction: float, seed: SeedLike = 0, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Splits example indices into two disjoint parts, optionally stratified by label.

    The second part holds ``round(fraction * N)`` examples. With ``stratify=True`` every class is
    split in the same proportion (per-class counts allocated by largest remainder so that the
    total is exact). Both index arrays are sorted ascending.

    Args:
        y: Labels, 1-D integer array of length N.
        fraction: Fraction of examples in the second (test) part, in [0, 1].
        seed: Seed or numpy Generator; the split is a deterministic function of it.
        stratify: Keep class proportions equal in both parts.

    Returns:
        ``(first, second)`` int64 index arrays.

    Raises:
        InvalidArgumentError: For a fraction outside [0, 1] or a bad seed.
        ShapeError: If ``y`` is not 1-D.
        DTypeError: If ``y`` is not integer.
    """
    labels = _as_labels(y)
    frac = _check_fraction(fraction, "fraction")
    rng = _rng(seed)
    n = labels.shape[0]
    n_second = round(frac * n)
    if not stratify or n == 0:
        perm = rng.permutation(n)
        return np.sort(perm[n_second:]).astype(np.int64), np.sort(perm[:n_second]).astype(np.int64)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    take = _largest_remainder(frac * counts.astype(np.float64), n_second)
    take = np.minimum(take, counts)
    first: list[np.ndarray] = []
    second: list[np.ndarray] = []
    for k in range(classes.shape[0]):
        idx = np.flatnonzero(inverse == k)
        idx = idx[rng.permutation(idx.shape[0])]
        second.append(idx[: take[k]])
        first.append(idx[take[k] :])
    return (
        np.sort(np.concatenate(first)).astype(np.int64),
        np.sort(np.concatenate(second)).astype(np.int64),
    )


def split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: SeedLike = 0, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Splits ``(x, y)`` into train and test parts, like scikit-learn's ``train_test_split``.

    Args:
        x: Features, first axis N.
        y: Labels, 1-D integer array of length N.
        fraction: Fraction of examples in the test part, in [0, 1].
        seed: Seed or numpy Generator.
        stratify: Keep class proportions equal in both parts (see :func:`split_indices`).

    Returns:
        ``(x_train, y_train, x_test, y_test)``; labels are int64.

    Raises:
        InvalidArgumentError: For a fraction outside [0, 1] or a bad seed.
        ShapeError: If ``x`` and ``y`` disagree on N or ``y`` is not 1-D.
        DTypeError: If ``y`` is not integer.
    """
    xa = np.asarray(x)
    labels = _as_labels(y)
    _check_xy(xa, labels)
    a, b = split_indices(labels, fraction, seed, stratify)
    return xa[a], labels[a], xa[b], labels[b]


def class_counts(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts examples per class.

    Args:
        y: Labels, 1-D integer array with values in ``[0, num_classes)``.
        num_classes: Number of classes C.

    Returns:
        int64 array of shape ``(C,)``.

    Raises:
        InvalidArgumentError: If ``num_classes`` < 1 (LabelError for labels out of range).
        ShapeError: If ``y`` is not 1-D.
        DTypeError: If ``y`` is not integer.
    """
    c = _check_num_classes(num_classes)
    labels = _as_labels(y, c)
    return np.bincount(labels, minlength=c).astype(np.int64)


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    order: Sequence[int] | np.ndarray | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterates over ``(x, y)`` in mini-batches following an index order.

    The caller supplies the order (e.g. a seeded permutation from the Trainer); batches are the
    consecutive chunks of ``order``. Arrays are gathered with fancy indexing, so each batch is a
    fresh copy.

    Args:
        x: Features, first axis N.
        y: Labels, first axis N.
        batch_size: Examples per batch, >= 1.
        order: Indices into ``x``/``y`` (any length, repeats allowed); ``None`` is ``0..N-1``.
        drop_last: Skip a final batch smaller than ``batch_size``.

    Yields:
        ``(x_batch, y_batch)`` pairs.

    Raises:
        InvalidArgumentError: For ``batch_size`` < 1 or indices outside ``[0, N)``.
        ShapeError: If ``x`` and ``y`` disagree on N or ``order`` is not 1-D.
    """
    xa = np.asarray(x)
    ya = np.asarray(y)
    _check_xy(xa, ya)
    bs = _check_int(batch_size, "batch_size", 1)
    n = xa.shape[0]
    if order is None:
        idx = np.arange(n, dtype=np.int64)
    else:
        try:
            idx = np.asarray(order)
        except (ValueError, TypeError) as e:  # ragged nested lists, or objects numpy cannot convert
            raise _core.ShapeError(f"order: expected a 1-D index array, got {type(order).__name__} ({e})") from None
        if idx.ndim != 1:
            raise _core.ShapeError(f"order: expected a 1-D index array, got shape {idx.shape}")
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise _core.DTypeError(f"order: expected integer indices, got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise _core.InvalidArgumentError(
                f"order: indices must lie in [0, {n}), got [{idx.min()}, {idx.max()}]"
            )

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        stop = (idx.shape[0] // bs) * bs if drop_last else idx.shape[0]
        for start in range(0, stop, bs):
            chunk = idx[start : start + bs]
            yield xa[chunk], ya[chunk]

    return generate()


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------


def _real_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a NumPy array of real numbers (bool, int or float); DTypeError otherwise."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError):
        raise _core.DTypeError(
            f"{name}: expected an array of real numbers, got {type(value).__name__}"
        ) from None
    if a.dtype.kind not in "biuf":
        raise _core.DTypeError(f"{name}: expected an array of real numbers, got dtype {a.dtype}")
    return a


def _stat_shape(x: np.ndarray) -> tuple[int, ...]:
    """The broadcast shape of per-channel / per-feature statistics for ``x``."""
    if x.ndim in (2, 4) and 0 in x.shape[1:]:
        raise _core.ShapeError(f"x_train: expected non-empty examples, got shape {x.shape}")
    if x.ndim == 4:
        return (1, x.shape[1], 1, 1)
    if x.ndim == 2:
        return (1, x.shape[1])
    raise _core.ShapeError(f"x_train: expected (N, C, H, W) images or (N, D) features, got shape {x.shape}")


def normalize(
    x_train: np.ndarray,
    *others: np.ndarray,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    eps: float = 1e-8,
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray]]:
    """Standardises features with statistics fitted on the training set.

    Images ``(N, C, H, W)`` are normalised per channel (statistics over N, H and W); flat
    features ``(N, D)`` per feature. A channel/feature whose standard deviation is below ``eps``
    (e.g. an always-black border pixel) is divided by 1 instead. The same statistics are applied
    to every array in ``others`` (validation, test, meta sets).

    Args:
        x_train: Training features; the statistics are fitted on it unless given.
        *others: More arrays with the same per-example shape as ``x_train``.
        mean: Per-channel (C,) or per-feature (D,) mean to use instead of fitting it.
        std: Per-channel or per-feature standard deviation to use instead of fitting it.
        eps: Standard deviations below this are replaced by 1.

    Returns:
        ``(arrays, (mean, std))``: ``arrays`` is the tuple of normalised float32 arrays,
        ``x_train`` first, then ``others`` in order; ``mean`` and ``std`` are the float32
        statistics used (``std`` after the ``eps`` replacement), shape (C,) or (D,).

    Example::

        (x_train, x_test), (mean, std) = normalize(x_train, x_test)

    Raises:
        ShapeError: For a layout other than 4-D/2-D, mismatched ``others``, or statistics of
            the wrong shape.
        NonFiniteError: For NaN/inf in given statistics or in ``x_train`` when fitting them.
    """
    if (
        isinstance(eps, (bool, np.bool_))
        or not isinstance(eps, (int, float, np.integer, np.floating))
        or not (is_finite_number(eps) and eps >= 0)
    ):
        raise _core.InvalidArgumentError(f"eps: expected a finite number >= 0, got {eps!r}")
    xt = _real_array(x_train, "x_train")
    others = tuple(_real_array(o, f"others[{i}]") for i, o in enumerate(others))
    bshape = _stat_shape(xt)
    for i, o in enumerate(others):
        if np.asarray(o).shape[1:] != xt.shape[1:]:
            raise _core.ShapeError(
                f"others[{i}]: per-example shape {np.asarray(o).shape[1:]} differs from "
                f"x_train's {xt.shape[1:]}"
            )
    width = bshape[1]

    fitted: tuple[np.ndarray, np.ndarray] | None = None

    def fit() -> tuple[np.ndarray, np.ndarray]:
        nonlocal fitted
        if fitted is None:
            if xt.shape[0] == 0:
                raise _core.ShapeError("x_train: cannot fit mean/std on an empty array")
            fitted = _channel_stats(xt)
        return fitted

    def given(value: Any, name: str) -> np.ndarray:
        try:
            v = (
                np.asarray(value, dtype=np.float64).reshape(-1)
                if np.ndim(value)
                else np.full(width, float(value))
            )
        except (TypeError, ValueError):
            raise _core.DTypeError(f"{name}: expected real numbers, got {value!r:.80}") from None
        if v.shape != (width,):
            raise _core.ShapeError(f"{name}: expected shape ({width},), got {np.asarray(value).shape}")
        if not np.all(np.isfinite(v)):
            raise _core.NonFiniteError(f"{name}: values must be finite")
        return v

    m = fit()[0] if mean is None else given(mean, "mean")
    s = fit()[1] if std is None else given(std, "std")
    if std is not None and np.any(s < 0):
        raise _core.InvalidArgumentError("std: values must be non-negative")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s))):
        raise _core.NonFiniteError("x_train: contains NaN or inf; cannot fit mean/std")
    s = np.where(s < eps, 1.0, s)
    m32, s32 = m.astype(np.float32), s.astype(np.float32)
    mb, sb = m32.reshape(bshape), s32.reshape(bshape)
    out = tuple(
        ((np.asarray(a, dtype=np.float32) - mb) / sb).astype(np.float32, copy=False) for a in (xt, *others)
    )
    return out, (m32, s32)


def _channel_stats(x: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (4-D) or per-feature (2-D) mean and population std, two passes in float64.

    Works in chunks of examples so that no float64 copy of the whole array is made.
    """
    n = x.shape[0]
    v = x.reshape(n, x.shape[1], -1)  # (N, C, H*W) or (N, D, 1)
    count = float(n * v.shape[2])
    total = np.zeros(v.shape[1])
    for i in range(0, n, chunk):
        total += v[i : i + chunk].sum(axis=(0, 2), dtype=np.float64)
    mean = total / count
    sq = np.zeros(v.shape[1])
    for i in range(0, n, chunk):
        d = v[i : i + chunk].astype(np.float64) - mean[None, :, None]
        sq += np.einsum("ncp,ncp->c", d, d)
    return mean, np.sqrt(sq / count)


# ----------------------------------------------------------------------------------------------
# scikit-learn digits
# ----------------------------------------------------------------------------------------------


def load_digits(flatten: bool = False, test_fraction: float = 0.3, seed: SeedLike = 0) -> Dataset:
    """Loads scikit-learn's bundled digits: 1,797 real 8x8 handwritten digits, 10 classes.

    The data ship with scikit-learn, so nothing is downloaded. Pixel values (0..16) are scaled to
    [0, 1]; the train/test split is stratified and seeded (:func:`split_indices`).

    Args:
        flatten: Return ``(N, 64)`` features instead of ``(N, 1, 8, 8)`` images.
        test_fraction: Fraction of examples in the test set, in (0, 1).
        seed: Seed of the split.

    Returns:
        A :class:`Dataset` named ``"digits"``.

    Raises:
        ImportError: If scikit-learn is not installed.
        InvalidArgumentError: For a bad ``test_fraction`` or seed.
    """
    frac = _check_fraction(test_fraction, "test_fraction", open_low=True, open_high=True)
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits needs scikit-learn (its digits data set is bundled with it); install it with "
            "`pip install scikit-learn` or `pip install metaweight[data]`"
        ) from e
    bunch = _sk_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    x = x.reshape(-1, 64) if flatten else x.reshape(-1, 1, 8, 8)
    tr, te = split_indices(y, frac, seed, stratify=True)
    return Dataset(
        x_train=np.ascontiguousarray(x[tr]),
        y_train=y[tr],
        x_test=np.ascontiguousarray(x[te]),
        y_test=y[te],
        num_classes=10,
        name="digits",
        classes=tuple(str(i) for i in range(10)),
    )


# ----------------------------------------------------------------------------------------------
# IDX (MNIST)
# ----------------------------------------------------------------------------------------------

#: IDX type codes (third byte of the magic number); data are big-endian.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _open_regular(path: Path) -> BinaryIO:
    """Opens ``path`` for reading if it is a regular file. A FIFO (whose ``open()`` would block
    until a writer comes), a device such as ``/dev/zero`` (endless), a directory or a socket is
    refused with :class:`DataFileError`, without blocking."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a directory" if stat.S_ISDIR(mode)
                else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file"
            )
            raise DataFileError(f"{path}: not a regular file ({kind}); expected a dataset file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        with _open_regular(path) as f:
            raw = f.read()
    except DataFileError:
        raise
    except FileNotFoundError:
        raise DataFileError(f"{path}: no such file") from None
    except OSError as e:  # a directory, no permission, an I/O error
        raise DataFileError(f"{path}: cannot read the file ({e.strerror or e})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise _core.InvalidArgumentError(f"{path}: corrupt or truncated gzip data ({e})") from None


def load_idx(path: PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST format), raw or gzip-compressed.

    The header is the magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32
    dimensions, then the big-endian data. Gzip compression is recognised from the content, not
    the file name. If ``path`` does not exist but ``path + ".gz"`` does, that file is read.

    Args:
        path: The file to read.

    Returns:
        An array of the stored shape and type, in native byte order (uint8 for MNIST).

    Raises:
        FileNotFoundError: If neither ``path`` nor ``path.gz`` exists.
        InvalidArgumentError: For a corrupt header, an unknown type code, or a data section whose
            size does not match the header (truncated or trailing bytes).
    """
    p = Path(path)
    if not p.exists():
        gz = p.with_name(p.name + ".gz")
        if gz.exists():
            p = gz
        else:
            raise DataFileError(f"IDX file not found: {p} (nor {gz.name})")
    raw = _read_maybe_gzip(p)
    if len(raw) < 4:
        raise _core.InvalidArgumentError(
            f"{p}: not an IDX file: {len(raw)} bytes, shorter than the 4-byte magic"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise _core.InvalidArgumentError(
            f"{p}: not an IDX file: magic number starts with 0x{raw[0]:02x}{raw[1]:02x}, expected 0x0000"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise _core.InvalidArgumentError(f"{p}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise _core.InvalidArgumentError(f"{p}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _core.InvalidArgumentError(
            f"{p}: truncated IDX header: {ndim} dimensions need {header} bytes, file has {len(raw)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise _core.InvalidArgumentError(
            f"{p}: IDX data {what}: header dims {dims} of {dtype.name} need {expected} bytes, found {actual}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(directory: Path, prefix: str, kind: str) -> Path | None:
    """Finds e.g. ``train-images-idx3-ubyte`` (also ``.gz`` and ``train-images.idx3-ubyte``)."""
    for name in (f"{prefix}-{kind}", f"{prefix}-{kind}".replace("-idx", ".idx")):
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _mnist_pair(
    directory: Path, prefix: str, normalize: bool, flatten: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    img_path = _find_idx(directory, prefix, "images-idx3-ubyte")
    lbl_path = _find_idx(directory, prefix, "labels-idx1-ubyte")
    if img_path is None and lbl_path is None:
        return None
    if img_path is None or lbl_path is None:
        missing = f"{prefix}-images-idx3-ubyte" if img_path is None else f"{prefix}-labels-idx1-ubyte"
        raise DataFileError(f"{directory}: found one {prefix} MNIST file but not {missing}[.gz]")
    images = load_idx(img_path)
    labels = load_idx(lbl_path)
    if images.ndim != 3:
        raise _core.InvalidArgumentError(
            f"{img_path}: expected 3-D (N, H, W) images, got shape {images.shape}"
        )
    if labels.ndim != 1:
        raise _core.InvalidArgumentError(f"{lbl_path}: expected 1-D labels, got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise _core.InvalidArgumentError(
            f"{directory}: {images.shape[0]} {prefix} images but {labels.shape[0]} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise _core.InvalidArgumentError(f"{lbl_path}: MNIST labels must lie in 0..9")
    x = images.astype(np.float32)
    if normalize:
        x /= np.float32(255.0) if images.dtype == np.uint8 else np.float32(max(float(images.max()), 1.0))
    n = x.shape[0]
    x = x.reshape(n, -1) if flatten else x.reshape(n, 1, *images.shape[1:])
    return np.ascontiguousarray(x), labels.astype(np.int64)


def load_mnist_t10k(
    directory: PathLike,
    test_fraction: float = 0.2,
    seed: SeedLike = 0,
    flatten: bool = False,
    normalize: bool = True,
) -> Dataset:
    """Loads only MNIST's 10,000-image test set and splits it into train and test parts.

    For environments that hold just ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``
    (raw or ``.gz``). The split is stratified and seeded (:func:`split_indices`); the returned
    "test" part is therefore *not* the official MNIST test set.

    Args:
        directory: Folder holding the t10k files.
        test_fraction: Fraction of the 10,000 images put in the test part, in (0, 1).
        seed: Seed of the split.
        flatten: Return ``(N, 784)`` instead of ``(N, 1, 28, 28)``.
        normalize: Scale pixels to [0, 1] (divide by 255); otherwise keep 0..255 as float32.

    Returns:
        A :class:`Dataset` named ``"mnist-t10k"``.

    Raises:
        FileNotFoundError: If the t10k files are missing.
        InvalidArgumentError: For corrupt files or a bad fraction/seed.
    """
    frac = _check_fraction(test_fraction, "test_fraction", open_low=True, open_high=True)
    d = Path(directory)
    pair = _mnist_pair(d, "t10k", normalize, flatten)
    if pair is None:
        raise DataFileError(f"{d}: no t10k-images-idx3-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz]")
    x, y = pair
    tr, te = split_indices(y, frac, seed, stratify=True)
    return Dataset(x[tr], y[tr], x[te], y[te], 10, "mnist-t10k", tuple(str(i) for i in range(10)))


def load_mnist(
    directory: PathLike,
    flatten: bool = False,
    normalize: bool = True,
    test_fraction: float = 0.2,
    seed: SeedLike = 0,
) -> Dataset:
    """Loads MNIST from IDX files in ``directory`` (raw or ``.gz``; nothing is downloaded).

    With both the ``train-*`` and ``t10k-*`` files present this is the official 60,000/10,000
    split. When only one of the two sets is present (e.g. just the 10,000 ``t10k`` images, as in
    a minimal environment) that set is split into train and test parts with a seeded, stratified
    split of ``test_fraction``, and the dataset is named ``"mnist-t10k"`` (or ``"mnist-train"``).

    Args:
        directory: Folder holding the IDX files.
        flatten: Return ``(N, 784)`` instead of ``(N, 1, 28, 28)``.
        normalize: Scale pixels to [0, 1] (divide by 255); otherwise keep 0..255 as float32.
        test_fraction: Test fraction, used only when a single set is present.
        seed: Seed of that split.

    Returns:
        A :class:`Dataset`.

    Raises:
        FileNotFoundError: If no MNIST files are found.
        InvalidArgumentError: For corrupt files (bad magic, truncated data, count mismatch).
    """
    d = Path(directory)
    if not d.is_dir():
        raise DataFileError(f"MNIST directory not found: {d}")
    train = _mnist_pair(d, "train", normalize, flatten)
    test = _mnist_pair(d, "t10k", normalize, flatten)
    names = tuple(str(i) for i in range(10))
    if train is not None and test is not None:
        return Dataset(train[0], train[1], test[0], test[1], 10, "mnist", names)
    if train is None and test is None:
        raise DataFileError(
            f"{d}: no MNIST IDX files (train-images-idx3-ubyte, t10k-images-idx3-ubyte, ... or their .gz)"
        )
    frac = _check_fraction(test_fraction, "test_fraction", open_low=True, open_high=True)
    x, y = train if train is not None else test  # type: ignore[misc]
    tr, te = split_indices(y, frac, seed, stratify=True)
    name = "mnist-train" if train is not None else "mnist-t10k"
    return Dataset(x[tr], y[tr], x[te], y[te], 10, name, names)


# ----------------------------------------------------------------------------------------------
# CIFAR python batches
# ----------------------------------------------------------------------------------------------

#: Globals a CIFAR pickle may reference (numpy array reconstruction only).
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    ("builtins", "object"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds plain containers and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with _open_regular(path) as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except DataFileError:
        raise
    except FileNotFoundError:
        raise DataFileError(f"{path}: no such file") from None
    except OSError as e:  # a directory, no permission, an I/O error
        raise DataFileError(f"{path}: cannot read the file ({e.strerror or e})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise _core.InvalidArgumentError(f"{path}: not a readable CIFAR python batch ({e})") from None
    if not isinstance(obj, dict):
        raise _core.InvalidArgumentError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise _core.InvalidArgumentError(f"{path}: missing key {key!r} (has {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8:
        raise _core.InvalidArgumentError(f"{path}: expected uint8 data, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _core.InvalidArgumentError(f"{path}: expected data of shape (N, 3072), got {data.shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise _core.InvalidArgumentError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise _core.InvalidArgumentError(f"{path}: labels must be integers, got {labels.dtype}")
    return data, labels.astype(np.int64)


def _names(meta_path: Path, key: str) -> tuple[str, ...] | None:
    if not meta_path.is_file():
        return None
    meta = _unpickle(meta_path)
    names = meta.get(key)
    if names is None:
        return None
    return tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)


def load_cifar(directory: PathLike, num_classes: int = 10, flatten: bool = False) -> Dataset:
    """Loads CIFAR-10 or CIFAR-100 from the python-pickle batches (nothing is downloaded).

    CIFAR-10: ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` (keys ``data``, ``labels``)
    and optionally ``batches.meta`` (``label_names``). CIFAR-100: ``train``, ``test`` (keys
    ``data``, ``fine_labels``) and optionally ``meta`` (``fine_label_names``). ``directory`` may
    be the batch folder itself or its parent holding ``cifar-10-batches-py`` /
    ``cifar-100-python``. Keys may be bytes (as in the official files) or str. The unpickler
    only rebuilds containers and numpy arrays; any other pickled global is refused.

    Args:
        directory: Folder with the batches.
        num_classes: 10 for CIFAR-10, 100 for CIFAR-100.
        flatten: Return ``(N, 3072)`` instead of ``(N, 3, 32, 32)``.

    Returns:
        A :class:`Dataset` (``"cifar10"`` or ``"cifar100"``) with float32 pixels in [0, 1].

    Raises:
        InvalidArgumentError: For ``num_classes`` other than 10/100, corrupt batches, or labels
            out of range.
        FileNotFoundError: If a required batch is missing.
    """
    if num_classes not in (10, 100) or isinstance(num_classes, bool):
        raise _core.InvalidArgumentError(f"num_classes: expected 10 or 100, got {num_classes!r}")
    d = Path(directory)
    sub = d / ("cifar-10-batches-py" if num_classes == 10 else "cifar-100-python")
    if sub.is_dir():
        d = sub
    if num_classes == 10:
        train_files = [d / f"data_batch_{i}" for i in range(1, 6)]
        test_files = [d / "test_batch"]
        label_key, meta_path, names_key = "labels", d / "batches.meta", "label_names"
    else:
        train_files, test_files = [d / "train"], [d / "test"]
        label_key, meta_path, names_key = "fine_labels", d / "meta", "fine_label_names"
    missing = [p.name for p in (*train_files, *test_files) if not p.is_file()]
    if missing:
        raise DataFileError(f"{d}: missing CIFAR-{num_classes} batch file(s): {', '.join(missing)}")

    def read(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_cifar_batch(p, label_key) for p in files]
        data = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise _core.InvalidArgumentError(
                f"{d}: CIFAR-{num_classes} labels must lie in [0, {num_classes}), "
                f"got [{labels.min()}, {labels.max()}]"
            )
        x = data.astype(np.float32) / np.float32(255.0)
        x = x if flatten else x.reshape(-1, 3, 32, 32)
        return np.ascontiguousarray(x), labels

    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files)
    classes = _names(meta_path, names_key)
    if classes is not None and len(classes) != num_classes:
        classes = None
    return Dataset(x_train, y_train, x_test, y_test, num_classes, f"cifar{num_classes}", classes)
