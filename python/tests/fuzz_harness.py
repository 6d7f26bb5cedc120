"""Property-based fuzzing of metaweight's public Python API, crash-isolated in worker processes.

Each *family* below draws (with hypothesis) the arguments of one group of public calls — arrays of
every dtype, rank 0-5, Fortran order, negative, odd and zero strides, NaN/Inf/1e38, empty and
mismatched arrays, labels out of range, wrong argument types, calls in the wrong order, two
threads on one object — and makes the calls through :meth:`Recorder.call`, which counts what
each did:

- ``ok``: returned;
- ``documented``: raised a :class:`metaweight.MetaweightError` (the package's hierarchy);
- ``other``: raised anything else — a finding (type, message and the call are kept);
- ``crashes``: the worker process died (signal, abort) or hung — the parent counts it, records
  the example being run, and starts a fresh worker.

The parent (:func:`run`) feeds *tasks* ``(family, seed, examples)`` to a worker subprocess
(``python fuzz_harness.py --worker``) over a pipe; each task is one hypothesis run of
``examples`` examples with ``@seed(seed)``, generation phase only, no database: the same task
gives the same calls, so ``--family F --seed S`` reproduces a finding. Entry points:
``python/tests/test_fuzz.py`` (fast profile, pytest) and ``scripts/fuzz.py`` (long profile).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON_DIR = HERE.parent  # python/ (holds the metaweight package)


def _import_paths() -> list[str]:
    """python/ when its package has a built extension (editable/dev tree); otherwise nothing, so
    workers import the installed package (a non-editable install leaves python/ without _core)."""
    return [str(PYTHON_DIR)] if any((PYTHON_DIR / "metaweight").glob("_core*.so")) else []

# --------------------------------------------------------------------------------------------------
# Outcome bookkeeping (worker side)
# --------------------------------------------------------------------------------------------------


class Recorder:
    """Makes public calls and counts their outcomes; prints a progress line before each call so
    that the parent can name the call that killed a worker."""

    def __init__(self, out: Any, documented: tuple[type[BaseException], ...]) -> None:
        self.out = out
        self.documented = documented
        self.counts = {"calls": 0, "ok": 0, "documented": 0, "other": 0}
        self.findings: list[dict[str, Any]] = []
        self.family = ""
        self.by_family: dict[str, dict[str, int]] = {}

    def call(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Calls ``fn(*args, **kwargs)``; returns its result, or None when it raised."""
        self.counts["calls"] += 1
        fam = self.by_family.setdefault(self.family, {"calls": 0, "ok": 0, "documented": 0, "other": 0})
        fam["calls"] += 1
        self.out.write(f"C {name} {_describe(args, kwargs)}\n")
        self.out.flush()
        try:
            result = fn(*args, **kwargs)
        except self.documented as e:
            self.counts["documented"] += 1
            fam["documented"] += 1
            _check_message(e)
            return None
        except Exception as e:  # noqa: BLE001 - the point: anything else is a finding
            self.counts["other"] += 1
            fam["other"] += 1
            if len(self.findings) < 200:
                self.findings.append(
                    {
                        "family": self.family,
                        "call": name,
                        "args": _describe(args, kwargs),
                        "type": f"{type(e).__module__}.{type(e).__qualname__}",
                        "message": str(e)[:400],
                        "where": "".join(traceback.format_tb(e.__traceback__)[-2:])[-800:],
                    }
                )
            return None
        self.counts["ok"] += 1
        fam["ok"] += 1
        return result


def _check_message(e: BaseException) -> None:
    """Documented errors carry a message (naming the argument); an empty one is a bug too."""
    if not str(e).strip():
        raise AssertionError(f"{type(e).__name__} raised with an empty message")


def _describe(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)[:300].replace("\n", " ")


def _short(v: Any) -> str:
    import numpy as np

    if isinstance(v, np.ndarray):
        return f"ndarray(shape={v.shape}, dtype={v.dtype}, strides={v.strides}, c={v.flags.c_contiguous})"
    try:
        r = repr(v)
    except Exception:  # noqa: BLE001
        r = f"<{type(v).__name__}>"
    return r[:80]


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------


def _strategies() -> Any:
    """Imports hypothesis and numpy lazily (the parent process needs neither)."""
    import numpy as np
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    return np, st, hnp


class Junk:
    """An object of no type the API accepts."""

    def __repr__(self) -> str:
        return "Junk()"


def junk_values(st: Any) -> Any:
    return st.sampled_from(
        [
            None,
            "abc",
            "",
            [1, 2],
            [[1], [2, 3]],
            {"a": 1},
            Junk(),
            1.5,
            -1,
            0,
            2**70,
            -(2**70),
            math.nan,
            math.inf,
            True,
            b"xy",
            (),
            3 + 4j,
        ]
    )


FLOAT_SPECIALS = [math.nan, math.inf, -math.inf, 1e38, -1e38, 3.4e38, 1e-45, 0.0, -0.0, 65504.0, 1e300]


@dataclass
class ArrayPlan:
    """How to make an array: shape, dtype, values and memory layout."""

    shape: tuple[int, ...]
    dtype: str
    layout: str
    special: float | None


DTYPES = [
    "float32",
    "float64",
    "float16",
    "int8",
    "int32",
    "int64",
    "uint8",
    "uint64",
    "bool",
    "complex64",
    "object",
    "U3",
    "S2",
]
LAYOUTS = [
    "C",
    "F",
    "reversed",
    "strided",
    "broadcast",
    "transposed",
    "readonly",
    "unaligned",
    "list",
    "scalar",
]


def draw_array(
    draw: Any,
    shape: tuple[int, ...] | None = None,
    dtype: str | None = None,
    *,
    valid_bias: float = 0.6,
    low: float = -3,
    high: float = 3,
) -> Any:
    """An array of the given (or a random) shape with a random dtype, layout and special values.

    With probability ``valid_bias`` the dtype is float32/float64 and the values are finite, so
    deeper code runs; otherwise anything goes."""
    np, st, _hnp = _strategies()
    plausible = draw(st.floats(0, 1)) < valid_bias
    if shape is None or draw(st.integers(0, 9)) == 0:
        rank = draw(st.integers(0, 5))
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=rank, max_size=rank)))
    if dtype is None:
        dtype = draw(st.sampled_from(["float32", "float64"])) if plausible else draw(st.sampled_from(DTYPES))
    layout = "C" if plausible and draw(st.booleans()) else draw(st.sampled_from(LAYOUTS))
    special = None if plausible else draw(st.sampled_from([None, *FLOAT_SPECIALS]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape)) if shape else 1
    if size > 200_000:
        shape, size = (2, 2), 4
    vals = rng.uniform(low, high, size=size)
    if dtype == "object":
        a = np.empty(size, dtype=object)
        for i in range(size):
            a[i] = draw(st.sampled_from([1.0, None, "x", [1], 2]))
    elif dtype in ("U3", "S2"):
        a = np.array([str(round(v, 1)) for v in vals], dtype=dtype) if size else np.zeros(0, dtype=dtype)
    elif dtype == "bool":
        a = vals > 0
    elif dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        a = np.clip(np.round(vals), info.min, info.max).astype(dtype)
    else:
        a = vals.astype(dtype)
        if special is not None and size:
            with np.errstate(all="ignore"):
                a[rng.integers(0, size)] = special
    a = a.reshape(shape) if shape else a.reshape(())
    return _layout(np, a, layout)


def _layout(np: Any, a: Any, layout: str) -> Any:
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "reversed" and a.ndim:
        return a[::-1]
    if layout == "strided" and a.ndim:
        big = np.repeat(a, 2, axis=0)
        return big[::2]
    if layout == "broadcast" and a.ndim and a.shape[0] > 0:
        return np.broadcast_to(a[:1], a.shape)
    if layout == "transposed" and a.ndim >= 2:
        return np.ascontiguousarray(np.swapaxes(a, 0, -1)).swapaxes(0, -1)
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if layout == "unaligned" and a.dtype.kind in "fiu" and a.itemsize > 1:
        buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
        u = buf[1:].view(a.dtype).reshape(a.shape)
        u[...] = a
        return u
    if layout == "list":
        return a.tolist()
    if layout == "scalar":
        return a.reshape(-1)[:1].tolist()[0] if a.size else 0.0
    return a


def draw_labels(draw: Any, n: int, classes: int, *, valid_bias: float = 0.6) -> Any:
    np, st, _ = _strategies()
    if draw(st.floats(0, 1)) < valid_bias:
        seed = draw(st.integers(0, 2**32 - 1))
        return (
            np.random.default_rng(seed)
            .integers(0, classes, size=n)
            .astype(draw(st.sampled_from(["int64", "int32", "uint8"])))
        )
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(junk_values(st))
    m = n if draw(st.booleans()) else draw(st.integers(0, n + 3))
    vals = np.array(draw(st.lists(st.integers(-3, classes + 3), min_size=m, max_size=m)), dtype=np.int64)
    if kind == 1:
        return vals.astype(np.float64) + draw(st.sampled_from([0.0, 0.5]))
    if kind == 2:
        return vals.astype(
            draw(st.sampled_from(["int8", "uint8", "int16", "uint64", "bool", "float32", "object", "U3"]))
        )
    if kind == 3:
        v = vals.astype(np.float64)
        if m:
            v[0] = draw(st.sampled_from([math.nan, math.inf, 2.0**40, -(2.0**63), 2.0**64]))
        return v
    if kind == 4:
        return vals.reshape(-1, 1) if m else vals.reshape(0, 1)
    if kind == 5:
        return vals.tolist()
    return vals


def draw_int(draw: Any, lo: int, hi: int, *, valid_bias: float = 0.7) -> Any:
    _, st, _ = _strategies()
    if draw(st.floats(0, 1)) < valid_bias:
        return draw(st.integers(lo, hi))
    return draw(
        st.one_of(
            st.integers(-(2**65), 2**65),
            st.sampled_from([-1, 0, 2**31, 2**63, 1.0, 2.5, "3", None, True]),
            junk_values(st),
        )
    )


def draw_count(draw: Any, lo: int, hi: int) -> Any:
    """A loop count (epochs, episodes): small, or invalid (never a huge valid count that would
    legitimately run for hours)."""
    _, st, _ = _strategies()
    if draw(st.integers(0, 4)):
        return draw(st.integers(lo, hi))
    return draw(st.sampled_from([-1, 0, 2**31 + 1, 2**63, 2**70, 1.5, "2", None, True, math.nan]))


def draw_float(draw: Any, lo: float, hi: float, *, valid_bias: float = 0.7) -> Any:
    _, st, _ = _strategies()
    if draw(st.floats(0, 1)) < valid_bias:
        return draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))
    return draw(
        st.one_of(st.sampled_from([*FLOAT_SPECIALS, -1.0, 0, 1, "0.1", None]), st.floats(), junk_values(st))
    )


def draw_seed(draw: Any) -> Any:
    return draw_int(draw, 0, 2**32, valid_bias=0.85)


# --------------------------------------------------------------------------------------------------
# Families (each: fn(draw, rec, env))
# --------------------------------------------------------------------------------------------------


@dataclass
class Env:
    """Per-worker fixtures: a temp directory and a few tiny valid objects."""

    tmp: Path
    mw: Any
    files: dict[str, Path] = field(default_factory=dict)
    strategy: Any = None  # a Strategy from a tiny search (fam_law_search), reused by fam_law


TINY_FLAT = (4,)
TINY_IMAGE = (1, 6, 6)


def tiny_model(mw: Any, kind: str, classes: int = 3, seed: int = 0) -> Any:
    if kind == "flat":
        return mw.mlp(4, hidden=(5,), num_classes=classes, seed=seed)
    if kind == "bn":
        return mw.mlp(4, hidden=(5,), num_classes=classes, batch_norm=True, dropout=0.2, seed=seed)
    return mw.build(
        [
            mw.Conv2d(2, 3, padding=1),
            mw.BatchNorm(),
            mw.ReLU(),
            mw.MaxPool2d(2),
            mw.Flatten(),
            mw.Linear(classes),
        ],
        input_shape=TINY_IMAGE,
        seed=seed,
    )


METHOD_NAMES = [
    "erm",
    "l2rw",
    "mwnet",
    "gdw",
    "focal",
    "class_balanced",
    "inverse_frequency",
    "hard_mining",
    "random",
    "self_paced",
    "bootstrap",
    "fine_tune",
    "class_balanced_sampling",
]
#: Methods that a trainer accepts by name alone (the class-count methods need counts).
SAFE_METHODS = [m for m in METHOD_NAMES if m not in ("class_balanced", "inverse_frequency")]


def draw_method(draw: Any, mw: Any, classes: int = 3) -> Any:
    """A method object with random (mostly valid) options, or a name, or junk."""
    _, st, _ = _strategies()
    k = draw(st.integers(0, 19))
    if k == 0:
        return draw(st.one_of(junk_values(st), st.text(max_size=12)))
    if k == 1:
        return draw(st.sampled_from(METHOD_NAMES + ["ERM", "nope", "l2rw ", mw.GDW, int]))
    f = lambda lo, hi: draw_float(draw, lo, hi, valid_bias=0.85)
    b = lambda: draw(st.booleans()) if draw(st.integers(0, 9)) else draw(junk_values(st))
    opt = lambda: draw(st.sampled_from(["adam", "sgd"])) if draw(st.integers(0, 9)) else draw(junk_values(st))
    counts = lambda: (
        None
        if draw(st.booleans())
        else draw(st.one_of(st.lists(st.integers(-1, 50), max_size=classes + 1), junk_values(st)))
    )
    makers = [
        lambda: mw.ERM(),
        lambda: mw.L2RW(virtual_momentum=b(), virtual_lr=None if draw(st.booleans()) else f(1e-4, 1)),
        lambda: mw.MWNet(
            normalize=b(),
            detach_loss=b(),
            hidden=draw_int(draw, 1, 20, valid_bias=0.85),
            optimizer=opt(),
            lr=f(1e-5, 0.1),
            weight_decay=f(0, 1e-2),
            momentum=f(0, 0.99),
            virtual_momentum=b(),
        ),
        lambda: mw.GDW(
            hidden=draw_int(draw, 1, 20, valid_bias=0.85),
            lr=f(1e-5, 0.1),
            eta=None if draw(st.booleans()) else f(0.1, 1000),
            clip=f(0, 1),
            clamp=(f(1e-8, 1), f(1, 1e6)) if draw(st.integers(0, 5)) else draw(junk_values(st)),
            prob_clamp=f(0.5, 1),
        ),
        lambda: mw.Focal(gamma=f(0, 5)),
        lambda: mw.ClassBalanced(class_counts=counts(), beta=f(0, 0.99999)),
        lambda: mw.InverseFrequency(class_counts=counts()),
        lambda: mw.HardMining(fraction=f(0, 1)),
        lambda: mw.RandomWeights(),
        lambda: mw.SelfPaced(
            threshold=None if draw(st.booleans()) else f(0, 10),
            growth=f(1, 3),
            interval=draw_int(draw, 1, 10),
        ),
        lambda: mw.Bootstrap(beta=None if draw(st.booleans()) else f(0, 1), hard=b()),
        lambda: mw.FineTune(
            epochs=draw_count(draw, 0, 2),
            batch_size=None if draw(st.booleans()) else draw_int(draw, 1, 20),
            lr=None if draw(st.booleans()) else f(1e-4, 1),
        ),
        lambda: mw.ClassBalancedSampling(),
    ]
    maker = draw(st.sampled_from(makers))
    try:
        return maker()
    except mw.MetaweightError:
        return draw(st.sampled_from(METHOD_NAMES))


def draw_optimizer(draw: Any, mw: Any) -> Any:
    _, st, _ = _strategies()
    f = lambda lo, hi: draw_float(draw, lo, hi, valid_bias=0.85)
    k = draw(st.integers(0, 9))
    try:
        if k == 0:
            return draw(junk_values(st))
        if k <= 5:
            return mw.SGD(
                lr=f(1e-4, 0.5), momentum=f(0, 0.99), nesterov=draw(st.booleans()), weight_decay=f(0, 1e-2)
            )
        return mw.Adam(
            lr=f(1e-5, 0.1),
            betas=(f(0, 0.99), f(0.9, 0.9999)),
            eps=f(1e-10, 1e-3),
            weight_decay=f(0, 1e-2),
            decoupled=draw(st.booleans()),
        )
    except mw.MetaweightError:
        return mw.SGD(lr=0.05)


def draw_schedule(draw: Any, mw: Any) -> Any:
    _, st, _ = _strategies()
    f = lambda lo, hi: draw_float(draw, lo, hi, valid_bias=0.85)
    unit = draw(st.sampled_from(["epoch", "step", "epoch", "fortnight"]))
    k = draw(st.integers(0, 9))
    try:
        if k == 0:
            return draw(junk_values(st))
        if k <= 3:
            return mw.Constant(warmup=f(0, 5), unit=unit)
        if k <= 6:
            return mw.MultiStep(
                draw(st.lists(st.floats(0, 20, allow_nan=False), max_size=3)),
                gamma=f(0.01, 1),
                unit=unit,
                warmup=f(0, 3),
            )
        return mw.Cosine(
            total=None if draw(st.booleans()) else f(1, 50), min_lr=f(0, 1e-3), unit=unit, warmup=f(0, 3)
        )
    except mw.MetaweightError:
        return mw.Constant()


def fam_construct(draw: Any, rec: Recorder, env: Env) -> None:
    """Network / layer / preset construction with random and bad arguments, spec strings too."""
    mw = env.mw
    _, st, _ = _strategies()
    i = lambda lo, hi: draw_int(draw, lo, hi)
    k = draw(st.integers(0, 9))
    if k == 0:
        spec = draw(
            st.one_of(
                st.text(max_size=40),
                st.sampled_from(
                    [
                        "mlp(hidden=8, classes=3)",
                        "linear(out=3)",
                        "conv(out=2,k=3)",
                        "mlp(hidden=-1)",
                        "linear(out=99999999999)",
                        "residual(",
                        "linear(out=3",
                        "",
                        "mlp(hidden=8, classes=0)",
                        "relu",
                        "linear(out=3); linear(out=2)",
                        "\x00",
                    ]
                ),
                junk_values(st),
            )
        )
        shape = draw(
            st.one_of(
                st.sampled_from([(4,), (1, 6, 6), (0,), (-1,), (2, 3), (1, 2, 3, 4), (2**40,), ()]),
                junk_values(st),
            )
        )
        rec.call("Network", mw.Network, spec, shape, seed=draw_seed(draw))
    elif k <= 3:
        rec.call(
            "mlp",
            mw.mlp,
            draw_int(draw, 1, 8),
            hidden=draw(st.one_of(st.lists(st.integers(-1, 8), max_size=3), junk_values(st)))
            if draw(st.integers(0, 3)) == 0
            else (4,),
            num_classes=i(1, 5),
            batch_norm=draw(st.booleans()),
            dropout=draw_float(draw, 0, 0.9),
            seed=draw_seed(draw),
        )
    elif k == 4:
        rec.call(
            "lenet5",
            mw.lenet5,
            draw(
                st.one_of(
                    st.sampled_from([(1, 28, 28), (1, 8, 8), (3, 32, 32), (1, 4, 4), (28, 28)]),
                    junk_values(st),
                )
            ),
            num_classes=i(1, 10),
            seed=draw_seed(draw),
        )
    elif k == 5:
        rec.call(
            "resnet32",
            mw.resnet32,
            draw(st.one_of(st.sampled_from([(3, 8, 8), (1, 4, 4), (3, 2, 2), (8,)]), junk_values(st))),
            num_classes=i(1, 10),
            seed=draw_seed(draw),
        )
    elif k == 6:
        rec.call(
            "wide_resnet",
            mw.wide_resnet,
            depth=draw(st.sampled_from([10, 16, 28, 5, 0, -4, "28"])),
            widen=draw(st.sampled_from([1, 0, -1, 2.5])),
            input_shape=draw(st.sampled_from([(3, 8, 8), (1, 4, 4), (8,)])),
            num_classes=i(1, 10),
            dropout=draw_float(draw, 0, 0.5),
        )
    else:
        layers = []
        makers = [
            lambda: mw.Linear(i(1, 6), bias=draw(st.booleans()), kaiming=draw(st.booleans())),
            lambda: mw.Conv2d(i(1, 4), i(1, 5), stride=i(1, 3), padding=i(0, 3), bias=draw(st.booleans())),
            lambda: mw.BatchNorm(),
            lambda: mw.ReLU(),
            lambda: mw.MaxPool2d(i(1, 3), stride=None if draw(st.booleans()) else i(1, 3)),
            lambda: mw.AvgPool2d(i(1, 3)),
            lambda: mw.GlobalAvgPool(),
            lambda: mw.Flatten(),
            lambda: mw.Dropout(draw_float(draw, 0, 0.99)),
            lambda: mw.ShortcutA(i(1, 4), stride=i(1, 2)),
            lambda: mw.Residual(
                [mw.Conv2d(2, 3, padding=1)], shortcut=None if draw(st.booleans()) else [mw.ShortcutA(2)]
            ),
            lambda: draw(junk_values(st)),
        ]
        for _ in range(draw(st.integers(0, 5))):
            layer = rec.call("layer", draw(st.sampled_from(makers)))
            layers.append(layer)
        if draw(st.booleans()):
            layers.append(mw.Linear(3))
        shape = draw(
            st.one_of(st.sampled_from([(4,), (1, 6, 6), (2, 5, 5), (1, 1, 1), (3,)]), junk_values(st))
        )
        net = rec.call(
            "build",
            mw.build,
            layers if draw(st.integers(0, 9)) else draw(junk_values(st)),
            shape,
            seed=draw_seed(draw),
        )
        if net is not None:
            rec.call("Network.summary", net.summary)
            rec.call("Network.activation_bytes", net.activation_bytes, draw_int(draw, 1, 64))
            rec.call("Network.close", net.close)


def fam_network(draw: Any, rec: Recorder, env: Env) -> None:
    """Parameter access on a valid network with random arrays, names and dicts."""
    mw = env.mw
    np, st, _ = _strategies()
    net = tiny_model(mw, draw(st.sampled_from(["flat", "bn", "image"])))
    names = net.parameter_names() + net.buffer_names()
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 9))
        if op == 0:
            rec.call("Network.get_flat", net.get_flat)
        elif op == 1:
            shape = (net.num_parameters,) if draw(st.booleans()) else None
            rec.call("Network.set_flat", net.set_flat, draw_array(draw, shape))
        elif op == 2:
            name = draw(st.one_of(st.sampled_from(names), st.text(max_size=10), junk_values(st)))
            rec.call("Network.get_parameter", net.get_parameter, name)
        elif op == 3:
            name = (
                draw(st.sampled_from(names))
                if draw(st.integers(0, 4))
                else draw(st.one_of(st.text(max_size=8), junk_values(st)))
            )
            shape = net.parameter_shapes().get(name) if isinstance(name, str) else None
            rec.call("Network.set_parameter", net.set_parameter, name, draw_array(draw, shape))
        elif op == 4 and not net.closed:
            sd = net.state_dict()
            mode = draw(st.integers(0, 4))
            if mode == 1 and sd:
                sd.pop(next(iter(sd)))
            elif mode == 2:
                sd["extra.weight"] = np.zeros(3, np.float32)
            elif mode == 3 and sd:
                key = draw(st.sampled_from(sorted(sd)))
                sd[key] = draw_array(draw, sd[key].shape)
            elif mode == 4:
                sd = draw(junk_values(st))
            rec.call(
                "Network.load_state_dict",
                net.load_state_dict,
                sd,
                strict=draw(st.sampled_from([True, False, "yes"])),
            )
        elif op == 5:
            rec.call("Network.activation_bytes", net.activation_bytes, draw_int(draw, 1, 4096))
        elif op == 6:
            c = rec.call("Network.copy", net.copy)
            if c is not None:
                rec.call("Network.close", c.close)
        elif op == 7:
            rec.call("Network.parameters", net.parameters)
            rec.call("Network.buffers", net.buffers)
        elif op == 8:
            rec.call("Network.summary", net.summary)
            rec.call("Network.signature", lambda: net.signature)
        else:
            rec.call("Network.close", net.close)
            rec.call("Network.get_flat(closed)", net.get_flat)
            rec.call("Network.set_flat(closed)", net.set_flat, np.zeros(3, np.float32))
    net.close()


def _batch(draw: Any, model: Any, n: int | None = None) -> tuple[Any, Any]:
    _, st, _ = _strategies()
    n = draw(st.integers(1, 6)) if n is None else n
    shape = (n, *model.input_shape)
    x = draw_array(draw, shape)
    y = draw_labels(draw, n, model.num_classes)
    return x, y


def fam_trainer(draw: Any, rec: Recorder, env: Env) -> None:
    """Trainer construction (random optimizer/schedule/method/augment) and step/predict/... with
    random arrays, labels, sample weights and meta batches."""
    mw = env.mw
    np, st, _ = _strategies()
    kind = draw(st.sampled_from(["flat", "bn", "image"]))
    model = tiny_model(mw, kind)
    aug = None
    if draw(st.integers(0, 3)) == 0:
        aug = rec.call("Augment", mw.Augment, crop_padding=draw_int(draw, 0, 4), flip=draw(st.booleans()))
    tr = rec.call(
        "Trainer",
        mw.Trainer,
        model if draw(st.integers(0, 15)) else draw(junk_values(st)),
        draw_optimizer(draw, mw),
        draw_schedule(draw, mw),
        method=draw_method(draw, mw),
        seed=draw_seed(draw),
        augment=aug,
        steps_per_epoch=None if draw(st.booleans()) else draw_int(draw, 1, 10),
    )
    if tr is None:
        tr = mw.Trainer(model, method=draw(st.sampled_from(SAFE_METHODS)), seed=0)
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.integers(0, 9))
        if op <= 3:
            x, y = _batch(draw, model)
            kw: dict[str, Any] = {}
            if draw(st.integers(0, 2)) == 0:
                n = x.shape[0] if isinstance(x, np.ndarray) and x.ndim else 1
                kw["sample_weights"] = (
                    draw_array(draw, (n,), low=0, high=2) if draw(st.booleans()) else draw(junk_values(st))
                )
            if draw(st.booleans()):
                xm, ym = _batch(draw, model)
                kw["x_meta"], kw["y_meta"] = xm, ym
            rec.call("Trainer.step", tr.step, x, y, **kw)
        elif op == 4:
            x, _ = _batch(draw, model)
            rec.call("Trainer.predict", tr.predict, x, batch_size=draw_int(draw, 1, 8))
        elif op == 5:
            x, _ = _batch(draw, model)
            rec.call("Trainer.predict_proba", tr.predict_proba, x)
            rec.call("Trainer.logits", tr.logits, x)
        elif op == 6:
            x, y = _batch(draw, model)
            rec.call("Trainer.evaluate", tr.evaluate, x, y, batch_size=draw_int(draw, 1, 8))
            rec.call("Trainer.losses", tr.losses, x, y)
        elif op == 7:
            rec.call(
                "Trainer.weight_function",
                tr.weight_function,
                draw_array(draw, (draw(st.integers(0, 5)),), low=0, high=10),
            )
        elif op == 8:
            rec.call("Trainer.step_count", lambda: tr.step_count)
            rec.call("Trainer.learning_rate", lambda: tr.learning_rate)
        else:
            rec.call("Trainer.close", tr.close)
            x, y = _batch(draw, model)
            rec.call("Trainer.step(closed)", tr.step, x, y)
    params = model.get_flat() if not model.closed else None
    if params is not None and not np.isfinite(params).all():
        raise AssertionError("parameters became non-finite without an error")
    tr.close()
    model.close()


def fam_fit(draw: Any, rec: Recorder, env: Env) -> None:
    """Trainer.fit with random data, epochs, batch sizes, meta sets and validation sets."""
    mw = env.mw
    _np, st, _ = _strategies()
    model = tiny_model(mw, draw(st.sampled_from(["flat", "bn"])))
    method = draw(st.sampled_from(SAFE_METHODS))
    sched = draw_schedule(draw, mw)
    if not isinstance(sched, mw.Schedule):
        sched = mw.Constant()
    tr = rec.call(
        "Trainer",
        mw.Trainer,
        model,
        mw.SGD(lr=0.05),
        sched,
        method=method,
        seed=draw(st.integers(0, 9)),
        steps_per_epoch=draw(st.sampled_from([None, 2])),
    )
    if tr is None:
        tr = mw.Trainer(model, mw.SGD(lr=0.05), method=method)
    n = draw(st.integers(0, 12))
    x, y = _batch(draw, model, n)
    kw: dict[str, Any] = {
        "epochs": draw_count(draw, 0, 2),
        "batch_size": draw_int(draw, 1, 8),
        "progress": False,
    }
    if draw(st.booleans()):
        kw["meta"] = _batch(draw, model) if draw(st.integers(0, 5)) else draw(junk_values(st))
        kw["meta_batch_size"] = draw_int(draw, 1, 8)
    if draw(st.integers(0, 2)) == 0:
        kw["x_val"], kw["y_val"] = _batch(draw, model)
    kw["record_weights"] = draw(st.booleans())
    h = rec.call("Trainer.fit", tr.fit, x, y, **kw)
    if h is not None:
        rec.call("History.to_dict", h.to_dict)
    tr.close()
    model.close()


def fam_lifecycle(draw: Any, rec: Recorder, env: Env) -> None:
    """Calls in random orders: save/load/from_checkpoint across architectures and methods, junk
    checkpoint files, use after close, close twice, trainer on a closed model."""
    mw = env.mw
    _np, st, _ = _strategies()
    models = [
        tiny_model(mw, draw(st.sampled_from(["flat", "bn", "image"])), classes=draw(st.sampled_from([3, 4])))
        for _ in range(2)
    ]
    trainers = [
        mw.Trainer(m, method=draw(st.sampled_from(SAFE_METHODS)), seed=k) for k, m in enumerate(models)
    ]
    paths = [
        env.tmp / "a.ckpt",
        env.tmp / "b.ckpt",
        *env.files.values(),
        env.tmp / "missing" / "x.ckpt",
        env.tmp,
    ]
    for _ in range(draw(st.integers(2, 8))):
        t = draw(st.integers(0, 1))
        tr, model = trainers[t], models[t]
        op = draw(st.integers(0, 11))
        path = draw(st.sampled_from(paths)) if draw(st.integers(0, 5)) else draw(junk_values(st))
        if op <= 2:
            x, y = _batch(draw, model)
            kw = {}
            if draw(st.booleans()):
                kw["x_meta"], kw["y_meta"] = _batch(draw, model)
            rec.call("Trainer.step", tr.step, x, y, **kw)
        elif op == 3:
            rec.call("Trainer.save", tr.save, path)
        elif op == 4:
            rec.call("Trainer.load", tr.load, path)
        elif op == 5:
            other = rec.call(
                "Trainer.from_checkpoint",
                mw.Trainer.from_checkpoint,
                path,
                model,
                method=draw(st.sampled_from(METHOD_NAMES)),
            )
            if other is not None:
                trainers[t] = other
        elif op == 6:
            rec.call("Trainer.close", tr.close)
        elif op == 7:
            rec.call("Network.close", model.close)
        elif op == 8:
            rec.call("Trainer(model)", mw.Trainer, model)
        elif op == 9:
            rec.call("Trainer.predict", tr.predict, _batch(draw, model)[0])
        elif op == 10:
            rec.call("Network.get_flat", model.get_flat)
        else:
            other_model = models[1 - t]
            rec.call(
                "Network.load_state_dict",
                model.load_state_dict,
                other_model.state_dict() if not other_model.closed else {},
            )
    for tr in trainers:
        tr.close()
    for m in models:
        m.close()


def fam_conditions(draw: Any, rec: Recorder, env: Env) -> None:
    """Every function of metaweight.conditions with random labels and parameters."""
    mw = env.mw
    np, st, _ = _strategies()
    c = draw_int(draw, 2, 6, valid_bias=0.85)
    n = draw(st.integers(0, 60))
    cc = c if isinstance(c, int) and not isinstance(c, bool) and 0 < c < 100 else 3
    y = draw_labels(draw, n, cc, valid_bias=0.7)
    rate = draw_float(draw, 0, 1)
    seed = (
        draw(st.one_of(st.integers(0, 100), junk_values(st)))
        if draw(st.integers(0, 5)) == 0
        else draw(st.integers(0, 100))
    )
    cond = mw.conditions
    k = draw(st.integers(0, 8))
    if k == 0:
        rec.call(
            "uniform_noise", cond.uniform_noise, y, rate, c, seed=seed, include_true_class=draw(st.booleans())
        )
    elif k == 1:
        mapping = (
            None
            if draw(st.booleans())
            else draw(
                st.one_of(
                    st.lists(st.integers(-1, cc), max_size=cc + 1),
                    st.dictionaries(st.integers(-1, cc), st.integers(-1, cc), max_size=3),
                    junk_values(st),
                )
            )
        )
        rec.call(
            "flip_noise",
            cond.flip_noise,
            y,
            rate,
            c,
            seed=seed,
            targets=draw_int(draw, 1, 3),
            mapping=mapping,
        )
    elif k == 2:
        rec.call("background_flip", cond.background_flip, y, rate, draw_int(draw, 0, cc), seed=seed)
    elif k == 3:
        t = np.full((cc, cc), 1.0 / cc) if draw(st.booleans()) else draw_array(draw, (cc, cc), low=0, high=1)
        rec.call("transition_noise", cond.transition_noise, y, t, seed=seed)
    elif k == 4:
        rec.call(
            "long_tailed",
            cond.long_tailed,
            y,
            draw_float(draw, 1, 200),
            c,
            seed=seed,
            n_max=None if draw(st.booleans()) else draw_int(draw, 1, 30),
        )
    elif k == 5:
        y10 = draw_labels(draw, n, 10)
        rec.call(
            "two_class_imbalance",
            cond.two_class_imbalance,
            y10,
            classes=draw(st.sampled_from([(4, 9), (0, 1), (1, 1), (-1, 3), (4, 99)])),
            majority=draw(st.sampled_from([9, 4, 0, 5])),
            ratio=draw_float(draw, 1, 100),
            total=None if draw(st.booleans()) else draw_int(draw, 1, 100),
            seed=seed,
        )
    elif k == 6:
        rec.call("meta_split", cond.meta_split, y, draw_int(draw, 0, 5), c, seed=seed)
    elif k == 7:
        x = draw_array(draw, (n, 4)) if draw(st.booleans()) else np.zeros((n, 4), np.float32)
        rec.call(
            "compose",
            cond.compose,
            x,
            y,
            c,
            seed=seed,
            meta_per_class=draw_int(draw, 0, 3),
            imbalance_factor=draw_float(draw, 1, 20),
            noise=draw(st.sampled_from([None, "uniform", "flip", "background", "bogus", 3])),
            noise_rate=rate,
        )
    else:
        r = rec.call("uniform_noise", cond.uniform_noise, y, rate, c, seed=seed)
        if r is not None:
            rec.call("Corruption.noise_rate", lambda: r.noise_rate)


def fam_data(draw: Any, rec: Recorder, env: Env) -> None:
    """metaweight.data helpers and loaders (junk files and folders included) and metrics."""
    mw = env.mw
    _np, st, _ = _strategies()
    data = mw.data
    n = draw(st.integers(0, 30))
    y = draw_labels(draw, n, 4, valid_bias=0.7)
    x = draw_array(draw, (n, 3))
    k = draw(st.integers(0, 11))
    frac = draw_float(draw, 0, 1)
    if k == 0:
        rec.call(
            "split_indices", data.split_indices, y, frac, seed=draw_seed(draw), stratify=draw(st.booleans())
        )
    elif k == 1:
        rec.call("split", data.split, x, y, frac, seed=draw_seed(draw), stratify=draw(st.booleans()))
    elif k == 2:
        rec.call("class_counts", data.class_counts, y, draw_int(draw, 1, 6))
    elif k == 3:
        order = (
            None
            if draw(st.booleans())
            else draw(st.one_of(st.lists(st.integers(-2, n + 2), max_size=n + 2), junk_values(st)))
        )
        it = rec.call(
            "batches", data.batches, x, y, draw_int(draw, 1, 8), order=order, drop_last=draw(st.booleans())
        )
        if it is not None:
            rec.call("batches.consume", lambda: [b for b in it])
    elif k == 4:
        others = [draw_array(draw, (draw(st.integers(0, 4)), 3)) for _ in range(draw(st.integers(0, 2)))]
        kw = {}
        if draw(st.booleans()):
            kw["mean"] = draw_array(draw, (3,))
            kw["std"] = draw_array(draw, (3,), low=0, high=2)
        rec.call("normalize", data.normalize, x, *others, eps=draw_float(draw, 0, 1e-3), **kw)
    elif k == 5:
        path = draw(st.sampled_from([*env.files.values(), env.tmp / "nothere", env.tmp]))
        rec.call("load_idx", data.load_idx, path)
    elif k == 6:
        d = draw(st.sampled_from([env.tmp / "cifar_junk", env.tmp / "nothere", env.tmp, env.files["junk"]]))
        rec.call(
            "load_cifar",
            data.load_cifar,
            d,
            num_classes=draw(st.sampled_from([10, 100, 7, "10"])),
            flatten=draw(st.booleans()),
        )
    elif k == 7:
        d = draw(st.sampled_from([env.tmp / "mnist_junk", env.tmp / "nothere", env.tmp]))
        rec.call("load_mnist", data.load_mnist, d)
        rec.call("load_mnist_t10k", data.load_mnist_t10k, d)
    elif k == 8:
        rec.call(
            "load_digits",
            data.load_digits,
            flatten=draw(st.booleans()),
            test_fraction=draw_float(draw, 0, 1),
            seed=draw_seed(draw),
        )
    elif k == 9:
        yp = draw_labels(draw, n, 4, valid_bias=0.7)
        rec.call("accuracy", mw.metrics.accuracy, y, yp)
    elif k == 10:
        yp = draw_labels(draw, n, 4, valid_bias=0.7)
        rec.call(
            "confusion_matrix",
            mw.metrics.confusion_matrix,
            y,
            yp,
            num_classes=None if draw(st.booleans()) else draw_int(draw, 1, 6),
        )
    else:
        yp = draw_labels(draw, n, 4, valid_bias=0.7)
        rec.call(
            "per_class_accuracy",
            mw.metrics.per_class_accuracy,
            y,
            yp,
            num_classes=None if draw(st.booleans()) else draw_int(draw, 1, 6),
        )


def fam_optim(draw: Any, rec: Recorder, env: Env) -> None:
    """Optimizers, schedules, methods and threads settings with random options."""
    mw = env.mw
    _, st, _ = _strategies()
    f = lambda lo, hi: draw_float(draw, lo, hi, valid_bias=0.5)
    i = lambda lo, hi: draw_int(draw, lo, hi, valid_bias=0.5)
    k = draw(st.integers(0, 8))
    if k == 0:
        rec.call(
            "SGD",
            mw.SGD,
            lr=f(0, 1),
            momentum=f(0, 1),
            nesterov=draw(st.one_of(st.booleans(), junk_values(st))),
            weight_decay=f(0, 1),
        )
    elif k == 1:
        rec.call(
            "Adam",
            mw.Adam,
            lr=f(0, 1),
            betas=draw(st.one_of(st.tuples(st.floats(), st.floats()), junk_values(st))),
            eps=f(0, 1),
            weight_decay=f(0, 1),
            decoupled=draw(st.booleans()),
        )
    elif k == 2:
        rec.call(
            "MultiStep",
            mw.MultiStep,
            draw(st.one_of(st.lists(st.floats(), max_size=4), junk_values(st))),
            gamma=f(0, 1),
            unit=draw(st.one_of(st.sampled_from(["epoch", "step"]), junk_values(st))),
            warmup=f(0, 5),
        )
    elif k == 3:
        rec.call(
            "Cosine",
            mw.Cosine,
            total=f(0, 100),
            min_lr=f(0, 1),
            unit=draw(st.sampled_from(["epoch", "step", "x"])),
            warmup=f(0, 5),
        )
    elif k == 4:
        rec.call(
            "Constant",
            mw.Constant,
            warmup=f(0, 5),
            unit=draw(st.one_of(st.sampled_from(["epoch", "step"]), junk_values(st))),
        )
    elif k == 5:
        m = draw_method(draw, mw)
        rec.call("Trainer(method)", lambda: mw.Trainer(tiny_model(mw, "flat"), method=m).close())
    elif k == 6:
        # every method class with fully random keyword values
        cls = draw(
            st.sampled_from(
                [
                    mw.L2RW,
                    mw.MWNet,
                    mw.GDW,
                    mw.Focal,
                    mw.ClassBalanced,
                    mw.InverseFrequency,
                    mw.HardMining,
                    mw.SelfPaced,
                    mw.Bootstrap,
                    mw.FineTune,
                ]
            )
        )
        import inspect

        params = [p for p in inspect.signature(cls).parameters]
        kw = {
            p: draw(st.one_of(junk_values(st), st.floats(), st.integers(-5, 5)))
            for p in params
            if draw(st.booleans())
        }
        m = rec.call(cls.__name__, cls, **kw)
        if m is not None:
            rec.call("Method.spec", lambda: m.spec)
    elif k == 7:
        rec.call("set_threads", mw.set_threads, i(1, 2))
        mw.set_threads(1)
    else:
        rec.call(
            "Augment", mw.Augment, crop_padding=i(0, 5), flip=draw(st.one_of(st.booleans(), junk_values(st)))
        )


def fam_law(draw: Any, rec: Recorder, env: Env) -> None:
    """metaweight.law: configs, Strategy.load on junk, a tiny search's strategy, weights, attach."""
    mw = env.mw
    _np, st, _ = _strategies()
    law = mw.law
    k = draw(st.integers(0, 6))
    if k == 0:
        rec.call(
            "Strategy.load",
            law.Strategy.load,
            draw(
                st.one_of(
                    st.sampled_from([*env.files.values(), env.tmp / "nothere", env.tmp]), junk_values(st)
                )
            ),
        )
    elif k == 1:
        spec = draw(
            st.one_of(
                st.text(max_size=40),
                st.sampled_from(
                    ["stages=4", "stages=-1", "stages=4,parallel=1", "bogus=1", "stages", "=", "lr=nan"]
                ),
            )
        )
        rec.call("LAWConfig.from_spec", law.LAWConfig.from_spec, spec)
    elif k == 2:
        kw = {
            "stages": draw_int(draw, 2, 6),
            "warmup_stages": draw_int(draw, 0, 2),
            "parallel": draw_int(draw, 1, 2),
            "epochs": draw_int(draw, 1, 2),
            "batch_size": draw_int(draw, 1, 16),
            "lr": draw_float(draw, 1e-4, 1),
            "label_encoding": draw(st.sampled_from(["onehot", "embedding", "bogus"])),
            "density": draw(st.sampled_from(["cosine", "histogram", "x"])),
            "gamma": draw_float(draw, 0, 1),
            "buffer_size": draw_int(draw, 1, 100),
        }
        cfg = rec.call("LAWConfig", law.LAWConfig, **kw)
        if cfg is not None:
            rec.call("LAWConfig.spec", lambda: cfg.spec)
    elif k == 3:
        rec.call(
            "roc_auc",
            law.roc_auc,
            draw_array(draw, (draw(st.integers(0, 6)),)),
            draw_labels(draw, draw(st.integers(0, 6)), 2),
        )
    else:
        strat = env.strategy
        if strat is None:
            return
        s = strat
        if k == 4:
            rec.call(
                "Strategy.action",
                s.action,
                draw_int(draw, -1, s.stages + 1),
                loss_smooth=draw_float(draw, 0, 5),
                acc_smooth=draw_float(draw, 0, 1),
            )
        elif k == 5:
            n = draw(st.integers(0, 5))
            rec.call(
                "Strategy.weights",
                s.weights,
                draw_array(draw, (n, s.num_classes)),
                draw_labels(draw, n, s.num_classes),
                draw_int(draw, 0, s.stages),
            )
        else:
            model = tiny_model(mw, "flat", classes=draw(st.sampled_from([3, 3, 4])))
            tr = mw.Trainer(model, seed=0)
            xv, yv = (None, None) if draw(st.booleans()) else _batch(draw, model)
            rec.call(
                "Strategy.attach",
                s.attach,
                tr if draw(st.integers(0, 9)) else draw(junk_values(st)),
                draw_int(draw, 1, 20),
                x_val=xv,
                y_val=yv,
            )
            for _ in range(draw(st.integers(0, 3))):
                x, y = _batch(draw, model)
                rec.call("Trainer.step(strategy)", tr.step, x, y)
            rec.call("Strategy.detach", law.Strategy.detach, tr)
            tr.close()
            model.close()


def fam_law_search(draw: Any, rec: Recorder, env: Env) -> None:
    """A tiny LAWSearch (1 episode of 2-4 stages) and law.train with random arguments."""
    mw = env.mw
    np, st, _ = _strategies()
    law = mw.law
    cfg = law.LAWConfig(
        stages=draw(st.integers(2, 4)),
        warmup_stages=draw(st.integers(0, 1)),
        parallel=1,
        epochs=1,
        batch_size=8,
        buffer_size=50,
        fdu_batch=4,
        fdu_epochs=1,
        actor_hidden=4,
        critic_hidden=4,
        embedding_dim=2,
    )
    n = draw(st.integers(1, 24))
    model_spec = draw(st.sampled_from(["mlp(hidden=4, classes=3)", "linear(out=3)"]))
    if draw(st.integers(0, 1)):
        x, y = _batch(draw, tiny_model(mw, "flat"), n)
    else:
        x, y = np.random.default_rng(n).normal(size=(n, 4)).astype(np.float32), np.arange(n) % 3
    if draw(st.booleans()):
        search = rec.call(
            "LAWSearch",
            law.LAWSearch,
            model_spec if draw(st.integers(0, 9)) else draw(junk_values(st)),
            cfg,
            seed=draw_seed(draw),
            input_shape=(4,) if draw(st.integers(0, 9)) else draw(junk_values(st)),
        )
        if search is None:
            return
        xv, yv = _batch(draw, tiny_model(mw, "flat"))
        rec.call(
            "LAWSearch.search",
            search.search,
            x,
            y,
            xv,
            yv,
            draw_count(draw, 1, 1),
            progress=False,
            example_weights=draw(st.booleans()),
        )
        s = rec.call("LAWSearch.strategy", search.strategy)
        path = env.tmp / "s.law"
        rec.call("LAWSearch.save_strategy", search.save_strategy, path)
        rec.call(
            "LAWSearch.load_strategy",
            search.load_strategy,
            draw(st.sampled_from([path, *env.files.values()])),
        )
        rec.call("LAWSearch.close", search.close)
        rec.call("LAWSearch.strategy(closed)", search.strategy)
        if s is not None:
            env.strategy = s  # reused by fam_law
    else:
        strat = env.strategy
        model = tiny_model(mw, "flat")
        rec.call(
            "law.train",
            law.train,
            model,
            x,
            y,
            strategy=strat if draw(st.booleans()) else None,
            config=cfg,
            epochs=draw_count(draw, 1, 1),
            batch_size=draw_int(draw, 1, 8),
            seed=draw_seed(draw),
            progress=False,
        )
        model.close()


def fam_experiments(draw: Any, rec: Recorder, env: Env) -> None:
    """Experiment configuration parsing: random mappings, random TOML text, filters."""
    _, st, _ = _strategies()
    import metaweight.experiments as ex

    k = draw(st.integers(0, 3))
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 50),
        st.floats(),
        st.text(max_size=6),
        st.sampled_from(["digits", "mlp", "erm", "gdw", "sgd", "multistep", "uniform"]),
    )
    value = st.recursive(
        leaf,
        lambda c: st.one_of(
            st.lists(c, max_size=3),
            st.dictionaries(
                st.sampled_from(["name", "lr", "hidden", "noise", "noise_rate", "epochs", "x"]), c, max_size=3
            ),
        ),
        max_leaves=8,
    )
    keys = st.sampled_from(
        [
            "name",
            "defaults",
            "grid",
            "override",
            "sizes",
            "dataset",
            "model",
            "method",
            "optimizer",
            "schedule",
            "epochs",
            "seed",
            "condition",
            "meta_per_class",
            "bogus",
        ]
    )
    if k == 0:
        cfg = draw(st.dictionaries(keys, value, max_size=5))
        if draw(st.booleans()):
            cfg["name"] = "fz"
        rec.call(
            "load_config",
            ex.load_config,
            cfg,
            size=draw(st.sampled_from([None, "small", "full", 0.5, -1, "x"])),
            sets=draw(st.sampled_from([None, ["epochs=1"], ["bad"], {"seed": 3}])),
        )
    elif k == 1:
        text = draw(
            st.one_of(
                st.text(max_size=80),
                st.sampled_from(
                    [
                        'name = "x"\n[grid]\nseed = [0, 1]\n',
                        'name = "x"\n[defaults]\nepochs = -1\n',
                        "name = [",
                        'name = "x"\n[[grid]]\nmethod = ["gdw"]\n[grid]\n',
                    ]
                ),
            )
        )
        p = env.tmp / "cfg.toml"
        p.write_text(text, encoding="utf-8", errors="surrogatepass") if False else p.write_bytes(
            text.encode("utf-8", "surrogatepass")
        )
        rec.call("load_config(file)", ex.load_config, p)
    elif k == 2:
        items = draw(
            st.one_of(
                st.lists(st.text(max_size=10), max_size=3),
                st.dictionaries(st.text(max_size=5), value, max_size=2),
                junk_values(st),
            )
        )
        f = rec.call("parse_filters", ex.parse_filters, items)
        if f is not None:
            e = ex.load_config({"name": "fz", "grid": {"seed": [0, 1]}})
            rec.call("apply_filters", ex.apply_filters, e.runs, f)
    else:
        cfg = draw(
            st.dictionaries(
                st.sampled_from(["name", "lr", "momentum", "hidden", "milestones", "fractions", "x"]),
                value,
                max_size=3,
            )
        )
        which = draw(st.integers(0, 2))
        if which == 0:
            rec.call("build_optimizer", ex.build_optimizer, cfg)
        elif which == 1:
            rec.call("build_schedule", ex.build_schedule, cfg, draw_int(draw, 1, 10))
        else:
            m = rec.call("build_model", ex.build_model, cfg, (4,), 3, 0)
            if m is not None and hasattr(m, "close"):
                m.close()


def fam_threads(draw: Any, rec: Recorder, env: Env) -> None:
    """Two threads calling one trainer / a trainer and its model / one network at the same time."""
    mw = env.mw
    np, st, _ = _strategies()
    model = tiny_model(mw, draw(st.sampled_from(["flat", "bn"])))
    tr = mw.Trainer(
        model, mw.SGD(lr=0.05), method=draw(st.sampled_from(["erm", "l2rw", "gdw", "focal"])), seed=0
    )
    xs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    ys = np.arange(16) % 3
    meta = tr.method.spec().split("(")[0] in ("l2rw", "gdw")
    ops = {
        "step": lambda: tr.step(xs, ys, **({"x_meta": xs[:6], "y_meta": ys[:6]} if meta else {})),
        "predict": lambda: tr.predict(xs),
        "get_flat": model.get_flat,
        "set_flat": lambda: model.set_flat(np.zeros(model.num_parameters, np.float32)),
        "state_dict": model.state_dict,
        "evaluate": lambda: tr.evaluate(xs, ys),
        "save": lambda: tr.save(env.tmp / f"t{threading.get_ident()}.ckpt"),
        "close_trainer": tr.close,
    }
    a, b = draw(st.sampled_from(sorted(ops))), draw(st.sampled_from(sorted(ops)))
    reps = draw(st.integers(1, 6))
    barrier = threading.Barrier(2)
    lock = threading.Lock()

    def worker(name: str) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=10)
        for _ in range(reps):
            with lock:
                pass
            rec_call(name)

    def rec_call(name: str) -> None:
        with lock:  # the Recorder itself is not thread-safe; count under a lock, call outside
            rec.counts["calls"] += 1
            fam = rec.by_family.setdefault(rec.family, {"calls": 0, "ok": 0, "documented": 0, "other": 0})
            fam["calls"] += 1
        try:
            ops[name]()
            key = "ok"
        except mw.MetaweightError:
            key = "documented"
        except Exception as e:  # noqa: BLE001
            key = "other"
            with lock:
                rec.findings.append(
                    {
                        "family": rec.family,
                        "call": f"thread {name}",
                        "args": "",
                        "type": type(e).__name__,
                        "message": str(e)[:300],
                        "where": "",
                    }
                )
        with lock:
            rec.counts[key] += 1
            fam[key] += 1

    rec.out.write(f"C threads {a} || {b} x{reps}\n")
    rec.out.flush()
    t1 = threading.Thread(target=worker, args=(a,))
    t2 = threading.Thread(target=worker, args=(b,))
    t1.start()
    t2.start()
    t1.join(60)
    t2.join(60)
    if t1.is_alive() or t2.is_alive():
        raise AssertionError(f"threads {a} || {b} did not finish (deadlock?)")
    params = model.get_flat()
    if not np.isfinite(params).all():
        raise AssertionError("parameters became non-finite under concurrent use")
    tr.close()
    model.close()


def _fam_abort(draw: Any, rec: Recorder, env: Env) -> None:
    """Harness self-test only (not in a profile): the worker dies by SIGABRT."""
    rec.out.write("C os.abort (harness self-test)\n")
    rec.out.flush()
    os.abort()


def _fam_metrics_probe(draw: Any, rec: Recorder, env: Env) -> None:
    """Harness self-test only: one valid call."""
    rec.call("accuracy", env.mw.metrics.accuracy, [0, 1], [0, 1])


def _must_refuse(copier: Callable[[Any], Any], obj: Any) -> None:
    """Copies ``obj``; a copy of a native handle that succeeds is a finding (AssertionError)."""
    copier(obj)
    raise AssertionError(f"{copier.__name__} of a {type(obj).__name__} succeeded; it would share the native handle")


def _finding(message: str) -> None:
    """Records a silent state corruption as a finding (an exception outside the hierarchy)."""
    raise AssertionError(message)


def _surrogate_text(draw: Any, st: Any, base: str) -> str:
    """``base`` with a lone surrogate (U+D800..U+DFFF) inserted at a random position."""
    ch = chr(draw(st.integers(0xD800, 0xDFFF)))
    at = draw(st.integers(0, len(base)))
    return base[:at] + ch + base[at:]


def fam_handles(draw: Any, rec: Recorder, env: Env) -> None:
    """Pickling and copying every handle type, re-entrant fit/search callbacks, lone surrogates in
    specs, names and paths, and huge or deeply nested experiment configurations."""
    import copy
    import pickle

    mw = env.mw
    np, st, _ = _strategies()
    from metaweight.experiments.config import load_config
    from metaweight.law import LAWSearch

    op = draw(st.integers(0, 3))
    if op == 0:
        kind = draw(st.sampled_from(["network", "trainer", "search", "strategy"]))
        model = tiny_model(mw, "flat")
        handles: list[Any] = [model]
        if kind == "trainer":
            handles.append(mw.Trainer(model))
        elif kind == "search":
            handles.append(LAWSearch("mlp(hidden=5, classes=3)", input_shape=TINY_FLAT))
        elif kind == "strategy" and env.strategy is not None:
            handles.append(env.strategy)
        h = handles[-1]
        for copier in draw(st.permutations([pickle.dumps, copy.copy, copy.deepcopy])):
            rec.call(f"{copier.__name__}({type(h).__name__})", _must_refuse, copier, h)
        for obj in handles:
            if obj is not env.strategy:
                obj.close()
    elif op == 1:
        model = tiny_model(mw, "flat")
        tr = mw.Trainer(model, mw.SGD(lr=0.05))
        x = np.zeros((6, *TINY_FLAT), dtype=np.float32)
        y = np.arange(6) % 3

        def reenter(t: Any, record: Any) -> None:
            rec.call("Trainer.fit (from its callback)", t.fit, x, y, epochs=1, batch_size=3, progress=False)

        epochs = draw(st.integers(1, 3))
        run = rec.call("Trainer.fit", tr.fit, x, y, epochs=epochs, batch_size=3, progress=False, callbacks=[reenter])
        if run is not None and [r.epoch for r in tr.history] != list(range(1, len(tr.history) + 1)):
            rec.call("fit history after a re-entrant callback", _finding, f"epochs {[r.epoch for r in tr.history]}")
        tr.close()
        model.close()
    elif op == 2:
        what = draw(st.sampled_from(["network", "search", "method", "path"]))
        if what == "network":
            rec.call("Network(surrogate spec)", mw.Network, _surrogate_text(draw, st, "linear(out=3)"), TINY_FLAT)
        elif what == "search":
            rec.call("LAWSearch(surrogate spec)", LAWSearch, _surrogate_text(draw, st, "mlp(hidden=5, classes=3)"))
        elif what == "method":
            model = tiny_model(mw, "flat")
            rec.call("Trainer(surrogate method)", mw.Trainer, model, method=_surrogate_text(draw, st, "erm"))
            model.close()
        else:
            model = tiny_model(mw, "flat")
            tr = mw.Trainer(model)
            rec.call("Trainer.save(surrogate path)", tr.save, str(env.tmp / _surrogate_text(draw, st, "s.ckpt")))
            tr.close()
            model.close()
    else:
        shape = draw(st.sampled_from(["deep_dict", "deep_set", "wide_grid", "many_values"]))
        if shape == "deep_dict":
            deep: dict[str, Any] = {}
            cur = deep
            for _ in range(draw(st.sampled_from([40, 1000, 20000]))):
                cur["a"] = {}
                cur = cur["a"]
            rec.call("load_config(deep)", load_config, {"defaults": deep})
        elif shape == "deep_set":
            d = draw(st.sampled_from([40, 1000, 100000]))
            rec.call("load_config(sets=deep)", load_config, {}, sets=["seed=" + "[" * d + "]" * d])
        elif shape == "wide_grid":
            n = draw(st.sampled_from([400, 1000]))
            rec.call("load_config(wide grid)", load_config, {"grid": {"seed": list(range(n)), "epochs": list(range(1, n))}})
        else:
            rec.call("load_config(many values)", load_config, {"description": list(range(250_000))})


#: Families used only by the harness's own tests (never planned by a profile).
TEST_FAMILIES: dict[str, Callable[[Any, Recorder, Env], None]] = {
    "_abort": _fam_abort,
    "metrics_probe": _fam_metrics_probe,
}

FAMILIES: dict[str, Callable[[Any, Recorder, Env], None]] = {
    "construct": fam_construct,
    "network": fam_network,
    "trainer": fam_trainer,
    "fit": fam_fit,
    "lifecycle": fam_lifecycle,
    "conditions": fam_conditions,
    "data": fam_data,
    "optim": fam_optim,
    "law": fam_law,
    "law_search": fam_law_search,
    "experiments": fam_experiments,
    "threads": fam_threads,
    "handles": fam_handles,
}

#: Relative weight of each family in a profile (slow families get fewer examples).
WEIGHTS = {
    "construct": 3,
    "network": 3,
    "trainer": 6,
    "fit": 2,
    "lifecycle": 3,
    "conditions": 3,
    "data": 3,
    "optim": 2,
    "law": 2,
    "law_search": 0.4,
    "experiments": 2,
    "threads": 1.5,
    "handles": 1,
}


# --------------------------------------------------------------------------------------------------
# Worker
# --------------------------------------------------------------------------------------------------


def _make_env(mw: Any) -> Env:
    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="mw-fuzz-"))
    env = Env(tmp=tmp, mw=mw)
    files = {
        "empty": b"",
        "junk": os.urandom(64) if False else bytes(range(256)) * 3,
        "text": b"hello metaweight\n",
        "idx_bad": b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x1c",  # header promising more data
        "idx_huge": b"\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        "gzip_bad": b"\x1f\x8b\x08\x00garbage",
    }
    for name, content in files.items():
        p = tmp / f"{name}.bin"
        p.write_bytes(content)
        env.files[name] = p
    # a real checkpoint of another architecture, and a truncated / bit-flipped copy of it
    m = mw.mlp(4, hidden=(7,), num_classes=3, seed=1)
    t = mw.Trainer(m, method="gdw", seed=1)
    t.save(tmp / "gdw.ckpt")
    good = (tmp / "gdw.ckpt").read_bytes()
    (tmp / "trunc.ckpt").write_bytes(good[: len(good) // 2])
    flipped = bytearray(good)
    flipped[len(flipped) // 3] ^= 0x40
    (tmp / "flip.ckpt").write_bytes(bytes(flipped))
    for name in ("gdw", "trunc", "flip"):
        env.files[name] = tmp / f"{name}.ckpt"
    t.close()
    m.close()
    (tmp / "cifar_junk").mkdir()
    for name in ("data_batch_1", "test_batch", "batches.meta", "train", "test", "meta"):
        (tmp / "cifar_junk" / name).write_bytes(b"\x80\x04junk")
    (tmp / "mnist_junk").mkdir()
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (tmp / "mnist_junk" / name).write_bytes(files["idx_bad"])
    np.save(tmp / "arr.npy", np.zeros(3))
    return env


def _run_task(fam_name: str, task_seed: int, examples: int, rec: Recorder, env: Env) -> dict[str, Any]:
    """One hypothesis run of ``examples`` examples of a family with ``@seed(task_seed)``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    fam = FAMILIES.get(fam_name) or TEST_FAMILIES[fam_name]
    out = rec.out
    rec.family = fam_name
    rec.counts = {"calls": 0, "ok": 0, "documented": 0, "other": 0}
    rec.by_family = {}
    rec.findings = []
    failures: list[str] = []
    counter = [0]

    @hseed(task_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(st.data())
    def run_examples(data: Any) -> None:
        counter[0] += 1
        out.write(f"EX {fam_name} {task_seed} {counter[0]}\n")
        out.flush()
        try:
            fam(data.draw, rec, env)
        except Exception as e:  # noqa: BLE001 - harness-level failure (an assertion of a family)
            if len(failures) < 20:
                failures.append(
                    f"{type(e).__name__}: {e}\n" + "".join(traceback.format_tb(e.__traceback__)[-3:])
                )

    try:
        run_examples()
    except Exception as e:  # noqa: BLE001
        failures.append(f"hypothesis: {type(e).__name__}: {e}")
    return {
        "counts": rec.counts,
        "by_family": rec.by_family,
        "findings": rec.findings,
        "failures": failures,
        "examples": counter[0],
    }


def worker_main() -> int:
    """Reads tasks (JSON lines) from stdin; writes progress and results to stdout."""
    sys.path[:0] = _import_paths()
    warnings.simplefilter("ignore")
    import metaweight as mw

    mw.set_threads(1)
    out = sys.stdout
    rec = Recorder(out, (mw.MetaweightError,))
    env = _make_env(mw)
    os.chdir(env.tmp)  # junk relative paths ("abc") that calls write to land in the scratch folder
    out.write(f"READY {env.tmp}\n")
    out.flush()
    for line in sys.stdin:
        task = json.loads(line)
        result = _run_task(task["family"], int(task["seed"]), int(task["examples"]), rec, env)
        out.write("DONE " + json.dumps(result) + "\n")
        out.flush()
    os.chdir(tempfile.gettempdir())
    shutil.rmtree(env.tmp, ignore_errors=True)
    return 0


# --------------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------------


@dataclass
class Report:
    """Totals of a fuzzing run."""

    examples: int = 0
    calls: int = 0
    ok: int = 0
    documented: int = 0
    other: int = 0
    crashes: int = 0
    hangs: int = 0
    by_family: dict[str, dict[str, int]] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    crash_log: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        lines = [f"{'family':<12} {'calls':>8} {'ok':>8} {'documented':>10} {'other':>6} {'crashes':>7}"]
        for name in sorted(self.by_family):
            f = self.by_family[name]
            lines.append(
                f"{name:<12} {f.get('calls', 0):>8} {f.get('ok', 0):>8} {f.get('documented', 0):>10} {f.get('other', 0):>6} {f.get('crashes', 0):>7}"
            )
        lines.append(
            f"{'TOTAL':<12} {self.calls:>8} {self.ok:>8} {self.documented:>10} {self.other:>6} {self.crashes:>7}"
        )
        lines.append(
            f"examples {self.examples}, hangs {self.hangs}, harness failures {len(self.failures)}, {self.seconds:.1f} s"
        )
        return "\n".join(lines)


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([*_import_paths(), str(HERE), env.get("PYTHONPATH", "")])
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env["PYTHONFAULTHANDLER"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.tmp = ""
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            del self.stderr[:-40]

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(10)
        if self.tmp and Path(self.tmp).name.startswith("mw-fuzz-"):  # a dead worker leaves its scratch folder
            shutil.rmtree(self.tmp, ignore_errors=True)


def plan(
    examples: int, seed: int, families: list[str] | None = None, per_task: int = 20
) -> list[dict[str, Any]]:
    """Splits ``examples`` over the families by WEIGHTS into tasks of at most ``per_task``."""
    names = families or list(FAMILIES)
    total_w = sum(WEIGHTS[n] for n in names)
    tasks = []
    for fi, name in enumerate(names):
        n = max(1, round(examples * WEIGHTS[name] / total_w))
        k = 0
        while n > 0:
            m = min(per_task, n)
            tasks.append({"family": name, "seed": seed * 1_000_003 + fi * 10_007 + k, "examples": m})
            n -= m
            k += 1
    # interleave families so a partial run covers all of them
    tasks.sort(key=lambda t: (t["seed"] % 10_007, t["family"]))
    return tasks


def run(
    examples: int,
    seed: int = 0,
    families: list[str] | None = None,
    task_timeout: float = 300.0,
    per_task: int = 20,
    log: Callable[[str], None] | None = None,
    tasks: list[dict[str, Any]] | None = None,
) -> Report:
    """Runs the planned tasks in a worker subprocess, restarting it when it dies or hangs."""
    t0 = time.monotonic()
    rep = Report()
    worker: _Worker | None = None
    todo = tasks if tasks is not None else plan(examples, seed, families, per_task)
    for idx, task in enumerate(todo):
        if worker is None:
            worker = _Worker()
            first = worker.lines.get(timeout=120)
            worker.tmp = (first or "")[len("READY ") :]
            if not (first or "").startswith("READY "):
                raise RuntimeError(f"fuzz worker failed to start: {first!r}\n{''.join(worker.stderr)}")
        assert worker.proc.stdin is not None
        worker.proc.stdin.write(json.dumps(task) + "\n")
        worker.proc.stdin.flush()
        last_ex, last_call = "", ""
        deadline = time.monotonic() + task_timeout
        fam = rep.by_family.setdefault(
            task["family"], {"calls": 0, "ok": 0, "documented": 0, "other": 0, "crashes": 0}
        )
        while True:
            try:
                line = worker.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = "TIMEOUT"
            if line is None or line == "TIMEOUT":
                hung = line == "TIMEOUT"
                worker.kill()
                rc = worker.proc.returncode
                entry = {
                    "task": task,
                    "example": last_ex,
                    "call": last_call,
                    "returncode": rc,
                    "hang": hung,
                    "stderr": "".join(worker.stderr)[-2000:],
                }
                rep.crash_log.append(entry)
                rep.crashes += 1
                rep.hangs += int(hung)
                fam["crashes"] += 1
                if log:
                    log(f"CRASH ({'hang' if hung else f'rc={rc}'}) in {last_ex}: {last_call}")
                worker = None
                break
            if line.startswith("EX "):
                last_ex, last_call = line[3:], ""
            elif line.startswith("C "):
                last_call = line[2:]
            elif line.startswith("DONE "):
                res = json.loads(line[5:])
                c = res["counts"]
                rep.examples += res["examples"]
                rep.calls += c["calls"]
                rep.ok += c["ok"]
                rep.documented += c["documented"]
                rep.other += c["other"]
                for k in ("calls", "ok", "documented", "other"):
                    fam[k] += c[k]
                rep.findings.extend(res["findings"])
                rep.failures.extend(f"[{task['family']} seed {task['seed']}] {f}" for f in res["failures"])
                break
        if log and (idx + 1) % 25 == 0:
            log(
                f"{idx + 1}/{len(todo)} tasks, {rep.calls} calls, {rep.other} other, {rep.crashes} crashes, {time.monotonic() - t0:.0f} s"
            )
    if worker is not None:
        with contextlib.suppress(Exception):
            assert worker.proc.stdin is not None
            worker.proc.stdin.close()
        with contextlib.suppress(Exception):
            worker.proc.wait(30)
        worker.kill()
    rep.seconds = time.monotonic() - t0
    return rep


if __name__ == "__main__":
    if "--worker" in sys.argv:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        sys.exit(worker_main())
    print("usage: run scripts/fuzz.py (long profile) or pytest python/tests/test_fuzz.py (fast profile)")
