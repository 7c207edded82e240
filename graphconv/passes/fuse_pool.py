"""fuse_pool: max pooling after a convolution becomes the last stage of the convolution's epilogue (-O3).

A backend that computes a convolution tile by tile can reduce each pooling window while the tile is still in
registers and write only the pooled result: the full-size activation never reaches memory. In the IR the pool
becomes a window step of the producer's epilogue (`graphconv.ops.epilogue`: at most one window step, which alone
may change the spatial size), followed by whatever the pool itself had fused (e.g. a relu).

Which ops: a producer of fusion kind `out_fusable` with parameters (a convolution or matrix product; pooling nodes
are out_fusable too, but pooling a pool is no tiling win, and they have no parameters), without a window step yet;
a reader whose op declares `window_step` (max_pool2d, window_reduce: maxima, or sums after pooling lowering). The producer's output must have that single reader and not be a graph
output. Runs after lower_pooling and fuse_activation, so conv → relu → max pool ends as one conv2d node with the
epilogue [relu, window_reduce(max)]. Inference only.
"""

from __future__ import annotations

from ..ops import REGISTRY, epilogue
from .base import Pass, PassResult, Program, Readers, remove_nodes, replace_uses


class FusePool(Pass):
    name = "fuse_pool"
    summary = "fuse max pooling into the convolution producing its input"
    inference_only = True

    def run(self, program: Program) -> PassResult:
        g = program.graph
        result = PassResult()
        readers = Readers(g)
        dead = []
        for node in g.nodes:
            op = REGISTRY[node.op]
            if op.fusion != "out_fusable" or op.window_step or not node.params or \
                    any(REGISTRY[s[0]].window_step for s in epilogue.steps(node.attrs)):
                continue
            v = node.output
            pool = readers.only(v)
            if pool is None or not REGISTRY[pool.op].window_step or pool.params or pool.inputs[0] is not v:
                continue
            n_own_pool = epilogue.own_input_count(pool.attrs, len(pool.inputs))
            if n_own_pool != 1:
                continue
            # the pool's own epilogue follows; its operands move to the end of the producer's inputs
            shift = len(node.inputs) - 1
            pool_steps = tuple((s, a, None if k is None else k + shift) for s, a, k in epilogue.steps(pool.attrs))
            step = (pool.op, tuple(epilogue.own_attrs(pool.attrs).items()), None)
            attrs = {**node.attrs, "epilogue": epilogue.steps(node.attrs) + (step,) + pool_steps}
            inputs = node.inputs + pool.inputs[1:]
            try:
                t = epilogue.infer(REGISTRY[node.op], attrs, [x.type for x in inputs])
            except Exception:  # noqa: BLE001 - does not fit; leave the pair alone
                continue
            if t != pool.output.type:
                continue
            node.attrs, node.inputs = attrs, inputs
            v.type = t
            replace_uses(g, pool.output, v)
            dead.append(pool)
            result.count("pools fused into the layer before them")
        if dead:
            remove_nodes(g, dead)
            g.toposort()  # a moved operand of the pool's epilogue may come after the convolution
        return result
