"""The interactive drawing: one self-contained HTML file.

The page holds the display model as JSON (`<script type="application/json" id="gc-data">`), the stylesheets, the
layout (assets/layout.js, the twin of layout.py) and the viewer (assets/viewer.js), all inline: no network access,
no external fonts or scripts (a Content-Security-Policy forbids any). The first view is also drawn here in Python
(`svg_element`), so the file shows the graph even where scripts do not run; the viewer replaces it with its own
drawing of the same layout.

Escaping: text in the SVG and the page goes through `html.escape`; the JSON has `<`, `>`, `&` and the line
separators written as \\u escapes, so no name can close the script element it sits in.
"""

from __future__ import annotations

import json
from html import escape

from .layout import layout
from .model import VizModel, count_text
from .svg import asset, svg_element

__all__ = ["render_html", "json_for_script"]

DEFAULT_DEPTH = 1

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def json_for_script(data: object) -> str:
    """JSON that is safe inside a <script> element: no `</script>`, `<!--` or `&` can appear in it."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def render_html(model: VizModel, *, depth: int | None = DEFAULT_DEPTH) -> str:
    """The viewer page of `model`, with groups deeper than `depth` collapsed at first (None: all open)."""
    d = model.max_depth() if depth is None else depth
    svg = svg_element(model, layout(model, model.groups_to_depth(d)))
    data = model.to_json()
    data["view"] = {"depth": d}
    t = model.totals
    meta = f"{t['nodes']} layers · {count_text(t['params'])} params · {t['groups']} groups"
    if model.opt_level:
        meta += f" · -O{model.opt_level}"
    if model.source:
        meta += f" · {model.source}"
    e = escape
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="graphconv viz">
<title>{e(model.name)} · graphconv viz</title>
<style>
{asset("graph.css")}
{asset("viewer.css")}
</style>
</head>
<body>
<div class="gc-bar">
<span class="gc-title">{e(model.name)}</span><span class="gc-meta">{e(meta)}</span>
<button data-act="expand-all" title="open every group (e)">Expand all</button>
<button data-act="collapse-all" title="close every group (c)">Collapse all</button>
<button data-act="depth-down" title="open one level less ([)">Depth −</button>
<button data-act="depth-up" title="open one level more (])">Depth +</button>
<span class="gc-sepr"></span>
<input id="gc-search" type="search" placeholder="Search names (/)" aria-label="search node names">
<span id="gc-count"></span>
<span class="gc-sepr"></span>
<button data-act="zoom-out" title="zoom out (-)">−</button><span id="gc-zoom">100%</span>
<button data-act="zoom-in" title="zoom in (+)">+</button>
<button data-act="zoom-fit" title="fit the drawing in the window (f)">Fit</button>
<button data-act="zoom-reset" title="actual size (0)">1:1</button>
</div>
<main>
<span id="gc-status"></span>
<div id="gc-canvas">
{svg}
</div>
<aside id="gc-panel"><p class="gc-hint">Hover over a box for its details; click to keep them here.</p></aside>
</main>
<script type="application/json" id="gc-data">{json_for_script(data)}</script>
<script>
{asset("layout.js")}
{asset("viewer.js")}
</script>
</body>
</html>
"""
