"""Tests for metaweight.data: loaders (digits, MNIST IDX, CIFAR pickles) and preprocessing."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from metaweight import _core, data

# ----------------------------------------------------------------------------------------------
# Fixture helpers
# ----------------------------------------------------------------------------------------------


def _mnist_dir() -> Path:
    env = os.environ.get("METAWEIGHT_MNIST_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist-t10k"


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False, code: int = 0x08) -> Path:
    """Writes ``array`` as an IDX file (big-endian), optionally gzip-compressed."""
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=dtypes[code]).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_mnist(directory: Path, prefix: str, n: int, seed: int, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.tile(np.arange(10, dtype=np.uint8), n // 10 + 1)[:n]
    write_idx(directory / f"{prefix}-images-idx3-ubyte", images, gz=gz)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
    return images, labels


def write_cifar_batch(
    path: Path, data_u8: np.ndarray, labels: list[int], label_key: bytes, protocol: int
) -> None:
    batch = {b"batch_label": b"test batch", label_key: labels, b"data": data_u8, b"filenames": []}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------


def test_digits_shapes_range_dtypes() -> None:
    pytest.importorskip("sklearn")
    ds = data.load_digits()
    assert ds.x_train.shape[1:] == (1, 8, 8)
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 1797
    assert ds.x_test.shape[0] == round(0.3 * 1797)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() == pytest.approx(1.0)
    assert ds.num_classes == 10 and ds.name == "digits" and ds.classes == tuple("0123456789")
    flat = data.load_digits(flatten=True)
    assert flat.x_train.shape[1:] == (64,)
    np.testing.assert_array_equal(flat.x_train, ds.x_train.reshape(-1, 64))


def test_digits_split_deterministic_and_stratified() -> None:
    pytest.importorskip("sklearn")
    a = data.load_digits(seed=3)
    b = data.load_digits(seed=3)
    c = data.load_digits(seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train) or not np.array_equal(a.x_train, c.x_train)
    total = data.class_counts(np.concatenate([a.y_train, a.y_test]), 10)
    test_counts = data.class_counts(a.y_test, 10)
    # every class split in the same proportion, within one example
    assert np.all(np.abs(test_counts - 0.3 * total) <= 1.0)


def test_digits_bad_fraction() -> None:
    with pytest.raises(_core.InvalidArgumentError, match="test_fraction"):
        data.load_digits(test_fraction=1.0)


# ----------------------------------------------------------------------------------------------
# split / batches / class_counts
# ----------------------------------------------------------------------------------------------


def test_split_stratified_exact_and_disjoint() -> None:
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    x = np.arange(y.shape[0], dtype=np.float32)[:, None]
    xtr, _, xte, yte = data.split(x, y, 0.2, seed=1)
    assert xte.shape[0] == 20 and xtr.shape[0] == 80
    np.testing.assert_array_equal(data.class_counts(yte, 4), [10, 6, 3, 1])
    assert set(xtr[:, 0].tolist()).isdisjoint(xte[:, 0].tolist())
    a, b = data.split_indices(y, 0.2, seed=1)
    a2, b2 = data.split_indices(y, 0.2, seed=1)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    _, b3 = data.split_indices(y, 0.2, seed=2)
    assert not np.array_equal(b, b3)
    # unstratified still exact in size
    _, bu = data.split_indices(y, 0.25, seed=0, stratify=False)
    assert bu.shape[0] == 25


def test_split_bad_arguments() -> None:
    y = np.zeros(10, dtype=np.int64)
    with pytest.raises(_core.InvalidArgumentError, match="fraction"):
        data.split(np.zeros((10, 2)), y, 1.5)
    with pytest.raises(_core.ShapeError):
        data.split(np.zeros((9, 2)), y, 0.5)
    with pytest.raises(_core.DTypeError):
        data.split_indices(np.zeros(10, dtype=np.float32), 0.5)
    with pytest.raises(_core.InvalidArgumentError, match="seed"):
        data.split_indices(y, 0.5, seed=-1)


def test_batches_follow_order() -> None:
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10, dtype=np.int64)
    order = np.random.default_rng(0).permutation(10)
    got = list(data.batches(x, y, 4, order=order))
    assert [b[1].shape[0] for b in got] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), order)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got])[:, 0], order.astype(np.float32))
    assert [b[1].shape[0] for b in data.batches(x, y, 4, order=order, drop_last=True)] == [4, 4]
    assert [b[1].tolist() for b in data.batches(x, y, 5)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    with pytest.raises(_core.InvalidArgumentError, match="batch_size"):
        data.batches(x, y, 0)
    with pytest.raises(_core.InvalidArgumentError, match="order"):
        data.batches(x, y, 2, order=[0, 10])


def test_class_counts() -> None:
    np.testing.assert_array_equal(data.class_counts(np.array([0, 2, 2, 4]), 5), [1, 0, 2, 0, 1])
    assert data.class_counts(np.array([0, 2]), 3).dtype == np.int64
    with pytest.raises(_core.InvalidArgumentError, match="outside"):
        data.class_counts(np.array([0, 5]), 5)


# ----------------------------------------------------------------------------------------------
# normalize
# ----------------------------------------------------------------------------------------------


def test_normalize_images_per_channel() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(64, 3, 5, 5)) * np.array([1.0, 5.0, 0.1])[None, :, None, None] + 3.0).astype(
        np.float32
    )
    xt = rng.normal(size=(8, 3, 5, 5)).astype(np.float32)
    (xn, xtn), (mean, std) = data.normalize(x, xt)
    assert xn.dtype == np.float32 and xtn.dtype == np.float32
    assert mean.shape == (3,) and std.shape == (3,)
    np.testing.assert_allclose(xn.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(xn.std(axis=(0, 2, 3)), 1.0, atol=1e-4)
    np.testing.assert_allclose(xtn, (xt - mean[None, :, None, None]) / std[None, :, None, None], rtol=1e-5)
    # reuse given statistics
    (again,), (m2, _) = data.normalize(xt, mean=mean, std=std)
    np.testing.assert_allclose(again, xtn, rtol=1e-6)
    np.testing.assert_array_equal(m2, mean)


def test_normalize_flat_constant_feature() -> None:
    x = np.stack([np.linspace(0, 1, 20), np.full(20, 2.0)], axis=1).astype(np.float32)
    (xn,), (_, std) = data.normalize(x)
    np.testing.assert_allclose(xn[:, 0].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(xn[:, 0].std(), 1.0, atol=1e-5)
    assert std[1] == 1.0 and np.all(xn[:, 1] == 0.0)
    with pytest.raises(_core.ShapeError):
        data.normalize(x, np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(_core.ShapeError):
        data.normalize(np.zeros((3, 2, 2), dtype=np.float32))
    with pytest.raises(_core.ShapeError, match="mean"):
        data.normalize(x, mean=np.zeros(3))
    with pytest.raises(_core.NonFiniteError, match="std"):
        data.normalize(x, std=np.array([1.0, np.inf]))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(_core.NonFiniteError, match="x_train"):
        data.normalize(bad)


# ----------------------------------------------------------------------------------------------
# IDX / MNIST
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    arr = np.random.default_rng(1).integers(0, 256, size=(7, 4, 3), dtype=np.uint8)
    path = write_idx(tmp_path / "a-idx3-ubyte", arr, gz=gz)
    out = data.load_idx(path)
    assert out.dtype == np.uint8 and out.shape == (7, 4, 3)
    np.testing.assert_array_equal(out, arr)
    # the non-.gz name also finds the .gz file
    np.testing.assert_array_equal(data.load_idx(tmp_path / "a-idx3-ubyte"), arr)


def test_load_idx_other_dtypes(tmp_path: Path) -> None:
    f = np.array([[1.5, -2.0], [3.25, 0.0]])
    np.testing.assert_array_equal(
        data.load_idx(write_idx(tmp_path / "f", f, code=0x0D)), f.astype(np.float32)
    )
    i = np.array([1, -70000, 3])
    out = data.load_idx(write_idx(tmp_path / "i", i, code=0x0C))
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, i)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x00\x00", "4-byte magic"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "type code"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01", "truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x01", "trailing"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
    ],
)
def test_load_idx_corrupt(tmp_path: Path, payload: bytes, match: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(payload)
    with pytest.raises(_core.InvalidArgumentError, match=match):
        data.load_idx(path)


def test_load_idx_corrupt_gzip_and_missing(tmp_path: Path) -> None:
    good = gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 100) + bytes(100))
    path = tmp_path / "t.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(_core.InvalidArgumentError, match="gzip"):
        data.load_idx(path)
    with pytest.raises(FileNotFoundError):
        data.load_idx(tmp_path / "nope")


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_full(tmp_path: Path, gz: bool) -> None:
    tr_img, _ = write_mnist(tmp_path, "train", 30, seed=0, gz=gz)
    _, te_lbl = write_mnist(tmp_path, "t10k", 20, seed=1, gz=gz)
    ds = data.load_mnist(tmp_path)
    assert ds.name == "mnist"
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.x_train[:, 0], tr_img / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, te_lbl)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    flat = data.load_mnist(tmp_path, flatten=True, normalize=False)
    assert flat.x_train.shape == (30, 784) and flat.x_train.max() > 1.0
    np.testing.assert_array_equal(flat.x_train, tr_img.reshape(30, -1).astype(np.float32))


def test_load_mnist_t10k_only(tmp_path: Path) -> None:
    write_mnist(tmp_path, "t10k", 100, seed=2, gz=True)
    ds = data.load_mnist(tmp_path, test_fraction=0.2, seed=5)
    assert ds.name == "mnist-t10k"
    assert ds.x_train.shape[0] == 80 and ds.x_test.shape[0] == 20
    np.testing.assert_array_equal(data.class_counts(ds.y_test, 10), np.full(10, 2))
    same = data.load_mnist_t10k(tmp_path, test_fraction=0.2, seed=5)
    np.testing.assert_array_equal(same.x_test, ds.x_test)


def test_load_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        data.load_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28), dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match="labels"):
        data.load_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))
    with pytest.raises(_core.InvalidArgumentError, match="5 t10k images but 4 labels"):
        data.load_mnist(tmp_path)


def test_real_mnist_t10k() -> None:
    directory = _mnist_dir()
    if data._find_idx(directory, "t10k", "images-idx3-ubyte") is None:
        pytest.skip(f"no MNIST t10k files in {directory}")
    images = data.load_idx(data._find_idx(directory, "t10k", "images-idx3-ubyte"))
    labels = data.load_idx(data._find_idx(directory, "t10k", "labels-idx1-ubyte"))
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels).tolist()) == set(range(10))
    ds = data.load_mnist(directory)
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 10000
    assert ds.x_train.shape[1:] == (1, 28, 28)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0


# ----------------------------------------------------------------------------------------------
# CIFAR
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_load_cifar10(tmp_path: Path, protocol: int) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    batches = []
    for i in range(1, 6):
        d = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        lbl = [(i + k) % 10 for k in range(4)]
        write_cifar_batch(root / f"data_batch_{i}", d, lbl, b"labels", protocol)
        batches.append((d, lbl))
    test = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    write_cifar_batch(root / "test_batch", test, [0, 9, 5], b"labels", protocol)
    names = [f"class{i}".encode() for i in range(10)]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=protocol)

    ds = data.load_cifar(tmp_path)  # parent folder works too
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    expect = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32) / 255.0
    np.testing.assert_allclose(ds.x_train, expect, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, np.concatenate([b[1] for b in batches]))
    np.testing.assert_array_equal(ds.y_test, [0, 9, 5])
    assert ds.classes == tuple(f"class{i}" for i in range(10))
    assert data.load_cifar(root, flatten=True).x_test.shape == (3, 3072)


def test_load_cifar100(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tr = rng.integers(0, 256, size=(5, 3072), dtype=np.uint8)
    te = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
    write_cifar_batch(tmp_path / "train", tr, [0, 99, 50, 3, 7], b"fine_labels", 2)
    write_cifar_batch(tmp_path / "test", te, [1, 98], b"fine_labels", 2)
    ds = data.load_cifar(tmp_path, num_classes=100)
    assert ds.name == "cifar100" and ds.x_train.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(ds.y_train, [0, 99, 50, 3, 7])
    np.testing.assert_allclose(ds.x_test.reshape(2, -1), te / 255.0, rtol=1e-6)
    assert ds.classes is None


def test_load_cifar_errors(tmp_path: Path) -> None:
    with pytest.raises(_core.InvalidArgumentError, match="num_classes"):
        data.load_cifar(tmp_path, num_classes=20)
    with pytest.raises(FileNotFoundError, match="train"):
        data.load_cifar(tmp_path, num_classes=100)
    write_cifar_batch(tmp_path / "train", np.zeros((2, 100), dtype=np.uint8), [0, 1], b"fine_labels", 2)
    write_cifar_batch(tmp_path / "test", np.zeros((1, 3072), dtype=np.uint8), [0], b"fine_labels", 2)
    with pytest.raises(_core.InvalidArgumentError, match="3072"):
        data.load_cifar(tmp_path, num_classes=100)
    write_cifar_batch(tmp_path / "train", np.zeros((2, 3072), dtype=np.uint8), [0, 100], b"fine_labels", 2)
    with pytest.raises(_core.InvalidArgumentError, match="labels"):
        data.load_cifar(tmp_path, num_classes=100)
    # pickles referencing arbitrary globals are refused
    with open(tmp_path / "train", "wb") as f:
        pickle.dump({b"data": Path("x"), b"fine_labels": [0]}, f)
    with pytest.raises(_core.InvalidArgumentError, match="not allowed"):
        data.load_cifar(tmp_path, num_classes=100)
    (tmp_path / "train").write_bytes(b"garbage")
    with pytest.raises(_core.InvalidArgumentError, match="not a readable"):
        data.load_cifar(tmp_path, num_classes=100)


def test_dataset_validates_shapes() -> None:
    x = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(_core.ShapeError):
        data.Dataset(x, np.zeros(2, dtype=np.int64), x, np.zeros(3, dtype=np.int64), 2, "t")
    ds = data.Dataset(x, np.zeros(3, dtype=np.int64), x, np.zeros(3, dtype=np.int64), 2, "t")
    assert ds.input_shape == (2,)
