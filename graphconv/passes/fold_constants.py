"""Constant folding: a node that reads only constants is computed once, at compile time, and becomes a parameter.

What it does. A node is constant when every data input is a parameter (or the result of a node folded before it) and
every parameter it reads, as a data input or by role in `node.params`, is a compile-time constant. In an inference
program every parameter is one (the weights are fixed from now on); in a training program only "fixed" parameters
are (their data is written in the graph, `Param.data`), since trainable weights, frozen weights loaded later and
buffers such as batchnorm statistics may still change. A constant node is evaluated with its op's reference
implementation (epilogue included) in the node's dtype, with inference semantics, on the parameters' data; the
result becomes a new "fixed" parameter `<node>.folded` carrying that data, every reader of the node (nodes and graph
outputs) reads it instead, the node goes, and parameters no node reads any more are pruned. Nodes are visited in
topological order, so a chain of constant nodes folds in one run: a node whose inputs were just folded reads only
parameters. A second run finds nothing.

Why it is safe. A reference implementation is a pure function of its inputs, parameters and attributes, and the
inputs of a constant node are the same at every run, so its output is too. It is evaluated once, as at batch size 1,
and only when its output type is static (`TensorType.is_static`): a node whose output has the symbolic batch
dimension `N` is never folded, because a parameter's shape must be static and a value with `N` rows has as many rows
as the batch the caller feeds, which is not known at compile time. In a training program a random op
(`stochastic = True` on its op definition, as for dropout: each run draws a new mask) is never folded, and an op
whose training behaviour differs (batchnorm's batch statistics) reads buffers, which are never fixed, so it is not
constant there. The folded array is what the reference executor would compute at that node in the graph's
dtype.

What it does not do. It folds nothing of the zoo's networks (each op there reads the network input, directly or
not). It leaves a constant node alone when its output has more than 2**24 elements (a parameter that size would swell
the weights to save little work), and when its evaluation fails (the executor reports that failure at run time
with the node's place in the spec); the pass notes both. It folds no algebra on partly constant nodes
(`mul(x, 1)`), does not merge equal parameters, and leaves dead nodes to `dce` (a constant node nobody reads is
not evaluated).
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node, Value
from ..ops import REGISTRY, RefContext, epilogue
from .base import Pass, PassResult, Program, Readers, fresh_name, prune_params, remove_nodes, replace_uses

MAX_FOLDED_ELEMENTS = 2 ** 24


class FoldConstants(Pass):
    name = "fold_constants"
    summary = "compute nodes that read only constant parameters at compile time; their results become parameters"
    inference_only = False

    def run(self, program: Program) -> PassResult:
        result = PassResult()
        graph = program.graph
        readers = Readers(graph)
        folded: list[Node] = []
        too_large = failed = 0
        for node in list(graph.nodes):  # topological order: a node's folded inputs are parameters by now
            if not self._constant(program, node):
                continue
            if not readers.of.get(node.output.name) and node.output.name not in readers.outputs:
                continue  # dead: dce removes it without evaluating it
            out_type = node.output.type
            if not out_type.is_static:
                continue  # a batch-sized value cannot be a parameter
            if out_type.numel() > MAX_FOLDED_ELEMENTS:
                too_large += 1
                continue
            data = self._evaluate(program, node)
            if data is None:
                failed += 1
                continue
            const = graph.add_param(fresh_name(graph, node.name + ".folded"), out_type, "fixed", data=data)
            replace_uses(graph, node.output, const)
            folded.append(node)
        if folded:
            remove_nodes(graph, folded)
            result.count("constant nodes folded", len(folded))
            result.count("parameters pruned", prune_params(program))
        if too_large:
            result.notes.append(f"{too_large} constant node{'s' if too_large > 1 else ''} left unfolded (more than "
                                f"2**24 elements)")
        if failed:
            result.notes.append(f"{failed} constant node{'s' if failed > 1 else ''} left unfolded (the reference "
                                f"implementation failed on {'them' if failed > 1 else 'it'})")
        return result

    @staticmethod
    def _fixed(program: Program, v: Value) -> bool:
        """Whether a parameter's value is known now: always in an inference program, in a training program only
        when its data is written in the graph."""
        return not program.training or program.graph.params[v.name].data is not None

    def _constant(self, program: Program, node: Node) -> bool:
        op = REGISTRY.get(node.op)
        if op is None or not node.inputs:
            return False
        if program.training and getattr(op, "stochastic", False):
            return False
        if any(v.kind != "param" for v in node.inputs):
            return False
        return all(self._fixed(program, v) for v in node.all_inputs)

    @staticmethod
    def _evaluate(program: Program, node: Node) -> np.ndarray | None:
        """The node's output in its dtype, or None when the reference implementation fails on it."""
        dtype = np.dtype(node.output.type.dtype)
        xs = [np.asarray(program.param_data(v)).astype(dtype, copy=False) for v in node.inputs]
        ps = {role: np.asarray(program.param_data(v)).astype(dtype, copy=False) for role, v in node.params.items()}
        try:
            y = epilogue.run(REGISTRY[node.op], node.attrs, xs, ps, RefContext())
        except Exception:  # noqa: BLE001 - left for the executor to report with the node's location
            return None
        y = np.asarray(y)
        if y.shape != node.output.type.concrete(1):
            return None
        return np.ascontiguousarray(y, dtype=dtype)
