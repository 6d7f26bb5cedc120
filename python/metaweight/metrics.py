"""Classification metrics on NumPy arrays.

``y_pred`` may be predicted labels ``(N,)`` or scores ``(N, C)`` (logits or probabilities; the
arg-max is taken), so ``accuracy(y, trainer.predict_proba(x))`` and
``accuracy(y, trainer.predict(x))`` agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validate import as_int, as_labels
from .errors import InvalidArgumentError, LabelError, ShapeError

__all__ = ["accuracy", "confusion_matrix", "per_class_accuracy"]


#: Largest class count of a confusion matrix (a dense C x C int64 array is built).
MAX_CLASSES = 10_000


def _pair(y_true: Any, y_pred: Any, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    t = as_labels(y_true, "y_true", num_classes=num_classes)
    p = np.asarray(y_pred)
    if p.ndim == 2:
        if num_classes is not None and p.shape[1] != num_classes:
            raise ShapeError(f"y_pred: expected scores of shape (N, {num_classes}), got {p.shape}")
        if p.shape[0] == 0:
            raise ShapeError("y_pred: expected at least one prediction, got an empty array")
        p = np.argmax(p, axis=1).astype(np.int64)
    p = as_labels(p, "y_pred", num_classes=num_classes, n=len(t), x_name="y_true")
    return t, p


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of examples whose predicted label equals the true label.

    Args:
        y_true: integer labels ``(N,)``.
        y_pred: predicted labels ``(N,)`` or scores ``(N, C)``.

    Returns:
        The accuracy in ``[0, 1]``.

    Raises:
        ShapeError: different lengths or empty arrays.
        DTypeError: non-integer labels.
    """
    t, p = _pair(y_true, y_pred, None)
    return float(np.mean(t == p))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Counts of (true label, predicted label) pairs.

    Args:
        y_true: integer labels ``(N,)``.
        y_pred: predicted labels ``(N,)`` or scores ``(N, C)``.
        num_classes: number of classes ``C`` (default: 1 + the largest label seen).

    Returns:
        An int64 array ``(C, C)``: row = true class, column = predicted class.

    Raises:
        ShapeError: different lengths or empty arrays.
        LabelError: a label outside ``[0, num_classes)``.
    """
    if num_classes is not None:
        num_classes = as_int(num_classes, "num_classes", minimum=1, maximum=MAX_CLASSES)
    t, p = _pair(y_true, y_pred, num_classes)
    if num_classes is None:
        if t.min() < 0 or p.min() < 0:
            raise LabelError("y_true, y_pred: expected non-negative labels")
        num_classes = int(max(t.max(), p.max())) + 1
        if num_classes > MAX_CLASSES:
            raise InvalidArgumentError(
                f"y_true, y_pred: labels up to {num_classes - 1} imply {num_classes} classes; at most {MAX_CLASSES} are supported"
            )
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_accuracy(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Accuracy (recall) of each true class.

    Args:
        y_true: integer labels ``(N,)``.
        y_pred: predicted labels ``(N,)`` or scores ``(N, C)``.
        num_classes: number of classes ``C`` (default: 1 + the largest label seen).

    Returns:
        A float64 array ``(C,)``; NaN for classes with no examples in ``y_true``.

    Raises:
        ShapeError: different lengths or empty arrays.
        LabelError: a label outside ``[0, num_classes)``.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
