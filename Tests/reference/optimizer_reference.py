#!/usr/bin/env python3
"""Reference values for metaweight's optimizers and learning-rate schedules.

Computes, in float64 with numpy, the parameter trajectories of a few optimizer steps and the
learning rates of a few schedules, following PyTorch's ``torch.optim`` formulas exactly, and prints
them as Swift source for ``Tests/MetaweightCoreTests/OptimizerReferenceValues.swift``:

    python3 Tests/reference/optimizer_reference.py > Tests/MetaweightCoreTests/OptimizerReferenceValues.swift

With ``--check-torch`` it prints nothing to stdout and instead replays every case with torch.optim
and torch.optim.lr_scheduler in float64 (when torch is installed), reporting the largest difference
on stderr and exiting non-zero if any exceeds 1e-12.

Inputs. A fixed parameter vector θ₀ (6 values) and a fixed sequence of 5 gradients g₁..g₅ (the
gradients do not depend on θ; an optimizer is a function of (θ, g, state), so this tests the update
rule alone). Every input and hyper-parameter is first rounded to float32 (``f32`` below), because
that is what the Swift core receives; the arithmetic is then done exactly in float64, so the Swift
float32 result differs from the reference only by its own rounding (well below 1e-6 relative).

Formulas (t = 1, 2, … is the step number; λ = weight decay; η = learning rate):

SGD (torch.optim.SGD, dampening = 0):
    g  ← ∇ + λ θ                                  (weight_decay != 0)
    b  ← g                         at t = 1       (torch: buf = clone(g))
    b  ← μ b + g                   at t > 1       (momentum != 0)
    d  ← g + μ b   if nesterov, else  b           (d = g when μ = 0)
    θ  ← θ − η d
  The Swift core keeps b = 0 before the first step, so μ·0 + g = g reproduces the t = 1 case.

Adam (torch.optim.Adam, amsgrad = False, maximize = False):
    g  ← ∇ + λ θ                                  (L2 weight decay, added to the gradient)
    m  ← β₁ m + (1 − β₁) g
    v  ← β₂ v + (1 − β₂) g²
    m̂ ← m / (1 − β₁ᵗ)
    θ  ← θ − η m̂ / (√v / √(1 − β₂ᵗ) + ε)
  torch writes this as step_size = η / (1 − β₁ᵗ), denom = √v / √(1 − β₂ᵗ) + ε,
  θ ← θ − step_size · m / denom; the same expression is used here.

AdamW (torch.optim.AdamW): as Adam with g = ∇, preceded by the decoupled decay
    θ  ← θ (1 − η λ)

Schedules (lr at the update with 0-based index s, i.e. torch's scheduler.last_epoch = s):
    MultiStepLR(milestones, γ):    η_s = η₀ · γ^|{m ∈ milestones : m ≤ s}|
    CosineAnnealingLR(T_max, η_min) (closed form):
                                   η_s = η_min + (η₀ − η_min) · (1 + cos(π s / T_max)) / 2,  s ≤ T_max
      (torch's cosine is periodic past T_max; metaweight holds η_min there, so only s ≤ T_max is
      compared with torch.)
    Linear warm-up of W steps then constant = LinearLR(start_factor = 1/W, end_factor = 1,
    total_iters = W − 1):          η_s = η₀ · (1/W + (1 − 1/W) · min(s, W − 1) / (W − 1))
                                       = η₀ · min(s + 1, W) / W
"""

import math
import sys

import numpy as np


def f32(x):
    """Rounds to the nearest float32 and returns float64 (the value the Swift core receives)."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


STEPS = 5
THETA0 = f32([0.5, -1.25, 2.0, -0.75, 1.5, 0.125])
GRADS = f32(
    [
        [0.25, -0.5, 1.0, 0.125, -2.0, 0.75],
        [-0.375, 0.25, 0.5, -1.0, 1.5, 0.0625],
        [0.5, 0.75, -0.25, 0.5, -0.5, -1.25],
        [0.125, -1.5, 0.375, 0.25, 1.0, 0.5],
        [-0.625, 0.5, -0.75, -0.375, 0.25, 1.0],
    ]
)
assert GRADS.shape == (STEPS, THETA0.size)


def sgd(lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    lr, momentum, weight_decay = f32(lr), f32(momentum), f32(weight_decay)
    theta = THETA0.copy()
    buf = None
    out = []
    for grad in GRADS:
        g = grad + weight_decay * theta if weight_decay != 0 else grad.copy()
        if momentum != 0:
            buf = g.copy() if buf is None else momentum * buf + g
            d = g + momentum * buf if nesterov else buf
        else:
            d = g
        theta = theta - lr * d
        out.append(theta.copy())
    return out


def adam(lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
    lr, beta1, beta2, eps, weight_decay = f32(lr), f32(beta1), f32(beta2), f32(eps), f32(weight_decay)
    theta = THETA0.copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    out = []
    for t, grad in enumerate(GRADS, start=1):
        g = grad.copy()
        if decoupled:
            theta = theta * (1 - lr * weight_decay)
        elif weight_decay != 0:
            g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        step_size = lr / (1 - beta1**t)
        denom = np.sqrt(v) / math.sqrt(1 - beta2**t) + eps
        theta = theta - step_size * m / denom
        out.append(theta.copy())
    return out


def multistep(lr, milestones, gamma, n):
    lr, gamma = f32(lr), f32(gamma)
    return [float(lr * gamma ** sum(1 for m in milestones if m <= s)) for s in range(n)]


def cosine(lr, total, min_lr, n):
    lr, min_lr = f32(lr), f32(min_lr)
    return [float(min_lr + (lr - min_lr) * (1 + math.cos(math.pi * s / total)) / 2) for s in range(n)]


def warmup_constant(lr, warmup, n):
    lr = f32(lr)
    start = 1.0 / warmup
    return [float(lr * (start + (1 - start) * min(s, warmup - 1) / (warmup - 1))) for s in range(n)]


# name, kind, hyper-parameters, trajectory
OPTIMIZER_CASES = [
    ("sgdPlain", "sgd", dict(lr=0.1), sgd(0.1)),
    ("sgdMomentumWeightDecay", "sgd", dict(lr=0.1, momentum=0.9, weight_decay=5e-4),
     sgd(0.1, momentum=0.9, weight_decay=5e-4)),
    ("sgdNesterov", "sgd", dict(lr=0.1, momentum=0.9, nesterov=True), sgd(0.1, momentum=0.9, nesterov=True)),
    ("adamL2", "adam", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-4),
     adam(0.01, 0.9, 0.999, 1e-8, weight_decay=1e-4)),
    ("adamW", "adam", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, decoupled=True),
     adam(0.01, 0.9, 0.999, 1e-8, weight_decay=1e-2, decoupled=True)),
]

# name, kind, settings, learning rates for s = 0, 1, …
SCHEDULE_CASES = [
    ("multiStep", "multiStep", dict(lr=0.1, milestones=[3, 6], gamma=0.1), multistep(0.1, [3, 6], 0.1, 10)),
    ("cosine", "cosine", dict(lr=0.1, total=10, min_lr=0.001), cosine(0.1, 10, 0.001, 11)),
    ("warmupConstant", "constant", dict(lr=0.1, warmup=4), warmup_constant(0.1, 4, 8)),
]


def lit(x):
    """A Swift Double literal that round-trips exactly."""
    x = float(x)
    assert math.isfinite(x)
    return repr(x)


def vec(a):
    return "[" + ", ".join(lit(x) for x in a) + "]"


def main(out=sys.stdout):
    w = out.write
    w("// Generated by Tests/reference/optimizer_reference.py — do not edit.\n")
    w("// Regenerate: python3 Tests/reference/optimizer_reference.py > Tests/MetaweightCoreTests/OptimizerReferenceValues.swift\n")
    w("// float64 reference trajectories of torch.optim's SGD/Adam/AdamW and lr schedules (see the script).\n\n")
    w("/// One optimizer run: hyper-parameters and θ after each of the steps.\n")
    w("struct OptimizerReferenceCase: Sendable {\n")
    w("  let name: String\n  let kind: String\n  let lr: Double\n  let momentum: Double\n  let nesterov: Bool\n")
    w("  let weightDecay: Double\n  let decoupled: Bool\n  let beta1: Double\n  let beta2: Double\n  let epsilon: Double\n")
    w("  /// θ after step 1, 2, ….\n  let trajectory: [[Double]]\n}\n\n")
    w("/// One schedule: settings and the learning rate of the updates with index 0, 1, ….\n")
    w("struct ScheduleReferenceCase: Sendable {\n")
    w("  let name: String\n  let kind: String\n  let baseLR: Double\n  let milestones: [Int64]\n  let gamma: Double\n")
    w("  let totalSteps: Int64\n  let minLR: Double\n  let warmupSteps: Int64\n  let learningRates: [Double]\n}\n\n")
    w("enum OptimizerReference {\n")
    w(f"  /// θ₀.\n  static let initialParams: [Double] = {vec(THETA0)}\n")
    w("  /// The gradient of each step.\n  static let gradients: [[Double]] = [\n")
    for g in GRADS:
        w(f"    {vec(g)},\n")
    w("  ]\n\n")
    for name, kind, hp, traj in OPTIMIZER_CASES:
        w(f"  static let {name} = OptimizerReferenceCase(\n")
        w(f"    name: \"{name}\", kind: \"{kind}\", lr: {lit(hp['lr'])}, momentum: {lit(hp.get('momentum', 0.0))},\n")
        w(f"    nesterov: {'true' if hp.get('nesterov') else 'false'}, weightDecay: {lit(hp.get('weight_decay', 0.0))},\n")
        w(f"    decoupled: {'true' if hp.get('decoupled') else 'false'}, beta1: {lit(hp.get('beta1', 0.9))}, ")
        w(f"beta2: {lit(hp.get('beta2', 0.999))}, epsilon: {lit(hp.get('eps', 1e-8))},\n")
        w("    trajectory: [\n")
        for theta in traj:
            w(f"      {vec(theta)},\n")
        w("    ])\n\n")
    for name, kind, st, lrs in SCHEDULE_CASES:
        ms = "[" + ", ".join(str(m) for m in st.get("milestones", [])) + "]"
        w(f"  static let {name} = ScheduleReferenceCase(\n")
        w(f"    name: \"{name}\", kind: \"{kind}\", baseLR: {lit(st['lr'])}, milestones: {ms}, ")
        w(f"gamma: {lit(st.get('gamma', 0.1))},\n")
        w(f"    totalSteps: {st.get('total', 0)}, minLR: {lit(st.get('min_lr', 0.0))}, warmupSteps: {st.get('warmup', 0)},\n")
        w(f"    learningRates: {vec(lrs)})\n\n")
    w("  static let optimizerCases = [" + ", ".join(c[0] for c in OPTIMIZER_CASES) + "]\n")
    w("  static let scheduleCases = [" + ", ".join(c[0] for c in SCHEDULE_CASES) + "]\n")
    w("}\n")


def check_against_torch():
    """Optional cross-check (``--check-torch``): replays every case with torch.optim in float64."""
    import torch

    def run(make_opt, traj):
        p = torch.nn.Parameter(torch.tensor(THETA0, dtype=torch.float64))
        opt = make_opt([p])
        worst = 0.0
        for grad, expected in zip(GRADS, traj):
            p.grad = torch.tensor(grad, dtype=torch.float64)
            opt.step()
            worst = max(worst, float(np.max(np.abs(p.detach().numpy() - expected))))
        return worst

    f = lambda x: float(f32(x))  # noqa: E731
    makers = {
        "sgdPlain": lambda ps: torch.optim.SGD(ps, lr=f(0.1)),
        "sgdMomentumWeightDecay": lambda ps: torch.optim.SGD(ps, lr=f(0.1), momentum=f(0.9), weight_decay=f(5e-4)),
        "sgdNesterov": lambda ps: torch.optim.SGD(ps, lr=f(0.1), momentum=f(0.9), nesterov=True),
        "adamL2": lambda ps: torch.optim.Adam(ps, lr=f(0.01), betas=(f(0.9), f(0.999)), eps=f(1e-8),
                                              weight_decay=f(1e-4), foreach=False),
        "adamW": lambda ps: torch.optim.AdamW(ps, lr=f(0.01), betas=(f(0.9), f(0.999)), eps=f(1e-8),
                                              weight_decay=f(1e-2), foreach=False),
    }
    ok = True
    for name, _, _, traj in OPTIMIZER_CASES:
        worst = run(makers[name], traj)
        print(f"torch {name}: max |Δθ| = {worst:.3g}", file=sys.stderr)
        ok &= worst < 1e-12

    def lrs(make_sched, n, lr):
        p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        opt = torch.optim.SGD([p], lr=lr)
        sched = make_sched(opt)
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    S = torch.optim.lr_scheduler
    sched_makers = {
        "multiStep": lambda o: S.MultiStepLR(o, milestones=[3, 6], gamma=f(0.1)),
        "cosine": lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=f(0.001)),
        "warmupConstant": lambda o: S.LinearLR(o, start_factor=1 / 4, end_factor=1.0, total_iters=3),
    }
    for name, _, _, expected in SCHEDULE_CASES:
        got = lrs(sched_makers[name], len(expected), f(0.1))
        worst = max(abs(a - b) for a, b in zip(got, expected))
        print(f"torch {name}: max |Δlr| = {worst:.3g}", file=sys.stderr)
        ok &= worst < 1e-12
    return ok


if __name__ == "__main__":
    if "--check-torch" in sys.argv[1:]:
        sys.exit(0 if check_against_torch() else 1)
    main()
