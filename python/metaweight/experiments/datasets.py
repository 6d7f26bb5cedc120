"""Building a run's data: the data set, the condition (noise, imbalance), the clean meta set."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import conditions, data
from .config import ConfigError

__all__ = ["Prepared", "mnist_directory", "prepare"]

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


def prepare(run: Mapping[str, Any]) -> Prepared:
    """Loads the run's data set and applies its condition; seeded by ``run["seed"]`` (the data set's
    train/test split by ``dataset.split_seed``, default 0, so every seed is tested on the same set).

    Conditions: ``noise`` (``uniform``, ``flip``, ``flip2``, ``background`` with ``background_class``),
    ``noise_rate``, ``imbalance_factor`` (long-tailed), other noise options (``include_true_class``,
    ``mapping``); for ``mnist-4v9``: ``ratio`` (majority : minority) and ``total`` (training images;
    default as many as the data allow). The clean, class-balanced meta set of ``meta_per_class``
    images per class is drawn first, disjoint from training.
    """
    ds_cfg = dict(run["dataset"])
    model_name = run["model"]["name"]
    flatten = bool(ds_cfg.get("flatten", model_name == "mlp"))
    ds = _load(ds_cfg, flatten)
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
