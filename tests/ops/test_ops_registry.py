"""Properties every op definition must have, and a float32/float64 sweep over every registered op."""

from __future__ import annotations

import numpy as np
import pytest

from graphconv.ops import REGISTRY
from graphconv.ops.schema import OpDef

from .helpers import close, randn, run, type_of

FUSION_KINDS = {"elementwise", "broadcast", "injective", "reduction", "out_fusable", "opaque"}

# The positional order of each op's attributes (the spec language passes positional arguments in this order).
POSITIONAL = {
    "conv2d": ["out_channels", "kernel", "stride", "padding", "dilation", "groups", "depthwise", "bias", "weight",
               "flip", "init", "bias_init", "frozen"],
    "conv_transpose2d": ["out_channels", "kernel", "stride", "padding", "output_padding", "dilation", "groups",
                         "bias", "weight", "init", "bias_init", "frozen"],
    "dense": ["units", "bias", "weight", "init", "bias_init", "frozen"],
    "channel_matmul": ["units", "bias", "weight", "init", "bias_init", "frozen"],
    "to_blocked": ["block"], "from_blocked": ["block"],
    "flatten": [], "identity": [], "reshape": ["shape"], "transpose": ["perm"], "pad": ["pads", "mode", "value"],
    "relu": [], "leaky_relu": ["alpha"], "elu": ["alpha"], "selu": [], "sigmoid": [], "tanh": [],
    "clip": ["min", "max"], "softmax": ["axis"], "log_softmax": ["axis"], "dropout": ["rate"],
    "max_pool2d": ["kernel", "stride", "padding", "dilation", "ceil_mode"],
    "avg_pool2d": ["kernel", "stride", "padding", "ceil_mode", "count_include_pad"],
    "lp_pool2d": ["kernel", "p", "stride", "padding", "ceil_mode"],
    "global_avg_pool": [], "global_max_pool": [],
    "add": [], "mul": [], "sub": [], "div": [], "concat": ["axis"], "slice": ["start", "end", "axis", "step"],
    "batchnorm": ["eps", "momentum", "affine", "frozen"],
    "lrn": ["size", "alpha", "beta", "bias"],
    "upsample": ["scale", "size", "mode", "align_corners"],
    "window_reduce": ["reduce", "kernel", "stride", "padding", "dilation", "ceil_mode", "scale"],
    "reduce_mean": [],
}

# One typical configuration per op: (attributes, per-sample input shapes).
SWEEP = {
    "conv2d": ({"out_channels": 4, "kernel": 3, "padding": 1}, [(3, 6, 6)]),
    "conv_transpose2d": ({"out_channels": 4, "kernel": 3, "stride": 2}, [(3, 4, 4)]),
    "dense": ({"units": 5}, [(7,)]),
    "channel_matmul": ({"units": 5}, [(7, 3, 2)]),
    "to_blocked": ({"block": 4}, [(8, 3, 2)]), "from_blocked": ({"block": 4}, [(2, 3, 2, 4)]),
    "flatten": ({}, [(3, 4, 4)]),
    "identity": ({}, [(3, 4)]),
    "reshape": ({"shape": [4, -1]}, [(3, 4, 4)]),
    "transpose": ({"perm": [0, 2, 3, 1]}, [(3, 4, 5)]),
    "pad": ({"pads": [1, 2], "mode": "reflect"}, [(3, 4, 4)]),
    "relu": ({}, [(3, 4)]), "leaky_relu": ({}, [(3, 4)]), "elu": ({}, [(3, 4)]), "selu": ({}, [(3, 4)]),
    "sigmoid": ({}, [(3, 4)]), "tanh": ({}, [(3, 4)]), "clip": ({"min": -0.5, "max": 0.5}, [(3, 4)]),
    "softmax": ({}, [(3, 4)]), "log_softmax": ({}, [(3, 4)]), "dropout": ({}, [(3, 4)]),
    "max_pool2d": ({"kernel": 3, "stride": 2, "ceil_mode": True}, [(3, 6, 6)]),
    "avg_pool2d": ({"kernel": 3, "stride": 2, "padding": 1}, [(3, 6, 6)]),
    "lp_pool2d": ({"kernel": 2}, [(3, 6, 6)]),
    "global_avg_pool": ({}, [(3, 6, 6)]), "global_max_pool": ({}, [(3, 6, 6)]),
    "add": ({}, [(3, 4), (3, 4)]), "mul": ({}, [(3, 4), (1, 4)]), "concat": ({}, [(3, 4), (2, 4)]),
    "sub": ({}, [(3, 4), (3, 1)]), "div": ({}, [(3, 4), (3, 4)]), "slice": ({"start": 1, "step": 2}, [(5, 4)]),
    "batchnorm": ({}, [(3, 4, 4)]),
    "lrn": ({"size": 3}, [(5, 4, 4)]),
    "upsample": ({"scale": 2, "mode": "bilinear"}, [(3, 4, 4)]),
    "window_reduce": ({"reduce": "sum", "kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True, "scale": True},
                      [(3, 6, 6)]),
    "reduce_mean": ({}, [(3, 6, 6)]),
}


FORWARD = sorted(name for name, op in REGISTRY.items() if not op.training_only)
TRAINING = sorted(name for name, op in REGISTRY.items() if op.training_only)


def test_every_op_is_listed():
    assert set(FORWARD) == set(POSITIONAL) == set(SWEEP)


@pytest.mark.parametrize("name", TRAINING)
def test_training_op_definition(name):
    """Ops only the autodiff pass adds: documented, and every one maps to ONNX (training steps export)."""
    op = REGISTRY[name]
    assert op.name == name
    assert op.doc and "\n" not in op.doc
    assert op.fusion in FUSION_KINDS
    assert type(op).to_onnx is not OpDef.to_onnx, f"{name} has no ONNX mapping"


@pytest.mark.parametrize("name", FORWARD)
def test_definition(name):
    op = REGISTRY[name]
    assert op.name == name
    assert op.doc and "\n" not in op.doc
    assert op.fusion in FUSION_KINDS
    assert [a.name for a in op.attrs] == POSITIONAL[name]
    for a in op.attrs:  # every default, given explicitly, passes its own validation
        if not a.required and a.default is not None:
            assert op.check_attrs({**SWEEP[name][0], a.name: a.default})[a.name] == a.default


@pytest.mark.parametrize("name", FORWARD)
def test_float32_and_float64(name):
    given, shapes = SWEEP[name]
    xs = [randn(2, *s, seed=i) for i, s in enumerate(shapes)]
    y32, built, ps = run(name, xs, **given)
    y64, built64, _ = run(name, [x.astype(np.float64) for x in xs], params=ps, **given)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    assert built64.out.dtype == "float64" and built.out.dtype == "float32"
    close(y32, y64)
    assert isinstance(built.op.macs(built.attrs, [type_of(x) for x in xs], built.out), int)
