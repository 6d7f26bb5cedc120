"""The measurement that chose the meta methods' shipped defaults (issue 16, "defaults that hold up").

Trains ERM, L2RW, MW-Net (the noisy-label script's un-normalised weights, and normalised weights,
each with V's learning rate 1e-3 and 1e-2) and GDW (V lr 1e-3 and 1e-2) on real data sets that
need no download — scikit-learn's digits, breast cancer and wine, and MNIST's t10k images in
``../shared/data/mnist-t10k`` when present — under 40% uniform noise, 40% flip noise and a long
tail (imbalance factor 10), at the papers' classifier rate (SGD 0.1, momentum 0.9) and at the
rate users try first on an MLP (0.02). Every run: an MLP, 10 clean meta examples per class
(disjoint from the training set), batch 100, meta batch 100, lr ×0.1 at 60% and 85% of the epochs.

For each cell it records the final test accuracy and, for noisy labels, the ROC AUC of each
training example's mean weight over the last 10 epochs with clean labels as positives (> 0.5:
clean labels weigh more), plus whether a collapse or saturation warning fired.

Usage:
    python benchmarks/choose_defaults.py --json benchmarks/results_defaults.json [--quick]
    python benchmarks/choose_defaults.py --table benchmarks/results_defaults.json   # print tables
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import metaweight as mw
import numpy as np
from metaweight import conditions, data

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist-t10k")

VARIANTS = {
    "erm": lambda: mw.ERM(),
    "l2rw": lambda: mw.L2RW(),
    "mwnet_unnorm_1e-3": lambda: mw.MWNet(normalize=False, lr=1e-3),
    "mwnet_unnorm_1e-2": lambda: mw.MWNet(normalize=False, lr=1e-2),
    "mwnet_norm_1e-3": lambda: mw.MWNet(normalize=True, lr=1e-3),
    "mwnet_norm_1e-2": lambda: mw.MWNet(normalize=True, lr=1e-2),
    "gdw_1e-3": lambda: mw.GDW(lr=1e-3),
    "gdw_1e-2": lambda: mw.GDW(lr=1e-2),
}


def load(name: str, seed: int) -> tuple[mw.data.Dataset, tuple[int, ...], int]:
    """The data set, the MLP's hidden widths and the epochs."""
    if name == "digits":
        return data.load_digits(flatten=True, seed=seed), (256, 256), 40
    if name == "mnist":
        return data.load_mnist(MNIST, flatten=True, seed=seed), (512, 512), 30
    from sklearn import datasets as skd

    raw = skd.load_breast_cancer() if name == "breast_cancer" else skd.load_wine()
    x = raw.data.astype(np.float32)
    y = raw.target.astype(np.int64)
    idx = data.split_indices(y, 0.3, seed=seed)
    tr, te = idx
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    x = (x - mu) / sd
    ds = data.Dataset(x[tr], y[tr], x[te], y[te], num_classes=int(y.max()) + 1, name=name)
    return ds, (64, 64), 200


def run_cell(ds_name: str, cond: str, lr: float, seed: int, variants: list[str]) -> list[dict]:
    ds, hidden, epochs = load(ds_name, seed)
    c = ds.num_classes
    split = conditions.meta_split(ds.y_train, 10, c, seed=seed)
    xm, ym = ds.x_train[split.meta_indices], ds.y_train[split.meta_indices]
    x, y = ds.x_train[split.train_indices], ds.y_train[split.train_indices]
    corrupted = None
    if cond == "uniform40":
        nz = conditions.uniform_noise(y, 0.4, c, seed=seed)
        y, corrupted = nz.labels, nz.corrupted
    elif cond == "flip40":
        nz = conditions.flip_noise(y, 0.4, c, seed=seed)
        y, corrupted = nz.labels, nz.corrupted
    else:
        sub = conditions.long_tailed(y, 10.0, c, seed=seed)
        x, y = x[sub.indices], y[sub.indices]
    out = []
    for v in variants:
        method = VARIANTS[v]()
        model = mw.mlp(x.shape[1], hidden=hidden, num_classes=c, seed=seed)
        tr = mw.Trainer(model, mw.SGD(lr=lr, momentum=0.9), mw.MultiStep([int(epochs * 0.6), int(epochs * 0.85)]),
                        method=method, seed=seed)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", mw.MetaweightWarning)
            try:
                h = tr.fit(x, y, epochs=epochs, batch_size=100, meta=(xm, ym) if method.needs_meta else None,
                           meta_batch_size=100, progress=False, record_weights=corrupted is not None)
                acc = tr.evaluate(ds.x_test, ds.y_test)["accuracy"]
                error = None
            except mw.MetaweightError as e:
                h, acc, error = None, float("nan"), str(e)
        fired = sorted({type(w.message).__name__ for w in caught if issubclass(w.category, mw.MetaweightWarning)})
        auc = None
        if h is not None and corrupted is not None and method.needs_meta:
            from sklearn.metrics import roc_auc_score

            w = np.nanmean(np.stack([r.example_weights for r in h[-10:]]), axis=0)
            auc = float(roc_auc_score(~corrupted, w)) if np.nanstd(w) > 0 else 0.5
        out.append({"data": ds_name, "condition": cond, "lr": lr, "seed": seed, "variant": v, "accuracy": acc,
                    "auc_last10": auc, "warnings": fired, "error": error,
                    "seconds": round(time.perf_counter() - t0, 2)})
        print(json.dumps(out[-1]), flush=True)
        tr.close()
        model.close()
    return out


def table(rows: list[dict], warn_marks: bool = True) -> str:
    """Markdown: one line per data set × condition × lr, mean accuracy (AUC) per variant over seeds."""
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    keys = sorted({(r["data"], r["condition"], r["lr"]) for r in rows})
    lines = ["| data | condition | lr | " + " | ".join(variants) + " |",
             "|---|---|---|" + "---|" * len(variants)]
    for k in keys:
        cells = []
        for v in variants:
            rs = [r for r in rows if (r["data"], r["condition"], r["lr"]) == k and r["variant"] == v]
            if not rs:
                cells.append("")
                continue
            acc = np.nanmean([r["accuracy"] for r in rs])
            aucs = [r["auc_last10"] for r in rs if r["auc_last10"] is not None]
            s = f"{acc:.3f}" + (f" ({np.mean(aucs):.2f})" if aucs else "")
            if warn_marks and any(r["warnings"] for r in rs):
                s += " ⚠"
            cells.append(s)
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(cells) + " |")
    # Mean rank of each variant over the cells (1 = best accuracy), the summary that chose defaults.
    ranks: dict[str, list[float]] = {v: [] for v in variants}
    for k in keys:
        accs = {}
        for v in variants:
            vals = [r["accuracy"] for r in rows if (r["data"], r["condition"], r["lr"]) == k and r["variant"] == v]
            if vals and not all(np.isnan(vals)):
                accs[v] = float(np.nanmean(vals))
        # Rank among the variants run in this cell, scaled to the full field so cells compare.
        order = sorted(accs, key=lambda v: -accs[v])
        for i, v in enumerate(order):
            ranks[v].append(1 + i * (len(variants) - 1) / max(len(order) - 1, 1))
    lines.append("| **mean rank** | | | " + " | ".join(f"{np.mean(ranks[v]):.2f}" for v in variants) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the rows here (appending to an existing file's rows)")
    ap.add_argument("--table", help="only print the tables of this results file")
    ap.add_argument("--no-warning-marks", action="store_true", help="leave out the ⚠ marks of warnings fit issued")
    ap.add_argument("--data", default="digits,breast_cancer,wine,mnist")
    ap.add_argument("--conditions", default="uniform40,flip40,longtail10")
    ap.add_argument("--lrs", default="0.1,0.02")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    if args.table:
        with open(args.table) as f:
            print(table(json.load(f)["rows"], warn_marks=not args.no_warning_marks))
        return
    rows: list[dict] = []
    if args.json and os.path.exists(args.json):
        with open(args.json) as f:
            rows = json.load(f)["rows"]
    done = {(r["data"], r["condition"], r["lr"], r["seed"], r["variant"]) for r in rows}
    mw.set_threads(1)
    for d in args.data.split(","):
        if d == "mnist" and not os.path.isdir(MNIST):
            print("skipping mnist: no", MNIST, file=sys.stderr)
            continue
        seeds = [int(s) for s in args.seeds.split(",")][: 1 if d == "mnist" else None]
        for cond in args.conditions.split(","):
            for lr in (float(v) for v in args.lrs.split(",")):
                for seed in seeds:
                    todo = [v for v in args.variants.split(",") if (d, cond, lr, seed, v) not in done]
                    if todo:
                        rows += run_cell(d, cond, lr, seed, todo)
                        if args.json:
                            tmp = args.json + ".tmp"
                            with open(tmp, "w") as f:
                                json.dump({"cpu": _cpu(), "rows": rows}, f, indent=1)
                            os.replace(tmp, args.json)
    print(table(rows))


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
