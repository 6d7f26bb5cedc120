"""LAW on noisy digits: search a weighting strategy, then train fresh networks with it and compare
with unweighted training, over several seeds.

Data: sklearn's 8x8 digits scaled to [0, 1], flat 64 features; per seed a random split into 1000
training examples (40% uniform label noise; the true class can be drawn, so ~36% end up wrong),
300 clean validation examples (the DNR reward and the strategy's state) and 497 clean test
examples (reported only).

For each search seed: a LAW search of `--episodes` episodes with the classifier
mlp(hidden=100), then for each of `--runs` training seeds two fresh networks are trained for the
same 30 epochs on the same batches, one weighted by the learned strategy (deterministic, no
search) and one unweighted; also the strategy is applied to another architecture
(`--transfer`, default mlp(hidden=256x256)). Printed: per seed and overall mean ± std of the test
accuracy of both, their difference, and the ROC AUC of the strategy's per-example weights for
separating clean from corrupted examples (0.5 = none, 1 = every corrupted example weighs less).

The configuration is the short-budget one of python/tests/test_law.py: faster actor/critic
learning rates than the paper's (made for hundreds of long episodes), weights normalised per
batch and the scalar label feature. `--paper` uses the library defaults instead (the paper's
learning rates, unnormalised weights, one-hot labels).

Usage:
    python examples/law_digits.py [--seeds 0,1,2,3,4] [--episodes 100] [--runs 3] [--save law.strategy]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from metaweight.law import LAWConfig, LAWSearch, train
from sklearn.datasets import load_digits

SPEC = "mlp(hidden=100, classes=10)"


def noisy_digits(seed: int, rate: float):
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    p = rng.permutation(len(x))
    tr, va, te = p[:1000], p[1000:1300], p[1300:]
    y_noisy = y[tr].copy()
    flip = rng.random(len(tr)) < rate
    y_noisy[flip] = rng.integers(0, 10, int(flip.sum()))
    return x[tr], y_noisy, y_noisy != y[tr], x[va], y[va], x[te], y[te]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3, help="training seeds per search seed")
    ap.add_argument("--noise", type=float, default=0.4)
    ap.add_argument("--transfer", default="mlp(hidden=256x256, classes=10)")
    ap.add_argument("--paper", action="store_true", help="library defaults: the paper's learning rates, unnormalised weights, one-hot labels")
    ap.add_argument("--save", default=None, help="save the first seed's strategy here")
    args = ap.parse_args()
    if args.paper:
        cfg = LAWConfig(stages=10, epochs=30, parallel=2, warmup_stages=2)
    else:
        cfg = LAWConfig(
            stages=10,
            epochs=30,
            parallel=2,
            warmup_stages=2,
            actor_lr=1e-4,
            critic_lr=1e-3,
            noise=0.5,
            noise_decay=0.98,
            normalize_weights=True,
            label_encoding="scalar",
        )
    print(f"LAW on digits, {args.noise:.0%} uniform label noise, {args.episodes} episodes per search")
    print(f"config: {cfg.spec()}")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        x, y, cor, xv, yv, xt, yt = noisy_digits(seed, args.noise)
        t0 = time.perf_counter()
        res = LAWSearch(SPEC, cfg, seed=seed).search(
            x, y, xv, yv, args.episodes, corrupted=cor, progress=False
        )
        t_search = time.perf_counter() - t0
        if args.save and not rows:
            res.strategy.save(args.save)
        for run in range(args.runs):
            s2 = 1000 + 10 * seed + run
            law = train(SPEC, x, y, strategy=res.strategy, x_val=xv, y_val=yv, seed=s2, corrupted=cor)
            erm = train(SPEC, x, y, strategy=None, config=cfg, x_val=xv, y_val=yv, seed=s2)
            law_t = train(
                args.transfer, x, y, strategy=res.strategy, x_val=xv, y_val=yv, seed=s2, corrupted=cor
            )
            erm_t = train(args.transfer, x, y, strategy=None, config=cfg, x_val=xv, y_val=yv, seed=s2)
            rows.append(
                (
                    seed,
                    law.trainer.evaluate(xt, yt)["accuracy"],
                    erm.trainer.evaluate(xt, yt)["accuracy"],
                    law.auc(cor),
                    law_t.trainer.evaluate(xt, yt)["accuracy"],
                    erm_t.trainer.evaluate(xt, yt)["accuracy"],
                    law_t.auc(cor),
                )
            )
        r = np.array([row for row in rows if row[0] == seed])
        print(
            f"seed {seed}: search {t_search:.1f}s ({res.episodes_completed} episodes, last-round reward "
            f"{res.rewards()[-cfg.parallel :].mean():+.2f}); test acc LAW {r[:, 1].mean():.4f} vs unweighted "
            f"{r[:, 2].mean():.4f} ({r[:, 1].mean() - r[:, 2].mean():+.4f}), AUC {r[:, 3].mean():.3f}; "
            f"transfer LAW {r[:, 4].mean():.4f} vs {r[:, 5].mean():.4f}, AUC {r[:, 6].mean():.3f}",
            flush=True,
        )
    a = np.array(rows)
    per_seed = np.array([a[a[:, 0] == s].mean(axis=0) for s in np.unique(a[:, 0])])

    def ms(col: int) -> str:
        return (
            f"{per_seed[:, col].mean():.4f} ± {per_seed[:, col].std(ddof=1) if len(per_seed) > 1 else 0:.4f}"
        )

    diff = per_seed[:, 1] - per_seed[:, 2]
    diff_t = per_seed[:, 4] - per_seed[:, 5]
    print(
        f"\nover {len(per_seed)} search seeds (mean ± std of the per-seed means, {args.runs} training runs each):"
    )
    print(
        f"  {SPEC}: LAW {ms(1)}  unweighted {ms(2)}  difference {diff.mean():+.4f} ± {diff.std(ddof=1) if len(diff) > 1 else 0:.4f}  AUC {ms(3)}"
    )
    print(
        f"  {args.transfer}: LAW {ms(4)}  unweighted {ms(5)}  difference {diff_t.mean():+.4f} ± {diff_t.std(ddof=1) if len(diff_t) > 1 else 0:.4f}  AUC {ms(6)}"
    )


if __name__ == "__main__":
    main()
