"""L2RW vs ERM on MNIST 4 vs 9 under class imbalance (the L2RW paper's Figure 2 setting).

Uses the MNIST t10k images (the shared data set): a seeded split into train/test, 10 clean
images per class as the meta set (disjoint from training), the training 4s subsampled so that 9s
outnumber them by the given ratio, a balanced test set of 4s and 9s. Prints the test error of
ERM and L2RW (mean ± std over seeds) for each imbalance ratio.

Usage:
    python examples/l2rw_mnist_imbalance.py [--ratios 10,50,100,200] [--seeds 5] [--epochs 60]
        [--mnist DIR]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import metaweight as mw
import numpy as np
from metaweight import conditions, data


def default_mnist_dir() -> Path:
    env = os.environ.get("METAWEIGHT_MNIST_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"


def task(directory: Path, seed: int, ratio: float):
    ds = data.load_mnist_t10k(directory, test_fraction=0.3, seed=0, flatten=True)
    keep = np.isin(ds.y_train, (4, 9))
    xs, ys = ds.x_train[keep], np.where(ds.y_train[keep] == 4, 0, 1)
    split = conditions.meta_split(ys, 10, 2, seed=seed)
    rest_x, rest_y = xs[split.train_indices], ds.y_train[keep][split.train_indices]
    sub = conditions.two_class_imbalance(rest_y, classes=(4, 9), majority=9, ratio=ratio, total=None, seed=seed)
    test = np.isin(ds.y_test, (4, 9))
    return (rest_x[sub.indices], sub.labels, xs[split.meta_indices], ys[split.meta_indices],
            ds.x_test[test], np.where(ds.y_test[test] == 4, 0, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratios", default="10,50,100,200")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--mnist", type=Path, default=default_mnist_dir())
    args = ap.parse_args()
    print("| ratio (9s per 4) | ERM test error | L2RW test error |")
    print("|---|---|---|")
    for ratio in [float(r) for r in args.ratios.split(",")]:
        errs: dict[str, list[float]] = {"erm": [], "l2rw": []}
        for seed in range(args.seeds):
            x, y, xm, ym, xt, yt = task(args.mnist, seed, ratio)
            for name, errors in errs.items():
                model = mw.mlp(784, hidden=(100,), num_classes=2, seed=seed)
                tr = mw.Trainer(model, mw.SGD(lr=0.05, momentum=0.9, weight_decay=1e-4), method=name, seed=seed)
                tr.fit(x, y, epochs=args.epochs, batch_size=100, meta=(xm, ym) if name == "l2rw" else None,
                       meta_batch_size=20, progress=False)
                errors.append(1 - tr.evaluate(xt, yt)["accuracy"])
        e, l_ = np.array(errs["erm"]), np.array(errs["l2rw"])
        print(f"| {ratio:g} | {e.mean():.2%} ± {e.std():.2%} | {l_.mean():.2%} ± {l_.std():.2%} |", flush=True)


if __name__ == "__main__":
    main()
