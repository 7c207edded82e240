"""The LLVM kernels of the input gradients (graphconv/llvm/kernels/train_conv_input.py): conv2d_grad_input,
conv_transpose2d_grad_input and dense_grad_input against the float64 reference, over sizes, strides, asymmetric
paddings, dilations, groups (depthwise too), flip, odd channel counts, rows no window reaches and 1×1 maps; batch 1
and 7, threads 1 and 2, float32 and float64; the weight as a parameter, as a plain input and as a state parameter a
training step updates in place (the kernel packs what it reads from the weight itself, every run); every tile shape
the planner can choose and the row engine of narrow groups (forced); results the same bit for bit from run to run,
for every thread count and batch size."""

from __future__ import annotations

import types

import numpy as np
import pytest

import graphconv
from graphconv.ir.graph import Graph, Init, TensorType
from graphconv.llvm.kernels import train_conv_input as gi
from graphconv.llvm.train import LLVMRunner
from graphconv.network import Network
from graphconv.ops.grad.conv import _extent
from graphconv.reference.executor import run_graph

from .helpers import add_op

TOL = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-10)}


def _conv2d_gi(C, O, hw, k, *, stride=1, padding=0, dilation=1, groups=1, flip=False, weight="param",
               extra=(0, 0)) -> tuple[Graph, dict]:
    """dx = conv2d_grad_input(dy, w) for a conv2d of a C-channel hw input; `extra` rows/columns of the padded input
    past the last window (rows no window reaches)."""
    (h, w), (kh, kw) = hw, (k, k) if isinstance(k, int) else k
    s = (stride, stride) if isinstance(stride, int) else tuple(stride)
    d = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    p = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
    oh = (h + p[0] + p[2] - _extent(kh, d[0])) // s[0] + 1
    ow = (w + p[1] + p[3] - _extent(kw, d[1])) // s[1] + 1
    g = Graph("cgi")
    dy = g.add_input("dy", TensorType(("N", O, oh, ow)))
    wt = TensorType((O, C // groups, kh, kw))
    wv = g.add_param("w", wt, "trainable", Init("normal")) if weight == "param" else g.add_input("w", wt)
    g.set_output("dx", add_op(g, "gi", "conv2d_grad_input", [dy, wv], size=(h, w), stride=s, padding=p,
                              dilation=d, groups=groups, flip=flip))
    return g, _weights(g)


def _transpose_gi(C, O, hw, k, *, stride=1, padding=0, dilation=1, groups=1, out_pad=0, weight="param"):
    """dx = conv_transpose2d_grad_input(dy, w): the gradient of a conv_transpose2d of a C-channel hw input to O
    channels (dy its output, `out_pad` rows and columns of output padding)."""
    (h, w), (kh, kw) = hw, (k, k) if isinstance(k, int) else k
    s = (stride, stride) if isinstance(stride, int) else tuple(stride)
    d = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    p = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
    oh = (h - 1) * s[0] + _extent(kh, d[0]) - p[0] - p[2] + out_pad
    ow = (w - 1) * s[1] + _extent(kw, d[1]) - p[1] - p[3] + out_pad
    g = Graph("tgi")
    dy = g.add_input("dy", TensorType(("N", O, oh, ow)))
    wt = TensorType((C, O // groups, kh, kw))
    wv = g.add_param("w", wt, "trainable", Init("normal")) if weight == "param" else g.add_input("w", wt)
    g.set_output("dx", add_op(g, "gi", "conv_transpose2d_grad_input", [dy, wv], size=(h, w), stride=s,
                              padding=p, dilation=d, groups=groups))
    return g, _weights(g)


def _dense_gi(F, U, rest=(), weight="param"):
    g = Graph("dgi")
    dy = g.add_input("dy", TensorType(("N", U, *rest)))
    wt = TensorType((U, F))
    wv = g.add_param("w", wt, "trainable", Init("normal")) if weight == "param" else g.add_input("w", wt)
    g.set_output("dx", add_op(g, "gi", "dense_grad_input", [dy, wv]))
    return g, _weights(g)


def _weights(g: Graph) -> dict:
    rng = np.random.default_rng(7)
    return {name: rng.standard_normal(p.value.type.shape) for name, p in g.params.items()}


def _feed(g: Graph, batch: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(v.type.concrete(batch)) for v in g.inputs}


def _check(g: Graph, weights: dict, *, dtypes=("float32",), threads=(1, 2), batches=(1, 7)) -> None:
    """Every thread count, dtype and batch against the float64 reference; the same bits for every thread count, run
    after run, and sample by sample whatever the batch (the batch's tiles sum each element in the same order)."""
    net = Network(g, weights)
    for dtype in dtypes:
        feeds = [_feed(g, b, 10 + b) for b in batches]
        first: list[np.ndarray] | None = None
        for t in threads:
            model = graphconv.compile(net, backend="llvm", threads=t, opt_level=0, dtype=dtype)
            got = []
            for feed in feeds:
                want = run_graph(g, feed, weights, dtype="float64")["dx"]
                x = {k: v.astype(dtype) for k, v in feed.items()}
                out = model.run(x)["dx"]
                assert out.shape == want.shape
                np.testing.assert_allclose(out, want.astype(dtype), **TOL[dtype],
                                           err_msg=f"{dtype}, threads={t}, batch={len(feed['dy'])}")
                np.testing.assert_array_equal(out, model.run(x)["dx"])  # deterministic
                got.append(out)
            if first is None:
                first = got
            else:
                for a, b in zip(first, got):
                    np.testing.assert_array_equal(a, b)  # the same bits for every thread count
        if "w" not in weights:  # the weight as an input: the same weight in every feed is required below
            continue
        # one sample alone gives the same bits as within the batch
        one = graphconv.compile(net, backend="llvm", threads=1, opt_level=0, dtype=dtype)
        big = feeds[-1]
        for n in (0, len(big["dy"]) - 1):
            alone = one.run({"dy": big["dy"][n:n + 1].astype(dtype)})["dx"]
            np.testing.assert_array_equal(alone[0], first[-1][n])


# -- conv2d_grad_input ---------------------------------------------------------------------------------------------

CONV = {
    # name: (C, O, (H, W), k, attrs)
    "3x3": (5, 7, (9, 9), 3, dict(padding=1)),
    "odd_channels": (17, 33, (7, 10), 3, dict(padding=1)),
    "stride2": (33, 17, (9, 8), 3, dict(stride=2, padding=1)),
    "asym_pad_dil_flip": (3, 5, (11, 6), 3, dict(stride=2, dilation=2, padding=(2, 0, 1, 3), flip=True)),
    "stride_dil_mix": (17, 5, (10, 9), (2, 3), dict(stride=(3, 2), dilation=(2, 3), padding=(1, 2, 0, 1))),
    "uncovered": (5, 3, (10, 11), 3, dict(stride=3)),  # the last rows and columns: no window reaches them
    "big_pad": (3, 5, (5, 4), 1, dict(padding=(2, 1, 0, 3))),  # 1×1 kernel, pads larger than the kernel
    "5x5_valid": (6, 16, (14, 14), 5, {}),  # lenet's c3
    "1x1_stride2": (33, 17, (8, 7), 1, dict(stride=2)),
    "groups": (12, 18, (7, 7), 3, dict(padding=1, groups=3)),
    "depthwise": (17, 17, (9, 8), 3, dict(padding=1, groups=17)),
    "depthwise_s2": (5, 10, (9, 9), 3, dict(stride=2, padding=1, groups=5)),  # 2 per group
    "map_1x1": (33, 40, (1, 1), 3, dict(padding=1)),
    "map_2x2_s2": (16, 32, (2, 2), 3, dict(stride=2, padding=1)),
    "kernel_wider_than_map": (3, 4, (2, 3), 5, dict(padding=2)),
}


@pytest.mark.parametrize("case", list(CONV))
def test_conv2d_grad_input(case):
    C, O, hw, k, attrs = CONV[case]
    g, w = _conv2d_gi(C, O, hw, k, **attrs)
    _check(g, w, dtypes=("float32", "float64") if case in ("stride2", "asym_pad_dil_flip", "map_1x1") else
           ("float32",))


@pytest.mark.parametrize("case", ["3x3", "stride_dil_mix", "depthwise"])
def test_conv2d_grad_input_weight_as_input(case):
    """A weight that is not a parameter (the output of another node, an input) works the same."""
    C, O, hw, k, attrs = CONV[case]
    g, _ = _conv2d_gi(C, O, hw, k, weight="input", **attrs)
    _check(g, {}, dtypes=("float32", "float64"), batches=(1, 3))


# every tile shape: whole maps of S samples (with the batch's remainder), row chunks whose classes a switch picks,
# loops over alike column tiles, several vectors per tile, narrow vectors
PLANS = [
    dict(S=3, B=1), dict(S=2, B=2), dict(S=1, R=3, Tc=2, B=1), dict(S=1, R=2, Tc=4, B=2),
    dict(S=1, R=1, Tc=1, B=1), dict(S=1, R=4, Tc=3, B=1, L=8),
]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
def test_forced_plans(plan, monkeypatch):
    monkeypatch.setattr(gi, "PLAN_OVERRIDE", dict(plan))
    if plan.get("S", 1) > 1:
        g, w = _conv2d_gi(20, 24, (2, 3), 3, stride=(1, 2), padding=(1, 0, 1, 1))
    else:
        g, w = _conv2d_gi(20, 9, (11, 14), 3, stride=(2, 1), padding=1, dilation=(1, 2))
    _check(g, w, batches=(1, 7))


ROWS = {
    # vectors along the rows (groups of few channels): forced on every kind of geometry, both ops
    "conv_flip_dil_asym": ("conv", 6, 4, (9, 37), 3, dict(dilation=(2, 3), padding=(2, 1, 0, 3), flip=True, groups=2)),
    "conv_stride3_uncovered": ("conv", 3, 6, (11, 40), 3, dict(stride=3, groups=3)),
    "conv_stride2_wide": ("conv", 4, 4, (3, 300), (1, 3), dict(stride=(1, 2), padding=1, groups=4)),  # tile loops
    "conv_5_channels": ("conv", 5, 7, (6, 21), 3, dict(stride=(2, 1), padding=1)),
    "transpose": ("transpose", 4, 6, (5, 19), 3, dict(stride=2, padding=1, groups=2, out_pad=1)),
    "transpose_dw_dil": ("transpose", 3, 3, (7, 20), 2, dict(stride=(1, 3), dilation=2, groups=3)),
}


@pytest.mark.parametrize("case", list(ROWS))
def test_rows_engine(case, monkeypatch):
    monkeypatch.setattr(gi, "PLAN_OVERRIDE", {"rows": True})
    kind, C, O, hw, k, attrs = ROWS[case]
    g, w = (_conv2d_gi if kind == "conv" else _transpose_gi)(C, O, hw, k, **attrs)
    _check(g, w, dtypes=("float32", "float64") if case == "conv_flip_dil_asym" else ("float32",), batches=(1, 3))


def test_depthwise_takes_the_rows_engine():
    """Vectors along the rows for groups of at most a quarter vector of channels (depthwise: 4x faster measured),
    channel vectors otherwise."""
    ax = gi._Axis(56, 56, 3, 1, 1, 1, True)

    def geo(cg):
        return gi._Geo(4, cg, cg, 56, 56, 56, 56, 3, 3, ax, ax, cg * cg * 9, cg * 9, 9, False)

    assert gi._use_rows(geo(1), 16) and gi._use_rows(geo(4), 16)
    assert not gi._use_rows(geo(8), 16) and not gi._use_rows(geo(4), 8)  # float64: vectors of 8


def test_column_tiles_in_loops(monkeypatch):
    """A wide map: runs of interior column tiles are loops (stride 2 in both axes: tiles of an even width)."""
    monkeypatch.setattr(gi, "PLAN_OVERRIDE", dict(R=1, Tc=4, B=1))
    g, w = _conv2d_gi(16, 8, (6, 41), 3, stride=2, padding=1)
    geo_cols = gi._Axis(41, 21, 3, 2, 1, 1, True)
    assert any(run > 1 for _, _, run, _ in gi._col_groups(geo_cols, 41, 4))
    _check(g, w, batches=(2,))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(64, 64, 8, 3, 1), (64, 128, 8, 3, 2), (128, 256, 4, 1, 2), (256, 256, 2, 3, 1),
                                   (512, 512, 1, 3, 1)], ids=lambda s: "x".join(map(str, s)))
def test_resnet_shapes(shape):
    C, O, h, k, s = shape
    g, w = _conv2d_gi(C, O, (h, h), k, stride=s, padding=k // 2)
    w["w"] /= np.sqrt(O * k * k)  # as initialized: dx of unit scale (float32 sums of 4608 terms stay in tolerance)
    _check(g, w, dtypes=("float32", "float64"), batches=(1, 32))


# -- conv_transpose2d_grad_input ---------------------------------------------------------------------------------

TRANSPOSE = {
    "3x3": (5, 7, (6, 7), 3, dict(padding=1)),
    "stride2_out_pad": (17, 6, (5, 4), 3, dict(stride=2, padding=1, out_pad=1)),
    "asym_dil_groups": (6, 9, (5, 6), (3, 2), dict(stride=(2, 3), dilation=(2, 1), padding=(0, 1, 2, 0), groups=3)),
    "depthwise": (8, 8, (6, 5), 4, dict(stride=2, padding=1, groups=8)),
    "out_pad_past_stride": (3, 4, (4, 4), 3, dict(stride=1, dilation=3, out_pad=2)),
    "map_1x1": (33, 16, (1, 1), 2, dict(stride=2)),
}


@pytest.mark.parametrize("case", list(TRANSPOSE))
def test_conv_transpose2d_grad_input(case):
    C, O, hw, k, attrs = TRANSPOSE[case]
    g, w = _transpose_gi(C, O, hw, k, **attrs)
    _check(g, w, dtypes=("float32", "float64") if case == "stride2_out_pad" else ("float32",))


def test_conv_transpose2d_grad_input_weight_as_input():
    C, O, hw, k, attrs = TRANSPOSE["asym_dil_groups"]
    g, _ = _transpose_gi(C, O, hw, k, weight="input", **attrs)
    _check(g, {}, batches=(2,))


# -- dense_grad_input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("F,U,rest", [(400, 120, ()), (33, 17, ()), (5, 3, ()), (84, 10, ()), (17, 6, (3, 5)),
                                      (32, 33, (7,)), (3, 40, (1, 1))], ids=str)
def test_dense_grad_input(F, U, rest):
    g, w = _dense_gi(F, U, rest)
    _check(g, w, dtypes=("float32", "float64") if F == 33 else ("float32",))


def test_dense_grad_input_weight_as_input():
    g, _ = _dense_gi(19, 7, weight="input")
    _check(g, {}, batches=(3,))


# -- a state weight: updated every step, re-packed every run ------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d", "dense"])
def test_state_weight_updated_every_step(op, dtype):
    """dx = <op>_grad_input(dy, w); w' = sgd_step(w, gw, lr) in place: each step's dx reads the weight the previous
    step wrote (the kernel packs its blocks from the weight itself on every run: no re-packed copy in the blob)."""
    if op == "conv2d":
        g, _ = _conv2d_gi(17, 6, (7, 6), 3, stride=2, padding=1, flip=True)
    elif op == "conv_transpose2d":
        g, _ = _transpose_gi(5, 17, (4, 5), 3, stride=2, padding=1)
    else:
        g, _ = _dense_gi(33, 7)
    w = g.values["w"]
    gw = g.add_input("gw", TensorType(tuple(w.type.shape)))
    lr = g.add_input("lr", TensorType((1,)))
    g.set_output("update:w", add_op(g, "w@new", "sgd_step", [w, gw, lr]))
    state = _weights(g)
    runner = LLVMRunner(types.SimpleNamespace(graph=g, updates={"w": "update:w"}), state, dtype, threads=2)
    assert runner.layout.repacked == [] and runner.layout.state == {"w": "update:w"}
    weights = {k: np.asarray(v, np.float64) for k, v in state.items()}
    for k in range(3):
        rng = np.random.default_rng(k)
        feed = {"dy": rng.standard_normal(g.inputs[0].type.concrete(3)), "gw": rng.standard_normal(w.type.shape),
                "lr": np.array([0.5])}
        want = run_graph(g, feed, weights, dtype="float64")
        got = runner.run({name: v.astype(dtype) for name, v in feed.items()})
        np.testing.assert_allclose(got["dx"], want["dx"], **TOL[dtype])
        weights["w"] = want["update:w"]
        np.testing.assert_allclose(runner.get_state()["w"], weights["w"], **TOL[dtype])


# -- the planner -----------------------------------------------------------------------------------------------------

def test_plans_fit_the_registers_and_batch_small_maps():
    """ResNet-18 at 32×32: tiles of whole maps of several samples for the 1×1 and 2×2 maps, several vectors per tile
    (a broadcast feeding one FMA is slow); every tile's accumulators and weights fit 32 registers."""
    def plan(C, O, h, k, s, vw=16, fb=4):
        oh = (h + 2 * (k // 2) - k) // s + 1
        ax = gi._Axis(h, oh, k, s, 1, k // 2, True)
        return gi._Geo(1, C, O, h, h, oh, oh, k, k, ax, ax, 0, C * k * k, k * k, False), gi._choose(
            gi._Geo(1, C, O, h, h, oh, oh, k, k, ax, ax, 0, C * k * k, k * k, False), vw, fb)

    for C, O, h, k, s in [(64, 64, 8, 3, 1), (128, 128, 4, 3, 1), (256, 256, 2, 3, 1), (512, 512, 1, 3, 1),
                          (256, 512, 2, 3, 2), (64, 128, 8, 1, 2)]:
        geo, p = plan(C, O, h, k, s)
        assert p.L == 16 and p.NV % p.B == 0
        if h * h <= 4:
            assert p.S > 1, (C, O, h, p)
        if h == 1:
            assert p.B > 1, p
    _, p = plan(6, 16, 14, 5, 1)  # lenet's c3: 6 channels in vectors of 8
    assert p.L == 8
    _, p = plan(64, 64, 8, 3, 1, vw=8, fb=8)  # float64
    assert p.L == 8
