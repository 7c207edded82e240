"""fuse_activation: elementwise work after a convolution, dense layer or pooling is fused into that node's epilogue.

A node whose op has fusion kind `out_fusable` absorbs the node reading its output when that reader's op can be an
epilogue step (`graphconv.ops.epilogue.can_absorb`: fusion kind `elementwise` — relu, leaky_relu, clip/relu6,
sigmoid, tanh, elu, selu — or a `commutative` broadcast op such as the residual add). Absorbing repeats, so
conv → add → relu becomes one conv2d node with the epilogue `add(%shortcut), relu`. The decision comes from the op
definitions only, never from op names.

Conditions: the producer's output has exactly one reader and is not a graph output (nobody else may need the value
before the epilogue); the reader has no parameters of its own; a two-input reader takes the producer's output once
and an operand of exactly the output's shape (the epilogue may not broadcast the result to a bigger one); random ops
are never absorbed. The extra operand becomes an input of the fused node, and the nodes are re-sorted so it is
computed first. Inference only for now (the training pass does not differentiate epilogues yet).
"""

from __future__ import annotations

from ..ops import REGISTRY, epilogue
from .base import Pass, PassResult, Program, Readers, remove_nodes, replace_uses


class FuseActivation(Pass):
    name = "fuse_activation"
    summary = "fuse activations and residual adds into the convolution, dense or pooling node before them"
    inference_only = True

    def run(self, program: Program) -> PassResult:
        g = program.graph
        result = PassResult()
        while True:
            fused = self._one_round(program, result)
            if not fused:
                break
            remove_nodes(g, fused)
            g.toposort()
        return result

    def _one_round(self, program: Program, result: PassResult) -> list:
        g = program.graph
        readers = Readers(g)
        fused, gone = [], set()
        for node in g.nodes:
            if id(node) in gone or REGISTRY[node.op].fusion != "out_fusable":
                continue
            v = node.output
            reader = readers.only(v)
            if reader is None:
                continue
            rop = REGISTRY[reader.op]
            if id(reader) in gone or reader.params or not epilogue.can_absorb(rop) or rop.stochastic:
                continue
            step_attrs = tuple(reader.attrs.items())
            if rop.fusion == "elementwise":
                if len(reader.inputs) != 1:
                    continue
                step, extra = (reader.op, step_attrs, None), []
            else:
                if len(reader.inputs) != 2 or reader.inputs.count(v) != 1:
                    continue
                other = reader.inputs[1] if reader.inputs[0] is v else reader.inputs[0]
                if other.type != v.type:
                    continue
                step, extra = (reader.op, step_attrs, len(node.inputs)), [other]
            attrs = {**node.attrs, "epilogue": epilogue.steps(node.attrs) + (step,)}
            try:
                t = epilogue.infer(REGISTRY[node.op], attrs, [x.type for x in node.inputs + extra])
            except Exception:  # noqa: BLE001 - the step does not fit; leave the pair alone
                continue
            if t != v.type:
                continue
            node.attrs = attrs
            node.inputs.extend(extra)
            replace_uses(g, reader.output, v)
            fused.append(reader)
            gone.add(id(reader))
            if extra:
                result.count("residual adds fused" if rop.name == "add" else f"{rop.name} ops fused")
            else:
                result.count("activations fused")
        return fused
