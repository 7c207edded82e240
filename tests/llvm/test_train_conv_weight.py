"""The weight-gradient kernels (graphconv/llvm/kernels/train_conv_weight.py): conv2d_grad_weight and
dense_grad_weight against the float64 reference over kernels, strides, asymmetric paddings, dilations, groups
(depthwise too), flip, odd channel counts, 1×1 maps, dy covering fewer windows than fit, batch 1 and 7, threads 1
and 2, float32 and float64; the same bits on every run and for every thread count; forced tilings (tails of every
kind); a whole training step of a network whose weights all need these kernels."""

from __future__ import annotations

import numpy as np
import pytest

import graphconv
from graphconv.ir.graph import Graph, TensorType
from graphconv.llvm.kernels import train_conv_weight as tcw
from graphconv.network import Network
from graphconv.ops.schema import window_out
from graphconv.reference.executor import run_graph
from graphconv.train.autodiff import Loss
from graphconv.train.optim import Optimizer
from graphconv.train.step import TrainStep

from .helpers import add_op, seeded_weights

TOL = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-10)}


def _conv(c, hw, o, kernel, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1, flip=False, out=None):
    """A conv2d_grad_weight case: x [c, *hw]; dy [o, *out] (default: every window that fits)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    top, left, bottom, right = padding
    fit = (window_out(hw[0], kh, sh, top, bottom, dh), window_out(hw[1], kw, sw, left, right, dw))
    return ((c, *hw), (o, *(out or fit)),
            dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, flip=flip))


CONV = {
    "3x3": _conv(16, (8, 8), 32, (3, 3), padding=(1, 1, 1, 1)),
    "odd": _conv(5, (7, 6), 17, (3, 3), padding=(1, 1, 1, 1)),
    "33to3": _conv(33, (5, 5), 3, (3, 3)),
    "stride_asym": _conv(3, (9, 7), 5, (3, 3), stride=(2, 2), padding=(1, 0, 2, 1)),
    "dil_groups_flip": _conv(6, (9, 7), 4, (3, 2), stride=(2, 1), padding=(1, 0, 0, 1), dilation=(2, 2), groups=2,
                             flip=True),
    "depthwise": _conv(17, (5, 6), 17, (3, 3), padding=(1, 1, 1, 1), groups=17),
    "depthwise_x2_s2": _conv(4, (7, 6), 8, (3, 3), stride=(2, 2), padding=(1, 1, 1, 1), groups=4),
    "map1x1": _conv(33, (1, 1), 17, (3, 3), padding=(1, 1, 1, 1)),
    "map2x2_s2": _conv(5, (2, 2), 16, (3, 3), stride=(2, 2), padding=(1, 1, 1, 1)),
    "1x1_s2": _conv(16, (8, 8), 32, (1, 1), stride=(2, 2)),
    "1x1_p1": _conv(16, (1, 1), 32, (1, 1)),  # dy read as is (no transposition)
    "fewer_windows": _conv(3, (8, 8), 5, (3, 3), stride=(2, 2), padding=(1, 1, 1, 1), out=(3, 2)),
    "taps_in_padding": _conv(2, (3, 3), 3, (3, 3), padding=(3, 2, 3, 2)),
    "5x5_c1": _conv(1, (12, 12), 6, (5, 5)),
    "7x7_s2": _conv(3, (16, 16), 16, (7, 7), stride=(2, 2), padding=(3, 3, 3, 3)),
    "grouped_flip": _conv(12, (6, 5), 18, (3, 3), padding=(0, 1, 2, 1), groups=3, flip=True),
    # one input channel per group: the channels-last path (x padded and repeated per output channel)
    "c1_padded": _conv(1, (9, 8), 5, (3, 3), padding=(1, 2, 0, 1)),
    "depthwise_dil_flip_fewer": _conv(6, (9, 9), 6, (3, 3), stride=(2, 2), padding=(2, 1, 0, 1), dilation=(2, 1),
                                      groups=6, flip=True, out=(3, 3)),
    "depthwise_7x7": _conv(40, (6, 7), 40, (7, 7), padding=(3, 3, 3, 3), groups=40),
}

DENSE = {"rank2": ((37,), (20,)), "rank2_small": ((3,), (5,)), "rank2_odd": ((17,), (33,)),
         "rank2_wide": ((70,), (16,)), "rank2_one": ((1,), (1,)), "rank3": ((17, 3), (33, 3)),
         "rank4": ((16, 2, 3), (24, 2, 3)), "rank4_1x1": ((16, 1, 1), (24, 1, 1)), "rank4_odd": ((5, 3, 3), (7, 3, 3))}


def _close(got: np.ndarray, want: np.ndarray, dtype: str, what: str) -> None:
    """|got - want| <= atol + rtol·max|want| everywhere: a sum of many products of either sign loses digits
    relative to its largest terms, not to itself, so the bound scales with the output's magnitude."""
    tol = TOL[dtype]
    err = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0))
    bound = tol["atol"] + tol["rtol"] * float(np.max(np.abs(want), initial=0.0))
    assert err <= bound, f"{what}: differs by {err:.3g} (allowed {bound:.3g})"


def _graph(cases: dict, op: str) -> Graph:
    g = Graph(op)
    for name, case in cases.items():
        xs, dys = case[:2]
        attrs = case[2] if len(case) > 2 else {}
        x = g.add_input(f"x_{name}", TensorType(("N", *xs)))
        dy = g.add_input(f"dy_{name}", TensorType(("N", *dys)))
        g.set_output(name, add_op(g, f"gw_{name}", op, [x, dy], **attrs))
    return g


def _feed(g: Graph, batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed + batch)
    return {v.name: rng.standard_normal(v.type.concrete(batch)) for v in g.inputs}


def _check(g: Graph, dtype: str, batches=(1, 7), threads=(1, 2), cache: bool = True) -> dict:
    """Every output against the float64 reference for each thread count and batch; run twice (the same bits);
    returns {(threads, batch): outputs} for comparisons across thread counts."""
    net = Network(g, {})
    got_all = {}
    for t in threads:
        model = graphconv.compile(net, backend="llvm", threads=t, opt_level=0, dtype=dtype, cache=cache)
        for batch in batches:
            feed = _feed(g, batch)
            want = run_graph(g, feed, {}, dtype="float64")
            args = {k: v.astype(dtype) for k, v in feed.items()}
            got = model.run(args)
            again = model.run(args)
            for name, ref in want.items():
                assert got[name].shape == ref.shape, name
                _close(got[name], ref, dtype, f"{name}, {dtype}, threads={t}, batch={batch}")
                np.testing.assert_array_equal(got[name], again[name], err_msg=f"{name}: not deterministic")
            got_all[t, batch] = got
    for (t, batch), got in got_all.items():  # the same bits for every thread count
        for name in got:
            np.testing.assert_array_equal(got[name], got_all[threads[0], batch][name], err_msg=name)
    return got_all


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv2d_grad_weight(dtype):
    _check(_graph(CONV, "conv2d_grad_weight"), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_grad_weight(dtype):
    _check(_graph(DENSE, "dense_grad_weight"), dtype)


# forced tilings: chunks of channels that do not divide C_g, several vectors per tile, tap ranges within chunks,
# the batch in blocks (a short last block at batch 3)
FORCED = [dict(B=2, Tc=5), dict(B=1, Tc=3, ranges=2), dict(B=4, Tc=7, NB=2), dict(B=1, Tc=1, ranges=4),
          dict(B=2, Tc=6, ranges=3, NB=1)]


@pytest.mark.parametrize("plan", FORCED, ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
def test_forced_tilings(plan, monkeypatch):
    cases = {"a": _conv(17, (5, 4), 64, (3, 3), padding=(1, 0, 1, 2)),
             "b": _conv(9, (6, 6), 40, (2, 3), stride=(2, 1), dilation=(2, 1), flip=True),
             "c": _conv(13, (1, 2), 32, (3, 3), padding=(1, 1, 1, 1))}
    monkeypatch.setattr(tcw, "PLAN_OVERRIDE", plan)
    _check(_graph(cases, "conv2d_grad_weight"), "float32", batches=(3,), threads=(2,), cache=False)


def test_large_gradients_stream():
    """Weight gradients larger than L2 are written with non-temporal stores when dW is aligned (in the arena,
    read through `neg`), with ordinary stores otherwise (an output buffer numpy allocated anywhere)."""
    g = Graph("big")
    x = g.add_input("x", TensorType(("N", 128, 2, 2)))
    dy = g.add_input("dy", TensorType(("N", 512, 1, 1)))
    attrs = dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1))
    g.set_output("dw", add_op(g, "gw_out", "conv2d_grad_weight", [x, dy], **attrs))
    g.set_output("neg_dw", add_op(g, "neg", "neg", [add_op(g, "gw_arena", "conv2d_grad_weight", [x, dy], **attrs)]))
    from graphconv.llvm.builder import KB
    from llvmlite import ir

    geo = tcw._geo("conv2d_grad_weight", {**attrs, "dilation": (1, 1), "groups": 1}, x.type, dy.type)
    kb = KB(None, ir.FloatType(), 16)
    item = tcw._Item(kb, geo, tcw._plan(geo, kb), *[None] * 6, 0, 0, 0, 128, tuple(range(9)))
    assert item.streaming()
    for dtype in ("float32", "float64"):
        _check(g, dtype, batches=(3,))


def test_plans_split_small_layers_between_threads():
    """A layer with one block of output channels and one chunk of input channels still gives two threads work
    (by ranges of taps), and ResNet-18's shapes at 32×32 get tiles of whole vectors."""
    from graphconv.llvm.builder import KB
    from llvmlite import ir

    kb = KB(None, ir.FloatType(), 16)
    lenet_c1 = tcw._Geo(1, 32, 32, 6, 28, 28, 5, 5, 1, 1, 1, 1, 0, 0, 1, False)
    p = tcw._plan(lenet_c1, kb)
    assert p.L == 8 and len(p.ranges) >= 2
    layer1 = tcw._Geo(64, 8, 8, 64, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, False)
    p = tcw._plan(layer1, kb)
    assert p.L == 16 and p.B * min(p.tmax, p.Tc) >= 12
    # 3x3 padding 1 on a 1x1 map: only the centre tap is read; the others are zero columns
    layer4 = tcw._Geo(512, 1, 1, 512, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, False)
    classes = tcw._classes(layer4)
    assert [t for t, c in classes.items() if c != (0, 0, 0, 0)] == [4]


def test_training_step():
    """Three SGD steps of a network whose every weight gradient is one of these kernels (grouped, strided, padded,
    flipped convolutions, channel_matmul, dense): the state and losses agree with the float64 reference."""
    g = Graph("gwnet")
    x = g.add_input("x", TensorType(("N", 3, 9, 9)))
    y = add_op(g, "c1", "conv2d", [x], out_channels=12, kernel=3, stride=2, padding=[1, 0, 1, 1])
    y = add_op(g, "a1", "tanh", [y])
    y = add_op(g, "c2", "conv2d", [y], out_channels=12, kernel=[3, 2], padding=1, groups=3, flip=True,
               dilation=[1, 2])
    y = add_op(g, "a2", "tanh", [y])
    y = add_op(g, "m", "channel_matmul", [y], units=7)
    y = add_op(g, "f", "flatten", [y])
    g.set_output("logits", add_op(g, "d", "dense", [y], units=5))
    net = Network(g, seeded_weights(g))
    opt = Optimizer("sgd", momentum=0.9)
    rng = np.random.default_rng(0)
    feeds = [(rng.standard_normal((4, 3, 9, 9)).astype(np.float32),
              np.eye(5, dtype=np.float32)[rng.integers(0, 5, 4)]) for _ in range(3)]
    ref = TrainStep(net, [Loss("logits")], opt, backend="reference", dtype="float64")
    want = [ref.run({"x": xb}, {"logits": tb}, lr=0.1).loss for xb, tb in feeds]
    for dtype in ("float32", "float64"):
        step = TrainStep(net, [Loss("logits")], opt, backend="llvm", dtype=dtype, threads=2)
        assert {"~gw_conv", "~gw_dense"} <= {n.op for n in step.runner.graph.nodes} | _lowered(step)
        got = [step.run({"x": xb}, {"logits": tb}, lr=0.1).loss for xb, tb in feeds]
        np.testing.assert_allclose(got, want, **TOL[dtype])
        st, rs = step.state(), ref.state()
        for k in rs:
            _close(st[k], rs[k], dtype, k)


def _lowered(step) -> set[str]:
    from graphconv.llvm.kernel import LOWERINGS

    return {n.op for node in step.runner.graph.nodes if node.op in LOWERINGS for n in LOWERINGS[node.op](node)}
