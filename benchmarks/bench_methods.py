"""Per-step time and peak memory of every weighting method relative to ERM.

For each model (MLP 64-256-256-10 on 8x8 inputs, LeNet-5 on 1x28x28, ResNet-32 on 3x32x32) and
method (ERM, L2RW, MW-Net, GDW), a fresh subprocess builds the model, takes warm-up steps, then
times `--steps` steps (batch 100, meta batch 100, SGD momentum 0.9, wd 5e-4) and reports the
median ms/step and the peak RSS growth over the process's RSS before the first step ("extra
memory"). With PyTorch importable, the same methods are run the official codes' way (double
back-propagation through a functional copy, create_graph=True) in the same run.

Usage:
    python benchmarks/bench_methods.py [--models mlp,lenet,resnet32] [--steps N] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODELS = {
    "mlp": ("mlp(hidden=256x256, classes=10)", (64,)),
    "lenet": ("lenet5(classes=10)", (1, 28, 28)),
    "resnet32": ("resnet32(classes=10)", (3, 32, 32)),
}
METHODS = ["erm", "l2rw", "mwnet", "gdw"]


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def reset_peak() -> None:
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) of this process.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def run_metaweight(model: str, method: str, steps: int, warmup: int, threads: int) -> dict:
    import numpy as np

    import metaweight
    from metaweight import _core

    _core.set_threads(threads)
    spec, shape = MODELS[model]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, *shape)).astype(np.float32)
    y = rng.integers(0, 10, 100).astype(np.int64)
    xm = rng.standard_normal((100, *shape)).astype(np.float32)
    ym = rng.integers(0, 10, 100).astype(np.int64)
    net = _core.network_create(spec, shape, 0)
    tr = _core.trainer_create(net, (0, 0.01, 0.9, 0, 5e-4, 0, 0.9, 0.999, 1e-8), (0, [], 0.1, 0, 0.0, 0), 0)
    _core.trainer_set_method(tr, method, 0)
    meta = method != "erm"
    base = rss_kb()
    reset_peak()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        _core.trainer_step_method(tr, x, y, xm if meta else None, ym if meta else None, None, None)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "impl": "metaweight",
        "model": model,
        "method": method,
        "ms": 1000 * times[len(times) // 2],
        "extra_mb": (peak_kb() - base) / 1024,
        "blas": _core.blas_core(),
        "version": metaweight.__version__,
    }


def run_torch(model: str, method: str, steps: int, warmup: int, threads: int) -> dict:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.func import functional_call

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def basic_block(cin, cout, stride):
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
                self.b1 = nn.BatchNorm2d(cout)
                self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
                self.b2 = nn.BatchNorm2d(cout)
                self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None
                self.stride = stride

            def forward(self, x):
                out = F.relu(self.b1(self.c1(x)))
                out = self.b2(self.c2(out))
                sc = x
                if self.pad is not None:
                    sc = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))
                return F.relu(out + sc)

        return Block()

    if model == "mlp":
        net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        shape = (64,)
    elif model == "lenet":
        net = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10))
        shape = (1, 28, 28)
    else:
        layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
        cin = 16
        for stage, w in enumerate([16, 32, 64]):
            for b in range(5):
                s = 2 if stage > 0 and b == 0 else 1
                layers.append(basic_block(cin, w, s))
                cin = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
        net = nn.Sequential(*layers)
        shape = (3, 32, 32)
    x = torch.randn(100, *shape)
    y = torch.randint(0, 10, (100,))
    xm = torch.randn(100, *shape)
    ym = torch.randint(0, 10, (100,))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    vnet = nn.Sequential(nn.Linear(1, 100), nn.ReLU(), nn.Linear(100, 1), nn.Sigmoid())
    vopt = torch.optim.Adam(vnet.parameters(), 1e-3, weight_decay=1e-4)
    names = [n for n, _ in net.named_parameters()]
    lr = 0.01

    def step():
        if method == "erm":
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
            return
        params = dict(net.named_parameters())
        buffers = {k: v.clone() for k, v in net.named_buffers()}
        if method == "l2rw":
            eps = torch.zeros(100, requires_grad=True)
            out = functional_call(net, (params, buffers), (x,))
            lf = (F.cross_entropy(out, y, reduction="none") * eps).sum()
            grads = torch.autograd.grad(lf, list(params.values()), create_graph=True)
            fast = {n: p - lr * g for (n, p), g in zip(params.items(), grads)}
            lm = F.cross_entropy(functional_call(net, (fast, buffers), (xm,)), ym)
            ge = torch.autograd.grad(lm, eps)[0]
            w = torch.clamp(-ge, min=0)
            w = w / w.sum() if w.sum() > 0 else w
            opt.zero_grad()
            (F.cross_entropy(net(x), y, reduction="none") * w).sum().backward()
            opt.step()
            return
        out = functional_call(net, (params, buffers), (x,))
        cost = F.cross_entropy(out, y, reduction="none")
        v = vnet(cost.detach().view(-1, 1))
        if method == "mwnet":
            lf = (cost * v.view(-1)).mean()
            grads = torch.autograd.grad(lf, list(params.values()), create_graph=True)
        else:
            v = v.repeat(1, 10)
            p = F.softmax(out, 1).detach().clamp(0, 0.999)
            oh = F.one_hot(y, 10).float()
            idx = torch.arange(100)
            v = v.clone()
            v[idx, y] = ((v * p).sum(1) - v[idx, y] * p[idx, y]) / (1 - p[idx, y])
            v.retain_grad()
            g1 = (p - oh) * v / 100
            grads = torch.autograd.grad(out, list(params.values()), grad_outputs=g1, create_graph=True)
        fast = {n: p_ - lr * g for (n, p_), g in zip(params.items(), grads)}
        lm = F.cross_entropy(functional_call(net, (fast, buffers), (xm,)), ym)
        vopt.zero_grad()
        lm.backward()
        vopt.step()
        opt.zero_grad()
        out = net(x)
        if method == "mwnet":
            with torch.no_grad():
                w = vnet(cost.detach().view(-1, 1)).view(-1)
            (F.cross_entropy(out, y, reduction="none") * w).mean().backward()
        else:
            with torch.no_grad():
                w = (v - torch.clamp(100 * v.grad / v.grad.abs().sum(), -0.2, 0.2)).clamp(1e-6, 1e6)
                p = F.softmax(out, 1).clamp(0, 0.999)
                w[idx, y] = ((w * p).sum(1) - w[idx, y] * p[idx, y]) / (1 - p[idx, y])
                g = (p - oh) * w / 100
            out.backward(g)
        opt.step()

    _ = names
    base = rss_kb()
    reset_peak()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"impl": "pytorch", "model": model, "method": method, "ms": 1000 * times[len(times) // 2],
            "extra_mb": (peak_kb() - base) / 1024, "version": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,lenet,resnet32")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: 200 MLP, 50 LeNet, 5 ResNet)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--child", nargs=4, metavar=("IMPL", "MODEL", "METHOD", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, model, method, steps = args.child
        steps = int(steps)
        fn = run_metaweight if impl == "metaweight" else run_torch
        print(json.dumps(fn(model, method, steps, max(2, steps // 10), args.threads)))
        return
    try:
        import torch  # noqa: F401

        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
    impls = ["metaweight"] + (["pytorch"] if have_torch else [])
    results = []
    for model in args.models.split(","):
        steps = args.steps or {"mlp": 200, "lenet": 50, "resnet32": 5}[model]
        for impl in impls:
            for method in args.methods.split(","):
                cmd = [sys.executable, __file__, "--threads", str(args.threads), "--child", impl, model, method, str(steps)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{impl} {model} {method} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results.append(r)
                print(f"  {impl:10s} {model:9s} {method:6s} {r['ms']:9.2f} ms/step  extra {r['extra_mb']:8.1f} MB",
                      flush=True)
    print()
    print(f"threads={args.threads}")
    print("| impl | model | method | ms/step | × ERM time | extra MB | × ERM extra memory |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        erm = next((e for e in results if e["impl"] == r["impl"] and e["model"] == r["model"] and e["method"] == "erm"), None)
        tr = r["ms"] / erm["ms"] if erm else float("nan")
        mr = r["extra_mb"] / erm["extra_mb"] if erm and erm["extra_mb"] > 0 else float("nan")
        print(f"| {r['impl']} | {r['model']} | {r['method']} | {r['ms']:.2f} | {tr:.2f} | {r['extra_mb']:.1f} | {mr:.2f} |")


if __name__ == "__main__":
    main()
