"""Plots of the papers' findings, from trainers, histories, LAW logs or the runner's results.

Every function returns a :class:`matplotlib.figure.Figure` (created without pyplot, so nothing
accumulates in pyplot's figure list and no display is needed) and, with ``path=...``, also saves it
as PNG. In a notebook, a returned figure is shown as the cell's output (after ``%matplotlib
inline``). Headless, the Agg backend is selected when no backend was chosen.

- :func:`accuracy_curves`: test accuracy per epoch, one line per method (mean ± std over seeds);
- :func:`weight_functions`: MW-Net's / GDW's learned loss → weight function V;
- :func:`weight_distributions`: weights of clean vs corrupted examples (histograms or violins);
- :func:`class_weights`: GDW's class-level weights ω: mean ω by (label, class) and the non-target
  weights' distributions;
- :func:`law_loss_gap`: LAW's target-minus-reference training loss per stage, per episode;
- :func:`imbalance_error`: test error against the imbalance ratio (L2RW's Figure 2);
- :func:`confusion_matrix`: a (normalised) confusion matrix.

Inputs are flexible: a :class:`~metaweight.History`, a dictionary of columns, a run folder written
by :mod:`metaweight.experiments` (or the records of :func:`metaweight.experiments.load_results`).
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, cast

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "accuracy_curves",
    "class_weights",
    "confusion_matrix",
    "imbalance_error",
    "law_loss_gap",
    "method_color",
    "save",
    "weight_distributions",
    "weight_functions",
]

PathLike = Union[str, "os.PathLike[str]"]


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "metaweight.plots needs matplotlib: pip install matplotlib (or metaweight[plots])"
        ) from e
    if (
        "matplotlib.pyplot" not in sys.modules
        and not os.environ.get("MPLBACKEND")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
        and sys.platform.startswith("linux")
    ):
        matplotlib.use("Agg")
    return matplotlib


def _figure(width: float, height: float) -> Figure:
    _matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", dpi=100)


def save(fig: Figure, path: PathLike, dpi: int = 120) -> Path:
    """Saves ``fig`` as PNG (folders are created). Returns the path."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, format="png", facecolor="white")
    return p


def _done(fig: Figure, path: PathLike | None) -> Figure:
    if path is not None:
        save(fig, path)
    return fig


_COLORS = {
    "erm": "#4d4d4d",
    "l2rw": "#1f77b4",
    "mw-net": "#ff7f0e",
    "mwnet": "#ff7f0e",
    "gdw": "#2ca02c",
    "law": "#d62728",
    "focal": "#9467bd",
    "bootstrap": "#8c564b",
    "class-balanced": "#e377c2",
    "class_balanced": "#e377c2",
    "fine-tune": "#17becf",
    "fine_tune": "#17becf",
    "inverse": "#bcbd22",
    "cb sampling": "#e377c2",
    "class_balanced_sampling": "#e377c2",
    "hard": "#393b79",
    "random": "#9edae5",
    "self": "#c49c94",
    "unweighted": "#4d4d4d",
}
_FALLBACK = ["#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5"]


def method_color(label: str, index: int = 0) -> str:
    """A fixed colour per method (by name or label prefix), so every plot agrees."""
    key = label.lower().split("(")[0].strip()
    for k, c in _COLORS.items():
        if key == k or key.startswith(k):
            return c
    return _FALLBACK[index % len(_FALLBACK)]


# ---- inputs --------------------------------------------------------------------------------------------


def _read_csv_columns(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.items():
            cols.setdefault(k, []).append(float(v) if v not in ("", None) else np.nan)
    return {k: np.asarray(v, dtype=float) for k, v in cols.items()}


def _run_path(run: Any) -> Path | None:
    if isinstance(run, Mapping) and "path" in run:
        return Path(run["path"])
    if isinstance(run, (str, os.PathLike)):
        return Path(run)
    return None


def _columns(run: Any) -> dict[str, np.ndarray]:
    """History columns of a History, a dict of columns, a run record or a run folder / history.csv."""
    if hasattr(run, "to_dict") and hasattr(run, "epochs"):  # metaweight.History
        d = run.to_dict()
        cols = {k: np.array([np.nan if v is None else v for v in vals], dtype=float) for k, vals in d.items()}
        if "val_accuracy" in cols:
            cols.setdefault("test_accuracy", cols["val_accuracy"])
        return cols
    if isinstance(run, Mapping) and "history" in run and isinstance(run["history"], Mapping):
        run = run["history"]
    elif isinstance(run, Mapping) and "path" in run:
        run = Path(run["path"])
    if isinstance(run, (str, os.PathLike)):
        p = Path(run)
        if p.is_dir():
            p = p / "history.csv"
        return _read_csv_columns(p)
    if isinstance(run, Mapping):
        cols = {
            k: np.array([np.nan if v is None else v for v in vals], dtype=float) for k, vals in run.items()
        }
        if "val_accuracy" in cols:
            cols.setdefault("test_accuracy", cols["val_accuracy"])
        return cols
    raise TypeError(f"expected a History, a dict of columns or a run folder, got {type(run).__name__}")


def _label_of(run: Any, key: str = "method") -> str:
    if isinstance(run, Mapping):
        labels = run.get("labels") or (run.get("final") or {}).get("labels") or {}
        if key in labels:
            return str(labels[key])
    p = _run_path(run)
    if p is not None and (p / "final.json").is_file():
        import json

        labels = json.loads((p / "final.json").read_text()).get("labels", {})
        if key in labels:
            return str(labels[key])
    return str(p.name) if p is not None else "run"


def _grouped(runs: Any, key: str = "method") -> dict[str, list[Any]]:
    """``{label: [run, ...]}`` from a mapping (a value may be one run, a tuple such as ``(weights,
    mask)``, or a list of several runs, e.g. seeds) or a list of run records/folders (grouped by their
    ``labels[key]``)."""
    if isinstance(runs, Mapping) and not ("path" in runs or "history" in runs):
        out: dict[str, list[Any]] = {}
        for label, v in runs.items():
            if isinstance(v, list):  # several runs (seeds); a tuple is one (x, y) pair
                out[str(label)] = list(v)
            else:
                out[str(label)] = [v]
        return out
    out = {}
    for r in runs if isinstance(runs, Iterable) and not isinstance(runs, (str, Mapping)) else [runs]:
        out.setdefault(_label_of(r, key), []).append(r)
    return out


def _load_npz(run: Any) -> dict[str, np.ndarray]:
    p = _run_path(run)
    if p is None:
        raise TypeError(f"expected a run folder or run record, got {type(run).__name__}")
    with np.load(p / "weights.npz") as d:
        return {k: d[k] for k in d.files}


# ---- accuracy curves ----------------------------------------------------------------------------------


def accuracy_curves(
    runs: Any,
    *,
    metric: str = "test_accuracy",
    title: str | None = None,
    ylabel: str | None = None,
    path: PathLike | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Test accuracy per epoch, one line per method; several runs of a method (seeds) are drawn as
    their mean with a ±1 std band.

    Args:
        runs: ``{label: History | columns | run folder | [several of them]}``, or a list of run
            records / folders (from :func:`metaweight.experiments.load_results`), grouped by method.
        metric: the column to draw (``test_accuracy``, ``train_accuracy``, ``train_loss``, ...).
        title, ylabel: texts.
        path: also save the figure as PNG there.
        ax: draw into this axes (its figure is returned).
    """
    if ax is None:
        fig = _figure(6.4, 4.0)
        ax = fig.add_subplot()
    else:
        fig = cast("Figure", ax.figure)
    for i, (label, members) in enumerate(_grouped(runs).items()):
        curves = []
        for m in members:
            cols = _columns(m)
            if metric not in cols:
                continue
            curves.append((cols.get("epoch", np.arange(1, len(cols[metric]) + 1)), cols[metric]))
        if not curves:
            continue
        n = min(len(c[1]) for c in curves)
        x = curves[0][0][:n]
        ys = np.stack([c[1][:n] for c in curves])
        mean = np.nanmean(ys, axis=0)
        color = method_color(label, i)
        ax.plot(
            x,
            mean,
            label=f"{label}" + (f" (n={len(curves)})" if len(curves) > 1 else ""),
            color=color,
            lw=1.8,
        )
        if len(curves) > 1:
            sd = np.nanstd(ys, axis=0)
            ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.18, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or metric.replace("_", " "))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return _done(fig, path)


# ---- MW-Net / GDW weighting functions -----------------------------------------------------------------


def weight_functions(
    curves: Any,
    *,
    losses: np.ndarray | None = None,
    title: str | None = "Learned weighting function V(loss)",
    path: PathLike | None = None,
    ax: Axes | None = None,
) -> Figure:
    """The learned loss → weight function of MW-Net / GDW, one line per method.

    Args:
        curves: ``{label: Trainer | (losses, weights) | run folder/record}`` (a trainer is evaluated
            with :meth:`~metaweight.Trainer.weight_function` on ``losses``; a run folder uses the curve
            saved in its ``weights.npz``), or a list of run records / folders.
        losses: the loss grid for trainers (default ``linspace(0, 10, 200)``).
    """
    grid = np.linspace(0.0, 10.0, 200, dtype=np.float32) if losses is None else np.asarray(losses, np.float32)
    if ax is None:
        fig = _figure(6.0, 4.0)
        ax = fig.add_subplot()
    else:
        fig = cast("Figure", ax.figure)
    for i, (label, members) in enumerate(_grouped(curves).items()):
        ys = []
        xs = None
        for c in members:
            if hasattr(c, "weight_function"):
                xs, y = grid, np.asarray(c.weight_function(grid))
            elif isinstance(c, (tuple, list)) and len(c) == 2:
                xs, y = np.asarray(c[0]), np.asarray(c[1])
            else:
                d = _load_npz(c)
                if "weight_function" not in d:
                    continue
                xs, y = d["weight_function_losses"], d["weight_function"]
                if losses is not None:
                    y = np.interp(grid, xs, y)
                    xs = grid
            ys.append(y)
        if not ys or xs is None:
            continue
        n = min(len(y) for y in ys)
        y = np.mean([y[:n] for y in ys], axis=0)
        color = method_color(label, i)
        ax.plot(xs[:n], y, color=color, lw=2, label=label + (f" (mean of {len(ys)})" if len(ys) > 1 else ""))
    ax.set_xlabel("training loss of an example")
    ax.set_ylabel("weight V(loss)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _done(fig, path)


# ---- clean vs corrupted weights -----------------------------------------------------------------------


def _weights_of(item: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return np.asarray(item[0], dtype=float), np.asarray(item[1], dtype=bool)
    d = _load_npz(item)
    key = which if which in d else "example_weights"
    return np.asarray(d[key], dtype=float), np.asarray(d["corrupted"], dtype=bool)


def weight_distributions(
    weights: Any,
    *,
    kind: str = "hist",
    which: str = "example_weights_mean",
    bins: int = 40,
    normalize: bool = True,
    title: str | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Distributions of the weights of clean vs corrupted training examples, one panel per method.

    Args:
        weights: ``{label: (weights (N,), corrupted mask (N,)) | run folder/record}`` or a list of
            run records / folders (GDW: its ω at the label; LAW: its per-stage weights K).
        kind: ``"hist"`` (overlaid density histograms) or ``"violin"``.
        which: for run folders, ``"example_weights_mean"`` (mean over the epochs, default) or
            ``"example_weights"`` (the last epoch).
        normalize: divide each method's weights by their mean (weights of different methods have
            different scales: L2RW's sum to 1 per batch, MW-Net's lie in (0, 1)).
    """
    if kind not in ("hist", "violin"):
        raise ValueError(f"kind: expected 'hist' or 'violin', got {kind!r}")
    items = []
    for label, members in _grouped(weights).items():
        ws, cs = [], []
        for m in members:
            w, c = _weights_of(m, which)
            ws.append(w)
            cs.append(c)
        w, c = np.concatenate(ws), np.concatenate(cs)
        ok = np.isfinite(w)
        w, c = w[ok], c[ok]
        if normalize and w.size and np.mean(w) > 0:
            w = w / np.mean(w)
        items.append((label, w, c))
    if not items:
        raise ValueError("weights: nothing to plot")
    from .law import roc_auc

    if kind == "violin":
        fig = _figure(max(5.0, 1.5 * len(items) + 2), 4.2)
        ax = fig.add_subplot()
        pos, data, colors = [], [], []
        for i, (_label, w, c) in enumerate(items):
            for j, (sel, col) in enumerate(((~c, "#2b8cbe"), (c, "#e34a33"))):
                if sel.any():
                    pos.append(3 * i + j)
                    data.append(w[sel])
                    colors.append(col)
        parts = ax.violinplot(data, positions=pos, showmeans=True, widths=0.9)
        for body, col in zip(cast("list[Any]", parts["bodies"]), colors):
            body.set_facecolor(col)
            body.set_alpha(0.6)
        for k in ("cmeans", "cmins", "cmaxes", "cbars"):
            if k in parts:
                parts[k].set_color("#333333")
                parts[k].set_linewidth(1.0)
        ax.set_xticks([3 * i + 0.5 for i in range(len(items))])
        ax.set_xticklabels([lab for lab, _, _ in items])
        from matplotlib.patches import Patch

        ax.legend(
            handles=[Patch(color="#2b8cbe", label="clean"), Patch(color="#e34a33", label="corrupted")],
            fontsize=8,
        )
        ax.set_ylabel("weight" + (" / mean weight" if normalize else ""))
        ax.grid(alpha=0.3, axis="y")
        if title:
            ax.set_title(title)
        return _done(fig, path)

    cols = min(len(items), 4)
    rows = (len(items) + cols - 1) // cols
    fig = _figure(3.6 * cols, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (label, w, c) in zip(axes.ravel(), items):
        lo, hi = (float(np.min(w)), float(np.max(w))) if w.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1e-6
        edges = np.linspace(lo, hi, bins + 1)
        ax.hist(
            w[~c],
            bins=edges,
            density=True,
            alpha=0.55,
            color="#2b8cbe",
            label=f"clean (mean {w[~c].mean():.2f})",
        )
        if c.any():
            ax.hist(
                w[c],
                bins=edges,
                density=True,
                alpha=0.55,
                color="#e34a33",
                label=f"corrupted (mean {w[c].mean():.2f})",
            )
            auc = roc_auc(w, c) if (~c).any() else float("nan")
            ax.set_title(f"{label}  (AUC {auc:.2f})", fontsize=10)
        else:
            ax.set_title(label, fontsize=10)
        ax.set_xlabel("weight" + (" / mean" if normalize else ""))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(items) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _done(fig, path)


# ---- GDW class-level weights --------------------------------------------------------------------------


def class_weights(
    omega: Any,
    y: np.ndarray | None = None,
    *,
    y_clean: np.ndarray | None = None,
    corrupted: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = "GDW class-level weights ω",
    path: PathLike | None = None,
) -> Figure:
    """GDW's class-level weights: (left) the mean ω_{i,c} of examples with observed label i (rows)
    for every class c (columns); the diagonal is ω at the label; (right) the distributions of the
    non-target weights (c ≠ label), separately for the true class of corrupted examples (a small ω
    there means the loss suppresses the true class less) and for the other non-target classes.

    Args:
        omega: ``(N, C)`` class weights (the last epoch's ``EpochRecord.class_weights``) or a GDW run
            folder / record (its ``weights.npz``).
        y: observed labels ``(N,)`` (from the run folder when omitted).
        y_clean: true labels (to locate the true class of corrupted examples).
        corrupted: mask of corrupted labels (default ``y != y_clean``).
    """
    if not isinstance(omega, np.ndarray):
        d = _load_npz(omega)
        omega = d["class_weights"]
        y = d["y_train"] if y is None else y
        y_clean = d.get("y_clean") if y_clean is None else y_clean
        corrupted = d.get("corrupted") if corrupted is None else corrupted
    w = np.asarray(omega, dtype=float)
    if y is None:
        raise ValueError("y: the observed labels are needed")
    y = np.asarray(y, dtype=np.int64)
    c = w.shape[1]
    ok = np.isfinite(w).all(axis=1)
    w, y = w[ok], y[ok]
    if y_clean is not None:
        y_clean = np.asarray(y_clean, dtype=np.int64)[ok]
    if corrupted is not None:
        corrupted = np.asarray(corrupted, dtype=bool)[ok]
    elif y_clean is not None:
        corrupted = y != y_clean
    mean = np.full((c, c), np.nan)
    for k in range(c):
        sel = y == k
        if sel.any():
            mean[k] = w[sel].mean(axis=0)
    fig = _figure(11.0, 4.3)
    ax1, ax2 = fig.subplots(1, 2)
    im = ax1.imshow(mean, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax1, shrink=0.85, label="mean ω")
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if c <= 20:
        ax1.set_xticks(range(c))
        ax1.set_xticklabels(names, fontsize=8)
        ax1.set_yticks(range(c))
        ax1.set_yticklabels(names, fontsize=8)
    ax1.set_xlabel("class c")
    ax1.set_ylabel("observed label")
    ax1.set_title("mean ω by (label, class)", fontsize=10)

    target = np.zeros_like(w, dtype=bool)
    target[np.arange(len(y)), y] = True
    nontarget = w[~target]
    groups = [("ω at the label", w[target], "#636363")]
    if y_clean is not None and corrupted is not None and corrupted.any():
        true_cls = np.zeros_like(target)
        idx = np.flatnonzero(corrupted)
        true_cls[idx, y_clean[idx]] = True
        other = ~target & ~true_cls
        groups.append(("non-target: the true class of corrupted examples", w[true_cls], "#e34a33"))
        groups.append(("other non-target classes", w[other], "#2b8cbe"))
    else:
        groups.append(("non-target classes", nontarget, "#2b8cbe"))
    allv = np.concatenate([g[1] for g in groups if g[1].size])
    lo, hi = np.quantile(allv, 0.005), np.quantile(allv, 0.995)
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, 50)
    for name, vals, col in groups:
        if vals.size:
            ax2.hist(
                np.clip(vals, lo, hi),
                bins=edges,
                density=True,
                alpha=0.5,
                color=col,
                label=f"{name} (mean {vals.mean():.3f})",
            )
    ax2.set_xlabel("ω")
    ax2.set_ylabel("density")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    ax2.set_title("distribution of class-level weights", fontsize=10)
    if title:
        fig.suptitle(title)
    return _done(fig, path)


# ---- LAW ----------------------------------------------------------------------------------------------


def _episode_table(episodes: Any) -> dict[str, np.ndarray]:
    """``(episodes, stages)`` arrays of every log column, from EpisodeLogs, a SearchResult, a LAW
    run folder/record (``law_episodes.csv``) or such a CSV."""
    if hasattr(episodes, "episodes") and hasattr(episodes, "stages"):  # SearchResult
        episodes = episodes.episodes
    if isinstance(episodes, (list, tuple)) and episodes and hasattr(episodes[0], "loss_gap"):
        from .law import LOG_COLUMNS

        out = {k: np.stack([np.asarray(getattr(e, k), dtype=float) for e in episodes]) for k in LOG_COLUMNS}
        out["episode"] = np.array([e.episode for e in episodes])
        out["warmup_stages"] = np.array([episodes[0].warmup_stages])
        return out
    p = _run_path(episodes)
    if p is None:
        raise TypeError(
            f"expected EpisodeLogs, a SearchResult or a LAW run folder, got {type(episodes).__name__}"
        )
    if p.is_dir():
        p = p / "law_episodes.csv"
    cols = _read_csv_columns(p)
    eps = np.unique(cols["episode"]).astype(int)
    stages = int(np.nanmax(cols["stage"])) + 1
    out = {}
    for k, v in cols.items():
        if k in ("episode", "stage"):
            continue
        a = np.full((len(eps), stages), np.nan)
        ei = np.searchsorted(eps, cols["episode"].astype(int))
        a[ei, cols["stage"].astype(int)] = v
        out[k] = a
    out["episode"] = eps
    out["warmup_stages"] = np.array([int(np.nansum(out["warmup"][0]))]) if "warmup" in out else np.array([0])
    return out


def law_loss_gap(
    episodes: Any,
    *,
    title: str | None = "LAW: target − reference training loss per stage",
    path: PathLike | None = None,
) -> Figure:
    """LAW's per-stage logs: (left) the mean training loss of the weighted target network minus that
    of the unweighted reference, per stage, one line per episode coloured from early (light) to late
    (dark) episodes; (right) the mean weight K of corrupted vs clean examples per stage, averaged over
    the last quarter of the episodes; (bottom-right inset) the total reward per episode.

    Args:
        episodes: a :class:`~metaweight.law.SearchResult`, its ``episodes`` (list of
            :class:`~metaweight.law.EpisodeLog`), or a LAW run folder / record / ``law_episodes.csv``.
    """
    _matplotlib()
    from matplotlib import colormaps

    t = _episode_table(episodes)
    gap = t["loss_gap"]
    e, s = gap.shape
    stages = np.arange(1, s + 1)
    fig = _figure(11.0, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    cmap = colormaps["viridis_r"]
    for i in range(e):
        ax1.plot(stages, gap[i], color=cmap(0.15 + 0.85 * i / max(e - 1, 1)), lw=1, alpha=0.8)
    ax1.plot(
        stages,
        np.nanmean(gap[-max(1, e // 4) :], axis=0),
        color="#d62728",
        lw=2.5,
        label="mean, last quarter",
    )
    ax1.axhline(0, color="black", lw=0.8)
    ax1.set_xlabel("stage")
    ax1.set_ylabel("loss(target) − loss(reference)")
    ax1.set_title(f"loss gap per stage ({e} episodes, light → dark)", fontsize=10)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    last = slice(e - max(1, e // 4), e)
    wc = t.get("weight_corrupted")
    wk = t.get("weight_clean")
    if wc is not None and wk is not None and np.isfinite(wc).any():
        ax2.plot(stages, np.nanmean(wk[last], axis=0), "o-", color="#2b8cbe", label="clean")
        ax2.plot(stages, np.nanmean(wc[last], axis=0), "o-", color="#e34a33", label="corrupted")
        ax2.set_ylabel("mean weight K")
        ax2.set_title("weights per stage (last quarter of episodes)", fontsize=10)
    else:
        ax2.plot(
            stages, np.nanmean(t["weight_mean"][last], axis=0), "o-", color="#636363", label="all examples"
        )
        ax2.set_ylabel("mean weight K")
    ax2.set_xlabel("stage")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="upper left")
    rewards = np.nansum(t["reward"], axis=1)
    inset = ax2.inset_axes([0.62, 0.1, 0.35, 0.32])
    inset.plot(np.arange(e), rewards, color="#555555", lw=1)
    inset.set_title("total reward / episode", fontsize=7)
    inset.tick_params(labelsize=6)
    if title:
        fig.suptitle(title)
    return _done(fig, path)


# ---- imbalance (L2RW Figure 2) -------------------------------------------------------------------------


def imbalance_error(
    results: Any,
    *,
    x: str = "proportion",
    title: str | None = "MNIST 4 vs 9: test error against class imbalance",
    path: PathLike | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Test error against the imbalance, one line per method (mean ± std over seeds), as in L2RW's
    Figure 2.

    Args:
        results: ``{method: (ratios, mean_errors, std_errors)}`` (std may be omitted), or run records /
            folders of ``mnist-4v9`` runs (their ``condition.ratio`` and final test error).
        x: ``"proportion"``: the fraction of the dominating class, ratio / (1 + ratio) (the paper's
            axis); ``"ratio"``: majority : minority on a log axis.
    """
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if isinstance(results, Mapping) and not ("path" in results or "final" in results):
        for label, v in results.items():
            r = np.asarray(v[0], dtype=float)
            m = np.asarray(v[1], dtype=float)
            sd = np.asarray(v[2], dtype=float) if len(v) > 2 else np.zeros_like(m)
            series[str(label)] = (r, m, sd)
    else:
        import json

        acc: dict[str, dict[float, list[float]]] = {}
        for rec in results:
            if isinstance(rec, Mapping) and "final" in rec:
                cfg, final = rec["config"], rec["final"]
            else:
                p = Path(rec)
                cfg = json.loads((p / "config.json").read_text())
                final = json.loads((p / "final.json").read_text())
            ratio = cfg.get("condition", {}).get("ratio")
            if ratio is None:
                continue
            label = (final.get("labels") or {}).get("method") or cfg["method"]["name"]
            acc.setdefault(label, {}).setdefault(float(ratio), []).append(1.0 - float(final["test_accuracy"]))
        for label, by in acc.items():
            rs = np.array(sorted(by))
            series[label] = (
                rs,
                np.array([np.mean(by[r]) for r in rs]),
                np.array([np.std(by[r], ddof=1) if len(by[r]) > 1 else 0.0 for r in rs]),
            )
    if ax is None:
        fig = _figure(6.0, 4.0)
        ax = fig.add_subplot()
    else:
        fig = cast("Figure", ax.figure)
    for i, (label, (r, m, sd)) in enumerate(series.items()):
        xs = r / (1.0 + r) if x == "proportion" else r
        color = method_color(label, i)
        ax.errorbar(xs, 100 * m, yerr=100 * sd, marker="o", capsize=3, color=color, label=label, lw=1.8)
    if x == "proportion":
        ax.set_xlabel("proportion of the dominating class")
    else:
        ax.set_xscale("log")
        ax.set_xlabel("imbalance ratio (majority : minority)")
    ax.set_ylabel("test error (%)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return _done(fig, path)


# ---- confusion matrix ----------------------------------------------------------------------------------


def confusion_matrix(
    cm: Any,
    class_names: Sequence[str] | None = None,
    *,
    normalize: bool = True,
    title: str | None = None,
    path: PathLike | None = None,
    ax: Axes | None = None,
) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted), normalised per row by default.

    Args:
        cm: ``(C, C)`` counts (:func:`metaweight.confusion_matrix`) or a run folder / record (its
            ``final.json``).
    """
    if not isinstance(cm, np.ndarray) and not (
        isinstance(cm, (list, tuple)) and cm and isinstance(cm[0], (list, tuple, np.ndarray))
    ):
        import json

        if isinstance(cm, Mapping) and "final" in cm:
            final = cm["final"]
        else:
            p = _run_path(cm)
            assert p is not None
            final = json.loads((p / "final.json").read_text())
        if title is None:
            lab = final.get("labels", {})
            title = " | ".join(str(lab[k]) for k in ("dataset", "condition", "method") if k in lab) or None
        class_names = class_names or final.get("class_names")
        cm = final["confusion_matrix"]
    m = np.asarray(cm, dtype=float)
    c = m.shape[0]
    shown = m / np.maximum(m.sum(axis=1, keepdims=True), 1) if normalize else m
    if ax is None:
        fig = _figure(max(4.0, 0.45 * c + 2.2), max(3.6, 0.45 * c + 1.6))
        ax = fig.add_subplot()
    else:
        fig = cast("Figure", ax.figure)
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, shrink=0.85)
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    ax.set_xticks(range(c))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_yticks(range(c))
    ax.set_yticklabels(names, fontsize=8)
    if c <= 12:
        for i in range(c):
            for j in range(c):
                v = shown[i, j]
                ax.text(
                    j,
                    i,
                    f"{v:.2f}" if normalize else f"{int(v)}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > 0.6 * (1 if normalize else shown.max()) else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)
    return _done(fig, path)
