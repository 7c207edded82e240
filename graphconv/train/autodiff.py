"""Reverse-mode automatic differentiation: a forward graph and its losses become one graph that also computes the
gradients, so every backend runs and the optimizer treats it like any other graph.

    tg = differentiate(graph, [Loss("logits")])            # trainable parameters by default
    tg.graph.outputs  # the network's outputs, "@loss", and "grad:<name>" for each differentiated tensor
    tg.grads          # {parameter or input name: output name of its gradient}

Three steps, in this order:

1. Training mode (`to_training_mode`). Dropout becomes `x · mask` with the mask a new graph input
   `<node>@mask` (0 or 1/(1 - rate), drawn by the caller), so every backend applies the same mask and the
   gradient check sees a fixed function. Batchnorm (unless frozen) normalizes with the batch's statistics
   (`bn_stats`, `bn_train`) and its updated running statistics become outputs (`TrainingGraph.updates`).
2. Losses (`add_losses`): one loss node per `Loss` on a network output, reading a new target input
   (`<output>@target`, same shape: one-hot or smoothed class probabilities, or regression targets); the output
   "@loss" is their weighted sum.
3. Backward (`add_backward`): nodes in reverse order; each op's `gradient` rule (ops/schema.py) adds the nodes
   that compute its inputs' gradients. A value read by several nodes gets the sum of their contributions. Only
   values on a path from a wanted tensor (trainable parameters, or inputs when asked) to a loss get gradients:
   frozen, fixed and buffer parameters get none, nor do the parts of the graph that cannot reach them.

Names: nodes a gradient rule adds are `<node>@<op><k>`; the summed gradient of a value is `<value>@grad`; the
gradient outputs are `grad:<name>`; the loss is "@loss", the optimizer's inputs "@lr" and "@step"; targets and
dropout masks are inputs `<output>@target` and `<node>@mask`. `@` and `:` cannot appear in names written in a spec,
so none of these collides with a network's own names.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..errors import TrainingError
from ..ir.graph import Graph, Node, Value
from ..ops import REGISTRY
from ..ops.build import add_op

__all__ = ["Loss", "TrainingGraph", "GradBuilder", "differentiate", "to_training_mode", "add_losses",
           "add_backward", "LOSS_KINDS", "LOSS"]

LOSS_KINDS = ("cross_entropy", "mse")
LOSS = "@loss"  # the output holding the total loss
LOSS_OPS = {"cross_entropy": "softmax_cross_entropy", "mse": "mse_loss"}


@dataclass(frozen=True)
class Loss:
    """A loss on network output `output`: `cross_entropy` (softmax cross-entropy on logits [N, classes], with
    optional label smoothing) or `mse` (mean squared error). `weight` scales it in the total (GoogLeNet's auxiliary
    classifiers use 0.3)."""

    output: str
    kind: str = "cross_entropy"
    weight: float = 1.0
    label_smoothing: float = 0.0


@dataclass
class TrainingGraph:
    """A graph in training mode with its losses and gradients (and, after `optim.add_optimizer`, its updates)."""

    graph: Graph
    losses: list[Loss]
    targets: dict[str, str] = field(default_factory=dict)  # network output -> its target input
    masks: dict[str, float] = field(default_factory=dict)  # dropout mask input -> rate
    grads: dict[str, str] = field(default_factory=dict)  # differentiated tensor -> gradient output
    updates: dict[str, str] = field(default_factory=dict)  # state parameter -> output holding its next value
    hyper: dict[str, str] = field(default_factory=dict)  # optimizer inputs ("lr", "step") -> input name


# -- 1. training mode ---------------------------------------------------------------------------------------------

def _insert_before(graph: Graph, node: Node, new: Node) -> None:
    """`add_node` appends; move the new node right before `node` so the order stays topological."""
    graph.nodes.remove(new)
    graph.nodes.insert(graph.nodes.index(node), new)


def to_training_mode(tg: TrainingGraph) -> None:
    """Rewrite dropout and batchnorm nodes for training (see the module docstring), in place."""
    g = tg.graph
    for node in list(g.nodes):
        if "epilogue" in node.attrs:
            raise TrainingError(f"layer '{node.name}' has a fused epilogue; differentiate the graph before "
                                f"optimizing it")
        if node.op == "dropout":
            rate = float(node.attrs.get("rate", 0.0))
            if rate == 0.0:
                node.op, node.attrs = "identity", {}
                continue
            mask = g.add_input(f"{node.name}@mask", node.inputs[0].type)
            tg.masks[mask.name] = rate
            node.op, node.attrs = "mul", {}
            node.inputs = [node.inputs[0], mask]
        elif node.op == "batchnorm" and not node.attrs.get("frozen", False):
            x = node.inputs[0]
            stats = add_op(g, f"{node.name}@stats", "bn_stats", [x], loc=node.loc)
            _insert_before(g, node, stats.producer)
            for stat in ("mean", "var"):
                running = node.params[f"running_{stat}"]
                new = add_op(g, f"{running.name}@new", "bn_running", [running, stats], loc=node.loc,
                             stat=stat, momentum=node.attrs["momentum"])
                _insert_before(g, node, new.producer)
                out = f"update:{running.name}"
                g.set_output(out, new)
                tg.updates[running.name] = out
            node.op = "bn_train"
            node.inputs = [x, stats]
            node.attrs = {"eps": node.attrs["eps"], "affine": node.attrs["affine"]}
            node.params = {r: v for r, v in node.params.items() if r in ("weight", "bias")}


# -- 2. losses ----------------------------------------------------------------------------------------------------

def add_losses(tg: TrainingGraph) -> Value:
    """One loss node per `Loss`, a target input for each, and the weighted total as output "@loss"."""
    g = tg.graph
    if not tg.losses:
        raise TrainingError("training needs at least one loss")
    seen: set[str] = set()
    parts: list[Value] = []
    for loss in tg.losses:
        if loss.kind not in LOSS_KINDS:
            raise TrainingError(f"unknown loss {loss.kind!r}; choose {' or '.join(LOSS_KINDS)}")
        if loss.output not in g.outputs:
            raise TrainingError(f"{g.name} has no output '{loss.output}' to put a loss on; its outputs: "
                                f"{', '.join(g.outputs)}")
        if loss.output in seen:
            raise TrainingError(f"two losses on output '{loss.output}'")
        seen.add(loss.output)
        y = g.outputs[loss.output]
        target = g.add_input(f"{loss.output}@target", y.type)
        tg.targets[loss.output] = target.name
        attrs: dict[str, Any] = {"scale": float(loss.weight)}
        if loss.kind == "cross_entropy":
            attrs["label_smoothing"] = float(loss.label_smoothing)
        elif loss.label_smoothing:
            raise TrainingError(f"label smoothing applies to cross_entropy, not {loss.kind}")
        try:
            parts.append(add_op(g, f"{loss.output}@loss", LOSS_OPS[loss.kind], [y, target], **attrs))
        except Exception as e:  # an OpError: the output does not fit the loss
            raise TrainingError(f"loss {loss.kind} on output '{loss.output}' ({y.type}): "
                                f"{getattr(e, 'message', e)}") from None
    total = parts[0] if len(parts) == 1 else add_op(g, "loss@total", "add", parts)
    if LOSS in g.outputs:
        raise TrainingError(f"{g.name} already has an output named '{LOSS}'")
    g.set_output(LOSS, total)
    return total


# -- 3. backward --------------------------------------------------------------------------------------------------

class GradBuilder:
    """What a gradient rule sees: the node being differentiated, which of its inputs need a gradient, and `op` to
    add nodes (named after the node, placed at its spec location)."""

    def __init__(self, graph: Graph, node: Node, wanted: set[str]):
        self.graph = graph
        self.node = node
        self._wanted = wanted
        self._k = 0

    def wants(self, key: int | str) -> bool:
        """Whether the data input at position `key` (int) or the parameter of role `key` (str) needs a gradient."""
        v = self.node.inputs[key] if isinstance(key, int) else self.node.params.get(key)
        return v is not None and v.name in self._wanted

    def op(self, op_name: str, inputs: Sequence[Value], **attrs: Any) -> Value:
        """Add one node; returns its output."""
        self._k += 1
        name = f"{self.node.name}@{op_name}{self._k}"
        while name in self.graph.values:
            self._k += 1
            name = f"{self.node.name}@{op_name}{self._k}"
        return add_op(self.graph, name, op_name, list(inputs), loc=self.node.loc, **attrs)


def _reachable(graph: Graph, sources: set[str], loss: Value) -> set[str]:
    """Values on a path from a source to the loss: they need gradients."""
    forward = set(sources)
    for n in graph.nodes:
        if any(v.name in forward for v in n.all_inputs):
            forward.add(n.output.name)
    backward = {loss.name}
    for n in reversed(graph.nodes):
        if n.output.name in backward:
            backward.update(v.name for v in n.all_inputs)
    return forward & backward


def add_backward(tg: TrainingGraph, loss: Value, wrt: Iterable[str]) -> dict[str, Value]:
    """Gradients of `loss` (a [1] value; its own gradient is 1) with respect to the values named in `wrt`. Adds
    the nodes and outputs `grad:<name>`; returns {name: gradient value}."""
    g = tg.graph
    wrt = list(wrt)
    for name in wrt:
        if name not in g.values:
            raise TrainingError(f"cannot differentiate with respect to '{name}': {g.name} has no such value")
    wanted = _reachable(g, set(wrt), loss)
    # the loss nodes start the chain: the total's gradient is 1, and so is each weighted part's (the weight is an
    # attribute of the loss node), so their rules get no incoming gradient
    total = loss.producer
    unit = {loss.name} | ({v.name for v in total.inputs} if total is not None and total.name == "loss@total" else set())
    contributions: dict[str, list[Value]] = {}
    for n in reversed(list(g.nodes)):
        if n.output.name not in wanted:
            continue
        if n.output.name in unit:
            if n.name == "loss@total":
                continue
            if not getattr(REGISTRY[n.op], "is_loss", False):
                raise TrainingError(f"'{n.name}' ({n.op}) is not a loss")
            dy = None
        elif n.output.name in contributions:
            dy = _accumulate(g, n.output, contributions.pop(n.output.name))
        else:
            continue  # nothing reaches the loss through this node's output
        op = REGISTRY[n.op]
        gb = GradBuilder(g, n, wanted)
        if not any(gb.wants(i) for i in range(len(n.inputs))) and not any(gb.wants(r) for r in n.params):
            continue
        try:
            result = op.gradient(n, dy, gb)
        except TrainingError:
            raise
        except Exception as e:
            at = f" (defined at {n.loc})" if n.loc is not None else ""
            raise TrainingError(f"cannot differentiate layer '{n.name}' ({n.op}){at}: "
                                f"{getattr(e, 'message', None) or e}") from e
        for key, gv in result.items():
            v = n.inputs[key] if isinstance(key, int) else n.params[key]
            if gv is None or v.name not in wanted:
                continue
            if tuple(gv.type.shape) != tuple(v.type.shape):
                raise TrainingError(f"internal error: the gradient rule of {n.op} gave {gv.type} for "
                                    f"{v.name} ({v.type})")
            contributions.setdefault(v.name, []).append(gv)
    grads: dict[str, Value] = {}
    for name in wrt:
        parts = contributions.get(name)
        if not parts:
            continue  # does not reach the loss (or frozen): no gradient
        gv = _accumulate(g, g.values[name], parts)
        out = f"grad:{name}"
        g.set_output(out, gv)
        tg.grads[name] = out
        grads[name] = gv
    return grads


def _accumulate(g: Graph, v: Value, parts: list[Value]) -> Value:
    if len(parts) == 1:
        return parts[0]
    name = f"{v.name}@grad"
    k = 1
    while name in g.values:
        k += 1
        name = f"{v.name}@grad{k}"
    return add_op(g, name, "add", parts)


# -- all together -------------------------------------------------------------------------------------------------

def trainable_params(graph: Graph) -> list[str]:
    return [name for name, p in graph.params.items() if p.role == "trainable"]


def differentiate(graph: Graph, losses: Sequence[Loss], wrt: Iterable[str] | None = None, *,
                  inputs: bool = False) -> TrainingGraph:
    """A copy of `graph` in training mode with `losses` and the gradients of their total with respect to `wrt`
    (default: every trainable parameter; `inputs=True` adds the graph's inputs, as gradient checks do)."""
    g = copy.deepcopy(graph)
    data_inputs = [v.name for v in g.inputs]
    tg = TrainingGraph(g, list(losses))
    to_training_mode(tg)
    loss = add_losses(tg)
    names = list(trainable_params(g) if wrt is None else wrt)
    if inputs:
        names += [n for n in data_inputs if n not in names]
    add_backward(tg, loss, names)
    return tg
