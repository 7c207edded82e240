"""Normalization: batchnorm and local response normalization."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Init
from ..errors import OpError
from .schema import Attr, Bool, Float, Int, OpDef, ParamSpec, expect_rank, register


@register
class BatchNorm(OpDef):
    name = "batchnorm"
    doc = ("batch normalization over the channels of x [N, C] or [N, C, H, W]: (x - mean)/sqrt(var + eps)·weight "
           "+ bias with the running statistics at inference and the batch's (biased variance) in training; "
           "frozen=true always uses the running statistics, like torchvision's FrozenBatchNorm2d")
    attrs = (
        Attr("eps", Float(min=0.0, min_exclusive=True), 1e-5, "added to the variance"),
        Attr("momentum", Float(min=0.0, max=1.0), 0.1, "running-statistics update rate (PyTorch convention)"),
        Attr("affine", Bool(), True, "learn a per-channel weight and bias"),
        Attr("frozen", Bool(), False, "parameters are not trained and the running statistics are always used"),
    )
    # `frozen` stays on the node: it changes the training-mode computation.
    param_attr_names = ("weight", "init", "bias_init")
    fusion = "broadcast"
    blocked_layout = True

    def resolve(self, attrs, in_types):
        expect_rank(self.name, in_types[0], (4, 2))
        return attrs

    def infer(self, attrs, in_types):
        expect_rank(self.name, in_types[0], (4, 2))
        return in_types[0]

    def params(self, attrs, in_types):
        c = (int(in_types[0].shape[1]),)
        specs = []
        if attrs["affine"]:
            specs += [ParamSpec("weight", c, init=Init("ones")), ParamSpec("bias", c, init=Init("zeros"))]
        return specs + [ParamSpec("running_mean", c, "buffer", Init("zeros")),
                        ParamSpec("running_var", c, "buffer", Init("ones"))]

    def reference(self, attrs, xs, ps, ctx):
        x = xs[0]
        axes = (0, *range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if ctx.training and not attrs.get("frozen", False):
            mean, var = x.mean(axis=axes), x.var(axis=axes)
        else:
            mean, var = ps["running_mean"], ps["running_var"]
        y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + attrs["eps"])
        if attrs["affine"]:
            y = y * ps["weight"].reshape(shape) + ps["bias"].reshape(shape)
        return y.astype(x.dtype, copy=False)

    def gradient(self, node, dy, gb):
        # a training graph only keeps batchnorm nodes that use their running statistics (frozen); the others
        # became bn_train (graphconv.train.autodiff)
        if gb.wants("weight"):
            raise OpError("the weight of a batchnorm that uses its running statistics cannot be trained")
        out = {}
        if gb.wants(0):
            w = [node.params["weight"]] if node.attrs["affine"] else []
            out[0] = gb.op("bn_frozen_grad", [dy, node.params["running_var"], *w], eps=node.attrs["eps"])
        if gb.wants("bias"):
            out["bias"] = gb.op("reduce_sum", [dy], axes=[0, *range(2, dy.type.rank)])
        return out

    def channel_affine(self, attrs, ps):
        scale = 1.0 / np.sqrt(np.asarray(ps["running_var"], np.float64) + attrs["eps"])
        shift = -np.asarray(ps["running_mean"], np.float64) * scale
        if attrs["affine"]:
            w = np.asarray(ps["weight"], np.float64)
            scale, shift = scale * w, shift * w + np.asarray(ps["bias"], np.float64)
        return scale, shift

    def to_onnx(self, node, e):
        # inference: the running statistics. ONNX's momentum weighs the old running value (1 - PyTorch's).
        a, ps = node.attrs, node.params
        c = int(node.inputs[0].type.shape[1])
        scale = e.value(ps["weight"]) if a["affine"] else e.const(np.ones(c), "scale")
        bias = e.value(ps["bias"]) if a["affine"] else e.const(np.zeros(c), "bias")
        e.add_node("BatchNormalization", [e.value(node.inputs[0]), scale, bias, e.value(ps["running_mean"]),
                                          e.value(ps["running_var"])], e.out(node),
                   epsilon=a["eps"], momentum=1.0 - a["momentum"])


@register
class Lrn(OpDef):
    name = "lrn"
    doc = ("local response normalization across channels, ONNX LRN semantics: x / (bias + alpha/size·Σx²)^beta "
           "over channels c - floor((size-1)/2) .. c + ceil((size-1)/2) (PyTorch's LocalResponseNorm puts the extra "
           "channel of an even size before c instead)")
    attrs = (
        Attr("size", Int(min=1), 5, "channels in the window"),
        Attr("alpha", Float(min=0.0), 1e-4),
        Attr("beta", Float(), 0.75),
        Attr("bias", Float(min=0.0, min_exclusive=True), 1.0),
    )
    fusion = "opaque"

    def infer(self, attrs, in_types):
        expect_rank(self.name, in_types[0], 4)
        return in_types[0]

    def reference(self, attrs, xs, ps, ctx):
        x, size = xs[0], attrs["size"]
        before = (size - 1) // 2
        sq = np.pad(x * x, ((0, 0), (before, size - 1 - before), (0, 0), (0, 0)))
        total = np.lib.stride_tricks.sliding_window_view(sq, size, axis=1).sum(axis=-1)
        return (x / (attrs["bias"] + attrs["alpha"] / size * total) ** attrs["beta"]).astype(x.dtype, copy=False)

    def gradient(self, node, dy, gb):
        if not gb.wants(0):
            return {}
        return {0: gb.op("lrn_grad", [dy, node.inputs[0]], **node.attrs)}

    def to_onnx(self, node, e):
        a = node.attrs
        if a["size"] % 2 == 0:  # valid ONNX, but onnxruntime's LRN takes odd sizes only: spell it out
            x = e.value(node.inputs[0])
            before = (a["size"] - 1) // 2
            sq = e.add_node("Mul", [x, x])
            sq = e.add_node("Unsqueeze", [sq, e.ints([1], "axes")])  # [N, 1, C, H, W]
            avg = e.add_node("AveragePool", [sq], kernel_shape=[a["size"], 1, 1], count_include_pad=1,
                             pads=[before, 0, 0, a["size"] - 1 - before, 0, 0])
            avg = e.add_node("Squeeze", [avg, e.ints([1], "axes")])
            den = e.add_node("Mul", [avg, e.scalar(a["alpha"], "alpha")])
            den = e.add_node("Add", [den, e.scalar(a["bias"], "bias")])
            den = e.add_node("Pow", [den, e.scalar(a["beta"], "beta")])
            e.add_node("Div", [x, den], e.out(node))
            return
        e.add_node("LRN", [e.value(node.inputs[0])], e.out(node), size=a["size"], alpha=a["alpha"], beta=a["beta"],
                   bias=a["bias"])
