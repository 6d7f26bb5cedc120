"""``python -m metaweight.experiments CONFIG [options]`` (also the ``metaweight-experiments`` script)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import ConfigError

EPILOG = """\
examples:
  python -m metaweight.experiments examples/configs/readme_table.toml
  python -m metaweight.experiments examples/configs/noisy_digits.toml --size small --only method=gdw,mwnet
  python -m metaweight.experiments examples/configs/l2rw_ratio.toml --dry-run
  python -m metaweight.experiments CONFIG --summary-only       # rewrite summary.md/csv from the results
  python -m metaweight.experiments CONFIG --ray HEAD:6379      # each run a task on a Ray cluster

--only KEY=VALUE[,VALUE...] (repeatable, all must match): KEY is dataset, condition, model, method
(name or label, case-insensitive), seed, run (a substring of the run id) or a dotted setting such as
condition.noise or method.lr.
--size: full (default), small (the configuration's [sizes.small], else epochs x 0.1), another name
from [sizes], or a scale factor for the epochs (e.g. 0.25). Results of other sizes go to
<results>/<name>-<size>/ so they never mix with the full runs.
"""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="metaweight-experiments",
        description="Run a grid of metaweight experiments from a TOML or JSON configuration.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("config", nargs="+", help="configuration file(s), .toml or .json")
    ap.add_argument(
        "--results", default=None, help="results folder (default: the config's `results`, else ./results)"
    )
    ap.add_argument("--only", action="append", default=[], metavar="KEY=VALUE", help="run only matching runs")
    ap.add_argument("--size", default=None, help="full | small | a [sizes] name | a scale factor")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of every run (value parsed as JSON), e.g. --set epochs=5",
    )
    ap.add_argument(
        "--label-issues",
        nargs="?",
        const=5,
        type=int,
        default=None,
        metavar="K",
        help="write label_issues.csv per run, ranked by the mean weight of the last K epochs (default 5); "
        "the same as --set label_issues=K",
    )
    ap.add_argument("--dry-run", action="store_true", help="list the runs and whether they are finished")
    ap.add_argument("--force", action="store_true", help="run finished runs again")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once (threads; default 1)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="metaweight.set_threads(N) before running; with --ray, each run's threads and the CPUs its "
        "Ray task reserves (default 1)",
    )
    ap.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="auto|ADDRESS",
        help="run each run as a task on a Ray cluster: auto (the cluster of this machine, RAY_ADDRESS) "
        "or HEAD:PORT; needs pip install 'metaweight[ray]'",
    )
    ap.add_argument("--summary-only", action="store_true", help="only rewrite summary.md/summary.csv")
    ap.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
    ap.add_argument(
        "--tensorboard", default=None, metavar="DIR",
        help="also write TensorBoard event files, each run to DIR/<experiment>/<run-id>/ (needs tensorboardX); "
        "replaces the config's [logging] tensorboard")
    ap.add_argument(
        "--mlflow", default=None, metavar="URI",
        help="also log each run to MLflow: a folder (a local file store) or a tracking URI (needs mlflow-skinny); "
        "replaces the config's [logging] mlflow")
    args = ap.parse_args(argv)

    import metaweight as mw

    from .config import load_config
    from .runner import run_experiment, write_summary

    if args.threads is not None and args.ray is None:
        mw.set_threads(args.threads)
    status = 0
    for path in args.config:
        try:
            sets = list(args.sets)
            if args.label_issues is not None:
                sets.append(f"label_issues={args.label_issues}")
            logging = {k: v for k, v in (("tensorboard", args.tensorboard), ("mlflow", args.mlflow)) if v}
            exp = load_config(path, size=args.size, sets=sets, logging=logging)
            if args.summary_only:
                from pathlib import Path

                folder = Path(args.results or exp.results or "results") / exp.folder_name
                _rows, md = write_summary(exp, folder)
                print(md)
                continue
            report = run_experiment(
                exp,
                results=args.results,
                only=args.only,
                dry_run=args.dry_run,
                force=args.force,
                jobs=args.jobs,
                progress=not args.quiet,
                log=None if args.quiet else print,
                ray=args.ray,
                threads=args.threads if args.ray is not None else None,
            )
        except (ConfigError, FileNotFoundError) as e:
            print(f"error: {e}" if isinstance(e, ConfigError) else f"error: {path}: {e}", file=sys.stderr)
            status = 2
            continue
        except (ImportError, ConnectionError, mw.InvalidArgumentError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; finished runs are kept and skipped next time", file=sys.stderr)
            return 130
        if args.dry_run:
            continue
        print()
        print(report.markdown)
        print(
            f"{report.ran} ran, {report.skipped} skipped, {report.failed} failed in {report.seconds:.1f}s; "
            f"summary: {report.folder / 'summary.md'}"
        )
        if report.failed:
            status = max(status, 1)
            for r in report.results:
                if r.status == "failed":
                    print(f"  failed: {r.run_id}: {r.error} (see {r.path / 'error.txt'})", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
