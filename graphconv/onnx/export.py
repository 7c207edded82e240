"""Export of graphconv networks to ONNX (standard ops only).

    export_onnx(net_or_graph, path=None, *, weights=None, opset=DEFAULT_OPSET, name=None, dtype=None,
                external_data_threshold=EXTERNAL_DATA_THRESHOLD) -> onnx.ModelProto

Each IR node becomes one ONNX node named like it (a few ops need helper nodes, named `<node>/<what>`); values keep
their IR names (graph inputs, parameters as initializers, node outputs), and graph outputs take the spec's output
names (through an Identity node when the output value has another name). The symbolic batch dimension stays
symbolic (`dim_param "N"`). Every op defines its own mapping in its `OpDef.to_onnx` (graphconv/ops/).

Models whose tensors take more than `external_data_threshold` bytes (default just under protobuf's 2 GiB limit) are
saved with their initializers as ONNX external data in `<model file>.data` next to the model. The tensors are
written straight from numpy into that file: a protobuf message cannot hold 2 GiB, so such a model never exists in
memory with its weights inline.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from ..errors import GraphconvError
from ..ir.graph import Graph, Node, TensorType, Value

__all__ = ["export_onnx", "build_model", "ExportError", "DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET"]

DEFAULT_OPSET = 21
MIN_OPSET = 18   # Resize and Pad with `axes`, ReduceX with axes inputs
MAX_OPSET = 23   # newest opset this exporter is tested with (onnxruntime >= 1.20 runs it)
EXTERNAL_DATA_THRESHOLD = (2 << 30) - (64 << 20)  # bytes of tensors above which weights go to external data
EXTERNAL_ALIGNMENT = 4096  # offsets of tensors in the external data file (page-aligned, so runtimes can map them)

_NP_DTYPES = {"float32": np.float32, "float64": np.float64}


class ExportError(GraphconvError):
    """A network cannot be exported to ONNX."""



class Emitter:
    """What an op's `to_onnx` hook builds its ONNX nodes with (see OpDef.to_onnx)."""

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray], opset: int, dtype: str,
                 state: frozenset[str] = frozenset()):
        self.onnx = onnx
        self.state = state  # parameters that are graph inputs (a training step's weights and optimizer state)
        self.graph = graph
        self.weights = weights
        self.opset = opset
        self.dtype = dtype
        self.np_dtype = np.dtype(_NP_DTYPES[dtype])
        self.elem_type = self.onnx.helper.np_dtype_to_tensor_dtype(self.np_dtype)
        self.nodes: list = []
        self.arrays: dict[str, np.ndarray] = {}  # initializers, as numpy until the model is assembled
        self._used: set[str] = set(graph.values)
        self._node_names: set[str] = set()
        self.current: Node | None = None

    # -- names --------------------------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A tensor name not used anywhere yet, based on `hint`."""
        name, i = hint, 1
        while name in self._used:
            i += 1
            name = f"{hint}_{i}"
        self._used.add(name)
        return name

    def tmp(self, suffix: str) -> str:
        """A name for an intermediate result of the current node: `<node>/<suffix>`."""
        return self.fresh(f"{self.current.name}/{suffix}" if self.current is not None else suffix)

    def value(self, v: Value) -> str:
        """The ONNX name of an IR value; a parameter becomes an initializer on first use."""
        if v.kind == "param" and v.name not in self.arrays and v.name not in self.state:
            self.arrays[v.name] = self.param_array(v)
        return v.name

    def out(self, node: Node) -> str:
        return node.output.name

    def param_array(self, v: Value) -> np.ndarray:
        """The data of a parameter (fixed data written in the spec, else the weights), in the export dtype."""
        if v.name in self.state:
            raise ExportError(f"parameter '{v.name}' is an input of this model (training state); its values are "
                              f"not known when exporting")
        p = self.graph.params[v.name]
        arr = p.data if p.data is not None else self.weights[v.name]
        return np.array(arr, dtype=self.np_dtype, order="C")

    # -- building -----------------------------------------------------------------------------------------------
    def const(self, array: Any, hint: str = "const", *, dtype: Any = None) -> str:
        """An extra initializer; floating data defaults to the export dtype, integers stay int64."""
        arr = np.asarray(array)
        if dtype is not None:
            arr = arr.astype(dtype)
        elif np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(self.np_dtype)
        elif np.issubdtype(arr.dtype, np.integer):
            arr = arr.astype(np.int64)
        name = self.tmp(hint)
        self.arrays[name] = np.array(arr, order="C")
        return name

    def scalar(self, x: float, hint: str = "scalar") -> str:
        return self.const(np.array(x, dtype=self.np_dtype), hint)

    def ints(self, xs, hint: str = "ints") -> str:
        return self.const(np.array(list(xs), dtype=np.int64), hint)

    def add_node(self, op_type: str, inputs: list[str], outputs: list[str] | str | None = None, *,
                 name: str | None = None, **attrs: Any) -> str:
        """Add an ONNX node; returns its (first) output name. The node that produces the IR node's output takes
        the IR node's name, helper nodes `<node>/<op_type>`. `outputs` defaults to a fresh intermediate name."""
        if outputs is None:
            outputs = [self.tmp(op_type)]
        elif isinstance(outputs, str):
            outputs = [outputs]
        if name is None:
            base = self.current.name if self.current is not None else op_type
            main = self.current is not None and self.current.output.name in outputs
            name = base if main and base not in self._node_names else f"{base}/{op_type}"
            i = 1
            while name in self._node_names:
                i += 1
                name = f"{base}/{op_type}_{i}"
        self._node_names.add(name)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), list(outputs), name=name, **attrs))
        return outputs[0]

    def value_info(self, name: str, t: TensorType):
        return self.onnx.helper.make_tensor_value_info(name, self.elem_type, list(t.shape))


def _network_parts(net_or_graph: Any, weights: Mapping[str, np.ndarray] | None) -> tuple[Graph, Mapping]:
    from ..network import Network

    if isinstance(net_or_graph, Network):
        graph = net_or_graph.graph
        weights = net_or_graph.weights if weights is None else weights
    elif isinstance(net_or_graph, Graph):
        graph = net_or_graph
    else:
        raise ExportError(f"export_onnx takes a Network or a Graph, got {type(net_or_graph).__name__}")
    if weights is None:
        from ..weights import init_weights

        weights = init_weights(graph, 0)
    elif not isinstance(weights, Mapping):
        from ..weights import load_weights

        weights = load_weights(weights, graph)
    from ..reference.executor import prepare_weights

    prepare_weights(graph, weights)  # raises WeightsError listing every problem
    return graph, weights


def check_opset(opset: Any) -> int:
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"ONNX opset {opset!r} is not supported; choose {MIN_OPSET} to {MAX_OPSET} "
                          f"(default {DEFAULT_OPSET})")
    return int(opset)


@dataclass
class Exported:
    """An exported network before its initializers become TensorProtos."""

    model: Any  # onnx.ModelProto without initializers
    arrays: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def emit_model(net_or_graph: Any, weights, opset: int, name: str | None, dtype: str | None,
               state: Sequence[str] = ()) -> Exported:
    """The ONNX graph of a network, its initializers still numpy arrays. Parameters named in `state` become graph
    inputs (after the graph's own) instead of initializers: a training step feeds its current weights."""
    from ..ops import REGISTRY, epilogue

    opset = check_opset(opset)
    graph, weights = _network_parts(net_or_graph, weights)
    if dtype is None:
        dtypes = {v.type.dtype for v in graph.inputs} or {"float32"}
        dtype = "float64" if "float64" in dtypes else "float32"
    if dtype not in _NP_DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; choose float32 or float64")
    unknown = [n for n in state if n not in graph.params]
    if unknown:
        raise ExportError(f"state {unknown[:3]} names no parameter of {graph.name}")
    e = Emitter(graph, weights, opset, dtype, frozenset(state))
    for node in graph.nodes:
        op = REGISTRY.get(node.op)
        if op is None:
            raise ExportError(f"node '{node.name}': unknown op '{node.op}'")
        e.current = node
        try:
            epilogue.to_onnx(op, node, e)
        except GraphconvError:
            raise
        except Exception as ex:  # noqa: BLE001 - report the node
            raise ExportError(f"node '{node.name}' ({node.op}): cannot export to ONNX: {type(ex).__name__}: {ex}"
                              ) from ex
    e.current = None

    # graph outputs under the spec's output names
    outputs = []
    out_names = set()
    for out_name, v in graph.outputs.items():
        src = e.value(v)
        if out_name == src and src not in out_names and v.kind == "node":
            target = src
        else:
            target = out_name if out_name not in e._used else e.fresh(f"output.{out_name}")
            e._used.add(target)
            e.add_node("Identity", [src], [target], name=e.fresh(f"output.{out_name}"))
        out_names.add(target)
        outputs.append(e.value_info(target, v.type))
    inputs = [e.value_info(v.name, v.type) for v in graph.inputs]
    inputs += [e.value_info(n, graph.params[n].value.type) for n in state]
    value_info = [e.value_info(n.output.name, n.output.type) for n in graph.nodes if n.output.name not in out_names]
    g = onnx.helper.make_graph(e.nodes, name or graph.name, inputs, outputs, value_info=value_info)
    opsets = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(g, opset_imports=opsets, producer_name="graphconv",
                                   producer_version=_version())
    model.ir_version = onnx.helper.find_min_ir_version_for(opsets)
    if graph.meta.get("params"):
        onnx.helper.set_model_props(model, {"graphconv.params": repr(graph.meta["params"])})
    return Exported(model, e.arrays)


def inline(parts: Exported):
    """The model with its initializers inline (one protobuf message)."""
    if parts.nbytes > EXTERNAL_DATA_THRESHOLD:
        raise ExportError(f"the model's tensors take {parts.nbytes / (1 << 30):.2f} GiB, more than one protobuf "
                          "message can hold (2 GiB); export it to a file (export_onnx(net, path)), which keeps the "
                          "weights as external data next to it")
    parts.model.graph.initializer.extend(onnx.numpy_helper.from_array(a, k) for k, a in parts.arrays.items())
    return parts.model


def write_external(parts: Exported, path: str):
    """Write every initializer into `<path>.data` (page-aligned) and reference it from the model. The data goes to
    a new temporary file that then replaces `<path>.data`, so a symbolic or hard link planted under that name is
    replaced, never written through."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.basename(path):
        raise ExportError(f"the model path '{path}' names a folder, not a file")
    if not os.path.isdir(folder):
        raise ExportError(f"cannot write '{path}': the folder '{folder}' does not exist")
    location = os.path.basename(path) + ".data"
    data_path = os.path.join(folder, location)
    tmp = os.path.join(folder, f".{location}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # a new file, with the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            _write_tensors(f, parts, location)
        os.replace(tmp, data_path)
    except BaseException:
        os.unlink(tmp)
        raise
    onnx.save_model(parts.model, path)
    return parts.model


def _write_tensors(f, parts: Exported, location: str) -> None:
    """Each array at the next aligned offset of `f`; the model's initializers point there."""
    for name, arr in parts.arrays.items():
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("<"), order="C", copy=None)  # keeps 0-d arrays 0-d
        offset = -(-f.tell() // EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT
        f.seek(offset)
        f.write(memoryview(arr).cast("B"))
        t = parts.model.graph.initializer.add()
        t.name = name
        t.dims.extend(arr.shape)
        t.data_type = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(arr.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = k, v


def build_model(net_or_graph: Any, *, weights: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
                opset: int = DEFAULT_OPSET, name: str | None = None, dtype: str | None = None,
                state: Sequence[str] = ()) -> onnx.ModelProto:
    """The ONNX ModelProto of a network, in memory (weights inline; parameters in `state` as graph inputs). Raises
    ExportError when the weights exceed what one protobuf message can hold; export to a file then."""
    return inline(emit_model(net_or_graph, weights, opset, name, dtype, state))


def tensor_bytes(model) -> int:
    """Bytes of the initializers stored inline in a model."""
    return sum(len(t.raw_data) for t in model.graph.initializer if t.raw_data)


def export_onnx(net_or_graph: Any, path: str | os.PathLike | None = None, *,
                weights: Mapping[str, np.ndarray] | str | os.PathLike | None = None, opset: int = DEFAULT_OPSET,
                name: str | None = None, dtype: str | None = None,
                external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> onnx.ModelProto:
    """Export a Network (its weights) or a Graph (with `weights`, default: its initializers with seed 0) to ONNX.
    Writes `path` when given (with `<path>.data` for models over `external_data_threshold` bytes; the returned
    model then refers to that file). Returns the onnx.ModelProto."""
    parts = emit_model(net_or_graph, weights, opset, name, dtype)
    if path is None:
        return inline(parts)
    path = os.fspath(path)
    if parts.nbytes > external_data_threshold:
        return write_external(parts, path)
    model = inline(parts)
    onnx.save_model(model, path)
    return model


def _version() -> str:
    from .. import __version__

    return __version__
