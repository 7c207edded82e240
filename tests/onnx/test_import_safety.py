"""Loading untrusted ONNX files: corrupt, truncated and bit-flipped models, external data that escapes the model's
folder, huge declared sizes. Every failure must be a GraphconvError with a clear message."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphconv.errors import GraphconvError
from graphconv.onnx.importer import import_onnx
from graphconv.onnx.load import OnnxError, load_model

from import_helpers import Builder


def _small_model():
    b = Builder()
    y = b.relu(b.conv("input", 3, 4, 3, "conv", bias=True), "relu")
    y = b.node("GlobalAveragePool", [y], "/gap")
    y = b.node("Flatten", [y], "/flat", axis=1)
    b.gemm(y, 4, 2, "fc")
    b.nodes[-1].output[0] = "output"
    return b.model((1, 3, 8, 8), ["output"])


def _save(model, path):
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def test_roundtrip_from_file(tmp_path):
    graph, weights = import_onnx(_save(_small_model(), tmp_path / "m.onnx"))
    assert "conv.weight" in weights


@pytest.mark.parametrize("data", [b"", b"\x00", b"garbage bytes \xff\xfe", b"\x0a\xff\xff\xff\xff\x0f"])
def test_garbage(tmp_path, data):
    p = tmp_path / "m.onnx"
    p.write_bytes(data)
    with pytest.raises(OnnxError):
        import_onnx(str(p))


def test_missing_file(tmp_path):
    with pytest.raises(OnnxError, match="cannot read"):
        load_model(tmp_path / "nope.onnx")


@pytest.mark.parametrize("frac", [0.1, 0.5, 0.9, 0.99])
def test_truncated(tmp_path, frac):
    data = _small_model().SerializeToString()
    p = tmp_path / "m.onnx"
    p.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(GraphconvError):
        import_onnx(str(p))


@pytest.mark.parametrize("seed", range(12))
def test_bit_flips_never_crash(tmp_path, seed):
    data = bytearray(_small_model().SerializeToString())
    rng = np.random.default_rng(seed)
    for _ in range(1 + seed % 4):
        i = int(rng.integers(len(data)))
        data[i] ^= 1 << int(rng.integers(8))
    p = tmp_path / "m.onnx"
    p.write_bytes(bytes(data))
    try:
        import_onnx(str(p))
    except GraphconvError:
        pass


def _external_model(tmp_path, location: str, offset: int = 0, length: int | None = None):
    w = np.ones((2, 3, 1, 1), np.float32)
    t = numpy_helper.from_array(w, "conv.weight")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset), "length": str(w.nbytes if length is None else length)}
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    node = helper.make_node("Conv", ["input", "conv.weight"], ["output"], name="conv")
    g = helper.make_graph([node], "ext", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], [t])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    return _save(m, d / "m.onnx"), w


def test_external_data_inside_folder_loads(tmp_path):
    path, w = _external_model(tmp_path, "weights.bin", offset=4)
    (path.parent / "weights.bin").write_bytes(b"\0" * 4 + w.tobytes())
    graph, weights = import_onnx(str(path))
    np.testing.assert_array_equal(weights["output_.weight"], w)


def test_external_data_dotdot(tmp_path):
    path, w = _external_model(tmp_path, "../secret.bin")
    (tmp_path / "secret.bin").write_bytes(w.tobytes())
    with pytest.raises(OnnxError, match=r"'\.\.'"):
        import_onnx(str(path))


def test_external_data_absolute(tmp_path):
    secret = tmp_path / "secret.bin"
    path, w = _external_model(tmp_path, str(secret))
    secret.write_bytes(w.tobytes())
    with pytest.raises(OnnxError, match="absolute"):
        import_onnx(str(path))


def test_external_data_symlink_out(tmp_path):
    path, w = _external_model(tmp_path, "link.bin")
    (tmp_path / "secret.bin").write_bytes(w.tobytes())
    os.symlink(tmp_path / "secret.bin", path.parent / "link.bin")
    with pytest.raises(OnnxError, match="outside the model's folder"):
        import_onnx(str(path))


def test_external_data_hard_link(tmp_path):
    path, w = _external_model(tmp_path, "hard.bin")
    (tmp_path / "secret.bin").write_bytes(w.tobytes())
    os.link(tmp_path / "secret.bin", path.parent / "hard.bin")
    with pytest.raises(OnnxError, match="hard"):
        import_onnx(str(path))


@pytest.mark.parametrize("offset,length", [(0, 1000), (100, 24), (-1, 24), (0, 8)])
def test_external_data_bad_range(tmp_path, offset, length):
    path, w = _external_model(tmp_path, "weights.bin", offset=offset, length=length)
    (path.parent / "weights.bin").write_bytes(w.tobytes())
    with pytest.raises(OnnxError, match="external data"):
        import_onnx(str(path))


def test_external_data_missing_file(tmp_path):
    path, _ = _external_model(tmp_path, "nothere.bin")
    with pytest.raises(OnnxError, match="cannot open"):
        import_onnx(str(path))


def test_external_model_proto_refused(tmp_path):
    path, _ = _external_model(tmp_path, "weights.bin")
    m = onnx.load(str(path), load_external_data=False)
    with pytest.raises(OnnxError, match="external data"):
        import_onnx(m)


def test_huge_declared_dims(tmp_path):
    m = _small_model()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    del t.float_data[:]
    t.dims[:] = [1 << 20, 1 << 20, 3, 3]
    with pytest.raises(OnnxError, match="limit"):
        import_onnx(_save(m, tmp_path / "m.onnx"))


def test_wrong_data_length(tmp_path):
    m = _small_model()
    m.graph.initializer[0].raw_data = b"\0" * 7
    with pytest.raises(GraphconvError):
        import_onnx(_save(m, tmp_path / "m.onnx"))


def test_not_a_model_type():
    with pytest.raises(OnnxError):
        import_onnx(42)
