"""metaweight: meta-reweighting for noisy and imbalanced classification, with a Swift core.

The public API::

    import metaweight as mw

    net = mw.mlp(64, hidden=(256, 256), num_classes=10, seed=0)     # or mw.build([...], input_shape)
    trainer = mw.Trainer(net, mw.SGD(lr=0.1), mw.MultiStep([15]), seed=0)
    history = trainer.fit(x_train, y_train, epochs=20, x_val=x_test, y_val=y_test)
    trainer.evaluate(x_test, y_test)                                  # {'loss': ..., 'accuracy': ...}

Modules: :mod:`metaweight.models` (networks, layers, presets), :mod:`metaweight.optim`
(optimizers, schedules), :mod:`metaweight.trainer` (training), :mod:`metaweight.metrics`,
:mod:`metaweight.errors` (the exception hierarchy), :mod:`metaweight.callbacks` (``fit``'s callback
protocol), :mod:`metaweight.distributed` (exact data-parallel training on Ray or threads),
:mod:`metaweight.integrations` (TensorBoard and MLflow callbacks, optional extras).
"""

from ._blas import configure_openblas as _configure_openblas

_configure_openblas()  # must run before the native library (and OpenBLAS) loads

from . import _core

__version__: str = _core.version()

from . import callbacks, conditions, data, distributed, law, methods, metrics
from ._validate import as_int as _as_int
from .errors import (
    BusyError,
    CheckpointError,
    ClosedError,
    DataFileError,
    DTypeError,
    InvalidArgumentError,
    LabelError,
    MetaweightError,
    NonFiniteError,
    NotCopyableError,
    ResourceError,
    ShapeError,
    StateError,
)
from .label_issues import label_issues as label_issues
from .methods import (
    ERM,
    GDW,
    L2RW,
    Bootstrap,
    ClassBalanced,
    ClassBalancedSampling,
    FineTune,
    Focal,
    HardMining,
    InverseFrequency,
    Method,
    MWNet,
    RandomWeights,
    SelfPaced,
)
from .metrics import accuracy, confusion_matrix, per_class_accuracy
from .models import (
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    Linear,
    MaxPool2d,
    Network,
    ReLU,
    Residual,
    Sequential,
    ShortcutA,
    build,
    lenet5,
    mlp,
    resnet32,
    wide_resnet,
)
from .monitor import (
    MetaweightWarning,
    StepDiagnostics,
    TrainingCollapseWarning,
    WeightSaturationWarning,
)
from .optim import SGD, Adam, Constant, Cosine, MultiStep, Optimizer, Schedule
from .trainer import Augment, EpochRecord, History, SkippedStep, StepResult, Trainer


def set_threads(n: int) -> None:
    """Sets the number of threads of metaweight's kernels and of OpenBLAS (process-wide).

    Args:
        n: thread count, 1 to 1024.

    Raises:
        InvalidArgumentError: ``n`` out of range or not an integer.
    """
    _core.set_threads(_as_int(n, "n", minimum=1, maximum=1024))


def get_threads() -> int:
    """The number of threads metaweight's kernels and OpenBLAS use."""
    return int(_core.get_threads())


def blas_core() -> str:
    """The OpenBLAS kernel set in use (e.g. ``"SkylakeX"``, ``"Haswell"``)."""
    return str(_core.blas_core())


def blas_config() -> str:
    """OpenBLAS's configuration string (version, build options)."""
    return str(_core.blas_config())


__all__ = [
    "ERM",
    "GDW",
    "L2RW",
    "SGD",
    "Adam",
    "Augment",
    "AvgPool2d",
    "BatchNorm",
    "Bootstrap",
    "BusyError",
    "CheckpointError",
    "ClassBalanced",
    "ClassBalancedSampling",
    "ClosedError",
    "Constant",
    "Conv2d",
    "Cosine",
    "DTypeError",
    "DataFileError",
    "Dropout",
    "EpochRecord",
    "FineTune",
    "Flatten",
    "Focal",
    "GlobalAvgPool",
    "HardMining",
    "History",
    "InvalidArgumentError",
    "InverseFrequency",
    "LabelError",
    "Layer",
    "Linear",
    "MWNet",
    "MaxPool2d",
    "MetaweightError",
    "Method",
    "MultiStep",
    "Network",
    "NonFiniteError",
    "NotCopyableError",
    "Optimizer",
    "RandomWeights",
    "ReLU",
    "Residual",
    "ResourceError",
    "Schedule",
    "SelfPaced",
    "Sequential",
    "ShapeError",
    "ShortcutA",
    "SkippedStep",
    "StateError",
    "StepDiagnostics",
    "StepResult",
    "TrainingCollapseWarning",
    "WeightSaturationWarning",
    "MetaweightWarning",
    "Trainer",
    "__version__",
    "accuracy",
    "blas_config",
    "blas_core",
    "build",
    "callbacks",
    "conditions",
    "confusion_matrix",
    "data",
    "distributed",
    "get_threads",
    "law",
    "lenet5",
    "methods",
    "metrics",
    "mlp",
    "per_class_accuracy",
    "resnet32",
    "set_threads",
    "wide_resnet",
]
