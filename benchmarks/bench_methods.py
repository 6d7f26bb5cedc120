"""Per-step time and peak memory of every weighting method relative to ERM.

For each model (MLP 64-256-256-10 on 8x8 inputs, LeNet-5 on 1x28x28, ResNet-32 on 3x32x32) and
method (ERM, L2RW, MW-Net and GDW, the last two in both memory modes: `memory=fast`, a separate
activation tape for the meta batch, and `memory=low`, the meta batch's tape laid over the train
tape's dead activations), with batch 100, meta batch 100, SGD momentum 0.9, wd 5e-4:

- time: one subprocess per (implementation, model) builds every method's trainer and takes their
  steps interleaved (`--rounds` rounds, each method's `--steps` steps per round in a shuffled
  order); the ratio to ERM is taken within each round and its median reported, so load that
  drifts over the run (a shared machine) cancels. ms/step is the median over all rounds.
- memory: one fresh subprocess per (implementation, model, method) takes a few steps and reports
  the peak RSS growth over its RSS before the first step ("extra memory"): the activations,
  scratch and meta buffers a step allocates (parameters and optimizer state exist before).
  RSS moves in pages and allocator arenas, so for the MLP (well under a megabyte) it is mostly
  noise; metaweight's runs therefore also report the exact heap bytes (glibc `mallinfo2`, in use
  including mmapped blocks) that the network, trainer and method hold after the steps, over
  the heap before the network was created ("held": parameters, optimizer state, gradients,
  tapes, meta buffers; a step allocates nothing that outlives it), and the part of it allocated
  by the steps themselves ("step-held", comparable to the RSS column).

With PyTorch importable, the methods are also run the official codes' way (double
back-propagation through a functional copy, create_graph=True) in the same run, and its ratios to
its own ERM step are printed beside metaweight's (one PyTorch variant serves both memory modes).

Usage:
    python benchmarks/bench_methods.py [--models mlp,lenet,resnet32] [--rounds R] [--steps N]
        [--threads T] [--no-torch] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import statistics
import subprocess
import sys
import time

MODELS = {
    "mlp": ("mlp(hidden=256x256, classes=10)", (64,)),
    "lenet": ("lenet5(classes=10)", (1, 28, 28)),
    "resnet32": ("resnet32(classes=10)", (3, 32, 32)),
}
METHODS = ["erm", "l2rw", "mwnet(memory=fast)", "mwnet(memory=low)", "gdw(memory=fast)", "gdw(memory=low)"]
# Defaults per model: (rounds, steps per method per round).
DEFAULT_SCHEDULE = {"mlp": (30, 20), "lenet": (15, 4), "resnet32": (5, 1)}


def base_method(method: str) -> str:
    """The method name without options: `mwnet(memory=low)` -> `mwnet`."""
    return method.split("(", 1)[0]


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


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_bytes() -> int:
    """Bytes of the C heap in use (glibc): small blocks plus mmapped ones; -1 where unavailable."""
    try:
        libc = ctypes.CDLL(None)
        f = libc.mallinfo2
    except (OSError, AttributeError):
        return -1
    f.restype = _MallInfo2
    info = f()
    return int(info.uordblks + info.hblkhd)


# The heap in use just before the last `make_metaweight_step` created its network.
_HEAP_BEFORE_MODEL = [-1]


def reset_peak() -> None:
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) of this process.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def make_metaweight_step(model: str, method: str, threads: int):
    """A closure taking one metaweight step of `method` on `model` (batch and meta batch 100)."""
    import numpy as np
    from metaweight import _core

    _core.set_threads(threads)
    spec, shape = MODELS[model]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, *shape)).astype(np.float32)
    y = rng.integers(0, 10, 100).astype(np.int64)
    xm = rng.standard_normal((100, *shape)).astype(np.float32)
    ym = rng.integers(0, 10, 100).astype(np.int64)
    _HEAP_BEFORE_MODEL[0] = heap_bytes()
    net = _core.network_create(spec, shape, 0)
    tr = _core.trainer_create(net, (0, 0.01, 0.9, 0, 5e-4, 0, 0.9, 0.999, 1e-8), (0, [], 0.1, 0, 0.0, 0), 0)
    _core.trainer_set_method(tr, method, 0)
    meta = method != "erm"

    def step() -> None:
        _core.trainer_step(tr, x, y, None, xm if meta else None, ym if meta else None, None, None)

    return step


def measure_memory(make, model: str, method: str, threads: int, steps: int) -> dict:
    _HEAP_BEFORE_MODEL[0] = -1
    step = make(model, method, threads)
    base = rss_kb()
    heap_model = _HEAP_BEFORE_MODEL[0]
    heap_step = heap_bytes()
    reset_peak()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    heap = heap_bytes()
    exact = heap_model >= 0 and heap >= 0
    return {"model": model, "method": method, "extra_mb": (peak_kb() - base) / 1024,
            "held_mb": (heap - heap_model) / 2**20 if exact else float("nan"),
            "step_held_mb": (heap - heap_step) / 2**20 if exact else float("nan"),
            "ms_alone": 1000 * statistics.median(times[1:] or times)}


def measure_time(make, model: str, methods: list[str], threads: int, rounds: int, steps: int) -> list[dict]:
    """Interleaved timing: per round, each method's `steps` steps in a shuffled order."""
    fns = {m: make(model, m, threads) for m in methods}
    for fn in fns.values():  # warm-up: buffers allocated, caches and threads warm
        fn()
        fn()
    per_round: dict[str, list[float]] = {m: [] for m in methods}
    order = list(methods)
    rnd = random.Random(0)
    for _ in range(rounds):
        rnd.shuffle(order)
        for m in order:
            ts = []
            for _ in range(steps):
                t0 = time.perf_counter()
                fns[m]()
                ts.append(time.perf_counter() - t0)
            per_round[m].append(statistics.median(ts))
    erm = per_round["erm"]
    out = []
    for m in methods:
        ratios = sorted(t / e for t, e in zip(per_round[m], erm))
        out.append({"model": model, "method": m, "ms": 1000 * statistics.median(per_round[m]),
                    "ratio": statistics.median(ratios), "ratio_lo": ratios[len(ratios) // 4],
                    "ratio_hi": ratios[(3 * len(ratios)) // 4]})
    return out


def make_torch_step(model: str, method: str, threads: int):
    """A closure taking one PyTorch step of `method` (double back-propagation) on `model`."""
    import torch
    import torch.nn.functional as F
    from torch import nn
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

    method = base_method(method)

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
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,lenet,resnet32")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated; erm is always included")
    ap.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default: 30 MLP, 15 LeNet, 5 ResNet)")
    ap.add_argument("--steps", type=int, default=0, help="steps per method per round (default: 20 MLP, 4 LeNet, 1 ResNet)")
    ap.add_argument("--memory-steps", type=int, default=4, help="steps of each memory subprocess")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--child", nargs=6, metavar=("KIND", "IMPL", "MODEL", "METHODS", "ROUNDS", "STEPS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, impl, model, methods, rounds, steps = args.child
        make = make_metaweight_step if impl == "metaweight" else make_torch_step
        if kind == "mem":
            print(json.dumps(measure_memory(make, model, methods, args.threads, int(steps))))
        else:
            print(json.dumps(measure_time(make, model, methods.split(";"), args.threads, int(rounds), int(steps))))
        return
    have_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401

            have_torch = True
        except ImportError:
            pass
    methods = [m for m in args.methods.split(",") if m and m != "erm"]
    methods = ["erm"] + methods

    def child(*fields: str) -> dict | list | None:
        cmd = [sys.executable, __file__, "--threads", str(args.threads), "--child", *fields]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{' '.join(fields)} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
            return None
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows = []
    for model in args.models.split(","):
        rounds, steps = DEFAULT_SCHEDULE[model]
        rounds, steps = args.rounds or rounds, args.steps or steps
        for impl in ["metaweight"] + (["pytorch"] if have_torch else []):
            ms = methods if impl == "metaweight" else list(dict.fromkeys(base_method(m) for m in methods))
            timed = child("time", impl, model, ";".join(ms), str(rounds), str(steps)) or []
            by_method = {r["method"]: r for r in timed}
            for m in ms:
                mem = child("mem", impl, model, m, "0", str(args.memory_steps))
                nan = float("nan")
                r = {"impl": impl, **by_method.get(m, {"model": model, "method": m}),
                     "extra_mb": mem["extra_mb"] if mem else nan,
                     "held_mb": mem.get("held_mb", nan) if mem else nan,
                     "step_held_mb": mem.get("step_held_mb", nan) if mem else nan}
                rows.append(r)
                print(f"  {impl:10s} {model:9s} {m:18s} {r.get('ms', nan):9.2f} ms/step "
                      f"x{r.get('ratio', nan):.2f}  extra {r['extra_mb']:8.1f} MB  held {r['held_mb']:8.2f} MB "
                      f"step-held {r['step_held_mb']:8.2f} MB", flush=True)

    def find(impl: str, model: str, method: str) -> dict | None:
        return next((r for r in rows if r["impl"] == impl and r["model"] == model and r["method"] == method), None)

    for r in rows:
        erm = find(r["impl"], r["model"], "erm")
        for key, ratio in (("extra_mb", "memory_ratio"), ("held_mb", "held_ratio"), ("step_held_mb", "step_held_ratio")):
            ok = erm and erm[key] > 0
            r[ratio] = r[key] / erm[key] if ok else float("nan")
    print()
    print(f"threads={args.threads}; × ERM time: median over rounds of the per-round ratio (interquartile range)")
    torch_cols = " PyTorch × ERM time | PyTorch × ERM extra memory |" if have_torch else ""
    print(f"| model | method | ms/step | × ERM time | extra MB (peak RSS) | × ERM | held MB (heap) | × ERM "
          f"| step-held MB | × ERM |{torch_cols}")
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if have_torch else ""))
    nan = float("nan")
    for r in rows:
        if r["impl"] != "metaweight":
            continue
        line = (f"| {r['model']} | {r['method']} | {r.get('ms', nan):.2f} | {r.get('ratio', nan):.2f} "
                f"({r.get('ratio_lo', nan):.2f}–{r.get('ratio_hi', nan):.2f}) | {r['extra_mb']:.1f} | "
                f"{r['memory_ratio']:.2f} | {r['held_mb']:.2f} | {r['held_ratio']:.2f} | "
                f"{r['step_held_mb']:.2f} | {r['step_held_ratio']:.2f} |")
        if have_torch:
            t = find("pytorch", r["model"], base_method(r["method"])) or {}
            line += f" {t.get('ratio', nan):.2f} | {t.get('memory_ratio', nan):.2f} |"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
