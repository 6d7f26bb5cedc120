"""MW-Net's and GDW's weighting net V in the open (issue 14, item 3): ``Trainer.weight_net`` reads
and sets V with PyTorch's VNet names and shapes, validates everything before anything changes,
refuses methods without V, and V survives save/load.
"""

from __future__ import annotations

import metaweight as mw
import numpy as np
import pytest
from metaweight import _core

NAMES = ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]


def _trainer(method, seed=0):
    net = mw.mlp(4, hidden=(8,), num_classes=3, seed=seed)
    return mw.Trainer(net, mw.SGD(lr=0.1), method=method, seed=seed)


def _batch(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), (np.arange(n) % 3).astype(np.int64)


def _known(h, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "linear1.weight": rng.normal(size=(h, 1)).astype(np.float32),
        "linear1.bias": rng.normal(size=(h,)).astype(np.float32),
        "linear2.weight": rng.normal(size=(1, h)).astype(np.float32) * 0.5,
        "linear2.bias": rng.normal(size=(1,)).astype(np.float32),
    }


def _reference(state, losses):
    """Linear -> ReLU -> Linear -> Sigmoid in float64 (the official VNet's forward)."""
    x = np.asarray(losses, dtype=np.float64).reshape(-1, 1)
    a = x @ state["linear1.weight"].astype(np.float64).T + state["linear1.bias"].astype(np.float64)
    o = np.maximum(a, 0) @ state["linear2.weight"].astype(np.float64).T + state["linear2.bias"].astype(np.float64)
    return (1 / (1 + np.exp(-o))).reshape(-1)


@pytest.mark.parametrize("method", [mw.MWNet(hidden=6), mw.GDW(hidden=6)], ids=["mwnet", "gdw"])
def test_state_dict_has_vnet_names_and_shapes_and_round_trips(method):
    tr = _trainer(method)
    wn = tr.weight_net
    assert wn.hidden == 6
    sd = wn.state_dict()
    assert list(sd) == NAMES
    assert {k: v.shape for k, v in sd.items()} == {
        "linear1.weight": (6, 1), "linear1.bias": (6,), "linear2.weight": (1, 6), "linear2.bias": (1,)}
    assert all(v.dtype == np.float32 for v in sd.values())
    params = wn.parameters()
    assert all(np.array_equal(params[k], sd[k]) for k in NAMES)
    # get -> set -> get gives back exactly the same values, and the same V.
    grid = np.linspace(0, 5, 40, dtype=np.float32)
    before = tr.weight_function(grid)
    wn.load_state_dict(sd)
    again = wn.state_dict()
    assert all(np.array_equal(again[k], sd[k]) for k in NAMES)
    assert np.array_equal(tr.weight_function(grid), before)
    # The arrays handed out are copies.
    sd["linear1.bias"][:] = 99
    assert not np.any(wn.get_parameter("linear1.bias") == 99)


@pytest.mark.parametrize("method", [mw.MWNet(hidden=7), mw.GDW(hidden=7)], ids=["mwnet", "gdw"])
def test_loading_known_weights_gives_the_numpy_reference_weight_function(method):
    tr = _trainer(method)
    state = _known(7)
    tr.weight_net.load_state_dict(state)
    losses = np.concatenate([np.linspace(0, 8, 101), [0.0, 1e-3, 2.5, 30.0]]).astype(np.float32)
    got = tr.weight_function(losses)
    np.testing.assert_allclose(got, _reference(state, losses), rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(tr.weight_net(losses), got)
    # set_parameter changes one block; V follows.
    state["linear2.bias"] = np.array([-1.25], dtype=np.float32)
    tr.weight_net.set_parameter("linear2.bias", [-1.25])
    np.testing.assert_allclose(tr.weight_function(losses), _reference(state, losses), rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(tr.weight_net.get_parameter("linear2.bias"), [-1.25])


def test_bad_names_shapes_dtypes_and_values_raise_and_change_nothing():
    tr = _trainer(mw.MWNet(hidden=5))
    wn = tr.weight_net
    before = wn.state_dict()
    good = _known(5)
    with pytest.raises(mw.ShapeError, match=r"linear1\.weight: expected shape \(5, 1\), got \(5,\)"):
        wn.set_parameter("linear1.weight", np.zeros(5))
    with pytest.raises(mw.ShapeError, match=r"linear2\.weight: expected shape \(1, 5\), got \(5, 1\)"):
        wn.load_state_dict({**good, "linear2.weight": np.zeros((5, 1))})
    with pytest.raises(mw.InvalidArgumentError, match=r"no parameter 'linear1\.weights'.*did you mean 'linear1\.weight'"):
        wn.set_parameter("linear1.weights", np.zeros((5, 1)))
    with pytest.raises(mw.InvalidArgumentError, match="unknown names"):
        wn.load_state_dict({**good, "linear3.weight": np.zeros(1)})
    with pytest.raises(mw.InvalidArgumentError, match="missing names"):
        wn.load_state_dict({"linear1.weight": good["linear1.weight"]})
    with pytest.raises(mw.InvalidArgumentError, match="state: expected a mapping"):
        wn.load_state_dict([1, 2, 3])  # type: ignore[arg-type]
    bad = dict(good)
    bad["linear1.bias"] = good["linear1.bias"].copy()
    bad["linear1.bias"][2] = np.nan
    with pytest.raises(mw.NonFiniteError, match=r"linear1\.bias: expected finite values, got nan at index 2"):
        wn.load_state_dict(bad)
    with pytest.raises(mw.NonFiniteError, match="linear2.bias"):
        wn.set_parameter("linear2.bias", [np.inf])
    with pytest.raises(mw.DTypeError, match="linear2.bias"):
        wn.set_parameter("linear2.bias", np.array(["a"]))
    after = wn.state_dict()
    assert all(np.array_equal(after[k], before[k]) for k in NAMES)
    # A subset loads with strict=False and leaves the rest.
    wn.load_state_dict({"linear2.bias": np.array([0.5])}, strict=False)
    after = wn.state_dict()
    assert after["linear2.bias"][0] == np.float32(0.5)
    assert all(np.array_equal(after[k], before[k]) for k in NAMES[:3])


def test_the_core_checks_length_and_finiteness_of_its_own_copy():
    tr = _trainer(mw.GDW(hidden=4))
    before = tr.weight_net.state_dict()
    with tr._use("test") as h:
        assert _core.trainer_weight_net_get(h, None) == 4
        with pytest.raises(mw.ShapeError, match=r"params: expected 13 floats .*got 12"):
            _core.trainer_weight_net_set(h, np.zeros(12, dtype=np.float32))
        with pytest.raises(mw.ShapeError, match=r"out: expected 13 floats"):
            _core.trainer_weight_net_get(h, np.zeros(3, dtype=np.float32))
        bad = np.zeros(13, dtype=np.float32)
        bad[12] = np.nan
        with pytest.raises(mw.NonFiniteError, match=r"params: .*flat index 12 \(linear2\.bias\[0\]\)"):
            _core.trainer_weight_net_set(h, bad)
        with pytest.raises(mw.DTypeError, match="params"):
            _core.trainer_weight_net_set(h, np.zeros(13, dtype=np.float64))
    after = tr.weight_net.state_dict()
    assert all(np.array_equal(after[k], before[k]) for k in NAMES)


@pytest.mark.parametrize("method", ["erm", "l2rw", "focal"])
def test_methods_without_a_weight_net_raise_a_clear_state_error(method):
    tr = _trainer(method)
    with pytest.raises(mw.StateError, match=f"weight_net: the '{method}' method has no weighting net"):
        tr.weight_net  # noqa: B018
    with tr._use("test") as h:  # the core refuses on its own, naming the call and the method
        with pytest.raises(mw.StateError, match=f"mw_trainer_weight_net_get: the trainer's method '{method}'"):
            _core.trainer_weight_net_get(h, None)
        with pytest.raises(mw.StateError, match=f"mw_trainer_weight_net_set: the trainer's method '{method}'"):
            _core.trainer_weight_net_set(h, np.zeros(301, dtype=np.float32))


def test_closed_trainer_raises_closed_error():
    tr = _trainer(mw.MWNet(hidden=3))
    wn = tr.weight_net
    tr.close()
    with pytest.raises(mw.ClosedError):
        wn.state_dict()
    with pytest.raises(mw.ClosedError):
        tr.weight_net  # noqa: B018


@pytest.mark.parametrize("method", [mw.MWNet(hidden=5), mw.GDW(hidden=5)], ids=["mwnet", "gdw"])
def test_set_weight_net_survives_save_and_load_and_training_continues(method, tmp_path):
    x, y = _batch()
    xm, ym = _batch(6, seed=1)
    tr = _trainer(method)
    tr.step(x, y, x_meta=xm, y_meta=ym)
    state = _known(5, seed=3)
    tr.weight_net.load_state_dict(state)
    path = tmp_path / "run.ckpt"
    tr.save(path)
    other = _trainer(method)
    other.load(path)
    got = other.weight_net.state_dict()
    assert all(np.array_equal(got[k], state[k]) for k in NAMES)
    # Both continue identically (V's optimizer state is in the checkpoint and was kept by the set).
    a = tr.step(x, y, x_meta=xm, y_meta=ym)
    b = other.step(x, y, x_meta=xm, y_meta=ym)
    assert a.loss == b.loss
    np.testing.assert_array_equal(a.weights, b.weights)
    sa, sb = tr.weight_net.state_dict(), other.weight_net.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in NAMES)
    assert not np.array_equal(sa["linear2.bias"], state["linear2.bias"])  # V was updated by the step


def test_torch_vnet_state_dict_moves_both_ways():
    torch = pytest.importorskip("torch")

    class VNet(torch.nn.Module):  # the official VNet's layout (MW-Net's code, nn.Linear version)
        def __init__(self, hidden):
            super().__init__()
            self.linear1 = torch.nn.Linear(1, hidden)
            self.linear2 = torch.nn.Linear(hidden, 1)

        def forward(self, x):
            return torch.sigmoid(self.linear2(torch.relu(self.linear1(x))))

    torch.manual_seed(0)
    vnet = VNet(8)
    tr = _trainer(mw.MWNet(hidden=8))
    tr.weight_net.load_state_dict(vnet.state_dict())  # torch tensors are accepted
    losses = np.linspace(0, 6, 50, dtype=np.float32)
    with torch.no_grad():
        ref = vnet(torch.from_numpy(losses).reshape(-1, 1)).numpy().reshape(-1)
    np.testing.assert_allclose(tr.weight_function(losses), ref, rtol=1e-6, atol=1e-7)
    # And back: metaweight's V into a fresh VNet.
    tr2 = _trainer(mw.MWNet(hidden=8), seed=5)
    back = VNet(8)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in tr2.weight_net.state_dict().items()})
    with torch.no_grad():
        ref2 = back(torch.from_numpy(losses).reshape(-1, 1)).numpy().reshape(-1)
    np.testing.assert_allclose(tr2.weight_function(losses), ref2, rtol=1e-6, atol=1e-7)
