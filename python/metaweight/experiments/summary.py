"""Summaries of finished runs: mean ± std over seeds, as Markdown (methods as columns) and CSV."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .config import Experiment, RunSpec

__all__ = ["SummaryRow", "summarize", "summary_csv", "summary_markdown"]

METRICS = ("test_accuracy", "test_error", "best_test_accuracy", "test_loss")


@dataclass
class SummaryRow:
    """One group of runs that differ only in their seed.

    ``mean`` and ``std`` are of ``test_accuracy`` over the seeds (``std``: sample standard deviation,
    ddof = 1; 0 for a single seed). ``error_mean``/``error_std`` are of the test error (1 − accuracy).
    """

    dataset: str
    condition: str
    model: str
    method: str
    variant: str
    n: int
    mean: float
    std: float
    error_mean: float
    error_std: float
    values: list[float]
    seeds: list[int]
    time_mean: float
    weight_clean: float | None = None
    weight_corrupted: float | None = None
    weight_auc: float | None = None
    group: str = ""
    run_ids: list[str] = field(default_factory=list)

    def stat(self, metric: str) -> tuple[float, float]:
        if metric == "test_error":
            return self.error_mean, self.error_std
        return self.mean, self.std


def _std(v: np.ndarray) -> float:
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _mean_or_none(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def summarize(finished: Sequence[tuple[RunSpec, Mapping[str, Any]]]) -> list[SummaryRow]:
    """Groups finished runs by their settings except the seed (in the order of first appearance)."""
    groups: dict[str, list[tuple[RunSpec, Mapping[str, Any]]]] = {}
    for spec, final in finished:
        groups.setdefault(spec.group, []).append((spec, final))
    rows = []
    for key, members in groups.items():
        members = sorted(members, key=lambda m: m[0].seed)
        spec0 = members[0][0]
        acc = np.array([float(f["test_accuracy"]) for _, f in members])

        def wstat(f: Mapping[str, Any], part: str) -> Any:
            w = f.get("weights_mean_over_epochs") or f.get("weights") or {}
            if part == "auc":
                return w.get("auc_clean_vs_corrupted")
            s = w.get(part)
            return s.get("mean") if isinstance(s, Mapping) else None

        rows.append(
            SummaryRow(
                dataset=spec0.labels["dataset"],
                condition=spec0.labels["condition"],
                model=spec0.labels["model"],
                method=spec0.labels["method"],
                variant=spec0.labels.get("variant", ""),
                n=len(members),
                mean=float(acc.mean()),
                std=_std(acc),
                error_mean=float((1 - acc).mean()),
                error_std=_std(1 - acc),
                values=acc.tolist(),
                seeds=[m[0].seed for m in members],
                time_mean=float(np.mean([float(f.get("time_seconds", 0.0)) for _, f in members])),
                weight_clean=_mean_or_none([wstat(f, "clean") for _, f in members]),
                weight_corrupted=_mean_or_none([wstat(f, "corrupted") for _, f in members]),
                weight_auc=_mean_or_none([wstat(f, "auc") for _, f in members]),
                group=key,
                run_ids=[m[0].run_id for m in members],
            )
        )
    return rows


def _fmt(mean: float, std: float, n: int, percent: bool, decimals: int) -> str:
    k = 100.0 if percent else 1.0
    if n > 1:
        return f"{mean * k:.{decimals}f} ± {std * k:.{decimals}f}"
    return f"{mean * k:.{decimals}f}"


def summary_markdown(
    rows: Sequence[SummaryRow],
    *,
    experiment: Experiment | None = None,
    options: Mapping[str, Any] | None = None,
) -> str:
    """A Markdown table: one row per (dataset, condition[, model][, variant]), one column per method,
    cells ``mean ± std`` over seeds (the best mean of each row in bold).

    Options (the configuration's ``[summary]`` table): ``metric`` (``"test_accuracy"``, default, or
    ``"test_error"``), ``percent`` (default true), ``decimals`` (default 1), ``title``, ``layout``
    (``"methods_as_columns"``, default, or ``"methods_as_rows"``: one row per method, one column per
    setting, the best of each column in bold; easier to read with many methods).
    """
    opts = dict(options or {})
    metric = str(opts.get("metric", "test_accuracy"))
    if metric not in ("test_accuracy", "test_error"):
        metric = "test_accuracy"
    percent = bool(opts.get("percent", True))
    decimals = int(opts.get("decimals", 1))
    name = experiment.name if experiment is not None else "experiment"
    what = "test accuracy" if metric == "test_accuracy" else "test error"
    unit = " (%)" if percent else ""
    ns = sorted({r.n for r in rows})
    nseeds = (f"{ns[0]} seed" + ("s" if ns[0] != 1 else "")) if len(ns) == 1 else "seeds (n per cell)"
    title = opts.get("title") or f"{name}: {what}{unit} after the last epoch, mean ± std over {nseeds}"
    lines = [f"### {title}", ""]
    if not rows:
        return "\n".join(lines + ["(no finished runs)", ""])
    show_model = len({r.model for r in rows}) > 1
    show_variant = any(r.variant for r in rows)
    methods: list[str] = []
    for r in rows:
        if r.method not in methods:
            methods.append(r.method)
    table: dict[tuple[str, ...], dict[str, SummaryRow]] = {}
    for r in rows:
        key = (
            (r.dataset, r.condition)
            + ((r.model,) if show_model else ())
            + ((r.variant,) if show_variant else ())
        )
        table.setdefault(key, {})[r.method] = r
    head = (
        ["dataset", "condition"] + (["model"] if show_model else []) + (["variant"] if show_variant else [])
    )
    if str(opts.get("layout", "methods_as_columns")) == "methods_as_rows":
        lines.extend(_method_rows(table, methods, metric, percent, decimals, len(ns) > 1))
        lines.extend(_weights_table(rows, table, head, methods))
        return "\n".join(lines)
    lines.append("| " + " | ".join(head + methods) + " |")
    lines.append("|" + "|".join(["---"] * len(head) + [":---:"] * len(methods)) + "|")
    for key, cells in table.items():
        stats = {m: cells[m].stat(metric)[0] for m in cells}
        best = None
        if len(stats) > 1:
            best = (max if metric == "test_accuracy" else min)(stats.values())
        out = list(key)
        for m in methods:
            r = cells.get(m)
            if r is None:
                out.append("–")
                continue
            mean, std = r.stat(metric)
            s = _fmt(mean, std, r.n, percent, decimals)
            if len(ns) > 1:
                s += f" (n={r.n})"
            if best is not None and round(mean, 6) == round(best, 6):
                s = f"**{s}**"
            out.append(s)
        lines.append("| " + " | ".join(out) + " |")
    lines.append("")
    lines.extend(_weights_table(rows, table, head, methods))
    return "\n".join(lines)


def _method_rows(
    table: Mapping[tuple[str, ...], Mapping[str, SummaryRow]],
    methods: list[str],
    metric: str,
    percent: bool,
    decimals: int,
    show_n: bool,
) -> list[str]:
    """The main table transposed: a row per method, a column per setting (best per column bold)."""
    keys = list(table)
    lines = [
        "| method | " + " | ".join(" / ".join(k) for k in keys) + " |",
        "|---|" + "|".join([":---:"] * len(keys)) + "|",
    ]
    best: dict[tuple[str, ...], float | None] = {}
    for key in keys:
        stats = [c.stat(metric)[0] for c in table[key].values()]
        best[key] = (max if metric == "test_accuracy" else min)(stats) if len(stats) > 1 else None
    for m in methods:
        out = [m]
        for key in keys:
            r = table[key].get(m)
            if r is None:
                out.append("–")
                continue
            mean, std = r.stat(metric)
            cell = _fmt(mean, std, r.n, percent, decimals)
            if show_n:
                cell += f" (n={r.n})"
            b = best[key]
            if b is not None and round(mean, 6) == round(b, 6):
                cell = f"**{cell}**"
            out.append(cell)
        lines.append("| " + " | ".join(out) + " |")
    lines.append("")
    return lines


def _weights_table(
    rows: Sequence[SummaryRow],
    table: Mapping[tuple[str, ...], Mapping[str, SummaryRow]],
    head: list[str],
    methods: list[str],
) -> list[str]:
    """Where labels were corrupted: how well each weighting method's weights separate clean from
    corrupted examples (ROC AUC of the per-example weight averaged over the epochs; 0.5 = none)."""
    weighted = [
        m
        for m in methods
        if any(r.method == m and r.weight_auc is not None and abs(r.weight_auc - 0.5) > 1e-9 for r in rows)
    ]
    keys = [k for k, cells in table.items() if any(c.weight_auc is not None for c in cells.values())]
    if not weighted or not keys:
        return []
    lines = [
        (
            "Clean vs corrupted training examples: ROC AUC of each example's weight (mean over the epochs) "
            "as a score for a clean label, mean over seeds (1 = every corrupted example weighs less, 0.5 = "
            "no separation); in parentheses the mean weight of corrupted / clean examples."
        ),
        "",
        "| " + " | ".join(head + weighted) + " |",
        "|" + "|".join(["---"] * len(head) + [":---:"] * len(weighted)) + "|",
    ]
    for key in keys:
        out = list(key)
        for m in weighted:
            r = table[key].get(m)
            if r is None or r.weight_auc is None:
                out.append("–")
                continue
            ratio = ""
            if r.weight_clean and r.weight_corrupted is not None and r.weight_clean > 0:
                ratio = f" ({r.weight_corrupted / r.weight_clean:.2f})"
            out.append(f"{r.weight_auc:.3f}{ratio}")
        lines.append("| " + " | ".join(out) + " |")
    lines.append("")
    return lines


CSV_COLUMNS = (
    "dataset",
    "condition",
    "model",
    "method",
    "variant",
    "n_seeds",
    "mean_test_accuracy",
    "std_test_accuracy",
    "mean_test_error",
    "std_test_error",
    "min_test_accuracy",
    "max_test_accuracy",
    "seeds",
    "test_accuracies",
    "mean_time_s",
    "mean_weight_clean",
    "mean_weight_corrupted",
    "weight_auc",
    "group",
)


def summary_csv(rows: Sequence[SummaryRow]) -> str:
    """The summary as CSV, one line per group (std: sample standard deviation over seeds)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)

    def num(v: float | None) -> str:
        return "" if v is None or not math.isfinite(v) else repr(float(v))

    for r in rows:
        w.writerow(
            [
                r.dataset,
                r.condition,
                r.model,
                r.method,
                r.variant,
                r.n,
                num(r.mean),
                num(r.std),
                num(r.error_mean),
                num(r.error_std),
                num(min(r.values)),
                num(max(r.values)),
                " ".join(str(s) for s in r.seeds),
                " ".join(repr(v) for v in r.values),
                num(r.time_mean),
                num(r.weight_clean),
                num(r.weight_corrupted),
                num(r.weight_auc),
                r.group,
            ]
        )
    return buf.getvalue()
