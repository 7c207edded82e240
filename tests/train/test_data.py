"""Training data: the digits, MNIST-format IDX folders and .npz files, fitted to the network's input and checked."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from graphconv.train.data import DataError, Dataset, load_data, read_idx, resize_images


def test_digits_fitted_to_lenet_input():
    data = load_data("digits", (1, 32, 32), num_classes=10)
    assert data.train.x.shape[1:] == (1, 32, 32) and data.train.x.dtype == np.float32
    assert len(data.train) + len(data.test) == 1797
    assert abs(len(data.test) - 0.2 * 1797) < 12  # stratified 20%
    assert 0.0 <= data.train.x.min() and data.train.x.max() <= 1.0
    assert set(np.unique(data.test.y)) == set(range(10))
    again = load_data("digits", (1, 32, 32))
    assert np.array_equal(again.test.y, data.test.y)  # the held-out part is seeded


def test_digits_repeated_over_channels():
    data = load_data("digits", (3, 8, 8))
    x = data.train.x
    assert x.shape[1:] == (3, 8, 8) and np.array_equal(x[:, 0], x[:, 2])


def test_resize_matches_torch_bilinear_rule():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    y = resize_images(x, 8, 8)
    # half-pixel centres: output 0 and 1 map to input -0.25 (clamped to 0) and 0.25
    assert y[0, 0, 0, 0] == 0.0 and np.isclose(y[0, 0, 0, 1], 0.25)
    assert np.isclose(y.mean(), x.mean())
    assert resize_images(x, 4, 4) is x


def _idx(path, arr: np.ndarray, code: int, compress: bool = False):
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_folder(tmp_path, compress):
    rng = np.random.default_rng(0)
    sfx = ".gz" if compress else ""
    _idx(tmp_path / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), 0x08,
         compress)
    _idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", rng.integers(0, 10, 20, dtype=np.uint8), 0x08, compress)
    _idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), 0x08,
         compress)
    _idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", rng.integers(0, 10, 5, dtype=np.uint8), 0x08, compress)
    data = load_data(tmp_path, (1, 28, 28), num_classes=10)
    assert data.train.x.shape == (20, 1, 28, 28) and len(data.test) == 5
    raw = read_idx(tmp_path / f"train-images-idx3-ubyte{sfx}")
    np.testing.assert_allclose(data.train.x[:, 0], raw / 255.0, rtol=1e-6)


def test_idx_sizes_are_checked_before_reading(tmp_path):
    p = tmp_path / "big.idx"
    p.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 100000, 100000, 100000) + b"\0" * 10)
    with pytest.raises(DataError, match="exceed the limit"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + b"\0" * 4)
    with pytest.raises(DataError, match="promises 10 values"):
        read_idx(p)
    p.write_bytes(b"PK\3\4garbage")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(p)


def test_npz(tmp_path):
    rng = np.random.default_rng(1)
    p = tmp_path / "d.npz"
    np.savez(p, x=rng.random((12, 8, 8)), y=np.arange(12) % 3, x_test=rng.random((4, 8, 8)), y_test=np.arange(4) % 3)
    data = load_data(p, (1, 8, 8), num_classes=3)
    assert data.train.x.shape == (12, 1, 8, 8) and data.test.y.tolist() == [0, 1, 2, 0]
    feats = tmp_path / "f.npz"
    np.savez(feats, x=rng.random((6, 5)), y=np.array([0, 1, 0, 1, 0, 1.0]))
    assert load_data(feats, (5,)).train.y.dtype == np.int64


@pytest.mark.parametrize("arrays,sample,message", [
    ({"x": np.zeros((4, 3, 3)), "y": np.array([0, 1, 2, 9])}, (1, 3, 3), "label 9 of sample 3 is out of range"),
    ({"x": np.zeros((4, 3, 3)), "y": np.array([0, -1, 2, 1])}, (1, 3, 3), "label -1 of sample 1"),
    ({"x": np.zeros((4, 3, 3)), "y": np.array([0, 1])}, (1, 3, 3), "4 samples but labels of shape [2]"),
    ({"x": np.zeros((4, 3, 3)), "y": np.array([0, 1, 2, 1])}, (1, 5, 5), "the network's input takes [1, 5, 5]"),
    ({"x": np.full((2, 3), np.nan), "y": np.array([0, 1])}, (3,), "6 values are NaN or infinite"),
    ({"x": np.zeros((2, 3)), "y": np.array([0.5, 1])}, (3,), "integer class indices"),
    ({"x": np.zeros((2, 3))}, (3,), "no array named y"),
    ({"x": np.zeros((0, 3)), "y": np.zeros(0, int)}, (3,), "no samples"),
])
def test_bad_npz_is_a_located_error(tmp_path, arrays, sample, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError) as info:
        load_data(p, sample, num_classes=3)
    assert message in str(info.value) and "bad.npz" in str(info.value)


def test_pickled_npz_is_refused(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([object()], dtype=object), y=np.array([0]))
    with pytest.raises(DataError, match="without pickle"):
        load_data(p, (1,))


def test_unknown_sources(tmp_path):
    with pytest.raises(DataError, match="no dataset 'mnsit'"):
        load_data("mnsit", (1, 28, 28))
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="not a dataset"):
        load_data(tmp_path / "x.csv", (2,))
    with pytest.raises(DataError, match="no MNIST-format training files"):
        load_data(tmp_path, (1, 28, 28))


def test_split_is_stratified_and_seeded():
    ds = Dataset(np.zeros((100, 2), np.float32), np.repeat(np.arange(4), 25), "d")
    a, b = ds.split(0.2, seed=3)
    assert len(b) == 20 and np.bincount(b.y).tolist() == [5, 5, 5, 5]
    a2, b2 = ds.split(0.2, seed=3)
    assert np.array_equal(b.y, b2.y) and len(a) == 80
    with pytest.raises(DataError):
        ds.split(1.5)
