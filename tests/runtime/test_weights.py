"""Weights: deterministic initialization, save/load round trip, and the checks of untrusted .npz files (every
problem listed, no pickle, no allocation from a lying header, zip bombs, truncation)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npformat

from graphconv import weights as W
from graphconv.errors import WeightsError
from graphconv.ir.graph import Graph, TensorType
from graphconv.weights import init_weights, load_weights, save_weights

from runtime_helpers import add_op, small_cnn


def fixed_graph() -> Graph:
    """A conv with a fixed weight written in the spec and a trainable bias."""
    g = Graph("fixed")
    x = g.add_input("x", TensorType(("N", 1, 4, 4)))
    k = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3) / 10
    g.set_output("y", add_op(g, "edge", "conv2d", [x], out_channels=1, weight=k))
    return g


def npy_bytes(arr=None, *, header: dict | None = None, data: bytes | None = None) -> bytes:
    """An .npy member: from an array, or a hand-written header dict followed by `data`."""
    buf = io.BytesIO()
    if header is None:
        npformat.write_array(buf, np.asarray(arr), allow_pickle=True)
    else:
        npformat.write_array_header_1_0(buf, header)
        buf.write(data or b"")
    return buf.getvalue()


def write_zip(path, members: dict[str, bytes], method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def patch_central_directory(data: bytes, member: str, *, compress_size=None, file_size=None) -> bytes:
    """Rewrite the sizes a member declares in the zip's central directory (what ZipFile.infolist reads)."""
    out = bytearray(data)
    pos = out.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        name = bytes(out[pos + 46:pos + 46 + name_len]).decode()
        if name == member:
            if compress_size is not None:
                struct.pack_into("<I", out, pos + 20, compress_size)
            if file_size is not None:
                struct.pack_into("<I", out, pos + 24, file_size)
            return bytes(out)
        pos = out.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"no member {member}")


# -- initialization -------------------------------------------------------------------------------------------------

def test_init_covers_every_param_in_float32():
    g = small_cnn()
    w = init_weights(g, seed=0)
    assert list(w) == list(g.params)
    assert all(a.dtype == np.float32 for a in w.values())
    for name, p in g.params.items():
        assert w[name].shape == p.value.type.concrete(1)
    np.testing.assert_array_equal(w["bn1.running_mean"], 0)
    np.testing.assert_array_equal(w["bn1.running_var"], 1)
    np.testing.assert_array_equal(w["conv1.bias"], 0)
    assert 0.1 < w["conv1.weight"].std() < 0.8  # he_normal: sqrt(2 / 27) = 0.27


def test_init_is_deterministic_and_per_name():
    g = small_cnn()
    a, b, c = init_weights(g, 0), init_weights(g, 0), init_weights(g, 1)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["conv1.weight"], c["conv1.weight"])
    # adding a layer leaves the others unchanged
    bigger = small_cnn()
    add_op(bigger, "head", "dense", [bigger.outputs["logits"]], units=3)
    d = init_weights(bigger, 0)
    assert set(d) == set(a) | {"head.weight", "head.bias"}
    for k in a:
        np.testing.assert_array_equal(a[k], d[k])


def test_init_fixed_from_spec_data():
    g = fixed_graph()
    w = init_weights(g, 5)
    np.testing.assert_array_equal(w["edge.weight"], (np.arange(9).reshape(1, 1, 3, 3) / 10).astype(np.float32))


def test_init_rejects_bad_seed():
    with pytest.raises(Exception, match="seed"):
        init_weights(small_cnn(), -1)


# -- round trip -----------------------------------------------------------------------------------------------------

def test_round_trip(tmp_path):
    g = small_cnn()
    w = init_weights(g, 7)
    path = tmp_path / "w.npz"
    save_weights(path, w)
    assert path.exists() and not list(tmp_path.glob(".graphconv-*"))
    with np.load(path, allow_pickle=False) as npz:  # readable by numpy itself
        assert set(npz.files) == set(w)
    back = load_weights(path, g)
    assert list(back) == list(g.params)
    for k in w:
        assert back[k].dtype == np.float32
        np.testing.assert_array_equal(back[k], w[k])


def test_numpy_savez_files_load(tmp_path):
    g = small_cnn()
    w = init_weights(g, 7)
    np.savez(tmp_path / "plain.npz", **w)
    np.savez_compressed(tmp_path / "small.npz", **{k: v.astype(np.float64) for k, v in w.items()})
    for name in ("plain.npz", "small.npz"):
        back = load_weights(tmp_path / name, g)
        np.testing.assert_array_equal(back["fc.weight"], w["fc.weight"].astype(back["fc.weight"].dtype))
    assert load_weights(tmp_path / "small.npz", g)["fc.weight"].dtype == np.float64


def test_integer_arrays_become_float32(tmp_path):
    g = small_cnn()
    w = init_weights(g)
    w["conv1.bias"] = np.array([1, 2, 3, 4], dtype=np.int16)
    save_weights(tmp_path / "w.npz", w)
    back = load_weights(tmp_path / "w.npz", g)
    assert back["conv1.bias"].dtype == np.float32 and back["conv1.bias"].tolist() == [1, 2, 3, 4]


# -- mismatches, all listed -----------------------------------------------------------------------------------------

def test_missing_extra_and_wrong_shapes_all_listed(tmp_path):
    g = small_cnn()
    w = init_weights(g)
    del w["conv1.bias"], w["bn1.running_var"]
    w["conv2.weight"] = np.zeros((6, 4, 5, 5), np.float32)
    w["fc.wieght"] = np.zeros(3, np.float32)
    w["totally_unrelated"] = np.zeros(1, np.float32)
    save_weights(tmp_path / "w.npz", w)
    with pytest.raises(WeightsError) as info:
        load_weights(tmp_path / "w.npz", g)
    msg = str(info.value)
    assert "5 problems" in msg
    for part in ("missing 'conv1.bias' [4]", "missing 'bn1.running_var' [4]",
                 "'conv2.weight' has shape [6, 4, 5, 5]; expected [6, 4, 3, 3]",
                 "unknown name 'fc.wieght': small_cnn has no such parameter (did you mean 'fc.weight'?)",
                 "unknown name 'totally_unrelated'"):
        assert part in msg, part


def test_object_dtype_refused_without_unpickling(tmp_path):
    g = small_cnn()
    w = dict(init_weights(g))
    w["conv1.bias"] = np.array([object(), 1, 2, 3], dtype=object)
    path = tmp_path / "obj.npz"
    np.savez(path, **w)  # numpy pickles the object array
    with pytest.raises(WeightsError, match=r"'conv1.bias' holds Python objects"):
        load_weights(path, g)


def test_structured_and_complex_dtypes_refused(tmp_path):
    g = small_cnn()
    w = init_weights(g)
    w["conv1.bias"] = np.zeros(4, dtype=[("a", "<f4")])
    w["fc.bias"] = np.zeros(5, dtype=np.complex64)
    np.savez(tmp_path / "w.npz", **w)
    with pytest.raises(WeightsError) as info:
        load_weights(tmp_path / "w.npz", g)
    assert "structured dtype" in str(info.value) and "complex64" in str(info.value)


def test_huge_header_shape_refused_before_allocation(tmp_path):
    g = small_cnn()
    w = init_weights(g)
    members = {f"{k}.npy": npy_bytes(v) for k, v in w.items()}
    # a tiny member whose header promises 10^12 float32 (4 TB)
    members["conv1.bias.npy"] = npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (10 ** 12,)},
                                          data=b"\0" * 16)
    write_zip(tmp_path / "liar.npz", members, zipfile.ZIP_DEFLATED)
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError, match=r"'conv1.bias' has shape \[1000000000000\]; expected \[4\]"):
            load_weights(tmp_path / "liar.npz", g)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_header_matching_shape_but_missing_data_is_truncated(tmp_path):
    g = small_cnn()
    members = {f"{k}.npy": npy_bytes(v) for k, v in init_weights(g).items()}
    members["fc.weight.npy"] = npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (5, 6)},
                                         data=b"\0" * 40)
    write_zip(tmp_path / "short.npz", members)
    with pytest.raises(WeightsError, match=r"'fc.weight' is truncated: its header promises 248 bytes"):
        load_weights(tmp_path / "short.npz", g)


def test_zip_bomb_member_refused(tmp_path):
    g = small_cnn()
    members = {f"{k}.npy": npy_bytes(v) for k, v in init_weights(g).items()}
    # fc.weight is 30 floats; this member inflates to 8 MB of zeros
    members["fc.weight.npy"] = npy_bytes(np.zeros(2 << 20, np.float32))
    write_zip(tmp_path / "bomb.npz", members, zipfile.ZIP_DEFLATED)
    with pytest.raises(WeightsError, match=r"'fc.weight' declares 8,388,736 bytes uncompressed.*zip bomb"):
        load_weights(tmp_path / "bomb.npz", g)


def test_compression_ratio_refused(tmp_path):
    g = small_cnn()
    members = {f"{k}.npy": npy_bytes(v) for k, v in init_weights(g).items()}
    members["junk.npy"] = npy_bytes(np.zeros(4, np.float32))
    path = tmp_path / "ratio.npz"
    write_zip(path, members, zipfile.ZIP_DEFLATED)
    path.write_bytes(patch_central_directory(path.read_bytes(), "junk.npy", file_size=3_000_000_000))
    with pytest.raises(WeightsError, match=r"'junk' declares a compression ratio of .*refused as a zip bomb"):
        load_weights(path, g)


def test_unsupported_compression_refused(tmp_path):
    g = small_cnn()
    members = {f"{k}.npy": npy_bytes(v) for k, v in init_weights(g).items()}
    write_zip(tmp_path / "bz.npz", members, zipfile.ZIP_BZIP2)
    with pytest.raises(WeightsError, match="unsupported compression method"):
        load_weights(tmp_path / "bz.npz", g)


def test_truncated_file(tmp_path):
    g = small_cnn()
    path = tmp_path / "w.npz"
    save_weights(path, init_weights(g))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightsError, match="not a valid .npz file"):
        load_weights(path, g)


def test_corrupt_member_data(tmp_path):
    g = small_cnn()
    path = tmp_path / "w.npz"
    save_weights(path, init_weights(g))
    data = bytearray(path.read_bytes())
    # flip a byte inside the stored data of the first member (after its local header and .npy header)
    data[30 + len("conv1.weight.npy") + 20 + 128 + 8] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt"):
        load_weights(path, g)


def test_npy_instead_of_npz(tmp_path):
    path = tmp_path / "one.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(WeightsError, match="single .npy array"):
        load_weights(path, small_cnn())


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="cannot read weights .*No such file"):
        load_weights(tmp_path / "nope.npz", small_cnn())


def test_file_size_limit(tmp_path, monkeypatch):
    g = small_cnn()
    save_weights(tmp_path / "w.npz", init_weights(g))
    monkeypatch.setattr(W, "MAX_FILE_BYTES", 100)
    with pytest.raises(WeightsError, match="limited to 100 bytes"):
        load_weights(tmp_path / "w.npz", g)


def test_total_elements_limit(tmp_path, monkeypatch):
    g = small_cnn()
    save_weights(tmp_path / "w.npz", init_weights(g))
    monkeypatch.setattr(W, "MAX_TOTAL_ELEMENTS", 50)
    with pytest.raises(WeightsError, match=r"holds 379 elements; the limit is 50"):
        load_weights(tmp_path / "w.npz", g)


def test_nan_refused(tmp_path):
    g = small_cnn()
    w = init_weights(g)
    w["fc.bias"][2] = np.nan
    save_weights(tmp_path / "w.npz", w)
    with pytest.raises(WeightsError, match="'fc.bias' contains NaN"):
        load_weights(tmp_path / "w.npz", g)


# -- fixed parameters -----------------------------------------------------------------------------------------------

def test_fixed_params_may_be_omitted(tmp_path):
    g = fixed_graph()
    save_weights(tmp_path / "w.npz", {"edge.bias": np.array([0.5], np.float32)})
    back = load_weights(tmp_path / "w.npz", g)
    assert set(back) == {"edge.weight", "edge.bias"}
    np.testing.assert_array_equal(back["edge.weight"], init_weights(g)["edge.weight"])


def test_fixed_params_present_must_equal(tmp_path):
    g = fixed_graph()
    w = init_weights(g)
    save_weights(tmp_path / "same.npz", w)  # float32 copies of the spec's values
    load_weights(tmp_path / "same.npz", g)
    w["edge.weight"] = w["edge.weight"] + 1
    save_weights(tmp_path / "other.npz", w)
    with pytest.raises(WeightsError, match="'edge.weight' is fixed in the spec"):
        load_weights(tmp_path / "other.npz", g)


def test_save_refuses_non_numbers(tmp_path):
    with pytest.raises(WeightsError, match="not a number type"):
        save_weights(tmp_path / "w.npz", {"a.b": np.array(["x"])})
    assert not list(tmp_path.iterdir())
