"""The regime of issue 16, re-run with the shipped defaults: a network that can memorise noisy labels.

MNIST's t10k images (``../shared/data/mnist-t10k`` through ``data.load_mnist(..., seed=0)``: its
seeded 80/20 split), 10 clean images per class (``conditions.meta_split(..., seed=0)``), 40% flip
noise (``conditions.flip_noise(..., 0.4, seed=0)``), MLP 784-512-512-10, SGD lr 0.02, momentum 0.9,
no weight decay, 60 epochs, lr ×0.1 at 60% and 85%, batch 100, meta batch 100, seed 0; every
method with its shipped defaults (no option passed).

Prints, per method: test accuracy; the ROC AUC of the weights at epoch 10 and of each example's
mean weight over the last 10 epochs (clean labels as positives); the learned V at losses
0, 1, 2, 4, 8 (MW-Net, GDW); the per-epoch diagnostics at the end; and any warning fit issued.

Usage:
    python benchmarks/mnist_flip_regime.py [--methods erm,l2rw,mwnet,gdw] [--epochs 60] [--lr 0.02]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import metaweight as mw
import numpy as np
from metaweight import conditions, data
from sklearn.metrics import roc_auc_score

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist-t10k")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="erm,l2rw,mwnet,gdw")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--noise", default="flip", choices=["flip", "uniform"])
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    ds = data.load_mnist(MNIST, flatten=True, seed=0)
    c = ds.num_classes
    split = conditions.meta_split(ds.y_train, 10, c, seed=0)
    xm, ym = ds.x_train[split.meta_indices], ds.y_train[split.meta_indices]
    x, y = ds.x_train[split.train_indices], ds.y_train[split.train_indices]
    noisy = (conditions.flip_noise if args.noise == "flip" else conditions.uniform_noise)(y, 0.4, c, seed=0)
    clean = ~noisy.corrupted
    e = args.epochs
    rows = []
    for name in args.methods.split(","):
        method = mw.methods.resolve_method(name)
        tr = mw.Trainer(mw.mlp(784, hidden=(512, 512), num_classes=c, seed=0), mw.SGD(lr=args.lr, momentum=0.9),
                        mw.MultiStep([int(e * 0.6), int(e * 0.85)]), method=method, seed=0)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", mw.MetaweightWarning)
            h = tr.fit(x, noisy.labels, epochs=e, batch_size=100, meta=(xm, ym) if method.needs_meta else None,
                       meta_batch_size=100, progress=False, record_weights=method.needs_meta)
        row = {"method": name, "accuracy": tr.evaluate(ds.x_test, ds.y_test)["accuracy"],
               "seconds": round(time.perf_counter() - t0, 1),
               "warnings": [str(w.message) for w in caught if issubclass(w.category, mw.MetaweightWarning)]}
        if method.needs_meta:
            row["auc_epoch10"] = float(roc_auc_score(clean, h[min(9, e - 1)].example_weights))
            w = np.stack([r.example_weights for r in h[-10:]]).mean(0)
            row["auc_last10"] = float(roc_auc_score(clean, w))
        if method.has_weight_function:
            row["V"] = [round(float(v), 3) for v in tr.weight_function(np.array([0, 1, 2, 4, 8], np.float32))]
        last = h[-1]
        row["diagnostics"] = {k: last.__getattribute__(k) for k in
                              ("weight_ess", "saturated_low", "saturated_high", "prediction_majority",
                               "weight_loss_correlation")}
        rows.append(row)
        print(json.dumps(row), flush=True)
        tr.close()
    erm = next((r["accuracy"] for r in rows if r["method"] == "erm"), None)
    print("\n| method | test accuracy | vs ERM | AUC at epoch 10 | AUC, mean weight of the last 10 epochs | V(0, 1, 2, 4, 8) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        gain = f"{100 * (r['accuracy'] - erm):+.1f} pts" if erm is not None and r["method"] != "erm" else "–"
        v = ", ".join(f"{x:.2f}" for x in r["V"]) if "V" in r else "–"
        print(f"| {r['method']} | {100 * r['accuracy']:.1f}% | {gain} | {r.get('auc_epoch10', float('nan')):.2f} | "
              f"{r.get('auc_last10', float('nan')):.3f} | {v} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
