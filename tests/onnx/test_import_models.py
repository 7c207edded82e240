"""ONNX import of small torchvision-shaped models (built with onnx.helper the way torch.onnx.export writes them):
the reference executor on the imported graph must match onnxruntime on the same model, and the spec written from
the graph must load back and reproduce it."""

from __future__ import annotations

import numpy as np
import pytest

from graphconv.errors import GraphconvError
from graphconv.onnx.importer import import_onnx
from graphconv.reference.executor import run_graph
from graphconv.spec import load_graph_text
from graphconv.spec.writer import write_spec

from import_helpers import Builder, check_against_ort


def _out(b: Builder, name: str = "output") -> None:
    b.nodes[-1].output[0] = name


def resnet(torch_flatten=True):
    b = Builder()
    y = b.relu(b.bn(b.conv("input", 3, 8, 3, "conv1", stride=2), 8, "bn1"), "relu")
    y = b.node("MaxPool", [y], "/maxpool/MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
               ceil_mode=0)
    # BasicBlock without and with downsample
    for i, (cin, cout, s) in enumerate([(8, 8, 1), (8, 16, 2)]):
        p = f"layer1.{i}"
        z = b.relu(b.bn(b.conv(y, cin, cout, 3, f"{p}.conv1", stride=s), cout, f"{p}.bn1"), f"{p}.relu")
        z = b.bn(b.conv(z, cout, cout, 3, f"{p}.conv2"), cout, f"{p}.bn2")
        idt = y
        if s != 1 or cin != cout:
            idt = b.bn(b.conv(y, cin, cout, 1, f"{p}.downsample.0", stride=s, pad=0), cout, f"{p}.downsample.1")
        y = b.relu(b.node("Add", [z, idt], f"/layer1/{p}/Add"), f"{p}.relu_1")
    y = b.node("GlobalAveragePool", [y], "/avgpool/GlobalAveragePool")
    y = b.torch_flatten(y) if torch_flatten else b.node("Flatten", [y], "/Flatten", axis=1)
    b.gemm(y, 16, 5, "fc")
    _out(b)
    return b.model((2, 3, 16, 16), ["output"], name="resnet"), (2, 3, 16, 16)


def vgg():
    b = Builder(1)
    y = b.relu(b.conv("input", 3, 4, 3, "features.0", bias=True), "features.1")
    y = b.node("MaxPool", [y], "/features/features.2/MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    y = b.relu(b.conv(y, 4, 8, 3, "features.3", bias=True), "features.4")
    y = b.node("MaxPool", [y], "/features/features.5/MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    y = b.node("AveragePool", [y], "/avgpool/AveragePool", kernel_shape=[1, 1], strides=[1, 1])
    y = b.node("Flatten", [y], "/Flatten", axis=1)
    y = b.relu(b.gemm(y, 8 * 4 * 4, 16, "classifier.0"), "classifier.1")
    y = b.node("Dropout", [y], "/classifier/classifier.2/Dropout")
    b.gemm(y, 16, 10, "classifier.3")
    _out(b)
    return b.model((2, 3, 16, 16), ["output"], name="vgg"), (2, 3, 16, 16)


def alexnet():
    b = Builder(2)
    y = b.relu(b.conv("input", 3, 8, 5, "features.0", stride=2, pad=2, bias=True), "features.1")
    y = b.node("LRN", [y], "/lrn/LRN", size=5, alpha=1e-4, beta=0.75, bias=2.0)
    y = b.node("MaxPool", [y], "/features/features.2/MaxPool", kernel_shape=[3, 3], strides=[2, 2])
    y = b.node("Flatten", [y], "/Flatten", axis=1)
    b.gemm(y, 8 * 7 * 7, 6, "classifier.1")
    _out(b)
    return b.model((1, 3, 31, 31), ["output"], name="alexnet"), (1, 3, 31, 31)


def googlenet():
    b = Builder(3)
    y = b.relu(b.bn(b.conv("input", 3, 8, 3, "conv1.conv"), 8, "conv1.bn"), "conv1.relu")
    y = b.node("MaxPool", [y], "/maxpool1/MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    br1 = b.relu(b.conv(y, 8, 4, 1, "inception3a.branch1.conv", pad=0, bias=True), "inception3a.branch1.relu")
    br2 = b.relu(b.conv(y, 8, 4, 1, "inception3a.branch2.0.conv", pad=0), "inception3a.branch2.0.relu")
    br2 = b.relu(b.conv(br2, 4, 6, 3, "inception3a.branch2.1.conv"), "inception3a.branch2.1.relu")
    br3 = b.relu(b.conv(y, 8, 2, 1, "inception3a.branch3.0.conv", pad=0), "inception3a.branch3.0.relu")
    br3 = b.relu(b.conv(br3, 2, 3, 3, "inception3a.branch3.1.conv"), "inception3a.branch3.1.relu")
    br4 = b.node("MaxPool", [y], "/inception3a/branch4/branch4.0/MaxPool", kernel_shape=[3, 3], strides=[1, 1],
                 pads=[1, 1, 1, 1], ceil_mode=1)
    br4 = b.relu(b.conv(br4, 8, 3, 1, "inception3a.branch4.1.conv", pad=0), "inception3a.branch4.1.relu")
    y = b.node("Concat", [br1, br2, br3, br4], "/inception3a/Concat", axis=1)
    y = b.node("MaxPool", [y], "/maxpool3/MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    y = b.node("GlobalAveragePool", [y], "/avgpool/GlobalAveragePool")
    y = b.node("Flatten", [y], "/Flatten", axis=1)
    b.gemm(y, 16, 4, "fc")
    _out(b)
    return b.model((2, 3, 14, 14), ["output"], name="googlenet"), (2, 3, 14, 14)


def mobilenet_v2():
    b = Builder(4)
    y = b.node("Clip", [b.bn(b.conv("input", 3, 8, 3, "features.0.0", stride=2), 8, "features.0.1"),
                        b.const(np.array(0.0, np.float32), "/Constant_c0"),
                        b.const(np.array(6.0, np.float32), "/Constant_c6")], "/features/features.0/features.0.2/Clip")
    # inverted residual: expand 1x1, depthwise 3x3, project 1x1, residual add
    p = "features.1.conv"
    z = b.node("Clip", [b.bn(b.conv(y, 8, 16, 1, f"{p}.0.0", pad=0), 16, f"{p}.0.1"),
                        b.const(np.array(0.0, np.float32), "/Constant_c1"),
                        b.const(np.array(6.0, np.float32), "/Constant_c2")], f"/{p}/Clip")
    z = b.node("Clip", [b.bn(b.conv(z, 16, 16, 3, f"{p}.1.0", group=16), 16, f"{p}.1.1"),
                        b.const(np.array(0.0, np.float32), "/Constant_c3"),
                        b.const(np.array(6.0, np.float32), "/Constant_c4")], f"/{p}/Clip_1")
    z = b.bn(b.conv(z, 16, 8, 1, f"{p}.2", pad=0), 8, f"{p}.3")
    y = b.node("Add", [y, z], "/features/features.1/Add")
    y = b.node("GlobalAveragePool", [y], "/GlobalAveragePool")
    y = b.node("Flatten", [y], "/Flatten", axis=1)
    y = b.node("Dropout", [y], "/classifier/classifier.0/Dropout")
    b.gemm(y, 8, 3, "classifier.1")
    _out(b)
    return b.model((2, 3, 16, 16), ["output"], name="mobilenet_v2"), (2, 3, 16, 16)


def squeezenet():
    b = Builder(5)
    y = b.relu(b.conv("input", 3, 8, 3, "features.0", stride=2, pad=0, bias=True), "features.1")
    y = b.node("MaxPool", [y], "/features/features.2/MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    s = b.relu(b.conv(y, 8, 4, 1, "features.3.squeeze", pad=0, bias=True), "features.3.squeeze_activation")
    e1 = b.relu(b.conv(s, 4, 6, 1, "features.3.expand1x1", pad=0, bias=True), "features.3.expand1x1_activation")
    e3 = b.relu(b.conv(s, 4, 6, 3, "features.3.expand3x3", bias=True), "features.3.expand3x3_activation")
    y = b.node("Concat", [e1, e3], "/features/features.3/Concat", axis=1)
    y = b.node("Dropout", [y, b.init("ratio", np.array(0.5, np.float32))], "/classifier/classifier.0/Dropout")
    y = b.relu(b.conv(y, 12, 5, 1, "classifier.1", pad=0, bias=True), "classifier.2")
    y = b.node("AveragePool", [y], "/avg/AveragePool", kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 1, 1],
               count_include_pad=1)
    y = b.node("GlobalAveragePool", [y], "/classifier/classifier.3/GlobalAveragePool")
    b.node("Flatten", [y], "/Flatten", axis=1)
    _out(b)
    return b.model((2, 3, 17, 17), ["output"], name="squeezenet"), (2, 3, 17, 17)


def densenet():
    b = Builder(6)
    y = b.conv("input", 3, 8, 3, "features.conv0")
    feats = y
    c = 8
    for i in range(2):  # dense layers: BN, ReLU, 1x1 conv, BN, ReLU, 3x3 conv, concat
        p = f"features.denseblock1.denselayer{i + 1}"
        z = b.conv(b.relu(b.bn(feats, c, f"{p}.norm1"), f"{p}.relu1"), c, 8, 1, f"{p}.conv1", pad=0)
        z = b.conv(b.relu(b.bn(z, 8, f"{p}.norm2"), f"{p}.relu2"), 8, 4, 3, f"{p}.conv2")
        feats = b.node("Concat", [feats, z], f"/features/denseblock1/denselayer{i + 1}/Concat", axis=1)
        c += 4
    p = "features.transition1"
    y = b.conv(b.relu(b.bn(feats, c, f"{p}.norm"), f"{p}.relu"), c, 8, 1, f"{p}.conv", pad=0)
    y = b.node("AveragePool", [y], "/features/transition1/pool/AveragePool", kernel_shape=[2, 2], strides=[2, 2])
    y = b.relu(b.bn(y, 8, "features.norm5"), "relu")
    y = b.node("ReduceMean", [y], "/ReduceMean", axes=[2, 3], keepdims=1)
    y = b.node("Flatten", [y], "/Flatten", axis=1)
    b.gemm(y, 8, 4, "classifier")
    _out(b)
    return b.model((2, 3, 8, 8), ["output"], name="densenet"), (2, 3, 8, 8)


def _channel_shuffle(b: Builder, x: str, c: int, hw: int, prefix: str, batch: int | None) -> str:
    """torchvision's channel_shuffle(x, 2) as torch.onnx.export writes it: x.view(N, 2, C/2, H, W) -> Reshape,
    torch.transpose(x, 1, 2) -> Transpose perm [0, 2, 1, 3, 4], x.view(N, -1, H, W) -> Reshape. With a dynamic batch
    the batch size comes from Shape -> Gather -> Unsqueeze, concatenated with the constant dimensions; with a fixed
    batch the target shapes are constants."""
    if batch is None:
        shape = b.node("Shape", [x], f"{prefix}/Shape")
        g = b.node("Gather", [shape, b.const(np.array(0, np.int64), f"{prefix}/Constant")], f"{prefix}/Gather", axis=0)
        n = b.node("Unsqueeze", [g, b.const(np.array([0], np.int64), f"{prefix}/Constant_1")], f"{prefix}/Unsqueeze")
        rest = b.const(np.array([2, c // 2, hw, hw], np.int64), f"{prefix}/Constant_2")
        shape1 = b.node("Concat", [n, rest], f"{prefix}/Concat_1", axis=0)
        rest2 = b.const(np.array([-1, hw, hw], np.int64), f"{prefix}/Constant_3")
        shape2 = b.node("Concat", [n, rest2], f"{prefix}/Concat_2", axis=0)
    else:
        shape1 = b.const(np.array([batch, 2, c // 2, hw, hw], np.int64), f"{prefix}/Constant")
        shape2 = b.const(np.array([batch, -1, hw, hw], np.int64), f"{prefix}/Constant_1")
    y = b.node("Reshape", [x, shape1], f"{prefix}/Reshape", allowzero=0)
    y = b.node("Transpose", [y], f"{prefix}/Transpose", perm=[0, 2, 1, 3, 4])
    return b.node("Reshape", [y, shape2], f"{prefix}/Reshape_1", allowzero=0)


def _downsample_unit(b: Builder, x: str, cin: int, cout: int, hw: int, p: str, batch: int | None) -> str:
    """torchvision ShuffleNetV2 InvertedResidual with stride 2 (the first unit of each stage; no channel split):
    branch1 = depthwise 3×3/2, 1×1, ReLU; branch2 = 1×1, ReLU, depthwise 3×3/2, 1×1, ReLU; concat; channel shuffle.
    BatchNorm is folded into the convolutions, as torch.onnx.export writes eval-mode models."""
    f = cout // 2
    pp = f"{p.split('.')[0]}/{p}"  # /stage2/stage2.0
    b1 = b.conv(x, cin, cin, 3, f"{p}.branch1.0", stride=2, group=cin, bias=True)
    b1 = b.relu(b.conv(b1, cin, f, 1, f"{p}.branch1.2", pad=0, bias=True), f"{p}.branch1.4")
    b2 = b.relu(b.conv(x, cin, f, 1, f"{p}.branch2.0", pad=0, bias=True), f"{p}.branch2.2")
    b2 = b.conv(b2, f, f, 3, f"{p}.branch2.3", stride=2, group=f, bias=True)
    b2 = b.relu(b.conv(b2, f, f, 1, f"{p}.branch2.5", pad=0, bias=True), f"{p}.branch2.7")
    y = b.node("Concat", [b1, b2], f"/{pp}/Concat", axis=1)
    return _channel_shuffle(b, y, cout, hw // 2, f"/{pp}", batch)


def _basic_unit(b: Builder, x: str, c: int, hw: int, p: str, batch: int | None, split: str) -> str:
    """torchvision ShuffleNetV2 InvertedResidual with stride 1: x1, x2 = x.chunk(2, dim=1); branch2 on x2 (1×1,
    ReLU, depthwise 3×3, 1×1, ReLU); concat(x1, branch2); channel shuffle. torch.onnx.export writes the chunk as
    one Split (opset 13+: the sizes are an input; opset 18+: `num_outputs`) or, from the dynamo exporter, as two
    Slice nodes on axis 1."""
    f = c // 2
    pp = f"{p.split('.')[0]}/{p}"
    if split == "Split":
        x1 = b.node("Split", [x, b.init(f"{p}.split", np.array([f, f], np.int64))], f"/{pp}/Split", n_out=2, axis=1)
        x2 = f"/{pp}/Split_output_1"
    elif split == "Split18":
        x1 = b.node("Split", [x], f"/{pp}/Split", n_out=2, axis=1, num_outputs=2)
        x2 = f"/{pp}/Split_output_1"
    else:
        ax = b.init(f"{p}.axes", np.array([1], np.int64))
        end = b.init(f"{p}.end", np.array([np.iinfo(np.int64).max], np.int64))
        mid = b.init(f"{p}.mid", np.array([f], np.int64))
        x1 = b.node("Slice", [x, b.init(f"{p}.zero", np.array([0], np.int64)), mid, ax], f"/{pp}/Slice")
        x2 = b.node("Slice", [x, mid, end, ax], f"/{pp}/Slice_1")
    y = b.relu(b.conv(x2, f, f, 1, f"{p}.branch2.0", pad=0, bias=True), f"{p}.branch2.2")
    y = b.conv(y, f, f, 3, f"{p}.branch2.3", group=f, bias=True)
    y = b.relu(b.conv(y, f, f, 1, f"{p}.branch2.5", pad=0, bias=True), f"{p}.branch2.7")
    y = b.node("Concat", [x1, y], f"/{pp}/Concat", axis=1)
    return _channel_shuffle(b, y, c, hw, f"/{pp}", batch)


def shufflenet(batch: int | None = None, split: str = "Split", opset: int = 17):
    """A small ShuffleNetV2: each stage is a downsampling unit followed by basic units (channel split)."""
    b = Builder(7) if batch is None else Builder(7, batch=batch)
    y = b.relu(b.conv("input", 3, 8, 3, "conv1.0", stride=2, bias=True), "conv1.2")
    y = b.node("MaxPool", [y], "/maxpool/MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = _downsample_unit(b, y, 8, 16, 8, "stage2.0", batch)
    y = _basic_unit(b, y, 16, 4, "stage2.1", batch, split)
    y = _downsample_unit(b, y, 16, 32, 4, "stage3.0", batch)
    y = _basic_unit(b, y, 32, 2, "stage3.1", batch, split)
    y = _basic_unit(b, y, 32, 2, "stage3.2", batch, split)
    y = b.relu(b.conv(y, 32, 16, 1, "conv5.0", pad=0, bias=True), "conv5.2")
    if opset >= 18:  # the axes became an input
        y = b.node("ReduceMean", [y, b.init("axes", np.array([2, 3], np.int64))], "/ReduceMean", keepdims=0)
    else:
        y = b.node("ReduceMean", [y], "/ReduceMean", axes=[2, 3], keepdims=0)
    b.gemm(y, 16, 5, "fc")
    _out(b)
    shape = (2 if batch is None else batch, 3, 32, 32)
    return b.model(shape, ["output"], name="shufflenet_v2", opset=opset), shape


MODELS = {"resnet": resnet, "resnet_flatten_op": lambda: resnet(False), "vgg": vgg, "alexnet": alexnet,
          "googlenet": googlenet, "mobilenet_v2": mobilenet_v2, "squeezenet": squeezenet, "densenet": densenet,
          "shufflenet_v2": shufflenet, "shufflenet_v2_batch1": lambda: shufflenet(1),
          "shufflenet_v2_slices": lambda: shufflenet(split="Slice"),
          "shufflenet_v2_opset18": lambda: shufflenet(split="Split18", opset=18)}


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_import_matches_onnxruntime(arch):
    model, shape = MODELS[arch]()
    graph, weights, x, got = check_against_ort(model, shape)
    assert graph.inputs[0].type.shape[0] == "N"
    # every parameter is trainable (or a buffer) and comes with its value
    assert set(weights) == set(graph.params)
    # the written spec loads back with the same structure and parameters and reproduces the outputs
    text = write_spec(graph)
    again = load_graph_text(text, path=f"{arch}.gc")
    assert [(n.name, n.op) for n in again.nodes] == [(n.name, n.op) for n in graph.nodes]
    assert {k: (p.role, p.value.type.shape) for k, p in again.params.items()} == \
        {k: (p.role, p.value.type.shape) for k, p in graph.params.items()}
    for a, b in zip(graph.nodes, again.nodes):
        assert a.attrs.keys() == b.attrs.keys() and all(
            np.array_equal(np.asarray(a.attrs[k], dtype=object), np.asarray(b.attrs[k], dtype=object))
            for k in a.attrs), (a.name, a.attrs, b.attrs)
    out2 = run_graph(again, {again.inputs[0].name: x}, weights)
    for (k1, v1), (k2, v2) in zip(got.items(), out2.items()):
        assert k1 == k2
        np.testing.assert_array_equal(v1, v2)


def test_resnet_names_follow_torch():
    graph, weights = import_onnx(resnet()[0])
    assert "layer1_0_conv1.weight" in weights
    assert "layer1_1_downsample_1.running_var" in weights
    assert graph.params["bn1.running_mean"].role == "buffer"
    assert graph.params["conv1.weight"].role == "trainable"
    assert list(graph.outputs) == ["output_"]


def test_batch_size_is_symbolic():
    model, shape = resnet()
    graph, weights = import_onnx(model)
    x = np.random.default_rng(0).normal(size=(5, *shape[1:])).astype(np.float32)
    assert run_graph(graph, {graph.inputs[0].name: x}, weights)["output_"].shape == (5, 5)


def test_shufflenet_channel_shuffle_imports_as_reshape_transpose_reshape():
    graph, _ = import_onnx(shufflenet()[0])
    ops = [n.op for n in graph.nodes]
    assert ops.count("transpose") == 5 and ops.count("reshape") == 10  # one shuffle per unit
    shuffles = [(n.op, n.attrs, n.output.type) for n in graph.nodes if n.op in ("reshape", "transpose")][:3]
    assert [(op, attrs, str(t)) for op, attrs, t in shuffles] == [
        ("reshape", {"shape": (2, 8, 4, 4)}, "f32[N, 2, 8, 4, 4]"),
        ("transpose", {"perm": (0, 2, 1, 3, 4)}, "f32[N, 8, 2, 4, 4]"),
        ("reshape", {"shape": (16, 4, 4)}, "f32[N, 16, 4, 4]")]
    # the batch size stays symbolic through the shuffle
    model, shape = shufflenet()
    graph, weights = import_onnx(model)
    x = np.random.default_rng(1).normal(size=(3, *shape[1:])).astype(np.float32)
    assert run_graph(graph, {graph.inputs[0].name: x}, weights)["output_"].shape == (3, 5)


def test_shufflenet_channel_split_imports_as_slices():
    for split in ("Split", "Slice"):
        graph, _ = import_onnx(shufflenet(split=split)[0])
        slices = [(n.attrs, str(n.output.type)) for n in graph.nodes if n.op == "slice"][:2]
        assert slices == [({"start": 0, "end": 8, "axis": 1, "step": 1}, "f32[N, 8, 4, 4]"),
                          ({"start": 8, "end": 16, "axis": 1, "step": 1}, "f32[N, 8, 4, 4]")], split
        assert sum(n.op == "slice" for n in graph.nodes) == 6


def _one_node(op: str, inputs: list[str], inits: dict, opset: int = 17, n_out: int = 1, **attrs):
    b = Builder()
    y = b.conv("input", 2, 6, 3, "conv")
    for k, v in inits.items():
        b.init(k, v)
    outs = [b.node(op, [y if i == "y" else i for i in inputs], "/op", n_out=n_out, **attrs)]
    outs += [f"/op_output_{i}" for i in range(1, n_out)]
    for i, o in enumerate(outs):
        b.node("Identity", [o], f"/out{i}", out=f"output{i}")
    return b.model((2, 2, 5, 5), [f"output{i}" for i in range(n_out)], opset=opset), (2, 2, 5, 5)


I64 = np.iinfo(np.int64)


@pytest.mark.parametrize("starts, ends, axes, steps", [
    ([1], [5], [1], None), ([-2], [I64.max], [1], [1]), ([0, 1], [I64.max, 4], [0, 3], [1, 2]),
    ([4, 0], [I64.min, 3], [2, 1], [-1, 1]), ([-1], [-100], [-1], [-2]), ([0, 2], [3, 5], None, None),
])
def test_slice_of_a_tensor_matches_onnxruntime(starts, ends, axes, steps):
    inits = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64)}
    ins = ["y", "starts", "ends"]
    if axes is not None or steps is not None:
        inits["axes"] = np.array(axes if axes is not None else range(len(starts)), np.int64)
        ins.append("axes")
    if steps is not None:
        inits["steps"] = np.array(steps, np.int64)
        ins.append("steps")
    if axes is None and 0 in range(len(starts)):
        inits["starts"][0], inits["ends"][0] = 0, I64.max  # axis 0 is the batch: only its full range
    check_against_ort(*_one_node("Slice", ins, inits))


@pytest.mark.parametrize("sizes, attrs, opset", [
    ([2, 4], {}, 17), ([1, 1, 4], {}, 17), (None, {}, 17), (None, {"num_outputs": 3}, 18), ([3, 3], {}, 18),
])
def test_split_of_a_tensor_matches_onnxruntime(sizes, attrs, opset):
    n_out = len(sizes) if sizes else attrs.get("num_outputs", 2)
    inits = {} if sizes is None else {"split": np.array(sizes, np.int64)}
    ins = ["y"] + ([] if sizes is None else ["split"])
    graph, _, _, _ = check_against_ort(*_one_node("Split", ins, inits, opset=opset, n_out=n_out, axis=1, **attrs))
    assert sum(n.op == "slice" for n in graph.nodes) == n_out


@pytest.mark.parametrize("op", ["Sub", "Div"])
def test_sub_and_div_of_two_tensors_match_onnxruntime(op):
    b = Builder()
    y = b.conv("input", 2, 4, 3, "conv")
    z = b.relu(b.conv("input", 2, 4, 3, "conv2"), "relu")
    if op == "Div":
        z = b.node("Add", [z, b.init("one", np.ones((1, 4, 1, 1), np.float32))], "/plus1")
    b.node(op, [y, z], "/op", out="output")
    graph, *_ = check_against_ort(b.model((2, 2, 5, 5), ["output"]), (2, 2, 5, 5))
    assert op.lower() in [n.op for n in graph.nodes]


@pytest.mark.parametrize("op, inputs, inits, attrs, text", [
    ("Slice", ["y", "s", "e", "a"], dict(s=[1], e=[2], a=[0]), {}, "slices the batch dimension ([1:2:1] of axis 0)"),
    ("Split", ["y", "sp"], dict(sp=[1, 1]), dict(axis=0), "splits the batch dimension"),
])
def test_batch_slicing_is_refused(op, inputs, inits, attrs, text):
    inits = {k: np.array(v, np.int64) for k, v in inits.items()}
    with pytest.raises(GraphconvError) as e:
        import_onnx(_one_node(op, inputs, inits, n_out=2 if op == "Split" else 1, **attrs)[0])
    assert text in str(e.value)


@pytest.mark.parametrize("op, inputs, inits, attrs, text", [
    ("Split", ["y", "sp"], dict(sp=[2, 2]), dict(axis=1), "split sizes [2, 2] must be 2 non-negative sizes summing "
                                                            "to 6 (axis 1)"),
    ("Split", ["y"], {}, dict(axis=7), "axis 7 is out of range for rank 4"),
    ("Slice", ["y", "s", "e", "a", "st"], dict(s=[0], e=[2], a=[1], st=[0]), {}, "a step is 0"),
    ("Slice", ["y", "s", "e", "a"], dict(s=[0, 0], e=[2], a=[1, 2]), {}, "starts, ends, axes and steps have different lengths (2, 1, 2, 2)"),
    ("Slice", ["y", "s", "e", "a"], dict(s=[4], e=[2], a=[1]), {}, "cannot be expressed as slice: slice: [4:2:1] of "
                                                                  "axis 1 (size 6)"),
])
def test_bad_slices_and_splits_are_located(op, inputs, inits, attrs, text):
    inits = {k: np.array(v, np.int64) for k, v in inits.items()}
    with pytest.raises(GraphconvError) as e:
        import_onnx(_one_node(op, inputs, inits, n_out=2 if op == "Split" else 1, **attrs)[0])
    assert f"node '/op' ({op}): {text}" in str(e.value)


@pytest.mark.parametrize("perm, default", [([1, 0, 2, 3], False), (None, True), ([0, 1, 3, 2, 0], None)])
def test_transpose_of_the_batch_dimension_is_refused(perm, default):
    b = Builder()
    y = b.conv("input", 2, 4, 3, "conv")
    attrs = {} if perm is None else {"perm": perm}
    b.node("Transpose", [y], "/Transpose", **attrs)
    _out(b)
    with pytest.raises(GraphconvError) as e:
        import_onnx(b.model((1, 2, 3, 3), ["output"]))
    msg = str(e.value)
    if default is None:
        assert "node '/Transpose' (Transpose): perm [0, 1, 3, 2, 0] is not a permutation of the 4 axes" in msg
    else:
        assert "Transpose node '/Transpose'" in msg and "moves the batch dimension" in msg
        assert "perm[0] must be 0" in msg and ("the default: all axes reversed" in msg) == default


def test_transpose_identity_and_constant_fold():
    b = Builder()
    y = b.conv("input", 2, 4, 3, "conv")
    y = b.node("Transpose", [y], "/Transpose", perm=[0, 1, 2, 3])
    y = b.node("Transpose", [y], "/Transpose_1", perm=[0, 1, 3, 2])
    m = b.node("Transpose", [b.init("m", np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1))], "/Transpose_2",
               perm=[0, 1, 3, 2])
    b.node("Mul", [y, m], "/Mul")
    _out(b)
    graph, _, _, _ = check_against_ort(b.model((2, 2, 5, 4), ["output"]), (2, 2, 5, 4))
    assert [n.op for n in graph.nodes] == ["conv2d", "identity", "transpose", "conv2d"]


def test_unsupported_ops_listed_together():
    b = Builder()
    y = b.node("Softplus", ["input"], "/t1")
    y = b.node("Softplus", [y], "/t2")
    y = b.node("Erf", [y], "/erf")
    b.node("HardSwish", [y], "/hs")
    _out(b)
    with pytest.raises(GraphconvError) as e:
        import_onnx(b.model((1, 2, 3, 3), ["output"]))
    msg = str(e.value)
    assert "3 op types" in msg
    assert "Softplus: 2 nodes (/t1, /t2)" in msg and "Erf: 1 node (/erf)" in msg and "HardSwish" in msg


def test_unsupported_cases_listed_together():
    b = Builder()
    y = b.node("Div", [b.init("two", np.array(2.0, np.float32)), "input"], "/div")
    y = b.node("Relu", [y], "/relu")
    a = b.node("Pad", ["input", b.init("pads", np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64))], "/pad")
    b.node("Add", [y, a], "/add")
    _out(b)
    with pytest.raises(GraphconvError) as e:
        import_onnx(b.model((1, 2, 3, 3), ["output"]))
    msg = str(e.value)
    assert "2 nodes cannot be imported" in msg and "Div node '/div'" in msg and "Pad node '/pad'" in msg


def test_inconsistent_attribute_names_node():
    b = Builder()
    b.conv("input", 3, 4, 3, "conv")
    next(a for a in b.nodes[-1].attribute if a.name == "kernel_shape").ints[:] = [5, 5]
    _out(b)
    with pytest.raises(GraphconvError, match=r"node '/conv/Conv' \(Conv\): kernel_shape \[5, 5\]"):
        import_onnx(b.model((1, 3, 8, 8), ["output"]))


def test_constant_elementwise_as_depthwise_conv():
    b = Builder()
    y = b.conv("input", 3, 4, 3, "conv")
    y = b.node("Sub", [y, b.init("mean", np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1))], "/sub")
    y = b.node("Div", [y, b.init("std", np.array(2.0, np.float32))], "/div")
    y = b.node("Mul", [b.init("s", np.float32([0.5, 1, 2, 3]).reshape(4, 1, 1)), y], "/mul")
    b.node("Sub", [y, "input_neg"], "/sub2") if False else None
    _out(b)
    graph, _, _, _ = check_against_ort(b.model((2, 3, 6, 6), ["output"]), (2, 3, 6, 6))
    assert [n.op for n in graph.nodes] == ["conv2d"] * 4


def test_resize_and_pad_and_convtranspose():
    b = Builder()
    y = b.conv("input", 2, 4, 3, "conv")
    y = b.node("Pad", [y, b.init("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))], "/pad", mode="reflect")
    y = b.node("Resize", [y, "", b.init("scales", np.float32([1, 1, 2, 2]))], "/up", mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    y = b.node("Resize", [y, "", "", b.init("sizes", np.int64([2, 4, 20, 14]))], "/up2", mode="linear",
               coordinate_transformation_mode="half_pixel")
    w = b.init("deconv.weight", np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32))
    b.node("ConvTranspose", [y, w], "/deconv", strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
    _out(b)
    check_against_ort(b.model((2, 2, 5, 5), ["output"]), (2, 2, 5, 5))


def test_matmul_add_becomes_dense():
    b = Builder()
    y = b.node("Flatten", ["input"], "/flat", axis=1)
    y = b.node("MatMul", [y, b.init("fc.weight_t", np.random.default_rng(1).normal(size=(12, 5)).astype(np.float32))],
               "/fc/MatMul")
    b.node("Add", [y, b.init("fc.bias", np.float32([1, 2, 3, 4, 5]))], "/fc/Add")
    _out(b)
    graph, weights, _, _ = check_against_ort(b.model((3, 3, 2, 2), ["output"]), (3, 3, 2, 2))
    assert [n.op for n in graph.nodes] == ["flatten", "dense"]
    dense = graph.nodes[1]
    assert "bias" in dense.params


def test_fixed_batch_reshape_constant():
    b = Builder(batch=1)
    y = b.conv("input", 3, 4, 3, "conv")
    b.node("Reshape", [y, b.init("shape", np.int64([1, -1]))], "/Reshape")
    _out(b)
    graph, _, _, _ = check_against_ort(b.model((1, 3, 4, 4), ["output"]), (1, 3, 4, 4))
    assert graph.nodes[-1].op == "flatten"
