"""dce: dead code elimination. Nodes that no graph output depends on are removed, then parameters nothing reads.

Walks back from the graph outputs over node inputs and parameters; everything not reached goes. Safe because ops
have no side effects visible outside their output (batchnorm's running statistics are only updated by a training
step, which reads them as outputs of the training graph).
"""

from __future__ import annotations

from .base import Pass, PassResult, Program, prune_params, remove_nodes


class DeadCode(Pass):
    name = "dce"
    summary = "remove nodes no output depends on, and unused parameters"

    def run(self, program: Program) -> PassResult:
        g = program.graph
        live: set[str] = set()
        stack = [v for v in g.outputs.values()]
        while stack:
            v = stack.pop()
            if v.name in live:
                continue
            live.add(v.name)
            if v.producer is not None:
                stack.extend(v.producer.all_inputs)
        dead = [n for n in g.nodes if n.output.name not in live]
        result = PassResult()
        if dead:
            remove_nodes(g, dead)
            result.count("dead nodes removed", len(dead))
        pruned = prune_params(program)
        if pruned:
            result.count("unused parameters removed", pruned)
        return result
