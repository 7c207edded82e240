"""Import of ONNX models into graphconv's IR.

    import_onnx(path_or_model) -> (Graph, weights)

Every node is built with `graphconv.ops.build.add_op`, so our op definitions validate it. Initializers become the
parameters of the layers that use them (`<layer>.weight`, ...), returned in `weights`. Integer shape arithmetic
(Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as torch.onnx.export writes flatten) is folded at import, with
the batch dimension carried symbolically. Elementwise ops with a constant operand on [N, C, H, W] tensors become a
depthwise 1×1 convolution (per-channel scale and offset). Ops and cases graphconv cannot express are collected and
reported together in one error.
"""

from __future__ import annotations

import keyword
import math
import os
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import GraphconvError, OpError
from ..ir.graph import Graph, TensorType, Value
from ..ops import ALIASES, REGISTRY
from ..ops.build import add_op
from ..ops.schema import same_pads
from .load import OnnxError, check_tensor_sizes, has_external, load_model

if TYPE_CHECKING:
    import onnx

__all__ = ["import_onnx", "SUPPORTED_OPS", "OnnxError"]

MAX_NODES = 100_000


class _Sym:
    """The symbolic batch size inside folded shape arithmetic."""

    def __repr__(self) -> str:
        return "N"


BATCH = _Sym()


class _Unsupported(Exception):
    """This node cannot be expressed in graphconv (collected, reported with the others)."""


SPEC_KEYWORDS = {"network", "block", "input", "output", "return", "if", "else", "repeat", "include", "let", "and",
                 "or", "not", "true", "false", "as", "N", "f32", "f64"}


def _reserved() -> set[str]:
    from ..init import INITIALIZERS
    from ..spec.names import bare_words, builtin_names
    return SPEC_KEYWORDS | set(REGISTRY) | set(ALIASES) | set(INITIALIZERS) | builtin_names() | set(bare_words()) \
        | set(keyword.kwlist)


class Namer:
    """ONNX names -> unique, valid, readable graphconv names."""

    def __init__(self):
        self.taken: set[str] = set()
        self.reserved = _reserved()

    @staticmethod
    def clean(raw: str) -> str:
        s = re.sub(r"[^A-Za-z0-9_]+", "_", raw).strip("_")
        s = re.sub(r"_+", "_", s)
        if not s:
            s = "v"
        if s[0].isdigit():
            s = "n" + s
        return s[:80]

    def claim(self, raw: str) -> str:
        base = self.clean(raw)
        if base in self.reserved:
            base += "_"
        name, k = base, 1
        while name in self.taken:
            name = f"{base}_{k}"
            k += 1
        self.taken.add(name)
        return name


def _attrs(node) -> dict[str, Any]:
    from onnx import helper
    out = {}
    for a in node.attribute:
        try:
            out[a.name] = helper.get_attribute_value(a)
        except Exception as e:  # noqa: BLE001
            raise OnnxError(f"node '{node.name}' ({node.op_type}): unreadable attribute '{a.name}': {e}") from None
    return out


def _f32(v) -> float:
    """An ONNX float attribute (float32) as the shortest decimal that reads back to the same float32."""
    return float(str(np.float32(v)))


def _decode(v):
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _to_array(t) -> np.ndarray:
    from onnx import numpy_helper
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001
        raise OnnxError(f"tensor '{t.name}': cannot read its data ({e})") from None


class Importer:
    def __init__(self, model):
        self.model = model
        self.g = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.namer = Namer()
        self.consts: dict[str, np.ndarray] = {}
        self.values: dict[str, Value] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.unsupported: list[tuple[str, str, str]] = []
        self.skip: set[int] = set()  # nodes fused into others
        self.alias: dict[str, str] = {}
        self.batch_value: int | None = None
        self.dtype = "float32"

    # -- helpers --------------------------------------------------------------------------------------------
    def where(self, node) -> str:
        return f"node '{node.name or (node.output[0] if node.output else '?')}' ({node.op_type})"

    def fail(self, node, msg: str) -> OnnxError:
        return OnnxError(f"{self.where(node)}: {msg}")

    def const(self, node, i: int, what: str) -> np.ndarray | None:
        if i >= len(node.input) or not node.input[i]:
            return None
        name = node.input[i]
        if name not in self.consts:
            raise _Unsupported(f"its {what} ('{name}') must be a constant (an initializer), not a runtime tensor")
        return self.consts[name]

    def tensor(self, node, i: int) -> Value:
        name = node.input[i] if i < len(node.input) else ""
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            raise _Unsupported(f"input {i} ('{name}') is a constant; graphconv needs a tensor computed from the "
                               "network's inputs here")
        raise self.fail(node, f"input '{name}' is not defined before it is used")

    def layer_name(self, node) -> str:
        for o in node.output[:1]:
            if o in self.graph_outputs:
                return self.namer.claim(o)
        for i in node.input[1:]:
            if i.endswith(".weight") and i in self.init_names:
                return self.namer.claim(i[: -len(".weight")])
        if node.name:
            raw = node.name.lstrip("/")
            parts = raw.split("/")
            if len(parts) > 1 and parts[-1].split("_")[0] == node.op_type:  # /layer1/layer1.0/conv1/Conv
                parts = parts[:-1]
            if len(parts) > 1 and parts[1].startswith(parts[0]):  # layer1/layer1.0/conv1 -> layer1.0/conv1
                parts = parts[1:]
            raw = "/".join(parts)
            return self.namer.claim(raw)
        if node.output and node.output[0]:
            return self.namer.claim(node.output[0])
        return self.namer.claim(node.op_type.lower())

    def emit(self, node, op: str, inputs: list[Value], params: dict[str, np.ndarray] | None = None,
             name: str | None = None, **attrs) -> Value:
        name = name or self.layer_name(node)
        try:
            v = add_op(self.graph, name, op, inputs, **attrs)
        except OpError as e:
            raise self.fail(node, f"cannot be expressed as {op}: {e.message}") from None
        except ValueError as e:
            raise self.fail(node, str(e)) from None
        for role, arr in (params or {}).items():
            pname = f"{name}.{role}"
            if pname not in self.graph.params:
                raise self.fail(node, f"internal: {op} has no parameter '{role}'")
            shape = tuple(int(d) for d in self.graph.params[pname].value.type.shape)
            arr = np.asarray(arr)
            if arr.size == math.prod(shape) and arr.shape != shape:
                arr = arr.reshape(shape)
            if arr.shape != shape:
                raise self.fail(node, f"{role} has shape {list(arr.shape)}, {op} needs {list(shape)}")
            self.weights[pname] = arr.astype(self.dtype)  # one copy, whatever the stored type
        return v

    def bind(self, node, v: Value, k: int = 0) -> None:
        self.values[node.output[k]] = v

    # -- the model ------------------------------------------------------------------------------------------
    def run(self) -> tuple[Graph, dict[str, np.ndarray]]:
        g = self.g
        if len(g.node) > MAX_NODES:
            raise OnnxError(f"the model has {len(g.node)} nodes (limit {MAX_NODES})")
        check_tensor_sizes(self.model)
        if has_external(self.model):
            raise OnnxError("the model has tensors stored as external data; load it from its file "
                            "(import_onnx(path)) so the data is checked and read")
        unsupported = Counter()
        names: dict[str, list[str]] = {}
        for n in g.node:
            if n.domain not in ("", "ai.onnx") or n.op_type not in HANDLERS:
                key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                unsupported[key] += 1
                names.setdefault(key, []).append(n.name or (n.output[0] if n.output else "?"))
        if unsupported:
            lines = [f"  - {op}: {c} node{'s' if c != 1 else ''} ({', '.join(names[op][:5])}"
                     f"{', ...' if c > 5 else ''})" for op, c in sorted(unsupported.items())]
            raise OnnxError(f"the model uses {len(unsupported)} op type{'s' if len(unsupported) != 1 else ''} "
                            "graphconv cannot import:\n" + "\n".join(lines)
                            + f"\n  supported: {', '.join(sorted(HANDLERS))}")
        self.graph = Graph(self.namer.clean(g.name or "imported"))
        self.init_names = {t.name for t in g.initializer}
        for t in g.initializer:
            self.consts[t.name] = _to_array(t)
        self.graph_outputs = {o.name for o in g.output}
        # inputs
        first = True
        batch_param = None
        for inp in g.input:
            if inp.name in self.init_names:
                continue
            tt = inp.type.tensor_type
            if not inp.type.HasField("tensor_type"):
                raise OnnxError(f"input '{inp.name}' is not a tensor")
            if tt.elem_type not in (1, 11):
                raise OnnxError(f"input '{inp.name}' has element type "
                                f"{_elem_name(tt.elem_type)}; graphconv imports float32 and float64 inputs")
            dtype = "float32" if tt.elem_type == 1 else "float64"
            if first:
                self.dtype = dtype
            if not tt.HasField("shape") or len(tt.shape.dim) == 0:
                raise OnnxError(f"input '{inp.name}' has no static shape; graphconv needs [N, ...] with known "
                                "sizes after the batch dimension")
            dims: list[int | str] = []
            for k, d in enumerate(tt.shape.dim):
                if k == 0:
                    if first:
                        batch_param = d.dim_param if d.HasField("dim_param") else None
                        self.batch_value = d.dim_value if d.HasField("dim_value") else None
                        dims.append("N")
                        continue
                    same = (d.HasField("dim_param") and d.dim_param == batch_param) or \
                        (d.HasField("dim_value") and d.dim_value == self.batch_value and len(tt.shape.dim) > 1)
                    if same:
                        dims.append("N")
                        continue
                if not d.HasField("dim_value") or d.dim_value < 1:
                    raise OnnxError(f"input '{inp.name}': dimension {k} is symbolic ('{d.dim_param}'); only the "
                                    "batch dimension (the first) may be")
                dims.append(int(d.dim_value))
            first = False
            name = self.namer.claim(inp.name)
            self.values[inp.name] = self.graph.add_input(name, TensorType(tuple(dims), dtype))
        if not self.graph.inputs:
            raise OnnxError("the model has no (non-constant) input")
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        for idx, n in enumerate(g.node):
            if idx in self.skip:
                continue
            if any(i and i not in self.values and i not in self.consts for i in n.input) and \
                    any(i in self.poisoned for i in n.input):
                for o in n.output:
                    self.poisoned.add(o)
                continue
            try:
                HANDLERS[n.op_type](self, n)
            except _Unsupported as e:
                self.unsupported.append((n.op_type, n.name or n.output[0], str(e)))
                self.poisoned.update(n.output)
        if self.unsupported:
            lines = [f"  - {op} node '{name}': {why}" for op, name, why in self.unsupported]
            raise OnnxError(f"{len(self.unsupported)} node{'s' if len(self.unsupported) != 1 else ''} cannot be "
                            "imported:\n" + "\n".join(lines))
        for o in g.output:
            v = self.values.get(o.name)
            if v is None:
                if o.name in self.consts:
                    raise OnnxError(f"output '{o.name}' is a constant; graphconv outputs must depend on an input")
                raise OnnxError(f"output '{o.name}' is not computed by the graph")
            if v.kind != "node" or v.name in {x for x in self.graph.outputs.values()}:
                v = add_op(self.graph, self.namer.claim(o.name), "identity", [v])
            self.graph.set_output(v.name, v)
        return self.graph, self.weights

    poisoned: set[str] = set()


def _elem_name(t: int) -> str:
    try:
        from onnx import helper
        return helper.tensor_dtype_to_string(t)
    except Exception:  # noqa: BLE001
        return str(t)


# -- handlers ---------------------------------------------------------------------------------------------------

HANDLERS: dict[str, Any] = {}


def handles(*ops):
    def deco(f):
        for o in ops:
            HANDLERS[o] = f
        return f
    return deco


def _spatial(imp: Importer, n, a: dict, key: str, default, count: int = 2):
    v = a.get(key, default)
    v = list(v) if isinstance(v, (list, tuple)) else v
    if isinstance(v, list) and len(v) != count:
        raise imp.fail(n, f"attribute '{key}' has {len(v)} values; a 2-d op needs {count}")
    return v


def _pads(imp: Importer, n, a: dict, x: TensorType, kernel, stride, dilation, ceil_mode=False):
    auto = _decode(a.get("auto_pad", "NOTSET"))
    if auto in ("NOTSET", ""):
        p = _spatial(imp, n, a, "pads", [0, 0, 0, 0], 4)
        if any(v < 0 for v in p):
            raise _Unsupported(f"negative pads {p}")
        extent = [int(d) * (int(k) - 1) + 1 for k, d in zip(kernel, dilation)]
        if any(int(v) > extent[i % 2] for i, v in enumerate(p)):
            # a window that would lie wholly in the padding reads no input: a model that asks for it is broken
            raise imp.fail(n, f"pads {list(p)} are larger than the {extent[0]}×{extent[1]} kernel window")
        return tuple(int(v) for v in p)
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        (t, b), (l, r) = (same_pads(int(x.shape[2]), kernel[0], stride[0], dilation[0]),
                          same_pads(int(x.shape[3]), kernel[1], stride[1], dilation[1]))
        if auto == "SAME_LOWER":
            t, b, l, r = b, t, r, l
        return (t, l, b, r)
    raise imp.fail(n, f"unknown auto_pad '{auto}'")


def _need_2d(imp: Importer, n, x: Value):
    if x.type.rank != 4:
        raise _Unsupported(f"only 2-d (rank-4 [N, C, H, W]) inputs are supported, got {x.type}")


def _conv_operands(imp: Importer, n, what: str):
    """(input, weight, bias or None, attributes) of a Conv or ConvTranspose node, which must be 2-d."""
    x = imp.tensor(n, 0)
    w = imp.const(n, 1, "weight")
    b = imp.const(n, 2, "bias")
    a = _attrs(n)
    _need_2d(imp, n, x)
    if w.ndim != 4:
        raise _Unsupported(f"weight of rank {w.ndim}; only 2-d {what} are supported")
    return x, w, b, a


@handles("Conv")
def _conv(imp: Importer, n):
    x, w, b, a = _conv_operands(imp, n, "convolutions")
    ks = a.get("kernel_shape")
    if ks is not None and list(ks) != list(w.shape[2:]):
        raise imp.fail(n, f"kernel_shape {list(ks)} does not match the weight's {list(w.shape[2:])}")
    kernel = (int(w.shape[2]), int(w.shape[3]))
    stride = tuple(_spatial(imp, n, a, "strides", [1, 1]))
    dil = tuple(_spatial(imp, n, a, "dilations", [1, 1]))
    group = int(a.get("group", 1))
    if group < 1 or int(x.type.shape[1]) != w.shape[1] * group:
        raise imp.fail(n, f"weight {list(w.shape)} with group={group} does not fit input {x.type}")
    pads = _pads(imp, n, a, x.type, kernel, stride, dil)
    params = {"weight": w}
    if b is not None:
        params["bias"] = b
    imp.bind(n, imp.emit(n, "conv2d", [x], params, out_channels=int(w.shape[0]), kernel=kernel, stride=stride,
                         padding=pads, dilation=dil, groups=group, bias=b is not None))


@handles("ConvTranspose")
def _conv_t(imp: Importer, n):
    x, w, b, a = _conv_operands(imp, n, "transposed convolutions")
    group = int(a.get("group", 1))
    kernel = (int(w.shape[2]), int(w.shape[3]))
    stride = _spatial(imp, n, a, "strides", [1, 1])
    dil = _spatial(imp, n, a, "dilations", [1, 1])
    opad = _spatial(imp, n, a, "output_padding", [0, 0])
    if int(x.type.shape[1]) != w.shape[0]:
        raise imp.fail(n, f"weight {list(w.shape)} does not fit input {x.type}")
    auto = _decode(a.get("auto_pad", "NOTSET"))
    out_shape = a.get("output_shape")
    h, wd = int(x.type.shape[2]), int(x.type.shape[3])
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        if out_shape is not None:
            out_shape = list(out_shape)[-2:]
        else:
            out_shape = [h * stride[0], wd * stride[1]]
        pads = []
        for size, k, s, d, op, o in zip((h, wd), kernel, stride, dil, opad, out_shape):
            total = s * (size - 1) + op + (k - 1) * d + 1 - o
            if total < 0:
                raise _Unsupported(f"output_shape {out_shape} needs negative padding")
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads.append((lo, total - lo))
        pads = (pads[0][0], pads[1][0], pads[0][1], pads[1][1])
    elif auto == "VALID":
        pads = (0, 0, 0, 0)
    else:
        p = _spatial(imp, n, a, "pads", [0, 0, 0, 0], 4)
        if any(v < 0 for v in p):
            raise _Unsupported(f"negative pads {p}")
        pads = tuple(int(v) for v in p)
    params = {"weight": w}
    if b is not None:
        params["bias"] = b
    imp.bind(n, imp.emit(n, "conv_transpose2d", [x], params, out_channels=int(w.shape[1]) * group, kernel=kernel,
                         stride=tuple(stride), padding=pads, output_padding=tuple(opad), dilation=tuple(dil),
                         groups=group, bias=b is not None))


def _dense(imp: Importer, n, x: Value, weight: np.ndarray, bias: np.ndarray | None, name: str | None = None):
    if x.type.rank != 2:
        raise _Unsupported(f"dense layers take [N, features] inputs, got {x.type}")
    params = {"weight": weight}
    if bias is not None:
        params["bias"] = bias
    return imp.emit(n, "dense", [x], params, name=name, units=int(weight.shape[0]), bias=bias is not None)


def _bias_vector(imp, n, c: np.ndarray, units: int) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    if c.size == 1:
        return np.full(units, float(c.reshape(-1)[0]))
    if c.shape in ((units,), (1, units)):
        return c.reshape(units)
    raise _Unsupported(f"bias of shape {list(c.shape)} (graphconv's dense adds a [units] bias)")


@handles("Gemm")
def _gemm(imp: Importer, n):
    a = _attrs(n)
    if a.get("transA", 0):
        raise _Unsupported("transA=1 would transpose the batch dimension")
    x = imp.tensor(n, 0)
    bm = imp.const(n, 1, "B")
    if bm.ndim != 2:
        raise imp.fail(n, f"B has shape {list(bm.shape)}; Gemm needs a matrix")
    w = bm if a.get("transB", 0) else bm.T
    w = w.astype(np.float64) * float(a.get("alpha", 1.0))
    if x.type.rank == 2 and int(x.type.shape[1]) != w.shape[1]:
        raise imp.fail(n, f"B {list(bm.shape)} (transB={a.get('transB', 0)}) does not fit input {x.type}")
    c = imp.const(n, 2, "C")
    bias = None if c is None else _bias_vector(imp, n, c, w.shape[0]) * float(a.get("beta", 1.0))
    imp.bind(n, _dense(imp, n, x, w, bias))


@handles("MatMul")
def _matmul(imp: Importer, n):
    x = imp.tensor(n, 0)
    bm = imp.const(n, 1, "second operand")
    if bm.ndim != 2 or x.type.rank != 2 or int(x.type.shape[1]) != bm.shape[0]:
        raise _Unsupported(f"only [N, K] x constant [K, M] matrix products are supported, got {x.type} x "
                           f"{list(bm.shape)}")
    w = bm.T
    bias = None
    users = imp.consumers.get(n.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add" and n.output[0] not in imp.graph_outputs:
        add = users[0]
        other = [i for i in add.input if i != n.output[0]]
        if len(other) == 1 and other[0] in imp.consts:
            c = imp.consts[other[0]]
            if c.size == 1 or c.shape in ((w.shape[0],), (1, w.shape[0])):
                bias = _bias_vector(imp, n, c, w.shape[0])
                idx = list(imp.g.node).index(add)
                imp.skip.add(idx)
                v = _dense(imp, add, x, w, bias, name=imp.layer_name(add) if add.output[0] in imp.graph_outputs
                           else imp.layer_name(n))
                imp.values[add.output[0]] = v
                imp.bind(n, v)
                return
    imp.bind(n, _dense(imp, n, x, w, None))


# elementwise ------------------------------------------------------------------------------------------------

_FOLD = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}


def _fold_binary(imp, n, a, b):
    if n.op_type == "Div":
        if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
            return np.trunc(a / b).astype(a.dtype)
        return a / b
    return _FOLD[n.op_type](a, b)


def _channel_affine(imp, n, x: Value, scale, offset):
    """x·scale + offset per channel as a depthwise 1×1 convolution."""
    _need_2d(imp, n, x)
    c = int(x.type.shape[1])
    w = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (c,)).reshape(c, 1, 1, 1)
    params = {"weight": w}
    has_bias = offset is not None
    if has_bias:
        params["bias"] = np.broadcast_to(np.asarray(offset, np.float64).reshape(-1), (c,))
    return imp.emit(n, "conv2d", [x], params, out_channels=c, kernel=1, groups=c, bias=has_bias)


def _per_channel(imp, n, c: np.ndarray, x: Value) -> np.ndarray:
    """A constant operand as a per-channel vector for [N, C, H, W], or _Unsupported."""
    if x.type.rank == 4 and c.ndim <= 4:
        shape = (1,) * (4 - c.ndim) + c.shape
        ch = int(x.type.shape[1])
        if shape[0] == 1 and shape[2] == 1 and shape[3] == 1 and shape[1] in (1, ch):
            return np.asarray(c, np.float64).reshape(-1)
    raise _Unsupported(f"a constant operand of shape {list(c.shape)} on {x.type}; graphconv has no constant "
                       "tensors, only per-channel scale/offset on [N, C, H, W] (as a depthwise 1×1 convolution)")


@handles("Add", "Sub", "Mul", "Div")
def _binary(imp: Importer, n):
    if len(n.input) != 2:
        raise imp.fail(n, f"takes 2 inputs, got {len(n.input)}")
    ia, ib = n.input
    ca, cb = imp.consts.get(ia), imp.consts.get(ib)
    if ca is not None and cb is not None:
        try:
            imp.consts[n.output[0]] = _fold_binary(imp, n, ca, cb)
        except Exception as e:  # noqa: BLE001 - arithmetic on the symbolic batch size, bad shapes
            raise _Unsupported(f"cannot fold constant arithmetic ({e})") from None
        return
    op = n.op_type
    if ca is None and cb is None:
        xa, xb = imp.tensor(n, 0), imp.tensor(n, 1)
        imp.bind(n, imp.emit(n, op.lower(), [xa, xb]))
        return
    if ca is not None:  # constant first
        x, c = imp.tensor(n, 1), ca
        if op == "Div":
            raise _Unsupported("constant divided by a tensor (graphconv has no reciprocal)")
        v = _per_channel(imp, n, c, x)
        scale, offset = {"Add": (1.0, v), "Mul": (v, None), "Sub": (-1.0, v)}[op]
    else:
        x, c = imp.tensor(n, 0), cb
        v = _per_channel(imp, n, c, x)
        if op == "Div" and np.any(v == 0):
            raise _Unsupported("division by a constant containing zeros")
        if op == "Div":
            scale, offset = 1.0 / v, None
        else:
            scale, offset = {"Add": (1.0, v), "Mul": (v, None), "Sub": (1.0, -v)}[op]
    imp.bind(n, _channel_affine(imp, n, x, scale, offset))


# activations ------------------------------------------------------------------------------------------------

def _unary(op: str, **fixed):
    def handler(imp: Importer, n):
        imp.bind(n, imp.emit(n, op, [imp.tensor(n, 0)], **fixed))
    return handler


HANDLERS["Relu"] = _unary("relu")
HANDLERS["Sigmoid"] = _unary("sigmoid")
HANDLERS["Tanh"] = _unary("tanh")


@handles("LeakyRelu")
def _leaky(imp, n):
    imp.bind(n, imp.emit(n, "leaky_relu", [imp.tensor(n, 0)], alpha=_f32(_attrs(n).get("alpha", 0.01))))


@handles("Elu")
def _elu(imp, n):
    imp.bind(n, imp.emit(n, "elu", [imp.tensor(n, 0)], alpha=_f32(_attrs(n).get("alpha", 1.0))))


@handles("Selu")
def _selu(imp, n):
    from ..ops.activation import SELU_ALPHA, SELU_SCALE
    a = _attrs(n)
    alpha, gamma = float(a.get("alpha", 1.67326319217681884765625)), float(a.get("gamma", 1.05070102214813232421875))
    if abs(alpha - SELU_ALPHA) > 1e-6 or abs(gamma - SELU_SCALE) > 1e-6:
        raise _Unsupported(f"alpha={alpha:g}, gamma={gamma:g}; graphconv's selu has the standard constants only")
    imp.bind(n, imp.emit(n, "selu", [imp.tensor(n, 0)]))


@handles("Clip")
def _clip(imp, n):
    a = _attrs(n)
    lo, hi = a.get("min"), a.get("max")
    if imp.opset >= 11 or len(n.input) > 1:
        lo_c, hi_c = imp.const(n, 1, "min"), imp.const(n, 2, "max")
        lo = None if lo_c is None else float(np.asarray(lo_c).reshape(-1)[0])
        hi = None if hi_c is None else float(np.asarray(hi_c).reshape(-1)[0])
        for c in (lo_c, hi_c):
            if c is not None and np.asarray(c).size != 1:
                raise imp.fail(n, "min and max must be scalars")
    lo = None if lo is None or lo <= -3.4e38 or not math.isfinite(lo) else float(lo)
    hi = None if hi is None or hi >= 3.4e38 or not math.isfinite(hi) else float(hi)
    x = imp.tensor(n, 0)
    if lo is None and hi is None:
        imp.bind(n, imp.emit(n, "identity", [x]))
        return
    if lo is not None and hi is not None and lo > hi:  # ONNX: every value becomes max
        raise _Unsupported(f"min {lo:g} above max {hi:g}")
    imp.bind(n, imp.emit(n, "clip", [x], min=lo, max=hi))


@handles("Softmax", "LogSoftmax")
def _softmax(imp, n):
    x = imp.tensor(n, 0)
    a = _attrs(n)
    op = "softmax" if n.op_type == "Softmax" else "log_softmax"
    axis = int(a.get("axis", -1 if imp.opset >= 13 else 1))
    if imp.opset < 13 and axis % max(x.type.rank, 1) != x.type.rank - 1:
        raise _Unsupported(f"opset {imp.opset} {n.op_type} with axis={axis} normalizes over the flattened "
                           f"dimensions {axis}.. of {x.type}; only the last axis is supported")
    imp.bind(n, imp.emit(n, op, [x], axis=axis))


@handles("Dropout")
def _dropout(imp, n):
    if len(n.output) > 1 and n.output[1] and (imp.consumers.get(n.output[1]) or n.output[1] in imp.graph_outputs):
        raise _Unsupported("its mask output is used")
    if len(n.input) > 2 and n.input[2]:
        tm = imp.const(n, 2, "training_mode")
        if bool(np.asarray(tm).reshape(-1)[0]):
            raise _Unsupported("training_mode is true (random masks differ from onnxruntime's)")
    x = imp.tensor(n, 0)
    a = _attrs(n)
    rate = a.get("ratio", 0.5)
    r = imp.const(n, 1, "ratio") if len(n.input) > 1 and n.input[1] else None
    if r is not None:
        rate = float(np.asarray(r).reshape(-1)[0])
    rate = float(rate)
    if 0.0 <= rate < 1.0:
        imp.bind(n, imp.emit(n, "dropout", [x], rate=rate))
    else:
        imp.bind(n, imp.emit(n, "identity", [x]))


@handles("Identity")
def _identity(imp, n):
    i = n.input[0]
    if i in imp.consts:
        imp.consts[n.output[0]] = imp.consts[i]
        return
    x = imp.tensor(n, 0)
    if n.output[0] in imp.graph_outputs or x.kind != "node":
        imp.bind(n, imp.emit(n, "identity", [x]))
    else:
        imp.bind(n, x)


# pooling ----------------------------------------------------------------------------------------------------

@handles("MaxPool", "AveragePool", "LpPool")
def _pool(imp, n):
    if n.op_type == "MaxPool" and len(n.output) > 1 and n.output[1] and \
            (imp.consumers.get(n.output[1]) or n.output[1] in imp.graph_outputs):
        raise _Unsupported("its Indices output is used")
    x = imp.tensor(n, 0)
    a = _attrs(n)
    _need_2d(imp, n, x)
    if "kernel_shape" not in a:
        raise imp.fail(n, "missing kernel_shape")
    kernel = tuple(_spatial(imp, n, a, "kernel_shape", None))
    stride = tuple(_spatial(imp, n, a, "strides", [1, 1]))
    dil = tuple(_spatial(imp, n, a, "dilations", [1, 1]))
    ceil = bool(a.get("ceil_mode", 0))
    pads = _pads(imp, n, a, x.type, kernel, stride, dil)
    extra: dict[str, Any] = {}
    if n.op_type == "MaxPool":
        op = "max_pool2d"
        if int(a.get("storage_order", 0)) not in (0, 1):
            raise imp.fail(n, "bad storage_order")
        extra["dilation"] = dil
    else:
        if dil != (1, 1):
            raise _Unsupported(f"dilations {list(dil)} on {n.op_type}")
        if n.op_type == "AveragePool":
            op = "avg_pool2d"
            extra["count_include_pad"] = bool(a.get("count_include_pad", 0))
        else:
            op = "lp_pool2d"
            extra["p"] = float(a.get("p", 2))
    imp.bind(n, imp.emit(n, op, [x], kernel=kernel, stride=stride, padding=pads, ceil_mode=ceil, **extra))


@handles("GlobalAveragePool", "GlobalMaxPool")
def _gpool(imp, n):
    x = imp.tensor(n, 0)
    _need_2d(imp, n, x)
    op = "global_avg_pool" if n.op_type == "GlobalAveragePool" else "global_max_pool"
    imp.bind(n, imp.emit(n, op, [x]))


@handles("ReduceMean", "ReduceMax")
def _reduce(imp, n):
    x = imp.tensor(n, 0)
    a = _attrs(n)
    axes = a.get("axes")
    if axes is None and len(n.input) > 1 and n.input[1]:
        axes = imp.const(n, 1, "axes").reshape(-1).tolist()
    axes = sorted(int(v) % max(x.type.rank, 1) for v in axes) if axes is not None else None
    if x.type.rank != 4 or axes != [2, 3]:
        raise _Unsupported(f"only the mean/max over H and W of [N, C, H, W] is supported (axes {axes} of "
                           f"{x.type})")
    op = "global_avg_pool" if n.op_type == "ReduceMean" else "global_max_pool"
    keep = int(a.get("keepdims", 1))
    if keep:
        imp.bind(n, imp.emit(n, op, [x]))
    else:
        v = imp.emit(n, op, [x], name=imp.namer.claim(imp.layer_name(n) + "_pool"))
        imp.bind(n, imp.emit(n, "flatten", [v]))


# normalization ------------------------------------------------------------------------------------------------

@handles("BatchNormalization")
def _bn(imp, n):
    a = _attrs(n)
    if a.get("training_mode", 0):
        raise _Unsupported("training_mode=1")
    if any(o for o in n.output[1:]):
        raise _Unsupported("its running-statistics outputs are used (training mode)")
    x = imp.tensor(n, 0)
    scale, bias, mean, var = (imp.const(n, i, w) for i, w in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
    if any(t is None for t in (scale, bias, mean, var)):
        raise imp.fail(n, "needs scale, B, mean and var")
    c = int(x.type.shape[1]) if x.type.rank >= 2 else -1
    for nm, t in (("scale", scale), ("B", bias), ("mean", mean), ("var", var)):
        if t.shape != (c,):
            raise imp.fail(n, f"{nm} has shape {list(t.shape)}, expected [{c}] for input {x.type}")
    if x.type.rank not in (2, 4):
        raise _Unsupported(f"batch normalization of {x.type} (graphconv's takes [N, C] or [N, C, H, W])")
    eps = _f32(a.get("epsilon", 1e-5))
    imp.bind(n, imp.emit(n, "batchnorm", [x], {"weight": scale, "bias": bias, "running_mean": mean,
                                               "running_var": var}, eps=eps))


@handles("LRN")
def _lrn(imp, n):
    a = _attrs(n)
    if "size" not in a:
        raise imp.fail(n, "missing size")
    imp.bind(n, imp.emit(n, "lrn", [imp.tensor(n, 0)], size=int(a["size"]), alpha=_f32(a.get("alpha", 1e-4)),
                         beta=_f32(a.get("beta", 0.75)), bias=_f32(a.get("bias", 1.0))))


# shapes -----------------------------------------------------------------------------------------------------

@handles("Concat")
def _concat(imp, n):
    a = _attrs(n)
    if "axis" not in a:
        raise imp.fail(n, "missing axis")
    axis = int(a["axis"])
    ins = [i for i in n.input if i]
    if all(i in imp.consts for i in ins):
        try:
            imp.consts[n.output[0]] = np.concatenate([np.asarray(imp.consts[i]).reshape(-1)
                                                      if imp.consts[i].ndim == 0 else imp.consts[i] for i in ins],
                                                     axis=axis)
        except Exception as e:  # noqa: BLE001
            raise imp.fail(n, f"cannot concatenate its constant inputs: {e}") from None
        return
    xs = [imp.tensor(n, k) for k, i in enumerate(n.input) if i]
    if len(xs) == 1:
        imp.bind(n, imp.emit(n, "identity", xs))
        return
    imp.bind(n, imp.emit(n, "concat", xs, axis=axis))


@handles("Flatten")
def _flatten(imp, n):
    a = _attrs(n)
    axis = int(a.get("axis", 1))
    if n.input[0] in imp.consts:
        c = imp.consts[n.input[0]]
        axis %= max(c.ndim, 1)
        imp.consts[n.output[0]] = c.reshape(int(np.prod(c.shape[:axis])), -1)
        return
    x = imp.tensor(n, 0)
    axis = axis % x.type.rank if x.type.rank else 0
    if axis == 1:
        imp.bind(n, imp.emit(n, "flatten", [x]))
    else:
        raise _Unsupported(f"axis={a.get('axis', 1)} would merge the batch dimension with others (only axis 1 "
                           "keeps it)")


def _target_shape(imp, n, x: TensorType, shape: np.ndarray, allowzero: bool) -> list[int]:
    """Per-sample dimensions of a Reshape target whose first entry must stand for the batch."""
    items = list(shape.reshape(-1))
    if not items:
        raise _Unsupported("reshape to a scalar")
    per_sample = math.prod(int(d) for d in x.shape[1:])
    out: list[int] = []
    for k, d in enumerate(items[1:], 1):
        if d is BATCH or isinstance(d, _Sym):
            raise _Unsupported(f"the batch size appears at position {k} of the target shape")
        d = int(d)
        if d == 0 and not allowzero:
            if k >= x.rank:
                raise imp.fail(n, f"target shape has 0 at position {k} but the input {x} has no such dimension")
            d = int(x.shape[k])
        out.append(d)
    first = items[0]
    ok = first is BATCH or isinstance(first, _Sym) or (not allowzero and first == 0) \
        or (imp.batch_value is not None and first == imp.batch_value and imp.batch_value != -1)
    if not ok and first == -1 and -1 not in out:
        ok = math.prod(out) == per_sample and per_sample > 0
    if not ok:
        raise _Unsupported(f"target shape {[str(v) for v in items]} does not keep the batch dimension first")
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise imp.fail(n, f"invalid target shape {[str(v) for v in items]}")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or per_sample % known:
            raise imp.fail(n, f"cannot reshape {x} to {[str(v) for v in items]}")
        out = [per_sample // known if d == -1 else d for d in out]
    if math.prod(out) != per_sample:
        raise imp.fail(n, f"cannot reshape {x} ({per_sample} elements per sample) to {[str(v) for v in items]}")
    return out


@handles("Reshape")
def _reshape(imp, n):
    a = _attrs(n)
    shape = imp.const(n, 1, "shape") if len(n.input) > 1 else np.asarray(a.get("shape", []), dtype=np.int64)
    if n.input[0] in imp.consts:
        try:
            imp.consts[n.output[0]] = np.reshape(imp.consts[n.input[0]], [int(d) for d in shape.reshape(-1)])
        except Exception as e:  # noqa: BLE001
            raise _Unsupported(f"cannot fold a constant reshape: {e}") from None
        return
    x = imp.tensor(n, 0)
    out = _target_shape(imp, n, x.type, np.asarray(shape, dtype=object), bool(a.get("allowzero", 0)))
    if list(x.type.shape[1:]) == out:
        imp.bind(n, imp.emit(n, "identity", [x]))
    elif len(out) == 1:
        imp.bind(n, imp.emit(n, "flatten", [x]))
    else:
        imp.bind(n, imp.emit(n, "reshape", [x], shape=out))


@handles("Transpose")
def _transpose(imp, n):
    a = _attrs(n)
    if n.input[0] in imp.consts:
        c = imp.consts[n.input[0]]
        perm = a.get("perm")
        try:
            imp.consts[n.output[0]] = np.transpose(c, None if perm is None else [int(p) for p in perm])
        except Exception as e:  # noqa: BLE001
            raise _Unsupported(f"cannot fold a constant transpose: {e}") from None
        return
    x = imp.tensor(n, 0)
    r = x.type.rank
    perm = [int(p) for p in a["perm"]] if "perm" in a else list(range(r - 1, -1, -1))  # default: reverse
    if sorted(perm) != list(range(r)):
        raise imp.fail(n, f"perm {perm} is not a permutation of the {r} axes of its input {x.type}")
    if perm[0] != 0:
        raise _Unsupported(f"perm {perm}{'' if 'perm' in a else ' (the default: all axes reversed)'} moves the "
                           f"batch dimension of {x.type}; graphconv keeps the batch dimension first (perm[0] must "
                           "be 0)")
    if perm == list(range(r)):
        imp.bind(n, imp.emit(n, "identity", [x]))
    else:
        imp.bind(n, imp.emit(n, "transpose", [x], perm=perm))


@handles("Pad")
def _pad(imp, n):
    a = _attrs(n)
    x = imp.tensor(n, 0)
    mode = _decode(a.get("mode", "constant"))
    if imp.opset >= 11:
        pads = imp.const(n, 1, "pads")
        value = imp.const(n, 2, "constant_value") if len(n.input) > 2 and n.input[2] else None
        value = 0.0 if value is None or np.asarray(value).size == 0 else float(np.asarray(value).reshape(-1)[0])
        axes = imp.const(n, 3, "axes") if len(n.input) > 3 and n.input[3] else None
    else:
        pads, value, axes = np.asarray(a.get("pads", [])), float(a.get("value", 0.0)), None
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    r = x.type.rank
    axes = list(range(r)) if axes is None else [int(v) % r for v in np.asarray(axes).reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise imp.fail(n, f"pads has {len(pads)} values for {len(axes)} axes")
    full = [0] * (2 * r)
    for k, ax in enumerate(axes):
        full[ax], full[r + ax] = pads[k], pads[len(axes) + k]
    if r != 4 or any(full[i] or full[r + i] for i in (0, 1)):
        raise _Unsupported(f"padding {pads} of {x.type}; graphconv pads H and W of [N, C, H, W] only")
    if any(p < 0 for p in full):
        raise _Unsupported(f"negative pads {pads} (cropping)")
    if mode not in ("constant", "reflect", "edge"):
        raise _Unsupported(f"mode '{mode}'")
    attrs = dict(pads=(full[2], full[3], full[6], full[7]), mode=mode)
    if mode == "constant":
        attrs["value"] = value
    imp.bind(n, imp.emit(n, "pad", [x], **attrs))


@handles("Resize", "Upsample")
def _resize(imp, n):
    a = _attrs(n)
    x = imp.tensor(n, 0)
    _need_2d(imp, n, x)
    mode = _decode(a.get("mode", "nearest"))
    h, w = int(x.type.shape[2]), int(x.type.shape[3])
    scales = sizes = None
    if n.op_type == "Upsample":
        coord, nearest_mode = "asymmetric", "floor"
        scales = a.get("scales") if "scales" in a else imp.const(n, 1, "scales")
    else:
        coord = _decode(a.get("coordinate_transformation_mode", "half_pixel" if imp.opset >= 11 else "asymmetric"))
        nearest_mode = _decode(a.get("nearest_mode", "round_prefer_floor"))
        if a.get("antialias", 0):
            raise _Unsupported("antialias=1")
        if imp.opset < 11:
            scales = imp.const(n, 1, "scales")
        else:
            s = imp.const(n, 2, "scales") if len(n.input) > 2 and n.input[2] else None
            z = imp.const(n, 3, "sizes") if len(n.input) > 3 and n.input[3] else None
            scales = s if s is not None and np.asarray(s).size else None
            sizes = z if z is not None and np.asarray(z).size else None
        if a.get("axes") is not None:
            axes = [int(v) % 4 for v in a["axes"]]
            full_s, full_z = [1.0] * 4, [1, int(x.type.shape[1]), h, w]
            for k, ax in enumerate(axes):
                if scales is not None:
                    full_s[ax] = float(np.asarray(scales).reshape(-1)[k])
                if sizes is not None:
                    full_z[ax] = int(np.asarray(sizes).reshape(-1)[k])
            scales = None if scales is None else np.asarray(full_s)
            sizes = None if sizes is None else np.asarray(full_z)
        if _decode(a.get("keep_aspect_ratio_policy", "stretch")) != "stretch" and sizes is not None:
            raise _Unsupported("keep_aspect_ratio_policy other than stretch")
    if sizes is not None:
        sz = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(sz) != 4 or sz[1] != int(x.type.shape[1]):
            raise _Unsupported(f"sizes {sz} resize more than H and W")
        oh, ow = sz[2], sz[3]
        attr = dict(size=(oh, ow))
        integer = oh % h == 0 and ow % w == 0
    elif scales is not None:
        sc = [float(v) for v in np.asarray(scales).reshape(-1)]
        if len(sc) != 4 or sc[0] != 1 or sc[1] != 1:
            raise _Unsupported(f"scales {sc} resize more than H and W")
        oh, ow = h * sc[2], w * sc[3]
        if oh != int(oh) or ow != int(ow):
            raise _Unsupported(f"scales {sc[2:]} give a fractional output size from {h}×{w}")
        oh, ow = int(oh), int(ow)
        if sc[2] == int(sc[2]) and sc[3] == int(sc[3]):
            attr = dict(scale=(int(sc[2]), int(sc[3])))
        else:
            attr = dict(size=(oh, ow))
        integer = sc[2] == int(sc[2]) and sc[3] == int(sc[3])
    else:
        raise imp.fail(n, "needs scales or sizes")
    if mode == "nearest":
        ok = (coord == "asymmetric" and nearest_mode == "floor") or \
            (integer and oh >= h and ow >= w and coord in ("half_pixel", "pytorch_half_pixel")
             and nearest_mode in ("round_prefer_floor", "round_prefer_ceil"))
        if not ok:
            raise _Unsupported(f"nearest with coordinate_transformation_mode={coord}, nearest_mode={nearest_mode} "
                               "(graphconv's nearest is asymmetric + floor)")
        imp.bind(n, imp.emit(n, "upsample", [x], mode="nearest", **attr))
    elif mode in ("linear", "bilinear"):
        if coord != "align_corners" and (oh == 1 or ow == 1):
            raise _Unsupported(f"linear resize to a size of 1 ({oh}×{ow}) with {coord}")
        if coord in ("half_pixel", "pytorch_half_pixel") and not (coord == "half_pixel" and (oh == 1 or ow == 1)):
            align = False
        elif coord == "align_corners":
            align = True
        else:
            raise _Unsupported(f"linear with coordinate_transformation_mode={coord} (graphconv's bilinear is "
                               "half_pixel or align_corners)")
        imp.bind(n, imp.emit(n, "upsample", [x], mode="bilinear", align_corners=align, **attr))
    else:
        raise _Unsupported(f"mode '{mode}'")


# constant folding of shape arithmetic -------------------------------------------------------------------------

def _const_in(imp, n, i, what="input"):
    name = n.input[i] if i < len(n.input) else ""
    if not name:
        return None
    if name not in imp.consts:
        raise _Unsupported(f"its {what} '{name}' is a runtime tensor; graphconv folds {n.op_type} only on "
                           "constants and shapes")
    return imp.consts[name]


@handles("Constant")
def _constant(imp, n):
    from onnx import numpy_helper
    a = n.attribute
    if not a:
        raise imp.fail(n, "has no value")
    at = a[0]
    if at.name == "value":
        v = numpy_helper.to_array(at.t)
    elif at.name == "value_float":
        v = np.array(at.f, np.float32)
    elif at.name == "value_floats":
        v = np.array(list(at.floats), np.float32)
    elif at.name == "value_int":
        v = np.array(at.i, np.int64)
    elif at.name == "value_ints":
        v = np.array(list(at.ints), np.int64)
    else:
        raise _Unsupported(f"constant kind '{at.name}'")
    imp.consts[n.output[0]] = v


@handles("Shape")
def _shape(imp, n):
    name = n.input[0]
    if name in imp.consts:
        shape = list(imp.consts[name].shape)
    else:
        x = imp.tensor(n, 0)
        shape = [BATCH if isinstance(d, str) else int(d) for d in x.type.shape]
    a = _attrs(n)
    start, end = a.get("start", 0), a.get("end")
    shape = shape[start:end] if end is not None else shape[start:]
    imp.consts[n.output[0]] = _obj(shape)


def _obj(items) -> np.ndarray:
    items = list(items)
    if any(isinstance(i, _Sym) for i in items):
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return arr
    return np.asarray(items, dtype=np.int64)


@handles("Gather")
def _gather(imp, n):
    data, idx = _const_in(imp, n, 0, "data"), _const_in(imp, n, 1, "indices")
    axis = int(_attrs(n).get("axis", 0))
    imp.consts[n.output[0]] = np.take(data, np.asarray(idx, dtype=np.int64), axis=axis)


@handles("Unsqueeze")
def _unsqueeze(imp, n):
    data = _const_in(imp, n, 0, "data")
    axes = _attrs(n).get("axes")
    if axes is None:
        axes = _const_in(imp, n, 1, "axes").reshape(-1).tolist()
    out = np.asarray(data)
    rank = out.ndim + len(axes)
    for ax in sorted(int(v) % rank for v in axes):
        out = np.expand_dims(out, ax)
    imp.consts[n.output[0]] = out


@handles("Squeeze")
def _squeeze(imp, n):
    data = _const_in(imp, n, 0, "data")
    axes = _attrs(n).get("axes")
    if axes is None and len(n.input) > 1 and n.input[1]:
        axes = _const_in(imp, n, 1, "axes").reshape(-1).tolist()
    imp.consts[n.output[0]] = np.squeeze(data, axis=None if axes is None else tuple(int(v) for v in axes))


@handles("Cast")
def _cast(imp, n):
    from onnx import helper
    data = _const_in(imp, n, 0, "data")
    to = int(_attrs(n).get("to", 1))
    if data.dtype == object:
        imp.consts[n.output[0]] = data
        return
    imp.consts[n.output[0]] = data.astype(helper.tensor_dtype_to_np_dtype(to))


def _int_list(imp, n, v, what: str) -> list[int]:
    arr = np.asarray(v)
    if arr.dtype == object or arr.ndim > 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise imp.fail(n, f"{what} must be a 1-d list of integers, got {arr.tolist()!r}")
    return [int(x) for x in arr.reshape(-1)]


def _batch_untouched(imp, start: int, end: int, step: int) -> bool:
    """Whether a slice of the batch axis keeps every sample (torch writes x[:, a:b] with axes [1] only, but some
    exporters list axis 0 with the full range)."""
    if step != 1 or start not in (0, -(1 << 63)):
        return False
    return end >= (1 << 31) - 1 or (imp.batch_value is not None and end >= imp.batch_value)


@handles("Slice")
def _slice(imp, n):
    a = _attrs(n)
    if imp.opset < 10:
        starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
    else:
        starts, ends = imp.const(n, 1, "starts"), imp.const(n, 2, "ends")
        axes, steps = imp.const(n, 3, "axes"), imp.const(n, 4, "steps")
    if starts is None or ends is None:
        raise imp.fail(n, "needs starts and ends")
    starts, ends = _int_list(imp, n, starts, "starts"), _int_list(imp, n, ends, "ends")
    axes = list(range(len(starts))) if axes is None else _int_list(imp, n, axes, "axes")
    steps = [1] * len(starts) if steps is None else _int_list(imp, n, steps, "steps")
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise imp.fail(n, f"starts, ends, axes and steps have different lengths ({len(starts)}, {len(ends)}, "
                          f"{len(axes)}, {len(steps)})")
    if 0 in steps:
        raise imp.fail(n, "a step is 0")
    data = imp.consts.get(n.input[0]) if n.input else None
    if data is not None:  # shape arithmetic, folded
        sl = [slice(None)] * data.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps):
            sl[ax % data.ndim] = slice(s, e, st)
        imp.consts[n.output[0]] = data[tuple(sl)]
        return
    x = imp.tensor(n, 0)
    if len(set(ax % x.type.rank if -x.type.rank <= ax < x.type.rank else ax for ax in axes)) != len(axes):
        raise imp.fail(n, f"axes {axes} repeat an axis")
    cuts = []
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if ax % max(x.type.rank, 1) == 0 and -x.type.rank <= ax < x.type.rank:
            if not _batch_untouched(imp, s, e, st):
                raise _Unsupported(f"it slices the batch dimension ([{s}:{e}:{st}] of axis {ax}); samples must stay "
                                   "independent")
            continue
        cuts.append((s, e, ax, st))
    if not cuts:
        imp.bind(n, imp.emit(n, "identity", [x]))
        return
    base = imp.layer_name(n)
    for k, (s, e, ax, st) in enumerate(cuts):
        name = base if k == 0 else imp.namer.claim(f"{base}_{k}")
        x = imp.emit(n, "slice", [x], name=name, start=s, end=e, axis=ax, step=st)
    imp.bind(n, x)


@handles("Split")
def _split(imp, n):
    a = _attrs(n)
    axis = int(a.get("axis", 0))
    parts = len(n.output)
    sizes = a.get("split") if imp.opset < 13 else imp.const(n, 1, "split")
    data = imp.consts.get(n.input[0]) if n.input else None
    x = None if data is not None else imp.tensor(n, 0)
    shape = data.shape if data is not None else x.type.shape
    rank = len(shape)
    if not -rank <= axis < rank:
        raise imp.fail(n, f"axis {axis} is out of range for rank {rank}")
    axis %= rank
    if axis == 0 and data is None:
        raise _Unsupported("it splits the batch dimension; samples must stay independent")
    size = int(shape[axis])
    if sizes is not None:
        sizes = _int_list(imp, n, sizes, "split")
        if len(sizes) != parts or any(v < 0 for v in sizes) or sum(sizes) != size:
            raise imp.fail(n, f"split sizes {sizes} must be {parts} non-negative sizes summing to {size} (axis "
                              f"{axis})")
    else:
        if "num_outputs" in a and int(a["num_outputs"]) != parts:
            raise imp.fail(n, f"num_outputs is {a['num_outputs']} but the node has {parts} outputs")
        chunk = -(-size // parts)  # opset 18: the last part may be smaller
        if imp.opset < 18 and size % parts:
            raise imp.fail(n, f"axis {axis} (size {size}) does not split into {parts} equal parts")
        sizes = [max(0, min(chunk, size - k * chunk)) for k in range(parts)]
    bounds = np.cumsum([0, *sizes])
    if data is not None:
        for k, out in enumerate(n.output):
            imp.consts[out] = np.take(data, range(bounds[k], bounds[k + 1]), axis=axis)
        return
    base = imp.layer_name(n)
    for k, out in enumerate(n.output):
        if not out:
            continue
        imp.bind(n, imp.emit(n, "slice", [x], name=imp.namer.claim(f"{base}_{k}"), start=int(bounds[k]),
                             end=int(bounds[k + 1]), axis=axis), k)


@handles("ConstantOfShape")
def _const_of_shape(imp, n):
    from onnx import numpy_helper
    shape = _const_in(imp, n, 0, "shape")
    if shape.dtype == object:
        raise _Unsupported("a tensor whose shape depends on the batch size")
    a = [x for x in n.attribute if x.name == "value"]
    fill = numpy_helper.to_array(a[0].t).reshape(-1) if a else np.zeros(1, np.float32)
    dims = [int(v) for v in shape.reshape(-1)]
    if math.prod(dims) > 1 << 24:
        raise imp.fail(n, f"constant of shape {dims} is too large")
    imp.consts[n.output[0]] = np.full(dims, fill[0], dtype=fill.dtype)


SUPPORTED_OPS = tuple(sorted(HANDLERS))


def import_onnx(source: str | os.PathLike | onnx.ModelProto) -> tuple[Graph, dict[str, np.ndarray]]:
    """Import an ONNX model (a path or an onnx.ModelProto) as (graph, weights). Raises OnnxError (a
    GraphconvError) for unreadable files, unsupported ops (all listed in one error) and inconsistent models."""
    if isinstance(source, (str, os.PathLike)):
        model = load_model(source)
    else:
        import onnx
        if not isinstance(source, onnx.ModelProto):
            raise OnnxError(f"import_onnx takes a path or an onnx.ModelProto, got {type(source).__name__}")
        model = source
    imp = Importer(model)
    imp.poisoned = set()
    try:
        return imp.run()
    except GraphconvError:
        raise
    except (RecursionError, MemoryError) as e:
        raise OnnxError(f"the model is too large or too deeply nested to import ({type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - a malformed model must never crash the importer
        raise OnnxError(f"the model is malformed or inconsistent: {type(e).__name__}: {e}") from None
