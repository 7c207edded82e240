"""Elementwise activations. `Unary` is the shared base: shape and dtype pass through, the reference is one numpy
expression."""

from __future__ import annotations

import numpy as np

from .schema import OpDef, register


class Unary(OpDef):
    fusion = "elementwise"

    def infer(self, attrs, in_types):
        return in_types[0]

    def reference(self, attrs, xs, ps, ctx):
        return np.asarray(self.fn(xs[0], attrs), dtype=xs[0].dtype)

    def fn(self, x: np.ndarray, attrs: dict) -> np.ndarray:
        raise NotImplementedError


@register
class Relu(Unary):
    name = "relu"
    doc = "max(x, 0)"

    def fn(self, x, attrs):
        return np.maximum(x, 0)
