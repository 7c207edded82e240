"""A model over protobuf's 2 GiB limit, for real: exported with its weights as external data, checked by the onnx
checker, run by onnxruntime from the file, imported back and run by the reference executor. Slow (about a minute,
~13 GB of memory): `pytest -m slow tests/onnx/test_export_large.py` or tools/run_slow_tests.sh."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import graphconv
from graphconv.onnx.export import EXTERNAL_ALIGNMENT, build_model, export_onnx

from test_export_helpers import ATOL, RTOL

pytestmark = pytest.mark.slow

FEATURES, UNITS = 32768, 16400  # one dense weight of 2.0 GiB in float32


def test_model_over_2_gib_round_trips(tmp_path):
    spec = tmp_path / "big.gc"
    spec.write_text(f"network big {{\n  input x: f32[N, {FEATURES}]\n  y = x -> dense({UNITS})\n  output y\n}}\n")
    net = graphconv.load(spec, seed=0)
    x = np.random.default_rng(0).standard_normal((2, FEATURES)).astype(np.float32)
    want = graphconv.compile(net).run({"x": x})["y"]

    with pytest.raises(graphconv.GraphconvError, match="more than one protobuf message can hold"):
        build_model(net)  # in memory it cannot be one message
    path = tmp_path / "out" / "big.onnx"
    path.parent.mkdir()
    model = export_onnx(net, path)
    data = path.parent / "big.onnx.data"
    assert sorted(os.listdir(path.parent)) == ["big.onnx", "big.onnx.data"]
    assert data.stat().st_size >= FEATURES * UNITS * 4 > 2 << 30
    assert path.stat().st_size < 4096
    offsets = [int({e.key: e.value for e in t.external_data}["offset"]) for t in model.graph.initializer]
    assert all(o % EXTERNAL_ALIGNMENT == 0 for o in offsets)
    del model
    onnx.checker.check_model(str(path), full_check=True)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    (got,) = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    del got

    back = graphconv.load(path)  # graphconv's safe loader checks the external data, then imports
    (again,) = graphconv.compile(back).run({back.graph.inputs[0].name: x}).values()
    np.testing.assert_array_equal(again, want)
