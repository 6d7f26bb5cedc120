"""Suspect labels from meta-reweighting runs (`mw.label_issues`) against cleanlab's `find_label_issues`.

For each data set (digits; MNIST t10k), noise (40% uniform, 40% flip) and seed: a clean meta set of
10 examples per class (`conditions.meta_split`), the rest corrupted; then

- L2RW, MW-Net, GDW: the MLP (256-256 digits, 512-512 MNIST) trained with `fit(record_weights=True)`,
  SGD momentum 0.9, wd 5e-4, lr 0.03 (L2RW, MW-Net) or 0.1 (GDW), 40 epochs digits / 30 MNIST,
  x0.1 at 60% and 85%; `mw.label_issues(trainer, y, history=h, x=x)` (mean weight over every epoch;
  the JSON also holds the last 5 epochs' mean);
- LAW: `LAWSearch` on an MLP-100 (`--law-episodes` episodes of 10 epochs, 10 stages, parallel 2,
  the meta set as LAW's validation set), then `strategy.train` of the run's MLP (lr 0.1);
- cleanlab: out-of-fold predicted probabilities of the same MLP trained by ERM (lr 0.1, same
  schedule), 5 stratified folds; `cleanlab.filter.find_label_issues` with default settings (its
  flagged set: precision/recall of that set), and the ranking by `rank_by_kind="self_confidence"`
  (`cleanlab.rank.get_label_quality_scores`) for precision/recall at k and the AUC.

Metrics against the known corruption mask: precision and recall at k = the true number of corrupted
labels, ROC AUC of the suspicion score, and the share of corrupted labels whose suggested label is
the true class (`suggest`).

Usage:
    python benchmarks/label_issues.py [--datasets digits,mnist] [--noises uniform,flip] [--seeds 0]
        [--methods l2rw,mwnet,gdw,law,cleanlab] [--law-episodes 16] [--json out.json]
    python benchmarks/label_issues.py --table benchmarks/results_label_issues.json   # the README table

With --json, finished (dataset, noise, seed, method) rows in the file are kept and skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import metaweight as mw
import numpy as np
from metaweight import conditions, data, law
from metaweight.label_issues import LabelIssues

MNIST = "/work/shared/data/mnist-t10k"


def load(name: str) -> Any:
    if name == "digits":
        return data.load_digits(flatten=True, seed=0), (256, 256), 40
    if name == "mnist":
        return data.load_mnist(MNIST, flatten=True, seed=0), (512, 512), 30
    raise SystemExit(f"unknown data set {name!r}")


def make_trainer(d: int, hidden: tuple[int, ...], c: int, lr: float, epochs: int, method: Any, seed: int) -> Any:
    return mw.Trainer(
        mw.mlp(d, hidden=hidden, num_classes=c, seed=seed),
        mw.SGD(lr=lr, momentum=0.9, weight_decay=5e-4),
        mw.MultiStep([round(0.6 * epochs), round(0.85 * epochs)]),
        method=method,
        seed=seed,
    )


def scores_row(li: LabelIssues, corrupted: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    ev = li.evaluate(corrupted)
    return {"precision": ev["precision"], "recall": ev["recall"], "auc": ev["auc"], "k": ev["k"],
            "suggest": li.suggestion_accuracy(y_true, corrupted)}


def run_meta(name: str, x: np.ndarray, y: np.ndarray, xm: np.ndarray, ym: np.ndarray, corrupted: np.ndarray,
             y_true: np.ndarray, hidden: tuple[int, ...], c: int, epochs: int, seed: int, ds: Any) -> dict[str, Any]:
    method = {"l2rw": mw.L2RW(), "mwnet": mw.MWNet(), "gdw": mw.GDW()}[name]
    lr = 0.03 if name in ("l2rw", "mwnet") else 0.1
    tr = make_trainer(x.shape[1], hidden, c, lr, epochs, method, seed)
    h = tr.fit(x, y, epochs=epochs, meta=(xm, ym), record_weights=True, progress=False)
    li = mw.label_issues(tr, y, history=h, x=x)
    li5 = mw.label_issues(tr, y, history=h, x=x, last=5)
    row = scores_row(li, corrupted, y_true)
    r5 = scores_row(li5, corrupted, y_true)
    row.update({f"{k}_last5": v for k, v in r5.items() if k != "k"})
    row["test_accuracy"] = tr.evaluate(ds.x_test, ds.y_test)["accuracy"]
    tr.close()
    return row


def run_law(x: np.ndarray, y: np.ndarray, xm: np.ndarray, ym: np.ndarray, corrupted: np.ndarray,
            y_true: np.ndarray, hidden: tuple[int, ...], c: int, epochs: int, seed: int, episodes: int,
            ds: Any) -> dict[str, Any]:
    cfg = law.LAWConfig(stages=10, epochs=10, parallel=2, lr=0.1, momentum=0.9, weight_decay=5e-4,
                        lr_milestones=(0.6, 0.85), lr_decay=0.1)
    with law.LAWSearch(f"mlp(hidden=100, classes={c})", cfg, seed=seed) as search:
        res = search.search(x, y, xm, ym, episodes, progress=False, example_weights=False)
        strategy = res.strategy
    net = mw.mlp(x.shape[1], hidden=hidden, num_classes=c, seed=seed)
    run = strategy.train(net, x, y, config=cfg, epochs=epochs, x_val=xm, y_val=ym, seed=seed)
    li = mw.label_issues(run, y, x=x)
    li5 = mw.label_issues(run, y, x=x, last=5)
    row = scores_row(li, corrupted, y_true)
    r5 = scores_row(li5, corrupted, y_true)
    row.update({f"{k}_last5": v for k, v in r5.items() if k != "k"})
    row["test_accuracy"] = run.trainer.evaluate(ds.x_test, ds.y_test)["accuracy"]
    return row


def run_cleanlab(x: np.ndarray, y: np.ndarray, corrupted: np.ndarray, y_true: np.ndarray,
                 hidden: tuple[int, ...], c: int, epochs: int, seed: int) -> dict[str, Any]:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    rng = np.random.default_rng(seed)
    folds = np.empty(len(y), dtype=np.int64)
    for k in range(c):  # stratified 5 folds
        idx = np.flatnonzero(y == k)
        folds[rng.permutation(idx)] = np.arange(len(idx)) % 5
    probs = np.zeros((len(y), c))
    for f in range(5):
        tr_idx, te_idx = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        tr = make_trainer(x.shape[1], hidden, c, 0.1, epochs, mw.ERM(), seed + f)
        tr.fit(x[tr_idx], y[tr_idx], epochs=epochs, progress=False)
        probs[te_idx] = tr.predict_proba(x[te_idx])
        tr.close()
    flagged = find_label_issues(y, probs)
    quality = get_label_quality_scores(y, probs, method="self_confidence")
    order = np.argsort(quality, kind="mergesort")  # lowest quality = most suspect first
    n = len(y)
    score = np.empty(n)
    score[order] = 1.0 - np.arange(n) / n
    suggested = probs.argmax(axis=1)
    li = LabelIssues(order.astype(np.int64), y[order], suggested[order], score[order], quality[order])
    row = scores_row(li, corrupted, y_true)
    nf = int(flagged.sum())
    tp = int((flagged & corrupted).sum())
    row.update({"flagged": nf, "flagged_precision": tp / max(nf, 1), "flagged_recall": tp / int(corrupted.sum())})
    row["oof_accuracy"] = float((suggested == y_true).mean())
    return row


NAMES = {"l2rw": "L2RW", "mwnet": "MW-Net", "gdw": "GDW", "law": "LAW", "cleanlab": "cleanlab (ERM, 5-fold)"}


def table(path: str) -> str:
    """The README table: precision@k / AUC / suggested-label accuracy, mean over the seeds."""
    with open(path) as f:
        rows = json.load(f)["rows"]
    cells = sorted({(r["dataset"], r["noise"]) for r in rows}, key=lambda c: (c[0] != "digits", c[1] != "uniform"))
    seeds = sorted({r["seed"] for r in rows})
    out = ["| method | " + " | ".join(f"{d} / {n} 40%" for d, n in cells) + " |",
           "|---|" + ":---:|" * len(cells)]
    for m in NAMES:
        line = [NAMES[m]]
        for d, n in cells:
            rs = [r for r in rows if (r["dataset"], r["noise"], r["method"]) == (d, n, m)]
            if not rs:
                line.append("–")
                continue
            p, a, s = (float(np.mean([r[k] for r in rs])) for k in ("precision", "auc", "suggest"))
            line.append(f"{p:.2f} / {a:.2f} / {s:.2f}")
        out.append("| " + " | ".join(line) + " |")
    out.append(f"\n(seeds {', '.join(map(str, seeds))})")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="digits,mnist")
    ap.add_argument("--noises", default="uniform,flip")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--methods", default="l2rw,mwnet,gdw,law,cleanlab")
    ap.add_argument("--law-episodes", type=int, default=16)
    ap.add_argument("--json", default=None)
    ap.add_argument("--table", default=None, help="print the markdown table of a results file and exit")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    rows: list[dict[str, Any]] = []
    if args.json:
        try:
            with open(args.json) as f:
                rows = json.load(f)["rows"]
        except (OSError, ValueError, KeyError):
            rows = []
    done = {(r["dataset"], r["noise"], r["seed"], r["method"]) for r in rows}
    for dname in args.datasets.split(","):
        ds, hidden, epochs = load(dname)
        c = int(ds.num_classes)
        for noise in args.noises.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                sp = conditions.meta_split(ds.y_train, 10, c, seed=seed)
                xm, ym = ds.x_train[sp.meta_indices], ds.y_train[sp.meta_indices]
                x, y_true = ds.x_train[sp.train_indices], ds.y_train[sp.train_indices]
                nz = getattr(conditions, f"{noise}_noise")(y_true, 0.4, c, seed=seed)
                y, corrupted = nz.labels, np.asarray(nz.corrupted, dtype=bool)
                for m in args.methods.split(","):
                    if (dname, noise, seed, m) in done:
                        continue
                    t0 = time.perf_counter()
                    if m == "cleanlab":
                        row = run_cleanlab(x, y, corrupted, y_true, hidden, c, epochs, seed)
                    elif m == "law":
                        row = run_law(x, y, xm, ym, corrupted, y_true, hidden, c, epochs, seed,
                                      args.law_episodes, ds)
                    else:
                        row = run_meta(m, x, y, xm, ym, corrupted, y_true, hidden, c, epochs, seed, ds)
                    row = {"dataset": dname, "noise": noise, "seed": seed, "method": m, **row,
                           "seconds": time.perf_counter() - t0}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.json:
                        with open(args.json, "w") as f:
                            json.dump({"rows": rows, "law_episodes": args.law_episodes}, f, indent=1)


if __name__ == "__main__":
    main()
