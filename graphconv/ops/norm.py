"""Normalization: batchnorm and local response normalization."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Init
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
