"""Every op, with every option, exported alone (a one-node graph plus the graph output): valid ONNX, and onnxruntime
equals the reference executor (rtol 1e-4, atol 1e-5, float32)."""

from __future__ import annotations

import numpy as np
import pytest

from graphconv.ir.graph import Graph, TensorType
from graphconv.ops import REGISTRY
from graphconv.ops.build import add_op
from graphconv.onnx.export import export_onnx
from graphconv.reference.executor import run_graph
from graphconv.weights import init_weights

from test_export_helpers import ATOL, RTOL, check_valid, session

X4 = (3, 9, 11)
FLIP_W = np.arange(2 * 3 * 3 * 2, dtype=np.float64).reshape(2, 3, 3, 2) / 10 - 1

# (id, op, per-sample input shape(s), attributes)
CASES = [
    ("conv", "conv2d", [X4], dict(out_channels=4, kernel=3)),
    ("conv-pad-stride", "conv2d", [X4], dict(out_channels=4, kernel=[3, 2], stride=[2, 1], padding=[1, 0, 2, 1])),
    ("conv-same", "conv2d", [X4], dict(out_channels=4, kernel=4, stride=2, padding="same")),
    ("conv-dilation", "conv2d", [X4], dict(out_channels=2, kernel=3, dilation=[2, 3], padding=2, bias=False)),
    ("conv-groups", "conv2d", [(4, 8, 8)], dict(out_channels=6, kernel=3, groups=2)),
    ("conv-depthwise", "conv2d", [(4, 8, 8)], dict(kernel=3, depthwise=True, padding=1)),
    ("conv-flip", "conv2d", [X4], dict(out_channels=4, kernel=[3, 2], flip=True)),
    ("conv-flip-fixed", "conv2d", [X4], dict(weight=FLIP_W, flip=True, bias=[0.5, -0.5])),
    ("convT", "conv_transpose2d", [X4], dict(out_channels=4, kernel=3)),
    ("convT-all", "conv_transpose2d", [(4, 5, 6)], dict(out_channels=6, kernel=[3, 2], stride=[2, 3], padding=[1, 0, 2, 1],
                                                       output_padding=[1, 2], dilation=[1, 1], groups=2)),
    ("convT-dilation", "conv_transpose2d", [X4], dict(out_channels=2, kernel=3, stride=2, dilation=2,
                                                     output_padding=1, bias=False)),
    ("dense", "dense", [(7,)], dict(units=5)),
    ("dense-nobias", "dense", [(7,)], dict(units=5, bias=False)),
    ("channel_matmul", "channel_matmul", [X4], dict(units=5)),
    ("to_blocked", "to_blocked", [(32, 3, 5)], {}),
    ("to_blocked-8", "to_blocked", [(16, 3, 5)], dict(block=8)),
    ("from_blocked", "from_blocked", [(2, 3, 5, 16)], {}),
    ("channel_matmul-2d-nobias", "channel_matmul", [(7,)], dict(units=5, bias=False)),
    ("channel_matmul-3d", "channel_matmul", [(3, 4, 2, 5)], dict(units=2)),
    ("flatten", "flatten", [X4], {}),
    ("reshape", "reshape", [X4], dict(shape=[11, -1])),
    ("transpose", "transpose", [X4], dict(perm=[0, 3, 1, 2])),
    ("transpose-shuffle", "transpose", [(2, 3, 9, 11)], dict(perm=[0, 2, 1, 3, 4])),
    ("relu", "relu", [X4], {}),
    ("leaky_relu", "leaky_relu", [X4], dict(alpha=0.2)),
    ("elu", "elu", [X4], dict(alpha=0.7)),
    ("selu", "selu", [X4], {}),
    ("sigmoid", "sigmoid", [X4], {}),
    ("tanh", "tanh", [X4], {}),
    ("clip", "clip", [X4], dict(min=-0.5, max=0.7)),
    ("clip-min", "clip", [X4], dict(min=-0.5)),
    ("clip-max", "clip", [X4], dict(max=0.3)),
    ("softmax", "softmax", [X4], {}),
    ("softmax-axis", "softmax", [X4], dict(axis=-1)),
    ("log_softmax", "log_softmax", [X4], dict(axis=2)),
    ("dropout", "dropout", [X4], dict(rate=0.3)),
    ("maxpool", "max_pool2d", [X4], dict(kernel=2)),
    ("maxpool-all", "max_pool2d", [X4], dict(kernel=3, stride=2, padding=1, ceil_mode=True)),
    ("maxpool-dilation", "max_pool2d", [X4], dict(kernel=2, stride=1, dilation=2, padding=[1, 0, 1, 1])),
    ("maxpool-same", "max_pool2d", [X4], dict(kernel=3, stride=2, padding="same")),
    ("avgpool", "avg_pool2d", [X4], dict(kernel=2)),
    ("avgpool-pad", "avg_pool2d", [X4], dict(kernel=3, stride=2, padding=1)),
    ("avgpool-pad-exclude", "avg_pool2d", [X4], dict(kernel=3, stride=2, padding=1, count_include_pad=False)),
    ("avgpool-ceil", "avg_pool2d", [X4], dict(kernel=2, stride=2, ceil_mode=True)),
    ("avgpool-ceil-pad", "avg_pool2d", [X4], dict(kernel=3, stride=2, padding=1, ceil_mode=True)),
    ("avgpool-ceil-pad-exclude", "avg_pool2d", [X4], dict(kernel=3, stride=2, padding=1, ceil_mode=True,
                                                         count_include_pad=False)),
    ("lppool", "lp_pool2d", [X4], dict(kernel=2)),
    ("lppool-p3-pad", "lp_pool2d", [X4], dict(kernel=3, p=3, stride=2, padding=1)),
    ("lppool-ceil", "lp_pool2d", [X4], dict(kernel=2, stride=2, ceil_mode=True)),
    ("lppool-p1.5", "lp_pool2d", [X4], dict(kernel=3, p=1.5, stride=2, padding=1, ceil_mode=True)),
    ("global_avg", "global_avg_pool", [X4], {}),
    ("global_max", "global_max_pool", [X4], {}),
    ("add", "add", [X4, X4], {}),
    ("add3", "add", [X4, X4, X4], {}),
    ("add-broadcast", "add", [X4, (3, 1, 1)], {}),
    ("mul", "mul", [X4, X4], {}),
    ("mul3-broadcast", "mul", [X4, (1, 9, 11), (3, 9, 1)], {}),
    ("sub", "sub", [X4, X4], {}),
    ("sub-broadcast", "sub", [(1, 9, 11), X4], {}),
    ("div", "div", [X4, X4], {}),
    ("div-broadcast", "div", [X4, (3, 1, 1)], {}),
    ("slice", "slice", [X4], dict(end=2)),
    ("slice-chunk", "slice", [(8, 4, 4)], dict(start=4)),
    ("slice-step", "slice", [X4], dict(axis=3, start=1, end=-2, step=3)),
    ("slice-back", "slice", [X4], dict(axis=-2, step=-2)),
    ("slice-back-start", "slice", [X4], dict(axis=2, start=-3, end=1, step=-1)),
    ("slice-clamped", "slice", [X4], dict(axis=2, start=-100, end=100)),
    ("concat", "concat", [X4, (2, 9, 11)], {}),
    ("concat-axis", "concat", [X4, X4, X4], dict(axis=-1)),
    ("batchnorm", "batchnorm", [X4], dict(eps=1e-3, momentum=0.3)),
    ("batchnorm-noaffine", "batchnorm", [X4], dict(affine=False)),
    ("batchnorm-2d", "batchnorm", [(5,)], {}),
    ("lrn", "lrn", [(7, 4, 4)], dict(size=3, alpha=1e-2, beta=0.6, bias=2.0)),
    ("lrn-even", "lrn", [(7, 4, 4)], dict(size=4)),
    ("upsample-nearest", "upsample", [X4], dict(scale=2)),
    ("upsample-nearest-size", "upsample", [(3, 5, 7)], dict(size=[12, 10])),
    ("upsample-nearest-down", "upsample", [X4], dict(size=[4, 6])),
    ("upsample-bilinear", "upsample", [X4], dict(scale=[2, 3], mode="bilinear")),
    ("upsample-bilinear-size", "upsample", [(3, 5, 7)], dict(size=[8, 13], mode="bilinear")),
    ("upsample-bilinear-align", "upsample", [(3, 5, 7)], dict(size=[8, 13], mode="bilinear", align_corners=True)),
    ("upsample-bilinear-1", "upsample", [(3, 5, 7)], dict(size=[1, 3], mode="bilinear")),
    ("pad", "pad", [X4], dict(pads=[1, 2, 0, 3], value=1.5)),
    ("pad-reflect", "pad", [X4], dict(pads=[2, 1, 3, 0], mode="reflect")),
    ("pad-edge", "pad", [X4], dict(pads=2, mode="edge")),
    ("identity", "identity", [X4], {}),
    ("window_sum", "window_reduce", [X4], dict(reduce="sum", kernel=2)),
    ("window_sum-pad-ceil", "window_reduce", [X4], dict(reduce="sum", kernel=3, stride=2, padding=1, ceil_mode=True)),
    ("window_sum-dilation", "window_reduce", [X4], dict(reduce="sum", kernel=[3, 2], dilation=[2, 1], stride=1,
                                                        padding=[1, 0, 2, 1])),
    ("window_sum-scaled", "window_reduce", [X4], dict(reduce="sum", kernel=3, stride=2, ceil_mode=True,
                                                      scale=np.linspace(0.5, 2.0, 20).reshape(4, 5))),
    ("window_max", "window_reduce", [X4], dict(reduce="max", kernel=3, stride=2, padding=1, ceil_mode=True)),
    ("window_max-scaled", "window_reduce", [X4], dict(reduce="max", kernel=2, dilation=2, scale=True)),
    ("reduce_mean", "reduce_mean", [X4], {}),
]


def test_every_op_is_covered():
    # ops only training graphs hold are exported through the gradient tests (tests/train)
    assert {op for _, op, _, _ in CASES} == {name for name, op in REGISTRY.items() if not op.training_only}


def one_op_graph(op: str, shapes, attrs, dtype: str = "float32") -> Graph:
    g = Graph(f"one_{op}")
    xs = [g.add_input(f"x{i}", TensorType(("N", *s), dtype)) for i, s in enumerate(shapes)]
    g.set_output("y", add_op(g, "layer", op, xs, **attrs))
    return g


def _random_weights(g: Graph, seed: int = 0) -> dict:
    """Initializers, with batchnorm statistics and scales that are not the identity."""
    w = init_weights(g, seed)
    rng = np.random.default_rng(seed + 1)
    for name in w:
        if name.endswith(("running_var", ".weight")) and g.params[name].value.type.rank == 1:
            w[name] = rng.uniform(0.5, 2.0, w[name].shape).astype(np.float32)
        elif name.endswith(("running_mean", ".bias")):
            w[name] = rng.standard_normal(w[name].shape).astype(np.float32)
    return w


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_export_matches_reference(case):
    _, op, shapes, attrs = case
    g = one_op_graph(op, shapes, attrs)
    weights = _random_weights(g)
    model = export_onnx(g, weights=weights)
    check_valid(model)
    (main,) = [n for n in model.graph.node if n.name == "layer"]
    assert list(main.output) == ["layer"]
    assert all(n.name.startswith(("layer/", "output.")) for n in model.graph.node if n is not main)
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        inputs = {v.name: rng.standard_normal(v.type.concrete(batch)).astype(np.float32) for v in g.inputs}
        want = run_graph(g, inputs, weights)["y"]
        (got,) = session(model).run(None, inputs)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
