"""lower_1x1: the 1×1 convolutions left after folding become matrix products (`channel_matmul`) (-O3).

A 1×1 convolution with stride 1, no padding and one group reads each pixel's channels once: per sample it is the
matrix product W [O, C] × X [C, H·W], the GEMM a backend runs at full speed with no window logic. The node keeps its
name, inputs, fused epilogue and place; its weight becomes the [O, C] matrix (same values, same parameter name and
role) and its bias stays. Dilation and flip do not matter for a 1×1 kernel.

A convolution whose parameters another node also reads stays as it is (reshaping them would break that node).
Strided, padded or grouped 1×1 convolutions stay convolutions (they are not one product over all pixels). Runs
after fold_1x1, so only 1×1 convolutions that could not be folded away are lowered. Inference only: the training
path has no gradient rule for channel_matmul yet.
"""

from __future__ import annotations

import numpy as np

from .base import Pass, PassResult, Program, Readers


def is_pointwise(node) -> bool:
    a = node.attrs
    return (node.op == "conv2d" and tuple(a["kernel"]) == (1, 1) and tuple(a["stride"]) == (1, 1)
            and not any(a["padding"]) and a["groups"] == 1)


class Lower1x1(Pass):
    name = "lower_1x1"
    summary = "lower 1×1 convolutions (stride 1, no padding, one group) to channel matrix products"
    inference_only = True

    def run(self, program: Program) -> PassResult:
        g = program.graph
        result = PassResult()
        readers = Readers(g)
        for node in g.nodes:
            if not is_pointwise(node) or any(readers.only(v) is not node for v in node.params.values()):
                continue  # a weight shared with another node keeps its shape
            w = node.params["weight"]
            o, c = int(w.type.shape[0]), int(w.type.shape[1])
            program.set_param(w, np.asarray(program.param_data(w)).reshape(o, c))
            keep = {k: v for k, v in node.attrs.items() if k in ("bias", "epilogue")}
            node.op = "channel_matmul"
            node.attrs = {"units": o, **keep}
            result.count("1×1 convolutions lowered to matrix products")
        return result
