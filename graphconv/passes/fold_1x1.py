"""fold_1x1: a linear channel map after a convolution or dense layer is folded into it, where that saves work.

A 1×1 convolution (stride 1, no padding, one group, no epilogue) is a matrix B [O, M] applied to every pixel's
channels, plus a bias. A dense layer reading the flattened [N, M, 1, 1] output of a convolution is the same map. When
such a map directly follows a layer A that is linear in its output channels — a convolution with one group or a
dense layer, without a fused epilogue — the two compose exactly into one layer with the weights
W[o, ...] = Σ_m B[o, m]·A[m, ...] and the bias B·a + b. So:

- two consecutive 1×1 convolutions (nothing non-linear between) become one;
- a 1×1 convolution after a k×k convolution is folded into it;
- a dense layer after a convolution whose output is a 1×1 map (through `flatten`, and through `global_avg_pool`,
  which is linear and commutes with a channel map) is treated as a 1×1 convolution and folded the same way;
- two consecutive dense layers become one.

Batchnorm before such a layer is folded by fold_batchnorm (after the layer); batchnorm between a layer and the map
disappears first, so the map then directly follows the layer.

The fold happens only where it does not increase work: A's multiply-accumulates grow by O/M, and the fold must cost
no more than A and B together (a 1×1 map that widens the channels usually stays). A's output must have no other
reader and must not be a graph output. Weights are composed in float64 and rounded once; they are fixed (written in
the graph) only when both layers' were. Inference only.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from ..ops import REGISTRY
from .base import Pass, PassResult, Program, Readers, prune_params, remove_nodes, replace_uses


def channel_map(node, program: Program) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(B [O, M], bias or None) when `node` applies the same linear map to every pixel's channels."""
    a = node.attrs
    if a.get("epilogue") or len(node.inputs) != 1:
        return None
    if node.op == "conv2d":
        if tuple(a["kernel"]) != (1, 1) or tuple(a["stride"]) != (1, 1) or any(a["padding"]) or a["groups"] != 1:
            return None
    elif node.op != "dense":
        return None
    w = np.asarray(program.param_data(node.params["weight"]), np.float64)
    b = node.params.get("bias")
    return w.reshape(w.shape[0], -1), (None if b is None else np.asarray(program.param_data(b), np.float64))


def _layer_matrix(layer) -> bool:
    """Whether a layer is linear per output channel with a composable weight [M, ...]."""
    a = layer.attrs
    if a.get("epilogue"):
        return False
    return (layer.op == "conv2d" and a["groups"] == 1) or layer.op == "dense"


class Fold1x1(Pass):
    name = "fold_1x1"
    summary = "fold a 1×1 convolution or a dense layer on a 1×1 map into the layer before it"
    inference_only = True

    def run(self, program: Program) -> PassResult:
        result = PassResult()
        while self._one(program, result):
            pass
        if result.changed:
            prune_params(program)
        return result

    def _one(self, program: Program, result: PassResult) -> bool:
        g = program.graph
        readers = Readers(g)
        for node in g.nodes:
            m = channel_map(node, program)
            if m is None:
                continue
            path = self._path_back(node, readers)
            if path is None:
                continue
            layer, between = path
            if not _layer_matrix(layer) or any(readers.only(v) is None for v in layer.params.values()):
                continue
            if node.op == "dense" and not between and layer.op != "dense":
                continue
            if node.op == "conv2d" and (between or layer.op != "conv2d"):
                continue
            if not self._saves_work(layer, node):
                continue
            self._fold(program, layer, between, node, *m, role=self._role(program, layer, node))
            kind = {"conv2d": "1×1 convolutions", "dense": "dense layers"}[node.op]
            result.count(f"{kind} folded into the {'convolution' if layer.op == 'conv2d' else 'dense layer'} "
                         "before them")
            return True
        return False

    @staticmethod
    def _path_back(node, readers: Readers):
        """(layer, [nodes between]) where `node` reads `layer` directly, or through flatten of a 1×1 map, or through
        global_avg_pool then flatten; None otherwise. Every value on the way has one reader and is no output."""
        v = node.inputs[0]
        between = []
        while True:
            if readers.only(v) is None or v.producer is None:
                return None
            p = v.producer
            if p.op in ("conv2d", "dense"):
                return p, list(reversed(between))
            passes_channels = (p.op == "flatten" and v.type.rank == 2 and p.inputs[0].type.rank == 4
                               and p.inputs[0].type.shape[2:] == (1, 1)) or p.op == "global_avg_pool"
            if not passes_channels or node.op != "dense" or len(between) >= 2:
                return None
            between.append(p)
            v = p.inputs[0]

    @staticmethod
    def _saves_work(layer, node) -> bool:
        lop, nop = REGISTRY[layer.op], REGISTRY[node.op]
        a = lop.macs(layer.attrs, [v.type for v in layer.inputs], layer.output.type)
        b = nop.macs(node.attrs, [v.type for v in node.inputs], node.output.type)
        m, o = int(layer.output.type.shape[1]), int(node.output.type.shape[1])
        return a * o <= (a + b) * m

    @staticmethod
    def _role(program: Program, layer, node) -> str:
        """The composed weight is written in the graph (fixed) only when both were; otherwise it takes the role of
        the one that was not (trainable or frozen), so parameter counts stay honest."""
        roles = [program.graph.params[n.params["weight"].name].role for n in (layer, node)]
        rest = [r for r in roles if r != "fixed"]
        return rest[0] if rest else "fixed"

    @staticmethod
    def _fold(program: Program, layer, between, node, b_mat, b_bias, role: str) -> None:
        wa = np.asarray(program.param_data(layer.params["weight"]), np.float64)
        ba = layer.params.get("bias")
        bias_a = np.zeros(wa.shape[0]) if ba is None else np.asarray(program.param_data(ba), np.float64)
        o = b_mat.shape[0]
        w = (b_mat @ wa.reshape(wa.shape[0], -1)).reshape((o,) + wa.shape[1:])
        bias = b_mat @ bias_a + (0.0 if b_bias is None else b_bias)
        program.set_layer_params(layer, {"weight": w, "bias": bias}, role)  # same names, new shapes
        layer.attrs["out_channels" if layer.op == "conv2d" else "units"] = o
        # the values from the layer to the map now carry O channels
        for v in [layer.output] + [p.output for p in between]:
            v.type = TensorType((v.type.shape[0], o) + v.type.shape[2:], v.type.dtype)
        last = between[-1].output if between else layer.output
        replace_uses(program.graph, node.output, last)
        remove_nodes(program.graph, [node])
