import copy
import json
import math

import numpy as np
import pytest

from graphconv.ir import dumps, from_json, lint, loads, print_graph, to_json
from graphconv.ir.graph import Graph, Init, TensorType
from graphconv.ir.serialize import MAX_DATA_ELEMENTS

from irtest_helpers import add_op, rich, tiny


def same_graph(a: Graph, b: Graph) -> None:
    assert print_graph(a) == print_graph(b)
    assert a.name == b.name
    assert [v.name for v in a.inputs] == [v.name for v in b.inputs]
    assert list(a.values) == list(b.values)
    assert list(a.outputs) == list(b.outputs)
    assert [v.name for v in a.outputs.values()] == [v.name for v in b.outputs.values()]
    for v in a.values.values():
        w = b.values[v.name]
        assert (v.type, v.kind) == (w.type, w.kind)
        assert type(v.type.shape) is tuple and all(type(d) is type(e) for d, e in zip(v.type.shape, w.type.shape))
    for p in a.params.values():
        q = b.params[p.name]
        assert (p.role, p.init) == (q.role, q.init)
        if p.data is None:
            assert q.data is None
        else:
            assert q.data.dtype == p.data.dtype and q.data.shape == p.data.shape
            assert np.array_equal(q.data, p.data, equal_nan=True)
    for n, m in zip(a.nodes, b.nodes, strict=True):
        assert (n.name, n.op, n.loc) == (m.name, m.op, m.loc)
        assert [v.name for v in n.inputs] == [v.name for v in m.inputs]
        assert {k: v.name for k, v in n.params.items()} == {k: v.name for k, v in m.params.items()}
        assert list(n.params) == list(m.params)
        assert n.attrs == m.attrs
        for k in n.attrs:
            assert type(n.attrs[k]) is type(m.attrs[k]), k
        assert m.output.producer is m


@pytest.mark.parametrize("make", [tiny, rich, lambda: tiny("float64", batch=3)])
def test_round_trip(make):
    g = make()
    doc = to_json(g)
    json.dumps(doc, allow_nan=False)  # plain JSON types only
    same_graph(g, from_json(doc))
    text = dumps(g)
    same_graph(g, loads(text))
    same_graph(g, loads(text.encode()))
    assert dumps(loads(text)) == text
    assert lint(loads(text)) == []


def test_round_trip_restores_python_types():
    g = loads(dumps(rich()))
    a = g.node("edge").attrs
    assert a["kernel"] == (3, 3) and type(a["kernel"]) is tuple
    assert a["padding"] == (1, 0, 1, 2) and type(a["padding"]) is tuple
    assert g.params["frz.weight"].role == "frozen"
    assert g.params["frz.bias"].init == Init("constant", (("value", 0.25),))
    assert g.params["stats.running_mean"].role == "buffer"
    assert g.params["edge.weight"].role == "fixed" and g.params["edge.weight"].data.dtype == np.float64
    assert g.values["image"].type.shape[0] == "N"
    m = g.meta
    assert m["sizes"] == (1, 2) and type(m["sizes"]) is tuple
    assert m["mix"] == [1, (2.5, None)] and type(m["mix"]) is list and type(m["mix"][1]) is tuple
    assert m["init"] == Init("normal", (("std", 0.02),))
    assert m["flags"] == {"a": True, 3: "b"}
    assert math.isnan(m["nan"]) and m["inf"] == -math.inf
    assert m["name"] == 'réseau "x"'


def test_float32_data_and_nonfinite_values_round_trip_exactly():
    g = Graph("d")
    x = g.add_input("x", TensorType((1, 1, 2, 2)))
    w = np.array([[[[0.1, -1e-30], [3.4e38, 7.0]]]], dtype=np.float32)
    g.add_param("k", TensorType((1, 1, 2, 2)), "frozen", None, w)
    g.add_param("s", TensorType((3,), "float64"), "buffer", None, np.array([np.nan, np.inf, -np.inf]))
    g.add_param("i", TensorType((2,)), "buffer", None, np.array([1, -2], dtype=np.int64))
    g.add_param("e", TensorType((0, 2)), "buffer", None, np.zeros((0, 2)))
    g.add_param("z", TensorType(()), "fixed", None, np.array(2.5))
    g.set_output("x", x)
    text = dumps(g)
    assert "NaN" not in text and "Infinity" not in text
    h = loads(text)
    same_graph(g, h)
    assert h.params["k"].data.dtype == np.float32
    assert h.params["k"].data.tobytes() == w.tobytes()


def test_add_node_with_unusual_attrs_round_trip():
    g = Graph("u")
    x = g.add_input("x", TensorType(("B", 4)))
    add_op(g, "r", "relu", [x])
    g.node("r").attrs.update(mode="nearest", arr=np.arange(3.0), nested={"k": [(1, 2.0)]}, tiny=5e-324,
                             init=Init("he_normal", (("mode", "fan_out"),)), big=2 ** 70, nothing=None)
    g.set_output("y", g.values["r"])
    h = loads(dumps(g))
    a = h.node("r").attrs
    assert a["mode"] == "nearest" and a["tiny"] == 5e-324 and a["big"] == 2 ** 70 and a["nothing"] is None
    assert np.array_equal(a["arr"], np.arange(3.0)) and a["nested"] == {"k": [(1, 2.0)]}
    assert a["init"] == Init("he_normal", (("mode", "fan_out"),))
    assert print_graph(h) == print_graph(g)


def test_to_json_refuses_unserializable():
    g = tiny()
    g.node("act").attrs["fn"] = object()
    with pytest.raises(TypeError, match="node act attribute fn"):
        to_json(g)
    g = tiny()
    g.meta[1] = "x"
    with pytest.raises(TypeError, match="not a string"):
        to_json(g)


# -- malformed documents --

def _doc():
    return to_json(rich())


def _set(path, value):
    def f(doc):
        *head, last = path
        for k in head:
            doc = doc[k]
        doc[last] = value
    return f


def _del(path):
    def f(doc):
        *head, last = path
        for k in head:
            doc = doc[k]
        del doc[last]
    return f


BAD = [
    ("not object", lambda d: d.clear() or d.update(x=1), "missing key 'format'"),
    ("values order", _set(["values"], ["image"]), "values: must list every"),
    ("values dup", lambda d: d["values"].__setitem__(1, "image"), "values: must list every"),
    ("format", _set(["format"], "onnx"), "format: expected 'graphconv-ir'"),
    ("version", _set(["version"], 99), "version: 99 is not supported"),
    ("version type", _set(["version"], "1"), "version: expected an integer, got a string"),
    ("missing nodes", _del(["nodes"]), "document: missing key 'nodes'"),
    ("extra key", _set(["extra"], 1), "unknown key 'extra'"),
    ("name type", _set(["name"], 3), "name: expected a string"),
    ("inputs type", _set(["inputs"], {}), "inputs: expected a list, got an object"),
    ("input missing type", _del(["inputs", 0, "type"]), "inputs[0]: missing key 'type'"),
    ("dtype", _set(["inputs", 0, "type", "dtype"], "int8"), "inputs[0].type.dtype: 'int8'"),
    ("dim bool", _set(["inputs", 0, "type", "shape", 1], True), "inputs[0].type.shape[1]: expected an integer"),
    ("dim negative", _set(["inputs", 0, "type", "shape", 1], -2), "out of range"),
    ("dim float", _set(["inputs", 0, "type", "shape", 1], 2.0), "expected an integer, got a number"),
    ("empty symbol", _set(["inputs", 0, "type", "shape", 0], ""), "must not be empty"),
    ("shape type", _set(["inputs", 0, "type", "shape"], "N,2"), "shape: expected a list"),
    ("rank", _set(["inputs", 0, "type", "shape"], [1] * 40), "rank 40"),
    ("role", _set(["params", 0, "role"], "learned"), "params[0].role: unknown role 'learned'"),
    ("param name dup", _set(["params", 1, "name"], "edge.weight"), "params[1].name: 'edge.weight' is already"),
    ("input/param dup", _set(["params", 0, "name"], "image"), "already defined"),
    ("init type", _set(["params", 0, "init"], "he_normal"), "params[0].init: expected an object"),
    ("init args", _set(["params", 2, "init", "args"], [["std"]]), "params[2].init.args[0]: expected a [name"),
    ("data shape mismatch", _set(["params", 1, "data", "shape"], [3]), "does not match the parameter's shape"),
    ("data ragged", _set(["params", 1, "data", "values"], [1.0]), "params[1].data.values: expected a list of 2"),
    ("data element", _set(["params", 1, "data", "values"], [1.0, "x"]), "expected numbers, got a string"),
    ("data bool", _set(["params", 1, "data", "values"], [1.0, True]), "got a boolean"),
    ("data dtype", _set(["params", 1, "data", "dtype"], "object"), "not a supported array dtype"),
    ("data missing values", _del(["params", 1, "data", "values"]), "missing key 'values'"),
    ("data huge", lambda d: (d["params"][0]["type"].update(shape=[2 ** 14, 2 ** 13]),
                             d["params"][0]["data"].update(shape=[2 ** 14, 2 ** 13])),
     f"more than the limit of {MAX_DATA_ELEMENTS}"),
    ("data symbolic", _set(["params", 1, "type", "shape"], ["N"]), "needs a static shape"),
    ("op", _set(["nodes", 0, "op"], "conv3d"), "nodes[0].op: unknown op 'conv3d'"),
    ("undefined input", _set(["nodes", 0, "inputs", 0], "nope"), "nodes[0].inputs[0]: 'nope' is not defined"),
    ("forward ref", _set(["nodes", 0, "inputs", 0], "r"), "'r' is not defined before its use"),
    ("inputs not names", _set(["nodes", 0, "inputs"], [0]), "nodes[0].inputs[0]: expected a string"),
    ("param pair", _set(["nodes", 0, "params", 0], ["weight"]), "nodes[0].params[0]: expected a [name, value]"),
    ("param not param", _set(["nodes", 1, "params", 0, 1], "edge"), "'edge' is not a parameter"),
    ("param twice", lambda d: d["nodes"][0]["params"].append(["weight", "edge.bias"]), "given twice"),
    ("node dup", _set(["nodes", 1, "name"], "edge"), "nodes[1].name: 'edge' is already defined"),
    ("attrs type", _set(["nodes", 0, "attrs"], []), "nodes[0].attrs: expected an object"),
    ("attr tag", _set(["nodes", 0, "attrs", "kernel"], {"$set": [3]}), "nodes[0].attrs.kernel: an object value"),
    ("attr two keys", _set(["nodes", 0, "attrs", "kernel"], {"$tuple": [3, 3], "x": 1}), "exactly one key"),
    ("tuple body", _set(["nodes", 0, "attrs", "kernel"], {"$tuple": 3}), "kernel.$tuple: expected a list"),
    ("float tag", _set(["meta", "nan"], {"$float": "NaN"}), "meta.nan.$float"),
    ("dict pair", _set(["meta", "flags"], {"$dict": [[1, 2, 3]]}), "meta.flags.$dict[0]"),
    ("dict key", _set(["meta", "flags"], {"$dict": [[[1], 2]]}), "must be hashable"),
    ("meta type", _set(["meta"], [1]), "meta: expected an object"),
    ("loc line", _set(["nodes", 0, "loc"], {"path": "a", "line": "3", "col": 1}), "nodes[0].loc.line"),
    ("loc key", _set(["nodes", 0, "loc"], {"path": "a", "line": 3}), "nodes[0].loc: missing key 'col'"),
    ("node type", _del(["nodes", 2, "type"]), "nodes[2]: missing key 'type'"),
    ("outputs pairs", _set(["outputs"], [["y"]]), "outputs[0]: expected a [name, value] pair"),
    ("outputs undefined", _set(["outputs", 0, 1], "zzz"), "outputs[0][1]: 'zzz' is not defined"),
    ("outputs dup", lambda d: d["outputs"].append(["feat", "r"]), "output 'feat' is given twice"),
    ("inconsistent", _set(["nodes", 3, "type", "shape", 1], 7), "inconsistent"),
    ("arity", lambda d: d["nodes"][3]["inputs"].append("image"), "relu takes 1 input"),
]


@pytest.mark.parametrize("name,mutate,message", BAD, ids=[b[0] for b in BAD])
def test_malformed_documents(name, mutate, message):
    doc = _doc()
    mutate(doc)
    with pytest.raises(ValueError) as ei:
        from_json(doc)
    assert message in str(ei.value)
    assert str(ei.value).startswith("invalid IR document")


def test_not_a_document():
    for bad in (None, [], "graph", 3):
        with pytest.raises(ValueError, match="document: expected an object"):
            from_json(bad)


def test_check_false_skips_lint():
    doc = _doc()
    doc["nodes"][3]["type"]["shape"][1] = 7
    g = from_json(doc, check=False)
    assert lint(g)


@pytest.mark.parametrize("text,message", [
    ("{", "invalid IR JSON"),
    ('{"format": NaN}', "NaN is not valid JSON"),
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    (b"\xff\xfe", "not UTF-8"),
    ("[" * 100000 + "]" * 100000, "invalid IR"),
    ("[]", "document: expected an object, got a list"),
])
def test_loads_errors(text, message):
    with pytest.raises(ValueError, match=None) as ei:
        loads(text)
    assert message in str(ei.value)


def _paths(x, prefix=()):
    yield prefix
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x[:3]):
            yield from _paths(v, prefix + (i,))


def test_every_mutation_gives_value_error_or_graph():
    """Replace or delete each part of a document: from_json must return a graph or raise ValueError."""
    base = to_json(tiny())
    base["params"][1]["data"] = {"dtype": "float32", "shape": [4], "values": [1.0, 2.0, 3.0, 4.0]}
    base["params"][1]["role"] = "fixed"
    for path in list(_paths(base))[1:]:
        for repl in ("<del>", None, 0, -1, 1.5, True, "x", "", [], {}, ["x"], {"$tuple": [1]}):
            doc = copy.deepcopy(base)
            parent = doc
            for k in path[:-1]:
                parent = parent[k]
            if repl == "<del>":
                if isinstance(parent, list):
                    del parent[path[-1]]
                else:
                    parent.pop(path[-1])
            else:
                parent[path[-1]] = repl
            try:
                g = from_json(doc)
            except ValueError:
                continue
            assert isinstance(g, Graph)


def test_values_order_is_optional():
    doc = to_json(tiny())
    assert doc["values"] == ["x", "conv.weight", "conv.bias", "conv", "act", "proj.weight", "proj", "sum"]
    del doc["values"]
    g = from_json(doc)
    assert list(g.values) == ["x", "conv.weight", "conv.bias", "proj.weight", "conv", "act", "proj", "sum"]
    assert print_graph(g) == print_graph(tiny())
