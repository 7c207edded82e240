"""The static SVG laid out by Graphviz's `dot`, for `graphconv viz --layout dot` when dot is installed.

The same display model as graphconv's own layout: leaves and collapsed groups as boxes with the same labels,
expanded groups as clusters. DOT strings are quoted and escaped here; dot escapes them again into its SVG.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Iterable

from ..errors import GraphconvError
from .model import Group, VizModel

__all__ = ["dot_available", "to_dot", "render_dot_svg"]

TIMEOUT = 120  # seconds


def dot_available() -> bool:
    """Whether Graphviz's dot is on PATH."""
    return shutil.which("dot") is not None


def _q(text: str) -> str:
    """A DOT double-quoted string (escString: \\l ends a left-justified line)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").replace("\r", " ") + '"'


def _label(lines: list[str]) -> str:
    body = "".join(line.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + "\\l" for line in lines)
    return '"' + body + '"'


_FILL = {"conv": "#dbeafe", "dense": "#e0e7ff", "norm": "#dcfce7", "act": "#fef3c7", "pool": "#f3e8ff",
         "merge": "#fee2e2", "shape": "#f1f5f9", "io": "#334155", "other": "#f5f5f4"}


def to_dot(model: VizModel, expanded: Iterable[str]) -> str:
    """The model as a DOT digraph with the groups in `expanded` as clusters."""
    open_ = set(expanded)
    out = [f"digraph {_q(model.name)} {{",
           '  graph [rankdir=TB, nodesep=0.25, ranksep=0.35, fontname="DejaVu Sans Mono", fontsize=11];',
           '  node [shape=box, style="rounded,filled", fontname="DejaVu Sans Mono", fontsize=10];',
           '  edge [color="#64748b", arrowsize=0.6];']

    def visible(leaf_id: str) -> str:
        chain, gid = [], model.by_id[leaf_id].group  # type: ignore[union-attr]
        while gid is not None:
            chain.append(gid)
            gid = model.by_id[gid].parent  # type: ignore[union-attr]
        for g in reversed(chain):
            if g not in open_:
                return g
        return leaf_id

    def emit(item: str, indent: str) -> None:
        x = model.by_id[item]
        if isinstance(x, Group) and item in open_:
            out.append(f"{indent}subgraph {_q('cluster_' + item)} {{")
            out.append(f'{indent}  label={_q(x.name)}; style="rounded,filled"; fillcolor="#f1f5f9"; '
                       f'color="#94a3b8";')
            for c in x.children:
                emit(c, indent + "  ")
            out.append(f"{indent}}}")
        elif isinstance(x, Group):
            out.append(f'{indent}{_q(item)} [label={_label(x.lines)}, fillcolor="#ffffff", peripheries=2];')
        else:
            font = ', fontcolor="#f8fafc"' if x.cat == "io" else ""
            out.append(f'{indent}{_q(item)} [label={_label(x.lines)}, fillcolor="{_FILL.get(x.cat, "#f5f5f4")}"'
                       f'{font}, tooltip={_q(x.name)}];')

    for item in model.roots:
        emit(item, "  ")
    seen = set()
    for e in model.edges:
        s, d = visible(e.src), visible(e.dst)
        if s != d and (s, d, e.value) not in seen:
            seen.add((s, d, e.value))
            v = model.values[e.value]
            out.append(f"  {_q(s)} -> {_q(d)} [tooltip={_q(v['name'] + ': ' + v['type'])}];")
    out.append("}")
    return "\n".join(out) + "\n"


def render_dot_svg(model: VizModel, expanded: Iterable[str]) -> str:
    """The SVG that `dot -Tsvg` draws of the model; GraphconvError when dot is missing or fails."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphconvError("--layout dot needs Graphviz's 'dot' on PATH (e.g. apt-get install graphviz); "
                             "--layout graphconv needs nothing (the default, --layout auto, uses dot only when "
                             "it is on PATH)")
    try:
        r = subprocess.run([exe, "-Tsvg"], input=to_dot(model, expanded), capture_output=True, text=True,
                           timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise GraphconvError(f"dot did not finish within {TIMEOUT} s; use --layout graphconv") from None
    if r.returncode != 0:
        raise GraphconvError(f"dot failed (exit {r.returncode}): {r.stderr.strip()[:500]}")
    return r.stdout
