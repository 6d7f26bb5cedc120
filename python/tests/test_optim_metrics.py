"""Optimizer and schedule settings are validated in Python; metrics match hand computations."""

from __future__ import annotations

import metaweight as mw
import numpy as np
import pytest


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: mw.SGD(lr=0), "SGD.lr"),
        (lambda: mw.SGD(lr=-0.1), "SGD.lr"),
        (lambda: mw.SGD(lr=float("nan")), "SGD.lr"),
        (lambda: mw.SGD(lr="0.1"), "SGD.lr"),
        (lambda: mw.SGD(momentum=1.0), "SGD.momentum"),
        (lambda: mw.SGD(momentum=-0.5), "SGD.momentum"),
        (lambda: mw.SGD(momentum=0.0, nesterov=True), "SGD.nesterov"),
        (lambda: mw.SGD(weight_decay=-1e-4), "SGD.weight_decay"),
        (lambda: mw.SGD(weight_decay=float("inf")), "SGD.weight_decay"),
        (lambda: mw.Adam(lr=0), "Adam.lr"),
        (lambda: mw.Adam(betas=(0.9,)), "Adam.betas"),
        (lambda: mw.Adam(betas=(1.0, 0.999)), r"Adam.betas\[0\]"),
        (lambda: mw.Adam(betas=(0.9, -0.1)), r"Adam.betas\[1\]"),
        (lambda: mw.Adam(eps=0), "Adam.eps"),
        (lambda: mw.Adam(weight_decay=-1), "Adam.weight_decay"),
        (lambda: mw.MultiStep([60, 30]), "MultiStep.milestones"),
        (lambda: mw.MultiStep([-1]), r"MultiStep.milestones\[0\]"),
        (lambda: mw.MultiStep([1.5], unit="step"), "MultiStep.milestones"),
        (lambda: mw.MultiStep("30,60"), "MultiStep.milestones"),
        (lambda: mw.MultiStep([30], gamma=0), "MultiStep.gamma"),
        (lambda: mw.MultiStep([30], unit="epochs"), "MultiStep.unit"),
        (lambda: mw.Cosine(total=0), "Cosine.total"),
        (lambda: mw.Cosine(total=10.5, unit="step"), "Cosine.total"),
        (lambda: mw.Cosine(min_lr=-1), "Cosine.min_lr"),
        (lambda: mw.Cosine(warmup=-1), "Cosine.warmup"),
        (lambda: mw.Constant(warmup=2.5, unit="step"), "Constant.warmup"),
    ],
)
def test_bad_optimizer_and_schedule_settings_raise_invalid_argument_naming_the_field(make, field):
    with pytest.raises(mw.InvalidArgumentError, match=field.replace(".", r"\.")):
        make()


def test_settings_are_frozen_and_comparable():
    sgd = mw.SGD(lr=0.05)
    assert sgd == mw.SGD(lr=0.05) and sgd != mw.SGD(lr=0.1)
    with pytest.raises(AttributeError):
        sgd.lr = 1.0  # type: ignore[misc]
    assert mw.Adam(betas=[0.8, 0.9]).betas == (0.8, 0.9)
    assert mw.MultiStep([30, 60]).milestones == (30, 60)
    assert "SGD(lr=0.05" in repr(sgd)


def test_accuracy_accepts_labels_or_scores():
    y = np.array([0, 1, 2, 2])
    assert mw.accuracy(y, np.array([0, 1, 1, 2])) == 0.75
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.0, 0.1, 0.9]])
    assert mw.accuracy(y, scores) == 0.75
    assert mw.accuracy([1, 1], [1, 1]) == 1.0


def test_confusion_matrix_and_per_class_accuracy():
    y_true = np.array([0, 0, 1, 1, 1, 3])
    y_pred = np.array([0, 1, 1, 1, 0, 3])
    cm = mw.confusion_matrix(y_true, y_pred, num_classes=4)
    expected = np.array([[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    per_class = mw.per_class_accuracy(y_true, y_pred, num_classes=4)
    np.testing.assert_allclose(per_class[[0, 1, 3]], [0.5, 2 / 3, 1.0])
    assert np.isnan(per_class[2])  # no examples of class 2
    np.testing.assert_array_equal(mw.confusion_matrix(y_true, y_pred), expected)  # inferred size


def test_metrics_validate_their_inputs():
    with pytest.raises(mw.ShapeError, match="y_pred"):
        mw.accuracy([0, 1, 2], [0, 1])
    with pytest.raises(mw.DTypeError, match="y_true"):
        mw.accuracy([0.0, 1.0], [0, 1])
    with pytest.raises(mw.LabelError, match="y_pred"):
        mw.confusion_matrix([0, 1], [0, 5], num_classes=3)
    with pytest.raises(mw.ShapeError, match="y_true"):
        mw.accuracy([], [])
