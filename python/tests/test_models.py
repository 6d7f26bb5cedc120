"""Networks: building, layer specs, presets, parameter access round trips, closing."""

from __future__ import annotations

import copy
import pickle

import metaweight as mw
import numpy as np
import pytest
from _api_support import digits_split, small_cnn, small_mlp

# ---- building -------------------------------------------------------------------------------------


def test_mlp_preset_has_the_expected_parameter_count_and_shapes():
    net = mw.mlp(64, hidden=(256, 256), num_classes=10)
    assert net.num_parameters == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert net.num_classes == 10
    assert net.input_shape == (64,)
    assert net.num_state_values == 0
    shapes = [net.parameter_shapes()[n] for n in net.parameter_names()]
    assert shapes == [(256, 64), (256,), (256, 256), (256,), (10, 256), (10,)]


def test_mlp_without_hidden_layers_is_logistic_regression():
    net = mw.mlp(64, hidden=(), num_classes=10)
    assert net.num_parameters == 650


def test_mlp_on_an_image_shape_flattens_first():
    net = mw.mlp((1, 8, 8), hidden=(16,), num_classes=10)
    assert net.input_shape == (1, 8, 8)
    assert net.num_parameters == 64 * 16 + 16 + 16 * 10 + 10


def test_mlp_with_batch_norm_has_running_statistics_buffers():
    net = mw.mlp(64, hidden=(32, 16), num_classes=10, batch_norm=True)
    assert net.num_state_values == 2 * (32 + 16)
    assert all(n.endswith(("running_mean", "running_var")) for n in net.buffer_names())
    buffers = net.buffers()
    assert {k: v.shape for k, v in buffers.items()} == {
        "0.1.batchnorm.running_mean": (32,),
        "0.1.batchnorm.running_var": (32,),
        "0.4.batchnorm.running_mean": (16,),
        "0.4.batchnorm.running_var": (16,),
    }


def test_presets_build_with_known_parameter_counts():
    assert mw.lenet5().num_parameters == 61706
    assert mw.resnet32().num_parameters == 464154
    wrn = mw.wide_resnet(depth=10, widen=1, num_classes=10)
    assert wrn.num_classes == 10 and wrn.input_shape == (3, 32, 32)
    assert mw.resnet32(num_classes=100).num_classes == 100


def test_wide_resnet_rejects_a_depth_not_of_the_form_6n_plus_4():
    with pytest.raises(mw.InvalidArgumentError, match="depth"):
        mw.wide_resnet(depth=27)


def test_lenet5_rejects_images_smaller_than_28x28():
    with pytest.raises(mw.InvalidArgumentError, match="28"):
        mw.lenet5(input_shape=(1, 8, 8))


def test_layer_builders_compose_a_residual_cnn():
    net = small_cnn()
    assert net.input_shape == (1, 8, 8)
    assert net.num_classes == 10
    summary = net.summary()
    assert "residual" in summary and "shortcut_a" in summary and "global_avgpool" in summary
    assert f"total params={net.num_parameters}" in summary
    assert isinstance(net, mw.Sequential)
    assert len(net.layers) == 8


def test_build_and_sequential_and_raw_spec_give_identical_networks():
    layers = [mw.Linear(32), mw.ReLU(), mw.Dropout(0.25), mw.Linear(10, bias=False)]
    a = mw.build(layers, input_shape=64, seed=3)
    b = mw.Sequential(layers, (64,), seed=3)
    c = mw.Network(a.spec, (64,), seed=3)
    assert a.signature == b.signature == c.signature
    np.testing.assert_array_equal(a.get_flat(), b.get_flat())
    np.testing.assert_array_equal(a.get_flat(), c.get_flat())
    assert a.num_parameters == 64 * 32 + 32 + 32 * 10


def test_different_seeds_initialise_differently_and_equal_seeds_identically():
    np.testing.assert_array_equal(small_mlp(seed=1).get_flat(), small_mlp(seed=1).get_flat())
    assert not np.array_equal(small_mlp(seed=1).get_flat(), small_mlp(seed=2).get_flat())


def test_layer_specs():
    assert mw.Linear(10).spec() == "linear(out=10,bias=1,kaiming=0)"
    assert mw.Conv2d(16, 3, stride=2, padding=1).spec() == "conv2d(out=16,k=3,s=2,p=1,bias=0)"
    assert mw.MaxPool2d(2).spec() == "maxpool(k=2,s=2)"
    assert mw.AvgPool2d(3, stride=1).spec() == "avgpool(k=3,s=1)"
    assert mw.Residual([mw.ReLU()]).spec() == "residual{relu}"
    assert mw.Residual([mw.ReLU()], [mw.ShortcutA(8, 2)]).spec() == "residual{relu|shortcut_a(out=8,s=2)}"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: mw.Linear(0), "Linear.out"),
        (lambda: mw.Linear(2.5), "Linear.out"),
        (lambda: mw.Conv2d(8, 0), "Conv2d.kernel"),
        (lambda: mw.Conv2d(8, 3, padding=-1), "Conv2d.padding"),
        (lambda: mw.MaxPool2d(0), "MaxPool2d.kernel"),
        (lambda: mw.Dropout(1.0), "Dropout.p"),
        (lambda: mw.Dropout(-0.1), "Dropout.p"),
        (lambda: mw.ShortcutA(0, 1), "ShortcutA.out"),
        (lambda: mw.Residual([]), "Residual.body"),
        (lambda: mw.Residual([mw.ReLU, mw.Linear(3)]), "Residual.body"),
        (lambda: mw.mlp(64, hidden=(0,)), "hidden"),
        (lambda: mw.mlp(64, num_classes=0), "num_classes"),
    ],
)
def test_bad_layer_settings_raise_invalid_argument_naming_the_field(make, field):
    with pytest.raises(mw.InvalidArgumentError, match=field.replace(".", r"\.")):
        make()


def test_a_layer_that_does_not_fit_its_input_is_rejected_by_the_core():
    with pytest.raises(mw.InvalidArgumentError, match="flat input"):
        mw.build([mw.Conv2d(4, 3), mw.Linear(10)], input_shape=(1, 8, 8))


def test_non_layers_are_rejected():
    with pytest.raises(mw.InvalidArgumentError, match=r"layers\[1\]"):
        mw.build([mw.Linear(4), "relu"], input_shape=8)  # type: ignore[list-item]
    with pytest.raises(mw.InvalidArgumentError, match="instantiate"):
        mw.build([mw.Linear(4), mw.ReLU], input_shape=8)  # type: ignore[list-item]


@pytest.mark.parametrize("shape", [(), (0,), (1, 8), (1, 2, 3, 4), (-3,)])
def test_bad_input_shapes_raise_shape_error(shape):
    with pytest.raises(mw.ShapeError, match="input_shape"):
        mw.build([mw.Linear(4)], input_shape=shape)


def test_a_malformed_spec_string_raises_invalid_argument():
    with pytest.raises(mw.InvalidArgumentError, match="spec"):
        mw.Network("linear(out=10", input_shape=(8,))
    with pytest.raises(mw.InvalidArgumentError, match="unknown layer"):
        mw.Network("dense(out=10)", input_shape=(8,))


def test_activation_bytes_grows_with_the_batch():
    net = small_cnn()
    assert net.activation_bytes(64) > net.activation_bytes(8) > 0
    with pytest.raises(mw.InvalidArgumentError, match="batch_size"):
        net.activation_bytes(0)


# ---- parameter access --------------------------------------------------------------------------------


def test_parameters_are_copies_with_their_shapes_and_match_the_flat_vector():
    net = small_mlp()
    params = net.parameters()
    assert list(params) == net.parameter_names()
    flat = net.get_flat()
    assert flat.dtype == np.float32 and flat.shape == (net.num_parameters,)
    np.testing.assert_array_equal(np.concatenate([p.ravel() for p in params.values()]), flat)
    params["0.0.linear.weight"][:] = 123.0  # a copy: the network is unchanged
    np.testing.assert_array_equal(net.get_flat(), flat)


def test_set_parameter_by_name_round_trips_and_changes_only_that_block():
    net = small_mlp()
    before = net.parameters()
    value = np.random.default_rng(0).standard_normal((32, 64))  # float64 is converted
    net.set_parameter("0.0.linear.weight", value)
    np.testing.assert_array_equal(net.get_parameter("0.0.linear.weight"), value.astype(np.float32))
    after = net.parameters()
    for name in before:
        if name != "0.0.linear.weight":
            np.testing.assert_array_equal(after[name], before[name])


def test_set_flat_round_trips():
    net = small_mlp()
    vec = np.linspace(-1, 1, net.num_parameters, dtype=np.float32)
    net.set_flat(vec)
    np.testing.assert_array_equal(net.get_flat(), vec)
    np.testing.assert_array_equal(net.get_parameter("0.2.linear.bias"), vec[-10:])


def test_set_parameter_with_the_wrong_shape_raises_shape_error_naming_it():
    net = small_mlp()
    with pytest.raises(mw.ShapeError, match=r"0\.0\.linear\.weight.*\(32, 64\).*\(64, 32\)"):
        net.set_parameter("0.0.linear.weight", np.zeros((64, 32)))


def test_unknown_parameter_names_raise_invalid_argument_with_a_suggestion():
    net = small_mlp()
    with pytest.raises(mw.InvalidArgumentError, match="did you mean '0.0.linear.weight'"):
        net.get_parameter("0.0.linear.weights")


def test_set_flat_rejects_wrong_sizes_and_non_finite_values():
    net = small_mlp()
    with pytest.raises(mw.ShapeError, match="values"):
        net.set_flat(np.zeros(net.num_parameters - 1))
    bad = np.zeros(net.num_parameters)
    bad[7] = np.nan
    with pytest.raises(mw.NonFiniteError, match="index 7"):
        net.set_flat(bad)
    with pytest.raises(mw.DTypeError):
        net.set_flat(np.zeros(net.num_parameters, dtype=complex))


def _train_a_little(net: mw.Network) -> mw.Trainer:
    x, y, _, _ = digits_split()
    if len(net.input_shape) == 3:
        x = x.reshape(-1, 1, 8, 8)
    trainer = mw.Trainer(net, mw.SGD(lr=0.05))
    for i in range(5):
        trainer.step(x[i * 50 : (i + 1) * 50], y[i * 50 : (i + 1) * 50])
    return trainer


def test_state_dict_round_trip_restores_parameters_and_batch_norm_statistics():
    src = mw.mlp(64, hidden=(32,), num_classes=10, batch_norm=True, seed=1)
    src_trainer = _train_a_little(src)
    state = src.state_dict()
    assert set(state) == set(src.parameter_names()) | set(src.buffer_names())
    assert not np.allclose(state["0.1.batchnorm.running_mean"], 0.0)  # the statistics moved

    dst = mw.mlp(64, hidden=(32,), num_classes=10, batch_norm=True, seed=2)
    dst.load_state_dict(state)
    for name, value in dst.state_dict().items():
        np.testing.assert_array_equal(value, state[name])
    x, _, _, _ = digits_split()
    dst_trainer = mw.Trainer(dst)
    np.testing.assert_array_equal(dst_trainer.logits(x[:50]), src_trainer.logits(x[:50]))


def test_state_dict_round_trips_through_np_savez(tmp_path):
    src = small_cnn(seed=1)
    _train_a_little(src)
    np.savez(tmp_path / "w.npz", **src.state_dict())
    dst = small_cnn(seed=5)
    dst.load_state_dict(np.load(tmp_path / "w.npz"))
    np.testing.assert_array_equal(dst.get_flat(), src.get_flat())
    np.testing.assert_array_equal(
        dst.buffers()["1.batchnorm.running_var"], src.buffers()["1.batchnorm.running_var"]
    )


def test_load_state_dict_checks_names_and_shapes_and_changes_nothing_on_failure():
    net = small_mlp()
    before = net.get_flat()
    state = net.state_dict()
    with pytest.raises(mw.InvalidArgumentError, match="missing"):
        net.load_state_dict({k: v for k, v in state.items() if k != "0.0.linear.bias"})
    with pytest.raises(mw.InvalidArgumentError, match="unknown"):
        net.load_state_dict({**state, "extra.weight": np.zeros(3)})
    with pytest.raises(mw.ShapeError, match=r"0\.2\.linear\.weight"):
        net.load_state_dict({**state, "0.2.linear.weight": np.zeros((32, 10))})
    poisoned = {k: v + 1 for k, v in state.items()}
    poisoned["0.2.linear.bias"][3] = np.inf
    with pytest.raises(mw.NonFiniteError, match=r"0\.2\.linear\.bias"):
        net.load_state_dict(poisoned)
    np.testing.assert_array_equal(net.get_flat(), before)
    # strict=False loads a subset
    net.load_state_dict({"0.0.linear.bias": np.ones(32)}, strict=False)
    np.testing.assert_array_equal(net.get_parameter("0.0.linear.bias"), np.ones(32, np.float32))


def test_copy_is_independent():
    net = small_mlp()
    twin = net.copy()
    np.testing.assert_array_equal(twin.get_flat(), net.get_flat())
    twin.set_flat(np.zeros(twin.num_parameters))
    assert np.abs(net.get_flat()).sum() > 0


# ---- lifetime ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "use",
    [
        lambda n: n.get_flat(),
        lambda n: n.set_flat(np.zeros(n.num_parameters)),
        lambda n: n.parameters(),
        lambda n: n.buffers(),
        lambda n: n.get_parameter("0.0.linear.weight"),
        lambda n: n.set_parameter("0.0.linear.bias", np.zeros(32)),
        lambda n: n.state_dict(),
        lambda n: n.summary(),
        lambda n: n.signature,
        lambda n: n.activation_bytes(4),
        lambda n: n.copy(),
        lambda n: mw.Trainer(n),
    ],
)
def test_using_a_closed_network_raises_closed_error(use):
    net = small_mlp()
    net.close()
    assert net.closed
    with pytest.raises(mw.ClosedError, match="closed"):
        use(net)


def test_close_is_idempotent_and_the_context_manager_closes():
    with small_mlp() as net:
        assert not net.closed
    assert net.closed
    net.close()
    assert "closed" in repr(net)


def test_a_trainer_keeps_training_after_its_network_handle_is_closed():
    x, y, _, _ = digits_split()
    net = small_mlp()
    trainer = mw.Trainer(net, mw.SGD(lr=0.05))
    net.close()
    result = trainer.step(x[:32], y[:32])
    assert result.step == 1
    assert trainer.predict(x[:5]).shape == (5,)


def test_networks_refuse_to_be_pickled_or_copied():
    net = small_mlp()
    with pytest.raises(TypeError, match="state_dict"):
        pickle.dumps(net)
    with pytest.raises(TypeError):
        copy.copy(net)


def test_many_networks_can_be_created_and_garbage_collected():
    for seed in range(50):
        net = small_mlp(seed=seed)
        assert net.num_parameters > 0
    del net
