"""Helpers for the ONNX import tests: a small builder of ONNX graphs in the shape torch.onnx.export writes them
(node names such as /layer1/layer1.0/conv1/Conv, initializers such as layer1.0.conv1.weight), and a comparison of
graphconv's reference executor with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from graphconv.onnx.importer import import_onnx
from graphconv.reference.executor import run_graph

OPSET = 17
RTOL, ATOL = 1e-4, 1e-5


class Builder:
    def __init__(self, seed: int = 0, batch="batch_size"):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.k = 0
        self.batch = batch

    def tmp(self, hint: str = "t") -> str:
        self.k += 1
        return f"/{hint}_output_{self.k}"

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, out: str | None = None, n_out: int = 1, **attrs) -> str:
        outs = [out or f"{name}_output_0"] + [f"{name}_output_{i}" for i in range(1, n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0]

    def conv(self, x: str, cin: int, cout: int, k: int, prefix: str, stride=1, pad=None, group=1, bias=False,
             **attrs) -> str:
        pad = k // 2 if pad is None else pad
        w = self.init(f"{prefix}.weight", self.rng.normal(0, 0.3, (cout, cin // group, k, k)).astype(np.float32))
        ins = [x, w]
        if bias:
            ins.append(self.init(f"{prefix}.bias", self.rng.normal(0, 0.1, cout).astype(np.float32)))
        return self.node("Conv", ins, f"/{prefix.replace('.', '/')}/Conv", kernel_shape=[k, k],
                         strides=[stride, stride], pads=[pad] * 4, group=group, dilations=[1, 1], **attrs)

    def bn(self, x: str, c: int, prefix: str) -> str:
        r = self.rng
        ins = [x, self.init(f"{prefix}.weight", r.uniform(0.5, 1.5, c).astype(np.float32)),
               self.init(f"{prefix}.bias", r.normal(0, 0.1, c).astype(np.float32)),
               self.init(f"{prefix}.running_mean", r.normal(0, 0.1, c).astype(np.float32)),
               self.init(f"{prefix}.running_var", r.uniform(0.5, 1.5, c).astype(np.float32))]
        return self.node("BatchNormalization", ins, f"/{prefix.replace('.', '/')}/BatchNormalization",
                         epsilon=1e-5, momentum=0.9)

    def relu(self, x: str, prefix: str) -> str:
        return self.node("Relu", [x], f"/{prefix.replace('.', '/')}/Relu")

    def gemm(self, x: str, fin: int, fout: int, prefix: str) -> str:
        w = self.init(f"{prefix}.weight", self.rng.normal(0, 0.2, (fout, fin)).astype(np.float32))
        b = self.init(f"{prefix}.bias", self.rng.normal(0, 0.1, fout).astype(np.float32))
        return self.node("Gemm", [x, w, b], f"/{prefix}/Gemm", alpha=1.0, beta=1.0, transB=1)

    def const(self, arr, name: str) -> str:
        return self.node("Constant", [], name, value=numpy_helper.from_array(np.asarray(arr), name + "_value"))

    def torch_flatten(self, x: str) -> str:
        """x.view(x.size(0), -1) / torch.flatten(x, 1) with dynamic batch: Shape, Gather, Unsqueeze, Concat,
        Reshape."""
        shape = self.node("Shape", [x], "/Shape")
        idx = self.const(np.array(0, np.int64), "/Constant")
        g = self.node("Gather", [shape, idx], "/Gather", axis=0)
        axes = self.const(np.array([0], np.int64), "/Constant_1")
        u = self.node("Unsqueeze", [g, axes], "/Unsqueeze")
        minus = self.const(np.array([-1], np.int64), "/Constant_2")
        cat = self.node("Concat", [u, minus], "/Concat", axis=0)
        return self.node("Reshape", [x, cat], "/Reshape", allowzero=0)

    def model(self, x_shape, outputs: list[str], name="net", input_name="input", opset=OPSET) -> onnx.ModelProto:
        inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [self.batch, *x_shape[1:]])
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        g = helper.make_graph(self.nodes, name, [inp], outs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="pytorch")
        m.ir_version = 8
        return m


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def check_against_ort(model: onnx.ModelProto, x_shape, seed: int = 0, rtol=RTOL, atol=ATOL):
    """Import, run on the reference executor and compare with onnxruntime. Returns (graph, weights, x, outputs)."""
    graph, weights = import_onnx(model)
    x = np.random.default_rng(seed).normal(size=x_shape).astype(np.float32)
    name = model.graph.input[0].name
    want = run_ort(model, {name: x})
    got = run_graph(graph, {graph.inputs[0].name: x}, weights)
    assert len(got) == len(want)
    for (k, g), w in zip(got.items(), want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=k)
    return graph, weights, x, got


# -- onnx backend node test cases ------------------------------------------------------------------------------

# inputs at these positions are parameters (weights, shapes, bounds): the harness turns the test's data for them
# into initializers, as an exported model holds them
PARAM_SLOTS = {"Conv": {1, 2}, "ConvTranspose": {1, 2}, "Gemm": {1, 2}, "MatMul": {1}, "BatchNormalization": {1, 2, 3, 4},
               "Clip": {1, 2}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "Upsample": {1}, "Reshape": {1},
               "Dropout": {1, 2}, "Unsqueeze": {1}, "Squeeze": {1}, "ReduceMean": {1}, "ReduceMax": {1},
               "Slice": {1, 2, 3, 4}, "Split": {1}}
HELPER_OPS = {"Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "ConstantOfShape"}


def conformance_cases():
    """(case, reason or None) for every onnx node test case whose op types graphconv imports."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    from graphconv.onnx.importer import SUPPORTED_OPS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    main_ops = set(SUPPORTED_OPS) - HELPER_OPS
    out = []
    for c in cases:
        ops = {n.op_type for n in c.model.graph.node}
        if not ops <= set(SUPPORTED_OPS) or not ops & main_ops:
            continue
        out.append(c)
    return out


def prepare_case(case):
    """The case's model with parameter inputs made initializers, and its (inputs, outputs) data sets. Returns
    (model, data_sets) or raises ValueError(reason)."""
    import copy
    m = copy.deepcopy(case.model)
    g = m.graph
    slots: dict[str, bool] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            is_param = i in PARAM_SLOTS.get(n.op_type, ()) or n.op_type not in PARAM_SLOTS and False
            slots[name] = slots.get(name, True) and is_param
    data_sets = []
    names = [i.name for i in g.input]
    param_inputs = [nm for nm in names if slots.get(nm)]
    for inputs, outputs in case.data_sets:
        data_sets.append((dict(zip(names, inputs)), outputs))
    if not case.data_sets:
        raise ValueError("no data")
    first = data_sets[0][0]
    for nm in param_inputs:
        g.initializer.append(numpy_helper.from_array(np.asarray(first[nm]), nm))
    keep = [i for i in g.input if i.name not in param_inputs]
    del g.input[:]
    g.input.extend(keep)
    if not keep:
        raise ValueError("no data input")
    for i in keep:
        et = i.type.tensor_type.elem_type
        if et not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            raise ValueError("input dtype " + (helper.tensor_dtype_to_string(et) if et else "not a tensor"))
    if len(data_sets) > 1 and param_inputs:
        raise ValueError("several data sets with different parameters")
    return m, [({k: v for k, v in ins.items() if k not in param_inputs}, outs) for ins, outs in data_sets]


def _reference_runner(graph, weights):
    return lambda feeds: run_graph(graph, feeds, weights, dtype=graph.inputs[0].type.dtype)


def llvm_runner(graph, weights):
    """Run a case through the llvm backend (-O2, two threads), compiled for the graph's dtype."""
    import graphconv
    from graphconv.network import Network

    model = graphconv.compile(Network(graph, weights), backend="llvm", dtype=graph.inputs[0].type.dtype,
                              threads=2, opt_level=2)
    return model.run


def run_case(case, runner=_reference_runner) -> tuple[str, str]:
    """('pass' | 'fail' | 'excluded', detail). `runner(graph, weights)` returns the function that runs the imported
    graph (default: the reference executor)."""
    from graphconv.errors import GraphconvError
    try:
        model, data_sets = prepare_case(case)
    except ValueError as e:
        return "excluded", str(e)
    try:
        graph, weights = import_onnx(model)
    except GraphconvError as e:
        return "excluded", "import: " + str(e).splitlines()[-1].strip()[:160]
    rtol, atol = case.rtol, case.atol
    run = None
    for inputs, outputs in data_sets:
        feeds = {}
        for v, (k, arr) in zip(graph.inputs, inputs.items()):
            feeds[v.name] = arr
        try:
            if run is None:
                run = runner(graph, weights)
            got = run(feeds)
        except GraphconvError as e:
            msg = str(e).splitlines()[0][:160]
            if "bad inputs" in msg or "input '" in msg:
                return "excluded", "inputs do not fit a batch-first graph: " + msg
            return "fail", msg
        for (k, g), w in zip(got.items(), outputs):
            w = np.asarray(w)
            if g.shape != w.shape:
                return "fail", f"{k}: shape {g.shape} vs {w.shape}"
            if not np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True):
                err = float(np.max(np.abs(g.astype(np.float64) - w)))
                return "fail", f"{k}: max abs error {err:g} (rtol {rtol}, atol {atol})"
    return "pass", ""


def conformance_report(backend: str = "reference"):
    runner = llvm_runner if backend == "llvm" else _reference_runner
    return {c.name: run_case(c, runner) for c in conformance_cases()}
