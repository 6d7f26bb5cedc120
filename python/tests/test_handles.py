"""Native handles (Network, Trainer, Strategy, LAWSearch): one lifetime, no copies, no re-entry;
and text or configurations a user passes are refused with the library's own errors."""

from __future__ import annotations

import copy
import gc
import json
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import metaweight as mw
import numpy as np
import pytest
from _api_support import small_mlp
from metaweight import NotCopyableError
from metaweight._handle import NativeHandle
from metaweight.experiments.config import ConfigError, load_config
from metaweight.law import LAWSearch, Strategy


def _search() -> LAWSearch:
    return LAWSearch("mlp(hidden=8, classes=3)", input_shape=(4,))


def _network() -> mw.Network:
    return small_mlp()


def _trainer() -> mw.Trainer:
    return mw.Trainer(small_mlp(), mw.SGD(lr=0.05))


def _strategy() -> Strategy:
    with _search() as s:
        return s.strategy()


MAKERS: dict[str, Callable[[], NativeHandle]] = {
    "Network": _network,
    "Trainer": _trainer,
    "Strategy": _strategy,
    "LAWSearch": _search,
}


@pytest.fixture(params=sorted(MAKERS))
def handle(request: pytest.FixtureRequest) -> Iterator[NativeHandle]:
    h = MAKERS[request.param]()
    yield h
    h.close()


def test_every_handle_type_shares_the_one_base_class(handle: NativeHandle) -> None:
    assert isinstance(handle, NativeHandle)


@pytest.mark.parametrize("how", [pickle.dumps, copy.copy, copy.deepcopy], ids=["pickle", "copy", "deepcopy"])
def test_every_handle_type_refuses_pickling_and_copying(handle: NativeHandle, how: Callable[[Any], Any]) -> None:
    with pytest.raises(NotCopyableError, match="cannot be") as info:
        how(handle)
    # Both a TypeError (what pickle raises for unpicklable objects) and a library error.
    assert isinstance(info.value, TypeError) and isinstance(info.value, mw.MetaweightError)
    assert not handle.closed  # the refused copy left the original intact


def test_copies_of_a_search_inside_containers_are_refused_too() -> None:
    with _search() as s:
        with pytest.raises(NotCopyableError):
            copy.deepcopy({"search": [s]})
        with pytest.raises(NotCopyableError):
            pickle.dumps((1, s))


def test_close_is_idempotent_and_the_context_manager_closes(handle: NativeHandle) -> None:
    with handle as h:
        assert h is handle and not h.closed
    assert handle.closed
    handle.close()
    assert handle.closed


def test_closed_handles_raise_closed_error() -> None:
    net = _network()
    net.close()
    with pytest.raises(mw.ClosedError):
        net.get_flat()
    s = _search()
    s.close()
    with pytest.raises(mw.ClosedError):
        s.strategy()
    st = _strategy()
    st.close()
    with pytest.raises(mw.ClosedError):
        st.save("unused.ckpt")


def test_unclosed_handles_are_freed_by_the_garbage_collector() -> None:
    for _ in range(20):
        for make in MAKERS.values():
            make()
    gc.collect()


def test_fit_refuses_to_be_called_again_from_its_own_callback() -> None:
    x = np.random.default_rng(0).random((40, 64), dtype=np.float32)
    y = np.arange(40) % 10
    trainer = _trainer()
    errors: list[Exception] = []

    def reenter(t: mw.Trainer, record: Any) -> None:
        try:
            t.fit(x, y, epochs=1, batch_size=20, progress=False)
        except mw.StateError as e:
            errors.append(e)

    run = trainer.fit(x, y, epochs=2, batch_size=20, progress=False, callbacks=[reenter])
    assert [r.epoch for r in run] == [1, 2]
    assert [r.epoch for r in trainer.history] == [1, 2]  # no duplicated epoch numbers
    assert len(errors) == 2 and "called again" in str(errors[0])
    # After the run, fit works again.
    assert [r.epoch for r in trainer.fit(x, y, epochs=1, batch_size=20, progress=False)] == [3]
    trainer.close()


def test_a_surrogate_in_a_spec_raises_invalid_argument_error() -> None:
    with pytest.raises(mw.InvalidArgumentError, match="surrogate"):
        mw.Network("linear(out=\ud800)", input_shape=(4,))
    with pytest.raises(mw.InvalidArgumentError, match="surrogate"):
        LAWSearch("mlp(hidden=\udfff, classes=3)")
    with pytest.raises(mw.InvalidArgumentError):
        mw.Trainer(small_mlp(), method="mw\ud800net")


def test_a_lone_surrogate_in_a_path_raises_invalid_argument_error(trainer: mw.Trainer, tmp_path: Any) -> None:
    with pytest.raises(mw.InvalidArgumentError, match="surrogate"):
        trainer.save(str(tmp_path / "bad\ud800.ckpt"))


def test_deeply_nested_experiment_configs_raise_config_errors(tmp_path: Any) -> None:
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(50_000):  # deeper than the interpreter's recursion limit
        cur["a"] = {}
        cur = cur["a"]
    with pytest.raises(ConfigError, match="nested"):
        load_config({"defaults": deep})
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nested"):
        load_config(path)
    toml = tmp_path / "deep.toml"
    toml.write_text("a = " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nested"):
        load_config(toml)
    with pytest.raises(ConfigError, match="nested"):
        load_config({}, sets=["seed=" + "[" * 100_000 + "]" * 100_000])


def test_huge_experiment_configs_raise_config_errors(tmp_path: Any) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"description": "x" * (5 << 20)}))
    with pytest.raises(ConfigError, match="at most"):
        load_config(big)
    with pytest.raises(ConfigError, match="more than"):
        load_config({"grid": {"seed": list(range(1000)), "epochs": list(range(1, 1000))}})
    with pytest.raises(ConfigError, match="values"):
        load_config({"description": list(range(300_000))})
    # ConfigError is the library's InvalidArgumentError, not MemoryError or RecursionError.
    assert issubclass(ConfigError, mw.InvalidArgumentError)


def test_search_refuses_to_be_called_again_from_its_own_callback() -> None:
    from metaweight.law import LAWConfig

    rng = np.random.default_rng(0)
    x = rng.random((60, 4), dtype=np.float32)
    y = np.arange(60) % 3
    config = LAWConfig(stages=2, epochs=2, parallel=1, warmup_stages=0)
    errors: list[Exception] = []
    with LAWSearch("mlp(hidden=8, classes=3)", config) as s:

        def reenter(log: Any) -> None:
            try:
                s.search(x, y, x, y, episodes=1, progress=False)
            except mw.StateError as e:
                errors.append(e)

        s.search(x, y, x, y, episodes=1, progress=False, callback=reenter)
        assert errors and "called again" in str(errors[0])
        s.search(x, y, x, y, episodes=1, progress=False)  # works again afterwards

