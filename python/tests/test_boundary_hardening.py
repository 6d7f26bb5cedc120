"""The core's boundary holds against hostile callers: arrays are copied before they are checked
(another thread rewriting them cannot crash the interpreter), checkpoints are read only from
regular files and validated semantically, over-limit allocations raise ResourceError, a step
whose batch-norm statistics overflow is rolled back, and killed saves leave no temporaries."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from pathlib import Path

import metaweight as mw
import numpy as np
import pytest
from _api_support import small_mlp

# ---------------------------------------------------------------------------------------------
# A CRC-valid checkpoint rewriter (the format of Sources/MetaweightTraining/Checkpoint.swift)

_MAGIC = b"MWCKPT\0\0"
_FMT = {1: "<f", 2: "<q", 3: "<B"}


def _read_sections(path: str) -> tuple[int, dict[str, tuple[int, list]]]:
    data = open(path, "rb").read()
    assert data[:8] == _MAGIC
    version, count = struct.unpack_from("<II", data, 8)
    pos, sections = 16, {}
    for _ in range(count):
        (nlen,) = struct.unpack_from("<I", data, pos)
        pos += 4
        name = data[pos : pos + nlen].decode()
        pos += nlen
        kind = data[pos]
        (n,) = struct.unpack_from("<Q", data, pos + 1)
        pos += 9
        width = struct.calcsize(_FMT[kind])
        values = [struct.unpack_from(_FMT[kind], data, pos + i * width)[0] for i in range(n)]
        pos += n * width
        sections[name] = (kind, values)
    return version, sections


def _write_sections(path: str, version: int, sections: dict[str, tuple[int, list]]) -> None:
    out = bytearray(_MAGIC + struct.pack("<II", version, len(sections)))
    for name, (kind, values) in sections.items():
        raw = name.encode()
        out += struct.pack("<I", len(raw)) + raw + bytes([kind]) + struct.pack("<Q", len(values))
        for v in values:
            out += struct.pack(_FMT[kind], v)
    out += struct.pack("<I", zlib.crc32(bytes(out)) & 0xFFFFFFFF)
    open(path, "wb").write(bytes(out))


def _trained_adam_trainer(seed: int = 0) -> tuple[mw.Trainer, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=20)
    tr = mw.Trainer(small_mlp(seed), mw.Adam(lr=1e-3), seed=seed)
    tr.step(x, y)
    return tr, x, y


def _snapshot(tr: mw.Trainer) -> tuple[np.ndarray, int]:
    return tr.model.get_flat().copy(), tr.step_count


# ---------------------------------------------------------------------------------------------
# 1. Another thread rewriting inputs during a call


_HAMMER = textwrap.dedent(
    """
    import threading, numpy as np, metaweight as mw
    rng = np.random.default_rng(0)
    # A wide network and batch: the core's forward pass is long enough for the other thread to
    # rewrite the labels between the check and the use (the window the old core had).
    x = rng.normal(size=(256, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=256).astype(np.int64)
    ym = rng.integers(0, 10, size=16).astype(np.int64)
    good, goodm = y.copy(), ym.copy()
    bad, badm = np.full_like(y, 2**31 - 1), np.full_like(ym, -(2**31))  # far out of range as Int32 too
    stop = threading.Event()

    def mutate():
        while not stop.is_set():
            y[:] = bad; ym[:] = badm
            y[:] = good; ym[:] = goodm

    erm = mw.Trainer(mw.mlp(64, hidden=(512, 512), num_classes=10, seed=0), mw.SGD(lr=0.01), seed=0)
    mwnet = mw.Trainer(mw.mlp(64, hidden=(32,), num_classes=10, seed=1), mw.SGD(lr=0.01), method=mw.MWNet(), seed=1)
    t = threading.Thread(target=mutate)
    t.start()
    refused = ok = 0
    try:
        for i in range({calls}):
            for call in (
                lambda: erm.step(x, y),
                lambda: erm.losses(x, y),
                lambda: erm.evaluate(x, y),
                lambda: mwnet.step(x, y, x_meta=x[:16], y_meta=ym),
            ):
                try:
                    call()
                    ok += 1
                except mw.LabelError:
                    refused += 1
    finally:
        stop.set()
        t.join()
    print("ok", ok, "refused", refused)
    """
)


def test_rewriting_labels_from_another_thread_during_step_losses_and_evaluate_never_crashes():
    # Run in a child so that a crash (the old SIGSEGV) is reported as a failure of this test.
    # The child imports the same metaweight as this process (installed, or an in-place build),
    # whatever other folders tests have put on sys.path since.
    package_dir = str(Path(mw.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_dir, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run(
        [sys.executable, "-c", _HAMMER.format(calls=200)], capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode == 0, f"child died with {r.returncode}: {r.stderr[-2000:]}"
    assert r.stdout.startswith("ok "), r.stdout
    ok, refused = int(r.stdout.split()[1]), int(r.stdout.split()[3])
    assert ok + refused == 4 * 200


# ---------------------------------------------------------------------------------------------
# 2. Checkpoints: special files, hostile contents


def _load_in_thread(tr: mw.Trainer, path: str, timeout: float = 20.0) -> BaseException | None:
    box: list[BaseException | None] = [None]

    def run():
        try:
            tr.load(path)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            box[0] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"load({path!r}) hung"
    return box[0]


def test_load_refuses_a_fifo_without_hanging(tmp_path):
    fifo = str(tmp_path / "ck.fifo")
    os.mkfifo(fifo)
    tr, _, _ = _trained_adam_trainer()
    before = _snapshot(tr)
    err = _load_in_thread(tr, fifo)
    assert isinstance(err, mw.CheckpointError), err
    assert "FIFO" in str(err) and fifo in str(err)
    np.testing.assert_array_equal(tr.model.get_flat(), before[0])


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/proc/self/status", "DIR"])
def test_load_refuses_devices_proc_files_and_directories_with_a_checkpoint_error(tmp_path, path):
    if path == "DIR":
        path = str(tmp_path)
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist here")
    tr, _, _ = _trained_adam_trainer()
    err = _load_in_thread(tr, path)
    assert isinstance(err, mw.CheckpointError), err
    assert path in str(err)


def test_load_refuses_a_negative_adam_second_moment_with_a_valid_crc_and_changes_nothing(tmp_path):
    tr, _, _ = _trained_adam_trainer()
    path = str(tmp_path / "ck.mw")
    tr.save(path)
    version, sections = _read_sections(path)
    kind, second = sections["optimizer.second"]
    second[3] = -1.0
    sections["optimizer.second"] = (kind, second)
    _write_sections(path, version, sections)
    before = _snapshot(tr)
    with pytest.raises(mw.CheckpointError, match="optimizer.second"):
        tr.load(path)
    np.testing.assert_array_equal(tr.model.get_flat(), before[0])
    assert tr.step_count == before[1]


@pytest.mark.parametrize("steps", [2**63 - 1, -1, 2**53 + 1])
def test_load_refuses_a_step_counter_outside_0_to_2_pow_53(tmp_path, steps):
    tr, _, _ = _trained_adam_trainer()
    path = str(tmp_path / "ck.mw")
    tr.save(path)
    version, sections = _read_sections(path)
    sections["optimizer.steps"] = (2, [steps])
    _write_sections(path, version, sections)
    with pytest.raises(mw.CheckpointError, match="optimizer.steps"):
        tr.load(path)
    assert tr.step_count == 1


def test_load_refuses_non_finite_parameters_with_a_valid_crc(tmp_path):
    tr, _, _ = _trained_adam_trainer()
    path = str(tmp_path / "ck.mw")
    tr.save(path)
    version, sections = _read_sections(path)
    kind, params = sections["network.params"]
    params[0] = float("inf")
    sections["network.params"] = (kind, params)
    _write_sections(path, version, sections)
    before = _snapshot(tr)
    with pytest.raises(mw.CheckpointError, match="network.params"):
        tr.load(path)
    np.testing.assert_array_equal(tr.model.get_flat(), before[0])


def test_load_refuses_a_section_declaring_more_values_than_the_file_holds(tmp_path):
    tr, _, _ = _trained_adam_trainer()
    path = str(tmp_path / "ck.mw")
    tr.save(path)
    data = bytearray(open(path, "rb").read())
    # The first section's count (after magic, version, section count, name length, name, type).
    (nlen,) = struct.unpack_from("<I", data, 16)
    struct.pack_into("<Q", data, 16 + 4 + nlen + 1, 1 << 30)
    struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])) & 0xFFFFFFFF)
    open(path, "wb").write(bytes(data))
    with pytest.raises(mw.CheckpointError, match="declares"):
        tr.load(path)


def test_save_removes_temporaries_left_by_a_killed_save_to_the_same_path(tmp_path):
    tr, _, _ = _trained_adam_trainer()
    path = tmp_path / "ck.mw"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"ck.mw.tmp.{dead.pid}.140000000000"
    stale.write_bytes(b"half a checkpoint")
    mine = tmp_path / f"ck.mw.tmp.{os.getpid()}.1"  # this (live) process: may be saving now
    mine.write_bytes(b"in progress")
    other = tmp_path / "other.mw.tmp.1.1"  # another path's temporary
    other.write_bytes(b"x")
    tr.save(str(path))
    assert not stale.exists()
    assert mine.exists() and other.exists()
    tr.load(str(path))


# ---------------------------------------------------------------------------------------------
# 3. Allocation limits


def test_resource_error_is_a_metaweight_error_and_a_memory_error():
    assert issubclass(mw.ResourceError, mw.MetaweightError)
    assert issubclass(mw.ResourceError, MemoryError)
    assert mw.errors.ResourceError is mw.ResourceError
    assert "ResourceError" in mw.__all__


def test_trainer_on_a_network_whose_activations_exceed_the_limit_raises_resource_error():
    # Three 64-channel convolutions over 8192×8192 inputs: about 48 GiB of activations for one
    # example; the parameters are tiny, so only the trainer's allocation is over the limit.
    net = mw.build(
        [mw.Conv2d(64, 3, padding=1), mw.Conv2d(64, 3, padding=1), mw.Conv2d(64, 3, padding=1),
         mw.GlobalAvgPool(), mw.Linear(10)],
        input_shape=(1, 8192, 8192),
    )
    with pytest.raises(mw.ResourceError, match="over the limit"):
        mw.Trainer(net, mw.SGD(lr=0.1))


# ---------------------------------------------------------------------------------------------
# 4. Batch-norm running statistics that would overflow


def test_a_step_whose_batchnorm_running_variance_would_overflow_is_refused_and_rolled_back():
    net = mw.build([mw.Linear(16), mw.BatchNorm(), mw.ReLU(), mw.Linear(3)], input_shape=(4,), seed=0)
    tr = mw.Trainer(net, mw.SGD(lr=0.1, momentum=0.9), seed=0)
    rng = np.random.default_rng(0)
    tr.step(rng.normal(size=(8, 4)).astype(np.float32), rng.integers(0, 3, size=8))
    params, state, steps = net.get_flat().copy(), dict(net.buffers()), tr.step_count
    x = np.full((8, 4), 3e38, dtype=np.float32)
    x[::2] = -3e38
    with pytest.raises(mw.NonFiniteError, match="running statistic"):
        tr.step(x, rng.integers(0, 3, size=8))
    np.testing.assert_array_equal(net.get_flat(), params)
    for k, v in net.buffers().items():
        np.testing.assert_array_equal(v, state[k])
        assert np.isfinite(v).all()
    assert tr.step_count == steps
    tr.step(rng.normal(size=(8, 4)).astype(np.float32), rng.integers(0, 3, size=8))  # still trains


# ---------------------------------------------------------------------------------------------
# 5. LAW search checkpoints with hostile contents


def _law_search_checkpoint(tmp_path) -> tuple[str, object]:
    from _api_support import digits_split
    from metaweight.law import LAWConfig, LAWSearch

    x, y, _, _ = digits_split(seed=0)
    cfg = LAWConfig(stages=4, warmup_stages=1, epochs=4, batch_size=32, parallel=2, fdu_epochs=1,
                    actor_hidden=16, critic_hidden=16)
    spec = "mlp(hidden=32, classes=10)"
    s = LAWSearch(spec, cfg, seed=3)
    s.search(x[:320], y[:320], x[400:560], y[400:560], episodes=2, progress=False)  # one full round
    path = str(tmp_path / "law.ckpt")
    s.save(path)
    s.close()
    return path, lambda: LAWSearch(spec, cfg, seed=3, input_shape=(64,))


def test_law_search_load_refuses_a_replay_buffer_with_the_wrong_action_width(tmp_path):
    path, fresh = _law_search_checkpoint(tmp_path)
    version, sections = _read_sections(path)
    meta = sections["law.buffer.meta"][1]
    n, width = meta[1], meta[4]
    assert n > 0 and width > 0
    meta[4] = width + 1
    sections["law.buffer.actions"] = (1, sections["law.buffer.actions"][1] + [0.0] * n)
    _write_sections(path, version, sections)
    with pytest.raises(mw.CheckpointError, match="replay buffer actions"):
        fresh().load(path)


def test_law_search_load_refuses_a_negative_adam_second_moment_of_the_agent(tmp_path):
    path, fresh = _law_search_checkpoint(tmp_path)
    version, sections = _read_sections(path)
    key = next(k for k in sections if k.startswith("law.agent.opt.") and k.endswith(".v") and sections[k][1])
    sections[key][1][0] = -0.5
    _write_sections(path, version, sections)
    with pytest.raises(mw.CheckpointError, match="second moment"):
        fresh().load(path)


@pytest.mark.parametrize("method", ["mwnet", "gdw"])
def test_a_step_refused_after_v_diverged_leaves_v_its_optimizer_and_the_network_unchanged(method, tmp_path):
    # V's learning rate 1e30 sends V's parameters to inf within a step or two; the step that then
    # finds NaN weights (MW-Net) or a NaN V gradient (GDW) has already updated V and V's
    # optimizer, and the trainer must put them back (found by scripts/fuzz.py's nothing-lost check).
    from metaweight import models

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    cls = mw.methods.MWNet if method == "mwnet" else mw.methods.GDW
    tr = mw.Trainer(models.mlp(4, [8], 3, seed=0), optimizer=mw.SGD(lr=0.1), method=cls(lr=1e30))
    for i in range(5):
        before_v = {k: v.copy() for k, v in tr.weight_net.state_dict().items()}
        tr.save(tmp_path / f"before{i}.ckpt")
        steps = tr.step_count
        try:
            tr.step(x, y, x_meta=x[:6], y_meta=y[:6])
        except mw.errors.NonFiniteError:
            assert tr.step_count == steps
            after_v = tr.weight_net.state_dict()
            for k, v in before_v.items():
                np.testing.assert_array_equal(after_v[k], v, err_msg=f"V's {k} changed by a refused step")
            tr.save(tmp_path / "after.ckpt")
            # Parameters, optimizer state, batch-norm statistics, V and V's optimizer: byte for byte.
            assert (tmp_path / "after.ckpt").read_bytes() == (tmp_path / f"before{i}.ckpt").read_bytes()
            return
    pytest.fail("V with learning rate 1e30 never made a step fail")
