"""Gradients of the pools (max, avg, lp, global, window_reduce, reduce_mean), upsample and lrn: finite differences
in float64 against the autodiff gradients and the exported training graph in onnxruntime against the float32
reference, for every option; then the backward ops themselves: tie-breaking, misuse, float32 and float64."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from graphconv.errors import OpError
from graphconv.ir.graph import Graph, TensorType
from graphconv.ops import REGISTRY, OpDef, RefContext
from graphconv.ops.build import add_op
from graphconv.train.autodiff import Loss

from .grad_helpers import assert_gradients, assert_onnx_matches

BATCH = 2
EVERY = 10_000  # max_elements: check the gradient of every input element, not a sample
LOSS = [Loss("y", "mse")]


def seed_of(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def one_op(op: str, shape: tuple[int, int, int], **attrs) -> Graph:
    """x ("N", C, H, W) -> op -> output y."""
    g = Graph(op)
    x = g.add_input("x", TensorType(("N", *shape), "float64"))
    g.set_output("y", add_op(g, "op", op, [x], **attrs))
    return g


def check(g: Graph, x: np.ndarray, weights=None, **kw) -> None:
    """Finite differences on every element of the first sample (the ops treat samples alike; this keeps the file
    fast), and onnxruntime against the reference on the whole batch (the flat indices of max pooling span it)."""
    weights = weights or {}
    assert_gradients(g, weights, {"x": x[:1]}, losses=LOSS, max_elements=EVERY, **kw)
    assert_onnx_matches(g, weights, {"x": x}, losses=LOSS, **kw)


def normal(shape, seed: int, away_from_zero: float = 0.0) -> np.ndarray:
    """Random normal [BATCH, *shape]: no ties (max pooling), and |x| >= away_from_zero (lp's kink at 0)."""
    x = np.random.default_rng(seed).standard_normal((BATCH, *shape))
    return np.where(np.abs(x) < away_from_zero, np.copysign(away_from_zero, x) + x, x)


# H = 8 leaves the last row outside every floor-mode window of kernel 3 stride 2 (it gets no gradient); W = 9 is
# covered exactly. Kernel 3, stride 3, padding 1 and ceil_mode on H = 5 or 8 drop a last window that would start in
# the padding (PyTorch's rule; ONNX shape inference keeps it).
SHAPE = (2, 8, 9)

MAX_CASES = [
    ((2, 7, 9), dict(kernel=2)),
    ((2, 7, 9), dict(kernel=3, stride=2)),  # overlapping windows accumulate
    (SHAPE, dict(kernel=3, stride=2)),
    ((2, 7, 9), dict(kernel=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 8, 8), dict(kernel=3, stride=2, ceil_mode=True)),  # the last window hangs over the edge, no padding
    ((2, 5, 7), dict(kernel=3, stride=3, padding=1, ceil_mode=True)),
    ((2, 7, 9), dict(kernel=[2, 3], stride=[1, 2], padding=[1, 0, 0, 1])),
    ((2, 7, 9), dict(kernel=3, stride=2, padding="same")),
    ((2, 7, 9), dict(kernel=2, stride=1, padding=1, dilation=2)),
    ((2, 7, 9), dict(kernel=3, stride=2, padding=[2, 1], dilation=[2, 1], ceil_mode=True)),
    ((2, 7, 9), dict(kernel=[3, 2], stride=[2, 3], padding=[0, 1, 1, 0], dilation=[1, 3], ceil_mode=True)),
]


@pytest.mark.parametrize("shape,attrs", MAX_CASES, ids=lambda v: str(v))
def test_max_pool2d(shape, attrs):
    check(one_op("max_pool2d", shape, **attrs), normal(shape, seed_of("max", shape, attrs)))


AVG_CASES = [
    (SHAPE, dict(kernel=2)),
    (SHAPE, dict(kernel=3, stride=2)),
    (SHAPE, dict(kernel=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 8, 8), dict(kernel=3, stride=2, ceil_mode=True)),
    ((2, 5, 7), dict(kernel=3, stride=3, padding=1, ceil_mode=True)),
    (SHAPE, dict(kernel=[3, 2], stride=[2, 1], padding=[1, 0, 0, 1])),
    (SHAPE, dict(kernel=[2, 3], stride=[3, 2], padding=[0, 1, 1, 1], ceil_mode=True)),
    ((2, 7, 9), dict(kernel=3, stride=2, padding="same")),
]


@pytest.mark.parametrize("include", [True, False], ids=["include_pad", "exclude_pad"])
@pytest.mark.parametrize("shape,attrs", AVG_CASES, ids=lambda v: str(v))
def test_avg_pool2d(shape, attrs, include):
    check(one_op("avg_pool2d", shape, count_include_pad=include, **attrs), normal(shape, seed_of("avg", shape, attrs)))


LP_CASES = [
    (1.0, dict(kernel=2)),
    (2.0, dict(kernel=3, stride=2)),
    (3.0, dict(kernel=3, stride=2, padding=1, ceil_mode=True)),
    (1.5, dict(kernel=[3, 2], stride=[2, 1], padding=[1, 0, 0, 1])),
    (0.75, dict(kernel=[2, 3], stride=[3, 2], padding=[0, 1, 1, 1], ceil_mode=True)),
    (2.0, dict(kernel=3, stride=2, padding="same")),
    (2.0, dict(kernel=3, stride=3, padding=1, ceil_mode=True)),  # drops a window starting in the padding
]


@pytest.mark.parametrize("p,attrs", LP_CASES, ids=lambda v: str(v))
def test_lp_pool2d(p, attrs):
    x = normal(SHAPE, seed_of("lp", p, attrs), away_from_zero=0.1)
    check(one_op("lp_pool2d", SHAPE, p=p, **attrs), x)


def test_lp_pool2d_zero_window_gets_zero_gradient():
    """An all-zero window has no direction; its gradient is 0 rather than nan (with p < 1, x = 0 too)."""
    for p in (0.75, 2.0):
        g = one_op("lp_pool2d", (1, 4, 4), p=p, kernel=2)
        x = normal((1, 4, 4), 7, away_from_zero=0.1)
        x[:, :, :2, :2] = 0.0
        x[:, :, 2, 2] = 0.0
        from graphconv.reference.executor import run_graph
        from graphconv.train.autodiff import differentiate
        from graphconv.train.gradcheck import training_feed

        tg = differentiate(g, LOSS, inputs=True)
        out = run_graph(tg.graph, training_feed(tg, {"x": x}), {}, dtype="float64")
        dx = out[tg.grads["x"]]
        assert np.all(np.isfinite(dx)) and np.all(dx[:, :, :2, :2] == 0) and np.all(dx[:, :, 2, 2] == 0)
        assert np.all(dx[:, :, 2:, 2:][:, :, [0, 1, 1], [1, 0, 1]] != 0)


@pytest.mark.parametrize("op", ["global_avg_pool", "global_max_pool", "reduce_mean"])
def test_global_pools(op):
    shape = (3, 5, 7)
    check(one_op(op, shape), normal(shape, seed_of(op)))


WINDOW_REDUCE_CASES = [
    dict(kernel=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel=[2, 3], stride=[1, 2], padding=[1, 0, 0, 1], dilation=[2, 1]),
    dict(kernel=3, stride=2, dilation=2, padding=2, ceil_mode=True),
    dict(kernel=3, stride=3, padding=1, ceil_mode=True),  # drops a window starting in the padding
]


@pytest.mark.parametrize("scale", [False, True], ids=["plain", "trained_scale"])
@pytest.mark.parametrize("reduce", ["sum", "max"])
@pytest.mark.parametrize("attrs", WINDOW_REDUCE_CASES, ids=lambda v: str(v))
def test_window_reduce(attrs, reduce, scale):
    g = one_op("window_reduce", SHAPE, reduce=reduce, scale=scale, **attrs)
    rng = np.random.default_rng(seed_of("wr", attrs, reduce, scale))
    weights = {name: rng.uniform(0.5, 1.5, p.value.type.shape) for name, p in g.params.items()}
    check(g, normal(SHAPE, seed_of("wr", attrs)), weights)
    if scale:  # the scale alone (the input needs no gradient)
        assert_gradients(g, weights, {"x": normal(SHAPE, 3)}, losses=LOSS, inputs_grad=False, max_elements=EVERY)


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_window_reduce_fixed_scale(reduce):
    """Values written in the spec are fixed: only x gets a gradient, through the scale."""
    scale = np.random.default_rng(5).uniform(0.5, 1.5, (4, 4)).tolist()
    g = one_op("window_reduce", SHAPE, reduce=reduce, kernel=2, scale=scale)
    check(g, normal(SHAPE, seed_of("wr_fixed", reduce)))


UPSAMPLE_CASES = [
    dict(scale=2),
    dict(scale=[2, 3]),
    dict(size=[11, 13]),  # not a multiple of the input
    dict(size=[3, 4]),  # smaller than the input
    dict(scale=2, mode="bilinear"),
    dict(scale=2, mode="bilinear", align_corners=True),
    dict(scale=[3, 2], mode="bilinear"),
    dict(size=[11, 13], mode="bilinear"),
    dict(size=[11, 13], mode="bilinear", align_corners=True),
    dict(size=[3, 4], mode="bilinear"),
    dict(size=[3, 4], mode="bilinear", align_corners=True),
    dict(size=[1, 6], mode="bilinear", align_corners=True),  # one output row: the corners map to row 0
]


@pytest.mark.parametrize("attrs", UPSAMPLE_CASES, ids=lambda v: str(v))
def test_upsample(attrs):
    shape = (2, 5, 7)
    check(one_op("upsample", shape, **attrs), normal(shape, seed_of("up", attrs)))


LRN_CASES = [
    (2, dict(size=3, alpha=0.5)),
    (4, dict(size=3, alpha=0.8, beta=1.3, bias=2.0)),
    (2, dict(size=5, alpha=0.5)),
    (4, dict(size=5, alpha=0.6, beta=0.6, bias=1.5)),
    (7, dict(size=5, alpha=0.3)),
    (3, dict(size=4, alpha=0.5)),  # even: the extra channel after c
    (3, dict(size=1, alpha=0.5)),
    (3, dict(size=5)),  # the defaults (alpha 1e-4)
]


@pytest.mark.parametrize("c,attrs", LRN_CASES, ids=lambda v: str(v))
def test_lrn(c, attrs):
    shape = (c, 3, 4)
    check(one_op("lrn", shape, **attrs), normal(shape, seed_of("lrn", c, attrs)))


def test_chain_with_a_shared_input():
    """Gradients flow through a chain of these ops and add up where x is read twice."""
    g = Graph("chain")
    x = g.add_input("x", TensorType(("N", 3, 9, 9), "float64"))
    y = add_op(g, "lrn", "lrn", [x], size=3, alpha=0.5)
    y = add_op(g, "max", "max_pool2d", [y], kernel=3, stride=2, padding=1, ceil_mode=True)
    y = add_op(g, "up", "upsample", [y], size=[9, 9], mode="bilinear")
    y = add_op(g, "avg", "avg_pool2d", [y], kernel=3, stride=2, ceil_mode=True, count_include_pad=False)
    z = add_op(g, "lp", "lp_pool2d", [x], kernel=3, stride=2, ceil_mode=True, p=2.0)
    g.set_output("y", y)
    g.set_output("z", z)
    x0 = normal((3, 9, 9), 11)
    losses = [Loss("y", "mse"), Loss("z", "mse", weight=0.5)]
    assert_gradients(g, {}, {"x": x0}, losses=losses, max_elements=120)
    assert_onnx_matches(g, {}, {"x": x0}, losses=losses)


# -- the backward ops themselves ------------------------------------------------------------------------------

GRAD_OPS = ["max_window_grad", "avg_window_grad", "sum_window_grad", "lp_window_grad", "global_avg_grad",
            "upsample_grad", "lrn_grad"]
FORWARD_OPS = ["max_pool2d", "avg_pool2d", "lp_pool2d", "global_avg_pool", "global_max_pool", "reduce_mean",
               "window_reduce", "upsample", "lrn"]


def test_registration():
    for name in GRAD_OPS:
        op = REGISTRY[name]
        assert op.training_only and "pool" not in name
        assert type(op).to_onnx is not OpDef.to_onnx
    for name in FORWARD_OPS:
        assert type(REGISTRY[name]).gradient is not OpDef.gradient, name


def _grad_through(g: Graph, x: np.ndarray, dtype: str = "float64") -> np.ndarray:
    from graphconv.reference.executor import run_graph
    from graphconv.train.autodiff import differentiate
    from graphconv.train.gradcheck import training_feed

    tg = differentiate(g, LOSS, inputs=True)
    feed = training_feed(tg, {"x": x}, dtype=dtype)
    return run_graph(tg.graph, feed, {}, dtype=dtype)[tg.grads["x"]]


def _run(name: str, xs: list[np.ndarray], **given) -> np.ndarray:
    op = REGISTRY[name]
    types = [TensorType(x.shape, str(x.dtype)) for x in xs]
    attrs = op.resolve(op.check_attrs(given), types)
    assert op.infer(attrs, types) is not None
    return op.reference(attrs, xs, {}, RefContext())


def test_max_ties_go_to_the_first_maximum():
    """Equal values: each window's gradient goes to its first maximum in row-major order (PyTorch); overlapping
    windows that pick the same element add up."""
    x = np.array([[[[1.0, 1.0, 1.0],
                    [1.0, 1.0, 0.0]]]])
    dy = np.array([[[[1.0, 10.0]]]])
    dx = _run("max_window_grad", [dy, x], kernel=2, stride=1)
    assert dx.tolist() == [[[[1.0, 10.0, 0.0], [0.0, 0.0, 0.0]]]]
    x = np.array([[[[0.0, 3.0, 0.0, 3.0, 0.0]]]])
    dy = np.array([[[[1.0, 2.0, 4.0]]]])  # windows [0:3], [1:4], [2:5]
    dx = _run("max_window_grad", [dy, x], kernel=[1, 3], stride=1)
    assert dx.tolist() == [[[[0.0, 3.0, 0.0, 4.0, 0.0]]]]


@pytest.mark.parametrize("attrs", [dict(kernel=2, stride=1), dict(kernel=3, stride=2, padding=1, ceil_mode=True),
                                   dict(kernel=2, stride=1, padding=1, dilation=2)], ids=lambda v: str(v))
def test_max_ties_in_onnxruntime(attrs):
    """onnxruntime's MaxPool indices break ties the same way (small integers: many ties)."""
    shape = (2, 6, 7)
    x = np.random.default_rng(seed_of("ties", attrs)).integers(0, 3, (BATCH, *shape)).astype(np.float64)
    assert_onnx_matches(one_op("max_pool2d", shape, **attrs), {}, {"x": x}, losses=LOSS)


def test_global_max_first_maximum():
    x = np.zeros((1, 2, 2, 3))
    x[0, 1, 1, 2] = 5.0
    dx = _grad_through(one_op("global_max_pool", (2, 2, 3)), x)
    assert np.count_nonzero(dx[0, 0]) == 1 and dx[0, 0, 0, 0] != 0
    assert np.count_nonzero(dx[0, 1]) == 1 and dx[0, 1, 1, 2] != 0


F32_CASES = {
    "max_window_grad": ([(2, 3, 4, 5), (2, 3, 7, 9)], dict(kernel=3, stride=2, padding=1, ceil_mode=True)),
    "avg_window_grad": ([(2, 3, 4, 5)], dict(kernel=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
                                             input_size=[7, 9])),
    "sum_window_grad": ([(2, 3, 4, 5)], dict(kernel=3, stride=2, dilation=2, padding=2, input_size=[7, 9])),
    "lp_window_grad": ([(2, 3, 3, 4), (2, 3, 7, 9), (2, 3, 3, 4)], dict(kernel=3, stride=2, p=3.0)),
    "global_avg_grad": ([(2, 3, 1, 1)], dict(input_size=[5, 6])),
    "upsample_grad": ([(2, 3, 11, 13)], dict(input_size=[5, 7], mode="bilinear")),
    "lrn_grad": ([(2, 5, 3, 4), (2, 5, 3, 4)], dict(size=3, alpha=0.5)),
}


@pytest.mark.parametrize("name", GRAD_OPS)
def test_float32_and_float64(name):
    shapes, attrs = F32_CASES[name]
    rng = np.random.default_rng(seed_of("f32", name))
    xs = [rng.standard_normal(s) for s in shapes]
    if name == "lp_window_grad":  # a real pooled y keeps y^(1-p) in range
        xs[2] = _run("lp_pool2d", [xs[1]], kernel=3, stride=2, p=3.0)
    y64 = _run(name, xs, **attrs)
    y32 = _run(name, [x.astype(np.float32) for x in xs], **attrs)
    assert y64.dtype == np.float64 and y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)


def _plan_error(name: str, shapes, **attrs) -> OpError:
    g = Graph("bad")
    vs = [g.add_input(f"i{k}", TensorType(s, "float32")) for k, s in enumerate(shapes)]
    with pytest.raises(OpError) as info:
        add_op(g, "bad", name, vs, **attrs)
    return info.value


@pytest.mark.parametrize("name,shapes,attrs,message", [
    ("max_window_grad", [("N", 3, 4, 4), ("N", 3, 8, 8)], dict(kernel=3, stride=2), "not the pooled shape"),
    ("max_window_grad", [("N", 2, 3, 3), ("N", 3, 8, 8)], dict(kernel=3, stride=2), "differ in batch or channels"),
    ("max_window_grad", [("N", 3, 3), ("N", 3, 8, 8)], dict(kernel=3, stride=2), "rank-4"),
    ("avg_window_grad", [("N", 3, 4, 4)], dict(kernel=2, stride=2, padding=2, input_size=[8, 8]), "more than half"),
    ("sum_window_grad", [("N", 3, 4, 4)], dict(kernel=9, stride=1, input_size=[8, 8]), "does not fit"),
    ("sum_window_grad", [("N", 3, 4, 4)], dict(kernel=2, stride=2), "input_size"),
    ("lp_window_grad", [("N", 3, 3, 3), ("N", 3, 7, 7), ("N", 3, 3, 4)], dict(kernel=3, stride=2), "pooled y"),
    ("global_avg_grad", [("N", 3, 2, 2)], dict(input_size=[5, 5]), "[N, C, 1, 1]"),
    ("upsample_grad", [("N", 3, 8, 8)], dict(input_size=[4, 4], align_corners=True), "align_corners"),
    ("lrn_grad", [("N", 3, 4, 4), ("N", 4, 4, 4)], dict(size=3), "shape of x"),
])
def test_misuse(name, shapes, attrs, message):
    assert message in _plan_error(name, shapes, **attrs).message


# Pools whose ceil_mode output is smaller than ONNX's size rule says (a last window starting in the right padding):
# exported without ceil_mode and with grown padding, so declared and computed sizes agree and onnxruntime can run
# the training graph (it plans buffers by declared sizes and failed on these before).
CEIL_MISMATCH = [(4, dict(kernel=1, stride=2)), (5, dict(kernel=3, stride=3, padding=1)),
                 (6, dict(kernel=2, stride=3, padding=1)), (7, dict(kernel=3, stride=2, padding=1))]


@pytest.mark.parametrize("size, attrs", CEIL_MISMATCH, ids=[f"{s}-{a}" for s, a in CEIL_MISMATCH])
@pytest.mark.parametrize("op, extra", [("max_pool2d", {}), ("avg_pool2d", {"count_include_pad": True}),
                                       ("avg_pool2d", {"count_include_pad": False}), ("lp_pool2d", {"p": 2.0})],
                         ids=["max", "avg-incl", "avg-excl", "lp"])
def test_ceil_mode_pools_whose_onnx_size_differs_train_in_onnxruntime(size, attrs, op, extra):
    g = Graph("ceil")
    x = g.add_input("x", TensorType(("N", 2, size, size), "float32"))
    g.set_output("y", add_op(g, "p", op, [x], ceil_mode=True, **attrs, **extra))
    xv = np.random.default_rng(size).normal(size=(2, 2, size, size))
    assert_onnx_matches(g, {}, {"x": xv}, losses=LOSS)
