"""lower_pooling: pooling ops become the few primitives a backend implements (-O3).

A backend should not need four flavours of pooling with PyTorch's divisor rules baked into each. This pass rewrites
them into ops with one job each:

- `avg_pool2d` → `window_reduce(sum)` times a fixed per-position `scale` [OH, OW] = 1/divisor. The divisor is taken
  from `AvgPool2d.divisor`, the very array the avg_pool2d reference divides by, so padding, count_include_pad and
  the ceil_mode overhang (counted in the padding but never beyond it) are reproduced exactly; the window sum reads
  zeros for the padding and the overhang, as the reference's sum does.
  When the divisor is the same at every position (no padding, or count_include_pad with every window inside the
  padded input: LeNet-5's and GoogLeNet's aux pools), the node becomes a depthwise `conv2d` instead, with a fixed
  weight 1/d (d = kh·kw there) and no bias; a ceil_mode overhang is turned into extra bottom/right zero padding.
  A uniform divisor needs no per-position scale, and a depthwise convolution is the op a backend optimizes anyway:
  its conv code runs it, it carries a fused epilogue, and later conv passes see it. A non-uniform divisor would
  need a per-position weight, which a convolution cannot express, so those stay window sums with a scale.
- `max_pool2d` → `window_reduce(max)` (padding and the overhang never win, as before; dilation is kept).
- `global_avg_pool` → `reduce_mean` over (2, 3) with keepdims: the same mean, as the generic reduction a backend
  (and ONNX ReduceMean) has.
- `global_max_pool` stays: there is no reduce_max primitive yet, and a window_reduce(max) with the whole input as
  its kernel would turn a full reduction into a one-window sliding-window op, the slower path for a backend.
- `lp_pool2d` stays: (Σ|x|^p)^(1/p) is neither a window sum nor a maximum; lowering it would need elementwise
  abs/pow ops the IR does not have, and no zoo network uses it.

The replacement keeps the node's name (so `layer.pool` stays `layer.pool` and the scale is `layer.pool.scale`), its
inputs (an epilogue fused by fuse_activation comes along: window_reduce and conv2d are `out_fusable` like the pools)
and its place in the node order; every reader of the old output reads the new one. New parameters are `fixed`,
their data float64 (rounded to the run dtype by the executor, like values written in a spec). A second run finds
nothing to do.

Inference only, to be safe although the rewrite is exact in training too (no statistics, no randomness): the
training path differentiates the ops it knows, and window_reduce/reduce_mean have no gradient rules yet; a
training graph keeps its pools.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ..ops import REGISTRY, epilogue
from ..ops.build import emit, plan
from .base import Pass, PassResult, Program, replace_uses

# what fired -> (singular, plural) phrase of the pass log, in log order
PHRASES = {
    "avg_sum": ("average pool lowered to a window sum", "average pools lowered to window sums"),
    "avg_conv": ("average pool lowered to a depthwise convolution", "average pools lowered to depthwise convolutions"),
    "max": ("max pool lowered to a window maximum", "max pools lowered to window maxima"),
    "global_avg": ("global average pool lowered to a mean", "global average pools lowered to means"),
}


class LowerPooling(Pass):
    name = "lower_pooling"
    summary = ("lower pooling for backends: average pools to window sums with a per-position scale (or depthwise "
               "convolutions), max pools to window maxima, global average pooling to a mean")
    inference_only = True

    def run(self, program: Program) -> PassResult:
        g = program.graph
        fired = dict.fromkeys(PHRASES, 0)
        for i in range(len(g.nodes)):
            node = g.nodes[i]
            lowered = self._lowering(node)
            if lowered is None:
                continue
            what, op_name, given = lowered
            g.nodes[i] = _replace(g, node, op_name, given)
            fired[what] += 1
        result = PassResult()
        for what, n in fired.items():
            if n:
                result.count(PHRASES[what][n != 1], n)
        return result

    @staticmethod
    def _lowering(node: Node) -> tuple[str, str, dict] | None:
        """(what fired, the new op, its attributes) for a node this pass rewrites, else None."""
        a = epilogue.own_attrs(node.attrs)
        if node.op == "global_avg_pool":
            return "global_avg", "reduce_mean", {}
        if node.op == "max_pool2d":
            return "max", "window_reduce", dict(reduce="max", kernel=a["kernel"], stride=a["stride"],
                                                padding=a["padding"], dilation=a["dilation"],
                                                ceil_mode=a["ceil_mode"])
        if node.op != "avg_pool2d":
            return None
        avg = REGISTRY["avg_pool2d"]
        x = node.inputs[0]
        c, h, w = (int(d) for d in x.type.shape[1:])
        divisor = avg.divisor(a, h, w)
        if np.all(divisor == divisor.flat[0]):
            kh, kw = a["kernel"]
            weight = np.full((c, 1, kh, kw), 1.0 / float(divisor.flat[0]))
            return "avg_conv", "conv2d", dict(out_channels=c, kernel=a["kernel"], stride=a["stride"],
                                              padding=avg.overhang_pads(a, h, w), groups=c, bias=False,
                                              weight=weight)
        return "avg_sum", "window_reduce", dict(reduce="sum", kernel=a["kernel"], stride=a["stride"],
                                                padding=a["padding"], ceil_mode=a["ceil_mode"],
                                                scale=1.0 / divisor.astype(np.float64))


def _replace(g: Graph, old: Node, op_name: str, given: dict) -> Node:
    """A node of `op_name` built from `given` that takes `old`'s name, inputs (epilogue operands too), epilogue
    and readers. The caller puts it at `old`'s place in the node order (it is appended here)."""
    n_own = epilogue.own_input_count(old.attrs, len(old.inputs))
    p = plan(op_name, given, [v.type for v in old.inputs[:n_own]])
    if p.out_type != old.output.type:  # an epilogue keeps the shape, so the op's own output is the node's
        raise AssertionError(f"lower_pooling: {op_name} for {old.name} infers {p.out_type}, not {old.output.type}")
    g.values.pop(old.output.name)  # the new node takes the name (and names its parameters after it)
    new = emit(g, old.name, p, list(old.inputs), old.loc)
    g.nodes.pop()  # emit appended it; the caller places it
    if epilogue.steps(old.attrs):
        new.attrs["epilogue"] = epilogue.steps(old.attrs)
    replace_uses(g, old.output, new.output)
    return new
