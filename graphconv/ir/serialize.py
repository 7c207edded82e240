"""The IR as plain JSON, for caching compiled graphs, golden files and tools. Never pickle.

`to_json(graph)` gives a dict of JSON types only; `from_json(doc)` rebuilds an identical graph (same names, order,
types, attributes including tuples and initializers, parameter roles and data, locations, metadata), so
`print_graph(from_json(to_json(g))) == print_graph(g)`. `dumps`/`loads` add the text step.

Document layout (version 1):

    {"format": "graphconv-ir", "version": 1, "name": "...", "meta": {key: value},
     "inputs":  [{"name": "x", "type": {"shape": ["N", 3, 8, 8], "dtype": "float32"}}],
     "params":  [{"name": "c.weight", "type": {...}, "role": "trainable",
                  "init": {"name": "normal", "args": [["std", 0.01]]} | null,
                  "data": {"dtype": "float64", "shape": [2], "values": [0.5, 1.0]} | null}],
     "nodes":   [{"name": "c", "op": "conv2d", "inputs": ["x"], "params": [["weight", "c.weight"]],
                  "attrs": {key: value}, "type": {...},
                  "loc": {"path": "net.gc", "line": 3, "col": 5, "length": 6} | null}],
     "outputs": [["y", "c"]],
     "values":  ["x", "c.weight", "c"]}

`values` (optional) is the order of `graph.values`, which interleaves parameters and nodes as the graph was built;
without it the order is inputs, parameters, nodes.

Attribute and metadata values are JSON scalars and lists as themselves; everything else is an object with exactly
one tag key: {"$tuple": [...]}, {"$init": {"name", "args"}}, {"$array": {"dtype", "shape", "values"}},
{"$dict": [[key, value], ...]}, {"$float": "nan" | "inf" | "-inf"}. Non-finite numbers in arrays are written as the
strings "nan", "inf", "-inf".

`from_json` treats the document as untrusted: every field's type is checked, unknown roles, ops and dtypes are
refused, and sizes are bounded before anything is allocated; all problems raise `ValueError` with a path into the
document (e.g. `nodes[3].attrs.kernel`). By default the rebuilt graph is also verified (`ir.verify.lint`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..errors import SourceLoc
from .graph import DTYPES, PARAM_ROLES, Graph, Init, Param, TensorType, Value

__all__ = ["FORMAT", "VERSION", "MAX_DATA_ELEMENTS", "to_json", "from_json", "dumps", "loads"]

FORMAT = "graphconv-ir"
VERSION = 1
MAX_DATA_ELEMENTS = 2 ** 26  # fixed data / array attributes larger than this are refused
MAX_RANK = 16
MAX_DIM = 2 ** 40
DATA_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
               "uint64", "bool")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_TAGS = ("$tuple", "$init", "$array", "$dict", "$float")


# ==== encoding =================================================================================================

def to_json(graph: Graph) -> dict:
    """The graph as a dict of JSON types (see the module doc). Raises TypeError on a value it cannot encode."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "meta": {_str_key(k, "meta"): _enc(v, f"meta.{k}") for k, v in graph.meta.items()},
        "inputs": [{"name": v.name, "type": _enc_type(v.type)} for v in graph.inputs],
        "params": [_enc_param(p) for p in graph.params.values()],
        "nodes": [{
            "name": n.name,
            "op": n.op,
            "inputs": [v.name for v in n.inputs],
            "params": [[role, v.name] for role, v in n.params.items()],
            "attrs": {_str_key(k, f"node {n.name} attrs"): _enc(v, f"node {n.name} attribute {k}")
                      for k, v in n.attrs.items()},
            "type": _enc_type(n.output.type),
            "loc": None if n.loc is None else {"path": n.loc.path, "line": n.loc.line, "col": n.loc.col,
                                               "length": n.loc.length},
        } for n in graph.nodes],
        "outputs": [[name, v.name] for name, v in graph.outputs.items()],
        "values": list(graph.values),
    }


def dumps(graph: Graph, *, indent: int | None = None) -> str:
    """The graph as JSON text (strict JSON: no NaN or Infinity literals)."""
    return json.dumps(to_json(graph), indent=indent, allow_nan=False, ensure_ascii=False)


def _str_key(k: Any, where: str) -> str:
    if not isinstance(k, str):
        raise TypeError(f"cannot serialize {where}: key {k!r} is not a string")
    return k


def _enc_type(t: TensorType) -> dict:
    return {"shape": [d if isinstance(d, str) else int(d) for d in t.shape], "dtype": t.dtype}


def _enc_param(p: Param) -> dict:
    return {
        "name": p.value.name,
        "type": _enc_type(p.value.type),
        "role": p.role,
        "init": None if p.init is None else _enc_init(p.init, f"param {p.value.name} init"),
        "data": None if p.data is None else _enc_array(p.data, f"param {p.value.name} data"),
    }


def _enc_init(init: Init, where: str) -> dict:
    return {"name": init.name, "args": [[_str_key(k, where), _enc(v, f"{where}.{k}")] for k, v in init.args]}


def _enc_array(a: np.ndarray, where: str) -> dict:
    dtype = str(a.dtype)
    if dtype not in DATA_DTYPES:
        raise TypeError(f"cannot serialize {where}: arrays of dtype {dtype} are not supported")
    values = a.tolist()
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        values = _nonfinite_to_str(values)
    return {"dtype": dtype, "shape": [int(s) for s in a.shape], "values": values}


def _nonfinite_to_str(x: Any) -> Any:
    if isinstance(x, list):
        return [_nonfinite_to_str(i) for i in x]
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _enc(v: Any, where: str) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isfinite(f):
            return f
        return {"$float": "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")}
    if isinstance(v, list):
        return [_enc(x, where) for x in v]
    if isinstance(v, tuple):
        return {"$tuple": [_enc(x, where) for x in v]}
    if isinstance(v, Init):
        return {"$init": _enc_init(v, where)}
    if isinstance(v, np.ndarray):
        return {"$array": _enc_array(v, where)}
    if isinstance(v, dict):
        return {"$dict": [[_enc(k, where), _enc(x, where)] for k, x in v.items()]}
    raise TypeError(f"cannot serialize {where}: unsupported value of type {type(v).__name__}")


# ==== decoding =================================================================================================

class _Bad(ValueError):
    pass


def loads(text: str | bytes, *, check: bool = True) -> Graph:
    """Parse JSON text made by `dumps` and rebuild the graph (see `from_json`). Raises ValueError."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"invalid IR JSON: not UTF-8 text ({e})") from None
    if not isinstance(text, str):
        raise ValueError(f"invalid IR JSON: expected text, got {type(text).__name__}")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("invalid IR JSON: nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"invalid IR JSON: {e}") from None
    return from_json(doc, check=check)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def from_json(doc: Any, *, check: bool = True) -> Graph:
    """Rebuild a graph from `to_json` output. The document is validated (types, required keys, roles, ops,
    dtypes, sizes); any problem raises ValueError naming where it is. With `check` (the default) the rebuilt
    graph must also pass `lint`."""
    try:
        graph = _Decoder().graph(doc)
    except _Bad as e:
        raise ValueError(f"invalid IR document: {e}") from None
    except RecursionError:
        raise ValueError("invalid IR document: nested too deeply") from None
    if check:
        from .verify import lint
        problems = lint(graph)
        if problems:
            raise ValueError("invalid IR document: the graph it describes is inconsistent:"
                             + "".join(f"\n  - {p}" for p in problems))
    return graph


def _tname(x: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(x), type(x).__name__)


class _Decoder:
    # -- primitives --
    def obj(self, x: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        if not isinstance(x, dict):
            raise _Bad(f"{where}: expected an object, got {_tname(x)}")
        for k in required:
            if k not in x:
                raise _Bad(f"{where}: missing key {k!r}")
        extra = sorted(k for k in x if k not in required and k not in optional)
        if extra:
            raise _Bad(f"{where}: unknown key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}")
        return x

    def str_(self, x: Any, where: str, *, empty: bool = False) -> str:
        if not isinstance(x, str):
            raise _Bad(f"{where}: expected a string, got {_tname(x)}")
        if not x and not empty:
            raise _Bad(f"{where}: must not be empty")
        return x

    def int_(self, x: Any, where: str, lo: int | None = None, hi: int | None = None) -> int:
        if not isinstance(x, int) or isinstance(x, bool):
            raise _Bad(f"{where}: expected an integer, got {_tname(x)}")
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise _Bad(f"{where}: {x} is out of range")
        return x

    def list_(self, x: Any, where: str) -> list:
        if not isinstance(x, list):
            raise _Bad(f"{where}: expected a list, got {_tname(x)}")
        return x

    def pair(self, x: Any, where: str) -> tuple[str, str]:
        if not isinstance(x, list) or len(x) != 2:
            raise _Bad(f"{where}: expected a [name, value] pair, got {_tname(x)}")
        return self.str_(x[0], f"{where}[0]"), self.str_(x[1], f"{where}[1]")

    # -- structures --
    def type_(self, x: Any, where: str) -> TensorType:
        self.obj(x, where, ("shape", "dtype"))
        dtype = self.str_(x["dtype"], f"{where}.dtype")
        if dtype not in DTYPES:
            raise _Bad(f"{where}.dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
        shape = self.list_(x["shape"], f"{where}.shape")
        if len(shape) > MAX_RANK:
            raise _Bad(f"{where}.shape: rank {len(shape)} is above {MAX_RANK}")
        dims: list[int | str] = []
        for i, d in enumerate(shape):
            if isinstance(d, str):
                dims.append(self.str_(d, f"{where}.shape[{i}]"))
            else:
                dims.append(self.int_(d, f"{where}.shape[{i}]", 0, MAX_DIM))
        return TensorType(tuple(dims), dtype)

    def init(self, x: Any, where: str) -> Init:
        self.obj(x, where, ("name",), ("args",))
        name = self.str_(x["name"], f"{where}.name")
        args = []
        for i, a in enumerate(self.list_(x.get("args", []), f"{where}.args")):
            if not isinstance(a, list) or len(a) != 2:
                raise _Bad(f"{where}.args[{i}]: expected a [name, value] pair, got {_tname(a)}")
            k = self.str_(a[0], f"{where}.args[{i}][0]")
            args.append((k, self.value(a[1], f"{where}.args[{i}][1]")))
        return Init(name, tuple(args))

    def array(self, x: Any, where: str, shape_must: tuple | None = None) -> np.ndarray:
        self.obj(x, where, ("dtype", "shape", "values"))
        dtype = self.str_(x["dtype"], f"{where}.dtype")
        if dtype not in DATA_DTYPES:
            raise _Bad(f"{where}.dtype: {dtype!r} is not a supported array dtype")
        shape_raw = self.list_(x["shape"], f"{where}.shape")
        if len(shape_raw) > MAX_RANK:
            raise _Bad(f"{where}.shape: rank {len(shape_raw)} is above {MAX_RANK}")
        shape = tuple(self.int_(d, f"{where}.shape[{i}]", 0, MAX_DIM) for i, d in enumerate(shape_raw))
        size = math.prod(shape)
        if size > MAX_DATA_ELEMENTS:
            raise _Bad(f"{where}: {size} elements is more than the limit of {MAX_DATA_ELEMENTS}")
        if shape_must is not None and shape != shape_must:
            raise _Bad(f"{where}.shape: {list(shape)} does not match the parameter's shape {list(shape_must)}")
        flat: list[Any] = []
        self._flatten(x["values"], shape, 0, flat, f"{where}.values", dtype)
        try:
            return np.array(flat, dtype=dtype).reshape(shape)
        except (OverflowError, ValueError) as e:
            raise _Bad(f"{where}.values: not representable as {dtype}: {e}") from None

    def _flatten(self, v: Any, shape: tuple[int, ...], axis: int, flat: list, where: str, dtype: str) -> None:
        if axis == len(shape):
            flat.append(self._element(v, where, dtype))
            return
        if not isinstance(v, list) or len(v) != shape[axis]:
            got = f"a list of {len(v)}" if isinstance(v, list) else _tname(v)
            raise _Bad(f"{where}: expected a list of {shape[axis]} (axis {axis} of shape {list(shape)}), got {got}")
        for i, item in enumerate(v):
            self._flatten(item, shape, axis + 1, flat, where, dtype)

    def _element(self, v: Any, where: str, dtype: str) -> Any:
        if dtype == "bool":
            if not isinstance(v, bool):
                raise _Bad(f"{where}: expected booleans, got {_tname(v)}")
            return v
        if isinstance(v, bool):
            raise _Bad(f"{where}: expected numbers, got a boolean")
        if dtype.startswith(("int", "uint")):
            if not isinstance(v, int):
                raise _Bad(f"{where}: expected integers, got {_tname(v)}")
            return v
        if isinstance(v, (int, float)):
            return v
        if isinstance(v, str) and v in _NONFINITE:
            return _NONFINITE[v]
        raise _Bad(f"{where}: expected numbers, got {_tname(v)}")

    def loc(self, x: Any, where: str) -> SourceLoc | None:
        if x is None:
            return None
        self.obj(x, where, ("path", "line", "col"), ("length",))
        return SourceLoc(self.str_(x["path"], f"{where}.path", empty=True),
                         self.int_(x["line"], f"{where}.line", 0),
                         self.int_(x["col"], f"{where}.col", 0),
                         self.int_(x.get("length", 1), f"{where}.length", 0))

    def value(self, v: Any, where: str) -> Any:
        """An attribute or metadata value."""
        if v is None or isinstance(v, (bool, str, int)):
            return v
        if isinstance(v, float):
            if not math.isfinite(v):
                raise _Bad(f"{where}: non-finite numbers must be written as {{\"$float\": ...}}")
            return v
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if not isinstance(v, dict):
            raise _Bad(f"{where}: unsupported value {_tname(v)}")
        if len(v) != 1 or next(iter(v)) not in _TAGS:
            raise _Bad(f"{where}: an object value must have exactly one key out of {', '.join(_TAGS)}, "
                       f"got {sorted(v)}")
        tag, body = next(iter(v.items()))
        if tag == "$tuple":
            return tuple(self.value(x, f"{where}[{i}]") for i, x in enumerate(self.list_(body, f"{where}.$tuple")))
        if tag == "$init":
            return self.init(body, f"{where}.$init")
        if tag == "$array":
            return self.array(body, f"{where}.$array")
        if tag == "$float":
            if body not in _NONFINITE:
                raise _Bad(f"{where}.$float: expected 'nan', 'inf' or '-inf', got {body!r}")
            return _NONFINITE[body]
        # $dict
        out = {}
        for i, kv in enumerate(self.list_(body, f"{where}.$dict")):
            if not isinstance(kv, list) or len(kv) != 2:
                raise _Bad(f"{where}.$dict[{i}]: expected a [key, value] pair, got {_tname(kv)}")
            k = self.value(kv[0], f"{where}.$dict[{i}][0]")
            try:
                hash(k)
            except TypeError:
                raise _Bad(f"{where}.$dict[{i}][0]: a key must be hashable, got {_tname(k)}") from None
            out[k] = self.value(kv[1], f"{where}.$dict[{i}][1]")
        return out

    # -- the graph --
    def graph(self, doc: Any) -> Graph:
        self.obj(doc, "document", ("format", "version", "name", "inputs", "params", "nodes", "outputs"),
                 ("meta", "values"))
        if doc["format"] != FORMAT:
            raise _Bad(f"format: expected {FORMAT!r}, got {doc['format']!r}")
        version = self.int_(doc["version"], "version")
        if version != VERSION:
            raise _Bad(f"version: {version} is not supported (this graphconv reads version {VERSION})")
        g = Graph(self.str_(doc["name"], "name", empty=True))
        meta = doc.get("meta", {})
        if not isinstance(meta, dict):
            raise _Bad(f"meta: expected an object, got {_tname(meta)}")
        g.meta = {k: self.value(v, f"meta.{k}") for k, v in meta.items()}

        for i, x in enumerate(self.list_(doc["inputs"], "inputs")):
            w = f"inputs[{i}]"
            self.obj(x, w, ("name", "type"))
            name = self.str_(x["name"], f"{w}.name")
            self._fresh(g, name, w)
            g.add_input(name, self.type_(x["type"], f"{w}.type"))

        for i, x in enumerate(self.list_(doc["params"], "params")):
            w = f"params[{i}]"
            self.obj(x, w, ("name", "type", "role"), ("init", "data"))
            name = self.str_(x["name"], f"{w}.name")
            self._fresh(g, name, w)
            t = self.type_(x["type"], f"{w}.type")
            role = self.str_(x["role"], f"{w}.role")
            if role not in PARAM_ROLES:
                raise _Bad(f"{w}.role: unknown role {role!r} (roles: {', '.join(PARAM_ROLES)})")
            init = None if x.get("init") is None else self.init(x["init"], f"{w}.init")
            data = None
            if x.get("data") is not None:
                if not t.is_static:
                    raise _Bad(f"{w}.type: a parameter with data needs a static shape, got {t}")
                data = self.array(x["data"], f"{w}.data", shape_must=tuple(t.shape))
            g.add_param(name, t, role, init, data)

        from ..ops.schema import REGISTRY  # lazily: the ops package imports the IR
        for i, x in enumerate(self.list_(doc["nodes"], "nodes")):
            w = f"nodes[{i}]"
            self.obj(x, w, ("name", "op", "inputs", "type"), ("params", "attrs", "loc"))
            name = self.str_(x["name"], f"{w}.name")
            self._fresh(g, name, w)
            op = self.str_(x["op"], f"{w}.op")
            if op not in REGISTRY:
                raise _Bad(f"{w}.op: unknown op {op!r}")
            inputs = [self._use(g, self.str_(r, f"{w}.inputs[{j}]"), f"{w}.inputs[{j}]")
                      for j, r in enumerate(self.list_(x["inputs"], f"{w}.inputs"))]
            params: dict[str, Value] = {}
            for j, pr in enumerate(self.list_(x.get("params", []), f"{w}.params")):
                role, ref = self.pair(pr, f"{w}.params[{j}]")
                if role in params:
                    raise _Bad(f"{w}.params[{j}]: parameter {role!r} is given twice")
                v = self._use(g, ref, f"{w}.params[{j}][1]")
                if v.kind != "param":
                    raise _Bad(f"{w}.params[{j}][1]: {ref!r} is not a parameter")
                params[role] = v
            attrs_raw = x.get("attrs", {})
            if not isinstance(attrs_raw, dict):
                raise _Bad(f"{w}.attrs: expected an object, got {_tname(attrs_raw)}")
            attrs = {k: self.value(v, f"{w}.attrs.{k}") for k, v in attrs_raw.items()}
            g.add_node(name, op, inputs, attrs, self.type_(x["type"], f"{w}.type"), params,
                       self.loc(x.get("loc"), f"{w}.loc"))

        for i, pr in enumerate(self.list_(doc["outputs"], "outputs")):
            name, ref = self.pair(pr, f"outputs[{i}]")
            if name in g.outputs:
                raise _Bad(f"outputs[{i}]: output {name!r} is given twice")
            g.set_output(name, self._use(g, ref, f"outputs[{i}][1]"))

        if doc.get("values") is not None:
            order = self.list_(doc["values"], "values")
            for i, name in enumerate(order):
                self.str_(name, f"values[{i}]")
            if len(order) != len(g.values) or set(order) != set(g.values):
                raise _Bad("values: must list every input, parameter and node name exactly once")
            g.values = {name: g.values[name] for name in order}
        return g

    def _fresh(self, g: Graph, name: str, where: str) -> None:
        if name in g.values:
            raise _Bad(f"{where}.name: {name!r} is already defined")

    def _use(self, g: Graph, name: str, where: str) -> Value:
        v = g.values.get(name)
        if v is None:
            raise _Bad(f"{where}: {name!r} is not defined before its use")
        return v
