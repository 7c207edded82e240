"""fold_batchnorm: a per-channel affine op (batchnorm at inference, or a depthwise 1×1 convolution: a scale and
shift per channel) after a convolution or dense layer is folded into that layer's weight and bias.

At inference batchnorm is y = x·s + t per channel, with s = weight / sqrt(running_var + eps) and
t = bias - running_mean·s (`OpDef.channel_affine`). When x = W∗z + b comes from an op linear per output channel
(`OpDef.scale_output`: conv2d, conv_transpose2d, dense), y = (s·W)∗z + (s·b + t): the layer takes the scaled
weight and the new bias (added when it had none) and the batchnorm node disappears. The arithmetic is done in
float64 and rounded once to the weights' dtype.

Only when the layer's output feeds nothing but that batchnorm (another reader would see the changed values), is not
a graph output and carries no fused epilogue yet. Otherwise, when the batchnorm's output feeds exactly one layer
linear in its input channels and without zero padding (`OpDef.scale_input`: a 1×1 or unpadded convolution with one
group, a channel matmul, a dense layer), it folds forward into that layer: W∗(s·x + t) + b = (W·s)∗x + (W·t + b),
as after a pool or a concat. Inference only: training keeps batchnorm, which normalizes with
batch statistics there.
"""

from __future__ import annotations

import numpy as np

from ..ops import REGISTRY, epilogue
from .base import Pass, PassResult, Program, Readers, prune_params, remove_nodes, replace_uses


class FoldBatchNorm(Pass):
    name = "fold_batchnorm"
    summary = "fold batchnorm (a per-channel scale and shift) into the preceding convolution or dense layer"
    inference_only = True

    def run(self, program: Program) -> PassResult:
        g = program.graph
        result = PassResult()
        readers = Readers(g)
        dead = []
        for node in g.nodes:
            op = REGISTRY[node.op]
            if len(node.inputs) != 1:
                continue
            affine = op.channel_affine(node.attrs, {r: program.param_data(v) for r, v in node.params.items()})
            if affine is None:
                continue
            what = "batchnorms" if op.name == "batchnorm" else "per-channel scales"
            kind = self._backward(program, readers, node, affine) or self._forward(program, readers, node, affine)
            if kind:
                dead.append(node)
                result.count(f"{what} folded into {kind}")
        if dead:
            # the layer's output now carries the batchnorm's name in the graph outputs (replace_uses did that)
            remove_nodes(g, dead)
            prune_params(program)
        return result

    def _backward(self, program: Program, readers: Readers, node, affine) -> str | None:
        """Into the layer producing the input: y = (s·W)∗z + (s·b + t)."""
        g = program.graph
        x = node.inputs[0]
        layer = x.producer
        if layer is None or layer.attrs.get("epilogue") or readers.only(x) is None:
            return None
        if any(readers.only(v) is None for v in layer.params.values()):
            return None  # a parameter shared with another layer must keep its values
        new = REGISTRY[layer.op].scale_output(layer.attrs, self._params(program, layer), *affine)
        if new is None:
            return None
        program.set_layer_params(layer, new)
        replace_uses(g, node.output, layer.output)
        # keep the snapshot true: the layer's output has the batchnorm's readers (and outputs), a new bias is read
        # by the layer alone
        readers.of[x.name] = readers.of.pop(node.output.name, [])
        if node.output.name in readers.outputs:
            readers.outputs.add(x.name)
        for v in layer.params.values():
            readers.of.setdefault(v.name, [layer])
        return {"dense": "dense layers"}.get(layer.op, "convolutions")

    def _forward(self, program: Program, readers: Readers, node, affine) -> str | None:
        """Into the one layer reading the output, when nothing produces the input that could take it (after a pool
        or a concat): W∗(s·x + t) + b = (W·s)∗x + (W·t + b), for layers without zero padding."""
        layer = readers.only(node.output)
        if layer is None or not layer.inputs or layer.inputs[0] is not node.output or \
                layer.inputs.count(node.output) != 1:
            return None
        if any(readers.only(v) is not layer for v in layer.params.values()):
            return None
        new = REGISTRY[layer.op].scale_input(epilogue.own_attrs(layer.attrs), self._params(program, layer), *affine)
        if new is None:
            return None
        program.set_layer_params(layer, new)
        x = node.inputs[0]
        layer.inputs[0] = x
        readers.of[x.name] = [layer if r is node else r for r in readers.of.get(x.name, [])]
        for v in layer.params.values():
            readers.of.setdefault(v.name, [layer])
        return {"dense": "the dense layers after them"}.get(layer.op, "the layers after them")

    @staticmethod
    def _params(program: Program, layer) -> dict[str, np.ndarray]:
        return {r: program.param_data(v) for r, v in layer.params.items()}
