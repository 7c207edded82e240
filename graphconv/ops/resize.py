"""Spatial resizing of x [N, C, H, W]."""

from __future__ import annotations

import numpy as np

from ..errors import OpError
from ..ir.graph import TensorType
from .schema import Attr, Bool, Enum, Ints, OpDef, Window, expect_rank, register


def _nearest(in_n: int, out_n: int) -> np.ndarray:
    """PyTorch mode='nearest' (ONNX asymmetric + floor): source index floor(i·in/out), in exact integers."""
    return np.arange(out_n) * in_n // out_n


def _linear(in_n: int, out_n: int, align_corners: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and the weight of i1 for each output position along one axis, as PyTorch computes
    them: align_corners maps the corner pixel centres onto each other; otherwise half-pixel centres, with
    coordinates clamped to the input."""
    dst = np.arange(out_n, dtype=np.float64)
    if align_corners:
        src = dst * ((in_n - 1) / (out_n - 1)) if out_n > 1 else np.zeros(out_n)
    else:
        src = np.maximum((dst + 0.5) * (in_n / out_n) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_n - 1)
    i1 = np.minimum(i0 + 1, in_n - 1)
    return i0, i1, src - i0


def interpolation_matrix(in_n: int, out_n: int, mode: str, align_corners: bool = False) -> np.ndarray:
    """The linear map [out_n, in_n] (float64) that upsample applies along one axis: y = A_h · x · A_wᵀ per
    channel. Built from the same source indices and weights as the reference, so its transpose is the gradient."""
    a = np.zeros((out_n, in_n))
    rows = np.arange(out_n)
    if mode == "nearest":
        a[rows, _nearest(in_n, out_n)] = 1.0
        return a
    i0, i1, f = _linear(in_n, out_n, align_corners)
    np.add.at(a, (rows, i0), 1.0 - f)  # add: at the clamped edge i0 == i1 and both weights land on one pixel
    np.add.at(a, (rows, i1), f)
    return a


@register
class Upsample(OpDef):
    name = "upsample"
    doc = ("resize H and W by an integer `scale` or to a `size`, as PyTorch interpolate: nearest takes pixel "
           "floor(i·in/out); bilinear uses half-pixel centres (align_corners=false) or maps the corners "
           "(align_corners=true). After resolve both size (output H, W) and scale (out/in per axis) are set.")
    attrs = (
        Attr("scale", Ints(2), None, "integer factor: s or [sh, sw]", optional=True),
        Attr("size", Ints(2), None, "output size: s or [h, w]", optional=True),
        Attr("mode", Enum("nearest", "bilinear"), "nearest"),
        Attr("align_corners", Bool(), False, "bilinear only: align the corner pixels of input and output"),
    )
    fusion = "injective"

    def check_attr_combination(self, attrs):
        if (attrs["scale"] is None) == (attrs["size"] is None):
            raise OpError("upsample: give exactly one of scale and size",
                          attr="size" if attrs["scale"] is not None else "scale")
        if attrs["align_corners"] and attrs["mode"] != "bilinear":
            raise OpError("upsample: align_corners only applies to mode=bilinear", attr="align_corners")

    def resolve(self, attrs, in_types):
        x = in_types[0]
        expect_rank(self.name, x, 4)
        h, w = int(x.shape[2]), int(x.shape[3])
        a = dict(attrs)
        if a["scale"] is not None:
            a["size"] = (h * a["scale"][0], w * a["scale"][1])
        else:
            a["scale"] = (a["size"][0] / h, a["size"][1] / w)
        return a

    def infer(self, attrs, in_types):
        x = in_types[0]
        expect_rank(self.name, x, 4)
        return TensorType((x.shape[0], x.shape[1], *attrs["size"]), x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        x = xs[0]
        (h, w), (oh, ow) = x.shape[2:], attrs["size"]
        if attrs["mode"] == "nearest":
            return x[:, :, _nearest(h, oh)][:, :, :, _nearest(w, ow)]
        r0, r1, fr = _linear(h, oh, attrs["align_corners"])
        c0, c1, fc = _linear(w, ow, attrs["align_corners"])
        fr, fc = fr.reshape(-1, 1), fc.reshape(1, -1)
        rows = x[:, :, r0] * (1 - fr) + x[:, :, r1] * fr
        y = rows[:, :, :, c0] * (1 - fc) + rows[:, :, :, c1] * fc
        return y.astype(x.dtype, copy=False)

    def gradient(self, node, dy, gb):
        if not gb.wants(0):
            return {}
        a, x = node.attrs, node.inputs[0]
        return {0: gb.op("upsample_grad", [dy], input_size=(int(x.type.shape[2]), int(x.type.shape[3])),
                         mode=a["mode"], align_corners=a["align_corners"])}

    def to_onnx(self, node, e):
        a = node.attrs
        sizes = e.ints(a["size"], "sizes")
        if a["mode"] == "nearest":  # PyTorch 'nearest': source floor(i·in/out)
            kw = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        else:
            kw = dict(mode="linear",
                      coordinate_transformation_mode="align_corners" if a["align_corners"] else "half_pixel")
        e.add_node("Resize", [e.value(node.inputs[0]), "", "", sizes], e.out(node), axes=[2, 3], **kw)

    def window(self, attrs):
        """Each output pixel reads 1 (nearest) or 2 (bilinear) input pixels per axis on a grid `scale` times finer."""
        k = 1 if attrs["mode"] == "nearest" else 2
        return Window((k, k), (1, 1), scale=tuple(float(s) for s in attrs["scale"]))
