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


def _one_op_model(op: str, attrs: dict, weight_shape=None, x_shape=(1, 4, 8, 8)):
    """A model of one Conv or pooling node on a [1, 4, 8, 8] input, with the attributes given."""
    inits, inputs = [], ["x"]
    if weight_shape is not None:
        inits.append(numpy_helper.from_array(np.ones(weight_shape, np.float32), "w"))
        inputs.append("w")
    node = helper.make_node(op, inputs, ["y"], name="n", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


INCONSISTENT = [
    ("Conv", dict(kernel_shape=[3, 3, 3]), (4, 4, 3, 3), "kernel rank above the input's"),
    ("Conv", dict(kernel_shape=[3, 3], strides=[0, 1]), (4, 4, 3, 3), "zero stride"),
    ("Conv", dict(kernel_shape=[3, 3], strides=[-1, 1]), (4, 4, 3, 3), "negative stride"),
    ("Conv", dict(kernel_shape=[3, 3], pads=[5, 5, 5, 5]), (4, 4, 3, 3), "pads larger than the kernel"),
    ("Conv", dict(kernel_shape=[3, 3], pads=[-1, 0, 0, 0]), (4, 4, 3, 3), "negative pads"),
    ("Conv", dict(kernel_shape=[3, 3], dilations=[0, 1]), (4, 4, 3, 3), "zero dilation"),
    ("Conv", dict(kernel_shape=[3, 3], group=3), (6, 4, 3, 3), "groups not dividing the channels"),
    ("Conv", dict(kernel_shape=[5, 5]), (4, 4, 3, 3), "kernel_shape not the weight's"),
    ("Conv", dict(), (4, 5, 3, 3), "weight's input channels not the input's"),
    ("Conv", dict(kernel_shape=[9, 9]), (4, 4, 9, 9), "a kernel larger than the input"),
    ("Conv", dict(), (4, 4, 3), "a weight of rank 3"),
    ("MaxPool", dict(kernel_shape=[2, 2, 2]), None, "kernel rank above the input's"),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[0, 0]), None, "zero stride"),
    ("MaxPool", dict(kernel_shape=[2, 2], pads=[3, 3, 3, 3]), None, "pads larger than the kernel"),
    ("MaxPool", dict(kernel_shape=[0, 2]), None, "a zero kernel"),
    ("MaxPool", dict(), None, "no kernel_shape"),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[-2, 2]), None, "negative stride"),
    ("AveragePool", dict(kernel_shape=[20, 20]), None, "a window larger than the input"),
    ("LpPool", dict(kernel_shape=[2, 2], p=0), None, "p of zero"),
]


@pytest.mark.parametrize("op, attrs, weight, what", INCONSISTENT, ids=[f"{c[0]}: {c[3]}" for c in INCONSISTENT])
def test_inconsistent_conv_and_pool_attributes_are_clear_errors(tmp_path, op, attrs, weight, what):
    path = _save(_one_op_model(op, attrs, weight), tmp_path / "m.onnx")
    with pytest.raises(GraphconvError) as info:
        import_onnx(str(path))
    message = str(info.value)
    assert "'n'" in message and op in message  # names the node and its op
    assert "got tuple" not in message and len(message) < 500
