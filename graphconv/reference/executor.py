"""The numpy reference executor: the oracle every other backend, pass and gradient is checked against.

    run_graph(graph, inputs, weights, dtype="float32", training=False, seed=0) -> {output name: array}

It walks the nodes in their topological order and dispatches each one to its op's reference implementation
(`REGISTRY[node.op].reference`), nothing else: no fusion, no layout tricks. Like torch.fx's Interpreter it drops each
intermediate value right after its last reader, so peak memory is the widest cut of the graph rather than its sum.

Inputs are checked at the boundary (names, rank, static dimensions, one value per symbolic dimension such as the
batch `N`, a floating dtype) and raise `InputError`; weights are checked against the parameters (`WeightsError`).
A failing op raises `ExecutionError` naming the node, its op and its place in the spec, chained from the original.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ExecutionError, GraphconvError, InputError, WeightsError, did_you_mean
from ..ir.graph import DTYPES, Graph, Node, TensorType
from ..ops import REGISTRY, RefContext, epilogue

__all__ = ["run_graph", "check_inputs", "prepare_weights", "free_plan", "node_rng"]


def check_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPES:
        raise GraphconvError(f"unknown dtype {dtype!r}; the reference executor runs in {' or '.join(DTYPES)}")
    return np.dtype(dtype)


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_inputs(graph: Graph, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Validate the arrays given for the graph inputs. Returns (arrays by input name, symbolic dimension -> size).
    Raises InputError listing every problem."""
    if not isinstance(inputs, Mapping):
        raise InputError(f"inputs must be a mapping from input name to array, got {type(inputs).__name__}")
    expected = {v.name: v for v in graph.inputs}
    problems: list[str] = []
    for name in inputs:
        if name not in expected:
            hint = did_you_mean(str(name), expected)
            problems.append(f"unknown input {name!r}" + (f" ({hint})" if hint else "")
                            + f"; {graph.name} takes {_names(expected)}")
    arrays: dict[str, np.ndarray] = {}
    for name, v in expected.items():
        if name not in inputs:
            problems.append(f"missing input '{name}' ({v.type})")
            continue
        raw = inputs[name]
        try:
            arr = raw if isinstance(raw, np.ndarray) else np.asarray(raw)
        except (ValueError, TypeError) as e:
            problems.append(f"input '{name}': cannot make an array of it ({e})")
            continue
        if not np.issubdtype(arr.dtype, np.floating):
            problems.append(f"input '{name}' has dtype {arr.dtype}; it must be floating point "
                            f"(e.g. x.astype(np.float32))")
            continue
        arrays[name] = arr
    # shapes: rank, static dimensions, symbolic dimensions bound consistently across inputs
    bound: dict[str, tuple[int, str]] = {}  # symbol -> (size, where it was first seen)
    for name, arr in arrays.items():
        t = expected[name].type
        if arr.ndim != t.rank:
            problems.append(f"input '{name}' has shape {list(arr.shape)} (rank {arr.ndim}); expected {t} "
                            f"(rank {t.rank})")
            continue
        for axis, (want, got) in enumerate(zip(t.shape, arr.shape)):
            if isinstance(want, int):
                if want != got:
                    problems.append(f"input '{name}' has shape {list(arr.shape)}; expected {t} "
                                    f"(dimension {axis} is {got}, must be {want})")
                    break
                continue
            if got < 1:
                problems.append(f"input '{name}' has shape {list(arr.shape)}; dimension {axis} ({want}) must be "
                                f"at least 1")
                break
            if want in bound and bound[want][0] != got:
                size, where = bound[want]
                problems.append(f"input '{name}' has {want} = {got} (dimension {axis}) but {where} has "
                                f"{want} = {size}; every input must agree on {want}")
                break
            bound.setdefault(want, (int(got), f"input '{name}'"))
    if problems:
        raise InputError(_listing("bad inputs", problems))
    return arrays, {k: v[0] for k, v in bound.items()}


def prepare_weights(graph: Graph, weights: Mapping[str, Any], dtype: str | np.dtype = "float32"
                    ) -> dict[str, np.ndarray]:
    """Every parameter of the graph as an array of `dtype`: fixed parameters from their spec data (`Param.data`),
    the rest from `weights`. Raises WeightsError listing missing, unknown and mis-shaped entries."""
    dt = np.dtype(dtype)
    if not isinstance(weights, Mapping):
        raise WeightsError(f"weights must be a mapping from parameter name to array, got {type(weights).__name__}")
    problems: list[str] = []
    out: dict[str, np.ndarray] = {}
    for name in weights:
        if name not in graph.params:
            hint = did_you_mean(str(name), graph.params)
            problems.append(f"unknown parameter {name!r}" + (f" ({hint})" if hint else ""))
    for name, p in graph.params.items():
        shape = tuple(int(d) for d in p.value.type.shape)
        if p.data is not None:
            arr = np.asarray(p.data)
        elif name in weights:
            arr = weights[name]
            if not isinstance(arr, np.ndarray):
                try:
                    arr = np.asarray(arr)
                except (ValueError, TypeError):
                    problems.append(f"'{name}' is not an array")
                    continue
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                problems.append(f"'{name}' has dtype {arr.dtype}; expected a number type")
                continue
        else:
            problems.append(f"missing parameter '{name}' {list(shape)}")
            continue
        if tuple(arr.shape) != shape:
            problems.append(f"'{name}' has shape {list(arr.shape)}; expected {list(shape)}")
            continue
        out[name] = arr.astype(dt, copy=False)
    if problems:
        raise WeightsError(_listing("the weights do not fit the network", problems))
    return out


def free_plan(graph: Graph) -> list[list[str]]:
    """For each node (by position), the values that can be dropped once it has run: inputs and intermediate
    values whose last reader it is, and its own output when nothing reads it. Graph outputs are never dropped;
    parameters are not values of the run (the caller keeps them)."""
    keep = {v.name for v in graph.outputs.values()}
    last: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            last[v.name] = i
        last.setdefault(n.output.name, i)
    for v in graph.inputs:
        last.setdefault(v.name, -1)  # unread input: dropped before the first node
    plan: list[list[str]] = [[] for _ in graph.nodes]
    early: list[str] = []
    for name, i in last.items():
        if name in keep or name in graph.params:
            continue
        (early if i < 0 else plan[i]).append(name)
    if plan and early:
        plan[0] = early + plan[0]
    return plan


def node_rng(seed: int, node_name: str) -> np.random.Generator:
    """The random generator of one node (dropout masks): derived from the seed and the node's name, so adding a
    layer does not change the randomness of the others."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(node_name.encode("utf-8"))]))


def _where(node: Node) -> str:
    at = f" defined at {node.loc}" if node.loc is not None else ""
    return f"node '{node.name}' ({node.op}){at}"


def _describe_exc(e: BaseException) -> str:
    if isinstance(e, GraphconvError):
        return str(e)
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _expected_shape(t: TensorType, dims: dict[str, int]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) else dims.get(d) for d in t.shape)


def run_graph(graph: Graph, inputs: Mapping[str, Any], weights: Mapping[str, Any], *, dtype: str = "float32",
              training: bool = False, seed: int = 0,
              observer: Callable[[Node, Mapping[str, np.ndarray]], None] | None = None) -> dict[str, np.ndarray]:
    """Run `graph` on `inputs` (input name -> array) with `weights` (parameter name -> array) in `dtype`.

    Returns the outputs by name. `training` switches dropout and batchnorm to their training behaviour (random
    streams derived from `seed` and each node's name). `observer(node, live_values)`, when given, is called after
    each node has run and the values it was the last reader of have been dropped (a debugging and test hook)."""
    dt = check_dtype(dtype)
    arrays, dims = check_inputs(graph, inputs)
    params = prepare_weights(graph, weights, dt)
    env: dict[str, np.ndarray] = {name: arr.astype(dt, copy=False) for name, arr in arrays.items()}
    del arrays
    plan = free_plan(graph)
    for i, node in enumerate(graph.nodes):
        op = REGISTRY.get(node.op)
        try:
            if op is None:
                raise ExecutionError(f"unknown op '{node.op}'")
            xs = [env[v.name] if v.kind != "param" else params[v.name] for v in node.inputs]
            ps = {role: params[v.name] for role, v in node.params.items()}
            ctx = RefContext(training=training, rng=node_rng(seed, node.name))
            y = epilogue.run(op, node.attrs, xs, ps, ctx)
            del xs, ps
            y = _check_result(y, node.output.type, dims, dt)
        except Exception as e:  # noqa: BLE001 - every failure is reported with the node that caused it
            raise ExecutionError(f"while executing {_where(node)}: {_describe_exc(e)}") from e
        env[node.output.name] = y
        del y
        for name in plan[i]:
            env.pop(name, None)
        if observer is not None:
            observer(node, env)
    return {name: env[v.name] if v.kind != "param" else params[v.name] for name, v in graph.outputs.items()}


def _check_result(y: Any, t: TensorType, dims: dict[str, int], dt: np.dtype) -> np.ndarray:
    if not isinstance(y, np.ndarray):
        raise TypeError(f"the op returned {type(y).__name__}, not an array")
    want = _expected_shape(t, dims)
    if y.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, y.shape)):
        shown = _shape_text(d if d is not None else "?" for d in want)
        raise ValueError(f"the op returned shape {list(y.shape)}, but the graph says {shown} ({t})")
    if y.dtype != dt:
        y = y.astype(dt)
    return y


def _names(values) -> str:
    names = [f"'{n}'" for n in values]
    return ", ".join(names) if names else "no inputs"


def _listing(title: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{title} ({len(problems)} problems):\n" + "\n".join(f"  - {p}" for p in problems)
