"""Batchnorm in training: the batch statistics, normalization with them, the running-statistics update, and the
gradients (graphconv.train.autodiff rewrites each `batchnorm` that is not frozen into these).

    stats = bn_stats(x)                          # [3, C]: mean, biased variance, unbiased variance
    y     = bn_train(x, stats)                   # with the node's weight and bias (affine)
    rm'   = bn_running(running_mean, stats, stat=mean)   # (1 - momentum)·rm + momentum·mean
    rv'   = bn_running(running_var, stats, stat=var)     # ... with the unbiased variance, as PyTorch

x is [N, C] or [N, C, H, W]; statistics are over every axis but the channels. The gradient of bn_train with
respect to x includes the path through the statistics, so bn_stats needs no rule of its own.
"""

from __future__ import annotations

import numpy as np

from ...errors import OpError
from ...ir.graph import Init, TensorType
from ..schema import Attr, Bool, Enum, Float, OpDef, ParamSpec, register

EPS = Attr("eps", Float(min=0.0, min_exclusive=True), 1e-5, "added to the variance")


def _axes(x) -> tuple[int, ...]:
    return (0, *range(2, x.ndim))


def _shape(x) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.ndim - 2)


def _normalized(x: np.ndarray, stats: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """x̂ and 1/σ (per channel)."""
    inv = 1.0 / np.sqrt(stats[1] + eps)
    return (x - stats[0].reshape(_shape(x))) * inv.reshape(_shape(x)), inv


def _onnx_channel(e, name: str, rank: int) -> str:
    """ONNX: a [C] tensor reshaped to broadcast over [N, C, ...]."""
    return e.add_node("Reshape", [name, e.ints([1, -1] + [1] * (rank - 2), "shape")])


def _onnx_row(e, stats: str, k: int) -> str:
    """ONNX: row k of a [3, C] statistics tensor, as [C]."""
    return e.add_node("Gather", [stats, e.const(np.array(k, np.int64), "row")], axis=0)


def _onnx_axes(e, rank: int) -> str:
    return e.ints([0, *range(2, rank)], "axes")


def _check_x(op: str, t: TensorType) -> None:
    if t.rank not in (2, 4):
        raise OpError(f"{op} expects [N, C] or [N, C, H, W], got {t}")


def _check_stats(op: str, x: TensorType, stats: TensorType, arg: int) -> None:
    if tuple(stats.shape) != (3, x.shape[1]):
        raise OpError(f"{op}: statistics {stats} do not fit {x}; expected [3, {x.shape[1]}]", arg=arg)


@register
class BnStats(OpDef):
    name = "bn_stats"
    training_only = True
    doc = "per-channel batch statistics [3, C]: mean, biased variance (normalization), unbiased variance (running)"
    fusion = "reduction"

    def infer(self, attrs, in_types):
        x = in_types[0]
        _check_x(self.name, x)
        return TensorType((3, x.shape[1]), x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        x = xs[0]
        axes = _axes(x)
        m = x.size // x.shape[1]
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        return np.stack([mean, var, var * (m / max(m - 1, 1))]).astype(x.dtype, copy=False)

    def to_onnx(self, node, e):
        x = e.value(node.inputs[0])
        rank = node.inputs[0].type.rank
        mean = e.add_node("ReduceMean", [x, _onnx_axes(e, rank)], keepdims=1)
        d = e.add_node("Sub", [x, mean])
        var = e.add_node("ReduceMean", [e.add_node("Mul", [d, d]), _onnx_axes(e, rank)], keepdims=0)
        # m/(m-1) from the run's shape: m = numel / C
        numel = e.add_node("Cast", [e.add_node("Size", [x])], to=e.elem_type)
        m = e.add_node("Div", [numel, e.scalar(float(node.inputs[0].type.shape[1]))])
        corr = e.add_node("Div", [m, e.add_node("Max", [e.add_node("Sub", [m, e.scalar(1.0)]), e.scalar(1.0)])])
        flat = e.add_node("Reshape", [mean, e.ints([-1], "shape")])
        rows = [e.add_node("Unsqueeze", [r, e.ints([0], "axes")]) for r in (flat, var, e.add_node("Mul", [var, corr]))]
        e.add_node("Concat", rows, e.out(node), axis=0)


@register
class BnTrain(OpDef):
    name = "bn_train"
    training_only = True
    doc = "batchnorm with the batch's statistics: (x - mean)/sqrt(var + eps)·weight + bias"
    inputs = ("x", "stats")
    attrs = (EPS, Attr("affine", Bool(), True))
    fusion = "opaque"

    def infer(self, attrs, in_types):
        x, stats = in_types
        _check_x(self.name, x)
        _check_stats(self.name, x, stats, 1)
        return x

    def params(self, attrs, in_types):
        c = (int(in_types[0].shape[1]),)
        if not attrs["affine"]:
            return []
        return [ParamSpec("weight", c, init=Init("ones")), ParamSpec("bias", c, init=Init("zeros"))]

    def reference(self, attrs, xs, ps, ctx):
        x, stats = xs
        y, _ = _normalized(x, stats, attrs["eps"])
        if attrs["affine"]:
            y = y * ps["weight"].reshape(_shape(x)) + ps["bias"].reshape(_shape(x))
        return y.astype(x.dtype, copy=False)

    def gradient(self, node, dy, gb):
        x, stats = node.inputs
        out = {}
        if gb.wants(0):
            w = [node.params["weight"]] if node.attrs["affine"] else []
            out[0] = gb.op("bn_grad_input", [dy, x, stats, *w], eps=node.attrs["eps"])
        if gb.wants("weight"):
            out["weight"] = gb.op("bn_grad_weight", [dy, x, stats], eps=node.attrs["eps"])
        if gb.wants("bias"):
            out["bias"] = gb.op("reduce_sum", [dy], axes=list(_axes_of(x.type)))
        return out

    def to_onnx(self, node, e):
        x, stats = (e.value(v) for v in node.inputs)
        rank = node.inputs[0].type.rank
        xhat = _onnx_xhat(e, x, stats, node.attrs["eps"], rank)
        if node.attrs["affine"]:
            xhat = e.add_node("Mul", [xhat, _onnx_channel(e, e.value(node.params["weight"]), rank)])
            xhat = e.add_node("Add", [xhat, _onnx_channel(e, e.value(node.params["bias"]), rank)])
        e.add_node("Identity", [xhat], e.out(node))


def _axes_of(t: TensorType) -> tuple[int, ...]:
    return (0, *range(2, t.rank))


def _onnx_inv_std(e, stats: str, eps: float) -> str:
    return e.add_node("Reciprocal", [e.add_node("Sqrt", [e.add_node("Add", [_onnx_row(e, stats, 1),
                                                                             e.scalar(eps, "eps")])])])


def _onnx_xhat(e, x: str, stats: str, eps: float, rank: int) -> str:
    mean = _onnx_channel(e, _onnx_row(e, stats, 0), rank)
    return e.add_node("Mul", [e.add_node("Sub", [x, mean]), _onnx_channel(e, _onnx_inv_std(e, stats, eps), rank)])


@register
class BnRunning(OpDef):
    name = "bn_running"
    training_only = True
    doc = "a running statistic updated from the batch's: (1 - momentum)·running + momentum·batch (PyTorch)"
    inputs = ("running", "stats")
    attrs = (Attr("stat", Enum("mean", "var")), Attr("momentum", Float(min=0.0, max=1.0), 0.1))

    def infer(self, attrs, in_types):
        r, stats = in_types
        if r.rank != 1 or tuple(stats.shape) != (3, r.shape[0]):
            raise OpError(f"bn_running: {r} and statistics {stats} do not fit")
        return r

    def reference(self, attrs, xs, ps, ctx):
        r, stats = xs
        batch = stats[0] if attrs["stat"] == "mean" else stats[2]
        m = attrs["momentum"]
        return ((1.0 - m) * r + m * batch).astype(r.dtype, copy=False)

    def to_onnx(self, node, e):
        r, stats = (e.value(v) for v in node.inputs)
        m = node.attrs["momentum"]
        batch = _onnx_row(e, stats, 0 if node.attrs["stat"] == "mean" else 2)
        e.add_node("Add", [e.add_node("Mul", [r, e.scalar(1.0 - m)]), e.add_node("Mul", [batch, e.scalar(m)])],
                   e.out(node))


@register
class BnGradInput(OpDef):
    name = "bn_grad_input"
    training_only = True
    doc = ("gradient of bn_train with respect to x, through the batch statistics: "
           "w/σ·(dy - mean(dy) - x̂·mean(dy·x̂)); the weight is the optional fourth input")
    inputs = ("dy", "x", "stats", "weight")
    variadic = True
    min_inputs = 3
    attrs = (EPS,)

    def infer(self, attrs, in_types):
        if len(in_types) > 4:
            raise OpError("bn_grad_input takes dy, x, stats and an optional weight")
        dy, x, stats = in_types[:3]
        _check_x(self.name, x)
        _check_stats(self.name, x, stats, 2)
        if tuple(dy.shape) != tuple(x.shape):
            raise OpError(f"bn_grad_input: dy {dy} does not fit x {x}")
        return x

    def reference(self, attrs, xs, ps, ctx):
        dy, x, stats = xs[:3]
        xhat, inv = _normalized(x, stats, attrs["eps"])
        axes, shape = _axes(x), _shape(x)
        scale = inv if len(xs) == 3 else inv * xs[3]
        g = dy - dy.mean(axis=axes).reshape(shape) - xhat * (dy * xhat).mean(axis=axes).reshape(shape)
        return (g * scale.reshape(shape)).astype(x.dtype, copy=False)

    def to_onnx(self, node, e):
        dy, x, stats = (e.value(v) for v in node.inputs[:3])
        rank = node.inputs[1].type.rank
        axes = _onnx_axes(e, rank)
        xhat = _onnx_xhat(e, x, stats, node.attrs["eps"], rank)
        m1 = e.add_node("ReduceMean", [dy, axes], keepdims=1)
        m2 = e.add_node("ReduceMean", [e.add_node("Mul", [dy, xhat]), axes], keepdims=1)
        g = e.add_node("Sub", [e.add_node("Sub", [dy, m1]), e.add_node("Mul", [xhat, m2])])
        scale = _onnx_inv_std(e, stats, node.attrs["eps"])
        if len(node.inputs) == 4:
            scale = e.add_node("Mul", [scale, e.value(node.inputs[3])])
        e.add_node("Mul", [g, _onnx_channel(e, scale, rank)], e.out(node))


@register
class BnGradWeight(OpDef):
    name = "bn_grad_weight"
    training_only = True
    doc = "gradient of bn_train with respect to its weight: Σ dy·x̂ per channel"
    inputs = ("dy", "x", "stats")
    attrs = (EPS,)
    fusion = "reduction"

    def infer(self, attrs, in_types):
        dy, x, stats = in_types
        _check_x(self.name, x)
        _check_stats(self.name, x, stats, 2)
        return TensorType((x.shape[1],), x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        dy, x, stats = xs
        xhat, _ = _normalized(x, stats, attrs["eps"])
        return (dy * xhat).sum(axis=_axes(x)).astype(x.dtype, copy=False)

    def to_onnx(self, node, e):
        dy, x, stats = (e.value(v) for v in node.inputs)
        rank = node.inputs[1].type.rank
        xhat = _onnx_xhat(e, x, stats, node.attrs["eps"], rank)
        e.add_node("ReduceSum", [e.add_node("Mul", [dy, xhat]), _onnx_axes(e, rank)], e.out(node), keepdims=0)


@register
class BnFrozenGrad(OpDef):
    name = "bn_frozen_grad"
    training_only = True
    doc = ("gradient of a batchnorm that uses its running statistics (frozen, or inference): dy·w/sqrt(var + eps); "
           "the weight is the optional third input")
    inputs = ("dy", "running_var", "weight")
    variadic = True
    min_inputs = 2
    attrs = (EPS,)

    def infer(self, attrs, in_types):
        dy = in_types[0]
        _check_x(self.name, dy)
        if len(in_types) > 3 or any(tuple(t.shape) != (dy.shape[1],) for t in in_types[1:]):
            raise OpError(f"bn_frozen_grad: per-channel inputs do not fit {dy}")
        return dy

    def reference(self, attrs, xs, ps, ctx):
        dy = xs[0]
        scale = 1.0 / np.sqrt(xs[1] + attrs["eps"])
        if len(xs) == 3:
            scale = scale * xs[2]
        return (dy * scale.reshape(_shape(dy))).astype(dy.dtype, copy=False)

    def to_onnx(self, node, e):
        rank = node.inputs[0].type.rank
        scale = e.add_node("Reciprocal", [e.add_node("Sqrt", [e.add_node("Add", [e.value(node.inputs[1]),
                                                                                  e.scalar(node.attrs["eps"])])])])
        if len(node.inputs) == 3:
            scale = e.add_node("Mul", [scale, e.value(node.inputs[2])])
        e.add_node("Mul", [e.value(node.inputs[0]), _onnx_channel(e, scale, rank)], e.out(node))
