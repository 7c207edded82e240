"""Gradient of upsample (graphconv/ops/resize.py). Both modes are separable linear maps, y = A_h · x · A_wᵀ per
channel (`interpolation_matrix`), so dx = A_hᵀ · dy · A_w: overlapping reads (bilinear) and repeated pixels
(nearest) add up."""

from __future__ import annotations

import numpy as np

from ...errors import OpError
from ...ir.graph import TensorType
from ..resize import interpolation_matrix
from ..schema import Attr, Bool, Enum, Ints, OpDef, expect_rank, register


@register
class UpsampleGrad(OpDef):
    name = "upsample_grad"
    training_only = True
    doc = "gradient of upsample with respect to x: A_hᵀ · dy · A_w with the interpolation matrices of each axis"
    inputs = ("dy",)
    attrs = (Attr("input_size", Ints(2), doc="[H, W] of the upsampled input: the size of the gradient"),
             Attr("mode", Enum("nearest", "bilinear"), "nearest"),
             Attr("align_corners", Bool(), False, "bilinear only: the corner pixels of input and output align"))
    fusion = "opaque"

    def check_attr_combination(self, attrs):
        if attrs["align_corners"] and attrs["mode"] != "bilinear":
            raise OpError("upsample_grad: align_corners only applies to mode=bilinear", attr="align_corners")

    def infer(self, attrs, in_types):
        dy = in_types[0]
        expect_rank(self.name, dy, 4)
        return TensorType((dy.shape[0], dy.shape[1], *attrs["input_size"]), dy.dtype)

    def matrices(self, attrs, out_hw) -> tuple[np.ndarray, np.ndarray]:
        """A_hᵀ [H, OH] and A_w [OW, W] (float64)."""
        (h, w), (oh, ow) = attrs["input_size"], out_hw
        return (interpolation_matrix(h, int(oh), attrs["mode"], attrs["align_corners"]).T,
                interpolation_matrix(w, int(ow), attrs["mode"], attrs["align_corners"]))

    def reference(self, attrs, xs, ps, ctx):
        dy = xs[0]
        a_ht, a_w = (m.astype(dy.dtype) for m in self.matrices(attrs, dy.shape[2:]))
        return np.matmul(np.matmul(a_ht, dy), a_w)  # [H, OH] @ [N, C, OH, OW] @ [OW, W], broadcast over N, C

    def to_onnx(self, node, e):
        a_ht, a_w = self.matrices(node.attrs, node.inputs[0].type.shape[2:])
        rows = e.add_node("MatMul", [e.const(a_ht, "a_h_t"), e.value(node.inputs[0])])
        e.add_node("MatMul", [rows, e.const(a_w, "a_w")], e.out(node))
