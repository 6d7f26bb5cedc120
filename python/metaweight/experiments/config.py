"""Experiment configuration: parsing (TOML or JSON), grid expansion, overrides, sizes and filters.

A configuration names an experiment and a grid of runs. Every run is a plain dictionary (JSON
types only), resolved from the built-in :data:`DEFAULTS`, the file's ``[defaults]``, one value of
every grid axis, the matching ``[[override]]`` tables and the chosen size. See
``examples/configs/reference.toml`` (every key, commented) for the format; in short::

    name = "noisy_digits"                      # results go to <results>/<name>/

    [defaults]                                 # settings shared by every run
    dataset = "digits"                         # digits | mnist | mnist-4v9, or {name = ..., ...}
    condition = {noise = "uniform", noise_rate = 0.4}
    meta_per_class = 10
    model = {name = "mlp", hidden = [256, 256]}
    optimizer = {name = "sgd", lr = 0.1, momentum = 0.9, weight_decay = 5e-4}
    schedule = {name = "multistep", fractions = [0.6, 0.85]}
    epochs = 40

    [grid]                                     # axes: the Cartesian product is run
    method = ["erm", "l2rw", {name = "mwnet", lr = 0.01}, "gdw"]
    seed = [0, 1, 2]

    [[override]]                               # settings for the runs that match
    where = {dataset = "mnist"}
    set = {epochs = 30}

    [sizes.small]                              # --size small
    epochs = 2
    seeds = [0]

``[grid]`` is one grid; ``[[grid]]`` (an array of tables; TOML does not allow both forms in one
file) gives several grids whose runs are united. An optional ``[logging]`` table (``tensorboard``,
``mlflow``, ``mlflow_experiment``; :data:`LOGGING_KEYS`) makes every run also log to TensorBoard
and MLflow (:mod:`metaweight.experiments.logging_callbacks`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..errors import InvalidArgumentError

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "Experiment",
    "RunSpec",
    "apply_filters",
    "canonical",
    "load_config",
    "parse_filters",
    "parse_size",
]

PathLike = Union[str, "Path"]

#: Settings of a run that the configuration does not give.
DEFAULTS: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "condition": {},
    "meta_per_class": 10,
    "model": {"name": "mlp", "hidden": [256, 256]},
    "method": {"name": "erm"},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
    "schedule": {"name": "constant"},
    "epochs": 20,
    "batch_size": 100,
    "meta_batch_size": 100,
    "seed": 0,
    "record_weights": True,
    "save_weights": True,
}

#: Keys whose values are components: a name plus options (a string is short for ``{name = ...}``).
COMPONENTS = ("dataset", "model", "method", "optimizer", "schedule")
#: Keys a run may have.
RUN_KEYS = frozenset(DEFAULTS) | {"max_train", "label", "label_issues"}
_TOP_KEYS = frozenset(
    {
        "name",
        "description",
        "results",
        "defaults",
        "grid",
        "override",
        "overrides",
        "sizes",
        "seeds",
        "summary",
        "logging",
    }
)
#: Built-in sizes, used when the configuration has no ``[sizes.<name>]`` table of that name.
BUILTIN_SIZES: dict[str, dict[str, Any]] = {"full": {}, "small": {"scale": 0.1}}


class ConfigError(InvalidArgumentError):
    """An invalid experiment configuration (the message names the offending key).

    A :class:`metaweight.InvalidArgumentError` (so also a ``ValueError`` and a
    :class:`metaweight.MetaweightError`)."""


# ---- helpers -----------------------------------------------------------------------------------------


def canonical(value: Any) -> Any:
    """``value`` with JSON types only (tuples → lists, numpy scalars → Python numbers)."""
    return json.loads(json.dumps(value, default=_json_default, sort_keys=True))


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def digest(value: Any, n: int = 8) -> str:
    """A short stable hash of a JSON value."""
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def _component(value: Any, key: str) -> dict[str, Any]:
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"{key}: expected a name or a table with a 'name', got {value!r}")


def _merge(base: Any, new: Any, key: str) -> Any:
    """Merges ``new`` into ``base``: components with the same (or no) name merge their options, a
    different name replaces the component; a condition table replaces the condition; other tables
    merge recursively; anything else replaces."""
    if key in COMPONENTS:
        new = _component(new, key)
        base = _component(base, key) if base is not None else {}
        if "name" in new and new.get("name") != base.get("name"):
            return copy.deepcopy(new)
        out = copy.deepcopy(base)
        for k, v in new.items():
            out[k] = _merge(out.get(k), v, f"{key}.{k}")
        return out
    if key == "condition":
        if not isinstance(new, Mapping):
            raise ConfigError(f"condition: expected a table, got {new!r}")
        return copy.deepcopy(dict(new))
    if isinstance(base, Mapping) and isinstance(new, Mapping):
        out = copy.deepcopy(dict(base))
        for k, v in new.items():
            out[k] = _merge(out.get(k), v, f"{key}.{k}")
        return out
    return copy.deepcopy(new)


def set_path(run: dict[str, Any], path: str, value: Any) -> None:
    """Sets ``run[a][b]... = value`` for a dotted path ``"a.b"`` (merging as :func:`_merge`)."""
    parts = path.split(".")
    if parts[0] == "seeds":
        parts[0] = "seed"
    if parts[0] not in RUN_KEYS:
        raise ConfigError(f"{path}: unknown setting {parts[0]!r}; expected one of {sorted(RUN_KEYS)}")
    if len(parts) == 1:
        run[parts[0]] = _merge(run.get(parts[0]), value, parts[0])
        return
    head = parts[0]
    node = run.get(head)
    if head in COMPONENTS:
        node = _component(node if node is not None else {}, head)
    elif node is None:
        node = {}
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: {head} is not a table")
    run[head] = node
    for i, p in enumerate(parts[1:-1], start=1):
        child = node.get(p)
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: {'.'.join(parts[: i + 1])} is not a table")
        node[p] = child
        node = child
    node[parts[-1]] = _merge(node.get(parts[-1]), value, path)


def get_path(run: Mapping[str, Any], path: str) -> Any:
    """``run[a][b]...`` for a dotted path, or None when missing."""
    node: Any = run
    for p in path.split("."):
        if isinstance(node, Mapping) and p in node:
            node = node[p]
        else:
            return None
    return node


def _flatten_grid(grid: Mapping[str, Any], prefix: str = "") -> list[tuple[str, list[Any]]]:
    axes: list[tuple[str, list[Any]]] = []
    for k, v in grid.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            axes.extend(_flatten_grid(v, path + "."))
        elif isinstance(v, (list, tuple)):
            if not v:
                raise ConfigError(f"grid.{path}: an axis needs at least one value")
            axes.append((path, list(v)))
        else:
            axes.append((path, [v]))
    return axes


# ---- labels -------------------------------------------------------------------------------------------


def _num(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def dataset_label(ds: Mapping[str, Any]) -> str:
    """The data set's ``label``, else its name; for a user's data set the file's stem (``mine`` for
    ``mine.npz``), the folder's name or the function's name."""
    if ds.get("label"):
        return str(ds["label"])
    for key in ("path", "x", "directory"):
        if ds.get("name") in ("npz", "npy", "idx", "cifar") and isinstance(ds.get(key), str) and ds[key]:
            stem = re.split(r"[/\\]", ds[key].rstrip("/\\"))[-1]
            return stem.rsplit(".", 1)[0] if key != "directory" else stem
    if ds.get("name") == "function" and isinstance(ds.get("function"), str):
        return ds["function"].rpartition(":")[2] or "function"
    return str(ds.get("name", "?"))


def condition_label(cond: Mapping[str, Any]) -> str:
    """A short description of a data condition, e.g. ``"uniform 40%"``, ``"long-tailed 100"``."""
    if cond.get("label"):
        return str(cond["label"])
    parts = []
    noise = cond.get("noise")
    if noise:
        rate = float(cond.get("noise_rate", 0.0))
        parts.append(f"{noise} {_num(round(rate * 100, 4))}%")
    imb = cond.get("imbalance_factor")
    if imb is not None and float(imb) != 1.0:
        parts.append(f"long-tailed {_num(imb)}")
    if cond.get("ratio") is not None:
        parts.append(f"ratio {_num(cond['ratio'])}:1")
    return " + ".join(parts) if parts else "clean"


def model_label(model: Mapping[str, Any]) -> str:
    if model.get("label"):
        return str(model["label"])
    name = str(model.get("name", "?"))
    if name == "mlp":
        hidden = model.get("hidden", [256, 256])
        return "mlp(" + "x".join(str(h) for h in hidden) + ")" if hidden else "logistic"
    if name == "wide_resnet":
        return f"wrn-{model.get('depth', 28)}-{model.get('widen', 10)}"
    if name == "spec":
        return str(model.get("spec"))
    return name


_METHOD_LABELS = {
    "erm": "ERM",
    "l2rw": "L2RW",
    "mwnet": "MW-Net",
    "gdw": "GDW",
    "law": "LAW",
    "focal": "Focal",
    "bootstrap": "Bootstrap",
    "class_balanced": "Class-balanced",
    "inverse_frequency": "Inverse frequency",
    "hard_mining": "Hard mining",
    "random": "Random",
    "self_paced": "Self-paced",
    "fine_tune": "Fine-tune",
    "class_balanced_sampling": "CB sampling",
}


def method_label(method: Mapping[str, Any], options: bool = True) -> str:
    """``"MW-Net"``, or with ``options`` ``"MW-Net(lr=0.01)"`` (an explicit ``label`` wins)."""
    if method.get("label"):
        return str(method["label"])
    name = str(method.get("name", "?"))
    base = _METHOD_LABELS.get(name, name)
    opts = {k: v for k, v in method.items() if k not in ("name", "label")}
    if not opts or not options:
        return base
    return (
        base
        + "("
        + ", ".join(f"{k}={_num(v) if not isinstance(v, list) else v}" for k, v in opts.items())
        + ")"
    )


def _slug(text: str) -> str:
    s = text.lower().replace("%", "pct").replace(":", "to").replace("+", "-")
    s = re.sub(r"[^a-z0-9.]+", "-", s).strip("-.")
    return s or "x"


# ---- specs ----------------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """One run of an experiment.

    Attributes:
        run_id: the run's folder name under the experiment's results folder.
        config: the resolved settings (JSON types), written to ``config.json``.
        labels: display labels: ``dataset``, ``condition``, ``model``, ``method``.
        group: key of the run's group in the summary (the settings except the seed).
        logging: where the run also logs, from the configuration's ``[logging]`` table, resolved
            for this run: ``tensorboard`` (the run's own event-file folder, absolute), ``mlflow``
            (the tracking URI; a folder becomes an absolute ``file://`` URI) and
            ``mlflow_experiment``; empty when the configuration has no ``[logging]``. Not part of
            ``config``: changing it re-runs nothing.
    """

    run_id: str
    config: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    group: str = ""
    logging: dict[str, str] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.config["seed"])


@dataclass
class Experiment:
    """A parsed configuration: its name, runs and summary settings."""

    name: str
    runs: list[RunSpec]
    description: str = ""
    results: str | None = None
    size: str = "full"
    source: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    logging: dict[str, str] = field(default_factory=dict)

    @property
    def folder_name(self) -> str:
        """``name`` for the full size, ``name-<size>`` otherwise (so sizes never mix)."""
        return self.name if self.size in ("full", "1", "1.0") else f"{self.name}-{_slug(self.size)}"


def parse_size(size: str | float | None) -> tuple[str, float | None]:
    """``("small", None)`` for a named size, ``("0.25", 0.25)`` for a scale factor."""
    if size is None:
        return "full", None
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        scale = float(size)
    else:
        s = str(size).strip()
        try:
            scale = float(s)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z][\w-]*", s):
                raise ConfigError(
                    f"size: expected a name such as 'small' or 'full', or a scale factor, got {size!r}"
                ) from None
            return s, None
    if not (scale > 0 and math.isfinite(scale)):
        raise ConfigError(f"size: a scale factor must be positive, got {size!r}")
    return _num(scale), scale


# Limits on what a configuration may hold, so that a huge or hostile file (or dictionary) is refused
# with a ConfigError instead of exhausting memory (MemoryError) or the stack (RecursionError).
#: Largest configuration file read, in bytes.
MAX_CONFIG_BYTES = 4 << 20
#: Deepest nesting of tables and arrays (a real configuration nests 3 or 4 deep).
MAX_CONFIG_DEPTH = 32
#: Most values (tables, arrays, scalars together) in one configuration.
MAX_CONFIG_VALUES = 200_000
#: Most runs one configuration may expand to (the product of its grid axes).
MAX_RUNS = 100_000


def _check_size(value: Any, where: str) -> None:
    """ConfigError when ``value`` nests deeper than MAX_CONFIG_DEPTH or holds more than
    MAX_CONFIG_VALUES values. Iterative, so that the check itself cannot overflow the stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    count = 0
    seen: set[int] = set()
    while stack:
        v, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(f"{where}: more than {MAX_CONFIG_VALUES} values; is this a configuration?")
        if isinstance(v, (Mapping, list, tuple)):
            if depth >= MAX_CONFIG_DEPTH:
                raise ConfigError(f"{where}: tables or arrays nested more than {MAX_CONFIG_DEPTH} deep")
            if id(v) in seen:
                raise ConfigError(f"{where}: a table or array contains itself")
            seen.add(id(v))
            children = list(v.keys()) + list(v.values()) if isinstance(v, Mapping) else list(v)
            stack.extend((c, depth + 1) for c in children)


def _loads_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ConfigError(f"{where}: JSON nested too deeply (more than {MAX_CONFIG_DEPTH} levels)") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration file: {e.strerror}") from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size} bytes; a configuration file is at most {MAX_CONFIG_BYTES} bytes")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration file: {e.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: a configuration file is at most {MAX_CONFIG_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None
    if path.suffix.lower() == ".json":
        try:
            return _loads_json(text, str(path))  # type: ignore[no-any-return]
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON: {e}") from None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - depends on the Python version
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ConfigError(
                f"{path}: reading TOML needs Python >= 3.11 (tomllib) or `pip install tomli`; "
                "or write the configuration as JSON"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: TOML nested too deeply (more than {MAX_CONFIG_DEPTH} levels)") from None


def _apply_scale(run: dict[str, Any], scale: float) -> None:
    epochs = int(run["epochs"])
    new_epochs = max(1, round(epochs * scale))
    run["epochs"] = new_epochs
    sched = run.get("schedule") or {}
    if isinstance(sched, dict) and sched.get("milestones"):
        ms = sorted({max(1, round(float(m) * scale)) for m in sched["milestones"]})
        sched["milestones"] = [m for m in ms if m < new_epochs] or []
    method = run.get("method") or {}
    if method.get("name") == "law":
        par = int(method.get("parallel", 2))
        if "episodes" in method:
            method["episodes"] = max(par, round(int(method["episodes"]) * scale))
        if "search_epochs" in method:
            method["search_epochs"] = max(1, round(int(method["search_epochs"]) * scale))


def _apply_size(runs: list[dict[str, Any]], size_table: Mapping[str, Any]) -> list[dict[str, Any]]:
    table = dict(size_table)
    scale = table.pop("scale", None)
    seeds = table.pop("seeds", None)
    if "seed" in table and isinstance(table["seed"], list):
        seeds = table.pop("seed")
    out = []
    for run in runs:
        if seeds is not None and int(run["seed"]) not in [int(s) for s in seeds]:
            continue
        if scale is not None:
            _apply_scale(run, float(scale))
        for k, v in table.items():
            set_path(run, k, v)
        out.append(run)
    return out


def _matches(run: Mapping[str, Any], labels: Mapping[str, str], key: str, expected: Any) -> bool:
    wanted = expected if isinstance(expected, list) else [expected]
    if key in ("dataset", "condition", "model", "method") and key in labels:
        names = {labels[key].lower(), _slug(labels[key])}
        comp = run.get(key)
        if isinstance(comp, Mapping):
            for k in ("name", "noise"):  # e.g. method=gdw, condition=flip
                if comp.get(k) is not None:
                    names.add(str(comp[k]).lower())
            if key == "condition" and float(comp.get("imbalance_factor", 1) or 1) != 1:
                names.add("long-tailed")
        return any(str(w).lower() in names for w in wanted)
    if key == "seeds":
        key = "seed"
    value = get_path(run, key)
    for w in wanted:
        if value == w or str(value).lower() == str(w).lower():
            return True
        try:
            if value is not None and float(value) == float(w):
                return True
        except (TypeError, ValueError):
            pass
    return False


def _labels(run: Mapping[str, Any]) -> dict[str, str]:
    return {
        "dataset": dataset_label(run["dataset"]),
        "condition": condition_label(run["condition"]),
        "model": model_label(run["model"]),
        "method": method_label(run["method"]),
    }


#: Keys of a built-in data set table, by name.
_BUILTIN_DATASET_KEYS: dict[str, frozenset[str]] = {
    "digits": frozenset({"name", "label", "test_fraction", "split_seed", "flatten"}),
    "mnist": frozenset({"name", "label", "test_fraction", "split_seed", "flatten", "directory"}),
    "mnist-4v9": frozenset(
        {"name", "label", "test_fraction", "split_seed", "flatten", "directory", "classes", "majority"}
    ),
}
#: Optional keys of every user data set (``npz``, ``npy``, ``idx``, ``cifar``, ``function``).
_USER_DATASET_COMMON = frozenset(
    {
        "name",
        "label",
        "flatten",
        "class_names",
        "input_shape",
        "normalize",
        "meta_indices",
        "meta",
        "true_labels",
    }
)
_USER_DATASET_KEYS: dict[str, frozenset[str]] = {
    "npz": _USER_DATASET_COMMON | {"path", "test_fraction", "split_seed", "num_classes"},
    "npy": _USER_DATASET_COMMON
    | {"x", "y", "x_test", "y_test", "test_fraction", "split_seed", "num_classes"},
    "idx": _USER_DATASET_COMMON | {"directory", "test_fraction", "split_seed"},
    "cifar": _USER_DATASET_COMMON | {"directory", "num_classes"},
    "function": _USER_DATASET_COMMON | {"function", "kwargs", "test_fraction", "split_seed", "num_classes"},
}
#: Every data set name and its allowed keys.
DATASET_KEYS: dict[str, frozenset[str]] = {**_BUILTIN_DATASET_KEYS, **_USER_DATASET_KEYS}
#: Keys of a ``condition`` table.
CONDITION_KEYS = frozenset(
    {
        "label",
        "noise",
        "noise_rate",
        "imbalance_factor",
        "include_true_class",
        "mapping",
        "background_class",
        "ratio",
        "total",
        "seed",
    }
)
#: Keys of the ``[summary]`` table.
SUMMARY_KEYS = frozenset({"metric", "percent", "decimals", "title", "layout"})
#: Keys of an ``[[override]]`` table.
OVERRIDE_KEYS = frozenset({"where", "set"})
#: Keys of the ``[logging]`` table: where every run also logs (not run settings: changing them
#: re-runs nothing). ``tensorboard``: a folder, each run writing to
#: ``<tensorboard>/<experiment>/<run-id>/``; ``mlflow``: a tracking URI or a local folder (a file
#: store), each run an MLflow run named by its run id; ``mlflow_experiment``: the MLflow
#: experiment's name (default: the experiment's results folder name).
LOGGING_KEYS = frozenset({"tensorboard", "mlflow", "mlflow_experiment"})


def _strict(table: Mapping[str, Any], allowed: Iterable[str], section: str, hint: str = "") -> None:
    """ConfigError naming the first unknown key of ``table`` and its section, listing the allowed keys."""
    allowed = set(allowed)
    unknown = sorted(str(k) for k in table if k not in allowed)
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(
            f"{section}: unknown key{plural} {', '.join(repr(k) for k in unknown)}; "
            f"allowed keys: {', '.join(sorted(allowed))}{hint}"
        )


def _params(fn: Any, drop: Iterable[str] = ()) -> set[str]:
    import inspect

    try:
        names = set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return set()
    return names - set(drop) - {"self", "args", "kwargs"}


def _component_keys(kind: str, name: str) -> set[str] | None:
    """The keys a ``model`` / ``optimizer`` / ``schedule`` / ``method`` table of this name may have
    (None: an unknown name, reported when the run is built)."""
    base = {"name", "label"}
    if kind == "model":
        import metaweight as mw

        sigs: dict[str, set[str]] = {
            "mlp": _params(mw.mlp, ("input_dim", "num_classes", "seed")),
            "lenet5": _params(mw.lenet5, ("input_shape", "num_classes", "seed")),
            "resnet32": _params(mw.resnet32, ("input_shape", "num_classes", "seed")),
            "wide_resnet": _params(mw.wide_resnet, ("input_shape", "num_classes", "seed")),
            "spec": {"spec"},
        }
        return base | sigs[name] if name in sigs else None
    if kind == "optimizer":
        import metaweight as mw

        opt = {"sgd": mw.SGD, "adam": mw.Adam}.get(name.lower())
        return base | _params(opt) if opt is not None else None
    if kind == "schedule":
        import metaweight as mw

        n = name.lower()
        if n == "constant":
            return base | _params(mw.Constant)
        if n == "multistep":
            return base | _params(mw.MultiStep) | {"fractions"}
        if n == "cosine":
            return base | _params(mw.Cosine)
        return None
    if kind == "method":
        import dataclasses

        if name == "law":
            from ..law import LAWConfig

            return (
                base
                | {f.name for f in dataclasses.fields(LAWConfig)}
                | {
                    "episodes",
                    "search_model",
                    "search_epochs",
                }
            )
        from .. import methods
        from ..errors import MetaweightError

        try:
            m = methods.resolve_method(name)
        except MetaweightError:
            return None
        return base | {f.name for f in dataclasses.fields(m)}
    return None


def _check_keys(run: Mapping[str, Any]) -> None:
    """Every table of a run holds only known keys (ConfigError naming the key and its section)."""
    ds = run["dataset"]
    dname = str(ds.get("name"))
    if dname not in DATASET_KEYS:
        raise ConfigError(f"dataset.name: expected one of {', '.join(DATASET_KEYS)}, got {dname!r}")
    hint = ""
    if dname in _BUILTIN_DATASET_KEYS and set(ds) - DATASET_KEYS[dname]:
        hint = (
            f" (for the built-in {dname!r} data set; for your own data set name one of "
            f'{", ".join(_USER_DATASET_KEYS)}, e.g. dataset = {{name = "npz", path = "mine.npz"}})'
        )
    _strict(ds, DATASET_KEYS[dname], "dataset", hint)
    _strict(run["condition"], CONDITION_KEYS, "condition")
    for kind in ("model", "optimizer", "schedule", "method"):
        comp = run[kind]
        allowed = _component_keys(kind, str(comp.get("name")))
        if allowed is not None:
            _strict(comp, allowed, kind, f" (for {kind} {comp.get('name')!r})")
    search = run["method"].get("search_model") if run["method"].get("name") == "law" else None
    if isinstance(search, Mapping) and search.get("name"):
        allowed = _component_keys("model", str(search["name"]))
        if allowed is not None:
            _strict(search, allowed, "method.search_model")


def _check_run(run: dict[str, Any]) -> None:
    for k in COMPONENTS:
        run[k] = _component(run[k], k)
        if not run[k].get("name"):
            raise ConfigError(f"{k}: missing 'name'")
    if not isinstance(run["condition"], dict):
        raise ConfigError("condition: expected a table")
    unknown = set(run) - RUN_KEYS
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}; expected some of {sorted(RUN_KEYS)}")
    for k in ("epochs", "batch_size", "meta_batch_size"):
        v = run[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{k}: expected a positive integer, got {v!r}")
    if isinstance(run["seed"], bool) or not isinstance(run["seed"], int) or run["seed"] < 0:
        raise ConfigError(f"seed: expected a non-negative integer, got {run['seed']!r}")
    m = run["meta_per_class"]
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise ConfigError(f"meta_per_class: expected an integer >= 0, got {m!r}")
    li = run.get("label_issues", False)
    if not isinstance(li, bool) and (not isinstance(li, int) or li < 1):
        raise ConfigError(f"label_issues: expected true, false or a number of last epochs >= 1, got {li!r}")
    _check_keys(run)


def load_config(
    source: PathLike | Mapping[str, Any],
    *,
    size: str | float | None = None,
    sets: Sequence[str] | Mapping[str, Any] | None = None,
    logging: Mapping[str, str] | None = None,
) -> Experiment:
    """Parses a configuration file (``.toml`` or ``.json``) or dictionary into an :class:`Experiment`.

    Args:
        source: the file, or the configuration as a dictionary.
        size: ``"full"`` (default), a size named in the configuration's ``[sizes]`` (or the built-in
            ``"small"``: epochs × 0.1), or a scale factor for the epochs (and LAW's episodes).
        sets: extra settings applied to every run, as ``"key=value"`` strings (the value parsed as
            JSON, else taken as a string) or a mapping of dotted keys.
        logging: entries that replace those of the configuration's ``[logging]`` table
            (:data:`LOGGING_KEYS`; the command line's ``--tensorboard`` and ``--mlflow``).

    Raises:
        ConfigError: an invalid configuration.
    """
    if isinstance(source, Mapping):
        _check_size(source, "configuration")
        raw = copy.deepcopy(dict(source))
        src = None
        default_name = "experiment"
    else:
        p = Path(source)
        if not p.is_file():
            raise ConfigError(f"{p}: configuration file not found")
        raw = _read(p)
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a table at the top level, got {type(raw).__name__}")
        _check_size(raw, str(p))
        src = str(p)
        default_name = p.stem
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s) {sorted(unknown)}; expected some of {sorted(_TOP_KEYS)} "
            "(run settings go in [defaults] or [grid])"
        )
    name = str(raw.get("name") or default_name)
    if not re.fullmatch(r"[\w.-]+", name):
        raise ConfigError(f"name: use letters, digits, '.', '_' or '-', got {name!r}")

    base = copy.deepcopy(DEFAULTS)
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"defaults: expected a table, got {defaults!r}")
    for k, v in defaults.items():
        set_path(base, k, v)

    grids = raw.get("grid", [{}])
    if isinstance(grids, Mapping):
        grids = [grids]
    if not isinstance(grids, list):
        raise ConfigError("grid: expected a table or an array of tables")
    top_seeds = raw.get("seeds")

    runs: list[dict[str, Any]] = []
    for gi, grid in enumerate(grids):
        if not isinstance(grid, Mapping):
            raise ConfigError(f"grid[{gi}]: expected a table")
        axes = _flatten_grid(grid)
        if top_seeds is not None and not any(a in ("seed", "seeds") for a, _ in axes):
            axes.append(("seed", list(top_seeds) if isinstance(top_seeds, list) else [top_seeds]))
        count = 1
        for _, values in axes:
            count *= len(values)
            if count * len(grids) > MAX_RUNS:
                raise ConfigError(f"grid[{gi}]: expands to more than {MAX_RUNS} runs")
        combos: list[list[tuple[str, Any]]] = [[]]
        for path, values in axes:
            combos = [c + [(path, v)] for c in combos for v in values]
        for combo in combos:
            run = copy.deepcopy(base)
            for path, value in combo:
                set_path(run, path, value)
            runs.append(run)

    overrides = raw.get("override", raw.get("overrides", []))
    if isinstance(overrides, Mapping):
        overrides = [overrides]
    if not isinstance(overrides, list):
        raise ConfigError(f"override: expected a table or an array of tables, got {overrides!r}")
    for i, ov in enumerate(overrides):
        if not isinstance(ov, Mapping) or "set" not in ov:
            raise ConfigError(f"override[{i}]: expected a table with 'set' (and optionally 'where')")
        _strict(ov, OVERRIDE_KEYS, f"override[{i}]")
        where = ov.get("where") or {}
        if not isinstance(where, Mapping) or not isinstance(ov["set"], Mapping):
            raise ConfigError(f"override[{i}]: 'where' and 'set' must be tables")
        for k in where:
            head = str(k).split(".")[0]
            if head not in RUN_KEYS | {"seeds"}:
                raise ConfigError(
                    f"override[{i}].where: unknown key {k!r}; allowed keys: {', '.join(sorted(RUN_KEYS))} "
                    "(or a dotted setting such as condition.noise)"
                )
        for run in runs:
            _check_run(run)
            labels = _labels(run)
            if all(_matches(run, labels, k, v) for k, v in where.items()):
                for k, v in ov["set"].items():
                    set_path(run, k, v)

    size_name, scale = parse_size(size)
    sizes = raw.get("sizes") or {}
    if not isinstance(sizes, Mapping):
        raise ConfigError(f"sizes: expected a table of [sizes.<name>] tables, got {sizes!r}")
    for sname, stable in sizes.items():
        if not isinstance(stable, Mapping):
            raise ConfigError(f"sizes.{sname}: expected a table, got {stable!r}")
        for k in stable:
            if k not in ("scale", "seeds") and str(k).split(".")[0] not in RUN_KEYS:
                raise ConfigError(
                    f"sizes.{sname}: unknown key {k!r}; allowed keys: scale, seeds, "
                    f"{', '.join(sorted(RUN_KEYS))}"
                )
    summary = raw.get("summary") or {}
    if not isinstance(summary, Mapping):
        raise ConfigError(f"summary: expected a table, got {summary!r}")
    _strict(summary, SUMMARY_KEYS, "summary")
    logging_table = check_logging(raw.get("logging"))
    logging_table.update(check_logging(logging))
    if "mlflow_experiment" in logging_table and "mlflow" not in logging_table:
        raise ConfigError("logging.mlflow_experiment: set logging.mlflow too (the tracking URI or folder)")
    if scale is not None:
        runs = _apply_size(runs, {"scale": scale})
    elif size_name in sizes:
        runs = _apply_size(runs, sizes[size_name])
    elif size_name in BUILTIN_SIZES:
        runs = _apply_size(runs, BUILTIN_SIZES[size_name])
    else:
        raise ConfigError(
            f"size: {size_name!r} is not defined; expected one of {sorted(set(sizes) | set(BUILTIN_SIZES))} "
            "or a scale factor"
        )

    extra = _parse_sets(sets)
    for run in runs:
        for k, v in extra.items():
            set_path(run, k, v)

    # A method's label shows its options only when the experiment has several variants of it.
    variants: dict[str, set[str]] = {}
    for run in runs:
        _check_run(run)
        m = run["method"]
        opts = {k: v for k, v in m.items() if k not in ("name", "label")}
        variants.setdefault(str(m["name"]), set()).add(json.dumps(canonical(opts), sort_keys=True))

    specs: list[RunSpec] = []
    seen: set[str] = set()
    for run in runs:
        cfg = canonical(run)
        key = json.dumps(cfg, sort_keys=True)
        if key in seen:
            continue  # the same run from two grids
        seen.add(key)
        labels = _labels(cfg)
        labels["method"] = method_label(cfg["method"], options=len(variants[str(cfg["method"]["name"])]) > 1)
        group_cfg = {k: v for k, v in cfg.items() if k != "seed"}
        specs.append(RunSpec(run_id="", config=cfg, labels=labels, group=digest(group_cfg, 12)))
    _assign_ids(specs)
    exp = Experiment(
        name=name,
        runs=specs,
        description=str(raw.get("description", "")),
        results=raw.get("results"),
        size=size_name,
        source=src,
        summary=dict(summary),
        logging=logging_table,
    )
    for spec in specs:
        spec.logging = run_logging(logging_table, exp.folder_name, spec.run_id)
    return exp


def check_logging(table: Any) -> dict[str, str]:
    """The ``[logging]`` table checked (:data:`LOGGING_KEYS`, non-empty strings); ``{}`` when absent.

    Raises:
        ConfigError: not a table, an unknown key or a value that is not a non-empty string.
    """
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"logging: expected a table such as {{tensorboard = \"runs\"}}, got {table!r}")
    _strict(table, LOGGING_KEYS, "logging")
    out: dict[str, str] = {}
    for k, v in table.items():
        if not isinstance(v, str) or not v.strip() or "\x00" in v:
            raise ConfigError(f"logging.{k}: expected a folder or URI (a non-empty string), got {v!r}")
        out[str(k)] = v
    return out


def run_logging(table: Mapping[str, str], experiment: str, run_id: str) -> dict[str, str]:
    """A ``[logging]`` table resolved for one run (see :attr:`RunSpec.logging`): TensorBoard's
    folder becomes ``<tensorboard>/<experiment>/<run-id>`` and local paths absolute, so that a run
    executed in another working directory (a Ray worker) logs to the same place."""
    out: dict[str, str] = {}
    if table.get("tensorboard"):
        out["tensorboard"] = str(Path(table["tensorboard"]).absolute() / experiment / run_id)
    if table.get("mlflow"):
        from ..integrations.mlflow import local_store_uri

        out["mlflow"] = local_store_uri(table["mlflow"])[0]
        out["mlflow_experiment"] = table.get("mlflow_experiment") or experiment
    return out


def _assign_ids(specs: list[RunSpec]) -> None:
    """``<dataset>_<condition>_<model>_<method>_s<seed>``; runs whose readable ids collide get a hash."""
    readable = []
    for s in specs:
        lab = s.labels
        readable.append(
            "_".join(_slug(lab[k]) for k in ("dataset", "condition", "model", "method")) + f"_s{s.seed}"
        )
    counts: dict[str, int] = {}
    for r in readable:
        counts[r] = counts.get(r, 0) + 1
    for s, r in zip(specs, readable):
        s.run_id = r if counts[r] == 1 else f"{r}_{digest(s.config, 6)}"
    # Groups whose four labels collide get a distinguishing suffix in their display labels.
    by_labels: dict[tuple[str, ...], set[str]] = {}
    for s in specs:
        by_labels.setdefault(
            tuple(s.labels[k] for k in ("dataset", "condition", "model", "method")), set()
        ).add(s.group)
    for s in specs:
        key = tuple(s.labels[k] for k in ("dataset", "condition", "model", "method"))
        if len(by_labels[key]) > 1:
            others = [t for t in specs if t.group in by_labels[key] and t.group != s.group]
            diff = _difference(s.config, [o.config for o in others])
            s.labels["variant"] = diff or s.group[:6]


def _difference(cfg: Mapping[str, Any], others: Iterable[Mapping[str, Any]]) -> str:
    """The settings (dotted paths) in which ``cfg`` differs from the others, as ``k=v`` pairs."""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(d, Mapping):
            for k, v in d.items():
                if k == "seed" and not prefix:
                    continue
                out.update(flat(v, f"{prefix}{k}."))
        else:
            out[prefix[:-1]] = d
        return out

    mine = flat(cfg)
    keys: set[str] = set()
    for o in others:
        theirs = flat(o)
        keys |= {k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)}
    return ", ".join(f"{k}={mine.get(k)}" for k in sorted(keys) if k in mine)


def _parse_sets(sets: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    if not sets:
        return {}
    if isinstance(sets, Mapping):
        _check_size(sets, "sets")
        return dict(sets)
    out: dict[str, Any] = {}
    for item in sets:
        if not isinstance(item, str):
            raise ConfigError(f"--set: expected key=value strings, got {type(item).__name__}")
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


def _parse_value(v: str) -> Any:
    try:
        value = _loads_json(v, f"--set value {v[:40]!r}")
    except json.JSONDecodeError:
        return v
    _check_size(value, f"--set value {v[:40]!r}")
    return value


def parse_filters(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, list[str]]:
    """``["method=gdw,mwnet", "seed=0"]`` → ``{"method": ["gdw", "mwnet"], "seed": ["0"]}``."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in items.items()}
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ConfigError(f"filters: expected a list of key=value strings or a mapping, got {items!r}")
    out: dict[str, list[str]] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"--only {item!r}: expected key=value (e.g. method=gdw or dataset=digits)")
        k, v = item.split("=", 1)
        out.setdefault(k.strip(), []).extend(x.strip() for x in v.split(",") if x.strip())
    return out


def apply_filters(runs: Sequence[RunSpec], filters: Mapping[str, list[str]]) -> list[RunSpec]:
    """The runs matching every filter. Keys: ``dataset``, ``condition``, ``model``, ``method`` (name
    or label, case-insensitive), ``seed``, ``run`` (a substring of the run id), or a dotted setting
    such as ``condition.noise`` or ``method.lr``."""
    out = []
    for r in runs:
        ok = True
        for k, values in filters.items():
            if k in ("run", "run_id"):
                ok = any(v in r.run_id for v in values)
            else:
                ok = _matches(r.config, r.labels, k, values)
            if not ok:
                break
        if ok:
            out.append(r)
    return out
