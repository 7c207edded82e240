"""The layer table: parameter counts by role, MACs, receptive fields along the DAG, and the text form."""

from __future__ import annotations

import json

import numpy as np

from graphconv.ir.graph import Graph, TensorType
from graphconv.summary import format_summary, summarize

from runtime_helpers import add_op, small_cnn


def layer(d, name):
    return next(entry for entry in d["layers"] if entry["name"] == name)


def test_small_cnn_table():
    d = summarize(small_cnn())
    assert d["network"] == "small_cnn"
    rows = {e["name"]: (e["op"], e["output_shape"], e["params"], e["macs"], e["receptive_field"])
            for e in d["layers"]}
    assert rows == {
        "conv1": ("conv2d", ["N", 4, 8, 8], 4 * 27 + 4, 4 * 8 * 8 * 27, [3, 3]),
        "bn1": ("batchnorm", ["N", 4, 8, 8], 8, 0, [3, 3]),  # running statistics are buffers
        "relu1": ("relu", ["N", 4, 8, 8], 0, 0, [3, 3]),
        "pool1": ("max_pool2d", ["N", 4, 4, 4], 0, 0, [4, 4]),  # + (2-1)·1
        "conv2": ("conv2d", ["N", 6, 2, 2], 6 * 36, 6 * 2 * 2 * 36, [8, 8]),  # + (3-1)·2, jump 4
        "gap": ("global_avg_pool", ["N", 6, 1, 1], 0, 0, [8, 8]),  # the whole 8×8 input
        "flat": ("flatten", ["N", 6], 0, 0, [8, 8]),
        "fc": ("dense", ["N", 5], 35, 30, [8, 8]),
    }
    assert [e["receptive_field_global"] for e in d["layers"]] == [False] * 5 + [True] * 3
    assert d["total_params"] == 112 + 8 + 216 + 35
    assert d["trainable_params"] == d["total_params"]
    assert d["buffer_elements"] == 8
    assert d["total_macs"] == 6912 + 864 + 30
    assert layer(d, "fc")["inputs"] == ["flat"]
    json.dumps(d)  # JSON-ready


def test_roles_frozen_fixed_buffers():
    g = Graph("roles")
    x = g.add_input("x", TensorType(("N", 1, 6, 6)))
    h = add_op(g, "edge", "conv2d", [x], out_channels=1, weight=np.ones((1, 1, 3, 3)), bias=False)  # fixed
    h = add_op(g, "frz", "conv2d", [h], out_channels=2, kernel=1, frozen=True)  # frozen: 2 + 2
    h = add_op(g, "bn", "batchnorm", [h])  # 4 trainable, 4 buffer
    g.set_output("y", h)
    d = summarize(g)
    assert [(e["params"], e["trainable_params"]) for e in d["layers"]] == [(9, 0), (4, 0), (4, 4)]
    assert (d["total_params"], d["trainable_params"], d["non_trainable_params"]) == (17, 4, 13)
    assert d["total_params"] == g.num_params()


def test_receptive_field_max_over_branches_and_dilation():
    g = Graph("branches")
    x = g.add_input("x", TensorType(("N", 2, 32, 32)))
    a = add_op(g, "a", "conv2d", [x], out_channels=2, kernel=3, padding="same")
    b = add_op(g, "b", "conv2d", [x], out_channels=2, kernel=3, dilation=3, padding="same")  # extent 7
    s = add_op(g, "s", "add", [a, b])
    c = add_op(g, "c", "conv2d", [s], out_channels=2, kernel=[3, 1], stride=2)
    d2 = add_op(g, "d", "conv2d", [c], out_channels=2, kernel=3)
    g.set_output("y", d2)
    d = summarize(g)
    rf = {e["name"]: e["receptive_field"] for e in d["layers"]}
    assert rf == {"a": [3, 3], "b": [7, 7], "s": [7, 7], "c": [9, 7], "d": [13, 11]}


def test_dense_after_flatten_sees_the_whole_input():
    g = Graph("mlp_head")
    x = g.add_input("x", TensorType(("N", 1, 10, 12)))
    h = add_op(g, "conv", "conv2d", [x], out_channels=2, kernel=3)
    h = add_op(g, "flat", "flatten", [h])
    h = add_op(g, "act", "relu", [h])
    h = add_op(g, "fc", "dense", [h], units=4)
    g.set_output("y", h)
    rf = {e["name"]: (e["receptive_field"], e["receptive_field_global"]) for e in summarize(g)["layers"]}
    assert rf == {"conv": ([3, 3], False), "flat": ([3, 3], False), "act": ([3, 3], False),
                  "fc": ([10, 12], True)}


def test_no_spatial_input_gives_null_field():
    g = Graph("vec")
    x = g.add_input("x", TensorType(("N", 8)))
    g.set_output("y", add_op(g, "fc", "dense", [x], units=2))
    (entry,) = summarize(g)["layers"]
    assert entry["receptive_field"] is None and entry["macs"] == 16


def test_format_summary_text():
    text = format_summary(summarize(small_cnn()))
    lines = text.splitlines()
    assert lines[0] == "Network: small_cnn"
    header = next(line for line in lines if line.startswith("Layer"))
    for col in ("Op", "Output shape", "Params", "MACs", "RF"):
        assert col in header
    conv1 = next(line for line in lines if line.startswith("conv1 "))
    assert "[N, 4, 8, 8]" in conv1 and "6,912" in conv1 and "3×3" in conv1
    assert "8×8 (all)" in next(line for line in lines if line.startswith("fc "))
    assert "Total params:         371" in text
    assert "Trainable params:     371" in text
    assert "Total MACs:           7,806 (7.81 kMAC per sample)" in text
    # numbers are right-aligned in their columns
    params_end = {len(line.split("  112")[0]) + 5 for line in lines if line.startswith("conv1 ")}
    assert params_end == {header.index("Params") + len("Params")}
