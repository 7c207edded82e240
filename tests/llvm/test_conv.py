"""Convolution kernels against the reference: conv2d (plain and NCHW16c, every option), channel_matmul (plain and
blocked), conv_transpose2d, fused epilogues."""

import pytest

from graphconv.network import Network
from graphconv.passes.manager import optimize

from .helpers import add_op, check, graph_with_input, seeded_weights, single


def blocked_ops(g) -> list[str]:
    """The ops the -O3 llvm pipeline runs in NCHW16c for graph g."""
    o, _ = optimize(Network(g, seeded_weights(g)), 3, target="llvm")
    return [n.op for n in o.graph.nodes if n.attrs.get("layout")]


# -- plain conv2d ------------------------------------------------------------------------------------------------------

PLAIN = [
    ((3, 9, 9), dict(out_channels=8, kernel=1)),
    ((3, 9, 9), dict(out_channels=8, kernel=1, stride=2)),
    ((3, 9, 10), dict(out_channels=20, kernel=3)),
    ((3, 9, 10), dict(out_channels=20, kernel=3, padding=1, bias=False)),
    ((4, 11, 10), dict(out_channels=16, kernel=5, stride=2, padding=(1, 2, 0, 3))),
    ((4, 13, 12), dict(out_channels=17, kernel=7, stride=3, padding=3)),
    ((3, 23, 21), dict(out_channels=32, kernel=7, stride=2, padding=3)),  # the ResNet stem, small
    ((5, 10, 9), dict(out_channels=12, kernel=3, stride=(1, 3), padding="same")),
    ((4, 11, 10), dict(out_channels=8, kernel=3, dilation=2, padding=2)),
    ((4, 12, 13), dict(out_channels=24, kernel=(3, 5), dilation=(2, 1), padding=(3, 0, 1, 2), stride=(2, 1))),
    ((6, 9, 9), dict(out_channels=16, kernel=3, groups=2, padding=1)),
    ((8, 7, 7), dict(out_channels=8, kernel=3, groups=4, padding=1, bias=False)),
    ((8, 7, 9), dict(out_channels=40, kernel=3, groups=4, stride=2)),
    ((5, 9, 11), dict(out_channels=10, kernel=(2, 4), flip=True, padding=(1, 0, 2, 1))),
    ((6, 8, 8), dict(out_channels=18, kernel=3, groups=3, flip=True, padding=1, stride=2)),
    ((3, 3, 3), dict(out_channels=5, kernel=3)),  # one output pixel
    ((3, 2, 2), dict(out_channels=19, kernel=5, padding=2)),  # the kernel covers the whole image and more
    ((2, 1, 1), dict(out_channels=3, kernel=3, padding=1)),
    ((3, 4, 5), dict(out_channels=16, kernel=(4, 5), padding=(3, 4, 0, 0), stride=2)),
    ((2, 6, 40), dict(out_channels=20, kernel=3, padding=1)),  # rows long enough for interior tile loops
]


@pytest.mark.parametrize("shape,attrs", PLAIN, ids=[f"p{i}" for i in range(len(PLAIN))])
def test_conv_plain(shape, attrs):
    check(single("conv2d", shape, **attrs), levels=(0,))


DEPTHWISE = [
    ((8, 9, 9), dict(kernel=3, depthwise=True, padding=1)),
    ((8, 9, 9), dict(kernel=3, depthwise=True, stride=2, padding=1, flip=True, bias=False)),
    ((5, 12, 45), dict(kernel=5, depthwise=True, padding=2)),  # vectors along the row, a short vector, borders
    ((3, 11, 50), dict(kernel=3, depthwise=True, stride=(1, 2), dilation=2, padding=(0, 3, 1, 2))),
    ((4, 9, 60), dict(kernel=(1, 3), depthwise=True, stride=3, padding=(0, 1, 0, 1))),
    ((4, 7, 30), dict(out_channels=12, kernel=3, depthwise=True, padding=1)),  # channel multiplier 3
    ((12, 6, 33), dict(out_channels=24, kernel=3, groups=6, padding=1, stride=(1, 2))),  # 2 in, 4 out a group
]


@pytest.mark.parametrize("shape,attrs", DEPTHWISE, ids=[f"d{i}" for i in range(len(DEPTHWISE))])
def test_conv_plain_depthwise_and_grouped(shape, attrs):
    check(single("conv2d", shape, **attrs), levels=(0,))


def test_conv_plain_every_level():
    """Channels that are not multiples of 16 stay plain at -O3 too."""
    g, x = graph_with_input(shape=(3, 15, 14))
    y = add_op(g, "c1", "conv2d", [x], out_channels=24, kernel=7, stride=2, padding=3)
    y = add_op(g, "r1", "relu", [y])
    y = add_op(g, "c2", "conv2d", [y], out_channels=24, kernel=3, padding=1, depthwise=True)
    g.set_output("y", y)
    assert blocked_ops(g) == []
    check(g)


def test_conv_plain_float64():
    check(single("conv2d", (5, 9, 11), out_channels=20, kernel=3, padding=1, stride=2), dtype="float64",
          levels=(0,), threads=(2,))
    check(single("conv2d", (6, 9, 30), kernel=3, padding=1, depthwise=True), dtype="float64", levels=(0,),
          threads=(2,))


# -- blocked conv2d (NCHW16c at -O3) -----------------------------------------------------------------------------------

def residual(shape=(16, 9, 9), out=32, middle=None, first=None, stride=(1, 1)):
    """conv -> relu -> conv -> add(1×1 conv of x with `stride`) -> relu: every conv runs blocked at -O3, with relu
    and the residual add as epilogues."""
    g, x = graph_with_input(shape=shape)
    y = add_op(g, "c1", "conv2d", [x], **(first or dict(out_channels=out, kernel=3, padding=1)))
    y = add_op(g, "r1", "relu", [y])
    y = add_op(g, "c2", "conv2d", [y], **(middle or dict(out_channels=out, kernel=3, padding=1)))
    skip = add_op(g, "sk", "conv2d", [x], out_channels=int(y.type.shape[1]), kernel=1, stride=stride)
    y = add_op(g, "a", "add", [y, skip])
    y = add_op(g, "r2", "relu", [y])
    g.set_output("y", y)
    return g


def test_blocked_residual_block():
    g = residual()
    assert blocked_ops(g) == ["conv2d", "channel_matmul", "conv2d"]
    check(g)


BLOCKED = [
    dict(out_channels=32, kernel=3, padding=1, bias=False),
    dict(out_channels=16, kernel=5, padding=(2, 1, 2, 3), flip=True),
    dict(out_channels=48, kernel=3, dilation=2, padding=2),
    dict(out_channels=32, kernel=(3, 1), padding=(1, 0, 1, 0), flip=True, bias=False),
    dict(out_channels=16, kernel=7, padding=3),  # 7×7 on a 9×9 image: every column a border column
]


@pytest.mark.parametrize("middle", BLOCKED, ids=[f"b{i}" for i in range(len(BLOCKED))])
def test_blocked_conv_options(middle):
    g = residual(middle=middle)
    assert blocked_ops(g).count("conv2d") == 2
    check(g, levels=(3,))


def test_blocked_conv_strided():
    """Strided blocked convolutions (the skip path strided the same way), wide rows with interior tile loops."""
    for shape, mid in [((16, 9, 45), dict(out_channels=32, kernel=3, stride=2, padding=1)),
                       ((16, 10, 12), dict(out_channels=32, kernel=(3, 2), stride=(2, 3), padding=(1, 0, 1, 1)))]:
        g = residual(shape, middle=mid, first=dict(out_channels=32, kernel=3, padding=1), stride=mid["stride"])
        assert blocked_ops(g).count("conv2d") >= 2
        check(g, levels=(3,), threads=(1, 2), batches=(2,))


def test_blocked_conv_tiny_image():
    g = residual((32, 2, 3), out=16)
    assert "conv2d" in blocked_ops(g)
    check(g, levels=(3,))


def test_blocked_depthwise():
    for shape, dw in [((16, 9, 9), dict(kernel=3, depthwise=True, padding=1)),
                      ((32, 11, 40), dict(kernel=5, depthwise=True, padding=2, flip=True, bias=False)),
                      ((16, 12, 13), dict(kernel=3, depthwise=True, stride=2, dilation=(1, 2),
                                          padding=(1, 2, 0, 2)))]:
        g = residual(shape, out=shape[0], middle=dw, stride=dw.get("stride", 1))
        assert blocked_ops(g).count("conv2d") >= 2
        check(g, levels=(3,), batches=(2,))


def test_blocked_float64():
    g = residual(out=16, middle=dict(kernel=3, depthwise=True, padding=1, stride=2), stride=2)
    check(g, dtype="float64", levels=(3,), threads=(2,))


# -- channel_matmul ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,units", [((12, 7, 9), 20), ((12, 2, 3), 20), ((5, 5, 5), 3), ((7, 10, 13), 13)])
def test_channel_matmul_plain_lowered(shape, units):
    """-O3 lowers 1×1 convolutions to channel matmuls; these channel counts stay plain."""
    g = single("conv2d", shape, out_channels=units, kernel=1)
    check(g, levels=(0, 3))


@pytest.mark.parametrize("shape", [(10,), (10, 17), (10, 3), (6, 2, 3, 4), (9, 70)])
def test_channel_matmul_plain_direct(shape):
    check(single("channel_matmul", shape, units=21), levels=(0,))
    check(single("channel_matmul", shape, units=6, bias=False), levels=(0,), threads=(2,))


@pytest.mark.parametrize("hw", [(13, 13), (15, 15), (2, 2), (7, 7)])
def test_channel_matmul_blocked(hw):
    """Blocked 1×1: pixels flattened into rows (the last one shorter for 13×13)."""
    g = residual((16, *hw), middle=dict(out_channels=32, kernel=1), first=dict(out_channels=16, kernel=1))
    assert blocked_ops(g).count("channel_matmul") == 3
    check(g, levels=(3,), batches=(2,))


# -- conv_transpose2d --------------------------------------------------------------------------------------------------

TRANSPOSE = [
    ((4, 5, 6), dict(out_channels=8, kernel=3)),
    ((4, 5, 6), dict(out_channels=8, kernel=2, stride=2, bias=False)),
    ((3, 5, 4), dict(out_channels=17, kernel=3, stride=2, padding=(1, 1, 1, 1), output_padding=(1, 1))),
    ((4, 4, 5), dict(out_channels=6, kernel=(3, 4), stride=(3, 2), padding=(0, 1, 2, 1), output_padding=(2, 0))),
    ((4, 5, 5), dict(out_channels=6, kernel=3, dilation=2, stride=2, padding=1, output_padding=(1, 0))),
    ((6, 4, 4), dict(out_channels=4, kernel=3, groups=2, stride=2, padding=1)),
    ((8, 3, 3), dict(out_channels=40, kernel=3, groups=4, stride=1, padding=2)),
]


@pytest.mark.parametrize("shape,attrs", TRANSPOSE, ids=[f"t{i}" for i in range(len(TRANSPOSE))])
def test_conv_transpose2d(shape, attrs):
    check(single("conv_transpose2d", shape, **attrs), levels=(0,))


def test_conv_transpose2d_epilogue():
    g, x = graph_with_input(shape=(4, 5, 5))
    y = add_op(g, "t", "conv_transpose2d", [x], out_channels=6, kernel=3, stride=2, padding=1, output_padding=1)
    y = add_op(g, "r", "relu", [y])
    g.set_output("y", y)
    check(g, levels=(0, 2))


# -- fused epilogues ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [12, 16])
def test_conv_bn_relu_add(channels):
    """conv + batchnorm + relu + residual add: folded and fused at -O2 (plain), blocked at -O3 for 16 channels."""
    g, x = graph_with_input(shape=(channels, 8, 9))
    x = add_op(g, "c0", "conv2d", [x], out_channels=channels, kernel=3, padding=1)
    x = add_op(g, "r0", "relu", [x])
    y = add_op(g, "c1", "conv2d", [x], out_channels=channels, kernel=3, padding=1, bias=False)
    y = add_op(g, "bn1", "batchnorm", [y])
    y = add_op(g, "r1", "relu", [y])
    y = add_op(g, "c2", "conv2d", [y], out_channels=channels, kernel=3, padding=1, bias=False)
    y = add_op(g, "bn2", "batchnorm", [y])
    y = add_op(g, "a", "add", [y, x])
    y = add_op(g, "r2", "relu", [y])
    g.set_output("y", y)
    if channels % 16 == 0:
        assert blocked_ops(g).count("conv2d") == 3
    check(g)
