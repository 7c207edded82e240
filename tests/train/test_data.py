"""Training data: the digits, MNIST-format IDX folders and .npz files, fitted to the network's input and checked."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npformat

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


# -- .npz files are checked before anything is allocated (the checks of graphconv/weights.py) ----------------------

def _npy(arr=None, *, header: dict | None = None, data: bytes = b"") -> bytes:
    """An .npy member: from an array, or a hand-written header followed by `data`."""
    buf = io.BytesIO()
    if header is None:
        npformat.write_array(buf, np.asarray(arr), allow_pickle=True)
    else:
        npformat.write_array_header_1_0(buf, header)
        buf.write(data)
    return buf.getvalue()


def _zip(path, members: dict[str, bytes], method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _patch_sizes(data: bytes, member: str, *, compress_size=None, file_size=None) -> bytes:
    """Rewrite the sizes `member` declares in the zip's central directory (what ZipFile.infolist reads)."""
    out = bytearray(data)
    pos = out.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        if bytes(out[pos + 46:pos + 46 + name_len]).decode() == member:
            if compress_size is not None:
                struct.pack_into("<I", out, pos + 20, compress_size)
            if file_size is not None:
                struct.pack_into("<I", out, pos + 24, file_size)
            return bytes(out)
        pos = out.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"no member {member}")


Y4 = np.arange(4) % 2


def test_npz_header_bomb_is_refused_before_allocating(tmp_path):
    """A 500-byte file whose header declares 2^40 x 1 x 8 x 8 float32 (256 TiB): np.load would allocate it."""
    p = tmp_path / "bomb.npz"
    _zip(p, {"x.npy": _npy(header={"descr": "<f4", "fortran_order": False, "shape": (2 ** 40, 1, 8, 8)}),
             "y.npy": _npy(Y4)})
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"'x' has shape \[1099511627776, 1, 8, 8\], 70,368,744,177,664 "
                                            r"elements; the limit is 2,147,483,648"):
            load_data(p, (1, 8, 8))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_npz_header_within_the_limit_but_not_in_the_file(tmp_path, monkeypatch):
    """Within MAX_ELEMENTS, the header still has to match the member's bytes (else np.load allocates, then fails)."""
    p = tmp_path / "liar.npz"
    _zip(p, {"x.npy": _npy(header={"descr": "<f8", "fortran_order": False, "shape": (2 ** 28, 1, 2, 2)},
                           data=b"\0" * 64), "y.npy": _npy(Y4)})
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"'x' is truncated: its header promises 8,589,934,720 bytes, the member "
                                            r"holds 192"):
            load_data(p, (1, 2, 2))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_npz_truncated_member(tmp_path):
    p = tmp_path / "short.npz"
    _zip(p, {"x.npy": _npy(header={"descr": "<f4", "fortran_order": False, "shape": (4, 3)}, data=b"\0" * 40),
             "y.npy": _npy(Y4)})
    with pytest.raises(DataError, match=r"short.npz .*'x' is truncated: its header promises 176 bytes, the "
                                        r"member holds 168"):
        load_data(p, (3,))
    _zip(p, {"x.npy": _npy(np.zeros((4, 3), np.float32)) + b"junk", "y.npy": _npy(Y4)})
    with pytest.raises(DataError, match="'x' has trailing bytes"):
        load_data(p, (3,))


def test_npz_zip_bomb_is_refused(tmp_path):
    p = tmp_path / "bomb.npz"
    _zip(p, {"x.npy": _npy(np.zeros((4, 3), np.float32)), "y.npy": _npy(Y4)}, zipfile.ZIP_DEFLATED)
    # a member declaring 3 GB from a few bytes: no DEFLATE stream expands that much
    p.write_bytes(_patch_sizes(p.read_bytes(), "x.npy", file_size=3_000_000_000))
    with pytest.raises(DataError, match=r"'x' declares a compression ratio of .*refused as a zip bomb"):
        load_data(p, (3,))
    # or declaring more compressed bytes than the whole file holds
    _zip(p, {"x.npy": _npy(np.zeros((4, 3), np.float32)), "y.npy": _npy(Y4)}, zipfile.ZIP_DEFLATED)
    p.write_bytes(_patch_sizes(p.read_bytes(), "x.npy", compress_size=3_000_000_000, file_size=3_000_000_000))
    with pytest.raises(DataError, match=r"'x' declares 3,000,000,000 compressed bytes; the whole file has"):
        load_data(p, (3,))


def test_npz_other_compression_and_too_many_members(tmp_path, monkeypatch):
    p = tmp_path / "bz.npz"
    _zip(p, {"x.npy": _npy(np.zeros((4, 3), np.float32)), "y.npy": _npy(Y4)}, zipfile.ZIP_BZIP2)
    with pytest.raises(DataError, match="unsupported compression method"):
        load_data(p, (3,))
    import graphconv.weights as W

    monkeypatch.setattr(W, "MAX_MEMBERS", 1)
    np.savez(tmp_path / "two.npz", x=np.zeros((4, 3)), y=Y4)
    with pytest.raises(DataError, match="holds 2 members; the limit is 1"):
        load_data(tmp_path / "two.npz", (3,))


def test_npz_object_dtype_is_refused_without_unpickling(tmp_path):
    p = tmp_path / "obj.npz"
    _zip(p, {"x.npy": _npy(np.array([{"a": 1}] * 4, dtype=object)), "y.npy": _npy(Y4)})
    with pytest.raises(DataError, match=r"without pickle: 'x' holds Python objects \(dtype object\)"):
        load_data(p, (1,))
    np.savez(p, x=np.zeros((4, 3)), y=np.array([("a", 1)] * 4, dtype=[("s", "U1"), ("i", int)]))
    with pytest.raises(DataError, match="'y' has a structured dtype"):
        load_data(p, (3,))


def test_out_of_memory_is_a_data_error(tmp_path, monkeypatch):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((4, 3)), y=Y4)

    def no_memory(self, key):
        raise MemoryError()

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", no_memory)
    with pytest.raises(DataError, match="d.npz: not enough memory"):
        load_data(p, (3,))


def test_npz_uint8_images_are_scaled_like_idx_files(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "bytes.npz", x=x, y=np.arange(6) % 2)
    data = load_data(tmp_path / "bytes.npz", (1, 4, 4))
    np.testing.assert_allclose(data.train.x[:, 0], x / 255.0, rtol=1e-6)
    np.savez(tmp_path / "floats.npz", x=x.astype(np.float32), y=np.arange(6) % 2)  # other types: as they are
    np.testing.assert_array_equal(load_data(tmp_path / "floats.npz", (1, 4, 4)).train.x[:, 0], x)


# -- IDX .gz files are decompressed no further than their header declares -------------------------------------------

def test_idx_gz_declaring_more_than_it_can_hold(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(bytes([0, 0, 0x0E, 1]) + struct.pack(">I", 200_000_000) + b"\0" * 64))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"promises 200,000,000 values \(200000000\), 1,600,000,000 bytes, more "
                                            r"than \d+ compressed bytes can hold"):
            read_idx(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_idx_gz_is_read_in_chunks_up_to_the_declared_size(tmp_path, monkeypatch):
    """Even where the header's size passes the ratio check, a short stream allocates only what it holds."""
    import graphconv.train.data as data_mod

    monkeypatch.setattr(data_mod, "MAX_COMPRESSION_RATIO", 10 ** 9)
    p = tmp_path / "short.gz"
    p.write_bytes(gzip.compress(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 300_000_000) + b"\0" * 1000))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"promises 300,000,000 values \(300000000\) but the file holds 1000"):
            read_idx(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    # a stream longer than the header says is refused without reading it all
    p.write_bytes(gzip.compress(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + b"\0" * 100_000))
    with pytest.raises(DataError, match="promises 10 values .* holds more"):
        read_idx(p)
