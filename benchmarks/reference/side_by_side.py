"""Side-by-side harness: the official MW-Net / GDW / L2RW training steps (PyTorch, CPU) against
metaweight, on identical data, batches, initial parameters and seeds.

Three kinds of code live here, marked in the source:

* OFFICIAL MODULES: ``VNet``, ``MetaModule``, ``MetaLinear``, ``MetaConv2d`` are imported from the
  official repositories' ``resnet.py`` when a checkout path is given (``--mwnet-repo``,
  ``--gdw-repo``). Without one (CI, the fast test) the harness uses ``_fallback``, a minimal
  re-implementation of those classes copied from xjtushujun/meta-weight-net resnet.py
  (commit 3f1800f, lines 9-134 and 275-291). No patch of the official modules is needed on CPU:
  their ``to_var`` only calls ``.cuda()`` when CUDA is available.
* TRANSCRIPTIONS: ``mwnet_official_step``, ``gdw_official_step`` and ``l2rw_official_step`` are the
  bodies of the official ``train()`` loops (one batch each), line by line, with only the CUDA
  calls removed, the data loaders replaced by the batches the harness draws, and the virtual-step
  learning rate passed in (the official scripts compute it from their own schedule, equal to the
  classifier's current rate; the harness uses the shared MultiStep schedule on both sides). The
  L2RW one is a PyTorch transcription of the TensorFlow ``reweight_autodiff`` (uber-research/
  learning-to-reweight-examples, commit 0b616c9, mnist/reweight.py lines 136-154) and its training
  op (mnist/mnist_train.py lines 319, 381-395), on a softmax classifier instead of the binary
  sigmoid LeNet.
* HARNESS: models in the official style (``MetaModule`` + ``MetaLinear``/``MetaConv2d``) with the
  layer layout of ``mw.mlp`` / ``mw.lenet5``, weight copying from metaweight (network parameters,
  and V's parameters, optimizer and Adam state, read from a metaweight checkpoint since the Python
  API does not expose them), the shared data/batch pipeline, metrics, the single-step check and
  the CLI.

Usage (see README.md)::

    python benchmarks/reference/side_by_side.py check  --mwnet-repo /tmp/mwnet --gdw-repo /tmp/gdw
    python benchmarks/reference/side_by_side.py run    --mwnet-repo /tmp/mwnet --gdw-repo /tmp/gdw \\
        --l2rw-repo /tmp/l2rw --methods mwnet gdw l2rw --datasets mnist digits --noises flip uniform
    python benchmarks/reference/side_by_side.py table  benchmarks/reference/results/*.json
"""

from __future__ import annotations

import argparse
import copy
import glob
import importlib.util
import json
import os
import struct
import sys
import tempfile
import time
import types
import zlib
from typing import Any

import numpy as np

import metaweight as mw
from metaweight import conditions, data

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSS_GRID = [0.0, 1.0, 2.0, 4.0, 8.0]
MNIST_DIR = "/work/shared/data/mnist-t10k"
HIDDEN_V = 100

# =====================================================================================================
# OFFICIAL MODULES: fallback re-implementation (used only when no official checkout is given).
# Copied from xjtushujun/meta-weight-net resnet.py @3f1800f: to_var (l. 9-12), MetaModule (l. 15-92),
# MetaLinear (l. 95-107), MetaConv2d (l. 110-134), VNet (l. 275-291); GDW's resnet.py has the same
# classes (l. 14-, 94-, 109-, 274-284). Unused methods (copy, detach branch) are left out.
# =====================================================================================================


def _build_fallback() -> types.SimpleNamespace:
    from torch.autograd import Variable

    def to_var(x, requires_grad=True):
        if torch.cuda.is_available():
            x = x.cuda()
        return Variable(x, requires_grad=requires_grad)

    class MetaModule(nn.Module):
        def params(self):
            for name, param in self.named_params(self):
                yield param

        def named_leaves(self):
            return []

        def named_params(self, curr_module=None, memo=None, prefix=""):
            if memo is None:
                memo = set()
            if hasattr(curr_module, "named_leaves"):
                for name, p in curr_module.named_leaves():
                    if p is not None and p not in memo:
                        memo.add(p)
                        yield prefix + ("." if prefix else "") + name, p
            else:
                for name, p in curr_module._parameters.items():
                    if p is not None and p not in memo:
                        memo.add(p)
                        yield prefix + ("." if prefix else "") + name, p
            for mname, module in curr_module.named_children():
                submodule_prefix = prefix + ("." if prefix else "") + mname
                for name, p in self.named_params(module, memo, submodule_prefix):
                    yield name, p

        def update_params(self, lr_inner, first_order=False, source_params=None, detach=False):
            if source_params is not None:
                for tgt, src in zip(self.named_params(self), source_params):
                    name_t, param_t = tgt
                    grad = src
                    if first_order:
                        grad = to_var(grad.detach().data)
                    tmp = param_t - lr_inner * grad
                    self.set_param(self, name_t, tmp)
            else:
                for name, param in self.named_params(self):
                    grad = param.grad
                    if first_order:
                        grad = to_var(grad.detach().data)
                    tmp = param - lr_inner * grad
                    self.set_param(self, name, tmp)

        def set_param(self, curr_mod, name, param):
            if "." in name:
                n = name.split(".")
                module_name = n[0]
                rest = ".".join(n[1:])
                for name, mod in curr_mod.named_children():
                    if module_name == name:
                        self.set_param(mod, rest, param)
                        break
            else:
                setattr(curr_mod, name, param)

    class MetaLinear(MetaModule):
        def __init__(self, *args, **kwargs):
            super().__init__()
            ignore = nn.Linear(*args, **kwargs)
            self.register_buffer("weight", to_var(ignore.weight.data, requires_grad=True))
            self.register_buffer("bias", to_var(ignore.bias.data, requires_grad=True))

        def forward(self, x):
            return F.linear(x, self.weight, self.bias)

        def named_leaves(self):
            return [("weight", self.weight), ("bias", self.bias)]

    class MetaConv2d(MetaModule):
        def __init__(self, *args, **kwargs):
            super().__init__()
            ignore = nn.Conv2d(*args, **kwargs)
            self.stride, self.padding = ignore.stride, ignore.padding
            self.dilation, self.groups = ignore.dilation, ignore.groups
            self.register_buffer("weight", to_var(ignore.weight.data, requires_grad=True))
            if ignore.bias is not None:
                self.register_buffer("bias", to_var(ignore.bias.data, requires_grad=True))
            else:
                self.register_buffer("bias", None)

        def forward(self, x):
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

        def named_leaves(self):
            return [("weight", self.weight), ("bias", self.bias)]

    class VNet(MetaModule):
        def __init__(self, input, hidden1, output):
            super().__init__()
            self.linear1 = MetaLinear(input, hidden1)
            self.relu1 = nn.ReLU(inplace=True)
            self.linear2 = MetaLinear(hidden1, output)

        def forward(self, x):
            x = self.linear1(x)
            x = self.relu1(x)
            out = self.linear2(x)
            return torch.sigmoid(out)  # official: F.sigmoid (deprecated alias, same function)

    return types.SimpleNamespace(MetaModule=MetaModule, MetaLinear=MetaLinear, MetaConv2d=MetaConv2d,
                                 VNet=VNet, source="fallback (harness copy of MW-Net resnet.py)")


_FALLBACK: types.SimpleNamespace | None = None


def fallback_modules() -> types.SimpleNamespace:
    global _FALLBACK
    if _FALLBACK is None:
        _FALLBACK = _build_fallback()
    return _FALLBACK


def load_official_modules(repo_dir: str | None, tag: str) -> types.SimpleNamespace:
    """Imports ``resnet.py`` of an official checkout (MetaModule, MetaLinear, MetaConv2d, VNet), or
    returns the fallback when ``repo_dir`` is None. The checkout's folder is put on sys.path (its
    resnet.py imports nothing from the repository) and the module is loaded under a unique name,
    since both official repositories call it ``resnet``."""
    if repo_dir is None:
        return fallback_modules()
    path = os.path.join(repo_dir, "resnet.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{tag}: no resnet.py in {repo_dir} (clone the mirror first, see README.md)")
    if repo_dir not in sys.path:
        sys.path.insert(0, repo_dir)
    spec = importlib.util.spec_from_file_location(f"official_{tag}_resnet", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return types.SimpleNamespace(MetaModule=mod.MetaModule, MetaLinear=mod.MetaLinear, MetaConv2d=mod.MetaConv2d,
                                 VNet=mod.VNet, source=path)


# Lines of the official train() loops that the transcriptions below reproduce; `verify_sources`
# checks that they are present verbatim in the given checkouts (guards against another version).
OFFICIAL_LINES = {
    ("mwnet", "MW-Net.py"): [
        "v_lambda = vnet(cost_v.data)",
        "l_f_meta = torch.sum(cost_v * v_lambda)/len(cost_v)",
        "grads = torch.autograd.grad(l_f_meta, (meta_model.params()), create_graph=True)",
        "meta_model.update_params(lr_inner=meta_lr, source_params=grads)",
        "l_g_meta = F.cross_entropy(y_g_hat, targets_val)",
        "w_new = vnet(cost_v)",
        "loss = torch.sum(cost_v * w_new)/len(cost_v)",
        "optimizer_vnet = torch.optim.Adam(vnet.params(), 1e-3,",
    ],
    ("gdw", "main.py"): [
        "p.data = torch.clamp(p.data, 0, 0.999)",
        "grad1 = label_wise_error * v_lambda / label_wise_error.size()[0]",
        "grad2 = torch.autograd.grad(outputs, (meta_model.params()), grad_outputs=grad1, create_graph=True)",
        "update = torch.clamp(args.outer_lr*grad_info / deno, -args.clip, args.clip)",
        "w_new = torch.clamp(v_lambda.data, L_EPS, H_EPS)",
        "grad1 = label_wise_error.data * w_new.data / label_wise_error.size()[0]",
    ],
    ("l2rw", "mnist/reweight.py"): [
        "ex_wts_a = tf.zeros([bsize_a], dtype=tf.float32)",
        "ex_wts_b = tf.ones([bsize_b], dtype=tf.float32) / float(bsize_b)",
        "var_list_new = [vv - gg for gg, vv in zip(grads, var_list)]",
        "ex_weight_plus = tf.maximum(ex_weight, eps)",
        "ex_weight_sum += tf.to_float(tf.equal(ex_weight_sum, 0.0))",
    ],
    ("l2rw", "mnist/mnist_train.py"): [
        "train_op = tf.train.MomentumOptimizer(config.lr, 0.9).minimize(loss_c)",
    ],
}


def verify_sources(repos: dict[str, str | None]) -> dict[str, str]:
    """Checks that the transcribed official lines exist in each given checkout."""
    out = {}
    for (method, rel), lines in OFFICIAL_LINES.items():
        repo = repos.get(method)
        if repo is None:
            continue
        src = open(os.path.join(repo, rel), encoding="utf-8").read()
        missing = [ln for ln in lines if ln not in src]
        if missing:
            raise RuntimeError(f"{method}: {rel} in {repo} lacks the transcribed lines {missing}")
        out[f"{method}:{rel}"] = "verified"
    return out


# =====================================================================================================
# HARNESS: models in the official style with metaweight's layer layout.
# =====================================================================================================


def model_classes(ns: types.SimpleNamespace):
    class MLP(ns.MetaModule):
        """mw.mlp(d, hidden, classes): Linear, ReLU per hidden layer, then Linear (same order)."""

        def __init__(self, sizes):
            super().__init__()
            self.n = len(sizes) - 1
            for i in range(self.n):
                setattr(self, f"fc{i}", ns.MetaLinear(sizes[i], sizes[i + 1]))

        def forward(self, x):
            for i in range(self.n):
                x = getattr(self, f"fc{i}")(x)
                if i < self.n - 1:
                    x = F.relu(x)
            return x

    class LeNet5(ns.MetaModule):
        """mw.lenet5: conv(6,5,p=2)-relu-pool2-conv(16,5)-relu-pool2-flatten-120-84-classes."""

        def __init__(self, in_ch=1, classes=10):
            super().__init__()
            self.conv1 = ns.MetaConv2d(in_ch, 6, 5, padding=2)
            self.conv2 = ns.MetaConv2d(6, 16, 5)
            self.fc1 = ns.MetaLinear(400, 120)
            self.fc2 = ns.MetaLinear(120, 84)
            self.fc3 = ns.MetaLinear(84, classes)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = x.reshape(x.shape[0], -1)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    return MLP, LeNet5


# ---- metaweight checkpoints (the only way to read V and the optimizer state) --------------------------


def read_checkpoint(path: str) -> dict[str, Any]:
    """Parses a metaweight checkpoint (Sources/MetaweightTraining/Checkpoint.swift layout)."""
    raw = open(path, "rb").read()
    if raw[:8] != b"MWCKPT\0\0":
        raise ValueError("not a metaweight checkpoint")
    if zlib.crc32(raw[:-4]) != struct.unpack("<I", raw[-4:])[0]:
        raise ValueError("checkpoint checksum mismatch")
    pos = 8
    _, nsec = struct.unpack_from("<II", raw, pos)
    pos += 8
    out: dict[str, Any] = {}
    for _ in range(nsec):
        (nl,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        name = raw[pos:pos + nl].decode()
        pos += nl
        typ = raw[pos]
        pos += 1
        (cnt,) = struct.unpack_from("<Q", raw, pos)
        pos += 8
        if typ == 1:
            out[name] = np.frombuffer(raw, "<f4", cnt, pos).copy()
            pos += 4 * cnt
        elif typ == 2:
            out[name] = np.frombuffer(raw, "<i8", cnt, pos).copy()
            pos += 8 * cnt
        else:
            out[name] = raw[pos:pos + cnt]
            pos += cnt
    return out


def trainer_state(trainer: mw.Trainer) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mwref-") as d:
        p = os.path.join(d, "s.ckpt")
        trainer.save(p)
        return read_checkpoint(p)


def split_v(flat: np.ndarray, h: int = HIDDEN_V) -> list[np.ndarray]:
    """WeightNet.swift layout [W1 (h), b1 (h), W2 (h), b2 (1)] -> VNet's (linear1.weight (h,1),
    linear1.bias (h), linear2.weight (1,h), linear2.bias (1)), VNet.params() order."""
    return [flat[:h].reshape(h, 1), flat[h:2 * h], flat[2 * h:3 * h].reshape(1, h), flat[3 * h:3 * h + 1]]


# =====================================================================================================
# TRANSCRIPTIONS of the official train() loops (one batch each).
# =====================================================================================================


def mwnet_official_step(model, vnet, optimizer_model, optimizer_vnet, build_model, inputs, targets,
                        inputs_val, targets_val, meta_lr):
    """xjtushujun/meta-weight-net MW-Net.py @3f1800f, train(), lines 195-241 (one batch).
    Changes: no .cuda()/.to(device); `reduce=False` written as reduction='none' (same values);
    meta_lr passed in (official l. 210 computes it from the epoch with the same schedule as the
    classifier's rate, l. 160-163); the meta batch is given (official: next(train_meta_loader_iter))."""
    model.train()
    meta_model = build_model()
    meta_model.load_state_dict(model.state_dict())
    outputs = meta_model(inputs)

    cost = F.cross_entropy(outputs, targets, reduction="none")
    cost_v = torch.reshape(cost, (len(cost), 1))
    v_lambda = vnet(cost_v.data)
    l_f_meta = torch.sum(cost_v * v_lambda) / len(cost_v)
    meta_model.zero_grad()
    grads = torch.autograd.grad(l_f_meta, (meta_model.params()), create_graph=True)
    meta_model.update_params(lr_inner=meta_lr, source_params=grads)
    del grads

    y_g_hat = meta_model(inputs_val)
    l_g_meta = F.cross_entropy(y_g_hat, targets_val)

    optimizer_vnet.zero_grad()
    l_g_meta.backward()
    optimizer_vnet.step()

    outputs = model(inputs)
    cost_w = F.cross_entropy(outputs, targets, reduction="none")
    cost_v = torch.reshape(cost_w, (len(cost_w), 1))

    with torch.no_grad():
        w_new = vnet(cost_v)

    loss = torch.sum(cost_v * w_new) / len(cost_v)

    optimizer_model.zero_grad()
    loss.backward()
    optimizer_model.step()
    # harness: the per-example weights the real step used
    return w_new.detach().reshape(-1), float(l_g_meta.item())


def gdw_official_step(model, vnet, optimizer_model, optimizer_vnet, build_model, inputs, targets,
                      inputs_val, targets_val, meta_lr, num_classes, outer_lr=100.0, clip=0.2,
                      L_EPS=1e-6, H_EPS=1e6):
    """GGchen1997/GDW-NIPS2021 main.py @9aa54d3, train() with args.mode == 'gdw', lines 64-170 (one
    batch). Changes: no .to(device); meta_lr passed in (official l. 109 uses the cosine schedule of
    utils.adjust_learning_rate, i.e. also the classifier's current rate); the meta batch is given;
    the unused prec/accuracy lines dropped. The 'mw-net' branches of main.py are not transcribed
    (MW-Net is taken from its own repository)."""
    model.train()
    # 1. compute foward v_lambda
    meta_model = build_model()
    meta_model.load_state_dict(model.state_dict())
    outputs = meta_model(inputs)
    one_hot_label = torch.zeros(targets.shape[0], outputs.shape[1], dtype=outputs.dtype).scatter_(
        1, targets.reshape(-1, 1), 1)
    p = F.softmax(outputs, dim=1)
    p.data = torch.clamp(p.data, 0, 0.999)
    label_wise_error = p - one_hot_label
    cost = F.cross_entropy(outputs, targets, reduction="none")
    cost_v = torch.reshape(cost, (len(cost), 1))
    v_lambda_t = vnet(cost_v.data).view(-1, 1)
    v_lambda = v_lambda_t.clone()
    for c in range(num_classes - 1):
        v_lambda = torch.cat([v_lambda, v_lambda_t.clone()], dim=1)
    # zero-mean constraint
    index = torch.arange(v_lambda.size(0))
    v_lambda[index, targets] = (torch.sum(v_lambda * p.data, dim=1) - v_lambda[index, targets] * p.data[
        index, targets]) / (1 - p.data[index, targets])

    # 2. build the connection
    meta_model.zero_grad()
    grad1 = label_wise_error * v_lambda / label_wise_error.size()[0]
    grad_sum = torch.sum(grad1)
    grad_sum.backward(retain_graph=True)
    meta_model.zero_grad()
    grad2 = torch.autograd.grad(outputs, (meta_model.params()), grad_outputs=grad1, create_graph=True)
    del grad1
    meta_model.update_params(lr_inner=meta_lr, source_params=grad2)
    del grad2

    # 3. update vnet
    y_g_hat = meta_model(inputs_val)
    l_g_meta = F.cross_entropy(y_g_hat, targets_val)
    v_lambda.retain_grad()
    optimizer_vnet.zero_grad()
    l_g_meta.backward()
    optimizer_vnet.step()
    grad_info = v_lambda.grad.data
    deno = torch.sum(torch.abs(grad_info))
    update = torch.clamp(outer_lr * grad_info / deno, -clip, clip)
    v_lambda.data = v_lambda.data - update.data

    # 4. compute new foward w_new
    meta_model = build_model()
    meta_model.load_state_dict(model.state_dict())
    outputs = meta_model(inputs)
    one_hot_label = torch.zeros(targets.shape[0], outputs.shape[1], dtype=outputs.dtype).scatter_(
        1, targets.reshape(-1, 1), 1)
    with torch.no_grad():
        w_new = torch.clamp(v_lambda.data, L_EPS, H_EPS)
    outputs = model(inputs)
    p = F.softmax(outputs, dim=1)
    p.data = torch.clamp(p.data, 0, 0.999)
    label_wise_error = p - one_hot_label
    # zero-mean constraint
    index = torch.arange(w_new.size(0))
    w_new[index, targets] = (torch.sum(w_new * p.data, dim=1) - w_new[index, targets] * p.data[
        index, targets]) / (1 - p.data[index, targets])

    # 5. update model param
    optimizer_model.zero_grad()
    loss = F.cross_entropy(outputs, targets)
    grad1 = label_wise_error.data * w_new.data / label_wise_error.size()[0]
    outputs.backward(grad1)
    optimizer_model.step()
    # harness: ω' at the label (what metaweight reports as the example weight)
    return w_new[index, targets].detach().reshape(-1), float(l_g_meta.item())


def l2rw_official_step(model, optimizer_model, build_model, inputs, targets, inputs_val, targets_val,
                       eps=0.0):
    """PyTorch transcription of uber-research/learning-to-reweight-examples @0b616c9:
    mnist/reweight.py reweight_autodiff, lines 136-154 (weights), then the training op of
    mnist/mnist_train.py lines 319 and 386-395 (MomentumOptimizer(config.lr, 0.9) on the weighted
    loss of reweight.py l. 97-99, reduce_sum(CE * ex_wts)). The model's variables are "reused"
    (w_dict) by copying the classifier into a MetaModule (the MW-Net pattern), and tf.gradients
    becomes torch.autograd.grad with create_graph=True. Softmax cross-entropy replaces the binary
    sigmoid cross-entropy of the official LeNet (reweight.py l. 94-99)."""
    bsize_a, bsize_b = inputs.shape[0], inputs_val.shape[0]
    dtype = next(model.params()).dtype
    # l. 136-137
    ex_wts_a = torch.zeros([bsize_a], dtype=dtype, requires_grad=True)
    ex_wts_b = torch.ones([bsize_b], dtype=dtype) / float(bsize_b)
    # l. 138-139: get_model(inp_a, label_a, ex_wts=ex_wts_a, reuse=True) -> weighted loss (l. 98-99)
    meta_model = build_model()
    meta_model.load_state_dict(model.state_dict())
    loss_a = torch.sum(F.cross_entropy(meta_model(inputs), targets, reduction="none") * ex_wts_a)
    # l. 140-142
    grads = torch.autograd.grad(loss_a, list(meta_model.params()), create_graph=True)
    # l. 144-145: var_list_new = [vv - gg ...] (step size 1)
    meta_model.update_params(lr_inner=1.0, source_params=grads)
    # l. 146-147
    loss_b = torch.sum(F.cross_entropy(meta_model(inputs_val), targets_val, reduction="none") * ex_wts_b)
    # l. 148-153
    grads_ex_wts = torch.autograd.grad(loss_b, [ex_wts_a])[0]
    ex_weight = -grads_ex_wts
    ex_weight_plus = torch.clamp(ex_weight, min=eps)
    ex_weight_sum = torch.sum(ex_weight_plus)
    ex_weight_sum = ex_weight_sum + (ex_weight_sum == 0.0).to(dtype)
    ex_weight_norm = (ex_weight_plus / ex_weight_sum).detach()
    # mnist_train.py l. 386-395 with l. 317-319: loss_c = reduce_sum(CE * ex_wts), momentum step
    model.train()
    loss_c = torch.sum(F.cross_entropy(model(inputs), targets, reduction="none") * ex_weight_norm)
    optimizer_model.zero_grad()
    loss_c.backward()
    optimizer_model.step()
    return ex_weight_norm, float(loss_b.item())


# =====================================================================================================
# HARNESS: the two sides.
# =====================================================================================================


def official_options(method: str) -> mw.Method:
    """metaweight options mirroring the official scripts, every one spelled out (no defaults)."""
    if method == "mwnet":  # MW-Net.py: Adam(1e-3, wd 1e-4), 1/n (no normalisation), detached loss
        return mw.MWNet(normalize=False, detach_loss=True, hidden=HIDDEN_V, optimizer="adam", lr=1e-3,
                        weight_decay=1e-4, momentum=0.0, virtual_momentum=False, virtual_lr=None)
    if method == "gdw":  # main.py: outer_lr 100, clip 0.2, clamp [1e-6, 1e6], p <= 0.999
        return mw.GDW(eta=100.0, clip=0.2, clamp=(1e-6, 1e6), prob_clamp=0.999, normalize=False,
                      detach_loss=True, hidden=HIDDEN_V, optimizer="adam", lr=1e-3, weight_decay=1e-4,
                      momentum=0.0, virtual_momentum=False, virtual_lr=None)
    if method == "l2rw":
        return mw.L2RW(virtual_momentum=False, virtual_lr=None)
    raise ValueError(method)


def make_mw_network(arch: str, in_dim: int, seed: int) -> mw.Network:
    if arch == "mlp":
        hidden = (512, 512) if in_dim == 784 else (256, 256)
        return mw.mlp(in_dim, hidden=hidden, num_classes=10, seed=seed)
    if arch == "lenet5":
        return mw.lenet5(input_shape=(1, 28, 28), num_classes=10, seed=seed)
    raise ValueError(arch)


def _as_dtype(module, dtype):
    """Casts a MetaModule's leaves (buffers with requires_grad) keeping them leaves; Module.to()
    would turn them into non-leaf tensors the optimizers refuse."""
    if dtype == torch.float32:
        return module
    for name, p in list(module.named_params(module)):
        module.set_param(module, name, p.detach().to(dtype).requires_grad_())
    return module


class TorchSide:
    """The official loop's state: classifier, V, their optimizers; one `step` per batch."""

    def __init__(self, ns, method, arch, in_dim, state, lr, momentum, weight_decay, dtype=torch.float32):
        MLP, LeNet5 = model_classes(ns)
        self.method, self.dtype = method, dtype
        if arch == "mlp":
            sizes = [in_dim, 512, 512, 10] if in_dim == 784 else [in_dim, 256, 256, 10]
            self.model = _as_dtype(MLP(sizes), dtype)
        else:
            self.model = _as_dtype(LeNet5(), dtype)
        # The official loops call build_model() (a freshly initialised network) and overwrite every
        # value with load_state_dict(model.state_dict()); a deep copy of a template network gives the
        # same meta_model without the cost of a random initialisation per step.
        template = copy.deepcopy(self.model)
        self.build_model = lambda: copy.deepcopy(template)
        self.image = arch == "lenet5"
        params = list(self.model.params())
        flat = state["network.params"]
        off = 0
        with torch.no_grad():
            for p in params:
                k = p.numel()
                p.copy_(torch.from_numpy(flat[off:off + k].reshape(p.shape).astype(np.float64)))
                off += k
        assert off == flat.size, "parameter layouts differ"
        # Official MW-Net.py l. 272-275 / main.py l. 209-213: SGD(model.params(), lr, momentum,
        # weight_decay) (the parsed --nesterov is never passed), Adam(vnet.params(), 1e-3, wd 1e-4).
        self.optimizer_model = torch.optim.SGD(self.model.params(), lr, momentum=momentum, weight_decay=weight_decay)
        first = state.get("optimizer.first")
        if first is not None and first.size == flat.size and int(state["optimizer.steps"][0]) > 0:
            off = 0
            for p in params:
                k = p.numel()
                self.optimizer_model.state[p]["momentum_buffer"] = torch.from_numpy(
                    first[off:off + k].reshape(p.shape).astype(np.float64)).to(dtype)
                off += k
        self.vnet = None
        if method in ("mwnet", "gdw"):
            self.vnet = _as_dtype(ns.VNet(1, HIDDEN_V, 1), dtype)
            vparams = list(self.vnet.params())
            with torch.no_grad():
                for p, a in zip(vparams, split_v(state["weighting.net"])):
                    p.copy_(torch.from_numpy(a.astype(np.float64)))
            self.optimizer_vnet = torch.optim.Adam(self.vnet.params(), 1e-3, weight_decay=1e-4)
            steps = int(state["weighting.opt.steps"][0])
            if steps > 0:
                for p, m1, m2 in zip(vparams, split_v(state["weighting.opt.first"]),
                                     split_v(state["weighting.opt.second"])):
                    self.optimizer_vnet.state[p] = {
                        "step": torch.tensor(float(steps)),
                        "exp_avg": torch.from_numpy(m1.astype(np.float64)).to(dtype),
                        "exp_avg_sq": torch.from_numpy(m2.astype(np.float64)).to(dtype)}

    def set_lr(self, lr):
        for g in self.optimizer_model.param_groups:
            g["lr"] = lr

    def _t(self, x):
        t = torch.from_numpy(np.asarray(x)).to(self.dtype)
        return t.reshape(-1, 1, 28, 28) if self.image else t

    def step(self, x, y, xm, ym, lr):
        self.set_lr(lr)
        xt, yt, xmt, ymt = self._t(x), torch.from_numpy(y.astype(np.int64)), self._t(xm), torch.from_numpy(ym.astype(np.int64))
        if self.method == "mwnet":
            w, ml = mwnet_official_step(self.model, self.vnet, self.optimizer_model, self.optimizer_vnet,
                                        self.build_model, xt, yt, xmt, ymt, meta_lr=lr)
        elif self.method == "gdw":
            w, ml = gdw_official_step(self.model, self.vnet, self.optimizer_model, self.optimizer_vnet,
                                      self.build_model, xt, yt, xmt, ymt, meta_lr=lr, num_classes=10)
        else:
            w, ml = l2rw_official_step(self.model, self.optimizer_model, self.build_model, xt, yt, xmt, ymt)
        return w.double().numpy(), ml

    def flat_params(self):
        return torch.cat([p.detach().reshape(-1) for p in self.model.params()]).double().numpy()

    def v_flat(self):
        ps = [p.detach().reshape(-1) for p in self.vnet.params()]
        return torch.cat(ps).double().numpy()  # same layout as WeightNet's flat buffer

    def v_of(self, losses):
        with torch.no_grad():
            return self.vnet(torch.tensor(losses, dtype=self.dtype).reshape(-1, 1)).reshape(-1).double().numpy()

    def accuracy(self, x, y):
        self.model.eval()
        with torch.no_grad():
            pred = self.model(self._t(x)).argmax(1).numpy()
        return float((pred == y).mean())


class MetaweightSide:
    def __init__(self, method, arch, in_dim, lr, momentum, weight_decay, milestones, spe, seed):
        self.net = make_mw_network(arch, in_dim, seed)
        self.image = arch == "lenet5"
        self.method = method
        self.trainer = mw.Trainer(self.net, mw.SGD(lr=lr, momentum=momentum, nesterov=False, weight_decay=weight_decay),
                                  mw.MultiStep(list(milestones), gamma=0.1, unit="epoch"),
                                  method=official_options(method), seed=seed, steps_per_epoch=spe)

    def _x(self, x):
        return np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) if self.image else np.asarray(x, np.float32)

    def step(self, x, y, xm, ym, lr):
        got = self.trainer.learning_rate
        assert abs(got - lr) <= 1e-6 * lr, f"schedules differ: metaweight {got}, harness {lr}"
        r = self.trainer.step(self._x(x), y, x_meta=self._x(xm), y_meta=ym)
        return np.asarray(r.weights, dtype=np.float64), float(r.meta_loss)

    def state(self):
        return trainer_state(self.trainer)

    def flat_params(self):
        return self.state()["network.params"].astype(np.float64)

    def v_flat(self):
        return self.state()["weighting.net"].astype(np.float64)

    def v_of(self, losses):
        return self.trainer.weight_function(np.asarray(losses, dtype=np.float32)).astype(np.float64)

    def accuracy(self, x, y):
        return float(self.trainer.evaluate(self._x(x), y)["accuracy"])


# ---- data ---------------------------------------------------------------------------------------------


def load_condition(dataset: str, noise: str, rate: float = 0.4, seed: int = 0) -> dict[str, Any]:
    if dataset == "mnist":
        ds = data.load_mnist(MNIST_DIR, flatten=True, seed=seed)
    elif dataset == "digits":
        ds = data.load_digits(flatten=True, seed=seed)
    else:
        raise ValueError(dataset)
    C = ds.num_classes
    split = conditions.meta_split(ds.y_train, 10, C, seed=seed)
    x, y_clean = ds.x_train[split.train_indices], ds.y_train[split.train_indices]
    if noise == "flip":
        corr = conditions.flip_noise(y_clean, rate, C, seed=seed)
    elif noise == "uniform":
        corr = conditions.uniform_noise(y_clean, rate, C, seed=seed)
    else:
        raise ValueError(noise)
    y = np.asarray(corr.labels, dtype=np.int64)
    return dict(x=np.ascontiguousarray(x, np.float32), y=y, y_clean=y_clean.astype(np.int64),
                corrupted=(y != y_clean), x_meta=np.ascontiguousarray(ds.x_train[split.meta_indices], np.float32),
                y_meta=ds.y_train[split.meta_indices].astype(np.int64),
                x_test=np.ascontiguousarray(ds.x_test, np.float32), y_test=ds.y_test.astype(np.int64),
                in_dim=int(np.prod(ds.x_train.shape[1:])))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The harness's own seeded batch order (the same for both sides); the last batch may be short."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def milestones_for(epochs: int) -> list[int]:
    return [int(round(0.6 * epochs)), int(round(0.85 * epochs))]


def lr_at(base: float, epoch: int, milestones: list[int]) -> float:
    return base * (0.1 ** sum(epoch >= m for m in milestones))


def _auc(clean: np.ndarray, w: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if clean.all() or (~clean).all() or not np.isfinite(w).all():
        return None
    return float(roc_auc_score(clean.astype(int), w))


# ---- the full comparison --------------------------------------------------------------------------------


def run_pair(method, dataset, noise, *, lr=0.02, epochs=60, batch_size=100, momentum=0.9, weight_decay=0.0,
             arch="mlp", seed=0, ns=None, log=print, sides=("official", "metaweight"),
             perturb=0.0) -> dict[str, Any]:
    """Trains the official transcription and metaweight (one after the other) on the same batches.
    ``perturb`` > 0 multiplies metaweight's initial classifier parameters by (1 + perturb·N(0, 1))
    (the chaos floor: how far two runs drift apart from a float32-rounding-sized difference)."""
    cond = load_condition(dataset, noise, seed=seed)
    n = len(cond["y"])
    spe = -(-n // batch_size)
    ms = milestones_for(epochs)
    clean = ~cond["corrupted"]
    out: dict[str, Any] = dict(method=method, dataset=dataset, noise=noise, lr=lr, epochs=epochs,
                               batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, arch=arch,
                               seed=seed, milestones=ms, n_train=n, n_meta=len(cond["y_meta"]),
                               corrupted_fraction=float(cond["corrupted"].mean()),
                               modules=(ns.source if ns is not None else None))
    out["perturb"] = perturb
    for side_name in sides:
        mws = MetaweightSide(method, arch, cond["in_dim"], lr, momentum, weight_decay, ms, spe, seed)
        if perturb > 0 and side_name == "metaweight":
            flat = mws.net.get_flat()
            eps = np.random.default_rng([seed, 12345]).standard_normal(flat.shape)
            mws.net.set_flat((flat * (1 + perturb * eps)).astype(np.float32))
        init = mws.state()
        side = mws if side_name == "metaweight" else TorchSide(
            ns if ns is not None else fallback_modules(), method, arch, cond["in_dim"], init, lr, momentum,
            weight_decay)
        recs = []
        t0 = time.time()
        for e in range(epochs):
            lr_e = lr_at(lr, e, ms)
            w_ep = np.full(n, np.nan)
            meta_losses = []
            for idx in epoch_batches(n, batch_size, seed, e):
                w, ml = side.step(cond["x"][idx], cond["y"][idx], cond["x_meta"], cond["y_meta"], lr_e)
                w_ep[idx] = w
                meta_losses.append(ml)
            rec = dict(epoch=e + 1, lr=lr_e, test_acc=side.accuracy(cond["x_test"], cond["y_test"]),
                       auc=_auc(clean, w_ep), w_clean=float(np.mean(w_ep[clean])),
                       w_corrupt=float(np.mean(w_ep[~clean])), meta_loss=float(np.mean(meta_losses)),
                       weights=w_ep.astype(np.float32))
            if method in ("mwnet", "gdw"):
                rec["V"] = [float(v) for v in side.v_of(LOSS_GRID)]
            recs.append(rec)
            if (e + 1) % 10 == 0 or e == 0:
                log(f"  [{side_name:10s}] {method} {dataset} {noise} lr={lr} epoch {e + 1}: acc={rec['test_acc']:.4f} "
                    f"auc={rec['auc'] if rec['auc'] is None else round(rec['auc'], 4)} "
                    f"w_clean={rec['w_clean']:.4g} w_corr={rec['w_corrupt']:.4g}"
                    + (f" V={np.round(rec['V'], 4).tolist()}" if "V" in rec else "") + f" ({time.time() - t0:.0f}s)")
        last = min(10, epochs)
        w_mean = np.mean([r["weights"] for r in recs[-last:]], axis=0)
        summary = dict(final_test_acc=recs[-1]["test_acc"], auc_epoch10=recs[min(9, epochs - 1)]["auc"],
                       auc_mean_last10=_auc(clean, w_mean), w_clean_last10=float(w_mean[clean].mean()),
                       w_corrupt_last10=float(w_mean[~clean].mean()), V_end=recs[-1].get("V"),
                       seconds=time.time() - t0)
        for r in recs:
            del r["weights"]
        out[side_name] = dict(summary=summary, epochs=recs)
    return out


# ---- the single-step agreement check --------------------------------------------------------------------


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    d = float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
    s = float(np.linalg.norm(np.asarray(b, np.float64)))
    return d / s if s > 0 else d


def agreement(method, *, dataset="digits", noise="uniform", steps=1, warmup=0, lr=0.02, momentum=0.9,
              weight_decay=0.0, batch_size=100, seed=0, dtype=torch.float64, ns=None) -> dict[str, float]:
    """From identical state (metaweight's after `warmup` steps: parameters, momentum buffer, V and its
    Adam state, all read from a checkpoint), `steps` steps of the official transcription and of
    metaweight on the same batches. Relative errors (official vs metaweight, metaweight as the
    reference): the parameter update Δθ, the last step's weights, V's update ΔV."""
    cond = load_condition(dataset, noise, seed=seed)
    n = len(cond["y"])
    spe = -(-n // batch_size)
    ms = [10_000, 20_000]
    mws = MetaweightSide(method, "mlp", cond["in_dim"], lr, momentum, weight_decay, ms, spe, seed)
    batches = [b for e in range(100) for b in epoch_batches(n, batch_size, seed, e)]
    for k in range(warmup):
        b = batches[k]
        mws.step(cond["x"][b], cond["y"][b], cond["x_meta"], cond["y_meta"], lr)
    s0 = mws.state()
    ts = TorchSide(ns if ns is not None else fallback_modules(), method, "mlp", cond["in_dim"], s0, lr, momentum,
                   weight_decay, dtype=dtype)
    max_w = 0.0
    for k in range(warmup, warmup + steps):
        b = batches[k]
        w_mw, ml_mw = mws.step(cond["x"][b], cond["y"][b], cond["x_meta"], cond["y_meta"], lr)
        w_t, ml_t = ts.step(cond["x"][b], cond["y"][b], cond["x_meta"], cond["y_meta"], lr)
        max_w = max(max_w, _rel(w_t, w_mw))
    s1 = mws.state()
    th0 = s0["network.params"].astype(np.float64)
    out = dict(method=method, steps=steps, warmup=warmup,
               theta_update=_rel(ts.flat_params() - th0, s1["network.params"].astype(np.float64) - th0),
               theta=_rel(ts.flat_params(), s1["network.params"]),
               weights_last=_rel(w_t, w_mw), weights_max=max_w, meta_loss=abs(ml_t - ml_mw) / max(abs(ml_mw), 1e-12))
    if method in ("mwnet", "gdw"):
        v0 = s0["weighting.net"].astype(np.float64)
        out["v_update"] = _rel(ts.v_flat() - v0, s1["weighting.net"].astype(np.float64) - v0)
        out["V_grid"] = _rel(ts.v_of(LOSS_GRID), mws.v_of(LOSS_GRID))
    return out


# ---- reporting ---------------------------------------------------------------------------------------------


def _f(v, nd=4):
    if v is None:
        return "–"
    if isinstance(v, list):
        return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"
    return f"{v:.{nd}f}"


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| method | data | noise | lr | side | final test acc | AUC ep.10 | AUC mean w last 10 | "
            "w clean / corrupt (last 10) | V(0,1,2,4,8) at end |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for side in ("official", "metaweight"):
            if side not in r:
                continue
            s = r[side]["summary"]
            rows.append(f"| {r['method']} | {r['dataset']} | {r['noise']} | {r['lr']} | {side} | "
                        f"{_f(s['final_test_acc'])} | {_f(s['auc_epoch10'])} | {_f(s['auc_mean_last10'])} | "
                        f"{s['w_clean_last10']:.4g} / {s['w_corrupt_last10']:.4g} | {_f(s['V_end'])} |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "check"):
        p = sub.add_parser(name)
        p.add_argument("--mwnet-repo", default=None, help="checkout of xjtushujun/meta-weight-net")
        p.add_argument("--gdw-repo", default=None, help="checkout of GGchen1997/GDW-NIPS2021")
        p.add_argument("--l2rw-repo", default=None, help="checkout of uber-research/learning-to-reweight-examples")
        p.add_argument("--methods", nargs="+", default=["mwnet", "gdw", "l2rw"])
        p.add_argument("--lr", type=float, default=0.02)
        p.add_argument("--momentum", type=float, default=0.9)
        p.add_argument("--weight-decay", type=float, default=0.0)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=2)
    pr = sub.choices["run"]
    pr.add_argument("--datasets", nargs="+", default=["mnist", "digits"])
    pr.add_argument("--noises", nargs="+", default=["flip", "uniform"])
    pr.add_argument("--epochs", type=int, default=60)
    pr.add_argument("--batch-size", type=int, default=100)
    pr.add_argument("--arch", default="mlp", choices=["mlp", "lenet5"])
    pr.add_argument("--sides", nargs="+", default=["official", "metaweight"])
    pr.add_argument("--perturb", type=float, default=0.0,
                    help="relative N(0,1) perturbation of metaweight's initial parameters (chaos floor)")
    pr.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    pc = sub.choices["check"]
    pc.add_argument("--warmup", type=int, nargs="+", default=[0, 5])
    pc.add_argument("--steps", type=int, nargs="+", default=[1, 20])
    pt = sub.add_parser("table")
    pt.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "table":
        res = [json.load(open(f)) for f in sorted(a.files)]
        print(table(res))
        return
    torch.set_num_threads(a.threads)
    mw.set_threads(a.threads) if hasattr(mw, "set_threads") else None
    repos = {"mwnet": a.mwnet_repo, "gdw": a.gdw_repo, "l2rw": a.l2rw_repo}
    print("official sources:", verify_sources(repos) or "none given (fallback modules)")
    mods = {"mwnet": load_official_modules(a.mwnet_repo, "mwnet"), "gdw": load_official_modules(a.gdw_repo, "gdw")}
    mods["l2rw"] = mods["mwnet"]  # L2RW has no PyTorch code: its transcription uses MW-Net's MetaModule
    if a.cmd == "check":
        for m in a.methods:
            for wu in a.warmup:
                for st in a.steps:
                    r = agreement(m, steps=st, warmup=wu, lr=a.lr, momentum=a.momentum,
                                  weight_decay=a.weight_decay, seed=a.seed, ns=mods[m],
                                  dtype=torch.float64 if st == 1 else torch.float32)
                    print(json.dumps({k: (round(v, 9) if isinstance(v, float) else v) for k, v in r.items()}))
        return
    os.makedirs(a.out, exist_ok=True)
    results = []
    for d in a.datasets:
        for nz in a.noises:
            for m in a.methods:
                r = run_pair(m, d, nz, lr=a.lr, epochs=a.epochs, batch_size=a.batch_size, momentum=a.momentum,
                             weight_decay=a.weight_decay, arch=a.arch, seed=a.seed, ns=mods[m],
                             sides=tuple(a.sides), perturb=a.perturb)
                r["official_sources"] = {k: v for k, v in repos.items() if k == m or (m == "l2rw" and k == "mwnet")}
                tag = f"_perturb{a.perturb:g}" if a.perturb > 0 else ""
                path = os.path.join(a.out, f"{m}_{d}_{nz}_lr{a.lr:g}_{a.arch}{tag}.json")
                with open(path, "w") as fh:
                    json.dump(r, fh, indent=1)
                results.append(r)
                print("\n".join(table([r]).splitlines()[2:]))
                sys.stdout.flush()
    print(table(results))


if __name__ == "__main__":
    main()
