"""The picture commands: `graphconv run --image`, `graphconv filters`, `graphconv featuremaps`.

graphconv/cli.py registers this module in `_VERB_MODULES` (add_parsers, VERBS) and calls two hooks from its `run`
command: `add_run_arguments` (the run parser's --image, --labels, --top, --resize, --normalize, --json) and
`image_run` (pictures in before the forward pass; the top classes per picture or sample out after it, as text or
JSON, for any run given --image, --labels, --top or --json). Only argparse is imported with the module, so the
command line stays quick to start; numpy, Pillow and the network code load when a command runs.

`run --json` prints one JSON object: "network", "backend", "dtype", "weights" (the file or null), "trained",
"seed" (of the initial weights, null when trained), "inputs" (how each input was made: "name", "shape", "from":
images, file or random, and for pictures "channels", "resize", "normalize"), "images" (each picture's "path",
"format", "width", "height", "mode", "frames"), "outputs" by name: a classifier's ("kind": "classifier", "shape",
"classes", "probabilities": softmax or output, "results": per sample its "sample", "image" and "top" list of
"rank", "class", "label", "probability", "logit") or another output's ("kind": "other", "shape", "mean", "std",
"min", "max"), and "saved" with --output. Every number is finite: a NaN or infinite value (a network that
overflows, an input holding NaN) is null, so the output is strict JSON that any parser reads. Text output shows
such values as nan or inf, and prints labels and file names with control characters escaped (labels.printable).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from ..cli import _positive_int, _seed  # the command line's own argument types

__all__ = ["add_parsers", "add_run_arguments", "image_run", "ImageRun", "cmd_filters", "cmd_featuremaps", "VERBS"]

DEFAULT_TOP = 5


# -- argument types ----------------------------------------------------------------------------------------------

def _resize(text: str) -> Any:
    from .decode import Resize

    try:
        return Resize.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _picture_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resize", type=_resize, default=None, metavar="crop|crop:F|stretch",
                   help="fit the picture to the input's H×W: crop (default) scales it to cover H×W and cuts out "
                        "the centre; crop:F covers H/F×W/F first (crop:0.875 is torchvision's ImageNet eval "
                        "transform, 256 then 224); stretch scales each side to fit, distorting")
    p.add_argument("--normalize", default=None, metavar="auto|imagenet|none|M,..:S,..",
                   help="(x - mean) / std per channel after scaling to [0, 1]: imagenet (torchvision's mean and "
                        "std), none, or MEAN,..:STD,.. (one value or one per channel); auto (default): imagenet "
                        "for 3-channel inputs of at least 128×128, none otherwise (graphconv train's [0, 1])")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options `graphconv run` takes for pictures (--image, --labels, --top, --resize, --normalize, --json)."""
    p.add_argument("--image", dest="images", metavar="IMG", action="append", default=[],
                   help="a picture (PNG, JPEG, BMP, GIF, WebP, TIFF, PPM) for the network's image input, "
                        "converted to its channels and size (repeatable: one batch sample per picture); prints "
                        "the top classes of classifier outputs")
    p.add_argument("--labels", metavar="LABELS", default=None,
                   help="class names of classifier outputs, one per line (or a JSON list, or {\"0\": [\"id\", "
                        "\"name\"]})")
    p.add_argument("--top", type=_positive_int, default=None, metavar="K",
                   help=f"how many classes to show per picture or sample (default {DEFAULT_TOP})")
    _picture_arguments(p)
    if "--json" not in p._option_string_actions:  # the run parser may have its own --json: one flag, one meaning
        p.add_argument("--json", action="store_true",
                       help="print the inputs, the top classes per sample (or picture) and the statistics of other "
                            "outputs as JSON (NaN and infinite values as null)")


# -- run --image ---------------------------------------------------------------------------------------------------

RUN_SEVERAL_PICTURES = "--image feeds one: give the others with --input NAME=FILE.npy"


def _image_input(graph: Any, given: Any = (), several: str = RUN_SEVERAL_PICTURES) -> tuple[Any, tuple[int, int, int]]:
    """(the network's picture input: its one [N, C, H, W] input not given otherwise, (C, H, W)). `several` ends the
    error for a network with more than one such input (what the command offers for the others)."""
    from ..errors import GraphconvError

    rank4 = [v for v in graph.inputs if v.type.rank == 4]
    free = [v for v in rank4 if v.name not in given]
    names = ", ".join(f"{v.name} {v.type}" for v in graph.inputs) or "none"
    if not rank4:
        raise GraphconvError(f"{graph.name} has no input of shape [N, C, H, W] for a picture; its inputs: {names}")
    if not free:
        raise GraphconvError(f"input '{rank4[0].name}' is given twice: by --input and by --image")
    if len(free) > 1:
        raise GraphconvError(f"{graph.name} has several picture inputs ({', '.join(v.name for v in free)}); "
                             f"{several}")
    v = free[0]
    _n, c, h, w = v.type.shape
    if not all(isinstance(d, int) for d in (c, h, w)):
        raise GraphconvError(f"input '{v.name}' is {v.type}: a picture needs fixed channels, height and width")
    if c not in (1, 3):
        raise GraphconvError(f"input '{v.name}' is {v.type}: pictures become 1 (grayscale) or 3 (RGB) channels, "
                             f"not {c}")
    return v, (c, h, w)


def _classifier_classes(graph: Any) -> dict[str, int]:
    """Output name -> classes for the outputs of type [N, K], K >= 2."""
    out = {}
    for name, v in graph.outputs.items():
        shape = v.type.shape
        if len(shape) == 2 and isinstance(shape[1], int) and shape[1] >= 2:
            out[name] = shape[1]
    return out


@dataclass
class ImageRun:
    """What `graphconv run` needs to report the top classes: the pictures of --image (none when the inputs are
    arrays or random), the labels, K, and how the inputs were made."""

    args: argparse.Namespace
    graph: Any
    input_name: str | None  # the picture input (None without --image)
    pictures: list[Any]
    file_inputs: dict[str, list[int]]  # inputs given with --input: their shapes
    channels_text: str
    resize: Any
    normalization: Any
    labels: list[str] | None
    top: int

    def report(self, outputs: dict[str, Any]) -> int:
        """Print the top classes of each classifier output per picture or sample (text, or JSON with --json), the
        statistics of other outputs, and save the outputs with --output. Returns the exit status."""
        from .classify import is_classifier, top_classes

        args = self.args
        results: dict[str, Any] = {}
        for name, y in outputs.items():
            if is_classifier(y):
                top, from_softmax = top_classes(y, self.top)
                results[name] = ("classifier", y, top, from_softmax)
            else:
                results[name] = ("other", y, None, None)
        saved = None
        if args.output:
            from ..cli import _save_outputs

            _save_outputs(args.output, outputs)
            saved = args.output
        if args.json:
            print(_strict_json(self._json(results, saved)))
        else:
            for line in self._text(results, saved):
                print(line)
        return 0

    def _source(self) -> tuple[str, bool]:
        a = self.args
        if a.weights:
            return f"weights {a.weights}", True
        if a.spec.lower().endswith(".onnx"):
            return "the model's weights", True
        if all(p.data is not None for p in self.graph.params.values()):
            return "weights fixed in the spec", True
        return f"initial weights (seed {a.seed})", False

    def _label(self, index: int) -> str | None:
        return self.labels[index] if self.labels is not None else None

    def _sample(self, i: int) -> str:
        from .labels import printable

        return printable(self.pictures[i].path) if self.pictures else f"sample {i}"

    def _inputs(self, batch: int | None) -> list[dict[str, Any]]:
        """How each input was made: a picture batch, a file, or random (seeded)."""
        out = []
        for v in self.graph.inputs:
            if v.name == self.input_name:
                shape = [len(self.pictures), *v.type.shape[1:]]
                out.append({"name": v.name, "shape": shape, "from": "images", "channels": self.channels_text,
                            "resize": str(self.resize), "normalize": self.normalization.to_json()})
            elif v.name in self.file_inputs:
                out.append({"name": v.name, "shape": self.file_inputs[v.name], "from": "file"})
            else:
                shape = list(v.type.concrete(batch)) if batch is not None else [str(d) for d in v.type.shape]
                out.append({"name": v.name, "shape": shape, "from": "random", "seed": self.args.seed})
        return out

    def _text(self, results: dict[str, Any], saved: str | None) -> list[str]:
        from .labels import printable

        a, g = self.args, self.graph
        source, trained = self._source()
        lines = [f"network {g.name}: {g.num_params():,} params, backend {a.backend}, {a.dtype}, {source}"]
        batch = next((int(y.shape[0]) for _k, y, _t, _f in results.values() if y.ndim >= 1), None)
        for info in self._inputs(batch):
            if info["from"] == "images":
                n, (h, w) = len(self.pictures), info["shape"][2:]
                lines.append(f"input {info['name']} {info['shape']}: {n} picture{'s' if n != 1 else ''}, "
                             f"{self.channels_text}, {self.resize.describe(h, w)}, {self.normalization.describe()}")
                lines += [f"  {printable(pic.path)}: {pic.describe()}" for pic in self.pictures]
            elif info["from"] == "file":
                lines.append(f"input {info['name']}: {info['shape']} from file")
            else:
                lines.append(f"input {info['name']}: random standard normal {info['shape']} (seed {a.seed})")
        if not trained and results:
            lines.append("note: the weights are untrained initial values, so the classes mean nothing; give "
                         "--weights W.npz")
        for name, (kind, y, top, from_softmax) in results.items():
            if kind != "classifier":
                lines.append(f"output {name}: shape {list(y.shape)} {y.dtype}")
                if y.size:
                    lines.append("  " + "  ".join(f"{k} {v:.6g}" for k, v in _stats(y).items()))
                continue
            classes = y.shape[1]
            k = len(top[0])
            how = "softmax of the outputs" if from_softmax else "the outputs as they are (they sum to 1)"
            lines.append(f"output {name} {list(y.shape)}: top {k} of {classes} classes; probabilities: {how}")
            cw = len(str(classes - 1))

            def what(index: int) -> str:
                label = self._label(index)  # from a file: a terminal escape in it must not reach the terminal
                return f"{index:>{cw}}  {printable(label)}" if label is not None else f"class {index:>{cw}}"

            width = max(len(what(r.index)) for ranked in top for r in ranked)
            for i, ranked in enumerate(top):
                lines.append(f"{self._sample(i)}:")
                for r in ranked:
                    logit = f"  (logit {r.logit:.4g})" if r.logit is not None else ""
                    lines.append(f"  {r.rank:>{len(str(k))}}. {r.probability:7.2%}  {what(r.index):<{width}}"
                                 f"{logit}".rstrip())
        if saved:
            lines.append(f"saved {', '.join(results)} to {saved}")
        return lines

    def _json(self, results: dict[str, Any], saved: str | None) -> dict[str, Any]:
        a = self.args
        _source, trained = self._source()
        batch = next((int(y.shape[0]) for _k, y, _t, _f in results.values() if y.ndim >= 1), None)
        doc: dict[str, Any] = {
            "network": self.graph.name, "backend": a.backend, "dtype": a.dtype,
            "weights": a.weights, "seed": None if trained else a.seed, "trained": trained,
            "inputs": self._inputs(batch),
            "images": [{"path": p.path, "format": p.format, "width": p.size[0], "height": p.size[1],
                        "mode": p.mode, "frames": p.frames} for p in self.pictures],
            "outputs": {},
        }
        for name, (kind, y, top, from_softmax) in results.items():
            if kind != "classifier":
                stats = _stats(y) if y.size else dict.fromkeys(("mean", "std", "min", "max"))
                doc["outputs"][name] = {"shape": list(y.shape), "kind": "other", **stats}
                continue
            doc["outputs"][name] = {
                "shape": list(y.shape), "kind": "classifier", "classes": int(y.shape[1]),
                "probabilities": "softmax" if from_softmax else "output",
                "results": [{"sample": i, "image": self.pictures[i].path if self.pictures else None,
                             "top": [{"rank": r.rank, "class": r.index, "label": self._label(r.index),
                                      "probability": r.probability, "logit": r.logit} for r in ranked]}
                            for i, ranked in enumerate(top)],
            }
        if saved:
            doc["saved"] = saved
        return doc


def _stats(y: Any) -> dict[str, float]:
    """{"mean", "std", "min", "max"} of a non-empty array, as floats (NaN or inf when it holds them, quietly)."""
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore"):
        return {"mean": float(np.mean(y)), "std": float(np.std(y)), "min": float(np.min(y)), "max": float(np.max(y))}


def _finite(value: Any) -> Any:
    """`value` with every non-finite float (NaN, ±inf) in it replaced by None, through dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _strict_json(doc: Any) -> str:
    """`doc` as indented strict JSON: non-finite numbers become null (JSON has no NaN or Infinity; Python's json
    module would print them as bare NaN, which other parsers reject), and allow_nan=False makes any that slipped
    through an error rather than invalid output."""
    return json.dumps(_finite(doc), indent=2, allow_nan=False)


def image_run(args: argparse.Namespace, graph: Any, given: dict[str, Any]) -> ImageRun | None:
    """`graphconv run` with --image, --labels, --top or --json: decode the pictures into the network's picture
    input (added to `given`, the input arrays by name) and return what reports the top classes after the forward
    pass; None for a plain run. Raises GraphconvError (--resize or --normalize without --image, a labels file that
    does not fit, a bad picture)."""
    from ..errors import GraphconvError
    from .labels import check_labels, read_labels

    if not args.images:
        used = [flag for flag, v in (("--resize", args.resize), ("--normalize", args.normalize)) if v is not None]
        if used:
            raise GraphconvError(f"{', '.join(used)} appl{'ies' if len(used) == 1 else 'y'} to --image IMG")
        if not (args.labels or args.top or args.json):
            return None
    elif args.batch is not None:
        raise GraphconvError("--batch sets the batch of random inputs; with --image the batch is one sample per "
                             "picture (give --image several times)")
    labels = None
    if args.labels:  # before decoding anything: a labels file that does not fit fails fast
        labels = read_labels(args.labels)
        classes = _classifier_classes(graph)
        if not classes:
            raise GraphconvError(f"--labels: {graph.name} has no classifier output [N, classes]")
        for name, k in classes.items():
            check_labels(labels, k, args.labels, name)
    file_inputs = {name: [int(d) for d in getattr(a, "shape", ())] for name, a in given.items()}
    input_name, pictures, channels_text, resize, normalization = None, [], "", None, None
    if args.images:
        from .decode import Normalization, Resize, load_images

        value, (c, h, w) = _image_input(graph, given)
        normalization = Normalization.parse(args.normalize or "auto", c, (h, w))
        resize = args.resize or Resize()
        x, pictures, _raw = load_images(args.images, c, (h, w), resize, normalization)
        given[value.name] = x.astype(args.dtype)
        input_name, channels_text = value.name, "grayscale" if c == 1 else "RGB"
    return ImageRun(args, graph, input_name, pictures, file_inputs, channels_text, resize, normalization, labels,
                    args.top or DEFAULT_TOP)


# -- graphconv filters -----------------------------------------------------------------------------------------------

FILTERS_EXAMPLES = """\
examples:
  graphconv filters runs/lenet/weights.npz --layer c1 -o filters.png

WEIGHTS.npz is a weights file, e.g. the weights.npz of a graphconv train run directory (the directory itself works
too). Without --layer (or with a wrong one) the convolution layers are listed. With --spec SPEC the spec's
convolutions say which arrays are kernels (and supply kernels fixed in the spec); without it every rank-4 array is
one. A zero weight is mid-gray, positive weights brighter, negative darker; --scale filter (default) gives each
filter the full contrast, --scale layer one scale for the whole layer. --channels: rgb draws a filter over 3 input
channels as one colour tile (AlexNet's conv1: 64 tiles of 11×11), all a gray tile per (filter, input channel)
slice, a row per filter (LeNet's c3: 16 rows of 6), mean one gray tile per filter averaged over its inputs; auto
(default): rgb for 3 input channels, else all up to 1024 tiles, else mean. The picture's format follows the
extension of -o: .png (every pixel exact), .webp (lossless), .bmp, .tif, .tiff, .jpg, .jpeg. Needs Pillow (pip
install 'graphconv[image]').
"""

FEATUREMAPS_EXAMPLES = """\
examples:
  graphconv featuremaps specs/lenet5.gc --weights runs/lenet/weights.npz --image examples/digits/digit-3.png -o maps.png

-o OUT.png writes one picture: the input, then one section per layer (.png keeps every pixel exact; .webp,
.bmp, .tif and .jpg also work, as the extension says); -o DIR/ (or an existing folder) writes DIR/00-input.png
and one DIR/NN-LAYER.png per layer. Default layers: the convolutions and poolings (the first 16:
--max-layers); --layer NAME (repeatable) picks any layer with an [N, C, H, W] output, e.g. --layer c1 --layer
tanh0. Each channel is scaled to its own min..max (viridis: dark violet low, yellow high); the caption gives the
layer's real range. The picture is prepared as run --image prepares it (--resize, --normalize). Without --weights
the maps are of untrained initial weights, which show little. Needs Pillow (pip install 'graphconv[image]').
"""


def add_parsers(sub: Any, common: argparse.ArgumentParser, sets: argparse.ArgumentParser) -> None:
    """Add the `filters` and `featuremaps` subcommands to the subparsers `sub`."""
    p = sub.add_parser("filters", parents=[common, sets], help="draw a convolution layer's kernels as a picture",
                       description="Draw the learned kernels of a convolution layer as a picture (PNG, or the "
                                   "format -o names): a grid of tiles, magnified so that each weight is a "
                                   "visible square.",
                       epilog=FILTERS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", metavar="WEIGHTS.npz", help="a weights file (or a run directory of graphconv train)")
    p.add_argument("--layer", metavar="NAME", default=None,
                   help="the convolution layer, e.g. c1 or c1.weight (without it: the list of them)")
    p.add_argument("-o", "--output", metavar="OUT.png", default=None,
                   help="the picture to write, in the format its extension names: .png (exact pixels), .webp "
                        "(lossless), .bmp, .tif, .tiff, .jpg or .jpeg (lossy); other extensions are refused")
    p.add_argument("--spec", metavar="SPEC", default=None,
                   help="the network's spec: its convolutions say which arrays are kernels and supply fixed "
                        "kernels (default: every rank-4 array of the file)")
    p.add_argument("--channels", choices=("auto", "rgb", "all", "mean"), default="auto",
                   help="rgb: a colour tile per 3-channel filter; all: a gray tile per (filter, input channel); "
                        "mean: a gray tile per filter, the mean over its inputs (default auto)")
    p.add_argument("--scale", choices=("filter", "layer"), default="filter",
                   help="the largest |weight| of each filter (default) or of the whole layer is full contrast")
    p.add_argument("--zoom", type=_positive_int, default=None, metavar="Z",
                   help="draw each weight as Z×Z pixels (default: tiles of about 64 pixels)")

    p = sub.add_parser("featuremaps", parents=[common, sets], help="draw a network's activations on a picture",
                       description="Run a network (the reference executor) on one picture and draw the outputs "
                                   "of its layers as grids of channels in a picture (PNG, or the format -o names).",
                       epilog=FEATUREMAPS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC", help="the network's spec (or an ONNX model)")
    p.add_argument("--weights", metavar="W.npz", default=None,
                   help="weights file (default: initializers seeded with --seed, which show little)")
    p.add_argument("--image", required=True, metavar="IMG", help="the picture")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png|DIR/",
                   help="one picture, in the format its extension names (.png, .webp, .bmp, .tif, .tiff, .jpg, "
                        ".jpeg; others are refused), or a folder (ending in / or existing) of one PNG per layer")
    p.add_argument("--layer", dest="layers", metavar="NAME", action="append", default=[],
                   help="a layer with an [N, C, H, W] output (repeatable; default: convolutions and poolings)")
    p.add_argument("--max-channels", type=_positive_int, default=32, metavar="C",
                   help="draw at most the first C channels of each layer (default 32)")
    p.add_argument("--max-layers", type=_positive_int, default=None, metavar="L",
                   help="default layers: at most the first L (default 16)")
    p.add_argument("--colormap", choices=("viridis", "gray"), default="viridis", help="default viridis")
    p.add_argument("--seed", type=_seed, default=0, metavar="S", help="seed of the initial weights")
    _picture_arguments(p)


def _need_pillow() -> None:
    from .decode import load_pillow

    load_pillow()


def cmd_filters(args: argparse.Namespace) -> int:
    """graphconv filters WEIGHTS.npz --layer NAME -o OUT.png [--spec SPEC]."""
    from ..errors import GraphconvError
    from .filters import conv_kernels, draw_filters, find_kernel, read_kernel
    from .grid import check_output, save_picture

    graph = None
    if args.spec:
        from ..spec import load_graph

        graph = load_graph(args.spec, dict(args.sets) or None)
    elif args.sets:
        raise GraphconvError("--set applies with --spec SPEC")
    kernels, others = conv_kernels(args.weights, graph)
    kernel = find_kernel(kernels, others, args.layer, args.weights)
    if not args.output:
        raise GraphconvError("give -o OUT.png, the picture to write")
    check_output(args.output)  # a wrong name or folder fails before the kernel is read and drawn
    _need_pillow()
    grid = draw_filters(read_kernel(args.weights, kernel), args.channels, args.scale, args.zoom)
    save_picture(grid.image, args.output)
    how = {"rgb": "RGB tile per filter", "all": "gray tile per filter and input channel",
           "mean": "gray tile per filter, mean over its inputs"}[grid.channels]
    h, w = grid.image.shape[:2]
    print(f"wrote {args.output} ({w}×{h} pixels): {kernel.describe()}; {grid.tiles} tiles in {grid.rows} rows × "
          f"{grid.cols} columns, one {how}, each weight {grid.zoom}×{grid.zoom} pixels, scaled per {grid.scale}")
    return 0


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer"


def cmd_featuremaps(args: argparse.Namespace) -> int:
    """graphconv featuremaps SPEC --image IMG -o OUT.png|DIR/ [--weights W.npz] [--layer NAME ...]."""
    import numpy as np

    from ..errors import GraphconvError
    from ..network import load, load_network
    from .decode import Normalization, Resize, load_images
    from .featuremaps import (MAX_DEFAULT_LAYERS, capture, chosen_layers, default_layers, draw_activation,
                              draw_picture)
    from .grid import captioned, check_output, save_picture, stack

    out = args.output
    to_folder = os.path.isdir(out) or out.endswith(("/", os.sep))
    if not to_folder:
        try:
            check_output(out)  # a wrong name or folder fails before the network runs
        except GraphconvError as e:
            if os.path.splitext(out)[1]:
                raise
            raise GraphconvError(f"{e}; for a folder of pictures end -o with /") from None
    _need_pillow()
    if args.spec.lower().endswith(".onnx"):
        if args.sets:
            raise GraphconvError("--set applies to specs, not to ONNX models")
        net = load(args.spec, weights=args.weights)
    else:
        net = load_network(args.spec, dict(args.sets), weights=args.weights, seed=args.seed)
    graph = net.graph
    value, (c, h, w) = _image_input(graph, several="featuremaps feeds --image to a network's one picture "
                                                   "input (other inputs get random values) and cannot tell which of "
                                                   "these it is")
    normalization = Normalization.parse(args.normalize or "auto", c, (h, w))
    resize = args.resize or Resize()
    if args.layers:
        if args.max_layers is not None:
            raise GraphconvError("--max-layers limits the default layers; with --layer you choose them")
        nodes, total = chosen_layers(graph, args.layers), None
    else:
        nodes, total = default_layers(graph, args.max_layers or MAX_DEFAULT_LAYERS)
        if not nodes:
            raise GraphconvError(f"{graph.name} has no convolution or pooling layer with an [N, C, H, W] output; "
                                 f"name layers with --layer")
    x, (pic,), raw = load_images([args.image], c, (h, w), resize, normalization)
    inputs: dict[str, Any] = {value.name: x}
    notes = []
    rng = np.random.default_rng(args.seed)
    for v in graph.inputs:
        if v.name != value.name:
            inputs[v.name] = rng.standard_normal(v.type.concrete(1)).astype(np.float32)
            notes.append(f"note: input {v.name}: random standard normal (seed {args.seed})")
    acts = capture(graph, net.weights, inputs, nodes)

    if args.weights:
        trained, source = True, f"weights {args.weights}"
    elif args.spec.lower().endswith(".onnx"):
        trained, source = True, "the model's weights"
    elif all(p.data is not None for p in graph.params.values()):
        trained, source = True, "weights fixed in the spec"
    else:
        trained, source = False, f"untrained initial weights (seed {args.seed})"
    input_caption = [f"input {value.name}  {c}×{h}×{w}  (before normalization)",
                     f"{os.path.basename(pic.path)}: {pic.describe()}, {resize.describe(h, w)}"]
    sections = [draw_picture(raw[0], input_caption)] + [draw_activation(a, args.max_channels, args.colormap)
                                                         for a in acts]
    if to_folder:
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as e:
            raise GraphconvError(f"cannot make the folder '{out}': {e.strerror or e}") from None
        names = ["input"] + [a.layer for a in acts]
        written = []
        for i, (name, section) in enumerate(zip(names, sections)):
            path = os.path.join(out, f"{i:02d}-{_safe_name(name)}.png")
            save_picture(stack([section]), path)
            written.append(path)
        what = f"{len(written)} pictures in {out}"
    else:
        title = captioned(np.zeros((0, 1, 3), np.uint8),
                          [f"{graph.name}: feature maps on {os.path.basename(pic.path)}, {source}",
                           f"each channel scaled to its own min..max ({args.colormap}: "
                           + ("dark violet low, yellow high)" if args.colormap == "viridis" else "black low, white "
                                                                                                  "high)")])
        page = stack([title] + sections)
        save_picture(page, out)
        what = f"{out} ({page.shape[1]}×{page.shape[0]} pixels)"
    print(f"wrote {what}: network {graph.name}, {source}, {len(acts)} layer{'s' if len(acts) != 1 else ''}: "
          + ", ".join(a.layer for a in acts))
    if total is not None and total > len(nodes):
        notes.append(f"note: the first {len(nodes)} of {total} convolution and pooling layers; choose others with "
                     f"--layer NAME or raise --max-layers")
    if not trained:
        notes.append("note: untrained weights show little in their feature maps; give --weights W.npz (e.g. from "
                     "graphconv train)")
    for line in notes:
        print(line)
    return 0


VERBS = {"filters": cmd_filters, "featuremaps": cmd_featuremaps}
