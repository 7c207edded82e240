"""The llvm kernels of the pooling, upsample, lrn, slice and pad gradients (graphconv/llvm/kernels/train_pool.py,
train_shape.py) against the float64 reference ops: float32 and float64 builds, batch 1 and 7, threads 1 and 2, the
same bits from run to run and for every thread count. Graphs are the gradient ops themselves on graph inputs."""

from __future__ import annotations

import numpy as np
import pytest

import graphconv
from graphconv.ir.graph import Graph, TensorType
from graphconv.network import Network
from graphconv.ops import REGISTRY
from graphconv.reference.executor import run_graph

from .helpers import add_op, seeded_weights

TOL = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-12)}
DTYPES = ["float32", "float64"]


def _feeds(g: Graph, batches=(1, 7), seed: int = 0, make=None) -> list[dict]:
    """Inputs exactly representable in float32 (so both builds and the reference see the same numbers: a float32
    rounding could otherwise move a maximum). `make(name, shape, rng)` overrides the standard normal draw."""
    out = []
    for b in batches:
        rng = np.random.default_rng(seed + b)
        feed = {}
        for v in g.inputs:
            shape = v.type.concrete(b)
            a = make(v.name, shape, rng) if make else None
            if a is None:
                a = rng.standard_normal(shape) * 1.5
            feed[v.name] = np.asarray(a, np.float32).astype(np.float64)
        out.append(feed)
    return out


def _check(g: Graph, feeds: list[dict], dtype: str, threads=(1, 2), weights=None) -> None:
    """Every output against the float64 reference for each thread count; the same bits on a second run and for
    every thread count."""
    weights = weights or {}
    net = Network(g, weights)
    refs = [run_graph(g, feed, weights, dtype="float64") for feed in feeds]
    first = None
    for t in threads:
        model = graphconv.compile(net, backend="llvm", threads=t, opt_level=0, dtype=dtype)
        outs = []
        for feed, ref in zip(feeds, refs):
            xs = {k: v.astype(dtype) for k, v in feed.items()}
            got = model.run(xs)
            assert set(got) == set(ref)
            batch = len(next(iter(feed.values())))
            for name, want in ref.items():
                assert got[name].shape == want.shape, (name, got[name].shape, want.shape)
                np.testing.assert_allclose(got[name], want.astype(dtype), **TOL[dtype],
                                           err_msg=f"{name}, {dtype}, threads={t}, batch={batch}")
            again = model.run(xs)
            for name in got:
                np.testing.assert_array_equal(got[name], again[name], err_msg=f"{name}: a second run differs")
            outs.append(got)
        if first is None:
            first = outs
            continue
        for a, b in zip(first, outs):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name], err_msg=f"{name}: threads={t} differs from "
                                                                        f"threads={threads[0]}")


# -- window gradients --------------------------------------------------------------------------------------------------

# (kernel, stride, padding [top, left, bottom, right], dilation, ceil_mode)
WINDOWS = [
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),  # resnet's stem pool: overlapping windows
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),  # lenet's: tiles (odd sizes leave a row and a column out)
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), True),  # ceil_mode: the overhang on odd sizes
    ((3, 2), (1, 3), (1, 0, 0, 1), (1, 1), True),  # asymmetric padding, a stride beyond the kernel
    ((5, 3), (3, 2), (2, 1, 1, 0), (1, 1), True),
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),  # stride 1: every position in 9 windows
    ((4, 4), (4, 4), (2, 2, 2, 2), (1, 1), True),
    ((1, 1), (2, 2), (0, 0, 0, 0), (1, 1), False),  # a pick of every other position
    ((3, 3), (2, 1), (2, 0, 1, 2), (2, 2), False),  # dilation (max and sum only)
    ((2, 3), (3, 3), (0, 1, 1, 1), (2, 1), True),
    ((3, 2), (1, 2), (0, 0, 2, 1), (3, 2), True),
    ((2, 2), (5, 6), (1, 1, 0, 1), (1, 1), True),  # strides too wide for shuffles of one vector's windows
]
SIZES = [(3, 11, 13), (2, 9, 37)]  # odd; rows of several vectors plus a tail
LP_P = [2.0, 1.0, 3.0, 2.5, 0.7]


def _window_attrs(case, dilated: bool) -> dict:
    kernel, stride, padding, dilation, ceil = case
    a = dict(kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil)
    if dilated:
        a["dilation"] = dilation
    return a


def _out_hw(case, h: int, w: int) -> tuple[int, int]:
    return REGISTRY["max_window_grad"]._out_hw(_window_attrs(case, True), h, w)


def _window_graph(size, ops=("max", "sum", "avg", "lp"), cases=WINDOWS) -> Graph:
    c, h, w = size
    g = Graph("windows")
    x = g.add_input("x", TensorType(("N", c, h, w)))
    for k, case in enumerate(cases):
        plain = case[3] == (1, 1)
        oh, ow = _out_hw(case, h, w)
        dy = g.add_input(f"dy{k}", TensorType(("N", c, oh, ow)))
        if "max" in ops:
            g.set_output(f"max{k}", add_op(g, f"max{k}", "max_window_grad", [dy, x], **_window_attrs(case, True)))
        if "sum" in ops:
            g.set_output(f"sum{k}", add_op(g, f"sum{k}", "sum_window_grad", [dy], input_size=(h, w),
                                           **_window_attrs(case, True)))
        if "avg" in ops and plain:
            for inc in (True, False):
                g.set_output(f"avg{k}{'i' if inc else 'x'}",
                             add_op(g, f"avg{k}{int(inc)}", "avg_window_grad", [dy], input_size=(h, w),
                                    count_include_pad=inc, **_window_attrs(case, False)))
        if "lp" in ops and plain:
            y = g.add_input(f"y{k}", TensorType(("N", c, oh, ow)))
            g.set_output(f"lp{k}", add_op(g, f"lp{k}", "lp_window_grad", [dy, x, y], p=LP_P[k % len(LP_P)],
                                          **_window_attrs(case, False)))
    return g


def _lp_inputs(name, shape, rng):
    """The pooled y positive (with some exact zeros: no gradient), x with some exact zeros (no direction)."""
    if name.startswith("y"):
        y = np.abs(rng.standard_normal(shape)) + 0.5
        return np.where(rng.random(shape) < 0.1, 0.0, y)
    if name == "x":
        x = rng.standard_normal(shape) * 1.5
        return np.where(rng.random(shape) < 0.05, 0.0, x)
    return None


@pytest.mark.parametrize("size", SIZES, ids=["x".join(map(str, s)) for s in SIZES])
@pytest.mark.parametrize("dtype", DTYPES)
def test_window_grads(size, dtype):
    """max, sum, avg (counting the padding or not) and lp gradients over every window geometry."""
    g = _window_graph(size)
    _check(g, _feeds(g, make=_lp_inputs), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_window_grad_first_maximum(dtype):
    """Values drawn from a few levels, so windows hold equal maxima: all of the gradient goes to the first in
    row-major order, as the reference's argmax (and PyTorch)."""
    g = _window_graph((3, 10, 19), ops=("max",))
    feeds = _feeds(g, make=lambda name, shape, rng: rng.integers(-2, 2, shape) * 0.5 if name == "x" else None)
    assert all(len(np.unique(f["x"])) <= 4 for f in feeds)
    _check(g, feeds, dtype)


def test_max_window_grad_infinite_inputs():
    """-inf everywhere in a plane: no real value beats the padding, so a window whose first tap is padding sends
    nothing to the input (as in the reference: argmax lands on the padding), the others send all to their first
    tap; +inf maxima win as any other."""
    g = _window_graph((2, 7, 9), ops=("max",), cases=WINDOWS[:1] + WINDOWS[3:5] + WINDOWS[8:9])

    def make(name, shape, rng):
        if name != "x":
            return None
        x = rng.standard_normal(shape)
        x[:, 0] = -np.inf
        x[:, 1, 2, 3] = np.inf
        return x

    _check(g, _feeds(g, make=make), "float32")


def test_window_grads_wide_rows():
    """Rows of several vectors in both builds, the last overlapping, and a border at each end."""
    cases = [WINDOWS[0], WINDOWS[5], WINDOWS[3]]
    g = _window_graph((2, 5, 83), cases=cases)
    _check(g, _feeds(g, batches=(3,), make=_lp_inputs), "float32")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_window_grads_network_shapes(dtype):
    """The shapes of resnet18 at 32x32 (3x3/2 max pooling of 64 channels at 16x16) and lenet5 (2x2 average pooling
    at 28x28 and 10x10), batch 32 and 64."""
    g = Graph("nets")
    x = g.add_input("x", TensorType(("N", 64, 16, 16)))
    dy = g.add_input("dy", TensorType(("N", 64, 8, 8)))
    g.set_output("max", add_op(g, "max", "max_window_grad", [dy, x], kernel=(3, 3), stride=(2, 2),
                               padding=(1, 1, 1, 1), ceil_mode=False))
    for c, s in ((6, 28), (16, 10)):
        d = g.add_input(f"d{c}", TensorType(("N", c, s // 2, s // 2)))
        g.set_output(f"avg{c}", add_op(g, f"avg{c}", "avg_window_grad", [d], kernel=(2, 2), stride=(2, 2),
                                       padding=(0, 0, 0, 0), ceil_mode=False, input_size=(s, s)))
    gd = g.add_input("gd", TensorType(("N", 512, 1, 1)))
    g.set_output("global", add_op(g, "global", "global_avg_grad", [gd], input_size=(1, 1)))
    _check(g, _feeds(g, batches=(32, 64)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_avg_grad(dtype):
    g = Graph("global")
    for k, (h, w) in enumerate([(1, 1), (3, 5), (8, 8), (17, 3), (1, 37)]):
        dy = g.add_input(f"dy{k}", TensorType(("N", 6, 1, 1)))
        g.set_output(f"g{k}", add_op(g, f"g{k}", "global_avg_grad", [dy], input_size=(h, w)))
    _check(g, _feeds(g), dtype)


# -- upsample ------------------------------------------------------------------------------------------------------

# (input H, W, output OH, OW, mode, align_corners): integer scales (a scale attribute) and arbitrary sizes
UPSAMPLES = [
    (5, 7, 10, 14, "nearest", False),
    (5, 7, 15, 7, "nearest", False),
    (5, 7, 11, 20, "nearest", False),
    (5, 20, 10, 60, "nearest", False),
    (6, 9, 4, 5, "nearest", False),  # a size below the input
    (5, 7, 10, 14, "bilinear", False),
    (5, 7, 10, 14, "bilinear", True),
    (4, 9, 13, 40, "bilinear", False),
    (3, 20, 9, 60, "bilinear", False),
    (3, 20, 9, 60, "bilinear", True),
    (6, 6, 6, 6, "bilinear", False),
    (1, 1, 4, 5, "bilinear", True),
    (1, 1, 3, 3, "bilinear", False),
    (2, 33, 4, 99, "bilinear", False),
    (7, 9, 5, 4, "bilinear", False),
    (3, 70, 5, 100, "nearest", False),  # many border columns: a table loop
    (4, 19, 16, 76, "bilinear", False),  # 8 taps per column: narrower vectors
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_upsample_grad(dtype):
    g = Graph("upsample")
    for k, (h, w, oh, ow, mode, ac) in enumerate(UPSAMPLES):
        dy = g.add_input(f"dy{k}", TensorType(("N", 3, oh, ow)))
        g.set_output(f"u{k}", add_op(g, f"u{k}", "upsample_grad", [dy], input_size=(h, w), mode=mode,
                                     align_corners=ac))
    _check(g, _feeds(g), dtype)


# -- lrn -----------------------------------------------------------------------------------------------------------

LRNS = [((7, 5, 7), dict(size=5)), ((3, 4, 5), dict(size=4, beta=0.6, bias=1.5, alpha=0.3)),
        ((20, 3, 11), dict(size=3, alpha=0.5, beta=1.0)), ((5, 6, 6), dict(size=1, beta=0.5, alpha=0.2)),
        ((6, 1, 1), dict(size=7, alpha=0.1, bias=2.0, beta=0.8)), ((4, 5, 40), dict(size=2, alpha=0.05))]


@pytest.mark.parametrize("dtype", DTYPES)
def test_lrn_grad(dtype):
    g = Graph("lrn")
    for k, (shape, attrs) in enumerate(LRNS):
        x = g.add_input(f"x{k}", TensorType(("N", *shape)))
        dy = g.add_input(f"dy{k}", TensorType(("N", *shape)))
        g.set_output(f"l{k}", add_op(g, f"l{k}", "lrn_grad", [dy, x], **attrs))
    _check(g, _feeds(g), dtype)


# -- slice and pad -------------------------------------------------------------------------------------------------

# (dx shape after the batch, axis, start, end, step)
SLICES = [((9, 5, 7), 1, 2, 5, 1), ((9, 5, 7), 1, 1, 6, 2), ((3, 5, 20), 3, 19, None, -3),
          ((4, 15, 7), 2, 14, 0, -3), ((3, 5, 41), 3, 1, None, 1), ((3, 5, 7), 1, 0, None, 1),
          ((9, 5, 7), 1, 8, None, -2), ((3, 5, 41), 3, 0, 40, 3), ((6, 4, 4), 1, 5, None, -1),
          ((2, 3, 50), 3, 7, 43, 1), ((12,), 1, 3, 11, 1), ((12,), 1, 3, 11, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_slice_grad(dtype):
    g = Graph("slices")
    for k, (shape, axis, start, end, step) in enumerate(SLICES):
        size = shape[axis - 1]
        taken = len(range(*slice(start, end, step).indices(size)))
        dy_shape = list(shape)
        dy_shape[axis - 1] = taken
        dy = g.add_input(f"dy{k}", TensorType(("N", *dy_shape)))
        g.set_output(f"s{k}", add_op(g, f"s{k}", "slice_grad", [dy], axis=axis, size=size, start=start, end=end,
                                     step=step))
    _check(g, _feeds(g), dtype)


# (pads [top, left, bottom, right], mode, unpadded H, W)
PADS = [((1, 2, 3, 0), "constant", 6, 21), ((2, 1, 1, 3), "reflect", 6, 21), ((3, 4, 2, 1), "edge", 6, 21),
        ((0, 0, 0, 0), "edge", 5, 5), ((1, 20, 2, 17), "edge", 6, 21), ((5, 6, 5, 6), "reflect", 6, 7),
        ((1, 1, 1, 1), "reflect", 2, 2), ((2, 3, 0, 1), "constant", 1, 40), ((4, 0, 0, 5), "edge", 1, 1),
        ((1, 18, 1, 19), "reflect", 3, 37)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_pad_grad(dtype):
    g = Graph("pads")
    for k, (pads, mode, h, w) in enumerate(PADS):
        top, left, bottom, right = pads
        dy = g.add_input(f"dy{k}", TensorType(("N", 2, h + top + bottom, w + left + right)))
        g.set_output(f"p{k}", add_op(g, f"p{k}", "pad_grad", [dy], pads=pads, mode=mode))
    _check(g, _feeds(g), dtype)


# -- in a training step ----------------------------------------------------------------------------------------------

def _pooling_net() -> Graph:
    g = Graph("pools")
    x = g.add_input("x", TensorType(("N", 4, 11, 13)))
    y = add_op(g, "bn1", "batchnorm", [x])
    y = add_op(g, "mp", "max_pool2d", [y], kernel=3, stride=2, padding=1)
    y = add_op(g, "bn2", "batchnorm", [y])
    y = add_op(g, "pad", "pad", [y], pads=[1, 2, 0, 1], mode="reflect")
    y = add_op(g, "up", "upsample", [y], scale=2, mode="bilinear")
    y = add_op(g, "lrn", "lrn", [y], size=3)
    y = add_op(g, "ap", "avg_pool2d", [y], kernel=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    y = add_op(g, "sl", "slice", [y], axis=1, start=1, end=4)
    y = add_op(g, "bn3", "batchnorm", [y])
    g.set_output("y", y)
    g.set_output("pooled", add_op(g, "gap", "global_avg_pool", [y]))
    return g


def test_train_step_through_pooling_matches_the_reference():
    """A whole training step (forward, backward through every kernel here, SGD with momentum) against the float64
    reference, float32 and float64 builds, two threads."""
    from graphconv.train.autodiff import Loss
    from graphconv.train.optim import Optimizer
    from graphconv.train.step import TrainStep

    g = _pooling_net()
    net = Network(g, seeded_weights(g))
    losses, opt = [Loss("y", "mse"), Loss("pooled", "mse", weight=0.5)], Optimizer("sgd", momentum=0.9)
    feeds = []
    for k in range(2):
        rng = np.random.default_rng(k)
        xs = {"x": (rng.standard_normal((3, 4, 11, 13)) * 1.5).astype(np.float32)}
        ts = {name: rng.standard_normal(v.type.concrete(3)).astype(np.float32) for name, v in g.outputs.items()}
        feeds.append((xs, ts))
    ref = TrainStep(net, losses, opt, backend="reference", dtype="float64")
    want_losses = [ref.run(xs, ts, lr=0.05).loss for xs, ts in feeds]
    want_state = ref.state()
    for dtype, tol in (("float32", dict(rtol=1e-4, atol=1e-5)), ("float64", dict(rtol=1e-9, atol=1e-11))):
        step = TrainStep(net, losses, opt, backend="llvm", dtype=dtype, threads=2)
        ops = {n.op for n in step.runner.graph.nodes}
        assert ops >= {"max_window_grad", "avg_window_grad", "upsample_grad", "lrn_grad", "pad_grad", "slice_grad",
                       "global_avg_grad"}, ops
        got = [step.run(xs, ts, lr=0.05).loss for xs, ts in feeds]
        np.testing.assert_allclose(got, want_losses, **tol)
        for name, v in step.state().items():
            np.testing.assert_allclose(np.asarray(v, np.float64), np.asarray(want_state[name], np.float64), **tol,
                                       err_msg=f"{name}, {dtype}")
