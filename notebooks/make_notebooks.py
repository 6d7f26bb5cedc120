"""Generates the notebooks in this folder (without outputs) from the cells below.

    python notebooks/make_notebooks.py          # rewrites notebooks/*.ipynb
    python notebooks/make_notebooks.py --check  # exits 1 if a notebook differs from its source here

Every notebook's first code cell reads ``SIZE = os.environ.get("METAWEIGHT_NOTEBOOK_SIZE", "small")``:
``small`` runs in well under a minute (CI executes the notebooks with python/tests/test_notebooks.py),
``full`` runs the real experiment. Edit the cells here, not the .ipynb files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import os
SIZE = os.environ.get("METAWEIGHT_NOTEBOOK_SIZE", "small")   # "small" (quick, CI) or "full"
FULL = SIZE == "full"
print(f"SIZE = {SIZE!r}")"""

MPL = """\
%matplotlib inline
import numpy as np
import metaweight as mw
from metaweight import conditions, data, plots
from IPython.display import Markdown, display"""


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(text.strip("\n"))


# ---- 01 ----------------------------------------------------------------------------------------------

QUICKSTART = [
    md(
        """
# metaweight quick start

Train a classifier on labels of which 40% were resampled at random, with plain ERM and with
**MW-Net** (Shu et al. 2019), which learns a loss → weight function on a small clean *meta* set
(10 images per class). Then run a small grid with the experiment runner.

Data: scikit-learn's bundled digits (1,797 real 8×8 images). `SIZE = "full"` trains longer and
with more seeds."""
    ),
    code(SETUP),
    code(MPL),
    md(
        """
## Data: a clean meta set, then 40% uniform label noise

`conditions.compose` draws the clean, class-balanced meta set first (disjoint from training),
then corrupts the remaining training labels; `corrupted` marks the labels that changed."""
    ),
    code(
        """
ds = data.load_digits(flatten=True, seed=0)
c = conditions.compose(ds.x_train, ds.y_train, ds.num_classes, seed=0,
                       meta_per_class=10, noise="uniform", noise_rate=0.4)
print(ds)
print(f"training: {len(c.x_train)} images, {c.corrupted.mean():.1%} of the labels wrong; "
      f"meta set: {len(c.x_meta)} clean images; test: {len(ds.x_test)}")
for step in c.steps:
    print(" -", step)
"""
    ),
    md(
        """
## Training: ERM vs MW-Net

`Trainer.fit` takes the meta set for the meta-weighting methods; `record_weights=True` keeps the
weight every training example received in each epoch."""
    ),
    code(
        """
EPOCHS = 40 if FULL else 8
histories, trainers = {}, {}
for name, method in [("ERM", "erm"), ("MW-Net", mw.MWNet(lr=1e-2))]:
    net = mw.mlp(64, hidden=(256, 256), num_classes=10, seed=0)
    tr = mw.Trainer(net, mw.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4),
                    mw.MultiStep([0.6 * EPOCHS, 0.85 * EPOCHS]), method=method, seed=0)
    histories[name] = tr.fit(c.x_train, c.y_train, epochs=EPOCHS, batch_size=100,
                             x_val=ds.x_test, y_val=ds.y_test,
                             meta=(c.x_meta, c.y_meta) if tr.method.needs_meta else None,
                             progress=False, record_weights=True)
    trainers[name] = tr
    print(f"{name:7s} test accuracy {tr.evaluate(ds.x_test, ds.y_test)['accuracy']:.4f}")
"""
    ),
    code('plots.accuracy_curves(histories, title="digits, 40% uniform label noise")'),
    md(
        """
MW-Net's weights: the mean weight of the training examples whose label is wrong vs right
(normalised by each method's mean weight), and its learned weighting function V(loss)."""
    ),
    code(
        """
w = np.nanmean([r.example_weights for r in histories["MW-Net"][EPOCHS // 2:]], axis=0)
print(f"MW-Net mean weight: clean {w[~c.corrupted].mean():.3f}, corrupted {w[c.corrupted].mean():.3f}")
plots.weight_distributions({"MW-Net": (w, c.corrupted)})
"""
    ),
    code("plots.weight_functions({'MW-Net': trainers['MW-Net']}, losses=np.linspace(0, 8, 200))"),
    code(
        """
pred = trainers["MW-Net"].predict(ds.x_test)
plots.confusion_matrix(mw.confusion_matrix(ds.y_test, pred, 10), title="MW-Net, test set")
"""
    ),
    md(
        """
## The experiment runner

The same comparison as a grid (methods × seeds), from a configuration (here a dict; normally a
TOML file, see `examples/configs/`). Each run is written to `<results>/<name>/<run-id>/`
(`config.json`, `history.csv`, `final.json`, `weights.npz`); running it again skips finished runs.
The command line equivalent is `python -m metaweight.experiments CONFIG`."""
    ),
    code(
        """
from metaweight.experiments import run_experiment, load_results

config = {
    "name": "quickstart",
    "seeds": [0, 1, 2] if FULL else [0, 1],
    "defaults": {
        "dataset": "digits",
        "condition": {"noise": "uniform", "noise_rate": 0.4},
        "meta_per_class": 10,
        "model": {"name": "mlp", "hidden": [256, 256]},
        "schedule": {"name": "multistep", "fractions": [0.6, 0.85]},
        "epochs": 40 if FULL else 4,
    },
    "grid": {"method": ["erm", {"name": "mwnet", "lr": 0.01}, {"name": "gdw", "lr": 0.01}, "l2rw"]},
}
report = run_experiment(config, results="results", progress=False, log=None)
print(f"{report.ran} runs trained, {report.skipped} skipped")
display(Markdown(report.markdown))
"""
    ),
    code(
        """
again = run_experiment(config, results="results", progress=False, log=None)
print(f"second call: {again.ran} trained, {again.skipped} skipped")
plots.accuracy_curves(load_results(report.folder), title="runner results (mean ± std over seeds)")
"""
    ),
]

# ---- 02 ----------------------------------------------------------------------------------------------

L2RW = [
    md(
        """
# L2RW on imbalanced MNIST 4 vs 9 (L2RW, Figure 2)

Ren et al. (2018) train a binary classifier on MNIST digits 4 and 9 where the 9s dominate, with a
small **clean, balanced** meta set of 10 images per class, and plot the test error against the
proportion of the dominating class: ERM's error grows quickly with the imbalance, L2RW's stays low.

Here the data are MNIST's 10,000 t10k images (`shared/data/mnist-t10k`, or set
`METAWEIGHT_MNIST_DIR`), split 70/30 into train and test parts. From the training 4s and 9s the
meta set (10 + 10) is drawn first, then the training set is subsampled to the ratio (9s : 4s,
as many images as the data allow); the test set is balanced. The runner's `mnist-4v9` data set does
all this; the grid sweeps the ratio."""
    ),
    code(SETUP),
    code(MPL),
    code(
        """
from metaweight.experiments import run_experiment, load_results, mnist_directory
print("MNIST files in", mnist_directory())

RATIOS = [9, 19, 49, 99, 199] if FULL else [9, 99]     # proportions 0.90, 0.95, 0.98, 0.99, 0.995
METHODS = (["erm", "l2rw", "inverse_frequency", "class_balanced_sampling", "hard_mining", "random"]
           if FULL else ["erm", "l2rw"])
config = {
    "name": "l2rw_mnist_4v9",
    "seeds": [0, 1, 2, 3, 4] if FULL else [0],
    "defaults": {
        "dataset": "mnist-4v9",
        "meta_per_class": 10,
        "model": {"name": "lenet5"} if FULL else {"name": "mlp", "hidden": [100]},
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
        "epochs": 40 if FULL else 8,
        "batch_size": 100,
        "meta_batch_size": 20,
    },
    "grid": {"condition.ratio": RATIOS, "method": METHODS},
    "summary": {"metric": "test_error"},
}
report = run_experiment(config, results="results", progress=False, log=None)
print(f"{report.ran} runs trained, {report.skipped} skipped, {report.failed} failed")
display(Markdown(report.markdown))
"""
    ),
    md("Test error against the proportion of the dominating class (mean ± std over seeds):"),
    code(
        """
runs = load_results(report.folder)
plots.imbalance_error(runs, title="MNIST 4 vs 9: test error vs imbalance (cf. L2RW Fig. 2)")
"""
    ),
    md(
        """
Where does L2RW put the weight? At the highest imbalance, the mean weight per class (the minority
4s are label 0): L2RW up-weights the rare class, ERM weighs every example 1."""
    ),
    code(
        """
worst = max(RATIOS)
for r in runs:
    if r["config"]["condition"]["ratio"] == worst and r["config"]["seed"] == 0:
        f = r["final"]
        by_class = f["weights"]["by_class"] if f.get("weights") else None
        print(f"{f['labels']['method']:>24s}: test error {f['test_error']:.3f}, training counts (4s, 9s) "
              f"{f['class_counts']}, mean weight per class {np.round(by_class, 4).tolist()}")
"""
    ),
    code(
        """
l2rw_run = [r for r in runs if r["config"]["condition"]["ratio"] == worst and r["config"]["method"]["name"] == "l2rw"][0]
plots.confusion_matrix(l2rw_run, class_names=["4", "9"])
"""
    ),
]

# ---- 03 ----------------------------------------------------------------------------------------------

NOISY = [
    md(
        """
# MW-Net and GDW on noisy labels: learned weighting functions and weight distributions

- **MW-Net** (Shu et al. 2019) learns a weighting function V: loss → weight on the clean meta set;
  under label noise V learns to *decrease* with the loss (examples with wrong labels have large
  losses).
- **GDW** (Chen et al. 2021) generalises the example weight to one weight per (example, class),
  ω ∈ ℝ^{N×C}: every class's term of an example's logit gradient gets its own weight. Besides
  down-weighting the (wrong) label of a corrupted example, it can change the weight of its *true*
  class among the non-target classes: a smaller ω there means the loss pushes the true class's
  probability down less.
- **L2RW** (Ren et al. 2018) computes weights per step from the meta gradient.

Small size: digits with 40% uniform noise. Full size: MNIST (t10k split) with 40% uniform noise."""
    ),
    code(SETUP),
    code(MPL),
    code(
        """
if FULL:
    from metaweight.experiments import mnist_directory
    ds = data.load_mnist(mnist_directory(), flatten=True, test_fraction=0.3, seed=0)
else:
    ds = data.load_digits(flatten=True, seed=0)
c = conditions.compose(ds.x_train, ds.y_train, ds.num_classes, seed=0,
                       meta_per_class=10, noise="uniform", noise_rate=0.4)
print(ds.name, f"{len(c.x_train)} training images, {c.corrupted.mean():.1%} of the labels wrong, "
      f"{len(c.x_meta)} clean meta images")
"""
    ),
    code(
        """
EPOCHS = 30 if FULL else 10
methods = {"ERM": "erm", "L2RW": mw.L2RW(), "MW-Net": mw.MWNet(lr=1e-2), "GDW": mw.GDW(lr=1e-2)}
lrs = {"L2RW": 0.03}        # L2RW's normalised weights need a smaller step (see examples/configs)
histories, trainers = {}, {}
for name, method in methods.items():
    net = mw.mlp(ds.x_train.shape[1], hidden=(256, 256), num_classes=ds.num_classes, seed=0)
    tr = mw.Trainer(net, mw.SGD(lr=lrs.get(name, 0.1), momentum=0.9, weight_decay=5e-4),
                    mw.MultiStep([0.6 * EPOCHS, 0.85 * EPOCHS]), method=method, seed=0)
    histories[name] = tr.fit(c.x_train, c.y_train, epochs=EPOCHS, x_val=ds.x_test, y_val=ds.y_test,
                             meta=(c.x_meta, c.y_meta) if tr.method.needs_meta else None,
                             progress=False, record_weights=True)
    trainers[name] = tr
    print(f"{name:7s} test accuracy {tr.evaluate(ds.x_test, ds.y_test)['accuracy']:.4f}")
plots.accuracy_curves(histories, title=f"{ds.name}, 40% uniform noise")
"""
    ),
    md(
        """
## Learned weighting functions

V(loss) of MW-Net and GDW (GDW's V gives the first-stage weights before its class-level update).
Under uniform noise V should fall with the loss."""
    ),
    code(
        """
losses = np.linspace(0, 8, 200)
plots.weight_functions({"MW-Net": trainers["MW-Net"], "GDW": trainers["GDW"]}, losses=losses)
"""
    ),
    md(
        """
## Weights of clean vs corrupted examples

Each example's weight averaged over the second half of training (GDW: ω at the label), divided by
the method's mean weight. The AUC in each title is the probability that a clean example weighs more
than a corrupted one (0.5: no separation)."""
    ),
    code(
        """
def mean_weights(history):
    return np.nanmean([r.example_weights for r in history[len(history) // 2:]], axis=0)

weights = {k: (mean_weights(histories[k]), c.corrupted) for k in ("L2RW", "MW-Net", "GDW")}
for k, (w, m) in weights.items():
    print(f"{k:7s} mean weight clean {w[~m].mean():.4f}  corrupted {w[m].mean():.4f}")
plots.weight_distributions(weights)
"""
    ),
    code("plots.weight_distributions(weights, kind='violin')"),
    md(
        """
## GDW's class-level weights

Left: the mean ω of examples with a given observed label, for every class (the diagonal is ω at
the label). Right: the distributions of ω at the label, of ω at the *true* class of corrupted
examples (a non-target class), and of ω at the other non-target classes."""
    ),
    code(
        """
last = histories["GDW"][-1]
plots.class_weights(last.class_weights, c.y_train, y_clean=c.y_train_clean)
"""
    ),
    code(
        """
omega = last.class_weights
idx = np.flatnonzero(c.corrupted)
true_w = omega[idx, c.y_train_clean[idx]]
mask = np.ones_like(omega, dtype=bool)
mask[np.arange(len(omega)), c.y_train] = False
mask[idx, c.y_train_clean[idx]] = False
print(f"GDW: ω at the true class of corrupted examples {true_w.mean():.4f} "
      f"vs other non-target classes {omega[mask].mean():.4f}")
"""
    ),
]

# ---- 04 ----------------------------------------------------------------------------------------------

LAW = [
    md(
        """
# LAW: searching a weighting strategy, and transferring it to another architecture

LAW (Li et al. 2020) learns *how to weight* with reinforcement learning: a training run is split
into stages; at every stage start a strategy network maps the training state to the parameters of
a weighting function over per-example features (loss, entropy, density, label). Each episode trains
a weighted *target* network next to an unweighted *reference* with the same initialisation and
batches; the reward is the validation-accuracy difference.

Here: digits with 40% uniform label noise; the clean meta set (10 per class) is LAW's validation
set. After the search, the strategy trains fresh networks (no search) — the searched architecture
and a *different* one (a small CNN on the 8×8 images) — compared with unweighted training on the
same batches."""
    ),
    code(SETUP),
    code(MPL),
    code(
        """
from metaweight.law import LAWConfig, LAWSearch, train

ds = data.load_digits(flatten=True, seed=0)
c = conditions.compose(ds.x_train, ds.y_train, 10, seed=0, meta_per_class=10,
                       noise="uniform", noise_rate=0.4)
print(f"{len(c.x_train)} training images ({c.corrupted.mean():.1%} wrong), {len(c.x_meta)} clean validation")

# The short-budget configuration of examples/law_digits.py (faster actor/critic than the paper's).
cfg = LAWConfig(stages=10 if FULL else 5, warmup_stages=2 if FULL else 1, epochs=30 if FULL else 8,
                parallel=2, actor_lr=1e-4, critic_lr=1e-3, noise=0.5, noise_decay=0.98,
                normalize_weights=True, label_encoding="scalar")
EPISODES = 100 if FULL else 8
SPEC = "mlp(hidden=100, classes=10)"
search = LAWSearch(SPEC, cfg, seed=0)
result = search.search(c.x_train, c.y_train, c.x_meta, c.y_meta, EPISODES,
                       corrupted=c.corrupted, progress=False)
print(f"{result.episodes_completed} episodes in {result.seconds:.1f}s; total reward first/last round: "
      f"{result.rewards()[:2].mean():+.2f} / {result.rewards()[-2:].mean():+.2f}")
"""
    ),
    md(
        """
## The search's logs

Left: the mean training loss of the weighted target network minus the reference's, per stage, one
line per episode (light = early, dark = late): a strategy that down-weights examples with wrong
labels fits the noisy training labels *less*, so its training loss is higher (positive gap). Right:
the mean weight of corrupted vs
clean examples per stage (the corruption mask is used only for logging)."""
    ),
    code("plots.law_loss_gap(result)"),
    code(
        """
last = result.episodes[-1]
w = np.nanmean(last.example_weights[cfg.warmup_stages:], axis=0)
plots.weight_distributions({"LAW (last episode)": (w, c.corrupted)})
"""
    ),
    md(
        """
## Transfer: training with the learned strategy

The strategy is applied deterministically (no exploration) to fresh networks: the searched MLP and
a small CNN on the 8×8 images, each compared with unweighted training on the same batches."""
    ),
    code(
        """
def cnn(seed):
    return mw.build([mw.Conv2d(16, 3, padding=1), mw.BatchNorm(), mw.ReLU(), mw.MaxPool2d(2),
                     mw.Conv2d(32, 3, padding=1), mw.BatchNorm(), mw.ReLU(), mw.GlobalAvgPool(),
                     mw.Linear(10)], (1, 8, 8), seed=seed)

img = lambda x: x.reshape(-1, 1, 8, 8)
rows = []
for seed in ([0, 1, 2] if FULL else [0]):
    for arch, make, to in [("mlp(100) (searched)", lambda s: SPEC, lambda x: x),
                           ("small CNN (transfer)", cnn, img)]:
        law_run = train(make(seed), to(c.x_train), c.y_train, strategy=result.strategy,
                        x_val=to(c.x_meta), y_val=c.y_meta, seed=seed, corrupted=c.corrupted)
        base = train(make(seed), to(c.x_train), c.y_train, strategy=None, config=cfg,
                     x_val=to(c.x_meta), y_val=c.y_meta, seed=seed)
        rows.append((arch, seed, law_run.trainer.evaluate(to(ds.x_test), ds.y_test)["accuracy"],
                     base.trainer.evaluate(to(ds.x_test), ds.y_test)["accuracy"], law_run.auc(c.corrupted)))
lines = ["| architecture | seed | LAW | unweighted | AUC clean vs corrupted |", "|---|---|---|---|---|"]
lines += [f"| {a} | {s} | {l:.4f} | {b:.4f} | {auc:.3f} |" for a, s, l, b, auc in rows]
display(Markdown("\\n".join(lines)))
"""
    ),
    md(
        """
## With the runner

`method = {name = "law", episodes = ..., <LAWConfig fields>}` runs the search with the meta set as
LAW's validation set and then trains the run's model with the strategy (`search_model` searches on
another architecture). The per-episode logs go to `law_episodes.csv`."""
    ),
    code(
        """
from metaweight.experiments import run_experiment, load_results
config = {
    "name": "law_digits",
    "seeds": [0],
    "defaults": {"dataset": "digits", "condition": {"noise": "uniform", "noise_rate": 0.4},
                 "model": {"name": "mlp", "hidden": [256, 256]}, "epochs": 30 if FULL else 6,
                 "batch_size": 128, "schedule": {"name": "multistep", "fractions": [0.5, 0.65, 0.8]}},
    "grid": {"method": ["erm", {"name": "law", "episodes": 40 if FULL else 4, "stages": 10 if FULL else 3,
                                "warmup_stages": 1, "search_model": {"name": "mlp", "hidden": [100]},
                                "actor_lr": 1e-4, "critic_lr": 1e-3, "noise": 0.5,
                                "normalize_weights": True, "label_encoding": "scalar"}]},
}
report = run_experiment(config, results="results", progress=False, log=None)
display(Markdown(report.markdown))
law_run = [r for r in load_results(report.folder) if r["config"]["method"]["name"] == "law"][0]
plots.law_loss_gap(law_run)
"""
    ),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_l2rw_mnist_imbalance.ipynb": L2RW,
    "03_mwnet_gdw_noisy_labels.ipynb": NOISY,
    "04_law_search.ipynb": LAW,
}


def build(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    # Stable cell ids, so regenerating an unchanged notebook gives an identical file.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def render(cells: list[nbformat.NotebookNode]) -> str:
    nb = build(cells)
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that the notebooks are up to date")
    args = ap.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        text = render(cells)
        path = HERE / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("out of date (run python notebooks/make_notebooks.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
