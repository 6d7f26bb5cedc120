"""Bad inputs: every class raises the documented exception with a message naming the argument,
nothing is trained by a rejected call, and convertible inputs (dtypes, layouts) are accepted."""

from __future__ import annotations

import metaweight as mw
import numpy as np
import pytest
from _api_support import digits_split, small_cnn, small_mlp
from metaweight import _core


@pytest.fixture(scope="module")
def data():
    x, y, _, _ = digits_split()
    return x[:64], y[:64]


@pytest.fixture
def trainer():
    t = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    yield t
    t.close()


def _calls(trainer: mw.Trainer):
    """Every public entry point that takes (x, y), as name -> function(x, y)."""
    return {
        "step": lambda x, y: trainer.step(x, y),
        "fit": lambda x, y: trainer.fit(x, y, epochs=1, progress=False),
        "evaluate": lambda x, y: trainer.evaluate(x, y),
        "losses": lambda x, y: trainer.losses(x, y),
    }


ENTRY_POINTS = ["step", "fit", "evaluate", "losses"]


def _check_rejected(trainer, entry, x, y, exc, *patterns):
    before = trainer.model.get_flat()
    with pytest.raises(exc) as info:
        _calls(trainer)[entry](x, y)
    message = str(info.value)
    for p in patterns:
        assert p in message, f"{p!r} not in {message!r}"
    np.testing.assert_array_equal(trainer.model.get_flat(), before)
    assert trainer.step_count == 0
    return message


# ---- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_wrong_rank_raises_shape_error_naming_x_and_both_shapes(trainer, data, entry):
    x, y = data
    _check_rejected(trainer, entry, x[0], y[:1], mw.ShapeError, "x:", "(N, 64)", "(64,)")
    _check_rejected(trainer, entry, x[None], y, mw.ShapeError, "x:", "3-d", "(1, 64, 64)")


def test_a_single_example_gets_a_hint(trainer, data):
    x, _ = data
    with pytest.raises(mw.ShapeError, match=r"x\[None\]"):
        trainer.predict(x[0])


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_wrong_per_example_shape_raises_shape_error_naming_expected_and_actual(trainer, data, entry):
    x, y = data
    _check_rejected(trainer, entry, x[:, :63], y, mw.ShapeError, "x:", "per-example shape (64,)", "(63,)")


def test_flat_data_for_an_image_network_gets_a_reshape_hint(data):
    x, y = data
    trainer = mw.Trainer(small_cnn())
    with pytest.raises(mw.ShapeError, match=r"reshape with x\.reshape\(-1, 1, 8, 8\)"):
        trainer.step(x, y)
    with pytest.raises(mw.ShapeError, match=r"per-example shape \(1, 8, 8\).*\(2, 4, 8\)"):
        trainer.step(x.reshape(-1, 2, 4, 8), y)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_empty_arrays_raise_shape_error(trainer, data, entry):
    x, y = data
    _check_rejected(trainer, entry, x[:0], y[:0], mw.ShapeError, "x:", "empty")
    _check_rejected(trainer, entry, x[:1], y[:0], mw.ShapeError, "y:")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_x_y_length_mismatch_raises_shape_error_naming_both_counts(trainer, data, entry):
    x, y = data
    _check_rejected(trainer, entry, x, y[:-1], mw.ShapeError, "y:", "64", "63")


def test_two_dimensional_labels_raise_shape_error_with_a_hint(trainer, data):
    x, y = data
    with pytest.raises(mw.ShapeError, match=r"ravel"):
        trainer.step(x, y[:, None])
    with pytest.raises(mw.ShapeError, match=r"argmax"):
        trainer.step(x, np.eye(10, dtype=np.int64)[y])


# ---- dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_float_labels_raise_dtype_error_even_when_integral(trainer, data, entry, dtype):
    x, y = data
    msg = _check_rejected(trainer, entry, x, y.astype(dtype), mw.DTypeError, "y:", np.dtype(dtype).name)
    assert "astype(np.int64)" in msg


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        (lambda x: x > 0.5, "bool"),
        (lambda x: x.astype(object), "object"),
        (lambda x: x.astype(str), "<U"),
        (lambda x: x.astype(np.complex64), "complex64"),
        (lambda x: x.astype("datetime64[s]"), "datetime64"),
    ],
)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_unsupported_feature_dtypes_raise_dtype_error_naming_x_and_the_dtype(trainer, data, entry, bad, what):
    x, y = data
    _check_rejected(trainer, entry, bad(x), y, mw.DTypeError, "x:", what)


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        (lambda y: y.astype(bool), "bool"),
        (lambda y: y.astype(object), "object"),
        (lambda y: y.astype(str), "<U"),
    ],
)
def test_unsupported_label_dtypes_raise_dtype_error(trainer, data, bad, what):
    x, y = data
    _check_rejected(trainer, "step", x, bad(y), mw.DTypeError, "y:", what)


def test_dtype_errors_are_also_type_errors(trainer, data):
    x, y = data
    with pytest.raises(TypeError):
        trainer.step(x.astype(complex), y)


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.uint8, np.int32, np.int64])
def test_convertible_feature_dtypes_train_like_float32(data, dtype):
    x, y = data
    xs = (x * 16).round() if np.dtype(dtype).kind in "iu" else x
    ref = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    got = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    r1 = ref.step(xs.astype(dtype).astype(np.float32), y)
    r2 = got.step(xs.astype(dtype), y.astype(np.int32))
    assert r1 == r2
    np.testing.assert_array_equal(got.model.get_flat(), ref.model.get_flat())


@pytest.mark.parametrize(
    "layout",
    [
        lambda x: np.asfortranarray(x),
        lambda x: np.repeat(x, 2, axis=0)[::2],  # strided rows
        lambda x: np.ascontiguousarray(x[:, ::-1])[:, ::-1],  # reversed columns (negative strides)
        lambda x: x.astype(">f4"),  # big-endian
        lambda x: x.T.copy().T,  # transposed view
        lambda x: x.tolist(),  # nested Python lists
    ],
)
def test_non_contiguous_and_foreign_layouts_are_copied_and_train_identically(data, layout):
    x, y = data
    ref = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    got = mw.Trainer(small_mlp(), mw.SGD(lr=0.05))
    arr = layout(x)
    if isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.flags.c_contiguous:
        pytest.fail("the layout under test should not already be C-contiguous float32")
    assert ref.step(x, y) == got.step(arr, list(y))
    np.testing.assert_array_equal(got.model.get_flat(), ref.model.get_flat())
    np.testing.assert_array_equal(got.logits(arr), ref.logits(x))


def test_read_only_arrays_are_accepted(data):
    x, y = data
    x = x.copy()
    y = y.copy()
    x.flags.writeable = False
    y.flags.writeable = False
    trainer = mw.Trainer(small_mlp())
    assert trainer.step(x, y).step == 1


def test_ragged_lists_raise_shape_error(trainer):
    with pytest.raises(mw.ShapeError, match="x:"):
        trainer.predict([[0.0] * 64, [0.0] * 63])


# ---- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_labels_out_of_range_raise_label_error_with_the_index(trainer, data, entry):
    x, y = data
    y = y.copy()
    y[5] = 10
    _check_rejected(trainer, entry, x, y, mw.LabelError, "y:", "[0, 10)", "10", "index 5")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_negative_labels_raise_label_error_with_the_index(trainer, data, entry):
    x, y = data
    y = y.copy()
    y[7] = -1
    _check_rejected(trainer, entry, x, y, mw.LabelError, "y:", "-1", "index 7")


def test_label_errors_are_value_errors(trainer, data):
    x, y = data
    with pytest.raises(ValueError):
        trainer.step(x, y + 10)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_features_raise_non_finite_error_naming_x_and_the_index(trainer, data, entry, value):
    x, y = data
    x = x.copy()
    x[3, 17] = value
    _check_rejected(trainer, entry, x, y, mw.NonFiniteError, "x:", "(3, 17)", str(value))


def test_float64_values_that_overflow_float32_are_non_finite(trainer, data):
    x, y = data
    x = x.astype(np.float64)
    x[2, 0] = 1e39
    with pytest.raises(mw.NonFiniteError, match=r"\(2, 0\)"):
        trainer.step(x, y)


def test_nan_in_predict_input_raises_non_finite_error(trainer, data):
    x, _ = data
    x = x.copy()
    x[0, 0] = np.nan
    with pytest.raises(mw.NonFiniteError, match="x:"):
        trainer.predict(x)
    with pytest.raises(FloatingPointError):
        trainer.logits(x)


@pytest.mark.parametrize(
    ("weights", "exc", "pattern"),
    [
        (lambda n: np.r_[np.ones(n - 1), -1.0], mw.InvalidArgumentError, "non-negative"),
        (lambda n: np.r_[np.ones(n - 1), np.nan], mw.NonFiniteError, "finite"),
        (lambda n: np.r_[np.ones(n - 1), np.inf], mw.NonFiniteError, "finite"),
        (lambda n: np.ones(n - 1), mw.ShapeError, "shape"),
        (lambda n: np.ones(n, dtype=bool), mw.DTypeError, "bool"),
    ],
)
def test_bad_sample_weights_are_rejected_naming_sample_weights(trainer, data, weights, exc, pattern):
    x, y = data
    before = trainer.model.get_flat()
    with pytest.raises(exc, match=pattern) as info:
        trainer.step(x, y, sample_weights=weights(len(y)))
    assert "sample_weights" in str(info.value)
    np.testing.assert_array_equal(trainer.model.get_flat(), before)


def test_meta_batches_are_rejected_for_erm(trainer, data):
    x, y = data
    with pytest.raises(mw.InvalidArgumentError, match="x_meta"):
        trainer.step(x, y, x_meta=x, y_meta=y)
    with pytest.raises(mw.InvalidArgumentError, match="x_meta"):
        trainer.step(x, y, y_meta=y)
    with pytest.raises(mw.InvalidArgumentError, match="meta"):
        trainer.fit(x, y, epochs=1, meta=(x, y), progress=False)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"epochs": 1, "batch_size": 0}, "batch_size"),
        ({"epochs": 1, "x_val": np.zeros((2, 64))}, "x_val, y_val"),
        ({"epochs": 1, "callbacks": [42]}, r"callbacks\[0\]"),
    ],
)
def test_bad_fit_settings_raise_invalid_argument_naming_them(trainer, data, kwargs, pattern):
    x, y = data
    with pytest.raises(mw.InvalidArgumentError, match=pattern):
        trainer.fit(x, y, progress=False, **kwargs)


def test_bad_validation_data_is_named_x_val_and_y_val(trainer, data):
    x, y = data
    with pytest.raises(mw.ShapeError, match="x_val"):
        trainer.fit(x, y, epochs=1, x_val=x[:, :10], y_val=y, progress=False)
    with pytest.raises(mw.LabelError, match="y_val"):
        trainer.fit(x, y, epochs=1, x_val=x, y_val=y + 100, progress=False)
    assert trainer.step_count == 0


# ---- closed objects -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "use",
    [
        lambda t, x, y: t.step(x, y),
        lambda t, x, y: t.fit(x, y, epochs=1, progress=False),
        lambda t, x, y: t.evaluate(x, y),
        lambda t, x, y: t.predict(x),
        lambda t, x, y: t.predict_proba(x),
        lambda t, x, y: t.logits(x),
        lambda t, x, y: t.losses(x, y),
        lambda t, x, y: t.save("never-written.ckpt"),
        lambda t, x, y: t.load("never-read.ckpt"),
        lambda t, x, y: t.step_count,
        lambda t, x, y: t.learning_rate,
    ],
)
def test_using_a_closed_trainer_raises_closed_error(data, use):
    x, y = data
    with mw.Trainer(small_mlp()) as t:
        pass
    assert t.closed
    with pytest.raises(mw.ClosedError, match="closed"):
        use(t, x, y)
    t.close()  # idempotent
    assert isinstance(mw.ClosedError("x"), RuntimeError)


def test_the_native_layer_checks_arrays_again():
    """Defence in depth: _core itself refuses wrong dtypes and layouts (no silent reinterpretation)."""
    net = small_mlp()
    t = mw.Trainer(net)
    h = t._handle
    x = np.zeros((4, 64), np.float32)
    y = np.zeros(4, np.int64)
    with pytest.raises(mw.DTypeError, match="x"):
        _core.trainer_step(h, x.astype(np.float64), y, None)
    with pytest.raises(mw.DTypeError, match="y"):
        _core.trainer_step(h, x, y.astype(np.int32), None)
    with pytest.raises(mw.DTypeError, match="x"):
        _core.trainer_step(h, np.asfortranarray(np.zeros((4, 64), np.float32))[:, ::2], y, None)
    with pytest.raises(mw.ShapeError):
        _core.trainer_step(h, x, y[:3], None)
    with pytest.raises(mw.ClosedError):
        _core.trainer_step(123456789, x, y, None)


def test_numbers_too_large_for_a_float_raise_invalid_argument():
    """Python ints beyond float range (found by the fuzzer as ``eps=2**70``-style inputs) are
    rejected with a typed error naming the argument, not an OverflowError or TypeError."""
    huge = 10**400
    x = np.zeros((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    cases = [
        (lambda: mw.data.normalize(x, eps=huge), "eps"),
        (lambda: mw.SGD(lr=huge), "lr"),
        (lambda: mw.Trainer(mw.mlp(3, hidden=(4,), num_classes=2), method=mw.MWNet(lr=huge)), "lr"),
        (lambda: mw.Trainer(mw.mlp(3, hidden=(4,), num_classes=2), method=mw.GDW(clip=huge)), "clip"),
        (lambda: mw.conditions.uniform_noise(y, rate=huge, num_classes=2, seed=0), "rate"),
        (lambda: mw.conditions.long_tailed(y, imbalance_factor=huge, num_classes=2, seed=0), "imbalance_factor"),
    ]
    for call, name in cases:
        with pytest.raises(mw.InvalidArgumentError, match=name):
            call()
