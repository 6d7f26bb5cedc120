"""Checks an installed metaweight wheel where neither Swift nor a system OpenBLAS exists.

Run by scripts/wheel_test.sh with the Python of a fresh virtual environment inside a minimal Debian
root (numpy is the only other package there). It checks, and exits non-zero on any failure:

1. metaweight is imported from the environment's site-packages, not from a source tree, and the
   OpenBLAS it runs is the copy vendored in the wheel (``metaweight.libs/``), read from the
   process's memory map;
2. the OpenBLAS kernel choice: with ``OPENBLAS_CORETYPE`` unset the kernel in use is the one
   metaweight picked for this CPU (``metaweight._blas``; OpenBLAS's own detection when it picks
   none), and a user's ``OPENBLAS_CORETYPE`` (Haswell on an AVX2 CPU) is honoured by the vendored
   library; ``python -m metaweight info`` reports the kernel;
3. training on a synthetic problem (numpy only: Gaussian blobs, 40% uniform label noise, a clean
   meta set): ERM and MW-Net both learn it, and MW-Net gives the corrupted labels a lower mean
   weight than the clean ones;
4. a checkpoint round trip: a fresh trainer loaded from the saved file predicts exactly what the
   trained one predicts, and one more step from each gives the same loss.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np


def check(ok: bool, what: str) -> None:
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        sys.exit(1)


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    return set()


def mapped_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process."""
    paths = set()
    with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
        for line in f:
            path = line.split()[-1]
            if "openblas" in os.path.basename(path).lower():
                paths.add(path)
    return sorted(paths)


def kernel_in_child(env_core: str | None) -> str:
    """The kernel metaweight reports in a fresh interpreter (the choice happens at import)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    if env_core:
        env["OPENBLAS_CORETYPE"] = env_core
    out = subprocess.run(
        [sys.executable, "-c", "import metaweight as mw; print(mw.blas_core())"],
        env=env, check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def blobs(n: int, classes: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs in 16-d: unit-variance noise around class means ~5 standard deviations apart
    (norm 2.5 * sqrt(2) on nearly orthogonal random directions), so the Bayes accuracy is ~0.98."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(classes, dim)).astype(np.float32)
    centres *= 2.5 / np.linalg.norm(centres, axis=1, keepdims=True) * np.sqrt(2.0)
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(size=(n, dim)).astype(np.float32)
    return x.astype(np.float32), y.astype(np.int64)


def main() -> None:
    import metaweight as mw
    from metaweight import _blas, conditions

    site = sysconfig.get_paths()["purelib"]
    check(mw.__file__.startswith(site), f"metaweight {mw.__version__} imported from {os.path.dirname(mw.__file__)}")

    # 1. The vendored OpenBLAS is the one in use.
    libs = os.path.join(os.path.dirname(os.path.dirname(mw.__file__)), "metaweight.libs")
    mapped = mapped_openblas()
    ours = [p for p in mapped if p.startswith(libs + os.sep)]
    check(len(ours) == 1, f"OpenBLAS loaded from the wheel: {ours}")
    others = [p for p in mapped if not p.startswith(site)]
    check(not others, f"no OpenBLAS from outside the environment is mapped (numpy's own is in site-packages): {mapped}")

    # 2. The kernel choice.
    chosen = _blas.chosen_coretype()
    core = mw.blas_core()
    print(f"      kernel in use: {core} (metaweight's choice for this CPU: {chosen}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')})")
    print(f"      {mw.blas_config()}")
    check(bool(core), "OpenBLAS reports a kernel")
    if chosen is not None:
        check(core.lower() == chosen.lower(), f"the kernel in use ({core}) is metaweight's choice ({chosen})")
    forced = "Haswell" if {"avx2", "fma"} <= cpu_flags() else "Prescott"
    got = kernel_in_child(forced)
    check(got.lower() == forced.lower(), f"OPENBLAS_CORETYPE={forced} set by the user is honoured (kernel {got})")
    info = subprocess.run([sys.executable, "-m", "metaweight", "info"], check=True, capture_output=True,
                          text=True).stdout
    print("      " + info.replace("\n", "\n      ").rstrip())
    check(f"OpenBLAS kernel: {core}" in info, "python -m metaweight info reports the kernel")

    # 3. Training: ERM and MW-Net on blobs with 40% uniform noise.
    classes = 4
    x, y = blobs(2000, classes, 16, seed=0)
    x_test, y_test = blobs(1000, classes, 16, seed=1)
    split = conditions.meta_split(y, per_class=10, num_classes=classes, seed=0)
    x_meta, y_meta = x[split.meta_indices], y[split.meta_indices]
    x_train, y_clean = x[split.train_indices], y[split.train_indices]
    noisy = conditions.uniform_noise(y_clean, 0.4, num_classes=classes, seed=0)
    check(0.2 < noisy.corrupted.mean() < 0.4, f"{noisy.corrupted.mean():.1%} of the training labels corrupted")

    def trainer(method: mw.Method) -> mw.Trainer:
        model = mw.mlp(16, hidden=(32,), num_classes=classes, seed=0)
        return mw.Trainer(model, mw.SGD(lr=0.05, momentum=0.9), mw.Constant(), method=method, seed=0)

    results = {}
    for name, method in (("erm", mw.ERM()), ("mwnet", mw.MWNet(lr=0.1))):
        t = trainer(method)
        start = time.perf_counter()
        meta = None if name == "erm" else (x_meta, y_meta)
        history = t.fit(x_train, noisy.labels, epochs=20, batch_size=100, meta=meta, record_weights=True,
                        progress=False)
        acc = t.evaluate(x_test, y_test)["accuracy"]
        w = history[-1].example_weights
        results[name] = (t, w)
        print(f"      {name}: test accuracy {acc:.4f}, mean weight clean {w[~noisy.corrupted].mean():.4f} "
              f"corrupted {w[noisy.corrupted].mean():.4f} ({time.perf_counter() - start:.2f} s)")
        # Bayes accuracy ~0.98 and 40% uniform noise keeps the true class the most frequent label:
        # both methods find the boundary (measured 0.953 for ERM, which starts to fit the noise by
        # epoch 20, and 0.978 for MW-Net).
        check(acc > 0.9, f"{name} learns the problem (test accuracy {acc:.4f} > 0.9)")
    w = results["mwnet"][1]
    # Measured 0.365-0.391 (clean) against 0.010-0.011 (corrupted) under the Haswell, SkylakeX,
    # Cooperlake and Zen kernels: a factor of 4 is far from the boundary.
    check(w[noisy.corrupted].mean() < 0.25 * w[~noisy.corrupted].mean(),
          "MW-Net's mean weight on corrupted labels is under a quarter of that on clean labels")

    # 4. Checkpoint round trip.
    t = results["mwnet"][0]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.ckpt")
        t.save(path)
        restored = mw.Trainer.from_checkpoint(path, mw.mlp(16, hidden=(32,), num_classes=classes, seed=7),
                                              mw.SGD(lr=0.05, momentum=0.9), mw.Constant(),
                                              method=mw.MWNet(lr=0.1), seed=0)
    check(np.array_equal(restored.logits(x_test), t.logits(x_test)),
          "the restored trainer's logits equal the trained one's exactly")
    batch = np.arange(100)
    a = t.step(x_train[batch], noisy.labels[batch], x_meta=x_meta[:32], y_meta=y_meta[:32])
    b = restored.step(x_train[batch], noisy.labels[batch], x_meta=x_meta[:32], y_meta=y_meta[:32])
    check(a.loss == b.loss and a.meta_loss == b.meta_loss and np.array_equal(a.weights, b.weights),
          f"one more step from each gives the same loss ({a.loss:.6f}) and weights")
    print("wheel smoke test passed", flush=True)


if __name__ == "__main__":
    main()
