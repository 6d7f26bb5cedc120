"""Running an experiment's grid: one folder per run, finished runs skipped, a summary at the end.

Per run, ``<results>/<experiment>/<run-id>/`` holds:

- ``config.json``: the run's resolved settings (a run is finished when ``final.json`` exists and
  ``config.json`` equals the settings asked for; otherwise it is run again);
- ``history.csv``: one row per epoch (train loss/accuracy, test loss/accuracy, learning rate, time,
  meta loss, mean weight of clean / corrupted examples);
- ``final.json``: test accuracy and loss, per-class accuracy, confusion matrix, summary of the
  weights of clean vs corrupted examples (and per class), sizes, time;
- ``weights.npz`` (``save_weights``): the last epoch's per-example weights, their mean over the
  epochs, the corrupted mask, labels, GDW's class-level weights, MW-Net's/GDW's learned
  loss → weight curve; LAW: per-stage weights;
- ``law_episodes.csv`` (LAW): the search's per-episode, per-stage log;
- ``error.txt`` when the run failed.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import io
import json
import math
import os
import re
import stat
import threading
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..trainer import _tqdm
from .config import (
    ConfigError,
    Experiment,
    RunSpec,
    apply_filters,
    canonical,
    load_config,
    parse_filters,
)
from .datasets import Prepared, prepare
from .logging_callbacks import callbacks_for
from .summary import SummaryRow, summarize, summary_csv, summary_markdown

__all__ = ["ExperimentReport", "RunResult", "execute_run", "load_results", "run_experiment"]

HISTORY_FILE = "history.csv"
FINAL_FILE = "final.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.npz"
LAW_FILE = "law_episodes.csv"
ERROR_FILE = "error.txt"
LABEL_ISSUES_FILE = "label_issues.csv"


@dataclass
class RunResult:
    """The outcome of one run: ``status`` is ``"ran"``, ``"skipped"`` (finished before) or ``"failed"``."""

    spec: RunSpec
    status: str
    path: Path
    final: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def run_id(self) -> str:
        return self.spec.run_id


@dataclass
class ExperimentReport:
    """What :func:`run_experiment` returns.

    Attributes:
        experiment: the parsed configuration.
        folder: ``<results>/<experiment>``.
        results: one :class:`RunResult` per selected run (empty for a dry run).
        planned: the selected runs.
        summary: the summary rows over every finished run of the experiment.
        markdown: the summary table (also in ``summary.md``).
        seconds: wall time.
    """

    experiment: Experiment
    folder: Path
    results: list[RunResult] = field(default_factory=list)
    planned: list[RunSpec] = field(default_factory=list)
    summary: list[SummaryRow] = field(default_factory=list)
    markdown: str = ""
    seconds: float = 0.0

    def _count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ran(self) -> int:
        return self._count("ran")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def failed(self) -> int:
        return self._count("failed")


# ---- file helpers --------------------------------------------------------------------------------------


def _clean(o: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy → Python."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, np.generic):
        return _clean(o.item())
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


_SCALAR_LIST = re.compile(r"\[\s*([-+0-9.eE,\s\"a-zA-Z_]*?)\s*\]")


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_clean(obj), indent=2, sort_keys=False)
    # Lists of scalars on one line (confusion matrices, per-class values stay readable).
    text = _SCALAR_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    _write_atomic(path, text + "\n")


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt_cell(r.get(k)) for k in cols})
    _write_atomic(path, buf.getvalue())


def _fmt_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(float(v)) else repr(float(v))
    return v


def _read_regular_text(path: Path) -> str:
    """The UTF-8 text of ``path`` if it is a regular file; OSError otherwise, without blocking (a
    FIFO's ``open()`` would wait for a writer, ``/dev/zero`` would never end)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read().decode("utf-8")
    finally:
        if fd >= 0:
            os.close(fd)


def is_finished(path: Path, config: Mapping[str, Any]) -> bool:
    """Whether ``path`` holds a finished run of exactly ``config``."""
    f, c = path / FINAL_FILE, path / CONFIG_FILE
    if not (f.is_file() and c.is_file()):
        return False
    try:
        saved = json.loads(_read_regular_text(c))
    except (OSError, ValueError):  # ValueError: invalid JSON or UTF-8
        return False
    return canonical(saved) == canonical(config)


def read_final(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(_read_regular_text(path / FINAL_FILE))
    except (OSError, ValueError):  # ValueError: invalid JSON or UTF-8
        return None


# ---- building blocks ------------------------------------------------------------------------------------


def _opts(component: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in component.items() if k not in ("name", "label")}


def _component_name(cfg: Any, what: str) -> Any:
    """The ``name`` of a component table; ConfigError when ``cfg`` is not a table with one."""
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise ConfigError(f"{what}: expected a table with a 'name' key, got {cfg!r}")
    return cfg["name"]


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def build_model(cfg: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int, seed: int) -> Any:
    """The network of a ``model`` table: ``mlp`` (``hidden``, ``batch_norm``, ``dropout``), ``lenet5``,
    ``resnet32``, ``wide_resnet`` (``depth``, ``widen``, ``dropout``) or ``spec`` (a core spec string)."""
    import metaweight as mw

    name = _component_name(cfg, "model")
    o = _opts(cfg)
    try:
        if name == "mlp":
            return mw.mlp(
                input_shape,
                hidden=tuple(o.pop("hidden", (256, 256))),
                num_classes=num_classes,
                seed=seed,
                **o,
            )
        if name == "lenet5":
            return mw.lenet5(input_shape, num_classes=num_classes, seed=seed, **o)
        if name == "resnet32":
            return mw.resnet32(input_shape, num_classes=num_classes, seed=seed, **o)
        if name == "wide_resnet":
            return mw.wide_resnet(input_shape=input_shape, num_classes=num_classes, seed=seed, **o)
        if name == "spec":
            return mw.Network(str(o["spec"]), input_shape, seed)
    except TypeError as e:
        raise ConfigError(f"model: {e}") from None
    raise ConfigError(f"model.name: expected mlp, lenet5, resnet32, wide_resnet or spec, got {name!r}")


def build_optimizer(cfg: Mapping[str, Any]) -> Any:
    import metaweight as mw

    name = str(_component_name(cfg, "optimizer")).lower()
    o = {k: _tuples(v) for k, v in _opts(cfg).items()}
    try:
        if name == "sgd":
            return mw.SGD(**o)
        if name == "adam":
            return mw.Adam(**o)
    except TypeError as e:
        raise ConfigError(f"optimizer: {e}") from None
    raise ConfigError(f"optimizer.name: expected 'sgd' or 'adam', got {cfg['name']!r}")


def milestone_epochs(cfg: Mapping[str, Any], epochs: int) -> list[float]:
    """A multistep schedule's milestones in epochs (``milestones``, or ``fractions`` of the run)."""
    if "fractions" in cfg:
        ms = [float(f) * epochs for f in cfg["fractions"]]
    else:
        ms = [float(m) for m in cfg.get("milestones", [])]
    return sorted({m for m in ms if 0 < m < epochs})


def build_schedule(cfg: Mapping[str, Any], epochs: int) -> Any:
    import metaweight as mw

    name = str(_component_name(cfg, "schedule")).lower()
    o = _opts(cfg)
    try:
        if name == "constant":
            return mw.Constant(**o)
        if name == "multistep":
            ms = milestone_epochs(cfg, epochs)
            o.pop("fractions", None)
            o.pop("milestones", None)
            return mw.MultiStep(milestones=ms, **o) if ms else mw.Constant()
        if name == "cosine":
            o.setdefault("total", epochs)
            return mw.Cosine(**o)
    except TypeError as e:
        raise ConfigError(f"schedule: {e}") from None
    raise ConfigError(f"schedule.name: expected constant, multistep or cosine, got {cfg['name']!r}")


def build_method(cfg: Mapping[str, Any], prepared: Prepared) -> Any:
    """The method object of a ``method`` table; ``class_counts`` default to the training counts."""
    from .. import errors as mw_errors
    from .. import methods

    name = str(_component_name(cfg, "method"))
    try:
        m = methods.resolve_method(name)
    except mw_errors.MetaweightError as e:
        raise ConfigError(f"method.name: {e}") from None
    o = {k: _tuples(v) for k, v in _opts(cfg).items()}
    names = {f.name for f in dataclasses.fields(m)}
    if "class_counts" in names and o.get("class_counts") is None:
        o["class_counts"] = tuple(
            int(c) for c in np.bincount(prepared.y_train, minlength=prepared.num_classes)
        )
    unknown = set(o) - names
    if unknown:
        raise ConfigError(f"method {name!r}: unknown option(s) {sorted(unknown)}; options: {sorted(names)}")
    return dataclasses.replace(m, **o) if o else m


def weight_summary(
    w: np.ndarray | None, corrupted: np.ndarray, y: np.ndarray, num_classes: int
) -> dict[str, Any] | None:
    """Mean, std and quantiles of the weights of all / clean / corrupted examples, the ROC AUC of the
    weight as a score for "clean" (1: every corrupted example weighs less), the mean weight per
    (observed) class."""
    if w is None:
        return None
    from ..law import roc_auc

    w = np.asarray(w, dtype=np.float64)
    ok = np.isfinite(w)

    def stats(sel: np.ndarray) -> dict[str, Any] | None:
        v = w[sel & ok]
        if v.size == 0:
            return None
        return {
            "n": int(v.size),
            "mean": float(v.mean()),
            "std": float(v.std()),
            "median": float(np.median(v)),
            "q10": float(np.quantile(v, 0.1)),
            "q90": float(np.quantile(v, 0.9)),
            "zero_fraction": float(np.mean(v <= 1e-12)),
        }

    has_corrupted = bool(corrupted.any())
    by_class = []
    for c in range(num_classes):
        v = w[(y == c) & ok]
        by_class.append(float(v.mean()) if v.size else None)
    return {
        "all": stats(np.ones_like(ok)),
        "clean": stats(~corrupted),
        "corrupted": stats(corrupted) if has_corrupted else None,
        "auc_clean_vs_corrupted": roc_auc(w, corrupted) if has_corrupted and (~corrupted).any() else None,
        "by_class": by_class,
    }


# ---- one run ---------------------------------------------------------------------------------------------


def _epoch_bar(total: int, desc: str, enabled: bool) -> Any:
    tqdm = _tqdm() if enabled else None
    if tqdm is None:
        return None
    return tqdm(total=total, desc=desc, unit="epoch", leave=False, position=1, dynamic_ncols=True)


#: Every file a run writes; ``final.json`` (the mark of a finished run) is written last.
RUN_FILES = (CONFIG_FILE, HISTORY_FILE, LAW_FILE, LABEL_ISSUES_FILE, WEIGHTS_FILE, ERROR_FILE, FINAL_FILE)


def _clear_run(folder: Path) -> None:
    """Removes a previous attempt's files (``final.json`` first, so the run reads as unfinished)."""
    for name in (FINAL_FILE, HISTORY_FILE, WEIGHTS_FILE, LAW_FILE, ERROR_FILE, LABEL_ISSUES_FILE):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()


def store_run_files(folder: Path, files: Mapping[str, bytes]) -> None:
    """Writes a run's files (name → content, from a run executed elsewhere) into ``folder``: the
    previous attempt's files are removed, then each file is written atomically, ``final.json`` last,
    so the run reads as finished only once every file is in place."""
    unknown = set(files) - set(RUN_FILES)
    if unknown:
        raise ValueError(f"files: unexpected run files {sorted(unknown)}; expected some of {list(RUN_FILES)}")
    folder.mkdir(parents=True, exist_ok=True)
    _clear_run(folder)
    for name in RUN_FILES:
        if name in files:
            tmp = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_bytes(files[name])
            os.replace(tmp, folder / name)


def execute_run(spec: RunSpec, folder: Path, *, progress: bool = False, source: Any = None) -> dict[str, Any]:
    """Runs one configuration and writes its files into ``folder``; returns the ``final.json`` content.

    ``source``: the run's data set from :func:`~metaweight.experiments.datasets.load_source`
    (default: loaded from the configuration here)."""
    folder.mkdir(parents=True, exist_ok=True)
    _clear_run(folder)
    _write_json(folder / CONFIG_FILE, spec.config)
    cfg = spec.config
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = prepare(cfg, source)
        if cfg["method"]["name"] == "law":
            final = _run_law(spec, folder, prepared, progress)
        else:
            final = _run_trainer(spec, folder, prepared, progress)
    final["time_seconds"] = time.perf_counter() - t0
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    if messages:
        final["warnings"] = messages
    final["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _write_json(folder / FINAL_FILE, final)
    return final


def _common_final(spec: RunSpec, p: Prepared, trainer: Any) -> dict[str, Any]:
    import metaweight as mw

    ev = trainer.evaluate(p.x_test, p.y_test)
    pred = trainer.predict(p.x_test)
    return {
        "run_id": spec.run_id,
        "labels": spec.labels,
        "test_accuracy": float(ev["accuracy"]),
        "test_error": 1.0 - float(ev["accuracy"]),
        "test_loss": float(ev["loss"]),
        "per_class_accuracy": mw.per_class_accuracy(p.y_test, pred, p.num_classes).tolist(),
        "confusion_matrix": mw.confusion_matrix(p.y_test, pred, p.num_classes).tolist(),
        "class_names": list(p.class_names),
        "num_classes": p.num_classes,
        "dataset": p.name,
        "condition_steps": list(p.steps),
        "n_train": len(p.x_train),
        "n_meta": len(p.x_meta),
        "n_test": len(p.x_test),
        "class_counts": np.bincount(p.y_train, minlength=p.num_classes).tolist(),
        "noise_rate_actual": float(p.corrupted.mean()) if len(p.corrupted) else 0.0,
        "metaweight_version": mw.__version__,
    }


def label_issues_k(cfg: Mapping[str, Any]) -> int:
    """The number of last epochs whose weights rank the label issues (0: no ``label_issues.csv``).
    ``label_issues = true`` means the last 5 epochs, an integer k the last k."""
    v = cfg.get("label_issues", False)
    if v is True:
        return 5
    if v is False or v is None:
        return 0
    return int(v)


def _write_label_issues(
    folder: Path,
    trainer: Any,
    p: Prepared,
    recent: Sequence[np.ndarray],
    class_weights: np.ndarray | None,
) -> None:
    """``label_issues.csv`` from :func:`metaweight.label_issues` over the weights of the last epochs
    (``recent``): ``rank, index, given_label, suggested_label, score, weight``, most suspect first,
    plus ``corrupted`` (0/1) when the run knows the true labels. The suggested class comes from
    GDW's class-level weights ω at the run's end, else from the model's prediction."""
    from ..label_issues import label_issues

    n = len(p.y_train)
    weights = np.stack(recent) if recent else np.full((1, n), np.nan)
    cw = (
        class_weights if class_weights is not None and np.shape(class_weights) == (n, p.num_classes) else None
    )
    predicted = None if cw is not None else np.asarray(trainer.predict(p.x_train))
    issues = label_issues(weights, p.y_train, class_weights=cw, predicted=predicted)
    rows: list[dict[str, Any]] = []
    known = bool(p.corrupted.any())
    for r, (i, g, sl, sc, wt) in enumerate(
        zip(
            issues.index.tolist(),
            issues.given_label.tolist(),
            issues.suggested_label.tolist(),
            issues.score.tolist(),
            issues.weight.tolist(),
        ),
        start=1,
    ):
        row: dict[str, Any] = {
            "rank": r,
            "index": i,
            "given_label": g,
            "suggested_label": sl,
            "score": sc if math.isfinite(sc) else None,
            "weight": wt if math.isfinite(wt) else None,
        }
        if known:
            row["corrupted"] = int(p.corrupted[i])
        rows.append(row)
    _write_csv(folder / LABEL_ISSUES_FILE, rows)


def _run_trainer(spec: RunSpec, folder: Path, p: Prepared, progress: bool) -> dict[str, Any]:
    import metaweight as mw

    cfg = spec.config
    seed = int(cfg["seed"])
    epochs = int(cfg["epochs"])
    method = build_method(cfg["method"], p)
    uses_meta = bool(method.needs_meta or isinstance(method, mw.FineTune))
    if uses_meta and len(p.x_meta) == 0:
        raise ConfigError(f"meta_per_class: the {method.name!r} method needs a meta set (meta_per_class > 0)")
    record = bool(cfg.get("record_weights", True))
    model = build_model(cfg["model"], p.input_shape, p.num_classes, seed)
    trainer = mw.Trainer(
        model,
        build_optimizer(cfg["optimizer"]),
        build_schedule(cfg["schedule"], epochs),
        method=method,
        seed=seed,
    )
    n = len(p.x_train)
    k_issues = label_issues_k(cfg)
    if k_issues and not record:
        raise ConfigError("label_issues: needs record_weights = true")
    recent: list[np.ndarray] = []
    wsum = np.zeros(n)
    wcnt = np.zeros(n)
    rows: list[dict[str, Any]] = []
    corrupted = p.corrupted
    has_corrupted = bool(corrupted.any())
    total_epochs = epochs + (int(getattr(method, "epochs", 0)) if isinstance(method, mw.FineTune) else 0)
    bar = _epoch_bar(total_epochs, spec.run_id[:40], progress)

    def on_epoch(_t: Any, r: Any) -> None:
        row = {
            "epoch": r.epoch,
            "step": r.step,
            "train_loss": r.train_loss,
            "train_accuracy": r.train_accuracy,
            "test_loss": r.val_loss,
            "test_accuracy": r.val_accuracy,
            "lr": r.lr,
            "time": r.time,
            "meta_loss": r.meta_loss,
        }
        w = r.example_weights
        if w is not None and len(w) == n:
            ok = np.isfinite(w)
            wsum[ok] += w[ok]
            wcnt[ok] += 1
            if k_issues:
                recent.append(np.array(w, dtype=np.float64))
                del recent[:-k_issues]
            row["weight_mean"] = float(np.nanmean(w)) if ok.any() else None
            if has_corrupted:
                c_ok, k_ok = ok & corrupted, ok & ~corrupted
                row["weight_mean_clean"] = float(w[k_ok].mean()) if k_ok.any() else None
                row["weight_mean_corrupted"] = float(w[c_ok].mean()) if c_ok.any() else None
        rows.append(row)
        if bar is not None:
            bar.set_postfix(test_acc=f"{r.val_accuracy:.3f}", refresh=False)
            bar.update(1)

    try:
        history = trainer.fit(
            p.x_train,
            p.y_train,
            epochs=epochs,
            batch_size=int(cfg["batch_size"]),
            x_val=p.x_test,
            y_val=p.y_test,
            meta=(p.x_meta, p.y_meta) if uses_meta else None,
            meta_batch_size=int(cfg["meta_batch_size"]),
            progress=False,
            callbacks=[on_epoch, *callbacks_for(spec, p)],
            record_weights=record,
        )
    finally:
        if bar is not None:
            bar.close()
    _write_csv(folder / HISTORY_FILE, rows)
    final = _common_final(spec, p, trainer)
    accs = [r["test_accuracy"] for r in rows]
    final["best_test_accuracy"] = float(max(accs))
    final["best_epoch"] = int(rows[int(np.argmax(accs))]["epoch"])
    final["final_train_accuracy"] = float(rows[-1]["train_accuracy"])
    final["epochs_run"] = len(rows)
    final["method_spec"] = method.spec()
    last = history[-1] if len(history) else None
    # FineTune's last records are over the meta set: use the last record over the training set.
    if isinstance(method, mw.FineTune):
        train_records = [r for r in history if r.example_weights is not None and len(r.example_weights) == n]
        last = train_records[-1] if train_records else None
    w_last = last.example_weights if last is not None and last.example_weights is not None else None
    with np.errstate(invalid="ignore", divide="ignore"):
        w_mean = np.where(wcnt > 0, wsum / np.maximum(wcnt, 1), np.nan) if record else None
    final["weights"] = weight_summary(w_last, corrupted, p.y_train, p.num_classes) if record else None
    final["weights_mean_over_epochs"] = (
        weight_summary(w_mean, corrupted, p.y_train, p.num_classes) if record else None
    )
    if k_issues:
        _write_label_issues(folder, trainer, p, recent, last.class_weights if last is not None else None)
    if cfg.get("save_weights", True):
        arrays: dict[str, np.ndarray] = {
            "corrupted": corrupted,
            "y_train": p.y_train,
            "y_clean": p.y_clean,
        }
        if w_last is not None:
            arrays["example_weights"] = np.asarray(w_last, dtype=np.float32)
        if w_mean is not None:
            arrays["example_weights_mean"] = w_mean.astype(np.float32)
        if last is not None and last.class_weights is not None:
            arrays["class_weights"] = np.asarray(last.class_weights, dtype=np.float32)
        arrays["train_losses"] = trainer.losses(p.x_train, p.y_train)
        if getattr(method, "has_weight_function", False):
            grid = np.linspace(
                0.0, max(10.0, float(np.nanmax(arrays["train_losses"]))), 256, dtype=np.float32
            )
            arrays["weight_function_losses"] = grid
            arrays["weight_function"] = trainer.weight_function(grid)
        np.savez_compressed(folder / WEIGHTS_FILE, **arrays)
    trainer.close()
    model.close()
    return final


def _law_config(cfg: Mapping[str, Any], opts: Mapping[str, Any]) -> Any:
    from ..law import LAWConfig

    names = {f.name for f in dataclasses.fields(LAWConfig)}
    law_opts = {k: _tuples(v) for k, v in opts.items() if k in names}
    unknown = set(opts) - names - {"episodes", "search_model", "search_epochs"}
    if unknown:
        raise ConfigError(
            f"method 'law': unknown option(s) {sorted(unknown)}; options: episodes, search_model, "
            f"search_epochs and the LAWConfig fields {sorted(names)}"
        )
    epochs = int(cfg["epochs"])
    opt = cfg["optimizer"]
    sched = cfg["schedule"]
    base: dict[str, Any] = {
        "epochs": int(opts.get("search_epochs", epochs)),
        "batch_size": int(cfg["batch_size"]),
        "optimizer": str(opt["name"]).lower(),
        "lr": float(opt.get("lr", 0.1)),
        "weight_decay": float(opt.get("weight_decay", 0.0)),
    }
    if base["optimizer"] == "sgd":
        base["momentum"] = float(opt.get("momentum", 0.0))
    name = str(sched["name"]).lower()
    if name == "multistep":
        base["lr_milestones"] = tuple(m / epochs for m in milestone_epochs(sched, epochs))
        base["lr_decay"] = float(sched.get("gamma", 0.1))
    elif name == "constant":
        base["lr_milestones"] = ()
    base.update(law_opts)
    return LAWConfig(**base)


def _run_law(spec: RunSpec, folder: Path, p: Prepared, progress: bool) -> dict[str, Any]:
    """LAW: a strategy search on the training set with the clean meta set as LAW's validation set
    (reward and state), then the run's network trained with the learned strategy."""
    from .. import law

    cfg = spec.config
    seed = int(cfg["seed"])
    opts = _opts(cfg["method"])
    if len(p.x_meta) == 0:
        raise ConfigError("meta_per_class: LAW uses the clean meta set as its validation set; set it > 0")
    lcfg = _law_config(cfg, opts)
    episodes = int(opts.get("episodes", 50))
    search_model_cfg = opts.get("search_model") or cfg["model"]
    if isinstance(search_model_cfg, str):
        search_model_cfg = {"name": search_model_cfg}
    search_net = build_model(search_model_cfg, p.input_shape, p.num_classes, seed)
    t0 = time.perf_counter()
    try:
        with law.LAWSearch(search_net, lcfg, seed=seed) as search:
            res = search.search(
                p.x_train, p.y_train, p.x_meta, p.y_meta, episodes, corrupted=p.corrupted, progress=progress
            )
    finally:
        search_net.close()
    search_seconds = time.perf_counter() - t0
    ep_rows = []
    for e in res.episodes:
        for s in range(e.stages):
            ep_rows.append(
                {
                    "episode": e.episode,
                    "stage": s,
                    "warmup": int(s < e.warmup_stages),
                    **{c: float(getattr(e, c)[s]) for c in law.LOG_COLUMNS},
                }
            )
    _write_csv(folder / LAW_FILE, ep_rows)

    model = build_model(cfg["model"], p.input_shape, p.num_classes, seed)
    run = law.train(
        model,
        p.x_train,
        p.y_train,
        strategy=res.strategy,
        config=lcfg,
        epochs=int(cfg["epochs"]),
        x_val=p.x_meta,
        y_val=p.y_meta,
        optimizer=build_optimizer(cfg["optimizer"]),
        seed=seed,
        corrupted=p.corrupted,
        x_test=p.x_test,
        y_test=p.y_test,
        progress=progress,
        callbacks=callbacks_for(spec, p, val_name="meta_set"),
    )
    corrupted = p.corrupted
    has_corrupted = bool(corrupted.any())
    rows: list[dict[str, Any]] = []
    for i in range(len(run.train_loss)):
        row: dict[str, Any] = {
            "epoch": i + 1,
            "train_loss": run.train_loss[i],
            "train_accuracy": run.train_accuracy[i],
            "test_loss": run.test_loss[i],
            "test_accuracy": run.test_accuracy[i],
            "meta_accuracy": run.val_accuracy[i] if i < len(run.val_accuracy) else None,
        }
        if run.epoch_weights is not None:
            w = run.epoch_weights[i]
            ok = np.isfinite(w)
            row["weight_mean"] = float(w[ok].mean()) if ok.any() else None
            if has_corrupted:
                c_ok, k_ok = ok & corrupted, ok & ~corrupted
                row["weight_mean_clean"] = float(w[k_ok].mean()) if k_ok.any() else None
                row["weight_mean_corrupted"] = float(w[c_ok].mean()) if c_ok.any() else None
        rows.append(row)
    _write_csv(folder / HISTORY_FILE, rows)
    final = _common_final(spec, p, run.trainer)
    accs = run.test_accuracy
    final["best_test_accuracy"] = float(max(accs))
    final["best_epoch"] = int(np.argmax(accs)) + 1
    final["final_train_accuracy"] = float(run.train_accuracy[-1])
    final["epochs_run"] = int(cfg["epochs"])
    final["method_spec"] = "law(" + lcfg.spec() + ")"
    sw = run.example_weights  # (stages, N)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        w_mean = np.nanmean(sw[run.warmup_stages :], axis=0) if sw.shape[0] > run.warmup_stages else sw[-1]
    final["weights"] = weight_summary(sw[-1], p.corrupted, p.y_train, p.num_classes)
    final["weights_mean_over_epochs"] = weight_summary(w_mean, p.corrupted, p.y_train, p.num_classes)
    rewards = res.rewards()
    final["law"] = {
        "episodes": int(res.episodes_completed),
        "search_seconds": search_seconds,
        "train_seconds": float(run.seconds),
        "first_rewards": rewards[: lcfg.parallel].tolist(),
        "last_rewards": rewards[-lcfg.parallel :].tolist(),
        "auc_clean_vs_corrupted": float(run.auc(p.corrupted)) if p.corrupted.any() else None,
        "search_model": search_model_cfg,
        "config": lcfg.spec(),
    }
    k_issues = label_issues_k(cfg)
    if k_issues:
        ew = run.epoch_weights if run.epoch_weights is not None else sw
        recent = [np.asarray(w, dtype=np.float64) for w in np.asarray(ew)[-k_issues:]]
        _write_label_issues(folder, run.trainer, p, recent, None)
    if cfg.get("save_weights", True):
        np.savez_compressed(
            folder / WEIGHTS_FILE,
            corrupted=p.corrupted,
            y_train=p.y_train,
            y_clean=p.y_clean,
            example_weights=np.asarray(sw[-1], dtype=np.float32),
            example_weights_mean=np.asarray(w_mean, dtype=np.float32),
            stage_weights=np.asarray(sw, dtype=np.float32),
            epoch_weights=np.asarray(run.epoch_weights, dtype=np.float32),
            train_losses=run.trainer.losses(p.x_train, p.y_train),
        )
    run.trainer.close()
    model.close()
    res.strategy.close()
    return final


# ---- the grid --------------------------------------------------------------------------------------------


def _outer_bar(total: int, enabled: bool) -> Any:
    tqdm = _tqdm() if enabled and total > 0 else None
    if tqdm is None:
        return None
    return tqdm(total=total, desc="runs", unit="run", position=0, dynamic_ncols=True)


def _result_line(r: RunResult) -> str:
    lab = r.spec.labels
    desc = f"{lab['dataset']} | {lab['condition']} | {lab['model']} | {lab['method']} | seed {r.spec.seed}"
    if r.status == "failed":
        return f"FAILED  {desc}: {r.error}"
    acc = r.final.get("test_accuracy") if r.final else None
    tag = "skipped" if r.status == "skipped" else "done   "
    return f"{tag} {desc}: test acc {acc:.4f}" + (f" ({r.seconds:.1f}s)" if r.status == "ran" else "")


def collect(experiment: Experiment, folder: Path) -> list[tuple[RunSpec, dict[str, Any]]]:
    """The finished runs of ``experiment`` (matching config) with their ``final.json``."""
    out = []
    for spec in experiment.runs:
        path = folder / spec.run_id
        if is_finished(path, spec.config):
            final = read_final(path)
            if final is not None:
                out.append((spec, final))
    return out


def write_summary(experiment: Experiment, folder: Path) -> tuple[list[SummaryRow], str]:
    """Writes ``summary.md`` and ``summary.csv`` over every finished run; returns the rows and the
    Markdown."""
    finished = collect(experiment, folder)
    rows = summarize(finished)
    md = summary_markdown(rows, experiment=experiment, options=experiment.summary)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / "summary.md", md)
    _write_atomic(folder / "summary.csv", summary_csv(rows))
    return rows, md


def _prepare_mlflow(todo: Sequence[RunSpec]) -> None:
    """Opens each MLflow store and experiment the runs log to, once, before they start.

    Parallel runs would otherwise each open a fresh local file store at the same moment (the
    callback copes with that too, by retrying). A store that cannot be opened here is left to the
    runs, each of which then fails with the error in its ``error.txt``.
    """
    targets = {(s.logging["mlflow"], s.logging.get("mlflow_experiment") or "metaweight")
               for s in todo if s.logging.get("mlflow")}
    if not targets:
        return
    try:
        from ..integrations.mlflow import prepare_experiment

        for uri, experiment in sorted(targets):
            prepare_experiment(uri, experiment)
    except Exception:  # noqa: BLE001 - each run reports its own logging error
        return


def run_experiment(
    config: str | os.PathLike[str] | Mapping[str, Any] | Experiment,
    *,
    results: str | os.PathLike[str] | None = None,
    only: Sequence[str] | Mapping[str, Any] | None = None,
    size: str | float | None = None,
    sets: Sequence[str] | Mapping[str, Any] | None = None,
    dry_run: bool = False,
    force: bool = False,
    jobs: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    ray: str | bool | None = None,
    threads: int | None = None,
    max_retries: int = 3,
) -> ExperimentReport:
    """Runs (the selected part of) an experiment grid; finished runs are skipped.

    Args:
        config: a configuration file (TOML/JSON), a dictionary, or a parsed :class:`Experiment`.
        results: the results folder (default: the configuration's ``results``, else ``results``);
            runs go to ``<results>/<name>/<run-id>/`` (``<name>-<size>`` for sizes other than full).
        only: filters ``["method=gdw,mwnet", "dataset=digits"]`` or ``{"method": ["gdw"]}``; see
            :func:`~metaweight.experiments.config.apply_filters`.
        size: ``"full"``, ``"small"``, another ``[sizes]`` name, or a scale factor.
        sets: settings applied to every run (``["epochs=5"]`` or ``{"epochs": 5}``).
        dry_run: list the runs (and whether each is finished) without running anything.
        force: run finished runs again.
        jobs: runs trained at once on threads (the native core's threads are divided among them).
            Not used with ``ray``: the cluster runs as many runs at once as its CPUs allow.
        progress: progress bars (tqdm, when installed); with ``ray``, one bar counting the runs
            finished across the cluster.
        log: where lines go (``None``: nowhere).
        ray: run each run as a task on a Ray cluster: ``"auto"`` (or True) for the cluster this
            machine belongs to, or its address ``"HOST:PORT"`` (README, "Beyond one machine: Ray").
            ``None`` (default): here, without importing Ray. The data sets are loaded here and
            shipped once through Ray's object store; each run's files are written here,
            atomically, as its task finishes.
        threads: the native threads of each run. With ``ray``, also the CPUs each run's task
            reserves (default 1). Without ``ray``, default: :func:`metaweight.get_threads` divided
            among the ``jobs``.
        max_retries: with ``ray``, how many times a run whose worker process died (killed, out of
            memory, node lost) is started again before it counts as failed.

    Returns:
        An :class:`ExperimentReport`; ``summary.md`` and ``summary.csv`` are written (not for a
        dry run) over every finished run of the experiment, also those not selected this time.

    Raises:
        InvalidArgumentError: ``threads`` or ``max_retries`` out of range, a malformed ``ray``.
        ImportError: ``ray`` given, and Ray is not installed (``pip install 'metaweight[ray]'``).
        ConnectionError: no Ray cluster at ``ray``'s address.
    """
    from ..errors import InvalidArgumentError

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidArgumentError(f"threads: expected an integer >= 1 or None, got {threads!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InvalidArgumentError(f"max_retries: expected an integer >= 0, got {max_retries!r}")
    on_ray = ray is not None and ray is not False
    if on_ray:
        from .ray_grid import import_ray, ray_address

        ray_address(ray)  # type: ignore[arg-type]  # a malformed address or no Ray: before any work
        import_ray()
    t0 = time.perf_counter()
    say = log or (lambda _s: None)
    exp = config if isinstance(config, Experiment) else load_config(config, size=size, sets=sets)
    base = Path(results) if results is not None else Path(exp.results or "results")
    folder = base / exp.folder_name
    selected = apply_filters(exp.runs, parse_filters(only))
    report = ExperimentReport(experiment=exp, folder=folder, planned=selected)
    if dry_run:
        say(f"{exp.name}: {len(selected)} of {len(exp.runs)} runs selected (results in {folder})")
        for spec in selected:
            done = is_finished(folder / spec.run_id, spec.config)
            say(f"  {'[done]' if done else '[todo]'} {spec.run_id}")
        report.seconds = time.perf_counter() - t0
        return report

    todo: list[RunSpec] = []
    for spec in selected:
        path = folder / spec.run_id
        if not force and is_finished(path, spec.config):
            report.results.append(RunResult(spec, "skipped", path, final=read_final(path)))
        else:
            todo.append(spec)
    session = None
    if on_ray and todo:
        from .ray_grid import RaySession

        session = RaySession(ray, threads or 1)  # type: ignore[arg-type]
    say(
        f"{exp.name}: {len(selected)} runs selected, {len(selected) - len(todo)} already finished, "
        f"{len(todo)} to run (results in {folder})"
        + (f" on the Ray cluster, {threads or 1} CPU(s) per run" if session is not None else "")
    )
    folder.mkdir(parents=True, exist_ok=True)
    _prepare_mlflow(todo)
    jobs = max(1, int(jobs))
    bar = _outer_bar(len(todo), progress)
    write = bar.write if bar is not None else say
    lock = threading.Lock()

    def done(r: RunResult) -> RunResult:
        with lock:
            if log is not None:
                write(_result_line(r))
            if bar is not None:
                bar.update(1)
        return r

    def one(spec: RunSpec) -> RunResult:
        path = folder / spec.run_id
        t = time.perf_counter()
        try:
            final = execute_run(spec, path, progress=progress and jobs == 1 and bar is not None)
            r = RunResult(spec, "ran", path, final=final, seconds=time.perf_counter() - t)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one failing run must not stop the grid
            msg = f"{type(e).__name__}: {e}"
            with contextlib.suppress(OSError):
                path.mkdir(parents=True, exist_ok=True)
                _write_atomic(path / ERROR_FILE, traceback.format_exc())
            r = RunResult(spec, "failed", path, error=msg, seconds=time.perf_counter() - t)
        return done(r)

    try:
        if session is not None:
            report.results.extend(session.run(todo, folder, max_retries=max_retries, done=done))
        elif not on_ray:
            import metaweight as mw

            before = mw.get_threads()
            mw.set_threads(threads if threads is not None else max(1, before // jobs))
            try:
                if jobs == 1:
                    for spec in todo:
                        report.results.append(one(spec))
                else:
                    with ThreadPoolExecutor(max_workers=jobs) as pool:
                        report.results.extend(pool.map(one, todo))
            finally:
                mw.set_threads(before)
    finally:
        if session is not None:
            session.close()
        if bar is not None:
            bar.close()
        report.summary, report.markdown = write_summary(exp, folder)
    report.seconds = time.perf_counter() - t0
    return report


def load_results(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every finished run under ``folder`` (an experiment folder, or a results folder holding
    several): dicts with ``run_id``, ``path``, ``config``, ``final``, ``labels`` (and ``history``
    (a dict of columns) when ``history.csv`` exists)."""
    root = Path(folder)
    out = []
    for final_path in sorted(root.rglob(FINAL_FILE)):
        path = final_path.parent
        try:
            config = json.loads(_read_regular_text(path / CONFIG_FILE))
            final = json.loads(_read_regular_text(final_path))
        except (OSError, ValueError):  # not a regular file, unreadable, invalid JSON or UTF-8
            continue
        if not isinstance(config, dict) or not isinstance(final, dict):
            continue
        item: dict[str, Any] = {
            "run_id": path.name,
            "path": path,
            "config": config,
            "final": final,
            "labels": final.get("labels", {}),
        }
        h = path / HISTORY_FILE
        if h.is_file():
            item["history"] = read_history(h)
        out.append(item)
    return out


def read_history(path: str | os.PathLike[str]) -> dict[str, list[float | None]]:
    """A ``history.csv`` as columns (numbers, None for empty cells)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float | None]] = {}
    for r in rows:
        for k, v in r.items():
            cols.setdefault(k, []).append(float(v) if v not in ("", None) else None)
    return cols
