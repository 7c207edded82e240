"""Common subexpression elimination: a node that repeats an earlier node's computation is replaced by it.

What it does. Two nodes compute the same tensor when they have the same op, the same data inputs (the same `Value`
objects, in order), the same parameter values by role and equal attributes (every attribute, the fused `epilogue`
included, compared exactly through `attr_key`). For a commutative op (`REGISTRY[op].commutative`, e.g. add, mul) with
exactly two data inputs and no epilogue, the order of the two inputs does not matter. The later node is dropped and
every reader of its output (nodes and graph outputs) reads the earlier one instead. Nodes are visited in topological
order and readers are redirected before their own key is taken, so a chain of duplicates (two `relu(conv(x))` with
the same convolution parameters) collapses in one run; a second run finds nothing.

Why it is safe. Every op's reference implementation is a pure function of its inputs, parameters and attributes,
so two nodes with equal keys produce the same array, bit for bit: a commutative two-input op gives `a + b == b + a`
exactly in IEEE arithmetic. The one exception is an op whose result is random in training (dropout draws its mask
from `ctx.rng`, seeded per node): two such nodes are independent draws, so in a training program nodes of ops that
declare `stochastic = True` are never merged. (In an inference program dropout is the identity and merges like any
other op.) Merging in a training program keeps gradients right: the kept node's output gets the sum of both nodes'
readers' gradients, as the two identical nodes' shared parameters did before.

What it does not do. It does not merge parameters: two convolutions with distinct but equal weights stay apart
(weights may train apart, and comparing arrays is the job of a weight-deduplication pass). It does not reorder the
inputs of a commutative op with three or more inputs (`add(a, b, c)` vs `add(c, b, a)`): a different summation order
rounds differently. It knows no algebra (`sub(a, b)` and `sub(b, a)`, `mul(a, 2)` and `add(a, a)` are different). It
leaves dead nodes and unread parameters to `dce`; it removes only the duplicates it replaced.
"""

from __future__ import annotations

from typing import Hashable

from ..ir.graph import Node
from ..ops import REGISTRY, epilogue
from .base import Pass, PassResult, Program, attr_key, remove_nodes, replace_uses


def _inputs_key(node: Node) -> tuple:
    ids = [id(v) for v in node.inputs]
    op = REGISTRY.get(node.op)
    if op is not None and op.commutative and len(ids) == 2 and not epilogue.steps(node.attrs):
        ids.sort()  # (the epilogue's operands are positional, so a node with one keeps its order)
    return tuple(ids)


def node_key(node: Node) -> Hashable:
    """What a node computes, as a hashable key: op, data inputs, parameters by role, attributes, output type."""
    attrs = tuple(sorted((k, attr_key(v)) for k, v in node.attrs.items()))
    params = tuple(sorted((role, id(v)) for role, v in node.params.items()))
    return node.op, _inputs_key(node), params, attrs, node.output.type


def is_random(op_name: str, training: bool) -> bool:
    """Whether nodes of this op draw random numbers in a program of this mode (dropout in training)."""
    return training and bool(getattr(REGISTRY.get(op_name), "stochastic", False))


class CommonSubexpressions(Pass):
    name = "cse"
    summary = "merge nodes that compute the same thing (same op, inputs, parameters and attributes)"
    inference_only = False

    def run(self, program: Program) -> PassResult:
        result = PassResult()
        graph = program.graph
        first: dict[Hashable, Node] = {}
        dead: list[Node] = []
        for node in list(graph.nodes):  # topological order; readers are redirected before they are keyed
            if is_random(node.op, program.training):
                continue
            key = node_key(node)
            kept = first.setdefault(key, node)
            if kept is node:
                continue
            replace_uses(graph, node.output, kept.output)
            dead.append(node)
        if dead:
            remove_nodes(graph, dead)
            result.count("duplicate nodes merged", len(dead))
        return result
