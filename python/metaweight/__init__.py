"""metaweight: meta-reweighting for noisy and imbalanced classification, with a Swift core."""

from ._blas import configure_openblas as _configure_openblas

_configure_openblas()  # must run before the native library (and OpenBLAS) loads

from . import _core  # noqa: E402

__version__ = _core.version()
