"""Where the time of one training step goes, per pass and per kind of work (`perf record`).

A subprocess builds the model and a trainer for the method (`--method erm|l2rw|mwnet|gdw`, batch
and meta batch 100 as in `bench_methods.py`), takes `--warmup` steps, then `--steps` timed steps
under `perf record -e cpu-clock -g`. Recording covers the timed steps only: perf starts the child
with its events disabled (`-D -1 --control fifo:...`), the child reports when its warm-up is done,
the parent enables the events (and waits for perf's ack) before letting the child go on. The child
also records each timed step's start and end on CLOCK_MONOTONIC, which perf uses for its
timestamps (`-k CLOCK_MONOTONIC`), so only samples inside a step count: the Python between steps
and the child's exit are left out exactly.

The samples' call chains (`perf script`) are attributed here, with no other tool:

- a **pass**, from the Swift call chain of the thread that called `mw_trainer_step`: the train
  forward pass, the method's passes (meta forward/backward at the look-ahead point, the tangent
  (JVP) pass, the weight net V's forward/backward/update, the virtual step θ̂ = θ − α·d), the
  train batch's backward passes, the optimizer update and the step's bookkeeping (finite checks,
  backups, diagnostics). A method that back-propagates the train batch twice (MW-Net, GDW: the
  virtual step's and the final weighted backward) calls `Trainer.backwardWeighted` /
  `backwardLogits` from two call sites of its `step`; the return addresses tell them apart and
  their order within the step names them. Samples of other threads (OpenBLAS's and metaweight's
  workers) take the pass the calling thread was in at that moment;
- a **category**, from the innermost frame that names one: GEMM (OpenBLAS kernels and packing
  copies, `BLAS`), Winograd transforms, im2col/col2im, conv other (Conv2D's own loops: bias,
  layout, 1×1 paths), batch norm, ReLU, residual adds/copies (`Residual`, `ShortcutA`,
  `Sequential`), pooling, linear/loss (`Linear`, `CrossEntropy`, the weight net), optimizer,
  threading/sync (the pools, pthread, futex, OpenBLAS's thread server). memmove/memset, page
  faults, the Swift runtime and the elementwise helpers take the category of their nearest caller
  that has one; "memory" is what is left of memmove/memset/malloc/page faults, "other" the rest;
  "unnamed" is code in a library that has no symbol for it (a stripped extension). A batch norm
  fused with the ReLU after it runs inside `BatchNorm`, so that ReLU counts as batch norm.

It prints, per run, a table with one row per pass (in the order the step runs them): ms of CPU
per step (samples × period / steps, all threads), % of the step's samples, and the % of the step
in each category; then the top self-time functions. `--before PATH` profiles a second build
(another PYTHONPATH) in the same run and adds a per-pass delta table. The Swift core must not be
stripped (a `pip install .` strips it): its internal functions are then unnamed and the tool says
how much of the step it could not attribute; profile a private build instead (benchmarks/README.md).

Usage:
    python benchmarks/profile_step.py [--model resnet32|lenet|mlp] [--method erm|l2rw|mwnet|gdw]
        [--steps N] [--rounds R] [--warmup N] [--threads T] [--freq HZ] [--pythonpath DIR] [--before DIR]
        [--top K] [--keep-data DIR] [--json out.json]

Needs `perf` (Debian: linux-perf) permitted to sample this user's processes
(kernel.perf_event_paranoid <= 2); exits with status 2 and a message otherwise.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The methods whose steps take a meta batch.
META_METHODS = ("l2rw", "mwnet", "gdw")
# The models as `bench_methods.py` builds them (spec, input shape); `lenet5` is an alias of `lenet`.
MODEL_ALIASES = {"lenet5": "lenet"}

CATEGORIES = [
    "GEMM", "Winograd", "im2col/col2im", "conv other", "batch norm", "ReLU", "residual/copies",
    "pooling", "linear/loss", "optimizer", "memory", "threading/sync", "other", "unnamed",
]

# Pass names. Rows are printed in the order the step runs them (median position in the step).
TRAIN_FORWARD = "train forward"
TRAIN_BACKWARD = "train backward"
META_FORWARD = "meta forward"
META_BACKWARD = "meta backward"
META_LOSS = "meta loss"
TANGENT = "tangent (JVP)"
VIRTUAL_STEP = "virtual step θ̂"
V_FORWARD = "V forward"
V_BACKWARD = "V backward"
V_UPDATE = "V update"
METHOD_OTHER = "method's own loops"
UPDATE = "update (optimizer)"
BOOKKEEPING = "bookkeeping"
OUTSIDE = "outside the step call"
UNRESOLVED = "unattributed"  # no sample of the stepping thread with a whole chain in that step
# A method whose step back-propagates the train batch from two call sites: the first is the
# virtual step's backward pass, the last the real step's.
BACKWARD_SITE_NAMES = ("virtual-step backward", "final weighted backward")


class ProfileError(Exception):
    """perf is missing, not permitted, or the profiled child failed."""


class ChildError(ProfileError):
    """The profiled process reported why it could not start (a bad --method, a build that fails)."""


# ---------------------------------------------------------------------------------------------
# perf script parsing


@dataclass
class Frame:
    """One frame of a call chain: symbol ("[unknown]" when unnamed), offset in it, DSO path."""

    sym: str
    off: int
    dso: str
    name: str = ""  # `frame_name(sym)`, filled by the parser

    @property
    def is_kernel(self) -> bool:
        return self.dso == "[kernel.kallsyms]" or self.dso.startswith("[kernel")


@dataclass
class Sample:
    """One perf sample: process, thread, CLOCK_MONOTONIC time (s), period (ns), frames leaf first."""

    pid: int
    tid: int
    time: float
    period: int
    frames: list[Frame] = field(default_factory=list)


_HEADER = re.compile(r"^\s*(?:\S.*?\s+)?(\d+)/(\d+)\s+(\d+\.\d+):\s+(\d+)\s*(?:\S+:)?\s*$")
_FRAME = re.compile(r"^\s+([0-9a-f]+)\s+(.*?)(?:\+0x([0-9a-f]+))?\s+\((.*)\)\s*$")


def parse_perf_script(lines: Iterable[str]) -> Iterator[Sample]:
    """Samples from `perf script -F pid,tid,time,period,ip,sym,symoff,dso` output.

    Args:
        lines: the text, line by line (a header line per sample, then one line per frame, leaf
            first, then a blank line).

    Returns:
        An iterator of `Sample`s with their frames leaf first; `Frame.name` is `frame_name(sym)`.
    """
    cur: Sample | None = None
    names: dict[str, str] = {}
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            if cur is not None:
                yield cur
                cur = None
            continue
        m = None if line.startswith("\t") else _HEADER.match(line)  # perf pads short pids with spaces
        if m is not None:
            if cur is not None:
                yield cur
            cur = Sample(int(m.group(1)), int(m.group(2)), float(m.group(3)), int(m.group(4)))
            continue
        if cur is None:
            continue
        f = _FRAME.match(line)
        if f is None:
            continue
        sym = f.group(2).strip() or "[unknown]"
        name = names.get(sym)
        if name is None:
            name = names[sym] = frame_name(sym)
        cur.frames.append(Frame(sym, int(f.group(3) or "0", 16), f.group(4), name))
    if cur is not None:
        yield cur


def swift_identifiers(sym: str) -> list[str]:
    """The identifiers in a mangled Swift symbol, in order (`$s16MetaweightLayers7NetworkC8backward…`
    -> ["MetaweightLayers", "Network", "backward", …]); [] for other symbols.

    A crude reading of the mangling (length-prefixed identifiers; substitutions skipped), enough to
    match module, type and function names without `swift demangle`.
    """
    if not sym.startswith(("$s", "_$s", "$S")):
        return []
    s = sym[sym.index("$") + 2:]
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if "1" <= c <= "9":
            j = i
            while j < len(s) and s[j].isdigit():
                j += 1
            n = int(s[i:j])
            word = s[j:j + n]
            if len(word) == n and (word[0].isalpha() or word[0] == "_") and all(
                ch.isalnum() or ch == "_" for ch in word
            ):
                out.append(word)
                i = j + n
                continue
        i += 1
    return out


def frame_name(sym: str) -> str:
    """A matchable name for a symbol: a Swift symbol's identifiers joined by "." (module first,
    e.g. "MetaweightLayers.Network.backward.tape.dlogits.grads"), any other symbol as it is."""
    ids = swift_identifiers(sym)
    return ".".join(ids) if ids else sym


def _has(name: str, *parts: str) -> bool:
    """Whether the dotted `name` holds the consecutive identifiers `parts` ("Trainer", "step")."""
    needle = "." + ".".join(parts) + "."
    return needle in "." + name + "."


_STEP_ROOTS = (("Trainer", "weightedStep"), ("Trainer", "step"))
_METHOD_STEP = re.compile(r"^Metaweight(?:Weighting|LAW)\.(\w+)\.step\.trainer\.")


def _is_step_root(fr: Frame) -> bool:
    return fr.sym.startswith("mw_trainer_step") or any(_has(fr.name, *p) for p in _STEP_ROOTS)


def pass_of(frames: Sequence[Frame]) -> tuple[str, int | None]:
    """The pass a sample of the stepping thread belongs to, from its call chain.

    Args:
        frames: the chain, leaf first (as perf gives it).

    Returns:
        (pass name, call site) where the call site is the offset of the return address in the
        method's `step` for the train batch's backward passes (`TRAIN_BACKWARD`; None otherwise),
        which `name_backward_sites` turns into the virtual-step and final backward.
    """
    chain = list(reversed(frames))  # root first
    start = next((i for i, fr in enumerate(chain) if _is_step_root(fr)), None)
    if start is None:
        return OUTSIDE, None
    method = None
    for i in range(start, len(chain)):
        if _METHOD_STEP.match(chain[i].name):
            method = i  # innermost: the real `step` below its protocol witness
    below = chain[(method if method is not None else start) + 1:]
    site = chain[method].off if method is not None else None
    for k, fr in enumerate(below):
        n = fr.name
        if _has(n, "Trainer", "forwardCheckedTrainBatch") or _has(n, "Trainer", "forwardTrainBatch"):
            return TRAIN_FORWARD, None
        if _has(n, "Trainer", "backwardWeighted") or _has(n, "Trainer", "backwardLogits"):
            return TRAIN_BACKWARD, site
        if _has(n, "MetaStep", "metaPass") or _has(n, "MetaStep", "synchronizedMetaPass"):
            for inner in below[k + 1:]:
                if _has(inner.name, "Network", "forward"):
                    return META_FORWARD, None
                if _has(inner.name, "Network", "backward"):
                    return META_BACKWARD, None
            return META_LOSS, None
        if (_has(n, "MetaStep", "projectedGradients") or _has(n, "MetaStep", "tangents")
                or _has(n, "Network", "jvp")):
            return TANGENT, None
        if _has(n, "MetaStep", "takeVirtualStep"):
            return VIRTUAL_STEP, None
        if method is not None:
            # The network's passes without a Trainer or MetaStep frame above them. The small
            # `Trainer.backwardLogits` is inlined across modules: a backward pass the method's step
            # calls itself is the train batch's (GDW's two). Through an unnamed frame (a stripped
            # build's internal `MetaStep.metaPass`) it is the meta batch's, as is a forward pass
            # (the train forward keeps its public `Trainer` frames).
            if _has(n, "Network", "backward"):
                return (TRAIN_BACKWARD, site) if k == 0 else (META_BACKWARD, None)
            if _has(n, "Network", "forward"):
                return META_FORWARD, None
            if ".WeightNet.forward" in "." + n:
                return V_FORWARD, None
            if ".WeightNet." in "." + n:
                return V_BACKWARD, None
            if n.startswith("MetaweightOptim.") or n.startswith("MetaweightLAW.DDPG"):
                return V_UPDATE, None
        else:
            if _has(n, "Trainer", "applyUpdate") or n.startswith("MetaweightOptim.Optimizer.update"):
                return UPDATE, None
    if method is not None:
        return METHOD_OTHER, None
    return BOOKKEEPING, None


_THREADING_SYMS = re.compile(
    r"^(?:pthread_|__pthread|__lll_lock|__futex|futex|sched_yield|__sched_yield|blas_thread_server"
    r"|exec_blas|blas_thread|__GI___pthread|__GI___lll|__new_sem|sem_|nanosleep|__nanosleep|clock_nanosleep"
    r"|__GI___clock_nanosleep|start_thread|clone3?$)")
_MEMORY_SYMS = re.compile(
    r"^(?:__)?(?:mem(?:move|cpy|set)|__memmove|__memcpy|__memset|_int_malloc|_int_free|malloc|free|calloc"
    r"|realloc|cfree|__libc_malloc|__libc_free|__libc_calloc|posix_memalign|_mid_memalign|aligned_alloc"
    r"|__GI_mem|sysmalloc|unlink_chunk|malloc_consolidate)")
_KERNEL_MEMORY = re.compile(r"page_fault|exc_page_fault|handle_mm_fault|do_anonymous_page|clear_page|do_wp_page"
                            r"|__x64_sys_munmap|__x64_sys_mmap|__x64_sys_madvise|__x64_sys_brk")
_KERNEL_SYNC = re.compile(r"futex|sched_yield|schedule|__x64_sys_nanosleep|hrtimer_nanosleep")

# (category, pattern on a Swift frame's dotted name); the first matching rule decides.
_SWIFT_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("threading/sync", re.compile(r"^MetaweightTensor\.(?:ThreadPool|Parallel)\.")),
    ("GEMM", re.compile(r"^MetaweightTensor\.BLAS\.")),
    ("Winograd", re.compile(r"(?:^|\.)Winograd\.|\.winograd\w*")),
    ("im2col/col2im", re.compile(r"\.(?:im2col|col2im)(?:\.|$)")),
    ("batch norm", re.compile(r"\.BatchNorm\w*\.")),
    ("ReLU", re.compile(r"\.ReLU\.")),
    ("residual/copies", re.compile(r"\.(?:Residual|ShortcutA|Sequential)\.")),
    ("pooling", re.compile(r"\.(?:MaxPool2D|AvgPool2D|GlobalAvgPool)\.")),
    ("linear/loss", re.compile(r"\.(?:Linear|CrossEntropy|Flatten|WeightNet|DenseMLP)\.")),
    ("optimizer", re.compile(r"^MetaweightOptim\.|\.MetaStep\.takeVirtualStep\.")),
    ("conv other", re.compile(r"\.Conv2D\.")),
    ("other", re.compile(r"\.Dropout\.")),
]


def _decisive_category(fr: Frame) -> str | None:
    """The category a frame decides, or None for a frame that passes to its caller."""
    if fr.is_kernel:
        return None
    sym = fr.sym
    if sym == "[unknown]":
        # An address in a library without a name for it (a stripped extension): its kind of work
        # is unknown, and its callers' categories would misname it. Broken chains ("[unknown]"
        # object) pass on.
        return None if fr.dso == "[unknown]" else "unnamed"
    if _THREADING_SYMS.match(sym):
        return "threading/sync"
    if "openblas" in fr.dso.lower():
        return "GEMM"
    if fr.name != sym:  # a Swift symbol
        for cat, pat in _SWIFT_RULES:
            if pat.search(fr.name):
                return cat
    return None


def category_of(frames: Sequence[Frame]) -> str:
    """The kind of work a sample is doing, from its chain (leaf first).

    The innermost frame that names a category decides (an OpenBLAS kernel called from a Winograd
    transform is GEMM). memmove/memset, malloc, page faults and other kernel frames, the Swift
    runtime, the elementwise helpers and the network/trainer/method plumbing pass to their callers;
    if no caller decides: "memory" for a memory leaf (memmove, memset, malloc, page faults),
    "threading/sync" for a futex/yield in the kernel, "other" otherwise.
    """
    fallback = "other"
    for i, fr in enumerate(frames):
        cat = _decisive_category(fr)
        if cat is not None:
            return cat
        if i == 0 or fallback == "other":
            if fr.is_kernel:
                if _KERNEL_MEMORY.search(fr.sym):
                    fallback = "memory"
                elif _KERNEL_SYNC.search(fr.sym):
                    fallback = "threading/sync"
            elif _MEMORY_SYMS.match(fr.sym):
                fallback = "memory"
    return fallback


# ---------------------------------------------------------------------------------------------
# attribution


@dataclass
class Profile:
    """The attributed samples of one run (or of several, `merge`d)."""

    steps: int
    samples: int = 0
    period_ns: float = 0.0  # total sampled time (ns) inside the steps, all threads
    cells: dict[str, Counter[str]] = field(default_factory=dict)  # pass -> category -> ns
    positions: dict[str, list[float]] = field(default_factory=dict)  # pass -> samples' positions in step
    self_time: Counter[str] = field(default_factory=Counter)  # leaf symbol -> ns
    unknown_ns: float = 0.0  # ns whose leaf is an unnamed function of the metaweight extension
    outside_windows: int = 0  # samples of the process outside every step window
    stepping_tid: int | None = None

    @property
    def order(self) -> dict[str, float]:
        """pass -> median position (0..1) of its samples in their step."""
        return {p: statistics.median(v) for p, v in self.positions.items() if v}

    def pass_ns(self, name: str) -> float:
        return float(sum(self.cells.get(name, Counter()).values()))

    def passes(self) -> list[str]:
        order = self.order
        return sorted(self.cells, key=lambda p: (order.get(p, 2.0), p))

    def merge(self, other: Profile) -> None:
        """Adds `other`'s steps and samples (another round of the same build)."""
        self.steps += other.steps
        self.samples += other.samples
        self.period_ns += other.period_ns
        for p, c in other.cells.items():
            self.cells.setdefault(p, Counter()).update(c)
        for p, v in other.positions.items():
            self.positions.setdefault(p, []).extend(v)
        self.self_time.update(other.self_time)
        self.unknown_ns += other.unknown_ns
        self.outside_windows += other.outside_windows


def name_backward_sites(positions: dict[int | None, list[float]]) -> dict[int | None, str]:
    """Names the call sites of the train batch's backward pass by their order in the step.

    Args:
        positions: call site -> positions (0..1) in their step of the samples taken there.

    Returns:
        call site -> pass name: "train backward" for a single site (ERM, L2RW), the virtual-step
        and final weighted backward for two (MW-Net, GDW), "train backward #k" beyond.
    """
    sites = sorted(positions, key=lambda s: statistics.median(positions[s]) if positions[s] else 0.0)
    if len(sites) == 1:
        return {sites[0]: TRAIN_BACKWARD}
    if len(sites) == 2:
        return dict(zip(sites, BACKWARD_SITE_NAMES))
    return {s: f"{TRAIN_BACKWARD} #{k + 1}" for k, s in enumerate(sites)}


def attribute(
    samples: Iterable[Sample], windows: Sequence[tuple[float, float]], pid: int | None = None,
    metaweight_dso: str = "_core",
) -> Profile:
    """Attributes every sample inside a step window to a pass and a category.

    Args:
        samples: perf samples (any order).
        windows: (start, end) CLOCK_MONOTONIC seconds of each timed step.
        pid: the profiled process (samples of other processes are dropped); None keeps all.
        metaweight_dso: a substring of the extension's path, to count its unnamed functions.

    Returns:
        The `Profile`: ns per (pass, category), the passes' order, self time per leaf function.
    """
    wins = sorted(windows)
    starts = [w[0] for w in wins]
    prof = Profile(steps=len(wins))
    inside: list[tuple[Sample, int, float]] = []
    for s in samples:
        if pid is not None and s.pid != pid:
            continue
        k = bisect.bisect_right(starts, s.time) - 1
        if k < 0 or s.time > wins[k][1]:
            prof.outside_windows += 1
            continue
        w0, w1 = wins[k]
        inside.append((s, k, (s.time - w0) / max(w1 - w0, 1e-12)))
    # The stepping thread: the one whose chains hold the step call most often.
    roots: Counter[int] = Counter(s.tid for s, _, _ in inside if any(_is_step_root(f) for f in s.frames))
    tid = roots.most_common(1)[0][0] if roots else None
    prof.stepping_tid = tid
    # Passes of the stepping thread, in time order. OpenBLAS's kernels do not keep frame pointers,
    # so their chains stop at the kernel: those samples, and the other threads' samples, take the
    # pass of the stepping thread's previous sample with a whole chain in the same step (the next
    # one at a step's start); "unattributed" when that step has none (steps of a few samples).
    own: list[tuple[float, int, str, int | None]] = []
    labels: dict[int, tuple[str, int | None]] = {}
    for s, k, _ in inside:
        if s.tid == tid:
            p = pass_of(s.frames)
            if p[0] != OUTSIDE:
                labels[id(s)] = p
                own.append((s.time, k, p[0], p[1]))
    own.sort(key=lambda t: t[0])
    own_times = [t[0] for t in own]

    def borrowed(t: float, k: int) -> tuple[str, int | None]:
        j = bisect.bisect_right(own_times, t) - 1
        if j >= 0 and own[j][1] == k:
            return own[j][2], own[j][3]
        if j + 1 < len(own) and own[j + 1][1] == k:
            return own[j + 1][2], own[j + 1][3]
        return UNRESOLVED, None

    site_pos: dict[int | None, list[float]] = defaultdict(list)
    for s, _, pos in inside:
        lab = labels.get(id(s))
        if lab is not None and lab[0] == TRAIN_BACKWARD:
            site_pos[lab[1]].append(pos)
    site_names = name_backward_sites(site_pos) if site_pos else {}
    for s, k, pos in inside:
        lab = labels.get(id(s)) or borrowed(s.time, k)
        name = site_names.get(lab[1], TRAIN_BACKWARD) if lab[0] == TRAIN_BACKWARD else lab[0]
        cat = category_of(s.frames)
        prof.cells.setdefault(name, Counter())[cat] += s.period
        prof.positions.setdefault(name, []).append(pos)
        prof.samples += 1
        prof.period_ns += s.period
        leaf = s.frames[0] if s.frames else Frame("[unknown]", 0, "[unknown]", "[unknown]")
        prof.self_time[leaf.sym] += s.period
        if leaf.sym == "[unknown]" and metaweight_dso in leaf.dso:
            prof.unknown_ns += s.period
    return prof


# ---------------------------------------------------------------------------------------------
# reports


def demangle(symbols: Iterable[str]) -> dict[str, str]:
    """Readable names: `swift demangle --simplified` for Swift symbols where it is on PATH (or at
    /opt/swift/usr/bin), shortened; other symbols as they are."""
    syms = sorted(set(symbols))
    out = {s: s for s in syms}
    swift = [s for s in syms if swift_identifiers(s)]
    tool = shutil.which("swift-demangle") or next(
        (p for p in ("/opt/swift/usr/bin/swift-demangle",) if os.path.exists(p)), None)
    if swift and tool:
        try:
            r = subprocess.run([tool, "--simplified"], input="\n".join(swift) + "\n", capture_output=True,
                               text=True, timeout=60, check=True)
            for s, d in zip(swift, r.stdout.splitlines()):
                out[s] = d
        except (OSError, subprocess.SubprocessError):
            pass
    return {s: shorten(d) for s, d in out.items()}


def shorten(name: str, width: int = 96) -> str:
    """Drops argument lists and generic clauses from a demangled name and cuts it to `width`."""
    prev = None
    while prev != name:
        prev = name
        name = re.sub(r"\([^()]*\)", "()", name)
        name = re.sub(r"<[^<>]*>", "", name)
    name = name.replace(" with unmangled suffix", "")
    return name if len(name) <= width else name[: width - 1] + "…"


def pass_table(prof: Profile) -> str:
    """The markdown table of one profile: a row per pass, ms/step, % of the step, % per category."""
    cats = [c for c in CATEGORIES if any(prof.cells[p][c] for p in prof.cells)]
    total = prof.period_ns or 1.0
    head = "| pass | ms/step | % step | " + " | ".join(cats) + " |"
    rule = "|---|---:|---:|" + "---:|" * len(cats)
    rows = [head, rule]

    def pct(x: float) -> str:
        return f"{100 * x / total:.1f}" if x else "·"

    for p in prof.passes():
        ns = prof.pass_ns(p)
        rows.append(f"| {p} | {ns / 1e6 / prof.steps:.1f} | {pct(ns)} | "
                    + " | ".join(pct(prof.cells[p][c]) for c in cats) + " |")
    tot = Counter[str]()
    for p in prof.cells:
        tot.update(prof.cells[p])
    rows.append(f"| **all** | **{total / 1e6 / prof.steps:.1f}** | 100.0 | "
                + " | ".join(f"**{pct(tot[c])}**" for c in cats) + " |")
    return "\n".join(rows)


def top_table(prof: Profile, k: int, names: dict[str, str]) -> str:
    """The `k` functions with the most self time (leaf samples), % of the step."""
    total = prof.period_ns or 1.0
    rows = ["| % step | ms/step | function |", "|---:|---:|---|"]
    for sym, ns in prof.self_time.most_common(k):
        rows.append(f"| {100 * ns / total:.1f} | {ns / 1e6 / prof.steps:.1f} | `{names.get(sym, sym)}` |")
    return "\n".join(rows)


def delta_table(before: Profile, after: Profile) -> str:
    """Per-pass CPU ms/step of two profiles side by side, with the change."""
    passes = after.passes() + [p for p in before.passes() if p not in after.cells]
    rows = ["| pass | before ms/step | after ms/step | Δ ms | after/before |", "|---|---:|---:|---:|---:|"]
    for p in passes + ["**all**"]:
        b = (before.period_ns if p == "**all**" else before.pass_ns(p)) / 1e6 / before.steps
        a = (after.period_ns if p == "**all**" else after.pass_ns(p)) / 1e6 / after.steps
        ratio = f"{a / b:.2f}" if b > 0 else "–"
        rows.append(f"| {p} | {b:.1f} | {a:.1f} | {a - b:+.1f} | {ratio} |")
    return "\n".join(rows)


def profile_json(prof: Profile, names: dict[str, str], top: int) -> dict[str, Any]:
    total = prof.period_ns or 1.0
    return {
        "steps": prof.steps, "samples": prof.samples, "cpu_ms_per_step": prof.period_ns / 1e6 / prof.steps,
        "unnamed_pct": 100 * prof.unknown_ns / total,
        "samples_outside_steps": prof.outside_windows,
        "passes": [
            {"pass": p, "ms_per_step": prof.pass_ns(p) / 1e6 / prof.steps,
             "pct_of_step": 100 * prof.pass_ns(p) / total, "position_in_step": prof.order.get(p),
             "categories_pct_of_step": {c: 100 * v / total for c, v in prof.cells[p].items() if v}}
            for p in prof.passes()
        ],
        "top_self": [{"function": names.get(s, s), "symbol": s, "pct_of_step": 100 * ns / total,
                      "ms_per_step": ns / 1e6 / prof.steps} for s, ns in prof.self_time.most_common(top)],
    }


# ---------------------------------------------------------------------------------------------
# running perf


def check_perf() -> str:
    """The perf executable, after a one-event test; raises `ProfileError` saying what is wrong."""
    perf = shutil.which("perf")
    if perf is None:
        raise ProfileError("perf is not installed (Debian: apt-get install linux-perf)")
    with tempfile.TemporaryDirectory() as d:
        try:
            r = subprocess.run([perf, "record", "-q", "-e", "cpu-clock", "-g", "-o", os.path.join(d, "t.data"),
                                "--", "true"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            raise ProfileError(f"perf could not run: {e}") from None
    if r.returncode != 0:
        try:
            paranoid = Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip()
        except OSError:
            paranoid = "?"
        msg = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ProfileError(f"perf record is not permitted or failed (kernel.perf_event_paranoid = {paranoid}; "
                           f"needs <= 2): {msg}")
    return perf


def model_table() -> dict[str, tuple[str, tuple[int, ...]]]:
    """`bench_methods.MODELS` (one place for the benchmark models' specs and input shapes)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from bench_methods import MODELS
    finally:
        sys.path.pop(0)
    return dict(MODELS)


def child_main(cfg: dict[str, Any]) -> None:
    """The profiled process: build, warm up, say READY, wait, take the timed steps, say DONE."""
    try:
        import numpy as np
        from metaweight import _core

        _core.set_threads(cfg["threads"])
        spec, shape = model_table()[cfg["model"]]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((100, *shape)).astype(np.float32)
        y = rng.integers(0, 10, 100).astype(np.int64)
        xm = rng.standard_normal((100, *shape)).astype(np.float32)
        ym = rng.integers(0, 10, 100).astype(np.int64)
        net = _core.network_create(spec, tuple(shape), 0)
        tr = _core.trainer_create(net, (0, 0.01, 0.9, 0, 5e-4, 0, 0.9, 0.999, 1e-8), (0, [], 0.1, 0, 0.0, 0), 0)
        _core.trainer_set_method(tr, cfg["method"], 0)
        meta = cfg["method"].split("(", 1)[0].strip() in META_METHODS

        def step() -> None:
            _core.trainer_step(tr, x, y, None, xm if meta else None, ym if meta else None, None, None)

        for _ in range(cfg["warmup"]):
            step()
    except Exception as e:  # a bad --method, a build that cannot load: one line for the parent
        print(f"ERROR {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
    blas = getattr(_core, "blas_core", lambda: "?")()
    print("READY " + json.dumps({"so": _core.__file__, "blas_core": blas}), flush=True)
    sys.stdin.readline()
    windows = []
    for _ in range(cfg["steps"]):
        t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
        step()
        windows.append((t0, time.clock_gettime(time.CLOCK_MONOTONIC)))
    print("DONE " + json.dumps({"windows": windows}), flush=True)


def _read_line(stream: Any, proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while True:
        r, _, _ = select.select([stream], [], [], 1.0)
        if r:
            line = str(stream.readline())
            if not line:
                raise ProfileError(f"the profiled process ended before {what}")
            return line
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ProfileError(f"the profiled process did not report {what}")


def record(perf: str, args: argparse.Namespace, pythonpath: str | None, workdir: str) -> dict[str, Any]:
    """Runs the child under perf (events enabled for the timed steps only) and returns what the
    child reported plus the perf.data path."""
    data = os.path.join(workdir, "perf.data")
    ctl, ack = os.path.join(workdir, "ctl"), os.path.join(workdir, "ack")
    os.mkfifo(ctl)
    os.mkfifo(ack)
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cfg = {"model": args.model, "method": args.method, "steps": args.steps, "warmup": args.warmup,
           "threads": args.threads}
    cmd = [perf, "record", "-e", "cpu-clock", "-F", str(args.freq), "-g", "-k", "CLOCK_MONOTONIC", "-D", "-1",
           "--control", f"fifo:{ctl},{ack}", "-o", data, "--",
           sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)]
    with open(os.path.join(workdir, "stderr.txt"), "w+") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            line = ""
            while not line.startswith("READY "):
                line = _read_line(proc.stdout, proc, 1800, "the end of its warm-up")
                if line.startswith("ERROR "):
                    proc.wait()
                    raise ChildError(f"the profiled process could not start: {line[6:].strip()}")
            info: dict[str, Any] = json.loads(line[6:])
            c = os.open(ctl, os.O_RDWR)
            a = os.open(ack, os.O_RDWR)
            try:
                os.write(c, b"enable\n")
                r, _, _ = select.select([a], [], [], 60)
                if not r or not os.read(a, 64).startswith(b"ack"):
                    raise ProfileError("perf did not acknowledge enabling its events")
            finally:
                os.close(c)
                os.close(a)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = ""
            while not line.startswith("DONE "):
                line = _read_line(proc.stdout, proc, 3600, "its timed steps")
            info.update(json.loads(line[5:]))
            proc.stdin.close()
            rc = proc.wait(timeout=600)
        except ChildError:
            proc.kill()
            proc.wait()
            raise
        except ProfileError as e:
            proc.kill()
            proc.wait()
            err.seek(0)
            raise ProfileError(f"{e}; its output ends:\n{err.read()[-2000:]}") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err.seek(0)
        errtext = err.read()
    if rc != 0:
        raise ProfileError(f"perf record / the profiled process failed (exit {rc}):\n{errtext[-2000:]}")
    info["data"] = data
    info["pid"] = _child_pid(perf, data)
    return info


def _child_pid(perf: str, data: str) -> int | None:
    """The pid of the python process in the recording (the one with the most samples)."""
    r = subprocess.run([perf, "script", "-i", data, "-F", "pid"], capture_output=True, text=True)
    pids = Counter(line.strip() for line in r.stdout.splitlines() if line.strip())
    return int(pids.most_common(1)[0][0]) if pids else None


def analyse(perf: str, info: dict[str, Any], args: argparse.Namespace) -> Profile:
    proc = subprocess.Popen(
        [perf, "script", "-i", info["data"], "-F", "pid,tid,time,period,ip,sym,symoff,dso"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1 << 20)
    assert proc.stdout is not None
    windows = [(float(a), float(b)) for a, b in info["windows"]]
    prof = attribute(parse_perf_script(proc.stdout), windows, pid=info["pid"],
                     metaweight_dso=os.path.basename(info.get("so", "_core")))
    proc.wait()
    return prof


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def profile_once(
    perf: str, args: argparse.Namespace, label: str, pythonpath: str | None, rnd: int
) -> tuple[Profile, dict[str, Any]]:
    """One child under perf: its attributed profile and what it reported."""
    workdir = tempfile.mkdtemp(prefix="profile_step_")
    try:
        info = record(perf, args, pythonpath, workdir)
        prof = analyse(perf, info, args)
        if args.keep_data:
            os.makedirs(args.keep_data, exist_ok=True)
            name = f"{label}-{args.model}-{args.method}-round{rnd + 1}.data"
            shutil.copy(info["data"], os.path.join(args.keep_data, name))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return prof, info


def report(
    args: argparse.Namespace, label: str, pythonpath: str | None, prof: Profile, infos: list[dict[str, Any]],
    rounds_cpu: list[float],
) -> dict[str, Any]:
    """Prints one build's tables; returns its JSON record."""
    wall = [1000 * (b - a) for info in infos for a, b in info["windows"]]
    names = demangle(s for s, _ in prof.self_time.most_common(args.top))
    info = infos[0]
    print(f"\n## {label}: {args.model} {args.method}, {args.threads} thread(s), "
          f"PYTHONPATH={pythonpath or '(installed)'}")
    spread = f" (rounds: {', '.join(f'{c:.1f}' for c in rounds_cpu)})" if len(rounds_cpu) > 1 else ""
    print(f"extension {info['so']}, OpenBLAS core {info['blas_core']}; {prof.steps} steps in {len(infos)} "
          f"round(s), wall {statistics.median(wall):.1f} ms/step (median), CPU "
          f"{prof.period_ns / 1e6 / prof.steps:.1f} ms/step{spread} from {prof.samples} samples\n")
    unknown = 100 * prof.unknown_ns / (prof.period_ns or 1.0)
    if unknown > 5:
        print(f"note: {unknown:.0f}% of the step is in functions the extension does not name (a stripped build, "
              f"e.g. `pip install .`); profile an unstripped build with --pythonpath (benchmarks/README.md)\n")
    print(pass_table(prof))
    print(f"\nTop {args.top} functions by self time:\n")
    print(top_table(prof, args.top, names))
    return {"label": label, "pythonpath": pythonpath, "so": info["so"], "blas_core": info["blas_core"],
            "wall_ms_per_step": wall, "cpu_ms_per_step_by_round": rounds_cpu,
            **profile_json(prof, names, args.top)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--model", default="resnet32", help="resnet32, lenet (lenet5) or mlp")
    ap.add_argument("--method", default="erm", help="erm, l2rw, mwnet, gdw (options allowed: 'mwnet(memory=low)')")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    ap.add_argument("--warmup", type=int, default=2, help="steps before recording (default 2)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="children per build, alternating with --before's (default 1); profiles are summed")
    ap.add_argument("--threads", type=int, default=1, help="native threads (default 1: steadier when shared)")
    ap.add_argument("--freq", type=int, default=2000, help="samples per second per thread (default 2000)")
    ap.add_argument("--pythonpath", default=None, help="PYTHONPATH of the build to profile (default: installed)")
    ap.add_argument("--before", default=None, help="PYTHONPATH of a second build, profiled first, with a delta table")
    ap.add_argument("--top", type=int, default=15, help="self-time functions listed (default 15)")
    ap.add_argument("--keep-data", default=None, help="directory to keep the perf.data files in")
    ap.add_argument("--json", default=None, help="write everything to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        child_main(json.loads(args.child))
        return 0
    args.model = MODEL_ALIASES.get(args.model, args.model)
    if args.model not in model_table():
        ap.error(f"--model: one of {', '.join(model_table())} (got {args.model!r})")
    if min(args.steps, args.rounds, args.threads, args.freq, args.top) < 1 or args.warmup < 0:
        ap.error("--steps, --rounds, --threads, --freq and --top must be positive, --warmup non-negative")
    builds = [("before", args.before), ("after", args.pythonpath)] if args.before else [("profile", args.pythonpath)]
    profiles: dict[str, Profile] = {}
    infos: dict[str, list[dict[str, Any]]] = defaultdict(list)
    rounds_cpu: dict[str, list[float]] = defaultdict(list)
    try:
        perf = check_perf()
        for rnd in range(args.rounds):
            # Alternate the order (before, after, after, before, ...) so that load drifting over
            # the run weighs on both builds alike.
            for label, path in builds if rnd % 2 == 0 else builds[::-1]:
                prof, info = profile_once(perf, args, label, path, rnd)
                rounds_cpu[label].append(prof.period_ns / 1e6 / max(prof.steps, 1))
                infos[label].append(info)
                if label in profiles:
                    profiles[label].merge(prof)
                else:
                    profiles[label] = prof
    except ProfileError as e:
        print(f"profile_step: {e}", file=sys.stderr)
        return 2
    runs = [report(args, label, path, profiles[label], infos[label], rounds_cpu[label]) for label, path in builds]
    if args.before:
        print("\n## Per pass, before -> after (CPU ms per step)\n")
        print(delta_table(profiles["before"], profiles["after"]))
    if args.json:
        out = {"cpu": cpu_name(), "nproc": os.cpu_count(), "model": args.model, "method": args.method,
               "threads": args.threads, "steps": args.steps, "rounds": args.rounds, "warmup": args.warmup,
               "freq": args.freq, "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
               "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
               "load_average": os.getloadavg(), "runs": runs}
        Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
