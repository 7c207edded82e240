"""Pooling kernels against the reference, in the plain layout and the blocked NCHW16c: every sliding-window option
(padding, stride, dilation, ceil_mode windows hanging over, avg_pool2d's divisor rules, Lp norms, window_reduce with
and without a scale), the global pools, fused epilogues; widths that exercise the vector loops and their tails."""

import numpy as np
import pytest

import graphconv.llvm.kernels  # noqa: F401 - registers the emitters (the -O3 tests need conv and layout kernels)
from graphconv.ir.graph import Graph, TensorType
from graphconv.llvm.kernel import KERNELS
from graphconv.ops import REGISTRY
from graphconv.ops.build import emit, plan
from graphconv.ops.layout import blocked_type

from .helpers import add_op, check, graph_with_input, single

# (kernel, stride, padding, extra attrs): small and large windows, strides 1-3, symmetric and one-sided padding
WINDOWS = [
    (2, 2, 0, {}),
    (3, 2, 1, {}),
    (3, 1, 1, {}),
    (3, 2, 0, {"ceil_mode": True}),
    (3, 3, 1, {"ceil_mode": True}),
    ((2, 3), (1, 2), (1, 1, 0, 0), {}),
    ((3, 2), (2, 1), (0, 0, 1, 1), {"ceil_mode": True}),
    (5, 2, 2, {}),
]
DILATED = [
    (3, 1, 2, {"dilation": 2}),
    (3, 2, 1, {"dilation": (2, 3), "ceil_mode": True}),
]
LARGE_STRIDES = [  # a vector of outputs reads 4 input vectors; more: column by column
    (4, 4, 0, {}),
    (5, 5, 1, {"ceil_mode": True}),
]
SHAPES = [(3, 9, 11), (2, 13, 70)]  # the second: several whole vectors per row and a narrower tail


def _ids(cases):
    return [f"k{k}s{s}p{p}" + "".join(f"-{a}" for a in extra) for k, s, p, extra in cases]


@pytest.mark.parametrize("kernel,stride,padding,extra", WINDOWS + DILATED + LARGE_STRIDES,
                         ids=_ids(WINDOWS + DILATED + LARGE_STRIDES))
@pytest.mark.parametrize("shape", SHAPES)
def test_max_pool(kernel, stride, padding, extra, shape):
    check(single("max_pool2d", shape, kernel=kernel, stride=stride, padding=padding, **extra), levels=(0,))


@pytest.mark.parametrize("kernel,stride,padding,extra", WINDOWS, ids=_ids(WINDOWS))
@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool(kernel, stride, padding, extra, include_pad):
    check(single("avg_pool2d", (3, 11, 37), kernel=kernel, stride=stride, padding=padding,
                 count_include_pad=include_pad, **extra), levels=(0,))


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 2.5])
@pytest.mark.parametrize("kernel,stride,padding,extra", [(3, 2, 1, {"ceil_mode": True}), (2, 1, 0, {})],
                         ids=["k3s2p1-ceil", "k2s1p0"])
def test_lp_pool(p, kernel, stride, padding, extra):
    check(single("lp_pool2d", (3, 10, 21), kernel=kernel, stride=stride, padding=padding, p=p, **extra),
          levels=(0,))


def _out_hw(op, shape, **attrs):
    t = plan(op, attrs, [TensorType(("N", *shape))]).out_type
    return int(t.shape[2]), int(t.shape[3])


@pytest.mark.parametrize("op,attrs", [
    ("avg_pool2d", dict(kernel=3, stride=3, padding=1, ceil_mode=True)),  # one window, starting on the padding
    ("avg_pool2d", dict(kernel=3, stride=3, padding=1, ceil_mode=True, count_include_pad=False)),
    ("max_pool2d", dict(kernel=2, stride=2, padding=1, ceil_mode=True)),
    ("lp_pool2d", dict(kernel=2, stride=1, padding=1, p=2.0)),
    ("avg_pool2d", dict(kernel=2, stride=1)),  # a single output position, wholly inside
])
@pytest.mark.parametrize("layout", ["plain", "blocked"])
def test_tiny_inputs(op, attrs, layout):
    """Inputs of one or two rows and columns: a single output row or column (static in the kernel), windows
    hanging over on every side."""
    for shape in [(16, 2, 2), (16, 1, 2), (16, 2, 1)]:
        try:
            _out_hw(op, shape, **attrs)
        except Exception:  # noqa: BLE001 - the window does not fit this shape
            continue
        check(single(op, shape, **attrs) if layout == "plain" else blocked(op, shape, **attrs), levels=(0,),
              batches=(2,))


@pytest.mark.parametrize("reduce", ["sum", "max"])
@pytest.mark.parametrize("kernel,stride,padding,extra", [WINDOWS[1], WINDOWS[3], WINDOWS[6], *DILATED],
                         ids=_ids([WINDOWS[1], WINDOWS[3], WINDOWS[6], *DILATED]))
@pytest.mark.parametrize("scaled", [False, True])
def test_window_reduce(reduce, kernel, stride, padding, extra, scaled):
    shape = (2, 12, 41)
    attrs = dict(reduce=reduce, kernel=kernel, stride=stride, padding=padding, **extra)
    if scaled:  # fixed per-position values (not all ones, so a misplaced scale shows)
        oh, ow = _out_hw("window_reduce", shape, **attrs)
        attrs["scale"] = np.random.default_rng(3).uniform(-2.0, 2.0, (oh, ow))
    check(single("window_reduce", shape, **attrs), levels=(0,))


@pytest.mark.parametrize("op", ["global_avg_pool", "global_max_pool", "reduce_mean"])
@pytest.mark.parametrize("shape", [(5, 7, 7), (3, 1, 1), (2, 17, 19), (4, 3, 5), (2, 8, 8)])
def test_global_pool(op, shape):
    check(single(op, shape), levels=(0,))


def test_pool_with_fused_relu():
    """At -O2 the relu after each pool becomes its epilogue."""
    g, x = graph_with_input(shape=(4, 15, 40))
    y = add_op(g, "p1", "max_pool2d", [x], kernel=3, stride=2, padding=1)
    y = add_op(g, "r1", "relu", [y])
    y = add_op(g, "p2", "avg_pool2d", [y], kernel=2, stride=1, padding=1, count_include_pad=False)
    y = add_op(g, "e", "elu", [y], alpha=0.5)
    g.set_output("y", y)
    check(g, levels=(0, 2))


def test_pool_float64():
    check(single("avg_pool2d", (2, 9, 40), kernel=3, stride=2, padding=1, ceil_mode=True,
                 count_include_pad=False), levels=(0,), dtype="float64", rtol=1e-10, atol=1e-12)
    check(single("max_pool2d", (2, 9, 40), kernel=3, stride=1, padding=1), levels=(0,), dtype="float64")


# -- the blocked layout NCHW16c ---------------------------------------------------------------------------------

def blocked(op: str, shape, epilogue_steps=(), operand: bool = False, **attrs) -> Graph:
    """A graph of one node running blocked: a [N, C/16, H, W, 16] input, attrs["layout"] = 16, optionally an
    epilogue (with one blocked operand `z` when `operand`)."""
    g = Graph(op)
    plain = TensorType(("N", *shape))
    x = g.add_input("x", blocked_type(plain, 16))
    p = plan(op, attrs, [plain])
    out = blocked_type(p.out_type, 16)
    inputs = [x]
    if operand:
        inputs.append(g.add_input("z", out))
    node = emit(g, "layer", p, [x])
    node.inputs = inputs
    node.attrs["layout"] = 16
    if epilogue_steps:
        node.attrs["epilogue"] = tuple(epilogue_steps)
    node.output.type = out
    g.set_output("y", node.output)
    return g


@pytest.mark.parametrize("kernel,stride,padding,extra", WINDOWS + DILATED, ids=_ids(WINDOWS + DILATED))
def test_blocked_max_pool(kernel, stride, padding, extra):
    check(blocked("max_pool2d", (32, 11, 14), kernel=kernel, stride=stride, padding=padding, **extra),
          levels=(0,))


@pytest.mark.parametrize("kernel,stride,padding,extra", [WINDOWS[1], WINDOWS[3], WINDOWS[5], WINDOWS[6]],
                         ids=_ids([WINDOWS[1], WINDOWS[3], WINDOWS[5], WINDOWS[6]]))
@pytest.mark.parametrize("include_pad", [True, False])
def test_blocked_avg_pool(kernel, stride, padding, extra, include_pad):
    check(blocked("avg_pool2d", (16, 9, 13), kernel=kernel, stride=stride, padding=padding,
                  count_include_pad=include_pad, **extra), levels=(0,))


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_blocked_lp_pool(p):
    check(blocked("lp_pool2d", (16, 8, 9), kernel=3, stride=2, padding=1, ceil_mode=True, p=p), levels=(0,))


@pytest.mark.parametrize("reduce", ["sum", "max"])
@pytest.mark.parametrize("kernel,stride,padding,extra", [WINDOWS[1], WINDOWS[3], DILATED[1]],
                         ids=_ids([WINDOWS[1], WINDOWS[3], DILATED[1]]))
def test_blocked_window_reduce(reduce, kernel, stride, padding, extra):
    shape = (32, 10, 12)
    attrs = dict(reduce=reduce, kernel=kernel, stride=stride, padding=padding, **extra)
    oh, ow = _out_hw("window_reduce", shape, **attrs)
    attrs["scale"] = np.random.default_rng(4).uniform(-2.0, 2.0, (oh, ow))
    check(blocked("window_reduce", shape, **attrs), levels=(0,))


@pytest.mark.parametrize("op", ["global_avg_pool", "global_max_pool", "reduce_mean"])
@pytest.mark.parametrize("shape", [(32, 7, 7), (16, 1, 1), (16, 3, 2)])
def test_blocked_global_pool(op, shape):
    check(blocked(op, shape), levels=(0,))


def test_blocked_pool_epilogue():
    """A blocked pool carrying an epilogue with an operand (as after splitting a conv's fused pool): the operand
    is read at the same blocked index as the output."""
    steps = (("add", (), 1), ("relu", (), None))
    check(blocked("window_reduce", (32, 9, 10), steps, operand=True, reduce="max", kernel=3, stride=2, padding=1),
          levels=(0,))
    check(blocked("max_pool2d", (16, 6, 21), (("sigmoid", (), None),), kernel=2, stride=1), levels=(0,))


def test_blocked_float64():
    check(blocked("avg_pool2d", (16, 7, 9), kernel=3, stride=2, padding=1, count_include_pad=False),
          levels=(0,), dtype="float64", rtol=1e-10, atol=1e-12)


# -- through the optimizer at -O3: conv regions run blocked, pools lowered and fused --------------------------------

needs_blocked = pytest.mark.skipif(not {"conv2d", "to_blocked", "from_blocked"} <= set(KERNELS),
                                   reason="conv2d and layout conversion kernels not available yet")


def _blocked_nodes(g: Graph) -> list[str]:
    """The ops the llvm backend's kernels see running blocked when `g` is compiled at -O3."""
    import graphconv
    from graphconv.llvm.codegen import _split
    from graphconv.network import Network

    from .helpers import seeded_weights

    m = graphconv.compile(Network(g, seeded_weights(g)), backend="llvm", threads=1, opt_level=3)
    return [p.op for n in m.optimized.graph.nodes for p in _split(n) if p.attrs.get("layout")]


@needs_blocked
@pytest.mark.parametrize("pool,attrs,lowered", [
    ("max_pool2d", dict(kernel=3, stride=2, padding=1), "window_reduce"),
    ("max_pool2d", dict(kernel=2, stride=2, ceil_mode=True), "window_reduce"),
    ("avg_pool2d", dict(kernel=3, stride=2, padding=1, count_include_pad=False), "window_reduce"),
    ("avg_pool2d", dict(kernel=3, stride=2, ceil_mode=True), "window_reduce"),
    ("lp_pool2d", dict(kernel=2, stride=2, p=2.0, ceil_mode=True), "lp_pool2d"),
])
def test_conv_relu_pool_o3(pool, attrs, lowered):
    """conv(16→32, 3, padding 1) → relu → pool → conv → relu → conv: at -O3 the region runs in NCHW16c (three layers
    with weights are worth the two conversions), avg pools become window sums with a scale, max pools fuse into the
    convolution (the code generator splits them out again as a blocked window_reduce)."""
    g, x = graph_with_input(shape=(16, 12, 13))
    y = add_op(g, "conv", "conv2d", [x], out_channels=32, kernel=3, padding=1)
    y = add_op(g, "r", "relu", [y])
    y = add_op(g, "pool", pool, [y], **attrs)
    y = add_op(g, "conv2", "conv2d", [y], out_channels=16, kernel=3, padding=1)
    y = add_op(g, "r2", "relu", [y])
    g.set_output("y", add_op(g, "conv3", "conv2d", [y], out_channels=16, kernel=3, padding=1))
    assert lowered in _blocked_nodes(g)
    check(g, levels=(3,))


@needs_blocked
@pytest.mark.parametrize("pool,lowered", [("global_avg_pool", "reduce_mean"), ("global_max_pool", "global_max_pool")])
def test_conv_global_pool_o3(pool, lowered):
    g, x = graph_with_input(shape=(16, 7, 9))
    y = add_op(g, "conv", "conv2d", [x], out_channels=32, kernel=3, padding=1)
    y = add_op(g, "r", "relu", [y])
    y = add_op(g, "conv2", "conv2d", [y], out_channels=32, kernel=3, padding=1)
    g.set_output("y", add_op(g, "pool", pool, [y]))
    assert lowered in _blocked_nodes(g)
    check(g, levels=(3,))


@needs_blocked
def test_conv_pool_chain_o3():
    """Pools one after another in a blocked region, one with a fused activation, a global mean at the end."""
    g, x = graph_with_input(shape=(16, 20, 20))
    y = add_op(g, "conv", "conv2d", [x], out_channels=32, kernel=3, padding=1)
    y = add_op(g, "p1", "max_pool2d", [y], kernel=3, stride=1, padding=1)
    y = add_op(g, "p2", "avg_pool2d", [y], kernel=3, stride=2, padding=1, count_include_pad=False)
    y = add_op(g, "t", "tanh", [y])
    y = add_op(g, "p3", "lp_pool2d", [y], kernel=2, stride=1, p=3.0)
    y = add_op(g, "gap", "global_avg_pool", [y])
    g.set_output("y", y)
    assert {"window_reduce", "lp_pool2d", "reduce_mean"} <= set(_blocked_nodes(g))
    check(g, levels=(2, 3))


def test_every_pool_op_has_a_kernel():
    pools = [n for n, op in REGISTRY.items() if "pool" in n and not op.training_only] + ["window_reduce", "reduce_mean"]
    assert len(pools) >= 7 and [p for p in pools if p not in KERNELS] == []
