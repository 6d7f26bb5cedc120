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

`--before PATH` also times a second metaweight build (its package directory's parent, passed as
PYTHONPATH, e.g. a build of the previous commit) in the same run; with `--rounds K` every round
visits every (model, implementation) in turn and the best median of each is kept, so load from
other processes hits all of them alike.

The "% SGEMM" column: the FLOPs of the direct algorithm per step (2·multiply-adds of every
convolution and linear layer in the forward pass, the weight gradient and the input gradient,
which the first layer does not need), per second, over the machine's SGEMM rate measured in the
same run (`bench_gemm.py`'s shapes on the OpenBLAS metaweight links, same threads and core type;
the fastest shape). Winograd convolutions do fewer multiplications than the direct algorithm, so
a step can exceed 100%.
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


def direct_flops(summary: str, batch: int) -> float:
    """FLOPs of one training step by the direct algorithm, from a network summary (see module doc)."""
    import re

    total, first = 0.0, True
    for line in summary.splitlines():
        m = re.match(r"\s*(conv2d|linear) \(([\d, ]+)\) -> \(([\d, ]+)\)\s+params=(\d+)", line)
        if not m:
            continue
        kind, inp, out = m.group(1), [int(v) for v in m.group(2).split(",")], [int(v) for v in m.group(3).split(",")]
        params = int(m.group(4))
        if kind == "linear":
            macs = inp[0] * out[0]
        else:
            cin, cout, ohw = inp[0], out[0], out[1] * out[2]
            k2 = params // (cin * cout)  # a bias adds fewer than cin·cout parameters
            macs = cout * cin * k2 * ohw
        passes = 2 if first else 3  # forward, weight gradient, input gradient
        total += 2.0 * macs * batch * passes
        first = False
    return total


def sgemm_gflops(threads: int, env: dict) -> dict:
    """The machine's SGEMM rate: bench_gemm.py's shapes, fastest one, in a subprocess with `env`."""
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, os.path.join(here, "bench_gemm.py"), "--child", "--threads", str(threads), "--repeats", "9"]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"core": "?", "gflops": 0.0, "shape": "?"}
    r = json.loads(out.stdout.strip().splitlines()[-1])
    shape = max(r["gflops"], key=lambda k: r["gflops"][k])
    return {"core": r["core"], "gflops": r["gflops"][shape], "shape": shape.split()[0] + " " + shape.split()[1]}


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
    extra = {"version": metaweight.__version__, "blas": _core.blas_core(),
             "coretype_env": os.environ.get("OPENBLAS_CORETYPE", ""),
             "flops": direct_flops(_core.network_summary(net), BATCH)}
    if hasattr(_core, "network_conv_algorithms"):
        extra["conv_algorithms"] = "".join("gw"[a - 1] for a in _core.network_conv_algorithms(net))
    return summarise("metaweight", model, times, base, extra)


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
    ap.add_argument("--before", default=None, metavar="PATH",
                    help="also time the metaweight package found on this PYTHONPATH, as 'metaweight-before'")
    ap.add_argument("--child", nargs=3, metavar=("IMPL", "MODEL", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, model, steps = args.child
        fn = run_torch if impl == "pytorch" else run_metaweight
        r = fn(model, int(steps), args.min_seconds, args.threads)
        r["impl"] = impl
        print(json.dumps(r))
        return

    have_torch = False
    if not args.no_torch:
        probe = subprocess.run([sys.executable, "-c", "import torch"], check=False, capture_output=True, text=True)
        have_torch = probe.returncode == 0
        if not have_torch:
            print("PyTorch not importable; timing metaweight only", file=sys.stderr)
    impls = ["metaweight"] + (["metaweight-before"] if args.before else []) + (["pytorch"] if have_torch else [])
    models = args.models.split(",")
    for model in models:
        if model not in MODELS:
            raise SystemExit(f"unknown model {model!r}; choose from {', '.join(MODELS)}")

    def env_for(impl: str) -> dict:
        env = dict(os.environ)
        if impl.startswith("metaweight") and args.coretype:
            env.pop("OPENBLAS_CORETYPE", None)
            if args.coretype != "unset":
                env["OPENBLAS_CORETYPE"] = args.coretype
        if impl == "metaweight-before":
            env["PYTHONPATH"] = args.before
        return env

    gemm = sgemm_gflops(args.threads, env_for("metaweight"))
    best: dict[tuple[str, str], dict] = {}
    for _ in range(max(1, args.rounds)):
        for model in models:
            steps = args.steps or MODELS[model][2]
            for impl in impls:
                cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads),
                       "--min-seconds", str(args.min_seconds), "--child", impl, model, str(steps)]
                out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env_for(impl))
                if out.returncode != 0:
                    print(f"{impl} {model} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                old = best.get((model, impl))
                if old is None or r["ms"] < old["ms"]:
                    best[(model, impl)] = r
                print(f"  {impl:17s} {model:9s} {r['ms']:9.3f} ms/step ({r['samples']} steps)  "
                      f"{r['images_per_s']:9.0f} img/s  peak RSS {r['peak_rss_mb']:7.1f} MB", flush=True)
    results = [best[(m, i)] for m in models for i in impls if (m, i) in best]
    flops = {r["model"]: r["flops"] for r in results if "flops" in r}
    for r in results:
        r["sgemm_gflops"] = gemm["gflops"]
        f = flops.get(r["model"])
        r["sgemm_fraction"] = f / (r["ms"] / 1000) / (gemm["gflops"] * 1e9) if f and gemm["gflops"] else None

    mw = next((r for r in results if r["impl"] == "metaweight"), None)
    th = next((r for r in results if r["impl"] == "pytorch"), None)
    print()
    print(f"batch {BATCH}, SGD momentum {MOMENTUM}, weight decay {WEIGHT_DECAY}, threads {args.threads}"
          + (f", best of {args.rounds} runs" if args.rounds > 1 else "")
          + (f", metaweight {mw['version']} (OpenBLAS core {mw['blas']})" if mw else "")
          + (f", PyTorch {th['version']}" if th else ""))
    print()
    print(f"SGEMM rate: {gemm['gflops']:.0f} GFLOP/s ({gemm['shape']}, OpenBLAS core {gemm['core']}, "
          f"bench_gemm.py shapes, threads {args.threads})")
    print()
    print("| model | impl | ms/step (median) | min | p90 | images/s | % SGEMM | peak RSS MB | base RSS MB "
          "| speed-up vs PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ref = next((t for t in results if t["impl"] == "pytorch" and t["model"] == r["model"]), None)
        speed = f"{ref['ms'] / r['ms']:.2f}×" if ref and r["impl"] != "pytorch" else ""
        frac = f"{100 * r['sgemm_fraction']:.0f}%" if r.get("sgemm_fraction") else ""
        print(f"| {r['model']} | {r['impl']} | {r['ms']:.3f} | {r['ms_min']:.3f} | {r['ms_p90']:.3f} | "
              f"{r['images_per_s']:.0f} | {frac} | {r['peak_rss_mb']:.1f} | {r['base_rss_mb']:.1f} | {speed} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
