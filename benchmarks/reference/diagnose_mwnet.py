"""Why does MW-Net (official options, normalize=False) learn a V that *increases* with the loss on
MNIST with 40% flip noise?  Runs the official MW-Net transcription (side_by_side.mwnet_official_step,
unchanged) and records, per step, the meta-gradient on V's outputs g_i = dL_meta/dv_i (through a
spy around VNet), then summarises per epoch:

- the fraction of examples with g_i < 0 (the meta loss asks to *increase* their weight), for
  clean and for corrupted labels, and their mean g_i;
- the same after the batch-mean is removed (what normalize=True's chain rule keeps: with
  v_i/Σv, dL/dv_i = (g_i − Σ_j c_j g_j)/S);
- the V-output change per unit of "increase every weight": Δo(ℓ) for one sign-like Adam step on
  V's last layer (every W2_j and b2 moved by +lr), i.e. lr·(1 + Σ_j relu(W1_j ℓ + b1_j)).

Usage: python benchmarks/reference/diagnose_mwnet.py --mwnet-repo /tmp/mwnet [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import side_by_side as S  # noqa: E402


class Spy:
    """Calls VNet and keeps its graph output so its gradient (g_i) can be read after the step."""

    def __init__(self, vnet):
        self.vnet, self.out, self.inp = vnet, None, None

    def __call__(self, x):
        out = self.vnet(x)
        if out.requires_grad:
            out.retain_grad()
            self.out, self.inp = out, x.detach().reshape(-1).clone()
        return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--mwnet-repo", default=None)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--noise", default="flip")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    ns = S.load_official_modules(a.mwnet_repo, "mwnet")
    cond = S.load_condition(a.dataset, a.noise)
    n = len(cond["y"])
    mws = S.MetaweightSide("mwnet", "mlp", cond["in_dim"], a.lr, 0.9, 0.0, [10**6, 2 * 10**6], -(-n // 100), 0)
    ts = S.TorchSide(ns, "mwnet", "mlp", cond["in_dim"], mws.state(), a.lr, 0.9, 0.0)
    spy = Spy(ts.vnet)
    corrupted = cond["corrupted"]
    report = []
    for e in range(a.epochs):
        g_all = np.zeros(n)
        gc_all = np.zeros(n)
        loss_all = np.zeros(n)
        for idx in S.epoch_batches(n, 100, 0, e):
            xt, yt = ts._t(cond["x"][idx]), torch.from_numpy(cond["y"][idx])
            S.mwnet_official_step(ts.model, spy, ts.optimizer_model, ts.optimizer_vnet, ts.build_model, xt, yt,
                                  ts._t(cond["x_meta"]), torch.from_numpy(cond["y_meta"]), meta_lr=a.lr)
            g = spy.out.grad.detach().reshape(-1).double().numpy()
            v = spy.out.detach().reshape(-1).double().numpy()
            g_all[idx] = g
            gc_all[idx] = g - np.sum(v / v.sum() * g)  # normalize=True keeps only g − Σ c_j g_j
            loss_all[idx] = spy.inp.double().numpy()
        h = S.HIDDEN_V
        p = ts.v_flat()
        grid = np.array(S.LOSS_GRID)
        feat = np.maximum(np.outer(grid, p[:h]) + p[h:2 * h], 0)
        rank = lambda z: np.argsort(np.argsort(z))  # noqa: E731
        rec = dict(
            epoch=e + 1,
            frac_g_neg_clean=float((g_all[~corrupted] < 0).mean()),
            frac_g_neg_corrupt=float((g_all[corrupted] < 0).mean()),
            mean_g_clean=float(g_all[~corrupted].mean()), mean_g_corrupt=float(g_all[corrupted].mean()),
            frac_centered_neg_clean=float((gc_all[~corrupted] < 0).mean()),
            frac_centered_neg_corrupt=float((gc_all[corrupted] < 0).mean()),
            spearman_g_loss=float(np.corrcoef(rank(g_all), rank(loss_all))[0, 1]),
            mean_loss_clean=float(loss_all[~corrupted].mean()), mean_loss_corrupt=float(loss_all[corrupted].mean()),
            V=[float(x) for x in ts.v_of(S.LOSS_GRID)],
            delta_o_per_unit_step=[float(1 + f.sum()) for f in feat],
        )
        report.append(rec)
        print(json.dumps(rec))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
