"""Helpers of the ONNX export and runtime tests: sane random weights, ONNX validity checks, running with
onnxruntime, and a per-node comparison against the reference executor."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from graphconv.ops import REGISTRY, RefContext, epilogue

RTOL, ATOL = 1e-4, 1e-5


def check_valid(model) -> None:
    """What every exported model must pass."""
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)


def session(model, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def calibrate(net, inputs, *, residual_gamma: float = 0.05, gamma: float = 0.5) -> None:
    """Make random weights numerically sane for float32 comparisons of deep networks (in place).

    He init with batchnorm at identity statistics makes activations grow layer after layer, and a deep random
    network then amplifies float32 rounding far beyond any fixed tolerance (the reference in float32 itself
    differs from float64 by 1e-3 on ResNet-50). As in data-dependent initialization, each batchnorm's running
    statistics are set to the statistics of its input on `inputs` (computed in float64, in order), its scale to
    `gamma`, and, as torchvision's zero_init_residual but not zero, the scale of a batchnorm that feeds a residual
    add to `residual_gamma`."""
    g = net.graph
    users = g.consumers()
    w = {k: np.asarray(v, dtype=np.float64) for k, v in net.weights.items()}
    for name, p in g.params.items():
        if p.data is not None:
            w[name] = np.asarray(p.data, np.float64)
    env = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    for node in g.nodes:
        xs = [env[v.name] if v.kind != "param" else w[v.name] for v in node.inputs]
        if node.op == "batchnorm":
            x = xs[0]
            axes = (0, *range(2, x.ndim))
            var = x.var(axis=axes)
            w[node.params["running_mean"].name] = x.mean(axis=axes)
            w[node.params["running_var"].name] = var + var.mean() + 1e-3
            if "weight" in node.params:
                residual = any(u.op == "add" for u in users[node.output.name])
                w[node.params["weight"].name] = np.full_like(var, residual_gamma if residual else gamma)
        ps = {r: w[v.name] for r, v in node.params.items()}
        env[node.output.name] = REGISTRY[node.op].reference(node.attrs, xs, ps, RefContext())
    net.weights = {k: w[k].astype(np.float32) for k in net.weights}


def with_all_outputs(model, graph):
    """A copy of the model whose outputs also include every IR node's output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    infos = {vi.name: vi for vi in m.graph.value_info}
    for n in graph.nodes:
        if n.output.name not in have:
            m.graph.output.append(infos[n.output.name])
    return m


def per_node_check(net, model, inputs) -> int:
    """Run every node's reference on onnxruntime's own values of its inputs and compare with onnxruntime's output
    of that node: each op's mapping is checked where it sits, without the amplification of rounding through the
    depth. Returns the number of nodes checked."""
    g = net.graph
    m = with_all_outputs(model, g)
    sess = session(m, threads=2)
    names = [o.name for o in sess.get_outputs()]
    vals = dict(zip(names, sess.run(None, inputs)))
    vals.update(inputs)
    w = {k: np.asarray(v, np.float32) for k, v in net.weights.items()}
    for name, p in g.params.items():
        if p.data is not None:
            w[name] = np.asarray(p.data, np.float32)
    for node in g.nodes:
        xs = [vals[v.name] if v.kind != "param" else w[v.name] for v in node.inputs]
        ps = {r: w[v.name] for r, v in node.params.items()}
        want = epilogue.run(REGISTRY[node.op], node.attrs, xs, ps, RefContext())  # a fused node with its steps
        np.testing.assert_allclose(vals[node.output.name], want, rtol=RTOL, atol=ATOL, err_msg=node.name)
    return len(g.nodes)
