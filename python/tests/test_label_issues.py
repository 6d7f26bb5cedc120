"""mw.label_issues: suspect labels ranked from the recorded per-example weights."""

from __future__ import annotations

import metaweight as mw
import numpy as np
import pytest
from metaweight import conditions, data, law
from metaweight.errors import InvalidArgumentError, ShapeError, StateError
from metaweight.label_issues import LabelIssues


def _setup(kind: str):
    ds = data.load_digits(flatten=True, seed=0)
    sp = conditions.meta_split(ds.y_train, 10, 10, seed=0)
    xm, ym = ds.x_train[sp.meta_indices], ds.y_train[sp.meta_indices]
    x, y_true = ds.x_train[sp.train_indices], ds.y_train[sp.train_indices]
    nz = getattr(conditions, f"{kind}_noise")(y_true, 0.4, 10, seed=0)
    return x, nz.labels, np.asarray(nz.corrupted, dtype=bool), y_true, xm, ym


def _fit(method, kind: str, epochs: int, lr: float):
    x, y, bad, y_true, xm, ym = _setup(kind)
    tr = mw.Trainer(mw.mlp(64, hidden=(256, 256), num_classes=10, seed=0),
                    mw.SGD(lr=lr, momentum=0.9, weight_decay=5e-4), mw.Constant(), method=method, seed=0)
    h = tr.fit(x, y, epochs=epochs, meta=(xm, ym), record_weights=True, progress=False)
    return tr, h, x, y, bad, y_true


@pytest.fixture(scope="module")
def l2rw_run():
    return _fit(mw.L2RW(), "flip", 5, 0.03)


@pytest.fixture(scope="module")
def gdw_run():
    return _fit(mw.GDW(), "flip", 15, 0.1)


def test_l2rw_ranks_corrupted_first(l2rw_run):
    tr, h, x, y, bad, y_true = l2rw_run
    li = mw.label_issues(tr, y, history=h, x=x)
    assert isinstance(li, LabelIssues) and len(li) == len(y)
    assert sorted(li.index.tolist()) == list(range(len(y)))
    assert np.all(np.diff(li.score) <= 0)  # most suspect first
    assert np.array_equal(li.given_label, y[li.index])
    ev = li.evaluate(bad)
    assert ev["auc"] > 0.8
    assert ev["precision"] > 0.7 and ev["k"] == bad.sum()
    # Without x: the given label is suggested.
    li0 = mw.label_issues(tr, y, history=h)
    assert np.array_equal(li0.suggested_label, li0.given_label)
    # With x: the model's prediction.
    assert np.array_equal(li.suggested_label, tr.predict(x)[li.index])


def test_gdw_suggests_true_class(gdw_run):
    tr, h, x, y, bad, y_true = gdw_run
    li = mw.label_issues(h, y, last=5)  # a History alone carries the class weights
    assert li.evaluate(bad)["auc"] > 0.8
    # The off-label class with the smallest class weight recovers the true class of many flips.
    assert li.suggestion_accuracy(y_true, bad) > 0.5
    assert np.mean(li.suggested_label != li.given_label) > 0.99


def test_arrays_and_last(l2rw_run):
    tr, h, x, y, bad, y_true = l2rw_run
    w = np.stack([r.example_weights for r in h])
    a = mw.label_issues(w, y)
    b = mw.label_issues(h, y)
    assert np.array_equal(a.index, b.index) and np.allclose(a.score, b.score)
    last2 = mw.label_issues(w, y, last=2)
    ref = mw.label_issues(w[-2:].mean(axis=0), y)
    assert np.array_equal(last2.index, ref.index)
    assert np.allclose(last2.weight, w[-2:].mean(axis=0)[last2.index])
    assert not np.array_equal(last2.weight, a.weight)
    with pytest.raises(InvalidArgumentError, match="last"):
        mw.label_issues(w, y, last=len(w) + 1)
    with pytest.raises(InvalidArgumentError, match="last"):
        mw.label_issues(w, y, last=0)
    with pytest.raises(ShapeError):
        mw.label_issues(w, y[:-1])
    # Rank-based score: invariant to a method's scale, 1.0 for the lowest weight.
    s = mw.label_issues(np.array([0.5, 0.1, 0.9, 0.3]), np.array([0, 1, 2, 3]), predicted=np.array([1, 1, 1, 1]))
    assert s.index.tolist() == [1, 3, 0, 2]
    assert s.score[0] == 1.0 and s.score[-1] == 0.25
    s10 = mw.label_issues(np.array([5.0, 1.0, 9.0, 3.0]), np.array([0, 1, 2, 3]))
    assert np.allclose(s.score, s10.score)
    assert s.suggested_label.tolist() == [1, 1, 1, 1]


def test_unvisited_ranked_last():
    w = np.array([[0.2, np.nan, 0.9], [0.4, np.nan, np.nan]])
    li = mw.label_issues(w, np.array([0, 1, 2]))
    assert li.index.tolist() == [0, 2, 1]
    assert np.isnan(li.score[-1])
    assert np.isclose(li.weight[0], 0.3)


def test_csv_round_trip(tmp_path, l2rw_run):
    tr, h, x, y, bad, y_true = l2rw_run
    li = mw.label_issues(tr, y, history=h, x=x)
    p = tmp_path / "label_issues.csv"
    li.to_csv(p)
    header = p.read_text().splitlines()[0]
    assert header == "rank,index,given_label,suggested_label,score,weight"
    back = LabelIssues.read_csv(p)
    for f in ("index", "given_label", "suggested_label", "score", "weight"):
        assert np.array_equal(getattr(back, f), getattr(li, f)), f
    arr = li.to_array()
    assert arr["rank"][0] == 1 and np.array_equal(arr["index"], li.index)
    assert len(li.top(10)) == 10


def test_errors_without_weights():
    x, y, bad, y_true, xm, ym = _setup("uniform")
    tr = mw.Trainer(mw.mlp(64, hidden=(16,), num_classes=10, seed=0), mw.SGD(lr=0.1), mw.Constant(), seed=0)
    h = tr.fit(x, y, epochs=1, progress=False)
    with pytest.raises(StateError, match="record_weights=True"):
        mw.label_issues(tr, y, history=h)
    with pytest.raises(StateError, match="record_weights=True"):
        mw.label_issues(h, y)
    with pytest.raises(StateError, match="history"):
        mw.label_issues(tr, y)
    with pytest.raises(StateError, match="empty"):
        mw.label_issues(mw.History(), y)
    with pytest.raises(InvalidArgumentError, match="history"):
        mw.label_issues(np.ones(len(y)), y, history=h)


def test_strategy_run_input():
    x, y, bad, y_true, xm, ym = _setup("flip")
    run = law.train("mlp(hidden=32, classes=10)", x, y, epochs=2, x_val=xm, y_val=ym, seed=0)
    li = mw.label_issues(run, y, x=x)
    assert len(li) == len(y)
    assert np.array_equal(li.suggested_label, run.trainer.predict(x)[li.index])
    assert run.epoch_weights is not None
    ref = mw.label_issues(run.epoch_weights, y, last=1)
    assert np.array_equal(mw.label_issues(run, y, last=1).index, ref.index)


def test_class_weight_vote():
    # Two examples, three classes, three epochs: the off-label minimum of each epoch votes.
    cw = np.array([
        [[1.0, 0.2, 0.9], [0.5, 0.5, 0.5]],
        [[1.0, 0.3, 0.1], [0.5, 0.5, 0.5]],  # example 1: all equal, no vote
        [[1.0, 0.1, 0.8], [0.9, 0.1, 0.1]],  # example 1: given label 1 is excluded; 0.1 at class 2
    ])
    li = mw.label_issues(np.ones((3, 2)), np.array([0, 1]), class_weights=cw)
    sug = dict(zip(li.index.tolist(), li.suggested_label.tolist()))
    assert sug == {0: 1, 1: 2}
    last1 = mw.label_issues(np.ones((3, 2)), np.array([0, 1]), class_weights=cw, last=1)
    assert dict(zip(last1.index.tolist(), last1.suggested_label.tolist()))[0] == 1
    none = mw.label_issues(np.ones(2), np.array([0, 1]), class_weights=np.full((2, 3), 0.5))
    assert np.array_equal(none.suggested_label, none.given_label)
    with pytest.raises(ShapeError):
        mw.label_issues(np.ones(2), np.array([0, 1]), class_weights=np.ones((3, 3)))
