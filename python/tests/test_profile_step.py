"""The parsing and attribution of `benchmarks/profile_step.py`, on a synthetic `perf script` text.

No perf is run: the text below has the format of `perf script -F pid,tid,time,period,ip,sym,symoff,dso`
with the call chains (leaf first) that a ResNet MW-Net step produces, symbols as the Swift core
mangles them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("profile_step", ROOT / "benchmarks" / "profile_step.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["profile_step"] = mod  # dataclasses resolve the module's annotations through it
    spec.loader.exec_module(mod)
    return mod


ps = _load()

CORE = "/x/metaweight/_core.cpython-311-x86_64-linux-gnu.so"
BLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
KERNEL = "[kernel.kallsyms]"

CABI = ("mw_trainer_step", 0x2E, CORE)
WEIGHTED_STEP = ("$s18MetaweightTraining7TrainerC12weightedStep_1x1n6labels5xMeta1m0fG0AA0E6ResultVAA0E9Weight"
                 "ing_p_SPySfGSiSPys5Int64VGANSgSiAQSgtKF", 0x6A, CORE)
WITNESS = ("$s19MetaweightWeighting5MWNetC0A8Training04StepB0AadEP4step7trainer1x1n6labels5xMeta1m0fG00aE6"
           "ResultVAF7TrainerC_SPySfGSiSPys5Int64VGAOSgSiARSgtKFTW", 0x1D, CORE)
MWNET_STEP = "$s19MetaweightWeighting5MWNetC4step7trainer1x1n6labels5xMeta1m0fG00A8Training10StepResultVAL7Tra" \
             "inerC_SPySfGSiSPys5Int64VGAQSgSiATSgtKF"
FWD_TRAIN = ("$s18MetaweightTraining7TrainerC17forwardTrainBatch1x1n6labels4mode6paramsSd_SdtSPySfG_SiSPys5"
             "Int64VG0A6Layers4ModeOAJSgtF", 0x99, CORE)
BWD_WEIGHTED = ("$s18MetaweightTraining7TrainerC16backwardWeighted12coefficients4intoySPySfG_SpySfGSgtF", 0x133, CORE)
META_PASS = ("$s19MetaweightWeighting8MetaStepC8metaPass_6params1x1m6labelsSd0A8Training7TrainerC_SPySfGA2HS"
             "iSPys5Int64VGtF", 0x80, CORE)
PROJECTED = ("$s19MetaweightWeighting8MetaStepC18projectedGradients_1n3outy0A8Training7TrainerC_SiSpySfGtF",
             0x40, CORE)
APPLY = ("$s18MetaweightTraining7TrainerC11applyUpdateSfyF", 0x30, CORE)
OPT_UPDATE = ("$s15MetaweightOptim9OptimizerC6update6params5grads5count2lrySpySfG_SPySfGSiSftF", 0x120, CORE)
NET_FWD = ("$s16MetaweightLayers7NetworkC7forward_5batch4tape4mode3rng6paramsySPySfG_SiAA0C4TapeCAA4ModeOAA6R"
           "NGBoxCAJSgtF", 0x3B2, CORE)
NET_BWD = ("$s16MetaweightLayers7NetworkC8backward4tape7dlogits5gradsyAA0C4TapeC_SPySfGSpySfGtF", 0x3B2, CORE)
NET_JVP = ("$s16MetaweightLayers7NetworkC3jvp4tape9direction3outyAA0C4TapeC_SPySfGSpySfGtF", 0x210, CORE)
SEQ_FWD = ("$s16MetaweightLayers10SequentialC7forwardyySPySfG_SpySfGAA11PassContextVzAA9LayerTapeCtF", 0x2A5, CORE)
CONV_FWD = ("$s16MetaweightLayers6Conv2DC7forwardyySPySfG_SpySfGAA11PassContextVzAA9LayerTapeCtFTf4nnndn_n",
            0x107, CORE)
IM2COL = ("$s16MetaweightLayers6Conv2DC6im2col_8channels1n2n05count1h1w6kernel6stride7padding2oh2ow4intoySPyS"
          "fG_S11iSpySfGtFZTf4nnnnnnnnnnnnnd_n", 0x5C, CORE)
WINO_INPUT = ("$s16MetaweightLayers8WinogradV15transformInput2yySPySfG_SpySfGSitFySi_SitXEfU_", 0x1F0, CORE)
BN_FWD = ("$s16MetaweightLayers9BatchNormC7forwardyySPySfG_SpySfGAA11PassContextVzAA9LayerTapeCtF", 0x405, CORE)
POOL_WORKER = ("$s16MetaweightTensor10ThreadPoolC10workerLoop33_A0F3E2B5A1C0D9E8F7A6B5C4D3E2F1LLyySiF", 0x90, CORE)
SGEMM = ("sgemm_kernel_COOPERLAKE", 0x1A4, BLAS)
MEMMOVE = ("__memmove_avx512_unaligned_erms", 0x35, LIBC)
COND_WAIT = ("pthread_cond_wait@@GLIBC_2.3.2", 0x1F, LIBC)
PAGE_FAULT = [("clear_page_erms", 0x1C, KERNEL), ("do_anonymous_page", 0x120, KERNEL),
              ("handle_mm_fault", 0xD0, KERNEL), ("exc_page_fault", 0x176, KERNEL),
              ("asm_exc_page_fault", 0x22, KERNEL)]

PID, MAIN, WORKER = 4242, 4242, 4250
# The method's step: MW-Net's two call sites of Trainer.backwardWeighted. The real step's call
# site has the lower address here, so only the order in time can name them right.
VIRTUAL_SITE, FINAL_SITE = 0x4A0, 0x2FB


def step_chain(*inner: tuple[str, int, str], site: int = 0x100) -> list[tuple[str, int, str]]:
    """A chain of the stepping thread, leaf first: `inner` (leaf first) under MW-Net's step."""
    method = (MWNET_STEP, site, CORE)
    return [*inner, method, WITNESS, WEIGHTED_STEP, CABI]


def perf_text(samples: list[tuple[int, int, float, list[tuple[str, int, str]]]], period: int = 500000) -> str:
    out = []
    for pid, tid, t, frames in samples:
        out.append(f"{pid}/{tid} {t:.6f}:     {period} ")
        for i, (sym, off, dso) in enumerate(frames):
            where = f"{sym}+0x{off:x}" if sym != "[unknown]" else sym
            out.append(f"\t{0x100000 + 16 * i:16x} {where} ({dso})")
        out.append("")
    return "\n".join(out) + "\n"


# One step window [10.0, 11.0]; the samples in the order MW-Net takes its passes.
WINDOW = (10.0, 11.0)
SAMPLES = [
    (PID, MAIN, 9.9, step_chain(SGEMM, CONV_FWD, SEQ_FWD, NET_FWD, FWD_TRAIN)),  # before the window
    (PID, MAIN, 10.05, step_chain(IM2COL, CONV_FWD, SEQ_FWD, NET_FWD, FWD_TRAIN)),
    (PID, MAIN, 10.10, [SGEMM, ("[unknown]", 0, "[unknown]")]),  # a kernel's broken chain
    (PID, MAIN, 10.20, step_chain(MEMMOVE, NET_BWD, BWD_WEIGHTED, site=VIRTUAL_SITE)),
    (PID, MAIN, 10.30, step_chain(WINO_INPUT, CONV_FWD, SEQ_FWD, NET_FWD, META_PASS)),
    (PID, MAIN, 10.40, step_chain(*PAGE_FAULT, BN_FWD, SEQ_FWD, NET_BWD, META_PASS)),
    (PID, MAIN, 10.50, step_chain(MEMMOVE, CONV_FWD, NET_JVP, PROJECTED)),
    (PID, WORKER, 10.52, [SGEMM, ("[unknown]", 0, "[unknown]")]),  # another thread, during the JVP
    (PID, MAIN, 10.70, step_chain(MEMMOVE, NET_BWD, BWD_WEIGHTED, site=FINAL_SITE)),
    (PID, MAIN, 10.90, [OPT_UPDATE, APPLY, WEIGHTED_STEP, CABI]),
    (PID, WORKER, 10.95, [("futex_wait", 0x40, KERNEL), COND_WAIT, POOL_WORKER]),
    (4243, 4243, 10.5, step_chain(SGEMM)),  # another process
    (PID, MAIN, 11.2, step_chain(SGEMM, CONV_FWD, NET_FWD, FWD_TRAIN)),  # after the window
]


def test_parse_reads_header_frames_and_offsets() -> None:
    text = perf_text(SAMPLES[1:3])
    samples = list(ps.parse_perf_script(text.splitlines(keepends=True)))
    assert [(s.pid, s.tid, s.time, s.period) for s in samples] == [(PID, MAIN, 10.05, 500000)] * 1 + [
        (PID, MAIN, 10.10, 500000)]
    first = samples[0].frames
    assert first[0].sym == IM2COL[0] and first[0].off == 0x5C and first[0].dso == CORE
    assert first[0].name.startswith("MetaweightLayers.Conv2D.im2col.")
    assert [f.sym for f in samples[1].frames] == ["sgemm_kernel_COOPERLAKE", "[unknown]"]
    # perf right-aligns the pid: a short one starts the header with spaces.
    padded = list(ps.parse_perf_script([" 2080/2081  20907.633988:     500000 \n", f"\t  154afe {SGEMM[0]}+0x4e ({BLAS})\n"]))
    assert [(s.pid, s.tid, s.time, [f.sym for f in s.frames]) for s in padded] == [
        (2080, 2081, 20907.633988, [SGEMM[0]])]


def test_swift_identifiers_read_module_type_and_function() -> None:
    assert ps.swift_identifiers(NET_BWD[0])[:6] == ["MetaweightLayers", "Network", "backward", "tape", "dlogits", "grads"]
    assert ps.swift_identifiers(WINO_INPUT[0])[:3] == ["MetaweightLayers", "Winograd", "transformInput2"]
    assert ps.swift_identifiers("sgemm_kernel_COOPERLAKE") == []


def _frames(chain: list[tuple[str, int, str]]) -> list[Any]:
    return [ps.Frame(s, o, d, ps.frame_name(s)) for s, o, d in chain]


@pytest.mark.parametrize(
    "chain, category",
    [
        ([SGEMM, CONV_FWD], "GEMM"),
        ([MEMMOVE, IM2COL, CONV_FWD], "im2col/col2im"),  # a memmove takes its caller's category
        ([MEMMOVE, CONV_FWD, NET_FWD], "conv other"),
        ([MEMMOVE, NET_BWD, BWD_WEIGHTED], "memory"),  # no caller with a category
        ([*PAGE_FAULT, BN_FWD, SEQ_FWD], "batch norm"),  # a page fault in batch norm's loop
        ([*PAGE_FAULT, MEMMOVE, NET_FWD], "memory"),
        ([WINO_INPUT, CONV_FWD], "Winograd"),
        ([OPT_UPDATE, APPLY], "optimizer"),
        ([("futex_wait", 0x40, KERNEL), COND_WAIT, POOL_WORKER], "threading/sync"),
        ([("blas_thread_server", 0x78, BLAS)], "threading/sync"),
        ([("_PyEval_EvalFrameDefault", 0x50, "/usr/lib/libpython3.11.so")], "other"),
        ([MEMMOVE, ("[unknown]", 0, CORE), SEQ_FWD], "unnamed"),  # a stripped extension's function
        ([SGEMM, ("[unknown]", 0, "[unknown]")], "GEMM"),
    ],
)
def test_category_is_the_innermost_frame_that_names_one(chain: list[tuple[str, int, str]], category: str) -> None:
    assert ps.category_of(_frames(chain)) == category


def test_pass_of_reads_the_swift_call_chain() -> None:
    assert ps.pass_of(_frames(step_chain(IM2COL, CONV_FWD, NET_FWD, FWD_TRAIN))) == (ps.TRAIN_FORWARD, None)
    assert ps.pass_of(_frames(step_chain(MEMMOVE, NET_BWD, BWD_WEIGHTED, site=FINAL_SITE))) == (
        ps.TRAIN_BACKWARD, FINAL_SITE)
    assert ps.pass_of(_frames(step_chain(CONV_FWD, NET_FWD, META_PASS)))[0] == ps.META_FORWARD
    assert ps.pass_of(_frames(step_chain(CONV_FWD, NET_BWD, META_PASS)))[0] == ps.META_BACKWARD
    # Trainer.backwardLogits inlined into the method's step (GDW): a train backward at its call site.
    assert ps.pass_of(_frames(step_chain(CONV_FWD, NET_BWD, site=0x777))) == (ps.TRAIN_BACKWARD, 0x777)
    # A stripped build: MetaStep.metaPass (internal) is unnamed; the backward below it is the meta pass.
    unnamed = ("[unknown]", 0, CORE)
    assert ps.pass_of(_frames(step_chain(CONV_FWD, NET_BWD, unnamed)))[0] == ps.META_BACKWARD
    assert ps.pass_of(_frames(step_chain(CONV_FWD, NET_FWD, unnamed)))[0] == ps.META_FORWARD
    assert ps.pass_of(_frames(step_chain(CONV_FWD, NET_JVP, PROJECTED)))[0] == ps.TANGENT
    assert ps.pass_of(_frames([OPT_UPDATE, APPLY, WEIGHTED_STEP, CABI]))[0] == ps.UPDATE
    assert ps.pass_of(_frames([SGEMM, ("[unknown]", 0, "[unknown]")]))[0] == ps.OUTSIDE


def _profile() -> Any:
    samples = ps.parse_perf_script(perf_text(SAMPLES).splitlines(keepends=True))
    return ps.attribute(samples, [WINDOW], pid=PID, metaweight_dso="_core")


def test_attribute_counts_only_the_process_samples_inside_the_step() -> None:
    prof = _profile()
    assert prof.samples == 10  # 13 less the two outside the window and the other process's
    assert prof.outside_windows == 2
    assert prof.stepping_tid == MAIN
    assert prof.period_ns == 10 * 500000


def test_attribute_names_backward_sites_by_their_order_in_the_step() -> None:
    prof = _profile()
    virtual, final = ps.BACKWARD_SITE_NAMES
    assert prof.cells[virtual] == {"memory": 500000}
    assert prof.cells[final] == {"memory": 500000}
    assert prof.order[virtual] < prof.order[ps.META_FORWARD] < prof.order[final]
    assert ps.TRAIN_BACKWARD not in prof.cells


def test_attribute_gives_broken_chains_and_workers_the_stepping_threads_pass() -> None:
    prof = _profile()
    # The kernel sample with a broken chain at 10.10 follows the train forward's im2col sample.
    assert prof.cells[ps.TRAIN_FORWARD] == {"im2col/col2im": 500000, "GEMM": 500000}
    # The worker's GEMM at 10.52 falls in the JVP; its idle wait at 10.95 after the update.
    assert prof.cells[ps.TANGENT] == {"conv other": 500000, "GEMM": 500000}
    assert prof.cells[ps.UPDATE] == {"optimizer": 500000, "threading/sync": 500000}
    assert prof.cells[ps.META_FORWARD] == {"Winograd": 500000}
    assert prof.cells[ps.META_BACKWARD] == {"batch norm": 500000}


def test_tables_list_passes_in_step_order_with_ms_per_step() -> None:
    prof = _profile()
    table = ps.pass_table(prof)
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    virtual, final = ps.BACKWARD_SITE_NAMES
    assert rows == [ps.TRAIN_FORWARD, virtual, ps.META_FORWARD, ps.META_BACKWARD, ps.TANGENT, final, ps.UPDATE,
                    "**all**"]
    assert "| train forward | 1.0 | 20.0 |" in table  # 2 samples x 0.5 ms, of 10
    delta = ps.delta_table(prof, prof)
    assert "| **all** | 5.0 | 5.0 | +0.0 | 1.00 |" in delta
    top = ps.top_table(prof, 2, {}).splitlines()
    assert "__memmove_avx512_unaligned_erms" in top[2] and top[2].startswith("| 30.0 | 1.5 |")
    assert "sgemm_kernel_COOPERLAKE" in top[3] and top[3].startswith("| 20.0 | 1.0 |")


def test_main_exits_2_with_a_message_when_perf_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ps.shutil, "which", lambda name: None)
    assert ps.main(["--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "perf is not installed" in err and "Traceback" not in err


def test_merged_rounds_add_steps_samples_and_cells() -> None:
    merged = _profile()
    merged.merge(_profile())
    assert merged.steps == 2 and merged.samples == 20 and merged.period_ns == 20 * 500000
    assert merged.cells[ps.TRAIN_FORWARD] == {"im2col/col2im": 1000000, "GEMM": 1000000}
    assert "| train forward | 1.0 | 20.0 |" in ps.pass_table(merged)  # per step: unchanged
