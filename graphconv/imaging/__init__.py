"""Pictures in and out: classify image files, draw convolution kernels and feature maps.

Design note. Three commands share one path from a picture file to an input tensor and one way of drawing arrays:

    decode.py       untrusted file -> Pillow image (size and pixel limits, allowed formats, one-line errors)
                    -> grayscale or RGB (transparency over white) -> resized (crop or stretch) -> [0, 1]
                    -> normalized (imagenet, none, custom; "auto" picks by the input's channels and size)
    labels.py       class names: one per line, a JSON list, or ImageNet's {"0": ["n01440764", "tench"]};
                    printable() escapes their control characters for the terminal
    classify.py     top-k classes of an [N, K] output with probabilities (softmax unless already a distribution)
    grid.py         tiles -> grid (nearest-neighbour zoom, 1-pixel gaps; exact, predictable sizes), captions,
                    stacked sections; gray and viridis colour scales; writing (the format the extension names:
                    PNG, WebP, BMP, TIFF, JPEG; others refused), atomically, errors naming the path given
    filters.py      `graphconv filters`: conv kernels of a weights file (safe .npz reading) as tiles
    featuremaps.py  `graphconv featuremaps`: a layer's activations on one picture as tiles
    command.py      argument parsing and printing for `run --image`, `filters`, `featuremaps` (the CLI hooks);
                    `run --json` is strict JSON (NaN and infinities as null)

Pillow is the `image` extra (pip install 'graphconv[image]'): nothing here imports it until a picture is read or
written, and its absence is a GraphconvError naming the extra. The network runs through graphconv's own compile
(run --image: any backend) or the reference executor (featuremaps: a copy of the graph with the chosen layers as
extra outputs), so this package adds no execution path of its own.
"""

from .classify import Ranked, top_classes
from .decode import ImageError, Normalization, Picture, Resize, load_images, read_image, to_tensor
from .featuremaps import Activation, capture, draw_activation
from .filters import FilterGrid, Kernel, conv_kernels, draw_filters, find_kernel, read_kernel
from .labels import LabelsError, read_labels

__all__ = ["ImageError", "Picture", "Resize", "Normalization", "read_image", "to_tensor", "load_images",
           "LabelsError", "read_labels", "Ranked", "top_classes", "Kernel", "FilterGrid", "conv_kernels",
           "find_kernel", "read_kernel", "draw_filters", "Activation", "capture", "draw_activation"]
