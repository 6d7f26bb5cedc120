"""Building a run's data: the data set, the condition (noise, imbalance), the clean meta set."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import conditions, data
from .config import ConfigError

__all__ = ["USER_DATASETS", "Prepared", "gather", "load_source", "mnist_directory", "prepare"]

_DATASETS = ("digits", "mnist", "mnist-4v9")


def mnist_directory(directory: str | os.PathLike[str] | None = None) -> Path:
    """Finds the MNIST IDX files.

    Order: ``directory``; the environment variable ``METAWEIGHT_MNIST_DIR``; ``shared/data/mnist-t10k``
    next to the repository (``<repo>/../shared/data/mnist-t10k``, where the repository is the one
    this package was installed from in editable mode); the same folder above the working directory.

    Raises:
        FileNotFoundError: none of them exists (the message lists them).
    """
    candidates: list[Path] = []
    if directory is not None:
        candidates.append(Path(directory))
    env = os.environ.get("METAWEIGHT_MNIST_DIR")
    if env:
        candidates.append(Path(env))
    repo = Path(__file__).resolve().parents[3]  # python/metaweight/experiments/data.py -> repo
    candidates.append(repo.parent / "shared" / "data" / "mnist-t10k")
    candidates.append(repo / "shared" / "data" / "mnist-t10k")
    cwd = Path.cwd().resolve()
    for parent in (cwd, *cwd.parents):
        candidates.append(parent / "shared" / "data" / "mnist-t10k")
    for c in candidates:
        if c.is_dir():
            return c
    shown = ", ".join(str(c) for c in candidates[:4])
    raise FileNotFoundError(
        f"MNIST files not found (looked in {shown}, ...); set METAWEIGHT_MNIST_DIR or dataset.directory"
    )


@dataclass
class Prepared:
    """A run's arrays. ``corrupted`` marks training labels that differ from the true ones."""

    x_train: np.ndarray
    y_train: np.ndarray
    y_clean: np.ndarray
    corrupted: np.ndarray
    x_meta: np.ndarray
    y_meta: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    class_names: tuple[str, ...]
    steps: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


_cache: dict[tuple[Any, ...], data.Dataset] = {}
_lock = threading.Lock()


def _load(ds: Mapping[str, Any], flatten: bool) -> data.Dataset:
    name = ds["name"]
    if name not in _DATASETS:
        raise ConfigError(f"dataset.name: expected one of {list(_DATASETS)}, got {name!r}")
    frac = float(ds.get("test_fraction", 0.3))
    split_seed = int(ds.get("split_seed", 0))
    directory = None
    if name != "digits":
        directory = str(mnist_directory(ds.get("directory")))
    key = (name == "digits", directory, frac, split_seed, flatten)
    with _lock:
        hit = _cache.get(key)
        if hit is None:
            if name == "digits":
                hit = data.load_digits(flatten=flatten, test_fraction=frac, seed=split_seed)
            else:
                hit = data.load_mnist(directory, flatten=flatten, test_fraction=frac, seed=split_seed)  # type: ignore[arg-type]
            if len(_cache) > 8:
                _cache.clear()
            _cache[key] = hit
        return hit


def _noise(
    y: np.ndarray, cond: dict[str, Any], c: int, rng: np.random.Generator
) -> conditions.Corruption | None:
    noise = cond.pop("noise", None)
    rate = float(cond.pop("noise_rate", 0.0))
    if noise is None:
        return None
    if noise == "uniform":
        return conditions.uniform_noise(y, rate, c, rng, **cond)
    if noise in ("flip", "flip2"):
        return conditions.flip_noise(y, rate, c, rng, targets=1 if noise == "flip" else 2, **cond)
    raise ConfigError(
        f"condition.noise: expected 'uniform', 'flip' or 'flip2' for this data set, got {noise!r}"
    )


def load_source(run: Mapping[str, Any]) -> tuple[str, Any]:
    """The run's data set as loaded, before its condition, meta set and test split of rows: a key
    (runs with equal keys share it) and the object :func:`prepare` takes as ``source``. A grid on Ray
    loads each source once on the driver and ships it to the workers through the object store, so
    the nodes need neither the files nor a user's ``function`` module."""
    ds_cfg = dict(run["dataset"])
    flatten = bool(ds_cfg.get("flatten", run["model"]["name"] == "mlp"))
    if ds_cfg["name"] in USER_DATASETS:
        key = _user_key(ds_cfg)
        return "user:" + key, _user_source(ds_cfg, key)
    ds = _load(ds_cfg, flatten)
    return "builtin:" + json.dumps([ds_cfg, flatten], sort_keys=True, default=str), ds


def prepare(run: Mapping[str, Any], source: Any = None) -> Prepared:
    """Loads the run's data set and applies its condition; seeded by ``run["seed"]`` (the data set's
    train/test split by ``dataset.split_seed``, default 0, so every seed is tested on the same set).

    Conditions: ``noise`` (``uniform``, ``flip``, ``flip2``, ``background`` with ``background_class``),
    ``noise_rate``, ``imbalance_factor`` (long-tailed), other noise options (``include_true_class``,
    ``mapping``); for ``mnist-4v9``: ``ratio`` (majority : minority) and ``total`` (training images;
    default as many as the data allow). The clean, class-balanced meta set of ``meta_per_class``
    images per class is drawn first, disjoint from training.

    The user's data sets (``npz``, ``npy``, ``idx``, ``cifar``, ``function``; README, "Your own
    data") are handled as row numbers until the end: the test split, a given meta set, the
    condition and ``max_train`` select rows, and only the selected rows are then read (:func:`gather`)
    from the possibly memory-mapped files.

    ``source``: the data set from :func:`load_source` for this run (default: loaded here, cached).
    """
    ds_cfg = dict(run["dataset"])
    model_name = run["model"]["name"]
    flatten = bool(ds_cfg.get("flatten", model_name == "mlp"))
    if ds_cfg["name"] in USER_DATASETS:
        return _prepare_user(run, ds_cfg, flatten, source)
    ds = source if source is not None else _load(ds_cfg, flatten)
    seed = int(run["seed"])
    cond = {k: v for k, v in dict(run["condition"]).items() if k != "label"}
    cond_seed = int(cond.pop("seed", seed))
    per_class = int(run["meta_per_class"])
    names = ds.classes or tuple(str(i) for i in range(ds.num_classes))

    if ds_cfg["name"] == "mnist-4v9":
        classes = tuple(int(c) for c in ds_cfg.get("classes", (4, 9)))
        majority = int(ds_cfg.get("majority", classes[1]))
        ss = np.random.SeedSequence(cond_seed)
        s_meta, s_sub, s_noise = (np.random.default_rng(s) for s in ss.spawn(3))
        keep = np.isin(ds.y_train, classes)
        x, y_orig = ds.x_train[keep], ds.y_train[keep]
        y01 = (y_orig == classes[1]).astype(np.int64)
        ms = conditions.meta_split(y01, per_class, 2, seed=s_meta)
        ratio = float(cond.pop("ratio", 1.0))
        total = cond.pop("total", None)
        if cond.pop("imbalance_factor", 1) not in (1, 1.0):
            raise ConfigError("condition.imbalance_factor: mnist-4v9 takes 'ratio' (majority : minority)")
        sub = conditions.two_class_imbalance(
            y_orig[ms.train_indices], classes=classes, majority=majority, ratio=ratio, total=total, seed=s_sub
        )
        x_train = x[ms.train_indices][sub.indices]
        y_clean = sub.labels
        corr = _noise(y_clean, cond, 2, s_noise)
        y_train = corr.labels if corr is not None else y_clean.copy()
        steps = [f"meta set: {per_class} per class", sub.description] + ([corr.description] if corr else [])
        # A class-balanced test set of the two digits (as in L2RW).
        tk = np.flatnonzero(np.isin(ds.y_test, classes))
        yt = (ds.y_test[tk] == classes[1]).astype(np.int64)
        n = int(np.bincount(yt, minlength=2).min())
        trng = np.random.default_rng(int(ds_cfg.get("split_seed", 0)))
        pick = np.sort(np.concatenate([trng.permutation(np.flatnonzero(yt == c))[:n] for c in (0, 1)]))
        return _finish(
            run,
            x_train,
            y_train,
            y_clean,
            x[ms.meta_indices],
            y01[ms.meta_indices],
            ds.x_test[tk[pick]],
            yt[pick],
            2,
            f"{ds.name} {classes[0]} vs {classes[1]}",
            (str(classes[0]), str(classes[1])),
            tuple(steps),
        )

    if "ratio" in cond or "total" in cond:
        raise ConfigError("condition.ratio/total: only for the 'mnist-4v9' data set")
    composed = conditions.compose(
        ds.x_train,
        ds.y_train,
        ds.num_classes,
        cond_seed,
        meta_per_class=per_class,
        imbalance_factor=float(cond.pop("imbalance_factor", 1.0)),
        noise=cond.pop("noise", None),
        noise_rate=float(cond.pop("noise_rate", 0.0)),
        **cond,
    )
    return _finish(
        run,
        composed.x_train,
        composed.y_train,
        composed.y_train_clean,
        composed.x_meta,
        composed.y_meta,
        ds.x_test,
        ds.y_test,
        ds.num_classes,
        ds.name,
        tuple(names),
        composed.steps,
    )


def _finish(
    run: Mapping[str, Any],
    x_train: np.ndarray,
    y_train: np.ndarray,
    y_clean: np.ndarray,
    x_meta: np.ndarray,
    y_meta: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    name: str,
    class_names: tuple[str, ...],
    steps: tuple[str, ...],
) -> Prepared:
    cap = run.get("max_train")
    if cap is not None and 0 < int(cap) < len(x_train):
        rng = np.random.default_rng([int(run["seed"]), 7])
        idx = np.sort(rng.permutation(len(x_train))[: int(cap)])
        x_train, y_train, y_clean = x_train[idx], y_train[idx], y_clean[idx]
        steps = (*steps, f"subsampled to {int(cap)} training examples")
    return Prepared(
        x_train=np.ascontiguousarray(x_train, dtype=np.float32),
        y_train=np.asarray(y_train, dtype=np.int64),
        y_clean=np.asarray(y_clean, dtype=np.int64),
        corrupted=np.asarray(y_train != y_clean, dtype=bool),
        x_meta=np.ascontiguousarray(x_meta, dtype=np.float32),
        y_meta=np.asarray(y_meta, dtype=np.int64),
        x_test=np.ascontiguousarray(x_test, dtype=np.float32),
        y_test=np.asarray(y_test, dtype=np.int64),
        num_classes=int(num_classes),
        name=name,
        class_names=class_names,
        steps=steps,
    )


# ---- the user's own data sets ----------------------------------------------------------------------------

#: Data set names that load the user's files (see the README, "Your own data").
USER_DATASETS = ("npz", "npy", "idx", "cifar", "function")


@dataclass
class _UserData:
    """A user data set before the run's condition: row indices into (possibly memory-mapped) sources.

    ``x_src``/``y_src`` hold the training rows as given (all of them, before any test split);
    ``train_rows`` are the rows left for training after the test split and the given meta set;
    ``y_true_src`` the known true labels of ``x_src`` (or None)."""

    x_src: Any
    y_src: np.ndarray
    train_rows: np.ndarray
    x_test_src: Any
    test_rows: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    classes: tuple[str, ...] | None
    y_true_src: np.ndarray | None
    x_meta: Any | None
    y_meta: np.ndarray | None


_user_cache: dict[str, _UserData] = {}


def _path(ds: Mapping[str, Any], key: str) -> Path:
    value = ds.get(key)
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"dataset.{key}: expected a file or folder path, got {value!r}")
    p = Path(value).expanduser()
    if not p.exists():
        raise ConfigError(f"dataset.{key}: {p} not found")
    return p


def _npy(ds: Mapping[str, Any], key: str, mmap: bool = True) -> np.ndarray:
    """An ``.npy`` array, memory-mapped (read-only) so that only the rows used are read."""
    p = _path(ds, key)
    try:
        a = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"dataset.{key}: cannot read {p} as a .npy file: {e}") from None
    if not isinstance(a, np.ndarray):
        raise ConfigError(f"dataset.{key}: {p} is not a .npy array")
    return a


def _labels_of(a: Any, where: str) -> np.ndarray:
    y = np.asarray(a)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise ConfigError(f"{where}: expected a 1-D array of integer labels, got {y.dtype} {y.shape}")
    if len(y) and y.min() < 0:
        raise ConfigError(f"{where}: labels must be >= 0")
    return y.astype(np.int64)


def _index_file(ds: Mapping[str, Any], key: str, n: int) -> np.ndarray:
    p = _path(ds, key)
    try:
        idx = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(p, dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as e:
        raise ConfigError(f"dataset.{key}: cannot read indices from {p}: {e}") from None
    idx = np.asarray(idx).reshape(-1)
    if not np.issubdtype(idx.dtype, np.integer) or (len(idx) and (idx.min() < 0 or idx.max() >= n)):
        raise ConfigError(f"dataset.{key}: expected integer row indices in [0, {n})")
    if len(np.unique(idx)) != len(idx):
        raise ConfigError(f"dataset.{key}: repeated indices")
    return np.asarray(idx, dtype=np.int64)


def _call_function(ds: Mapping[str, Any]) -> Any:
    import importlib

    target = ds.get("function")
    if not isinstance(target, str) or ":" not in target:
        raise ConfigError(f"dataset.function: expected 'package.module:function', got {target!r}")
    mod_name, _, fn_name = target.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"dataset.function: cannot import {target!r}: {e}") from None
    kwargs = ds.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"dataset.kwargs: expected a table, got {kwargs!r}")
    return fn(**kwargs)


def _load_user(ds: Mapping[str, Any]) -> _UserData:
    name = str(ds["name"])
    frac = ds.get("test_fraction", 0.3)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
        raise ConfigError(f"dataset.test_fraction: expected a number in (0, 1), got {frac!r}")
    split_seed = ds.get("split_seed", 0)
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise ConfigError(f"dataset.split_seed: expected an integer >= 0, got {split_seed!r}")
    nc = ds.get("num_classes")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 1):
        raise ConfigError(f"dataset.num_classes: expected a positive integer, got {nc!r}")
    x_test_src: Any = None
    y_test: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    num_classes = ds.get("num_classes")
    label = name
    if name == "npz":
        p = _path(ds, "path")
        label = p.stem
        try:
            with np.load(p, allow_pickle=False) as z:
                keys = set(z.files)
                xk, yk = ("x_train", "y_train") if "x_train" in keys else ("x", "y")
                if xk not in keys or yk not in keys:
                    raise ConfigError(
                        f"dataset.path: {p} needs arrays x_train and y_train (or x and y), has {sorted(keys)}"
                    )
                x_src, y_raw = z[xk], z[yk]
                if ("x_test" in keys) != ("y_test" in keys):
                    raise ConfigError(f"dataset.path: {p} has one of x_test / y_test without the other")
                if "x_test" in keys:
                    x_test_src, y_test = z["x_test"], _labels_of(z["y_test"], "dataset y_test")
        except (OSError, ValueError) as e:
            raise ConfigError(f"dataset.path: cannot read {p} as a .npz file: {e}") from None
    elif name == "npy":
        x_src, y_raw = _npy(ds, "x"), _npy(ds, "y", mmap=False)
        label = Path(str(ds["x"])).stem
        if ("x_test" in ds) != ("y_test" in ds):
            raise ConfigError("dataset: give both x_test and y_test, or neither")
        if "x_test" in ds:
            x_test_src, y_test = (
                _npy(ds, "x_test"),
                _labels_of(_npy(ds, "y_test", mmap=False), "dataset.y_test"),
            )
    elif name in ("idx", "cifar", "function"):
        if name == "idx":
            got: Any = data.load_mnist(
                str(_path(ds, "directory")), flatten=False, test_fraction=frac, seed=split_seed
            )
        elif name == "cifar":
            got = data.load_cifar(str(_path(ds, "directory")), num_classes=int(nc if nc is not None else 10))
        else:
            got = _call_function(ds)
        if isinstance(got, data.Dataset):
            x_src, y_raw, x_test_src, y_test = got.x_train, got.y_train, got.x_test, got.y_test
            num_classes = num_classes if num_classes is not None else got.num_classes
            classes, label = got.classes, got.name
        elif isinstance(got, tuple) and len(got) in (2, 4):
            x_src, y_raw = got[0], got[1]
            if len(got) == 4:
                x_test_src, y_test = got[2], _labels_of(got[3], "dataset.function's y_test")
            label = str(ds["function"]).rpartition(":")[2]
        else:
            raise ConfigError(
                "dataset.function: expected (x_train, y_train, x_test, y_test), (x, y) or a "
                f"metaweight.data.Dataset, got {type(got).__name__}"
            )
    else:  # pragma: no cover - the configuration checks the name
        raise ConfigError(f"dataset.name: unknown data set {name!r}")
    y_src = _labels_of(y_raw, "dataset training labels")
    if len(x_src) != len(y_src):
        raise ConfigError(f"dataset: {len(x_src)} training examples but {len(y_src)} labels")
    if x_test_src is not None and y_test is not None and len(x_test_src) != len(y_test):
        raise ConfigError(f"dataset: {len(x_test_src)} test examples but {len(y_test)} labels")
    n = len(y_src)
    rows = np.arange(n, dtype=np.int64)
    meta_rows: np.ndarray | None = None
    x_meta: Any = None
    y_meta: np.ndarray | None = None
    if "meta_indices" in ds and "meta" in ds:
        raise ConfigError("dataset: give meta_indices or meta, not both")
    if "meta_indices" in ds:
        meta_rows = _index_file(ds, "meta_indices", n)
        rows = np.setdiff1d(rows, meta_rows)
    elif "meta" in ds:
        p = _path(ds, "meta")
        try:
            with np.load(p, allow_pickle=False) as z:
                xk, yk = ("x_meta", "y_meta") if "x_meta" in z.files else ("x", "y")
                x_meta, y_meta = z[xk], _labels_of(z[yk], "dataset.meta labels")
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"dataset.meta: cannot read arrays x and y from {p}: {e}") from None
    if x_test_src is None:
        tr, te = data.split_indices(y_src[rows], frac, split_seed, stratify=True)
        train_rows, test_rows = rows[tr], rows[te]
        x_test_src, y_test = x_src, y_src[test_rows]
    else:
        train_rows, test_rows = rows, np.arange(len(y_test), dtype=np.int64)  # type: ignore[arg-type]
    if meta_rows is not None:
        x_meta, y_meta = x_src, y_src[meta_rows]
    y_true_src: np.ndarray | None = None
    if "true_labels" in ds:
        y_true_src = _labels_of(_npy(ds, "true_labels", mmap=False), "dataset.true_labels")
        if len(y_true_src) != n:
            raise ConfigError(f"dataset.true_labels: {len(y_true_src)} labels for {n} training examples")
    assert y_test is not None
    top = [int(a.max()) + 1 for a in (y_src, y_test, y_meta, y_true_src) if a is not None and len(a)]
    c = int(num_classes) if num_classes is not None else max(top, default=1)
    if top and max(top) > c:
        raise ConfigError(f"dataset.num_classes: {c}, but the labels reach {max(top) - 1}")
    names = ds.get("class_names")
    if names is not None:
        if not isinstance(names, list) or len(names) != c:
            raise ConfigError(f"dataset.class_names: expected a list of {c} names, got {names!r}")
        classes = tuple(str(s) for s in names)
    if meta_rows is not None:
        x_meta = _MetaRows(x_src, meta_rows)
    return _UserData(
        x_src=x_src,
        y_src=y_src,
        train_rows=train_rows,
        x_test_src=x_test_src,
        test_rows=test_rows,
        y_test=y_test,
        num_classes=c,
        name=str(ds.get("label") or label),
        classes=classes,
        y_true_src=y_true_src,
        x_meta=x_meta,
        y_meta=y_meta,
    )


@dataclass
class _MetaRows:
    """Meta rows to gather from the training source."""

    src: Any
    rows: np.ndarray


def gather(src: Any, rows: np.ndarray) -> np.ndarray:
    """``src[rows]`` as float32, reading only those rows: the rows are visited in ascending order
    (sequential reads on a memory-mapped ``.npy`` file) and put back in the requested order."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), *np.shape(src)[1:]), dtype=np.float32)
    chunk = 4096
    for i in range(0, len(rows), chunk):
        sel = order[i : i + chunk]
        out[sel] = np.asarray(src[rows[sel]], dtype=np.float32)
    return out


def _shape(x: np.ndarray, ds: Mapping[str, Any], flatten: bool) -> np.ndarray:
    if flatten:
        return x.reshape(len(x), int(np.prod(x.shape[1:], dtype=np.int64)))
    shape = ds.get("input_shape")
    if shape is not None:
        try:
            return x.reshape((len(x), *(int(s) for s in shape)))
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"dataset.input_shape: cannot reshape {x.shape[1:]} to {shape!r}: {e}"
            ) from None
    return x


def _user_key(ds: Mapping[str, Any]) -> str:
    stamps = {}  # a rewritten file is loaded again
    for k in ("path", "x", "y", "x_test", "y_test", "directory", "meta", "meta_indices", "true_labels"):
        v = ds.get(k)
        if isinstance(v, str):
            try:
                st = os.stat(v)
                stamps[k] = [st.st_mtime_ns, st.st_size]
            except OSError:
                pass
    return json.dumps(
        [{k: v for k, v in ds.items() if k not in ("flatten", "normalize")}, stamps],
        sort_keys=True,
        default=str,
    )


def _user_source(ds: Mapping[str, Any], key: str) -> _UserData:
    with _lock:
        u = _user_cache.get(key)
        if u is None:
            u = _load_user(ds)
            if len(_user_cache) > 8:
                _user_cache.clear()
            _user_cache[key] = u
    return u


def _prepare_user(
    run: Mapping[str, Any], ds: Mapping[str, Any], flatten: bool, source: Any = None
) -> Prepared:
    u = source if source is not None else _user_source(ds, _user_key(ds))
    seed = int(run["seed"])
    cond = {k: v for k, v in dict(run["condition"]).items() if k != "label"}
    cond_seed = int(cond.pop("seed", seed))
    if "ratio" in cond or "total" in cond:
        raise ConfigError("condition.ratio/total: only for the 'mnist-4v9' data set")
    given_meta = u.x_meta is not None
    per_class = 0 if given_meta else int(run["meta_per_class"])
    y = u.y_src[u.train_rows]
    composed = conditions.compose(
        np.arange(len(y), dtype=np.int64)[:, None],  # row numbers: the features are gathered below
        y,
        u.num_classes,
        cond_seed,
        meta_per_class=per_class,
        imbalance_factor=float(cond.pop("imbalance_factor", 1.0)),
        noise=cond.pop("noise", None),
        noise_rate=float(cond.pop("noise_rate", 0.0)),
        **cond,
    )
    tr = u.train_rows[composed.x_train[:, 0]]
    y_train, y_clean = composed.y_train, composed.y_train_clean
    steps = list(composed.steps)
    cap = run.get("max_train")
    if cap is not None and 0 < int(cap) < len(tr):
        pick = np.sort(np.random.default_rng([seed, 7]).permutation(len(tr))[: int(cap)])
        tr, y_train, y_clean = tr[pick], y_train[pick], y_clean[pick]
        steps.append(f"subsampled to {int(cap)} training examples")
    if u.y_true_src is not None:
        y_clean = u.y_true_src[tr]
        steps.append("true labels given")
    x_train = gather(u.x_src, tr)
    x_test = gather(u.x_test_src, u.test_rows)
    if given_meta:
        if isinstance(u.x_meta, _MetaRows):
            x_meta = gather(u.x_meta.src, u.x_meta.rows)
        else:
            x_meta = gather(u.x_meta, np.arange(len(u.x_meta)))
        y_meta = np.asarray(u.y_meta)
        steps.insert(0, f"meta set: given ({len(y_meta)} examples)")
    else:
        x_meta = gather(u.x_src, u.train_rows[composed.x_meta[:, 0]])
        y_meta = composed.y_meta
    x_train, x_meta, x_test = (_shape(a, ds, flatten) for a in (x_train, x_meta, x_test))
    norm = ds.get("normalize")
    if norm is not None and norm is not False:
        if norm == "auto" or norm is True:
            mean = std = None
        elif isinstance(norm, Mapping) and set(norm) <= {"mean", "std"} and norm:
            mean, std = norm.get("mean"), norm.get("std")
        else:
            raise ConfigError(
                f'dataset.normalize: expected "auto" or {{mean = [...], std = [...]}}, got {norm!r}'
            )
        arrays = [x_train, x_test] + ([x_meta] if len(x_meta) else [])
        out, (m, s) = data.normalize(*arrays, mean=mean, std=std)
        x_train, x_test = out[0], out[1]
        if len(x_meta):
            x_meta = out[2]
        steps.append(f"normalised (mean {np.round(m, 4).tolist()}, std {np.round(s, 4).tolist()})")
    names = u.classes or tuple(str(i) for i in range(u.num_classes))
    return _finish(
        run,
        x_train,
        y_train,
        y_clean,
        x_meta,
        y_meta,
        x_test,
        u.y_test,
        u.num_classes,
        u.name,
        names,
        tuple(steps),
    )
