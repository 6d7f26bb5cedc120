"""Experiment runner: grids of runs from a TOML/JSON configuration, results on disk, summaries.

Command line::

    python -m metaweight.experiments examples/configs/readme_table.toml
    metaweight-experiments CONFIG [--results DIR] [--only method=gdw,mwnet] [--size small|full|0.25]
                                  [--dry-run] [--force] [--jobs 2] [--set epochs=5]
                                  [--ray [auto|HEAD:PORT]] [--threads N]

From Python::

    from metaweight.experiments import run_experiment, load_results
    report = run_experiment("examples/configs/noisy_digits.toml", size="small")
    print(report.markdown)            # also <results>/<name>/summary.md and summary.csv
    runs = load_results(report.folder)

Every run is written to ``<results>/<experiment>/<run-id>/`` (``config.json``, ``history.csv``,
``final.json``, ``weights.npz``); re-running skips the runs whose ``final.json`` exists and whose
``config.json`` matches. ``run_experiment(..., ray="HEAD:PORT")`` (``--ray``) runs each run as a task
on a Ray cluster (:mod:`metaweight.experiments.ray_grid`; README, "Beyond one machine: Ray"). The
configuration format is described in
:mod:`metaweight.experiments.config` and ``examples/configs/reference.toml`` (every key, commented).
"""

from .config import DEFAULTS, ConfigError, Experiment, RunSpec, apply_filters, load_config, parse_filters
from .datasets import Prepared, mnist_directory, prepare
from .runner import (
    ExperimentReport,
    RunResult,
    build_method,
    build_model,
    build_optimizer,
    build_schedule,
    collect,
    execute_run,
    load_results,
    read_history,
    run_experiment,
    weight_summary,
    write_summary,
)
from .summary import SummaryRow, summarize, summary_csv, summary_markdown

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "Experiment",
    "ExperimentReport",
    "Prepared",
    "RunResult",
    "RunSpec",
    "SummaryRow",
    "apply_filters",
    "build_method",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "collect",
    "execute_run",
    "load_config",
    "load_results",
    "mnist_directory",
    "parse_filters",
    "prepare",
    "read_history",
    "run_experiment",
    "summarize",
    "summary_csv",
    "summary_markdown",
    "weight_summary",
    "write_summary",
]
