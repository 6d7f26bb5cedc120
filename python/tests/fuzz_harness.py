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
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON_DIR = HERE.parent  # python/ (holds the metaweight package)


def _import_paths() -> list[str]:
    """The folder named by METAWEIGHT_FUZZ_PATH (a folder holding a metaweight package: fuzz that
    build); else python/ when its package has a built extension (editable/dev tree); otherwise
    nothing, so workers import the installed package (a non-editable install leaves python/
    without _core)."""
    override = os.environ.get("METAWEIGHT_FUZZ_PATH")
    if override:
        return [override]
    return [str(PYTHON_DIR)] if any((PYTHON_DIR / "metaweight").glob("_core*.so")) else []

# --------------------------------------------------------------------------------------------------
# Outcome bookkeeping (worker side)
# --------------------------------------------------------------------------------------------------


#: Outcome counters: calls made, and what each did; ``lost`` counts refused calls that changed state.
COUNT_KEYS = ("calls", "ok", "documented", "other", "lost")


class Recorder:
    """Makes public calls and counts their outcomes; prints a progress line before each call so
    that the parent can name the call that killed a worker."""

    def __init__(self, out: Any, documented: tuple[type[BaseException], ...]) -> None:
        self.out = out
        self.documented = documented
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.findings: list[dict[str, Any]] = []
        self.family = ""
        self.by_family: dict[str, dict[str, int]] = {}
        #: What the last :meth:`call` raised (None when it returned).
        self.last_error: BaseException | None = None

    def _fam(self) -> dict[str, int]:
        return self.by_family.setdefault(self.family, dict.fromkeys(COUNT_KEYS, 0))

    def lost(self, name: str, args: str, message: str) -> None:
        """Counts a "lost state" finding: a refused call changed the trainer's state."""
        self.counts["lost"] += 1
        self._fam()["lost"] += 1
        if len(self.findings) < 200:
            self.findings.append(
                {"family": self.family, "call": name, "args": args[:300], "type": "LOST STATE",
                 "message": message[:400], "where": ""}
            )

    def call(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Calls ``fn(*args, **kwargs)``; returns its result, or None when it raised."""
        self.counts["calls"] += 1
        fam = self._fam()
        fam["calls"] += 1
        self.last_error = None
        self.out.write(f"C {name} {_describe(args, kwargs)}\n")
        self.out.flush()
        try:
            result = fn(*args, **kwargs)
        except self.documented as e:
            self.last_error = e
            self.counts["documented"] += 1
            fam["documented"] += 1
            _check_message(e)
            return None
        except Exception as e:  # noqa: BLE001 - the point: anything else is a finding
            self.last_error = e
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
    cache: dict[str, Any] = field(default_factory=dict)  # fixtures made on first use (checkpoints, special files)


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
            guarded(rec, env, tr, "Trainer.step", tr.step, x, y, **kw)
        elif op == 4:
            x, _ = _batch(draw, model)
            guarded(rec, env, tr, "Trainer.predict", tr.predict, x, batch_size=draw_int(draw, 1, 8))
        elif op == 5:
            x, _ = _batch(draw, model)
            rec.call("Trainer.predict_proba", tr.predict_proba, x)
            rec.call("Trainer.logits", tr.logits, x)
        elif op == 6:
            x, y = _batch(draw, model)
            guarded(rec, env, tr, "Trainer.evaluate", tr.evaluate, x, y, batch_size=draw_int(draw, 1, 8))
            guarded(rec, env, tr, "Trainer.losses", tr.losses, x, y)
        elif op == 7:
            guarded(
                rec,
                env,
                tr,
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
    h = guarded(rec, env, tr, "Trainer.fit", tr.fit, x, y, partial_ok=True, **kw)
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
            guarded(rec, env, tr, "Trainer.step", tr.step, x, y, **kw)
        elif op == 3:
            rec.call("Trainer.save", tr.save, path)
        elif op == 4:
            guarded(rec, env, tr, "Trainer.load", tr.load, path)
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
            guarded(rec, env, tr, "Trainer.predict", tr.predict, _batch(draw, model)[0])
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
            fam = rec._fam()
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


# --------------------------------------------------------------------------------------------------
# Attack classes of issue 11: watchdogs, "nothing lost" snapshots, CRC-valid checkpoints
# --------------------------------------------------------------------------------------------------


class _Hang(Exception):
    """A call that did not return within its watchdog's time: a finding (counted as ``other``)."""


class _Slow(Exception):
    """A call that must be refused at once (an allocation bomb) took too long: a finding."""


def _finding(message: str) -> None:
    """Records a silent misbehaviour as a finding (an exception outside the hierarchy)."""
    raise AssertionError(message)


def _bounded(fn: Callable[..., Any], timeout: float, unblock: Callable[[], None] | None = None) -> Callable[..., Any]:
    """``fn`` run in a daemon thread and waited for at most ``timeout`` seconds. A call still
    running then raises :class:`_Hang` (after ``unblock()``, which may release it, e.g. by opening
    a FIFO's other end). What ``fn`` raises is raised again in the caller's thread."""

    def bounded(*args: Any, **kwargs: Any) -> Any:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
                box["error"] = e

        t = threading.Thread(target=target, daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            if unblock is not None:
                with contextlib.suppress(Exception):
                    unblock()
                t.join(5)
            raise _Hang(f"no answer after {timeout:.0f} s" + (" (released by the watchdog)" if not t.is_alive() else ""))
        if "error" in box:
            raise box["error"]
        return box.get("result")

    bounded.__name__ = getattr(fn, "__name__", "call")
    return bounded


def _timed(fn: Callable[..., Any], limit: float) -> Callable[..., Any]:
    """``fn``, raising :class:`_Slow` when it took more than ``limit`` seconds (even if it worked)."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.monotonic() - t0
            if dt > limit:
                raise _Slow(f"took {dt:.1f} s (limit {limit:.0f} s)")

    timed.__name__ = getattr(fn, "__name__", "call")
    return timed


def _vm_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def address_space_limit(extra: int = 3 << 30) -> Any:
    """Limits the worker's address space to its current size plus ``extra`` bytes while inside, so
    that an allocation bomb fails (as the library must report it: ResourceError) instead of
    touching tens of GiB on a shared machine, and an unbounded read cannot eat the machine."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = _vm_bytes() + extra
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (want, hard))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


CKPT_MAGIC = b"MWCKPT\0\0"
#: Section value kinds of the checkpoint format: 1 float32, 2 int64, 3 uint8.
CKPT_DTYPES = {1: "<f4", 2: "<i8", 3: "u1"}


@dataclass
class CkptSection:
    """One section of a checkpoint file and where its fields are in the file."""

    name: str
    kind: int
    values: Any  # numpy array
    name_len_at: int
    count_at: int


def ckpt_parse(data: bytes) -> tuple[int, list[CkptSection]]:
    """The sections of a checkpoint (format of Sources/MetaweightTraining/Checkpoint.swift):
    magic ``MWCKPT\\0\\0``, u32 version, u32 section count; per section u32 name length, name,
    u8 kind, u64 value count, the values (little-endian); a CRC-32 of everything before it last."""
    import numpy as np

    if data[:8] != CKPT_MAGIC:
        raise ValueError("not a metaweight checkpoint")
    version, count = struct.unpack_from("<II", data, 8)
    pos, out = 16, []
    for _ in range(count):
        name_len_at = pos
        (nlen,) = struct.unpack_from("<I", data, pos)
        pos += 4
        name = data[pos : pos + nlen].decode("utf-8", "surrogateescape")
        pos += nlen
        kind = data[pos]
        count_at = pos + 1
        (n,) = struct.unpack_from("<Q", data, count_at)
        pos += 9
        dt = np.dtype(CKPT_DTYPES[kind])
        vals = np.frombuffer(data, dtype=dt, count=n, offset=pos).copy()
        pos += n * dt.itemsize
        out.append(CkptSection(name, kind, vals, name_len_at, count_at))
    return version, out


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC-32 (the checkpoint trailer)."""
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def ckpt_build(version: int, sections: list[CkptSection], *, count: int | None = None) -> bytes:
    """A checkpoint file with these sections and a valid CRC."""
    import numpy as np

    n = len(sections) if count is None else count
    out = bytearray(CKPT_MAGIC + struct.pack("<II", version & 0xFFFFFFFF, n & 0xFFFFFFFF))
    for s in sections:
        raw = s.name.encode("utf-8", "surrogateescape")
        vals = np.ascontiguousarray(s.values, dtype=CKPT_DTYPES.get(s.kind, "u1"))
        out += struct.pack("<I", len(raw)) + raw + bytes([s.kind & 0xFF]) + struct.pack("<Q", vals.size)
        out += vals.tobytes()
    return with_crc(bytes(out))


def _loss_grid() -> Any:
    import numpy as np

    return np.linspace(0.0, 10.0, 41, dtype=np.float32)


#: Checkpoint sections of random generators: not part of the "nothing lost" comparison (a refused
#: step may have drawn its dropout mask, a refused fit its permutation, before the refusal).
RNG_SECTIONS = ("checkpoint section rng.", "checkpoint section weighting.rng")


def trainer_state(tr: Any, env: Env) -> dict[str, bytes] | None:
    """Everything a refused call must leave alone: parameters, batch-norm running statistics,
    every checkpoint section (optimizer moments and step counter, random generators, the
    weighting net and its optimizer) and the weight function on a fixed grid of losses.
    None when the trainer cannot be read now (closed, busy)."""
    import numpy as np

    mw = env.mw
    try:
        model = tr.model
        if tr.closed or model.closed:
            return None
        snap: dict[str, bytes] = {
            "parameters": model.get_flat().tobytes(),
            "step_count": str(tr.step_count).encode(),
        }
        for k, v in model.buffers().items():
            snap[f"buffer {k}"] = np.asarray(v).tobytes()
        path = env.tmp / "nothing-lost.ckpt"
        tr.save(path)
        _, sections = ckpt_parse(path.read_bytes())
        for s in sections:
            snap[f"checkpoint section {s.name}"] = s.values.tobytes()
        if tr.method.has_weight_function:
            snap["weight function"] = tr.weight_function(_loss_grid()).tobytes()
        return snap
    except mw.MetaweightError:
        return None


def guarded(
    rec: Recorder,
    env: Env,
    tr: Any,
    name: str,
    fn: Callable[..., Any],
    *args: Any,
    partial_ok: bool = False,
    **kwargs: Any,
) -> Any:
    """:meth:`Recorder.call` with the "nothing lost" check: when the call raised a library error,
    the trainer's state (:func:`trainer_state`) must be what it was before; a difference is
    counted as ``lost``. ``partial_ok``: a call that made steps before failing (``fit``) may keep
    them (checked only when the step count did not move). A call that worked must not leave
    non-finite parameters (counted as ``lost`` too)."""
    import numpy as np

    before = trainer_state(tr, env)
    result = rec.call(name, fn, *args, **kwargs)
    err = rec.last_error
    if before is None:
        return result
    if err is None:
        with contextlib.suppress(env.mw.MetaweightError):
            if not tr.closed and not tr.model.closed and not np.isfinite(tr.model.get_flat()).all():
                rec.lost(name, _describe(args, kwargs), "the call worked but left non-finite parameters")
        return result
    if isinstance(err, _Hang) or not isinstance(err, rec.documented):
        return result
    after = trainer_state(tr, env)
    if after is None:
        return result
    if partial_ok and after["step_count"] != before["step_count"]:
        return result
    changed = [
        k
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k) and not k.startswith(RNG_SECTIONS)
    ]
    if changed:
        rec.lost(
            name,
            _describe(args, kwargs),
            f"refused with {type(err).__name__} ({str(err)[:150]}) but changed: {', '.join(changed[:10])}",
        )
    return result


def _unblock_fifo(path: Path) -> Callable[[], None]:
    """Releases a call blocked on the FIFO ``path``: opens its other end for a moment."""

    def unblock() -> None:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # a reader blocked in open() sees EOF
            os.close(fd)
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a writer blocked in open() gets EPIPE
            end = time.monotonic() + 1
            while time.monotonic() < end:
                try:
                    if not os.read(fd, 1 << 16):
                        time.sleep(0.01)
                except BlockingIOError:
                    time.sleep(0.01)
            os.close(fd)

    return unblock


def _tiny_law_config(law: Any, **over: Any) -> Any:
    kw = dict(
        stages=2, warmup_stages=0, parallel=1, epochs=1, batch_size=8, buffer_size=50, fdu_batch=4,
        fdu_epochs=1, actor_hidden=4, critic_hidden=4, embedding_dim=2,
    )
    kw.update(over)
    return law.LAWConfig(**kw)


LAW_SPEC = "mlp(hidden=4, classes=3)"


def _law_data(np: Any, n: int = 32, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, 4)).astype(np.float32),
        np.arange(n) % 3,
        rng.normal(size=(12, 4)).astype(np.float32),
        np.arange(12) % 3,
    )


def _stop(*_a: Any) -> bool:
    """A callback that stops a fit or a search after its first epoch or stage."""
    return True


def fam_mutation(draw: Any, rec: Recorder, env: Env) -> None:
    """Another thread rewrites an input array in place (features, labels, meta batch, sample
    weights, losses, validation data), between valid and hostile values, while a call reads it:
    step, fit, losses, evaluate, predict, weight_function and a LAW search's data setup."""
    mw = env.mw
    np, st, _ = _strategies()
    method = draw(st.sampled_from(["erm", "focal", "l2rw", "mwnet", "gdw"]))
    model = tiny_model(mw, draw(st.sampled_from(["flat", "bn"])))
    tr = mw.Trainer(model, mw.SGD(lr=0.05, momentum=0.9), method=method, seed=0)
    meta = method in ("l2rw", "mwnet", "gdw")
    op = draw(st.sampled_from(["step", "step", "fit", "losses", "evaluate", "predict", "weight_function", "law_search"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.sampled_from([8, 64] if op == "law_search" else [8, 64, 512, 4096]))
    arrays = {
        "x": rng.normal(size=(n, 4)).astype(np.float32),
        "y": rng.integers(0, 3, n).astype(draw(st.sampled_from(["int64", "int32"]))),
        "x_meta": rng.normal(size=(16, 4)).astype(np.float32),
        "y_meta": (np.arange(16) % 3).astype(np.int64),
        "sample_weights": rng.uniform(0, 2, n).astype(np.float32),
        "losses": rng.uniform(0, 5, n).astype(np.float32),
    }
    targets = {
        "step": ["x", "y"] + (["x_meta", "y_meta"] if meta else ["sample_weights"]),
        "fit": ["x", "y"] + (["x_meta", "y_meta"] if meta else []),
        "losses": ["x", "y"],
        "evaluate": ["x", "y"],
        "predict": ["x"],
        "weight_function": ["losses"],
        "law_search": ["x", "y", "x_meta", "y_meta"],
    }
    target = draw(st.sampled_from(targets[op]))
    arr = arrays[target]
    if target.startswith("y"):
        bad: float = draw(st.sampled_from([-1, 3, 2**31 - 1, -(2**31)]))
    elif target == "sample_weights":
        bad = draw(st.sampled_from([-1.0, math.nan, math.inf]))
    else:
        bad = draw(st.sampled_from([math.nan, math.inf, -math.inf, 3e38, -3e38]))
    whole = draw(st.booleans())
    good = arr.copy()
    flat = arr.reshape(-1)  # a view: every array here is C-contiguous
    stop = threading.Event()

    def mutate() -> None:
        i = 0
        while not stop.is_set():
            if whole:
                arr[...] = bad
            else:
                flat[i % flat.size] = bad
            arr[...] = good
            i += 7

    reps = draw(st.integers(1, 3))
    batch = draw(st.sampled_from([4, 16, 1000]))
    a = arrays
    rec.out.write(f"C mutation: {op} while another thread rewrites {target} with {bad!r}\n")
    rec.out.flush()
    t = threading.Thread(target=mutate, daemon=True)
    t.start()
    try:
        for _ in range(reps):
            if op == "step":
                kw: dict[str, Any] = {}
                if meta:
                    kw["x_meta"], kw["y_meta"] = a["x_meta"], a["y_meta"]
                elif target == "sample_weights":
                    kw["sample_weights"] = a["sample_weights"]
                guarded(rec, env, tr, f"Trainer.step ({target} rewritten)", tr.step, a["x"], a["y"], **kw)
            elif op == "fit":
                guarded(
                    rec, env, tr, f"Trainer.fit ({target} rewritten)", tr.fit, a["x"], a["y"], epochs=1,
                    batch_size=batch, meta=(a["x_meta"], a["y_meta"]) if meta else None,
                    meta_batch_size=8, progress=False, partial_ok=True,
                )
            elif op == "losses":
                guarded(rec, env, tr, f"Trainer.losses ({target} rewritten)", tr.losses, a["x"], a["y"], batch_size=batch)
            elif op == "evaluate":
                guarded(rec, env, tr, f"Trainer.evaluate ({target} rewritten)", tr.evaluate, a["x"], a["y"], batch_size=batch)
            elif op == "predict":
                guarded(rec, env, tr, f"Trainer.predict ({target} rewritten)", tr.predict, a["x"], batch_size=batch)
            elif op == "weight_function":
                guarded(rec, env, tr, f"Trainer.weight_function ({target} rewritten)", tr.weight_function, a["losses"])
            else:
                search = mw.law.LAWSearch(LAW_SPEC, _tiny_law_config(mw.law), seed=0, input_shape=TINY_FLAT)
                rec.call(
                    f"LAWSearch.search ({target} rewritten)", search.search, a["x"], a["y"], a["x_meta"],
                    a["y_meta"], 1, progress=False, callback=_stop, example_weights=False,
                )
                search.close()
    finally:
        stop.set()
        t.join(10)
    tr.close()
    model.close()


#: Sizes of allocation bombs: each is over the library's limit (16 GiB or physical memory) or over
#: the worker's address-space limit while bombing (about 3 GiB more than it uses).
BOMB_SIZES = [2**27, 2**31, 2**34, 2**40, 2**62, 2**63 - 1]
BOMB_SECONDS = 20.0


def fam_alloc(draw: Any, rec: Recorder, env: Env) -> None:
    """Allocation bombs: huge hidden widths, class counts, input shapes, batches (broadcast views
    that cost nothing to make), LAW configurations, schedule lengths and epochs × batch products.
    Each must be refused with a library error (ResourceError, InvalidArgumentError, ...) within
    BOMB_SECONDS, or work quickly; never abort the process, never hang."""
    mw = env.mw
    np, st, _ = _strategies()
    H = draw(st.sampled_from(BOMB_SIZES))
    S = draw(st.sampled_from([2**13, 2**16, 2**31]))
    k = draw(st.integers(0, 14))

    def call(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return rec.call(name, _bounded(_timed(fn, BOMB_SECONDS), 120), *args, **kwargs)

    def bx(n: int, shape: tuple[int, ...] = TINY_FLAT) -> Any:
        return np.broadcast_to(np.zeros((1, *shape), np.float32), (n, *shape))

    def by(n: int) -> Any:
        return np.broadcast_to(np.zeros(1, np.int64), (n,))

    small = tiny_model(mw, "flat")
    tr = mw.Trainer(small, mw.SGD(lr=0.05), seed=0)
    rec.out.write(f"C alloc bomb {k} size {H}\n")
    rec.out.flush()
    with address_space_limit():
        if k == 0:
            net = call("mlp(hidden=huge)", mw.mlp, 4, hidden=(H,), num_classes=3)
            if net is not None:
                net.close()
        elif k == 1:
            net = call("mlp(num_classes=huge)", mw.mlp, 4, hidden=(5,), num_classes=H)
            if net is not None:
                net.close()
        elif k == 2:
            net = call("Network(spec with a huge width)", mw.Network, f"mlp(hidden={H}, classes=3)", TINY_FLAT)
            if net is not None:
                net.close()
        elif k == 3:
            net = call(
                "build(conv over a huge image)",
                mw.build,
                [mw.Conv2d(64, 3, padding=1), mw.Conv2d(64, 3, padding=1), mw.GlobalAvgPool(), mw.Linear(3)],
                input_shape=(1, S, S),
            )
            if net is not None:
                t2 = call("Trainer(huge activations)", mw.Trainer, net, mw.SGD(lr=0.1))
                if t2 is not None:
                    t2.close()
                net.close()
        elif k == 4:
            net = call("build(huge input)", mw.build, [mw.Linear(3)], input_shape=(H,))
            if net is not None:
                net.close()
        elif k == 5:
            call("Network.activation_bytes(huge batch)", small.activation_bytes, H)
        elif k == 6:
            n = draw(st.sampled_from([2**28, 2**31, 2**40]))
            guarded(rec, env, tr, "Trainer.step(huge broadcast batch)", _timed(tr.step, BOMB_SECONDS), bx(n), by(n))
        elif k == 7:
            n = draw(st.sampled_from([2**28, 2**31, 2**40]))
            call("Trainer.predict(huge broadcast batch)", tr.predict, bx(n), batch_size=draw(st.sampled_from([1000, H])))
        elif k == 8:
            n = draw(st.sampled_from([2**28, 2**31, 2**40]))
            guarded(rec, env, tr, "Trainer.evaluate(huge broadcast batch)", _timed(tr.evaluate, BOMB_SECONDS), bx(n), by(n))
        elif k == 9:
            x = np.zeros((8, 4), np.float32)
            y = np.arange(8) % 3
            guarded(
                rec, env, tr, "Trainer.fit(huge epochs x batch)", _timed(tr.fit, BOMB_SECONDS), x, y,
                epochs=draw(st.sampled_from([2**31, 2**31 - 1, 2**20])), batch_size=draw(st.sampled_from([1, H])),
                record_weights=draw(st.booleans()), progress=False, callbacks=[_stop], partial_ok=True,
            )
        elif k == 10:
            unit = draw(st.sampled_from(["epoch", "step"]))
            sched = draw(
                st.sampled_from(
                    [
                        lambda: mw.MultiStep([float(H)], unit=unit),
                        lambda: mw.Cosine(total=float(H) * 1e6, unit=unit),
                        lambda: mw.Constant(warmup=float(H), unit=unit),
                    ]
                )
            )
            s = call("schedule(huge length)", sched)
            if s is not None:
                t2 = call("Trainer(huge steps_per_epoch)", mw.Trainer, small, mw.SGD(lr=0.1), s, steps_per_epoch=H)
                if t2 is not None:
                    guarded(rec, env, t2, "Trainer.step(huge schedule)", t2.step, np.zeros((2, 4), np.float32), [0, 1])
                    t2.close()
        elif k == 11:
            field_ = draw(
                st.sampled_from(
                    ["stages", "buffer_size", "parallel", "actor_hidden", "critic_hidden", "embedding_dim",
                     "fdu_batch", "batch_size", "epochs"]
                )
            )
            cfg = call(f"LAWConfig({field_}=huge)", _tiny_law_config, mw.law, **{field_: H})
            if cfg is not None:
                search = call("LAWSearch(huge config)", mw.law.LAWSearch, LAW_SPEC, cfg, input_shape=TINY_FLAT)
                if search is not None:
                    call("LAWSearch.strategy", search.strategy)
                    if field_ in ("epochs", "batch_size", "stages", "fdu_batch"):
                        x, y, xv, yv = _law_data(np)
                        call("LAWSearch.search(huge config)", search.search, x, y, xv, yv, 1, progress=False,
                             callback=_stop, example_weights=False)
                    search.close()
        elif k == 12:
            y = np.arange(20) % 3
            which = draw(st.integers(0, 6))
            if which == 0:
                call("data.class_counts(huge classes)", mw.data.class_counts, y, H)
            elif which == 1:
                call("conditions.long_tailed(n_max=huge)", mw.conditions.long_tailed, y, 2.0, 3, n_max=H)
            elif which == 2:
                call("conditions.two_class_imbalance(total=huge)", mw.conditions.two_class_imbalance,
                     np.arange(40) % 10, total=H)
            elif which == 3:
                call("conditions.meta_split(huge)", mw.conditions.meta_split, y, H, 3)
            elif which == 4:
                it = call("data.batches(huge batch)", mw.data.batches, np.zeros((20, 3), np.float32), y, H)
                if it is not None:
                    call("batches.consume", lambda: [b for b in it])
            elif which == 5:
                call("metrics.confusion_matrix(huge classes)", mw.metrics.confusion_matrix, y, y, num_classes=H)
            else:
                call("conditions.uniform_noise(huge classes)", mw.conditions.uniform_noise, y, 0.5, H)
        elif k == 13:
            which = draw(st.integers(0, 2))
            if which == 0:
                net = call("resnet32(huge image)", mw.resnet32, (3, S, S))
            elif which == 1:
                net = call("wide_resnet(huge widen)", mw.wide_resnet, depth=10, widen=draw(st.sampled_from([2**10, 2**20, H])),
                           input_shape=(3, 8, 8))
            else:
                net = call("lenet5(huge image)", mw.lenet5, (1, S, S))
            if net is not None:
                t2 = call("Trainer(huge network)", mw.Trainer, net)
                if t2 is not None:
                    t2.close()
                net.close()
        else:
            which = draw(st.integers(0, 2))
            if which == 0:
                n = min(H, 2**40)
                call("Network.set_flat(huge broadcast)", small.set_flat, np.broadcast_to(np.float32(0), (n,)))
            elif which == 1:
                call("Augment(crop_padding=huge)", mw.Augment, crop_padding=H, flip=True)
            else:
                call("Network.activation_bytes(huge)", small.activation_bytes, 2**63 - 1)
    tr.close()
    small.close()


SPECIAL_SECONDS = 15.0


def _special_paths(env: Env) -> dict[str, Path]:
    """Special files for every load path: a FIFO (nobody writes it), /dev/zero, /dev/null,
    /dev/urandom, a /proc file, a directory, symlinks to them, and dataset folders whose files are
    such links. Made once per worker (the FIFO again when a save replaced it)."""
    paths: dict[str, Path] = env.cache.get("special_paths", {})
    fifo = env.tmp / "special.fifo"
    if fifo.exists() and not fifo.is_fifo():
        fifo.unlink()
    if not fifo.exists():
        os.mkfifo(fifo)
    if paths:
        return paths
    root = env.tmp / "special"
    root.mkdir()
    paths = {
        "fifo": fifo,
        "/dev/zero": Path("/dev/zero"),
        "/dev/null": Path("/dev/null"),
        "/dev/urandom": Path("/dev/urandom"),
        "/proc/self/status": Path("/proc/self/status"),
        "directory": root,
    }
    targets = {"zero": Path("/dev/zero"), "fifo": fifo, "null": Path("/dev/null"), "proc": Path("/proc/self/status")}
    for tag, target in targets.items():
        link = root / f"{tag}.link"
        link.symlink_to(target)
        paths[f"link->{tag}"] = link
        folder = root / f"data-{tag}"
        folder.mkdir()
        for name in (
            "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
            "data_batch_5", "test_batch", "batches.meta", "train", "test", "meta",
        ):
            (folder / name).symlink_to(target)
        paths[f"folder of links->{tag}"] = folder
        results = root / f"results-{tag}" / "run1"
        results.mkdir(parents=True)
        for name in ("final.json", "config.json", "history.csv"):
            (results / name).symlink_to(target)
        paths[f"results of links->{tag}"] = results.parent
        cfg = root / f"cfg-{tag}.toml"
        cfg.symlink_to(target)
        paths[f"cfg.toml->{tag}"] = cfg
    dirs = root / "data-dirs"
    dirs.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "data_batch_1", "test_batch", "batches.meta"):
        (dirs / name).mkdir()
    paths["folder of folders"] = dirs
    env.cache["special_paths"] = paths
    return paths


def _save_target_ok(name: str) -> bool:
    """Saves go only to the FIFO, directories and /proc: never to /dev (a save is a rename over its
    path; the worker may run as root) nor to a symlink (the rename would replace the fixture)."""
    return name in ("fifo", "directory", "/proc/self/status") or name.startswith(("folder of", "results of"))


def fam_special_files(draw: Any, rec: Recorder, env: Env) -> None:
    """Every load (and save) path on special files: FIFOs, /dev/zero, /dev/null, /dev/urandom,
    /proc files, directories and symlinks to them. Each call runs under a watchdog (a call
    still blocked after SPECIAL_SECONDS is a finding) and under an address-space limit (an
    unbounded read fails instead of eating the machine); refused Trainer.load calls must
    change nothing. Saves never target /dev (the worker may run as root)."""
    mw = env.mw
    np, st, _ = _strategies()
    law = mw.law
    paths = _special_paths(env)
    name = draw(st.sampled_from(sorted(paths)))
    path = paths[name]
    fifo = paths["fifo"]
    unblock = _unblock_fifo(fifo)
    op = draw(
        st.sampled_from(
            ["Trainer.load", "Trainer.load", "Trainer.from_checkpoint", "LAWSearch.load", "LAWSearch.load_strategy",
             "Strategy.load", "data.load_idx", "data.load_mnist", "data.load_mnist_t10k", "data.load_cifar",
             "load_config", "load_results", "Trainer.save", "LAWSearch.save", "Strategy.save"]
        )
    )
    as_str = draw(st.booleans())
    p: Any = str(path) if as_str else path

    def bounded(fn: Callable[..., Any]) -> Callable[..., Any]:
        return _bounded(fn, SPECIAL_SECONDS, unblock)

    with address_space_limit():
        if op in ("Trainer.load", "Trainer.from_checkpoint", "Trainer.save"):
            method = draw(st.sampled_from(["erm", "mwnet", "gdw"]))
            model = tiny_model(mw, draw(st.sampled_from(["flat", "bn"])))
            tr = mw.Trainer(model, mw.Adam(lr=1e-3), method=method, seed=0)
            xs = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
            kw = {"x_meta": xs, "y_meta": np.arange(6) % 3} if method != "erm" else {}
            tr.step(xs, np.arange(6) % 3, **kw)
            if op == "Trainer.load":
                guarded(rec, env, tr, f"Trainer.load({name})", bounded(tr.load), p)
            elif op == "Trainer.from_checkpoint":
                other = rec.call(f"Trainer.from_checkpoint({name})", bounded(mw.Trainer.from_checkpoint), p, model,
                                 method=method)
                if other is not None:
                    other.close()
            elif _save_target_ok(name):
                guarded(rec, env, tr, f"Trainer.save({name})", bounded(tr.save), p)
            if isinstance(rec.last_error, _Hang):
                return  # the blocked thread still holds the trainer; leave it
            tr.close()
            model.close()
        elif op in ("LAWSearch.load", "LAWSearch.load_strategy", "LAWSearch.save"):
            search = law.LAWSearch(LAW_SPEC, _tiny_law_config(law), seed=0, input_shape=TINY_FLAT)
            if op == "LAWSearch.load":
                rec.call(f"LAWSearch.load({name})", bounded(search.load), p)
            elif op == "LAWSearch.load_strategy":
                rec.call(f"LAWSearch.load_strategy({name})", bounded(search.load_strategy), p)
            elif _save_target_ok(name):
                rec.call(f"LAWSearch.save({name})", bounded(search.save), p)
                rec.call(f"LAWSearch.save_strategy({name})", bounded(search.save_strategy), p)
            if isinstance(rec.last_error, _Hang):
                return
            search.close()
        elif op in ("Strategy.load", "Strategy.save"):
            if op == "Strategy.load":
                s = rec.call(f"Strategy.load({name})", bounded(law.Strategy.load), p)
                if s is not None:
                    s.close()
            elif _save_target_ok(name):
                search = law.LAWSearch(LAW_SPEC, _tiny_law_config(law), seed=0, input_shape=TINY_FLAT)
                s = search.strategy()
                rec.call(f"Strategy.save({name})", bounded(s.save), p)
                if isinstance(rec.last_error, _Hang):
                    return
                s.close()
                search.close()
        elif op == "data.load_idx":
            rec.call(f"data.load_idx({name})", bounded(mw.data.load_idx), p)
        elif op == "data.load_mnist":
            rec.call(f"data.load_mnist({name})", bounded(mw.data.load_mnist), p)
        elif op == "data.load_mnist_t10k":
            rec.call(f"data.load_mnist_t10k({name})", bounded(mw.data.load_mnist_t10k), p)
        elif op == "data.load_cifar":
            rec.call(f"data.load_cifar({name})", bounded(mw.data.load_cifar), p,
                     num_classes=draw(st.sampled_from([10, 100])))
        elif op == "load_config":
            from metaweight.experiments.config import load_config

            rec.call(f"load_config({name})", bounded(load_config), p)
        else:
            from metaweight.experiments.runner import load_results

            rec.call(f"load_results({name})", bounded(load_results), p)


def _base_checkpoints(env: Env) -> dict[str, Any]:
    """Real checkpoints to mutate (made once per worker): trainers of four configurations after
    two steps, and a tiny LAW search after one round, with its strategy file."""
    import numpy as np

    if "base_checkpoints" in env.cache:
        return env.cache["base_checkpoints"]  # type: ignore[no-any-return]
    mw = env.mw
    law = mw.law
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 4)).astype(np.float32)
    y = np.arange(12) % 3
    for key in TRAINER_CONFIGS:
        tr = _config_trainer(mw, key, seed=1)
        for _ in range(2):
            tr.step(x, y, **({"x_meta": x[:6], "y_meta": y[:6]} if key[2] != "erm" else {}))
        p = env.tmp / "base.ckpt"
        tr.save(p)
        out[key] = p.read_bytes()
        tr.model.close()
        tr.close()
    search = law.LAWSearch(LAW_SPEC, _tiny_law_config(law), seed=3, input_shape=TINY_FLAT)
    xs, ys, xv, yv = _law_data(np)
    search.search(xs, ys, xv, yv, 1, progress=False, example_weights=False)
    search.save(env.tmp / "base.law")
    search.save_strategy(env.tmp / "base.strategy")
    search.close()
    out["law"] = (env.tmp / "base.law").read_bytes()
    out["strategy"] = (env.tmp / "base.strategy").read_bytes()
    env.cache["base_checkpoints"] = out
    return out


#: (model kind, optimizer, method) of the trainers whose checkpoints fam_hostile_checkpoint mutates.
TRAINER_CONFIGS = [("flat", "adam", "erm"), ("bn", "sgd", "mwnet"), ("bn", "adam", "gdw"), ("flat", "sgd", "l2rw")]


def _config_trainer(mw: Any, key: tuple[str, str, str], seed: int) -> Any:
    kind, opt, method = key
    model = tiny_model(mw, kind, seed=seed)
    o = mw.Adam(lr=1e-3) if opt == "adam" else mw.SGD(lr=0.05, momentum=0.9)
    return mw.Trainer(model, o, method=method, seed=seed)


def hostile(draw: Any, data: bytes) -> tuple[str, bytes]:
    """A CRC-valid mutation of the checkpoint ``data``: hostile values (NaN/inf, negative
    moments, huge counters), wrong widths, missing/duplicate/unknown/renamed sections, wrong
    kinds, declared counts and name lengths that disagree with the file, truncated or padded
    bodies, other versions and section counts. Returns (a description, the new file)."""
    np, st, _ = _strategies()
    version, secs = ckpt_parse(data)
    body = data[:-4]
    k = draw(st.integers(0, 12))
    if not secs:
        return "no sections", ckpt_build(draw(st.sampled_from([version, version + 1])), secs)
    floats = [s for s in secs if s.kind == 1 and s.values.size]
    ints = [s for s in secs if s.kind == 2 and s.values.size]
    if k == 0 and floats:
        s = draw(st.sampled_from(floats))
        v = draw(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -1e-30, 3.4e38, -3.4e38, 1e38, 1e-45, -0.0]))
        idx = draw(st.sampled_from(["one", "all"]))
        with np.errstate(all="ignore"):
            if idx == "all":
                s.values[:] = v
            else:
                s.values[draw(st.integers(0, s.values.size - 1))] = v
        return f"{s.name}[{idx}] = {v}", ckpt_build(version, secs)
    if k == 1 and ints:
        s = draw(st.sampled_from(ints))
        v = draw(st.sampled_from([2**63 - 1, -1, -(2**63), 2**53 + 1, 2**31, 2**32 + 5, 0, 7]))
        s.values[draw(st.integers(0, s.values.size - 1))] = v
        return f"{s.name} = {v}", ckpt_build(version, secs)
    if k == 2:
        s = draw(st.sampled_from(secs))
        how = draw(st.sampled_from(["drop last", "append", "empty", "double", "one"]))
        v = s.values
        s.values = {
            "drop last": v[:-1],
            "append": np.concatenate([v, np.zeros(draw(st.integers(1, 9)), v.dtype)]),
            "empty": v[:0],
            "double": np.concatenate([v, v]),
            "one": v[:1],
        }[how]
        return f"{s.name}: {how} ({v.size} -> {s.values.size} values)", ckpt_build(version, secs)
    if k == 3:
        i = draw(st.integers(0, len(secs) - 1))
        name = secs.pop(i).name
        return f"without {name}", ckpt_build(version, secs)
    if k == 4:
        i = draw(st.integers(0, len(secs) - 1))
        s = secs[i]
        dup = CkptSection(s.name, s.kind, s.values[: draw(st.integers(0, s.values.size))].copy(), 0, 0)
        secs.insert(draw(st.integers(0, len(secs))), dup)
        return f"{s.name} twice", ckpt_build(version, secs)
    if k == 5:
        secs.insert(
            draw(st.integers(0, len(secs))),
            CkptSection(draw(st.sampled_from(["bogus", "network.params2", "", "\udcff"])), draw(st.sampled_from([1, 2, 3])),
                        np.zeros(draw(st.integers(0, 5)), np.uint8), 0, 0),
        )
        return "an unknown section", ckpt_build(version, secs)
    if k == 6:
        s = draw(st.sampled_from(secs))
        old = s.name
        s.name = draw(st.sampled_from([old + "x", old.upper(), old[:-1], secs[0].name]))
        return f"{old} renamed {s.name}", ckpt_build(version, secs)
    if k == 7:
        s = draw(st.sampled_from(secs))
        new_kind = draw(st.sampled_from([1, 2, 3]))
        old_kind = s.kind
        s.kind = new_kind
        s.values = np.frombuffer(s.values.tobytes()[: (s.values.nbytes // np.dtype(CKPT_DTYPES[new_kind]).itemsize)
                                                     * np.dtype(CKPT_DTYPES[new_kind]).itemsize],
                                 dtype=CKPT_DTYPES[new_kind]).copy()
        return f"{s.name}: kind {old_kind} -> {new_kind}", ckpt_build(version, secs)
    if k == 8:
        s = draw(st.sampled_from(secs))
        n = draw(st.sampled_from([1 << 30, 2**63 - 1, 2**64 - 1, int(s.values.size) + 1, 2**61]))
        b = bytearray(body)
        struct.pack_into("<Q", b, s.count_at, n)
        return f"{s.name} declares {n} values", with_crc(bytes(b))
    if k == 9:
        s = draw(st.sampled_from(secs))
        n = draw(st.sampled_from([2**32 - 1, 2**31, 1 << 20, 0]))
        b = bytearray(body)
        struct.pack_into("<I", b, s.name_len_at, n)
        return f"{s.name}: name length {n}", with_crc(bytes(b))
    if k == 10:
        cut = draw(st.integers(8, len(body)))
        pad = draw(st.sampled_from([b"", b"\0" * 9, bytes(range(256))]))
        return f"body cut at {cut}, {len(pad)} bytes appended", with_crc(body[:cut] + pad)
    if k == 11:
        v = draw(st.sampled_from([0, version + 1, 99, 2**32 - 1]))
        return f"version {v}", ckpt_build(v, secs)
    c = draw(st.sampled_from([0, len(secs) - 1, len(secs) + 1, 2**32 - 1]))
    return f"section count {c}", ckpt_build(version, secs, count=c)


def _accepted_state_problems(path: Path) -> list[str]:
    """What a checkpoint just written by a trainer that accepted a hostile file must not hold:
    non-finite floats, negative Adam second moments, step counters outside 0..2**53."""
    import numpy as np

    _, secs = ckpt_parse(path.read_bytes())
    bad = []
    for s in secs:
        if s.kind == 1 and not np.isfinite(s.values).all():
            bad.append(f"{s.name} holds NaN/inf")
        if s.kind == 1 and s.name.endswith("second") and (s.values < 0).any():
            bad.append(f"{s.name} holds a negative second moment")
        if s.kind == 2 and s.name.endswith("steps") and ((s.values < 0) | (s.values > 2**53)).any():
            bad.append(f"{s.name} = {s.values.tolist()}")
    return bad


def fam_hostile_checkpoint(draw: Any, rec: Recorder, env: Env) -> None:
    """CRC-valid checkpoints with hostile contents (:func:`hostile`) loaded by Trainer.load,
    Trainer.from_checkpoint, LAWSearch.load, LAWSearch.load_strategy and Strategy.load. A refusal
    must be a library error that changes nothing; an accepted file must leave a sane state (no
    NaN/inf, no negative second moment, a step counter within 0..2**53) that keeps training
    and predicting (a search keeps searching)."""
    mw = env.mw
    np, st, _ = _strategies()
    law = mw.law
    base = _base_checkpoints(env)
    which = draw(st.sampled_from(["trainer", "trainer", "trainer", "law", "strategy"]))
    path = env.tmp / "hostile.ckpt"
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.arange(6) % 3
    if which == "trainer":
        key = draw(st.sampled_from(TRAINER_CONFIGS))
        what, data = hostile(draw, base[key])
        if draw(st.integers(0, 3)) == 0:
            with contextlib.suppress(ValueError, KeyError, IndexError, OverflowError, struct.error):
                more, data = hostile(draw, data)
                what += "; " + more
        path.write_bytes(data)
        tr = _config_trainer(mw, key, seed=2)
        kw = {"x_meta": x, "y_meta": y} if key[2] != "erm" else {}
        tr.step(x, y, **kw)
        if draw(st.integers(0, 3)):
            guarded(rec, env, tr, f"Trainer.load(hostile: {what})", tr.load, path)
            target = tr
        else:
            model = tiny_model(mw, key[0], seed=3)
            target = rec.call(f"Trainer.from_checkpoint(hostile: {what})", mw.Trainer.from_checkpoint, path, model,
                              optimizer=mw.Adam(lr=1e-3) if key[1] == "adam" else mw.SGD(lr=0.05, momentum=0.9),
                              method=key[2])
            if target is None:
                model.close()
        if rec.last_error is None and target is not None:
            saved = env.tmp / "accepted.ckpt"
            target.save(saved)
            bad = _accepted_state_problems(saved)
            if bad:
                rec.lost(f"load(hostile: {what})", "", "accepted, then holds: " + "; ".join(bad))
            guarded(rec, env, target, "Trainer.step (after a hostile load)", target.step, x, y, **kw)
            rec.call("Trainer.predict (after a hostile load)", target.predict, x)
            if target is not tr:
                target.close()
                target.model.close()
        tr.close()
        tr.model.close()
    elif which == "law":
        what, data = hostile(draw, base["law"])
        path.write_bytes(data)
        search = law.LAWSearch(LAW_SPEC, _tiny_law_config(law), seed=3, input_shape=TINY_FLAT)
        rec.call(f"LAWSearch.load(hostile: {what})", _bounded(search.load, 60), path)
        if rec.last_error is None:
            rec.call("LAWSearch.strategy (after a hostile load)", search.strategy)
            rec.call("LAWSearch.buffer_size", lambda: search.buffer_size)
            if draw(st.booleans()):
                xs, ys, xv, yv = _law_data(np)
                rec.call("LAWSearch.search (after a hostile load)", _bounded(search.search, 120), xs, ys, xv, yv, 1,
                         progress=False, callback=_stop, example_weights=False)
        if not isinstance(rec.last_error, _Hang):
            search.close()
    else:
        what, data = hostile(draw, base["strategy"])
        path.write_bytes(data)
        if draw(st.booleans()):
            s = rec.call(f"Strategy.load(hostile: {what})", law.Strategy.load, path)
            if s is not None:
                rec.call("Strategy.action", s.action, draw(st.integers(0, s.stages - 1)))
                losses = rng.uniform(0, 3, size=(5, s.num_classes)).astype(np.float32)
                rec.call("Strategy.weights", s.weights, losses, np.arange(5) % s.num_classes, 0)
                s.close()
        else:
            search = law.LAWSearch(LAW_SPEC, _tiny_law_config(law), seed=3, input_shape=TINY_FLAT)
            rec.call(f"LAWSearch.load_strategy(hostile: {what})", search.load_strategy, path)
            if rec.last_error is None:
                rec.call("LAWSearch.strategy (after a hostile strategy)", search.strategy)
            search.close()


def _must_refuse(copier: Callable[[Any], Any], obj: Any, closed_ok: tuple[type[BaseException], ...] = ()) -> None:
    """Copies ``obj``: NotCopyableError is the answer (``closed_ok``: also accepted, for a closed
    handle). A copy that succeeds (it would share the native handle) or another library error is a
    finding (AssertionError)."""
    from metaweight.errors import MetaweightError, NotCopyableError

    try:
        copier(obj)
    except NotCopyableError:
        raise
    except closed_ok:
        raise
    except MetaweightError as e:
        raise AssertionError(f"{type(e).__name__} instead of NotCopyableError: {e}") from None
    raise AssertionError(f"copying a {type(obj).__name__} succeeded; the copy would share the native handle")


def _surrogate_text(draw: Any, st: Any, base: str) -> str:
    """``base`` with a lone surrogate (U+D800..U+DFFF) inserted at a random position."""
    ch = chr(draw(st.integers(0xD800, 0xDFFF)))
    at = draw(st.integers(0, len(base)))
    return base[:at] + ch + base[at:]


def fam_handles(draw: Any, rec: Recorder, env: Env) -> None:
    """Pickling (every protocol) and copying (copy, deepcopy, inside containers) of every handle
    type — Network, Trainer, LAWSearch (with and without native state), Strategy — open or
    closed: each must raise NotCopyableError (a closed one may raise ClosedError)."""
    import copy
    import pickle

    mw = env.mw
    _np, st, _ = _strategies()
    law = mw.law
    kind = draw(st.sampled_from(["network", "trainer", "search", "search (no state)", "strategy"]))
    model = tiny_model(mw, draw(st.sampled_from(["flat", "bn"])))
    owned: list[Any] = [model]
    if kind == "network":
        h: Any = model
    elif kind == "trainer":
        h = mw.Trainer(model, method=draw(st.sampled_from(["erm", "mwnet", "gdw"])))
        owned.append(h)
    elif kind == "search":
        h = law.LAWSearch(LAW_SPEC, _tiny_law_config(law), input_shape=TINY_FLAT)
        owned.append(h)
    elif kind == "search (no state)":
        h = law.LAWSearch(LAW_SPEC, _tiny_law_config(law))
        owned.append(h)
    else:
        search = law.LAWSearch(LAW_SPEC, _tiny_law_config(law), input_shape=TINY_FLAT)
        h = search.strategy()
        search.close()
        owned.append(h)
    closed = draw(st.integers(0, 3)) == 0
    if closed:
        h.close()
    copiers: list[tuple[str, Callable[[Any], Any]]] = [
        *[(f"pickle.dumps(protocol={p})", lambda o, p=p: pickle.dumps(o, protocol=p)) for p in range(pickle.HIGHEST_PROTOCOL + 1)],
        ("copy.copy", copy.copy),
        ("copy.deepcopy", copy.deepcopy),
        ("copy.deepcopy([h])", lambda o: copy.deepcopy([o])),
        ("pickle.dumps({'h': h})", lambda o: pickle.dumps({"h": o})),
        ("h.__reduce_ex__(2)", lambda o: o.__reduce_ex__(2)),
    ]
    ok = (mw.ClosedError,) if closed else ()
    for cname, copier in draw(st.lists(st.sampled_from(copiers), min_size=1, max_size=4, unique_by=lambda c: c[0])):
        rec.call(f"{cname} of a {'closed ' if closed else ''}{type(h).__name__}", _must_refuse, copier, h, ok)
    for obj in reversed(owned):
        obj.close()


def fam_reentry(draw: Any, rec: Recorder, env: Env) -> None:
    """Re-entrant callbacks: fit from fit's callback (plain and FineTune's), search from a LAW
    stage callback, must raise StateError; close, load, save and step from a callback, and a
    second trainer on the same network, must give library errors or work, never corrupt the
    history (epochs numbered 1, 2, ... without duplicates) or crash."""
    mw = env.mw
    np, st, _ = _strategies()
    law = mw.law
    x = np.random.default_rng(0).normal(size=(6, *TINY_FLAT)).astype(np.float32)
    y = np.arange(6) % 3
    what = draw(st.sampled_from(
        ["fit", "fit (fine_tune)", "close", "load", "save", "step", "other trainer", "search", "search close",
         "search save"]
    ))

    def expect_state_error(name: str) -> None:
        e = rec.last_error
        if not isinstance(e, mw.StateError):
            rec.call(f"{name} must raise StateError", _finding, f"got {type(e).__name__ if e else 'a result'}: {e}")

    if what.startswith("search"):
        search = law.LAWSearch(LAW_SPEC, _tiny_law_config(law), seed=0, input_shape=TINY_FLAT)
        xs, ys, xv, yv = _law_data(np)
        stop_after = draw(st.integers(1, 2))
        seen = [0]

        def stage_cb(log: Any) -> bool:
            seen[0] += 1
            if what == "search":
                rec.call("LAWSearch.search (from its stage callback)", search.search, xs, ys, xv, yv, 1,
                         progress=False, example_weights=False)
                expect_state_error("LAWSearch.search from its stage callback")
            elif what == "search close":
                rec.call("LAWSearch.close (from its stage callback)", search.close)
            else:
                rec.call("LAWSearch.save (from its stage callback)", search.save, env.tmp / "reentry.law")
            return seen[0] >= stop_after

        rec.call("LAWSearch.search", _bounded(search.search, 120), xs, ys, xv, yv, 1, progress=False,
                 callback=stage_cb, example_weights=False)
        if not isinstance(rec.last_error, _Hang):
            search.close()
        return
    model = tiny_model(mw, draw(st.sampled_from(["flat", "bn"])))
    fine_tune = what == "fit (fine_tune)"
    tr = mw.Trainer(model, mw.SGD(lr=0.05), method=mw.FineTune(epochs=1) if fine_tune else "erm")
    ck = env.tmp / "reentry.ckpt"
    tr.save(ck)
    others: list[Any] = []
    answers = draw(st.lists(st.sampled_from([None, False, True]), min_size=8, max_size=8))

    def cb(t: Any, record: Any) -> Any:
        if what in ("fit", "fit (fine_tune)"):
            rec.call("Trainer.fit (from its callback)", t.fit, x, y, epochs=1, batch_size=3, progress=False,
                     **({"meta": (x, y)} if fine_tune else {}))
            expect_state_error("Trainer.fit from its callback")
        elif what == "close":
            rec.call("Trainer.close (from its callback)", t.close)
        elif what == "load":
            rec.call("Trainer.load (from its callback)", t.load, ck)
        elif what == "save":
            rec.call("Trainer.save (from its callback)", t.save, ck)
        elif what == "step":
            rec.call("Trainer.step (from its callback)", t.step, x, y)
        else:
            t2 = rec.call("Trainer (same network, from a callback)", mw.Trainer, model, mw.SGD(lr=0.1))
            if t2 is not None:
                others.append(t2)
                rec.call("other Trainer.fit (from a callback)", t2.fit, x, y, epochs=1, batch_size=3, progress=False)
        return answers[record.epoch % len(answers)]

    epochs = draw(st.integers(1, 3))
    kw: dict[str, Any] = {"meta": (x, y)} if fine_tune else {}
    run = rec.call("Trainer.fit", tr.fit, x, y, epochs=epochs, batch_size=3, progress=False, callbacks=[cb], **kw)
    if run is not None:
        epochs_seen = [r.epoch for r in tr.history]
        if epochs_seen != list(range(1, len(epochs_seen) + 1)):
            rec.call("fit history after re-entrant callbacks", _finding, f"epochs {epochs_seen}")
    for t2 in others:
        t2.close()
    tr.close()
    model.close()


def fam_surrogates(draw: Any, rec: Recorder, env: Env) -> None:
    """Lone surrogates (U+D800..U+DFFF) in every string argument (specs, method and option names,
    units, parameter names, state-dict keys, file and folder paths, experiment settings and
    filters), undecodable bytes paths, and huge or deeply nested experiment configurations
    (dicts, --set values, TOML and JSON files): library errors only."""
    mw = env.mw
    np, st, _ = _strategies()
    law = mw.law
    import metaweight.experiments as ex
    from metaweight.experiments.config import load_config

    if draw(st.integers(0, 3)) == 0:
        _huge_configs(draw, rec, env, load_config)
        return
    model = tiny_model(mw, "flat")
    tr = mw.Trainer(model)
    sd = model.state_dict()
    # drawn now, not inside the calls (a draw inside Recorder.call could stop the example there)
    ch = chr(draw(st.integers(0xD800, 0xDFFF)))
    frac = draw(st.floats(0, 1))
    strict = draw(st.booleans())

    def sur(base: str) -> str:
        at = int(frac * len(base))
        return base[:at] + ch + base[at:]

    tmp = env.tmp
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("Network(spec)", lambda: mw.Network(sur("linear(out=3)"), TINY_FLAT)),
        ("LAWSearch(spec)", lambda: law.LAWSearch(sur(LAW_SPEC), input_shape=TINY_FLAT)),
        ("Trainer(method=)", lambda: mw.Trainer(model, method=sur("erm"))),
        ("Trainer(on_nonfinite=)", lambda: mw.Trainer(model, on_nonfinite=sur("skip"))),
        ("Trainer.save(path)", lambda: tr.save(str(tmp / sur("s.ckpt")))),
        ("Trainer.load(path)", lambda: guarded(rec, env, tr, "Trainer.load(surrogate path)", tr.load, str(tmp / sur("s.ckpt")))),
        ("Trainer.load(bytes path)", lambda: tr.load(bytes(tmp / "x") + b"\xff\xfe.ckpt")),
        ("Trainer.save(bytes path)", lambda: tr.save(bytes(tmp / "x") + b"\xff\xfe.ckpt")),
        ("Trainer.from_checkpoint(path)", lambda: mw.Trainer.from_checkpoint(str(tmp / sur("s.ckpt")), model)),
        ("Strategy.load(path)", lambda: law.Strategy.load(str(tmp / sur("s.law")))),
        ("LAWSearch.load(path)", lambda: law.LAWSearch(LAW_SPEC, input_shape=TINY_FLAT).load(str(tmp / sur("s.law")))),
        ("LAWSearch.save(path)", lambda: law.LAWSearch(LAW_SPEC, input_shape=TINY_FLAT).save(str(tmp / sur("s.law")))),
        ("LAWSearch.save_strategy(path)", lambda: law.LAWSearch(LAW_SPEC, input_shape=TINY_FLAT).save_strategy(str(tmp / sur("s.law")))),
        ("LAWSearch.load_strategy(path)", lambda: law.LAWSearch(LAW_SPEC, input_shape=TINY_FLAT).load_strategy(str(tmp / sur("s.law")))),
        ("Constant(unit=)", lambda: mw.Constant(unit=sur("epoch"))),
        ("MultiStep(unit=)", lambda: mw.MultiStep([1.0], unit=sur("step"))),
        ("Cosine(unit=)", lambda: mw.Cosine(total=5, unit=sur("epoch"))),
        ("LAWConfig.from_spec", lambda: law.LAWConfig.from_spec(sur("stages=4"))),
        ("LAWConfig(label_encoding=)", lambda: law.LAWConfig(label_encoding=sur("onehot"))),
        ("LAWConfig(density=)", lambda: law.LAWConfig(density=sur("cosine"))),
        ("LAWConfig(optimizer=)", lambda: law.LAWConfig(optimizer=sur("sgd"))),
        ("MWNet(optimizer=)", lambda: mw.MWNet(optimizer=sur("adam"))),
        ("Network.get_parameter", lambda: model.get_parameter(sur(model.parameter_names()[0]))),
        ("Network.set_parameter", lambda: model.set_parameter(sur(model.parameter_names()[0]), np.zeros(3, np.float32))),
        ("Network.load_state_dict(key)", lambda: model.load_state_dict({**sd, sur("extra"): np.zeros(1, np.float32)},
                                                                       strict=strict)),
        ("data.load_idx(path)", lambda: mw.data.load_idx(str(tmp / sur("x.idx")))),
        ("data.load_mnist(dir)", lambda: mw.data.load_mnist(str(tmp / sur("mnist")))),
        ("data.load_cifar(dir)", lambda: mw.data.load_cifar(str(tmp / sur("cifar")))),
        ("conditions.compose(noise=)", lambda: mw.conditions.compose(np.zeros((12, 4), np.float32), np.arange(12) % 3, 3,
                                                                     noise=sur("uniform"), noise_rate=0.2)),
        ("load_config({'name': ...})", lambda: load_config({"name": sur("fz")})),
        ("load_config(key)", lambda: load_config({"name": "fz", "defaults": {sur("epochs"): 1}})),
        ("load_config(sets=)", lambda: load_config({"name": "fz"}, sets=[sur("seed=3")])),
        ("load_config(size=)", lambda: load_config({"name": "fz"}, size=sur("small"))),
        ("load_config(path)", lambda: load_config(str(tmp / sur("cfg.toml")))),
        ("load_config(file with a surrogate)", lambda: _write_and_load(tmp / "sur.toml", f'name = "{sur("x")}"\n', load_config)),
        ("parse_filters", lambda: ex.parse_filters([sur("method=erm")])),
        ("build_optimizer", lambda: ex.build_optimizer({"name": sur("sgd")})),
        ("build_schedule", lambda: ex.build_schedule({"name": sur("multistep")}, 10)),
        ("build_model", lambda: ex.build_model({"name": sur("mlp")}, (4,), 3, 0)),
    ]
    for name, fn in draw(st.lists(st.sampled_from(cases), min_size=1, max_size=4, unique_by=lambda c: c[0])):
        r = rec.call(f"{name} with a lone surrogate", fn)
        if r is not None and hasattr(r, "close") and r is not tr and r is not model:
            with contextlib.suppress(Exception):
                r.close()
    tr.close()
    model.close()


def _write_and_load(path: Path, text: str, load: Callable[..., Any]) -> Any:
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return load(path)


def _huge_configs(draw: Any, rec: Recorder, env: Env, load_config: Callable[..., Any]) -> None:
    _, st, _ = _strategies()
    shape = draw(st.sampled_from(
        ["deep_dict", "deep_set", "wide_grid", "many_values", "deep_toml", "deep_json", "long_toml", "self_ref"]
    ))
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
    elif shape == "many_values":
        rec.call("load_config(many values)", load_config, {"description": list(range(250_000))})
    elif shape == "deep_toml":
        d = draw(st.sampled_from([100, 5000, 200_000]))
        rec.call("load_config(deep TOML file)", _write_and_load, env.tmp / "deep.toml",
                 'name = "x"\nseed = ' + "[" * d + "]" * d + "\n", load_config)
    elif shape == "deep_json":
        d = draw(st.sampled_from([100, 5000, 200_000]))
        rec.call("load_config(deep JSON file)", _write_and_load, env.tmp / "deep.json",
                 '{"name": "x", "seed": ' + "[" * d + "]" * d + "}", load_config)
    elif shape == "long_toml":
        n = draw(st.sampled_from([10_000, 400_000, 3_000_000]))
        rec.call("load_config(huge TOML file)", _write_and_load, env.tmp / "long.toml",
                 'name = "x"\n[grid]\nseed = [' + "1," * n + "]\n", load_config)
    else:
        me: dict[str, Any] = {"name": "x"}
        me["defaults"] = me
        rec.call("load_config(a dict containing itself)", load_config, me)


def _fam_lost_probe(draw: Any, rec: Recorder, env: Env) -> None:
    """Harness self-test only: a refused call that changes the parameters is counted as lost."""
    mw = env.mw
    np, _st, _ = _strategies()
    model = tiny_model(mw, "flat")
    tr = mw.Trainer(model, mw.Adam(lr=1e-3), seed=0)

    def refuse_after_damage() -> None:
        model.set_flat(np.zeros(model.num_parameters, np.float32))
        raise mw.InvalidArgumentError("refused (harness self-test)")

    guarded(rec, env, tr, "refuse_after_damage", refuse_after_damage)
    tr.close()
    model.close()


def _fam_hang_probe(draw: Any, rec: Recorder, env: Env) -> None:
    """Harness self-test only: a call blocked on a FIFO is reported by the watchdog and released."""
    fifo = env.tmp / "probe.fifo"
    if not fifo.exists():
        os.mkfifo(fifo)

    def read_fifo() -> bytes:
        with open(fifo, "rb") as f:
            return f.read()

    rec.call("open(FIFO)", _bounded(read_fifo, 1.0, _unblock_fifo(fifo)))


#: Families used only by the harness's own tests (never planned by a profile).
TEST_FAMILIES: dict[str, Callable[[Any, Recorder, Env], None]] = {
    "_abort": _fam_abort,
    "metrics_probe": _fam_metrics_probe,
    "_lost_probe": _fam_lost_probe,
    "_hang_probe": _fam_hang_probe,
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
    "mutation": fam_mutation,
    "alloc": fam_alloc,
    "special_files": fam_special_files,
    "hostile_checkpoint": fam_hostile_checkpoint,
    "handles": fam_handles,
    "reentry": fam_reentry,
    "surrogates": fam_surrogates,
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
    "mutation": 1.5,
    "alloc": 1.5,
    "special_files": 1.5,
    "hostile_checkpoint": 2,
    "handles": 1,
    "reentry": 1,
    "surrogates": 1.5,
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
    rec.counts = dict.fromkeys(COUNT_KEYS, 0)
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
    lost: int = 0
    crashes: int = 0
    hangs: int = 0
    by_family: dict[str, dict[str, int]] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    crash_log: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        lines = [
            f"{'family':<18} {'calls':>8} {'ok':>8} {'documented':>10} {'other':>6} {'lost':>5} {'crashes':>7}"
        ]
        for name in sorted(self.by_family):
            f = self.by_family[name]
            lines.append(
                f"{name:<18} {f.get('calls', 0):>8} {f.get('ok', 0):>8} {f.get('documented', 0):>10} "
                f"{f.get('other', 0):>6} {f.get('lost', 0):>5} {f.get('crashes', 0):>7}"
            )
        lines.append(
            f"{'TOTAL':<18} {self.calls:>8} {self.ok:>8} {self.documented:>10} {self.other:>6} {self.lost:>5} "
            f"{self.crashes:>7}"
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
            task["family"], {**dict.fromkeys(COUNT_KEYS, 0), "crashes": 0}
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
                rep.lost += c["lost"]
                for k in COUNT_KEYS:
                    fam[k] += c[k]
                rep.findings.extend(res["findings"])
                rep.failures.extend(f"[{task['family']} seed {task['seed']}] {f}" for f in res["failures"])
                break
        if log and (idx + 1) % 25 == 0:
            log(
                f"{idx + 1}/{len(todo)} tasks, {rep.calls} calls, {rep.other} other, {rep.lost} lost, "
                f"{rep.crashes} crashes, {time.monotonic() - t0:.0f} s"
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
