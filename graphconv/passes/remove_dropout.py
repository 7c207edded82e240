"""remove_dropout: ops that return their input unchanged at inference (dropout) are removed from inference graphs.

Decided by the op definition's `passes_through == "inference"`. Every reader of the node's output reads its input
instead. Training graphs keep them (the pass is inference-only), since there they draw their masks.
"""

from __future__ import annotations

from ..ops import REGISTRY
from .base import Pass, PassResult, Program, prune_params, remove_nodes, replace_uses


def bypass(program: Program, when: tuple[str, ...], result: PassResult, what: str) -> PassResult:
    """Remove every node whose op passes its input through in one of the modes `when`."""
    g = program.graph
    dead = []
    for node in g.nodes:
        op = REGISTRY.get(node.op)
        if op is None or op.passes_through not in when or len(node.inputs) != 1 or node.attrs.get("epilogue"):
            continue
        replace_uses(g, node.output, node.inputs[0])
        dead.append(node)
    if dead:
        remove_nodes(g, dead)
        prune_params(program)
        result.count(what, len(dead))
    return result


class RemoveDropout(Pass):
    name = "remove_dropout"
    summary = "remove dropout (the identity at inference)"
    inference_only = True

    def run(self, program: Program) -> PassResult:
        return bypass(program, ("inference",), PassResult(), "dropouts removed")
