"""assign_layout: the region a backend runs in the blocked channel layout NCHW16c, with conversions only at its
edges and the weights repacked at compile time (-O3 for the llvm target).

With 16 channels of a pixel side by side ([N, C/16, H, W, 16]), an AVX-512 register holds one pixel's block of
channels, and a convolution's inner loop is a 16-wide FMA over output channels with no gathers. Converting costs a
full pass over a tensor, so the layout is chosen for whole regions: a node runs blocked when its op declares a
blocked kernel (`OpDef.blocked_layout`, refined by `OpDef.blockable`: one-group and depthwise convolutions, channel
matmuls, pools, activations, same-shape adds, channel concats, ...) and its output and every data input are
[N, C, H, W] with C a multiple of 16; a connected region of such nodes is kept only if it holds a layer with weights
and has more nodes than the conversions it needs (converting around a few pools would cost more than it saves). A value whose channels are not a multiple of 16 stays
plain (padding channels up to a block is left for later), so networks with such stages (GoogLeNet's 24-channel
branches, MobileNetV2's 24-channel stage) convert around them. Then:

- a plain value read by a blocked node goes through one `to_blocked` (shared by all its blocked readers);
- a blocked value read by a plain node or returned as a graph output goes through one `from_blocked`;
- the blocked node's output type becomes [N, C/16, H, W, 16], `attrs["layout"] = 16`, and its weights are packed
  by its op's `pack_param` (convolutions OIHW16i16o, depthwise [C/16, kh, kw, 16], channel matmul
  [O/16, C/16, 16, 16]); biases stay.

So in ResNet-50 only the stem's 3-channel input stays plain: one conversion after the stem convolution, one before
the flatten of the head. Semantics do not change (the reference executor and the ONNX exporter undo the layout per
node, graphconv/ops/epilogue.py). A node whose parameters another node also reads stays plain. Inference only, and
only for a backend that runs blocked kernels (the llvm target): exporting a blocked graph to ONNX is correct but
slower.
"""

from __future__ import annotations

from ..ir.graph import Graph, TensorType, Value
from ..ops import REGISTRY, epilogue
from ..ops.build import add_op
from ..ops.layout import blocked_type
from .base import Pass, PassResult, Program, Readers, fresh_name

BLOCK = 16


def _fits(t: TensorType, block: int) -> bool:
    return t.rank == 4 and int(t.shape[1]) % block == 0


class AssignLayout(Pass):
    name = "assign_layout"
    summary = "run convolution regions in the blocked channel layout NCHW16c, converting only at their edges"
    inference_only = True

    def __init__(self, block: int = BLOCK):
        self.block = block

    def run(self, program: Program) -> PassResult:
        g, b = program.graph, self.block
        result = PassResult()
        readers = Readers(g)
        blocked = self._worth_it(g, {id(n) for n in g.nodes if self._blockable(n, readers)})
        if not blocked:
            return result
        to_b: dict[str, Value] = {}
        from_b: dict[str, Value] = {}

        def convert(v: Value, op: str, cache: dict, suffix: str) -> Value:
            """One conversion node per value (appended; the final toposort places it)."""
            if v.name not in cache:
                cache[v.name] = add_op(g, fresh_name(g, f"{v.name}.{suffix}"), op, [v], block=b)
                result.count(f"layout conversions to {'NCHW16c' if op == 'to_blocked' else 'NCHW'}")
            return cache[v.name]

        for node in list(g.nodes):  # the nodes as they were: conversions added on the way are not revisited
            is_blocked = id(node) in blocked
            for i, v in enumerate(node.inputs):
                src_blocked = v.producer is not None and id(v.producer) in blocked
                if is_blocked and v.type.rank == 4 and not src_blocked:
                    node.inputs[i] = convert(v, "to_blocked", to_b, "blocked")
                elif not is_blocked and src_blocked:
                    node.inputs[i] = convert(v, "from_blocked", from_b, "plain")
            if is_blocked:
                self._pack(program, node)
                result.count("nodes in NCHW16c")
        for name, v in list(g.outputs.items()):
            if v.producer is not None and id(v.producer) in blocked:
                g.outputs[name] = convert(v, "from_blocked", from_b, "plain")
        g.toposort()
        return result

    @staticmethod
    def _worth_it(g: Graph, candidates: set[int]) -> set[int]:
        """Keep the connected regions of candidate nodes that hold a layer with weights (a convolution or matrix
        product) and have more nodes than the conversions they need: converting in and out of a few pools and
        activations costs more than it saves."""
        import networkx as nx

        readers = Readers(g)

        region = nx.Graph()
        for n in g.nodes:
            if id(n) in candidates:
                region.add_node(id(n))
                for v in n.inputs:
                    if v.producer is not None and id(v.producer) in candidates:
                        region.add_edge(id(n), id(v.producer))
        weighted = {id(n) for n in g.nodes if id(n) in candidates and "weight" in n.params}
        keep: set[int] = set()
        for component in nx.connected_components(region):
            nodes = [n for n in g.nodes if id(n) in component]
            ins = {v.name for n in nodes for v in n.inputs if v.producer is None or id(v.producer) not in component}
            outs = {n.output.name for n in nodes if n.output.name in readers.outputs
                    or any(id(r) not in component for r in readers.of.get(n.output.name, ()))}
            if component & weighted and len(nodes) > len(ins) + len(outs):
                keep |= component
        return keep

    def _blockable(self, node, readers: Readers) -> bool:
        op = REGISTRY[node.op]
        if not op.blocked_layout or epilogue.block_size(node.attrs):
            return False
        n_own = epilogue.own_input_count(node.attrs, len(node.inputs))
        types = [v.type for v in node.inputs]
        if not all(_fits(t, self.block) for t in types) or not _fits(node.output.type, self.block):
            return False
        if any(readers.only(v) is not node for v in node.params.values()):
            return False
        return op.blockable(epilogue.own_attrs(node.attrs), types[:n_own])

    def _pack(self, program: Program, node) -> None:
        op = REGISTRY[node.op]
        own = epilogue.own_attrs(node.attrs)
        for role, v in node.params.items():  # pack_param returns what it does not repack (biases) as it is
            program.set_param(v, op.pack_param(own, role, program.param_data(v), self.block))
        node.attrs["layout"] = self.block
        node.output.type = blocked_type(node.output.type, self.block)


def conversions(graph: Graph) -> int:
    return sum(n.op in ("to_blocked", "from_blocked") for n in graph.nodes)


__all__ = ["AssignLayout", "BLOCK", "conversions"]
