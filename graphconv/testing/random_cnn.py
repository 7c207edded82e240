"""Random valid CNNs for differential and gradient testing.

    case = random_cnn(seed)            # Case(graph, weights, inputs, description)

A network is a short random stack on a small image: convolutions with random kernels, strides, paddings (explicit,
asymmetric or `same`), dilations and groups (depthwise too), batchnorm, activations, max/avg pooling (with
ceil_mode and padding), dropout, residual adds, two-branch concats and upsampling, then global average pooling,
flatten and a dense head (logits [N, classes]). `widths` are the output channel counts convolutions choose from
besides keeping their input's (default 4, 6, 8; `WIDE` reaches the blocked NCHW16c kernels and odd sizes around
them). Every choice comes from `numpy.random.default_rng(seed)`, so a seed (with the same options) names a network
exactly; `description` lists the layers for failure messages. Weights are seeded He-style values,
batchnorm statistics are kept away from zero variance, and inputs are standard normal (no NaN or Inf).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import Graph, TensorType, Value
from ..ops.build import add_op

__all__ = ["Case", "random_cnn", "NARROW", "WIDE"]

ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu", "elu", "selu", "clip")
NARROW = (4, 6, 8)
WIDE = (16, 32, 48, 17)


@dataclass
class Case:
    graph: Graph
    weights: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]
    description: list[str] = field(default_factory=list)


class _Builder:
    def __init__(self, rng: np.random.Generator, dtype: str, widths: tuple[int, ...] = NARROW):
        self.rng, self.dtype, self.widths = rng, dtype, tuple(widths)
        self.g = Graph("random_cnn")
        self.k = 0
        self.layers: list[str] = []

    def op(self, op: str, inputs: list[Value], **attrs) -> Value:
        self.k += 1
        name = f"l{self.k}_{op}"
        self.layers.append(f"{name} {attrs}" if attrs else name)
        return add_op(self.g, name, op, inputs, **attrs)

    def choice(self, options):
        return options[int(self.rng.integers(len(options)))]

    # -- layers -----------------------------------------------------------------------------------------------
    def conv(self, x: Value, *, keep_shape: bool = False, out: int | None = None) -> Value:
        c, h, w = (int(d) for d in x.type.shape[1:])
        kernel = int(self.choice([1, 2, 3]))
        if keep_shape:
            stride, dilation, padding = 1, 1, "same"
        else:
            stride = int(self.choice([1, 1, 2]))
            dilation = int(self.choice([1, 1, 2])) if kernel > 1 else 1
            extent = dilation * (kernel - 1) + 1
            padding = self.choice(["same", "valid", "explicit", "asym"])
            if padding == "explicit":
                padding = int(self.rng.integers(0, extent))
            elif padding == "asym":
                padding = [int(v) for v in self.rng.integers(0, extent, 4)]
            top, left, bottom, right = ((0, 0, 0, 0) if padding in ("valid", "same") else
                                        (padding,) * 4 if isinstance(padding, int) else padding)
            if padding != "same" and (h + top + bottom < extent or w + left + right < extent):
                padding = "same"  # the kernel would not fit the padded input
        out = out or int(self.choice([c, *self.widths]))
        groups = 1
        if not keep_shape or out == c:
            common = [gr for gr in (1, 2, 3) if c % gr == 0 and out % gr == 0]
            groups = int(self.choice(common))
        depthwise = out == c and self.rng.random() < 0.2
        attrs = dict(out_channels=out, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                     bias=bool(self.rng.random() < 0.5))
        if depthwise:
            attrs["depthwise"] = True
        elif groups > 1:
            attrs["groups"] = groups
        return self.op("conv2d", [x], **attrs)

    def activation(self, x: Value) -> Value:
        act = self.choice(ACTIVATIONS)
        if act == "clip":
            return self.op("clip", [x], min=-1.5, max=1.5)
        return self.op(act, [x])

    def pool(self, x: Value) -> Value:
        h, w = (int(d) for d in x.type.shape[2:])
        if min(h, w) < 2:
            return x
        kind = self.choice(["max_pool2d", "avg_pool2d"])
        kernel = int(self.choice([2, 3])) if min(h, w) >= 3 else 2
        stride = int(self.choice([1, 2]))
        pad = int(self.rng.integers(0, kernel // 2 + 1))
        attrs = dict(kernel=kernel, stride=stride, padding=pad, ceil_mode=bool(self.rng.random() < 0.3))
        if kind == "avg_pool2d":
            attrs["count_include_pad"] = bool(self.rng.random() < 0.5)
        return self.op(kind, [x], **attrs)

    def block(self, x: Value) -> Value:
        kind = self.choice(["conv", "conv", "residual", "concat", "pool", "upsample", "dropout"])
        h = int(x.type.shape[2])
        if kind == "residual":
            y = self.activation(self.op("batchnorm", [self.conv(x, keep_shape=True, out=int(x.type.shape[1]))]))
            y = self.conv(y, keep_shape=True, out=int(x.type.shape[1]))
            return self.activation(self.op("add", [y, x]))
        if kind == "concat":
            a = self.conv(x, keep_shape=True, out=int(self.choice([2, 4])))
            b = self.activation(self.conv(x, keep_shape=True, out=int(self.choice([2, 3]))))
            return self.op("concat", [a, b])
        if kind == "pool":
            return self.pool(x)
        if kind == "upsample" and h <= 6:
            return self.op("upsample", [x], scale=2, mode=self.choice(["nearest", "bilinear"]))
        if kind == "dropout":
            return self.op("dropout", [x], rate=0.25)
        y = self.conv(x)
        if int(y.type.shape[2]) < 1 or int(y.type.shape[3]) < 1:
            return x
        if self.rng.random() < 0.5:
            y = self.op("batchnorm", [y])
        return self.activation(y)


def random_cnn(seed: int, *, dtype: str = "float64", blocks: tuple[int, int] = (2, 5), size: int = 8,
               classes: int = 5, batch: int = 2, widths: tuple[int, ...] = NARROW) -> Case:
    """One random network with its weights and an input batch (see the module docstring)."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng, dtype, widths)
    channels = int(b.choice([1, 2, 3]))
    x = b.g.add_input("x", TensorType(("N", channels, size, size), dtype))
    h = x
    for _ in range(int(rng.integers(blocks[0], blocks[1] + 1))):
        nxt = b.block(h)
        if min(int(d) for d in nxt.type.shape[2:]) >= 1:
            h = nxt
    h = b.op("global_avg_pool", [h])
    h = b.op("flatten", [h])
    b.g.set_output("logits", b.op("dense", [h], units=classes))
    weights = {}
    for name, p in b.g.params.items():
        shape = p.value.type.shape
        prng = np.random.default_rng([seed, len(weights)])
        if name.endswith("running_var"):
            weights[name] = prng.random(shape) + 0.5
        elif name.endswith("running_mean"):
            weights[name] = prng.normal(size=shape) * 0.1
        elif len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            weights[name] = prng.normal(size=shape) * np.sqrt(2.0 / fan_in)
        else:
            weights[name] = prng.normal(size=shape) * 0.1 + (1.0 if name.endswith(".weight") else 0.0)
    inputs = {"x": rng.standard_normal((batch, channels, size, size)).astype(dtype)}
    return Case(b.g, weights, inputs, b.layers)
