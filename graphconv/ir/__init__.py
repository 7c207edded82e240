"""The IR (graph.py) and its tools: invariant checking (verify.py), the text form (printer.py) and the JSON form
(serialize.py)."""

from .graph import DTYPES, PARAM_ROLES, Graph, Init, Node, Param, TensorType, Value
from .printer import format_value, print_graph
from .serialize import dumps, from_json, loads, to_json
from .verify import IRError, lint, verify

__all__ = [
    "DTYPES", "PARAM_ROLES", "Graph", "Init", "Node", "Param", "TensorType", "Value",
    "IRError", "lint", "verify",
    "print_graph", "format_value",
    "to_json", "from_json", "dumps", "loads",
]
