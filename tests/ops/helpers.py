"""Shared test helpers: run an op the way the graph builder does (check_attrs -> resolve -> params -> ir_attrs ->
infer -> reference) and run one-node ONNX models with onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from graphconv.errors import OpError
from graphconv.init import initialize
from graphconv.ir.graph import TensorType
from graphconv.ops import REGISTRY, RefContext
from graphconv.ops.schema import ParamSpec

OPSET = 21
RTOL, ATOL = 1e-4, 1e-5


@dataclass
class Built:
    op: object
    attrs: dict  # the IR attributes
    params: list[ParamSpec]
    out: TensorType


def tt(*shape, dtype="float32") -> TensorType:
    """A TensorType with the symbolic batch dimension first: tt(3, 8, 8) is [N, 3, 8, 8]."""
    return TensorType(("N", *shape), dtype)


def type_of(x: np.ndarray) -> TensorType:
    return TensorType(("N", *x.shape[1:]), str(x.dtype))


def build(name: str, in_types, **given) -> Built:
    op = REGISTRY[name]
    attrs = op.check_attrs(given)
    resolved = op.resolve(attrs, list(in_types))
    params = op.params(resolved, list(in_types))
    ir = op.ir_attrs(resolved)
    return Built(op, ir, params, op.infer(ir, list(in_types)))


def op_error(name: str, in_types, **given) -> OpError:
    with pytest.raises(OpError) as info:
        build(name, in_types, **given)
    return info.value


def make_params(specs: list[ParamSpec], dtype, seed: int = 0, **overrides) -> dict[str, np.ndarray]:
    """Parameter arrays in `dtype`: `overrides`, else the fixed data written in the spec, else the initializer."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in specs:
        if p.name in overrides:
            arr = np.asarray(overrides[p.name])
        elif p.data is not None:
            arr = p.data
        else:
            arr = initialize(p.init, p.shape, rng)
        assert arr.shape == p.shape, (p.name, arr.shape, p.shape)
        out[p.name] = arr.astype(dtype)
    return out


def run(name: str, xs, params: dict | None = None, *, training: bool = False, rng=None, seed: int = 0,
        **given):
    """Build the op for inputs `xs` (numpy arrays), run its reference, check the output against the inferred type.
    Returns (y, built, params)."""
    xs = [np.asarray(x) for x in xs]
    built = build(name, [type_of(x) for x in xs], **given)
    ps = make_params(built.params, xs[0].dtype, seed, **(params or {}))
    ctx = RefContext(training=training, rng=rng if rng is not None else np.random.default_rng(seed))
    y = built.op.reference(built.attrs, xs, ps, ctx)
    assert isinstance(y, np.ndarray)
    assert y.dtype == xs[0].dtype, f"{name}: output dtype {y.dtype}, input {xs[0].dtype}"
    assert y.shape == built.out.concrete(xs[0].shape[0]), (y.shape, built.out)
    return y, built, ps


def onnx_model(op_type: str, inputs, attrs: dict | None = None, opset: int = OPSET, n_outputs: int = 1):
    """A one-node ONNX model and its feed. `inputs` is a list of arrays (None = an omitted optional input)."""
    names, feed, infos = [], {}, []
    for i, arr in enumerate(inputs):
        if arr is None:
            names.append("")
            continue
        arr = np.asarray(arr)
        name = f"in{i}"
        names.append(name)
        feed[name] = arr
        infos.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, **(attrs or {}))
    elem = helper.np_dtype_to_tensor_dtype(np.asarray(inputs[0]).dtype)
    out_infos = [helper.make_tensor_value_info(o, elem, None) for o in outs]
    graph = helper.make_graph([node], "one_node", infos, out_infos)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), feed


def ort_run(op_type: str, inputs, attrs: dict | None = None, opset: int = OPSET, n_outputs: int = 1):
    """Run one ONNX node with onnxruntime (CPU)."""
    model, feed = onnx_model(op_type, inputs, attrs, opset, n_outputs)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ONNX shape inference disagrees with ORT's ceil_mode sizes; only a warning
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    result = sess.run(None, feed)
    return result[0] if n_outputs == 1 else result


def onnx_reference_run(op_type: str, inputs, attrs: dict | None = None, opset: int = OPSET):
    """Run one ONNX node with onnx's own numpy reference evaluator (for cases onnxruntime does not implement)."""
    model, feed = onnx_model(op_type, inputs, attrs, opset)
    return ReferenceEvaluator(model).run(None, feed)[0]


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def randn(*shape, seed=0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
