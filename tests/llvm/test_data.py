"""Data-movement kernels against the reference: layout conversions, concat (plain and blocked), slice, pad,
transpose, reshape, flatten, upsample."""

import numpy as np
import pytest

from graphconv.ir.graph import Graph, TensorType
import graphconv.llvm.kernels  # noqa: F401 - registers every kernel, for the skip below
from graphconv.llvm.kernel import KERNELS

from .helpers import add_op, check, graph_with_input, single


# -- layout conversions ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block,shape", [
    (16, (32, 8, 8)), (16, (16, 5, 7)), (16, (48, 3, 3)), (16, (16, 1, 1)), (16, (64, 17, 19)), (8, (16, 9, 11)),
    (4, (12, 3, 5)), (3, (6, 4, 4)), (1, (3, 2, 2)), (32, (64, 7, 7)), (12, (24, 5, 5)),
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layout_round_trip(block, shape, dtype):
    """to_blocked -> relu (blocked) -> from_blocked, both the blocked and the plain value as outputs; -O0 so the
    optimizer leaves the conversions alone."""
    g, x = graph_with_input(shape=shape, dtype=dtype)
    b = add_op(g, "b", "to_blocked", [x], block=block)
    r = add_op(g, "r", "relu", [b])
    g.set_output("plain", add_op(g, "u", "from_blocked", [r], block=block))
    g.set_output("blocked", r)
    check(g, levels=(0,), dtype=dtype)


def test_from_blocked_input():
    g = Graph("fb")
    x = g.add_input("x", TensorType(("N", 3, 6, 5, 16)))
    g.set_output("y", add_op(g, "u", "from_blocked", [x], block=16))
    check(g, levels=(0,))


# -- concat ------------------------------------------------------------------------------------------------------

def _concat_graph(shapes, axis):
    g = Graph("concat")
    xs = [g.add_input(f"x{i}", TensorType(("N", *s))) for i, s in enumerate(shapes)]
    g.set_output("y", add_op(g, "c", "concat", xs, axis=axis))
    return g


CONCATS = [
    ([(3, 4, 5), (5, 4, 5)], 1), ([(3, 4, 5), (5, 4, 5), (1, 4, 5)], 1), ([(3, 4, 5), (3, 7, 5)], 2),
    ([(3, 4, 5), (3, 2, 5), (3, 9, 5)], -2), ([(3, 4, 5), (3, 4, 17)], 3), ([(3, 4, 5), (3, 4, 1), (3, 4, 33)], -1),
    ([(7,), (20,)], 1), ([(7,), (20,), (3,)], -1), ([(17, 2), (40, 2)], 1), ([(2, 3), (2, 5)], -1),
    ([(32, 6, 6), (16, 6, 6)], -3), ([(2, 3, 4, 5), (2, 3, 4, 2)], 4), ([(2, 3, 4, 5), (2, 1, 4, 5)], 2),
]


@pytest.mark.parametrize("shapes,axis", CONCATS, ids=[f"{len(s)}in-ax{a}-{i}" for i, (s, a) in enumerate(CONCATS)])
def test_concat(shapes, axis):
    check(_concat_graph(shapes, axis), levels=(0,))


def test_concat_batch_axis_is_rejected():
    """The op itself refuses axis 0 (samples stay independent), so no kernel needs it."""
    from graphconv.errors import OpError

    with pytest.raises(OpError):
        _concat_graph([(3, 4), (3, 4)], 0)
    with pytest.raises(OpError):
        _concat_graph([(3, 4), (3, 4)], -3)


def test_concat_same_input_twice():
    g, x = graph_with_input(shape=(5, 3, 3))
    g.set_output("y", add_op(g, "c", "concat", [x, x], axis=2))
    check(g, levels=(0,))


def test_concat_blocked_hand_built():
    """concat of blocked values at layout=16 (as the layout pass writes it), built by hand at -O0."""
    g = Graph("bc")
    xs = [g.add_input(f"x{i}", TensorType(("N", c, 5, 7))) for i, c in enumerate((16, 32, 16))]
    bs = [add_op(g, f"b{i}", "to_blocked", [x], block=16) for i, x in enumerate(xs)]
    node = g.add_node("c", "concat", bs, {"axis": 1, "layout": 16}, TensorType(("N", 4, 5, 7, 16)), {})
    g.set_output("y", add_op(g, "u", "from_blocked", [node.output], block=16))
    check(g, levels=(0,))


@pytest.mark.skipif("conv2d" not in KERNELS, reason="needs the conv2d kernel")
def test_concat_blocked_between_convs():
    """At -O3 two 16->16 convolutions feed a concat then a convolution: the concat runs in NCHW16c."""
    g, x = graph_with_input(shape=(16, 9, 9))
    a = add_op(g, "ca", "conv2d", [x], out_channels=16, kernel=3, padding=1)
    b = add_op(g, "cb", "conv2d", [x], out_channels=16, kernel=3, padding=1)
    c = add_op(g, "cat", "concat", [a, b], axis=1)
    g.set_output("y", add_op(g, "cc", "conv2d", [c], out_channels=16, kernel=3, padding=1))
    check(g, levels=(0, 3), rtol=1e-3, atol=1e-4)


def test_concat_blocked_at_O3_is_blocked():
    """The layout pass does make the concat of the test above blocked (so that test covers the blocked kernel)."""
    pytest.importorskip("graphconv.passes.manager")
    from graphconv.network import Network
    from graphconv.passes.manager import optimize

    from .helpers import seeded_weights

    g, x = graph_with_input(shape=(16, 9, 9))
    a = add_op(g, "ca", "conv2d", [x], out_channels=16, kernel=3, padding=1)
    b = add_op(g, "cb", "conv2d", [x], out_channels=16, kernel=3, padding=1)
    c = add_op(g, "cat", "concat", [a, b], axis=1)
    g.set_output("y", add_op(g, "cc", "conv2d", [c], out_channels=16, kernel=3, padding=1))
    opt, _ = optimize(Network(g, seeded_weights(g)), 3, target="llvm")
    cats = [n for n in opt.graph.nodes if n.op == "concat"]
    assert cats and all(n.attrs.get("layout") == 16 for n in cats)


# -- slice -------------------------------------------------------------------------------------------------------

SLICES = [
    ((8, 5, 6), dict(start=2, end=6, axis=1)), ((8, 5, 6), dict(start=1, end=None, axis=1, step=2)),
    ((8, 5, 6), dict(start=-1, end=None, axis=1, step=-1)), ((8, 5, 6), dict(start=6, end=0, axis=1, step=-3)),
    ((8, 5, 6), dict(start=-2, end=-20, axis=2, step=-1)), ((8, 5, 6), dict(start=0, end=100, axis=3, step=2)),
    ((8, 5, 6), dict(start=None, end=None, axis=-1, step=-2)), ((8, 5, 6), dict(start=1, end=4, axis=-1)),
    ((8, 5, 6), dict(start=3, end=4, axis=2)), ((40,), dict(start=3, end=37, axis=1)),
    ((40,), dict(start=None, end=None, axis=1, step=-1)), ((40,), dict(start=-5, end=2, axis=-1, step=-7)),
    ((4, 3, 5, 7), dict(start=1, end=None, axis=3, step=3)), ((64, 4, 4), dict(start=16, end=48, axis=1)),
]


@pytest.mark.parametrize("shape,attrs", SLICES, ids=[f"{i}" for i in range(len(SLICES))])
def test_slice(shape, attrs):
    check(single("slice", shape, **attrs), levels=(0,))


def test_slice_chunks_and_concat_back():
    """Two slices split the channels (torch.chunk) and concat joins them the other way round."""
    g, x = graph_with_input(shape=(10, 4, 4))
    a = add_op(g, "a", "slice", [x], start=0, end=5)
    b = add_op(g, "b", "slice", [x], start=5)
    g.set_output("y", add_op(g, "c", "concat", [b, a], axis=1))
    check(g)


# -- pad ---------------------------------------------------------------------------------------------------------

PADS = [
    (dict(pads=1), (3, 5, 6)), (dict(pads=[2, 3]), (3, 5, 6)), (dict(pads=[0, 1, 2, 3]), (3, 5, 6)),
    (dict(pads=[3, 0, 1, 0], value=-1.5), (2, 4, 20)), (dict(pads=[1, 17, 0, 18], value=2.0), (2, 3, 4)),
    (dict(pads=[1, 2, 3, 4], mode="reflect"), (3, 5, 6)), (dict(pads=[4, 5, 4, 5], mode="reflect"), (2, 5, 6)),
    (dict(pads=[0, 1, 0, 1], mode="reflect"), (2, 3, 2)), (dict(pads=[1, 2, 3, 4], mode="edge"), (3, 5, 6)),
    (dict(pads=[7, 9, 6, 20], mode="edge"), (2, 2, 3)), (dict(pads=[2, 1, 0, 3], mode="edge"), (3, 1, 1)),
    (dict(pads=[1, 1, 1, 1], mode="reflect"), (16, 18, 33)),
]


@pytest.mark.parametrize("attrs,shape", PADS, ids=[f"{a.get('mode', 'constant')}-{i}" for i, (a, _) in
                                                   enumerate(PADS)])
def test_pad(attrs, shape):
    check(single("pad", shape, **attrs), levels=(0,))


# -- transpose ---------------------------------------------------------------------------------------------------

TRANSPOSES = [
    ((3, 4), [0, 2, 1]), ((20, 37), [0, 2, 1]), ((16, 16), [0, 2, 1]), ((5, 6, 7), [0, 2, 3, 1]),
    ((5, 6, 7), [0, 3, 1, 2]), ((5, 6, 7), [0, 1, 3, 2]), ((5, 6, 7), [0, 2, 1, 3]), ((5, 6, 7), [0, 3, 2, 1]),
    ((5, 6, 7), [0, 1, 2, 3]), ((32, 7, 9), [0, 2, 3, 1]), ((18, 20, 3), [0, 3, 1, 2]),
    ((2, 3, 4, 5), [0, 4, 2, 3, 1]), ((2, 3, 4, 5), [0, 2, 1, 4, 3]), ((2, 3, 4, 5), [0, 1, 3, 4, 2]),
    ((2, 3, 4, 5, 6), [0, 5, 3, 1, 4, 2]), ((2, 3, 4, 5, 6), [0, 1, 2, 5, 3, 4]),
    ((2, 17, 3, 18, 2), [0, 4, 3, 2, 1, 5]), ((56, 56), [0, 2, 1]), ((16, 14, 14), [0, 2, 3, 1]),
    ((1, 6, 1, 7), [0, 3, 4, 1, 2]), ((6, 1, 7), [0, 2, 1, 3]), ((1, 9), [0, 2, 1]),
]


@pytest.mark.parametrize("shape,perm", TRANSPOSES, ids=[f"{len(s)}d-{''.join(map(str, p))}" for s, p in TRANSPOSES])
def test_transpose(shape, perm):
    check(single("transpose", shape, perm=perm), levels=(0,))


def test_transpose_float64():
    check(single("transpose", (20, 9, 11), perm=[0, 3, 1, 2]), levels=(0,), dtype="float64")


# -- reshape, flatten --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,target", [((4, 5, 6), [20, 6]), ((4, 5, 6), [-1]), ((3, 7), [7, 3, 1]),
                                           ((16, 7, 7), [16, -1, 7])])
def test_reshape(shape, target):
    g, x = graph_with_input(shape=shape)
    g.set_output("y", add_op(g, "s", "reshape", [x], shape=target))
    check(g, levels=(0,))


@pytest.mark.parametrize("shape", [(4, 5, 6), (17,), (16, 1, 1), (3, 1, 1, 2)])
def test_flatten(shape):
    check(single("flatten", shape), levels=(0,))


def test_flatten_after_relu_then_reshape():
    """Data movement between computing layers at every level (the optimizer may move or fuse around it)."""
    g, x = graph_with_input(shape=(8, 5, 5))
    y = add_op(g, "r", "relu", [x])
    y = add_op(g, "f", "flatten", [y])
    y = add_op(g, "s", "reshape", [y], shape=[5, 5, 8])
    g.set_output("y", add_op(g, "t", "transpose", [y], perm=[0, 3, 1, 2]))
    check(g)


# -- upsample ----------------------------------------------------------------------------------------------------

UPSAMPLES = [
    dict(scale=2), dict(scale=[3, 1]), dict(scale=[1, 4]), dict(scale=16), dict(scale=[2, 3]), dict(scale=[5, 32]),
    dict(size=[10, 14]), dict(size=[7, 12]), dict(size=[13, 4]), dict(size=[3, 2]), dict(size=[5, 7]),
    dict(scale=2, mode="bilinear"), dict(scale=[3, 2], mode="bilinear", align_corners=True),
    dict(size=[9, 13], mode="bilinear"), dict(size=[9, 13], mode="bilinear", align_corners=True),
    dict(size=[3, 4], mode="bilinear"), dict(size=[1, 1], mode="bilinear", align_corners=True),
    dict(size=[2, 40], mode="bilinear"), dict(scale=[1, 1], mode="bilinear"),
]


@pytest.mark.parametrize("attrs", UPSAMPLES, ids=[f"{a.get('mode', 'nearest')}-{i}" for i, a in
                                                  enumerate(UPSAMPLES)])
def test_upsample(attrs):
    check(single("upsample", (3, 5, 7), **attrs), levels=(0,))


def test_upsample_float64_and_unit_input():
    check(single("upsample", (2, 1, 1), size=[3, 5], mode="bilinear"), levels=(0,), dtype="float64")
    check(single("upsample", (2, 1, 6), scale=[2, 3]), levels=(0,), dtype="float64")


# -- sanity of the harness itself --------------------------------------------------------------------------------

def test_layout_conversion_is_exact():
    """Data movement is bit-exact: compare with the reference at zero tolerance."""
    g, x = graph_with_input(shape=(48, 13, 11))
    g.set_output("y", add_op(g, "b", "to_blocked", [x], block=16))
    check(g, levels=(0,), rtol=0, atol=0)
    x = np.arange(2 * 48 * 13 * 11, dtype=np.float32).reshape(2, 48, 13, 11)
    from graphconv.network import Network
    import graphconv
    m = graphconv.compile(Network(g, {}), backend="llvm", threads=2, opt_level=0)
    y = m.run({"x": x})["y"]
    np.testing.assert_array_equal(y, x.reshape(2, 3, 16, 13, 11).transpose(0, 1, 3, 4, 2))


def test_concat_written_in_place():
    """Inputs of a channel concat whose only reader it is are written straight into its output, sample by sample
    (graph inputs, graph outputs and values read twice are copied); every level, thread count and batch size."""
    from graphconv.passes.manager import optimize
    from graphconv.passes.plan_memory import plan

    from .helpers import check, seeded_weights
    from graphconv.network import Network

    g, x = graph_with_input(shape=(16, 6, 6))
    a = add_op(g, "a", "conv2d", [x], out_channels=16, kernel=1)
    b = add_op(g, "b", "relu", [add_op(g, "b0", "conv2d", [x], out_channels=32, kernel=3, padding=1)])
    c = add_op(g, "c", "conv2d", [x], out_channels=16, kernel=1)
    d = add_op(g, "d", "max_pool2d", [x], kernel=3, stride=1, padding=1)
    cat = add_op(g, "cat", "concat", [a, b, x, c, d])
    g.set_output("y", add_op(g, "head", "conv2d", [cat], out_channels=16, kernel=3, padding=1))
    g.set_output("c", c)
    for level in (0, 2, 3):
        opt, _ = optimize(Network(g, seeded_weights(g)), level, target="llvm")
        assert len(plan(opt.graph, concat_in_place=True).concat_slices) >= 2, level
    check(g)
