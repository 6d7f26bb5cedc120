"""Time per ERM training step, throughput and peak memory, metaweight vs PyTorch.

For each model (MLP 64-256-256-10 on 8×8 inputs flattened to 64, LeNet-5 on 1×28×28, ResNet-32
on 3×32×32) a fresh subprocess builds the network and an SGD trainer (momentum 0.9, weight decay
5e-4, batch 100), takes warm-up steps, then times single steps (`trainer_step`: forward,
cross-entropy, backward, update) until it has both `--steps` samples and `--min-seconds` of
timing. It reports the median ms/step, images/s (batch / median), and the process's peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`, so interpreter and libraries are included; the
"base" column is the RSS after imports, before the model is built). When `import torch` works
the same models run in PyTorch (eager, `torch.set_num_threads` equal to ours, same batch, loss and
optimizer) in the same run.

Usage:
    python benchmarks/bench_erm.py [--models mlp,lenet,resnet32] [--threads T] [--steps N]
                                   [--min-seconds S] [--no-torch] [--coretype NAME|unset]

`--coretype` sets OPENBLAS_CORETYPE for metaweight's subprocesses ('unset' removes it so the
package picks one from the CPU flags); without it the environment is passed through unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODELS = {
    # name: (metaweight spec, per-example input shape, default timed steps)
    "mlp": ("mlp(hidden=256x256, classes=10)", (64,), 2000),
    "lenet": ("lenet5(classes=10)", (1, 28, 28), 300),
    "resnet32": ("resnet32(classes=10)", (3, 32, 32), 20),
}
BATCH = 100
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def time_steps(step, warmup: int, steps: int, min_seconds: float) -> list[float]:
    for _ in range(warmup):
        step()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < steps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def summarise(impl: str, model: str, times: list[float], base: float, extra: dict) -> dict:
    times = sorted(times)
    med = times[len(times) // 2]
    return {
        "impl": impl, "model": model, "ms": 1000 * med, "ms_min": 1000 * times[0],
        "ms_p90": 1000 * times[int(0.9 * (len(times) - 1))], "samples": len(times),
        "images_per_s": BATCH / med, "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base, **extra,
    }


def run_metaweight(model: str, steps: int, min_seconds: float, threads: int) -> dict:
    import metaweight
    import numpy as np
    from metaweight import _core

    _core.set_threads(threads)
    spec, shape, _ = MODELS[model]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, *shape)).astype(np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)
    base = current_rss_mb()
    net = _core.network_create(spec, shape, 0)
    tr = _core.trainer_create(net, (0, LR, MOMENTUM, 0, WEIGHT_DECAY, 0, 0.9, 0.999, 1e-8),
                              (0, [], 0.1, 0, 0.0, 0), 0)
    times = time_steps(lambda: _core.trainer_step(tr, x, y, None), max(3, steps // 10), steps, min_seconds)
    return summarise("metaweight", model, times, base,
                     {"version": metaweight.__version__, "blas": _core.blas_core(),
                      "coretype_env": os.environ.get("OPENBLAS_CORETYPE", "")})


def torch_model(model: str):
    import torch.nn.functional as F
    from torch import nn

    if model == "mlp":
        return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    if model == "lenet":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10))

    class Block(nn.Module):
        # CIFAR basic block with the option-A shortcut (subsample, zero-pad channels).
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None
            self.stride = stride

        def forward(self, x):
            out = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            sc = x
            if self.pad is not None:
                sc = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))
            return F.relu(out + sc)

    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for stage, width in enumerate([16, 32, 64]):
        for b in range(5):
            layers.append(Block(cin, width, 2 if stage > 0 and b == 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def run_torch(model: str, steps: int, min_seconds: float, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    _, shape, _ = MODELS[model]
    x = torch.randn(BATCH, *shape)
    y = torch.randint(0, 10, (BATCH,))
    base = current_rss_mb()
    net = torch_model(model)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()  # metaweight returns the loss too

    times = time_steps(step, max(3, steps // 10), steps, min_seconds)
    return summarise("pytorch", model, times, base, {"version": torch.__version__})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,lenet,resnet32")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=0, help="minimum timed steps (default: 2000 MLP, 300 LeNet, 20 ResNet)")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="minimum timed seconds per model")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even when importable")
    ap.add_argument("--coretype", default=None, help="OPENBLAS_CORETYPE for metaweight ('unset' removes it)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run each measurement this many times (fresh subprocesses) and keep the one "
                         "with the lowest median: a guard against other load on a shared machine")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--child", nargs=3, metavar=("IMPL", "MODEL", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, model, steps = args.child
        fn = run_metaweight if impl == "metaweight" else run_torch
        print(json.dumps(fn(model, int(steps), args.min_seconds, args.threads)))
        return

    have_torch = False
    if not args.no_torch:
        probe = subprocess.run([sys.executable, "-c", "import torch"], check=False, capture_output=True, text=True)
        have_torch = probe.returncode == 0
        if not have_torch:
            print("PyTorch not importable; timing metaweight only", file=sys.stderr)
    impls = ["metaweight"] + (["pytorch"] if have_torch else [])
    results = []
    for model in args.models.split(","):
        if model not in MODELS:
            raise SystemExit(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
        steps = args.steps or MODELS[model][2]
        for impl in impls:
            env = dict(os.environ)
            if impl == "metaweight" and args.coretype:
                env.pop("OPENBLAS_CORETYPE", None)
                if args.coretype != "unset":
                    env["OPENBLAS_CORETYPE"] = args.coretype
            cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads),
                   "--min-seconds", str(args.min_seconds), "--child", impl, model, str(steps)]
            best = None
            for _ in range(max(1, args.rounds)):
                out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    print(f"{impl} {model} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                if best is None or r["ms"] < best["ms"]:
                    best = r
            if best is None:
                continue
            r = best
            results.append(r)
            print(f"  {impl:10s} {model:9s} {r['ms']:9.3f} ms/step ({r['samples']} steps)  "
                  f"{r['images_per_s']:9.0f} img/s  peak RSS {r['peak_rss_mb']:7.1f} MB", flush=True)

    mw = next((r for r in results if r["impl"] == "metaweight"), None)
    th = next((r for r in results if r["impl"] == "pytorch"), None)
    print()
    print(f"batch {BATCH}, SGD momentum {MOMENTUM}, weight decay {WEIGHT_DECAY}, threads {args.threads}"
          + (f", best of {args.rounds} runs" if args.rounds > 1 else "")
          + (f", metaweight {mw['version']} (OpenBLAS core {mw['blas']})" if mw else "")
          + (f", PyTorch {th['version']}" if th else ""))
    print()
    print("| model | impl | ms/step (median) | min | p90 | images/s | peak RSS MB | base RSS MB | speed-up vs PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ref = next((t for t in results if t["impl"] == "pytorch" and t["model"] == r["model"]), None)
        speed = f"{ref['ms'] / r['ms']:.2f}×" if ref and r["impl"] != "pytorch" else ""
        print(f"| {r['model']} | {r['impl']} | {r['ms']:.3f} | {r['ms_min']:.3f} | {r['ms_p90']:.3f} | "
              f"{r['images_per_s']:.0f} | {r['peak_rss_mb']:.1f} | {r['base_rss_mb']:.1f} | {speed} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
