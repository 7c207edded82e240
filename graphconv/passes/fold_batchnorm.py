"""fold_batchnorm: a per-channel affine op (batchnorm at inference) after a convolution or dense layer is folded
into that layer's weight and bias.

At inference batchnorm is y = x·s + t per channel, with s = weight / sqrt(running_var + eps) and
t = bias - running_mean·s (`OpDef.channel_affine`). When x = W∗z + b comes from an op linear per output channel
(`OpDef.scale_output`: conv2d, conv_transpose2d, dense), y = (s·W)∗z + (s·b + t): the layer takes the scaled
weight and the new bias (added when it had none) and the batchnorm node disappears. The arithmetic is done in
float64 and rounded once to the weights' dtype.

Only when the layer's output feeds nothing but that batchnorm (another reader would see the changed values), is not
a graph output and carries no fused epilogue yet. Inference only: training keeps batchnorm, which normalizes with
batch statistics there.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from ..ops import REGISTRY
from .base import Pass, PassResult, Program, Readers, fresh_name, prune_params, remove_nodes, replace_uses


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
            x = node.inputs[0]
            layer = x.producer
            if layer is None or layer.attrs.get("epilogue") or readers.only(x) is None:
                continue
            if any(readers.only(v) is None for v in layer.params.values()):
                continue  # a parameter shared with another layer must keep its values
            affine = op.channel_affine(node.attrs, {r: program.param_data(v) for r, v in node.params.items()})
            if affine is None:
                continue
            lop = REGISTRY[layer.op]
            lps = {r: program.param_data(v) for r, v in layer.params.items()}
            new = lop.scale_output(layer.attrs, lps, *affine)
            if new is None:
                continue
            self._rewrite(program, layer, new)
            replace_uses(g, node.output, layer.output)
            # keep the snapshot true: the layer's output has the batchnorm's readers (and outputs), a new bias is
            # read by the layer alone
            readers.of[x.name] = readers.of.pop(node.output.name, [])
            if node.output.name in readers.outputs:
                readers.outputs.add(x.name)
            for v in layer.params.values():
                readers.of.setdefault(v.name, [layer])
            dead.append(node)
            kind = {"dense": "dense layers"}.get(layer.op, "convolutions")
            result.count(f"{'batchnorms' if op.name == 'batchnorm' else op.name} folded into {kind}")
        if dead:
            # the layer's output now carries the batchnorm's name in the graph outputs (replace_uses did that)
            remove_nodes(g, dead)
            prune_params(program)
        return result

    @staticmethod
    def _rewrite(program: Program, layer, new: dict[str, np.ndarray]) -> None:
        g = program.graph
        weight = layer.params["weight"]
        dtype = np.asarray(program.param_data(weight)).dtype  # the stored weights' precision (float32 normally)
        role = g.params[weight.name].role
        for r, arr in new.items():
            arr = np.asarray(arr).astype(dtype)
            if r in layer.params:
                program.set_param_data(layer.params[r], arr)
                continue
            # a new bias: same role as the weight (its data inline when the weight's is)
            name = fresh_name(g, f"{layer.name}.{r}")
            fixed = g.params[weight.name].data is not None
            v = g.add_param(name, TensorType(arr.shape, weight.type.dtype), role, data=arr if fixed else None)
            if not fixed:
                program.weights[name] = arr
            layer.params[r] = v
            layer.attrs[r] = True
