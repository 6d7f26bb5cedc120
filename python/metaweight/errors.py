"""The exceptions metaweight raises.

Every error derives from :class:`MetaweightError`, and each class also derives from the built-in
exception a Python user would expect, so ``except ValueError`` or ``except TypeError`` keep working::

    MetaweightError                         base of everything below
    ├── InvalidArgumentError (ValueError)   a value is out of range or malformed
    │   ├── ShapeError                      wrong rank, per-example shape or length; empty array
    │   └── LabelError                      a label is negative or >= the number of classes
    ├── NonFiniteError (FloatingPointError) NaN/inf in an input, or the loss/gradient diverged
    ├── DTypeError (TypeError)              an array has an unsupported dtype (bool, complex, ...)
    ├── NotCopyableError (TypeError)        pickling or copying a network, trainer, strategy or search
    ├── StateError (RuntimeError)           the call is not allowed in the object's current state
    │   ├── ClosedError                     the network or trainer was closed
    │   └── BusyError                       the object is in use by another thread
    ├── CheckpointError (OSError)           a checkpoint is missing, truncated, corrupt or mismatched
    ├── ResourceError (MemoryError)         an allocation whose size you control is over its limit or failed
    └── DataFileError (FileNotFoundError)   a dataset file or folder (MNIST, CIFAR, IDX) is missing or unreadable

Messages name the argument at fault, what was expected and what came, e.g.
``ShapeError("x: expected per-example shape (64,), got (8, 8) ...")``.

The classes are defined by the native extension (so errors raised deep inside the Swift core
arrive as these same types) and re-exported here and from the top-level ``metaweight`` package;
:class:`DataFileError` (raised by the pure-Python dataset loaders) and :class:`NotCopyableError`
(raised by the Python handle classes) are defined here.
"""

from __future__ import annotations

from ._core import (
    BusyError,
    CheckpointError,
    ClosedError,
    DTypeError,
    InvalidArgumentError,
    LabelError,
    MetaweightError,
    NonFiniteError,
    ResourceError,
    ShapeError,
    StateError,
)


class DataFileError(MetaweightError, FileNotFoundError):
    """A dataset file or folder is missing or cannot be read (also a ``FileNotFoundError``, as before)."""


class NotCopyableError(MetaweightError, TypeError):
    """An object that owns a native handle (network, trainer, strategy, search) cannot be pickled or
    copied: the copy would share the handle. Also a ``TypeError``, as ``pickle`` raises."""


__all__ = [
    "BusyError",
    "CheckpointError",
    "ClosedError",
    "DTypeError",
    "DataFileError",
    "InvalidArgumentError",
    "LabelError",
    "MetaweightError",
    "NonFiniteError",
    "NotCopyableError",
    "ResourceError",
    "ShapeError",
    "StateError",
]
