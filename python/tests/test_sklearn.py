"""metaweight.sklearn.MetaWeightClassifier: scikit-learn's estimator checks, labels, the meta set,
example weights, pickling, and use in Pipeline / GridSearchCV / cross_val_score (issue 13 item 2).

Small data (scikit-learn's bundled breast cancer and wine) and few epochs keep the module fast.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Iterator
from typing import Any

import metaweight as mw
import numpy as np
import pytest

pytest.importorskip("sklearn")

from metaweight.sklearn import MetaWeightClassifier  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_wine  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

#: Checks the estimator is expected to fail, with the reason. Empty: every check of the installed
#: scikit-learn passes for the three configurations below (checks that need pandas or SCIPY_ARRAY_API
#: are skipped by scikit-learn itself when those are missing).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


def _expected_failed_checks(_estimator: Any) -> dict[str, str]:
    return EXPECTED_FAILED_CHECKS


@pytest.fixture(autouse=True)
def _quiet_monitor() -> Iterator[None]:
    # The estimator checks train on tiny random problems, where the collapse monitor may fire.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mw.MetaweightWarning)
        yield


def _small(method: str = "erm", **kw: Any) -> MetaWeightClassifier:
    params: dict[str, Any] = {"epochs": 30, "batch_size": 32, "lr": 0.05, "hidden": (16,)}
    params.update(kw)
    return MetaWeightClassifier(method, **params)


@parametrize_with_checks(
    [_small("erm"), _small("l2rw"), _small("gdw", method_options={"lr": 1e-2})],
    expected_failed_checks=_expected_failed_checks,
)
def test_passes_scikit_learn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    return scaler.transform(x_tr), y_tr, scaler.transform(x_te), y_te


@pytest.fixture(scope="module")
def wine() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_wine(return_X_y=True)
    return StandardScaler().fit_transform(x), y


def test_constructor_only_stores_parameters_and_fit_validates_them() -> None:
    clf = MetaWeightClassifier("no-such-method", optimizer="rmsprop", epochs=-3)
    assert clf.get_params()["method"] == "no-such-method"
    assert not [k for k in vars(clf) if k.endswith("_")]
    with pytest.raises(ValueError, match="method"):
        clf.fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_string_labels_are_learned_and_predicted_as_given(wine: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = wine
    names = np.array(["barolo", "grignolino", "barbera"])[y]
    clf = _small(epochs=20).fit(x, names)
    assert list(clf.classes_) == ["barbera", "barolo", "grignolino"]
    pred = clf.predict(x)
    assert pred.dtype == names.dtype and set(pred) <= set(names)
    assert clf.score(x, names) > 0.9
    assert clf.n_features_in_ == x.shape[1]
    proba = clf.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.array_equal(clf.classes_[proba.argmax(axis=1)], pred)


def test_multiclass_decision_function_is_the_logits_and_proba_their_softmax(
    wine: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = wine
    clf = _small(epochs=5).fit(x, y + 10)
    z = clf.decision_function(x)
    np.testing.assert_allclose(z, clf.trainer_.logits(x.astype(np.float32)), rtol=0, atol=0)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(x), e / e.sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(x)), clf.predict_proba(x), rtol=1e-10)
    assert set(clf.predict(x)) <= {10, 11, 12}


def test_binary_decision_function_is_the_logit_difference(cancer: tuple[np.ndarray, ...]) -> None:
    x, y, _, _ = cancer
    clf = _small(epochs=5).fit(x, np.where(y == 1, "benign", "malignant"))
    d = clf.decision_function(x)
    z = clf.trainer_.logits(x.astype(np.float32)).astype(np.float64)
    assert d.shape == (len(x),)
    np.testing.assert_allclose(d, z[:, 1] - z[:, 0])
    assert np.array_equal(clf.predict(x), clf.classes_[(d > 0).astype(int)])


def test_one_class_is_refused_with_a_value_error() -> None:
    with pytest.raises(ValueError, match="one class"):
        _small().fit(np.random.default_rng(0).normal(size=(10, 3)), np.ones(10))


def test_meta_method_without_meta_set_carves_a_seeded_class_balanced_one(
    cancer: tuple[np.ndarray, ...],
) -> None:
    x, y, _, _ = cancer
    a = _small("l2rw", epochs=3, meta_per_class=7, seed=3).fit(x, y)
    b = _small("l2rw", epochs=3, meta_per_class=7, seed=3).fit(x, y)
    c = _small("l2rw", epochs=3, meta_per_class=7, seed=4).fit(x, y)
    assert np.bincount(y[a.meta_indices_]).tolist() == [7, 7]
    assert np.array_equal(a.meta_indices_, b.meta_indices_)
    assert not np.array_equal(a.meta_indices_, c.meta_indices_)
    w = a.example_weights_
    assert w.shape == (len(x),)
    assert np.isnan(w[a.meta_indices_]).all()
    rest = np.setdiff1d(np.arange(len(x)), a.meta_indices_)
    assert np.isfinite(w[rest]).all()
    assert all(len(r.example_weights) == len(rest) for r in a.history_)


def test_meta_fraction_sets_the_per_class_count_and_is_capped_at_half_the_smallest_class(
    wine: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = wine  # 178 rows, 3 classes (59, 71, 48)
    clf = _small("l2rw", epochs=2, meta_fraction=0.1).fit(x, y)
    assert np.bincount(y[clf.meta_indices_]).tolist() == [5, 5, 5]  # floor(0.1 * 178 / 3)
    clf = _small("l2rw", epochs=2, meta_per_class=1000).fit(x, y)
    assert np.bincount(y[clf.meta_indices_]).tolist() == [24, 24, 24]  # 48 // 2
    with pytest.raises(ValueError, match="meta_fraction"):
        _small("l2rw", meta_fraction=1.5).fit(x, y)


def test_meta_method_without_meta_set_raises_when_carving_is_off(wine: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = wine
    with pytest.raises(ValueError, match="needs a clean meta set"):
        _small("gdw", meta_per_class=None).fit(x, y)
    with pytest.raises(ValueError, match="has 1 example"):
        _small("l2rw").fit(x[:12], np.r_[np.zeros(11, int), 1])


def test_given_meta_set_is_used_and_nothing_is_carved(cancer: tuple[np.ndarray, ...]) -> None:
    x, y, x_te, y_te = cancer
    labels = np.array(["no", "yes"])
    clf = _small("gdw", epochs=3).fit(x, labels[y], X_meta=x_te[:20], y_meta=labels[y_te[:20]])
    assert clf.meta_indices_.size == 0
    assert np.isfinite(clf.example_weights_).all()
    assert clf.history_[-1].meta_loss is not None
    with pytest.raises(ValueError, match="y_meta"):
        _small("gdw").fit(x, labels[y], X_meta=x_te[:4], y_meta=["no", "maybe", "yes", "no"])
    with pytest.raises(ValueError, match="X_meta"):
        _small("gdw").fit(x, labels[y], X_meta=x_te[:4, :3], y_meta=labels[y_te[:4]])
    with pytest.raises(ValueError, match="both or neither"):
        _small("gdw").fit(x, labels[y], X_meta=x_te[:4])


def test_methods_without_meta_set_ignore_a_given_one(cancer: tuple[np.ndarray, ...]) -> None:
    x, y, x_te, y_te = cancer
    a = _small("erm", epochs=3).fit(x, y, X_meta=x_te, y_meta=y_te)
    b = _small("erm", epochs=3).fit(x, y)
    assert np.array_equal(a.predict_proba(x_te), b.predict_proba(x_te))
    np.testing.assert_array_equal(a.example_weights_, 1.0)


def test_example_weights_are_the_mean_over_all_epochs(cancer: tuple[np.ndarray, ...]) -> None:
    x, y, _, _ = cancer
    clf = _small("l2rw", epochs=4, meta_per_class=10).fit(x, y)
    rest = np.setdiff1d(np.arange(len(x)), clf.meta_indices_)
    per_epoch = np.stack([r.example_weights for r in clf.history_]).astype(np.float64)
    np.testing.assert_allclose(clf.example_weights_[rest], per_epoch.mean(axis=0), rtol=1e-6)
    assert len(clf.history_) == 4 and clf.trainer_.history[-1] is clf.history_[-1]


def test_class_balanced_methods_get_the_training_class_counts(cancer: tuple[np.ndarray, ...]) -> None:
    x, y, _, _ = cancer
    clf = _small("class_balanced", epochs=2).fit(x, y)
    assert clf.trainer_.method.class_counts == tuple(np.bincount(y))


def test_optimizer_settings_override_the_named_or_given_optimizer(cancer: tuple[np.ndarray, ...]) -> None:
    x, y, _, _ = cancer
    clf = MetaWeightClassifier(epochs=1).fit(x, y)
    assert clf.trainer_.optimizer == mw.SGD(lr=0.02, momentum=0.9, weight_decay=5e-4)
    clf = MetaWeightClassifier(optimizer=mw.SGD(lr=0.3, nesterov=True), lr=0.01, epochs=1).fit(x, y)
    assert clf.trainer_.optimizer == mw.SGD(lr=0.01, nesterov=True)
    clf = MetaWeightClassifier(optimizer="adam", weight_decay=1e-4, schedule="cosine", epochs=1).fit(x, y)
    assert clf.trainer_.optimizer == mw.Adam(lr=1e-3, weight_decay=1e-4)
    assert isinstance(clf.trainer_.schedule, mw.Cosine)
    with pytest.raises(ValueError, match="momentum"):
        MetaWeightClassifier(optimizer="adam", momentum=0.5, epochs=1).fit(x, y)


def _image_builder(n_features: int, n_classes: int, seed: int) -> mw.Network:
    return mw.build([mw.Conv2d(2, 3, padding=1), mw.ReLU(), mw.Flatten(), mw.Linear(n_classes)],
                    input_shape=(1, 5, 6), seed=seed)


def test_model_callable_builds_the_network_and_rows_are_reshaped_to_its_input(
    cancer: tuple[np.ndarray, ...],
) -> None:
    x, y, x_te, y_te = cancer  # 30 features = a 1 x 5 x 6 "image"
    clf = _small(model=_image_builder, epochs=10).fit(x, y)
    assert clf.trainer_.model.input_shape == (1, 5, 6)
    assert clf.score(x_te, y_te) > 0.85
    restored = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(restored.predict_proba(x_te), clf.predict_proba(x_te))
    with pytest.raises(ValueError, match="features"):
        _small(model=_image_builder).fit(x[:, :20], y)


def test_pickle_and_deepcopy_go_through_a_checkpoint(cancer: tuple[np.ndarray, ...]) -> None:
    x, y, x_te, _ = cancer
    clf = _small("gdw", epochs=3, schedule=mw.MultiStep([2])).fit(x, y)
    with pytest.raises(mw.NotCopyableError):
        pickle.dumps(clf.trainer_)
    for restored in (pickle.loads(pickle.dumps(clf)), copy.deepcopy(clf)):
        assert restored.trainer_ is not clf.trainer_
        assert np.array_equal(restored.predict_proba(x_te), clf.predict_proba(x_te))
        assert restored.trainer_.step_count == clf.trainer_.step_count
        losses = np.linspace(0, 5, 6)
        assert np.array_equal(restored.trainer_.weight_function(losses), clf.trainer_.weight_function(losses))
        assert restored.history_.train_loss == clf.history_.train_loss
        assert np.array_equal(restored.example_weights_, clf.example_weights_, equal_nan=True)
        assert restored.get_params() == clf.get_params()
    unfitted = pickle.loads(pickle.dumps(_small()))
    assert not hasattr(unfitted, "trainer_")


def test_clone_and_set_params_give_an_unfitted_copy_with_the_same_settings(
    cancer: tuple[np.ndarray, ...],
) -> None:
    x, y, _, _ = cancer
    clf = _small("mwnet", method_options={"lr": 1e-2}, epochs=2).fit(x, y)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and not hasattr(twin, "trainer_")
    twin.set_params(method="erm", lr=0.1)
    assert twin.method == "erm" and twin.lr == 0.1 and clf.method == "mwnet"
    assert clf.trainer_.method == mw.MWNet(lr=1e-2)


def test_feature_names_are_kept_from_a_dataframe(cancer: tuple[np.ndarray, ...]) -> None:
    pd = pytest.importorskip("pandas")
    x, y, _, _ = cancer
    cols = [f"f{i}" for i in range(x.shape[1])]
    clf = _small(epochs=2).fit(pd.DataFrame(x, columns=cols), y)
    assert list(clf.feature_names_in_) == cols


def test_works_in_a_pipeline_with_a_standard_scaler() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    pipe = make_pipeline(StandardScaler(), _small("l2rw", epochs=20, lr=0.02)).fit(x_tr, y_tr)
    assert pipe.score(x_te, y_te) > 0.9
    assert pipe.predict_proba(x_te).shape == (len(x_te), 2)
    assert pipe[-1].n_features_in_ == x.shape[1]


def test_grid_search_over_the_method_and_the_learning_rate() -> None:
    x, y = load_wine(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), _small(epochs=10))
    grid = GridSearchCV(pipe, {"metaweightclassifier__method": ["erm", "l2rw"],
                               "metaweightclassifier__lr": [0.01, 0.05]}, cv=3)
    grid.fit(x, y)
    assert len(grid.cv_results_["params"]) == 4
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_params_["metaweightclassifier__method"] in ("erm", "l2rw")
    assert grid.score(x, y) > 0.9


def test_grid_search_passes_a_clean_meta_set_through_fit_params(wine: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = wine
    x_meta, y_meta = x[::10], y[::10]
    grid = GridSearchCV(_small(epochs=5), {"method": ["gdw", mw.L2RW()], "method_options": [None]}, cv=2)
    grid.fit(x, y, X_meta=x_meta, y_meta=y_meta)
    assert grid.best_estimator_.meta_indices_.size == 0


def test_cross_val_score_runs_each_fold() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    scores = cross_val_score(make_pipeline(StandardScaler(), _small("gdw", epochs=10)), x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85


def test_threads_sets_metaweights_thread_count_for_the_fit(cancer: tuple[np.ndarray, ...]) -> None:
    x, y, _, _ = cancer
    before = mw.get_threads()
    try:
        a = _small(epochs=2, threads=1).fit(x, y)
        assert mw.get_threads() == 1
        b = _small(epochs=2, threads=1).fit(x, y)
        assert np.array_equal(a.predict_proba(x), b.predict_proba(x))
    finally:
        mw.set_threads(before)
