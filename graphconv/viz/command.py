"""`graphconv viz`: draw a network as a graph, to an interactive HTML page or a static SVG."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from ..errors import GraphconvError

__all__ = ["add_parsers", "cmd_viz", "VERBS"]

EXAMPLES = """\
examples:
  graphconv viz specs/resnet50.gc -o resnet50.html          # stages open, blocks closed: click to open
  graphconv viz specs/resnet50.gc -o resnet50.svg           # every layer, blocks as nested boxes
  graphconv viz specs/resnet50.gc -o resnet50.svg --depth 1 # blocks drawn as one box each
  graphconv viz specs/googlenet.gc --set aux_logits=true -o googlenet.html
  graphconv viz specs/resnet18.gc -O2 -o fused.html          # the optimized graph: fused activations
  graphconv viz model.onnx -o model.html

In the HTML: click a closed group to open it, its title bar to close it; e / c open / close all, 1-9 open to that
depth, / searches names. The URL keeps the view: resnet50.html#expand=layer1.bottleneck0&select=fc
"""

FORMATS = {".html": "html", ".htm": "html", ".svg": "svg"}


def _depth(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def add_parsers(sub: Any, common: argparse.ArgumentParser, sets: argparse.ArgumentParser) -> None:
    """Add the `viz` subcommand."""
    p = sub.add_parser("viz", parents=[common, sets], help="draw a network as a graph (HTML or SVG)",
                       description="Draw a network top to bottom: every layer with its op, output shape and "
                                   "parameters, edges along the dataflow, blocks as nested groups. The HTML page is "
                                   "interactive (groups open and close, details on hover) and self-contained; the "
                                   "SVG is a static drawing.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC|MODEL.onnx", help="a spec or an ONNX model")
    p.add_argument("-o", "--output", required=True, metavar="OUT.html|OUT.svg",
                   help="the file to write; its extension picks the format")
    p.add_argument("-O", dest="opt_level", type=int, default=0, choices=(0, 1, 2, 3), metavar="LEVEL",
                   help="draw the graph the optimizer makes at this level, 0-3 (default 0: as written)")
    p.add_argument("--training", action="store_true",
                   help="with -O 1 or more: optimize for training (batchnorm statistics and dropout stay)")
    p.add_argument("--depth", type=_depth, default=None, metavar="D",
                   help="open groups down to depth D (1: the top-level blocks); default 1 for HTML, all for SVG")
    p.add_argument("--layout", choices=("auto", "graphconv", "dot"), default="auto",
                   help="SVG layout engine: graphconv's own, or Graphviz's dot (auto: dot when it is on PATH)")


def _graph(args: argparse.Namespace):
    from ..cli import _load

    graph, weights = _load(args, args.spec, weights=False)
    if args.opt_level == 0:
        return graph
    from ..network import Network
    from ..passes.manager import optimize

    net, _ = optimize(Network(graph, weights), args.opt_level, training=args.training)
    return net.graph


def cmd_viz(args: argparse.Namespace) -> int:
    """Draw the network of args.spec to args.output; returns the exit status."""
    from .dot import dot_available, render_dot_svg
    from .html import render_html
    from .model import build_model
    from .svg import render_svg

    out = args.output
    fmt = FORMATS.get(os.path.splitext(out)[1].lower())
    if fmt is None:
        raise GraphconvError(f"cannot tell which drawing to write to '{out}': give -o a file ending in .html "
                             f"(interactive) or .svg (static)")
    if args.training and args.opt_level == 0:
        raise GraphconvError("--training applies with -O 1 or more: it chooses how the optimizer treats batchnorm "
                             "and dropout, and -O 0 draws the graph as written")
    if fmt == "html" and args.layout == "dot":
        raise GraphconvError("--layout dot applies to SVG output; the HTML page lays itself out again at every "
                             "click, with graphconv's layout")
    t0 = time.perf_counter()
    model = build_model(_graph(args), source=args.spec, opt_level=args.opt_level)
    engine = "graphconv"
    if fmt == "html":
        text = render_html(model, depth=args.depth if args.depth is not None else 1)
    elif args.layout == "dot" or (args.layout == "auto" and dot_available()):
        text = render_dot_svg(model, model.groups_to_depth(args.depth))
        engine = "dot"
    else:
        text = render_svg(model, expanded=model.groups_to_depth(args.depth))
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {out} ({len(model.nodes)} nodes, {len(model.groups)} groups; {fmt}, {engine} layout, "
          f"{time.perf_counter() - t0:.2f} s)")
    return 0


VERBS = {"viz": cmd_viz}
