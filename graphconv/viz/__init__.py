"""Drawing networks: `graphconv viz SPEC|MODEL.onnx -o net.html|net.svg`.

    model = build_model(graph, source=path)      # model.py: leaves, groups, edges, labels and sizes
    render_html(model, depth=1)                  # html.py: one self-contained interactive page
    render_svg(model, expanded=...)              # svg.py: a static drawing (all groups open by default)

Design. Node names are dotted paths from block applications (`layer1.bottleneck0.conv1`), so their prefixes are
the groups: stages, then blocks, then layers. A group is drawn either collapsed (one box: its name, layer count,
parameters and the shapes leaving it) or expanded (a labelled rectangle around its children).

The layout (layout.py) is a layered, Sugiyama-style one, done per group and composed bottom-up: an expanded group is
laid out on its own, with entry and exit ports on its borders for the values that cross them, and is then one box in
its parent's layout. Within a group: ranks by longest path, dummy nodes on long edges, barycenter sweeps against
crossings, and x coordinates from weighted least squares that keep the longest paths straight. Everything is
computed from box sizes that the model derives from character counts in a monospace font, so no text measuring is
needed anywhere.

Why the layout exists twice. Expanding or collapsing a group changes every position, so the HTML page must lay out
again in the browser at each click; layout.py and assets/layout.js are line-by-line twins working on the same JSON
(tests/viz checks they agree, with node.js). Python draws the static SVG and the page's first view, so the file
shows the graph even without scripts. Graphviz's dot can draw the static SVG instead when it is installed
(dot.py, `--layout dot`), but clusters that open and close need our own layout.
"""

from .html import render_html
from .layout import Layout, layout
from .model import VizModel, build_model
from .svg import render_svg

__all__ = ["build_model", "layout", "render_html", "render_svg", "Layout", "VizModel"]
