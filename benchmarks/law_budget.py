"""LAW's gain against its search budget (issue 12, item 6).

Does the search pay for itself? For each data set, seed and budget (episodes searched), the strategy
learned after that many episodes trains the README table's network (an MLP 256-256) on the noisy
training set; reported are its test accuracy, the same network trained unweighted (same seed,
batches, schedule: ``law.train(strategy=None)``), the gain (strategy − unweighted) and the ROC AUC
of the strategy's per-example weights (after its warm-up stages) for clean against flipped labels.

Setting (the README table's LAW row): digits (1,797 images) or MNIST t10k (10,000 images), 70/30
stratified train/test split (fixed, seed 0); a clean, class-balanced meta set of 10 images per class
drawn first (LAW's validation set: reward and state); 40% flip noise (c -> c+1) on the rest. Search:
episodes of 10 epochs on an MLP-100, 10 stages, 2 warm-up stages, N_a = 2, normalised weights, SGD
lr 0.1, momentum 0.9, weight decay 5e-4, lr x0.1 at 60% and 85%, batch 100. Final runs: 40 epochs
(digits) / 30 (MNIST), the same optimizer settings. One search per (data set, seed) runs to the
largest budget; the strategy is snapshotted when it reaches each smaller budget (a search continued
is bit-identical to one run straight to that budget, so the budgets are nested, not re-searched).

Usage:
    python benchmarks/law_budget.py [--datasets digits,mnist] [--budgets 40,160,640] [--seeds 0,1,2]
        [--json benchmarks/results_law_budget.json] [--table]

Results are appended to the JSON file after every final run (re-running skips rows already there),
so a long run can be stopped and resumed. ``--table`` prints the summary table from the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import metaweight as mw
import numpy as np
from metaweight import conditions, data, law

MNIST_DIR = os.environ.get("METAWEIGHT_MNIST_DIR", str(Path(__file__).resolve().parents[2] / "shared/data/mnist-t10k"))
EPOCHS = {"digits": 40, "mnist": 30}


def load(name: str, seed: int) -> dict[str, Any]:
    if name == "digits":
        ds = data.load_digits(flatten=True, test_fraction=0.3, seed=0)
    else:
        ds = data.load_mnist_t10k(MNIST_DIR, test_fraction=0.3, seed=0, flatten=True)
    split = conditions.meta_split(ds.y_train, per_class=10, num_classes=10, seed=seed)
    x = ds.x_train[split.train_indices]
    noisy = conditions.flip_noise(ds.y_train[split.train_indices], 0.4, num_classes=10, seed=seed)
    return {
        "x": np.ascontiguousarray(x, dtype=np.float32),
        "y": noisy.labels,
        "corrupted": noisy.corrupted,
        "xm": ds.x_train[split.meta_indices],
        "ym": ds.y_train[split.meta_indices],
        "xt": ds.x_test,
        "yt": ds.y_test,
    }


def search_config() -> law.LAWConfig:
    return law.LAWConfig(stages=10, warmup_stages=2, parallel=2, epochs=10, batch_size=100, lr=0.1, momentum=0.9,
                         weight_decay=5e-4, lr_milestones=(0.6, 0.85), lr_decay=0.1, normalize_weights=True)


def final_run(d: dict[str, Any], strategy: law.Strategy | None, cfg: law.LAWConfig, epochs: int,
              seed: int) -> dict[str, Any]:
    net = mw.mlp(d["x"].shape[1], hidden=(256, 256), num_classes=10, seed=seed)
    run = law.train(net, d["x"], d["y"], strategy=strategy, config=cfg, epochs=epochs, x_val=d["xm"], y_val=d["ym"],
                    seed=seed, corrupted=d["corrupted"])
    acc = float(run.trainer.evaluate(d["xt"], d["yt"])["accuracy"])
    auc = float(run.auc(d["corrupted"])) if strategy is not None else float("nan")
    run.trainer.close()
    return {"test_accuracy": acc, "auc": auc, "seconds": run.seconds}


def load_rows(path: Path) -> list[dict[str, Any]]:
    if path.exists():
        return list(json.loads(path.read_text())["rows"])
    return []


def save_rows(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    tmp.replace(path)


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| data set | episodes | seeds | unweighted acc | LAW acc | gain (points) | AUC clean vs flipped | search s/seed |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["dataset"], r["episodes"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for ds, ep in keys:
        rs = [r for r in rows if r["dataset"] == ds and r["episodes"] == ep]
        accs = [r["law_accuracy"] for r in rs]
        base = [r["erm_accuracy"] for r in rs]
        gain = [100 * (a - b) for a, b in zip(accs, base)]
        aucs = [r["auc"] for r in rs]

        def ms(v: list[float], scale: float = 1.0, digits: int = 1) -> str:
            if len(v) < 2:
                return f"{scale * v[0]:.{digits}f}"
            return f"{scale * statistics.mean(v):.{digits}f} ± {scale * statistics.stdev(v):.{digits}f}"

        out.append(f"| {ds} | {ep} | {len(rs)} | {ms(base, 100)} | {ms(accs, 100)} | {ms(gain)} | {ms(aucs, 1, 3)} | "
                   f"{statistics.mean(r['search_seconds'] for r in rs):.0f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="digits,mnist")
    ap.add_argument("--budgets", default="40,160,640")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--json", default=str(Path(__file__).with_name("results_law_budget.json")))
    ap.add_argument("--table", action="store_true", help="print the table of the JSON file and exit")
    args = ap.parse_args()
    path = Path(args.json)
    rows = load_rows(path)
    if args.table:
        print(table(rows))
        return
    budgets = sorted(int(b) for b in args.budgets.split(","))
    meta = {"cpu": os.cpu_count(), "config": search_config().spec(), "epochs": EPOCHS, "noise": "flip 40%",
            "final_model": "mlp 256-256", "search_model": "mlp 100"}
    cfg = search_config()
    for name in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            todo = [b for b in budgets if not any(r["dataset"] == name and r["seed"] == seed and r["episodes"] == b
                                                    for r in rows)]
            if not todo:
                continue
            d = load(name, seed)
            erm = final_run(d, None, cfg, EPOCHS[name], seed)
            print(f"{name} seed {seed}: unweighted {erm['test_accuracy']:.4f}", flush=True)
            done = 0
            search_s = 0.0
            with law.LAWSearch("mlp(hidden=100, classes=10)", cfg, seed=seed) as search:
                for b in budgets:
                    t0 = time.perf_counter()
                    res = search.search(d["x"], d["y"], d["xm"], d["ym"], b - done, progress=False,
                                        example_weights=False)
                    search_s += time.perf_counter() - t0
                    done = b
                    if b not in todo:
                        continue
                    r = final_run(d, res.strategy, cfg, EPOCHS[name], seed)
                    rewards = res.rewards()
                    row = {"dataset": name, "seed": seed, "episodes": b, "erm_accuracy": erm["test_accuracy"],
                           "law_accuracy": r["test_accuracy"], "auc": r["auc"], "search_seconds": search_s,
                           "last_rewards_mean": float(np.mean(rewards[-10:])) if len(rewards) else float("nan")}
                    rows.append(row)
                    save_rows(path, rows, meta)
                    print(f"  {b} episodes ({search_s:.0f}s of search): LAW {r['test_accuracy']:.4f} "
                          f"(gain {100 * (r['test_accuracy'] - erm['test_accuracy']):+.1f}), AUC {r['auc']:.3f}",
                          flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
