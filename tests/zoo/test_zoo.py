"""The model zoo in specs/: exact parameter counts (torchvision's where there is one), output shapes, the textual
promises of the ResNet specs, the fixed Sobel filter, and a forward pass of every spec through the numpy reference
executor at batch 1 (small inputs where the full size would be slow)."""

from __future__ import annotations

import difflib
import re
import time
from pathlib import Path

import numpy as np
import pytest

from graphconv.spec import load_graph

SPECS = Path(__file__).resolve().parents[2] / "specs"

# (spec, parameter overrides) -> parameters as graph.num_params() counts them (trainable + frozen + fixed; not the
# batch-norm running statistics), equal to sum(p.numel() for p in torchvision_model.parameters())
EXPECTED = {
    ("lenet5", ()): 61_706,
    ("alexnet", ()): 61_100_840,
    ("alexnet", (("lrn", True),)): 61_100_840,  # LRN has no parameters
    ("vgg16", ()): 138_357_544,
    ("vgg19", ()): 143_667_240,
    ("googlenet", ()): 6_624_904,
    ("googlenet", (("aux_logits", True),)): 13_004_888,
    ("resnet18", ()): 11_689_512,
    ("resnet34", ()): 21_797_672,
    ("resnet50", ()): 25_557_032,
    ("resnet101", ()): 44_549_160,
    ("resnet152", ()): 60_192_808,
    ("mobilenet_v2", ()): 3_504_872,
    ("sobel", ()): 18,  # two fixed 3x3 filters
    ("cifar_cnn", ()): 814_570,
}

# spec -> {output: shape at batch N} with the default parameters
OUTPUTS = {
    "lenet5": {"logits": ("N", 10)},
    "alexnet": {"logits": ("N", 1000)},
    "vgg16": {"logits": ("N", 1000)},
    "vgg19": {"logits": ("N", 1000)},
    "googlenet": {"logits": ("N", 1000)},
    "resnet18": {"logits": ("N", 1000)},
    "resnet34": {"logits": ("N", 1000)},
    "resnet50": {"logits": ("N", 1000)},
    "resnet101": {"logits": ("N", 1000)},
    "resnet152": {"logits": ("N", 1000)},
    "mobilenet_v2": {"logits": ("N", 1000)},
    "sobel": {"gx": ("N", 1, 64, 64), "gy": ("N", 1, 64, 64), "magnitude2": ("N", 1, 64, 64)},
    "cifar_cnn": {"logits": ("N", 10)},
}


def _load(name: str, params: dict | None = None):
    return load_graph(str(SPECS / f"{name}.gc"), params)


def _code_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_every_spec_is_covered():
    on_disk = {p.stem for p in SPECS.glob("*.gc")}
    assert on_disk == set(OUTPUTS) == {name for name, _ in EXPECTED}


@pytest.mark.parametrize("name,params", sorted(EXPECTED), ids=lambda v: v if isinstance(v, str) else
                         ",".join(f"{k}={val}" for k, val in v) or "default")
def test_parameter_count(name, params):
    graph = _load(name, dict(params))
    assert graph.num_params() == EXPECTED[name, params]


def test_top_comment_states_the_count():
    for (name, params), count in EXPECTED.items():
        if params:
            continue
        first = (SPECS / f"{name}.gc").read_text().splitlines()[0]
        assert first.startswith("# ") and f"{count:,}" in first, (name, first)


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_output_shapes(name):
    graph = _load(name)
    assert {k: tuple(v.type.shape) for k, v in graph.outputs.items()} == OUTPUTS[name]


def test_googlenet_aux_outputs():
    graph = _load("googlenet", {"aux_logits": True, "num_classes": 10})
    assert {k: tuple(v.type.shape) for k, v in graph.outputs.items()} == {
        "logits": ("N", 10), "aux1": ("N", 10), "aux2": ("N", 10)}


def test_num_classes_override():
    graph = _load("resnet18", {"num_classes": 10})
    assert tuple(graph.outputs["logits"].type.shape) == ("N", 10)
    assert graph.num_params() == EXPECTED["resnet18", ()] - 990 * 513  # fc: 512 inputs + bias, 990 fewer classes


def test_alexnet_lrn_switch():
    ops = lambda g: [n.op for n in g.nodes]  # noqa: E731
    assert "lrn" not in ops(_load("alexnet"))
    with_lrn = _load("alexnet", {"lrn": True})
    assert ops(with_lrn).count("lrn") == 2
    norm1 = with_lrn.node("norm1")
    assert norm1.attrs["size"] == 5 and norm1.attrs["bias"] == 2.0


def test_resnet_layer_names():
    names = {n.name for n in _load("resnet50").nodes}
    for n in ("conv1", "bn1", "layer1.bottleneck0.conv1", "layer1.bottleneck0.down", "layer4.bottleneck2.bn3", "fc"):
        assert n in names


# intermediate shapes at 224x224, as torchvision's (strides, paddings and ceil_mode pooling are right)
LANDMARKS = {
    "resnet50": {"max_pool2d0": (64, 56, 56), "layer1.bottleneck2.relu2": (256, 56, 56),
                 "layer2.bottleneck3.relu2": (512, 28, 28), "layer3.bottleneck5.relu2": (1024, 14, 14),
                 "layer4.bottleneck2.relu2": (2048, 7, 7)},
    "resnet18": {"layer1.basic1.relu1": (64, 56, 56), "layer4.basic1.relu1": (512, 7, 7)},
    "googlenet": {"maxpool1": (64, 56, 56), "maxpool2": (192, 28, 28), "inception3b.concat0": (480, 28, 28),
                  "maxpool3": (480, 14, 14), "inception4e.concat0": (832, 14, 14), "maxpool4": (832, 7, 7),
                  "inception5b.concat0": (1024, 7, 7)},
    "mobilenet_v2": {"stem.act": (32, 112, 112), "stage2.bottleneck1.add0": (24, 56, 56),
                     "stage6.bottleneck0.project_bn": (160, 7, 7), "head.act": (1280, 7, 7)},
    "vgg16": {"block5.pool": (512, 7, 7)},
    "alexnet": {"pool5": (256, 6, 6)},
}


@pytest.mark.parametrize("name", sorted(LANDMARKS))
def test_intermediate_shapes(name):
    graph = _load(name)
    for node, shape in LANDMARKS[name].items():
        assert tuple(graph.node(node).output.type.shape) == ("N", *shape), node


def test_residual_connections():
    adds = lambda g: sum(n.op == "add" for n in g.nodes)  # noqa: E731
    assert adds(_load("resnet50")) == 3 + 4 + 6 + 3
    assert adds(_load("resnet18")) == 8
    assert adds(_load("mobilenet_v2")) == 1 + 2 + 3 + 2 + 2  # stride 1 and in == out channels


def test_resnet50_fits_in_40_lines():
    assert len(_code_lines((SPECS / "resnet50.gc").read_text())) <= 40


_REPEATS = re.compile(r"(stage\(\d+, )\d+")  # stage(channels, blocks, ...): the block count


@pytest.mark.parametrize("deeper", ["resnet101", "resnet152"])
def test_deeper_resnets_differ_only_in_repeat_counts(deeper):
    """Line for line equal to resnet50.gc except the top comment, the network header and, in the stage(...)
    calls, the block counts."""
    a = (SPECS / "resnet50.gc").read_text().splitlines()
    b = (SPECS / f"{deeper}.gc").read_text().splitlines()
    assert len(a) == len(b)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    changed = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        assert tag == "replace" and i2 - i1 == j2 - j1, (tag, a[i1:i2], b[j1:j2])
        for x, y in zip(a[i1:i2], b[j1:j2]):
            changed += 1
            if x.startswith("#") and y.startswith("#"):
                continue  # the description comment
            if x.startswith("network "):
                assert x.replace("resnet50", deeper) == y
                continue
            assert "stage(" in x and "stage(" in y, (x, y)
            assert _REPEATS.sub(r"\1#", x) == _REPEATS.sub(r"\1#", y), (x, y)
    assert changed >= 3


def test_sobel_is_fixed():
    graph = _load("sobel")
    assert graph.num_params(trainable_only=True) == 0
    roles = {p.name: p.role for p in graph.iter_params()}
    assert roles == {"sobel_x.weight": "fixed", "sobel_y.weight": "fixed"}


# -- forward passes through the numpy reference executor ------------------------------------------------------------

# spec -> overrides for the forward pass (smaller inputs keep the run fast; the architecture is unchanged except
# that VGG's and AlexNet's first dense layer shrink with the flattened features)
FORWARD = {
    "lenet5": {},
    "alexnet": {"size": 64},
    "vgg16": {"size": 32},
    "vgg19": {"size": 32},
    "googlenet": {"aux_logits": True},
    "resnet18": {"size": 64},
    "resnet34": {"size": 64},
    "resnet50": {"size": 64},
    "resnet101": {"size": 32},
    "resnet152": {"size": 32},
    "mobilenet_v2": {"size": 64},
    "sobel": {"size": 16},
    "cifar_cnn": {},
}


def _forward(graph, seed: int = 0) -> dict[str, np.ndarray]:
    from graphconv.reference.executor import run_graph
    from graphconv.weights import init_weights

    weights = init_weights(graph, seed)
    rng = np.random.default_rng(seed)
    inputs = {v.name: rng.standard_normal(v.type.concrete(1)).astype(v.type.dtype) for v in graph.inputs}
    return run_graph(graph, inputs, weights)


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_forward(name):
    graph = _load(name, FORWARD[name])
    start = time.perf_counter()
    out = _forward(graph)
    assert set(out) == set(graph.outputs)
    for k, v in out.items():
        assert v.shape == graph.outputs[k].type.concrete(1), (k, v.shape)
        assert np.all(np.isfinite(v)), k
    assert time.perf_counter() - start < 30


def test_forward_alexnet_with_lrn():
    graph = _load("alexnet", {"size": 64, "lrn": True})
    out = _forward(graph)
    assert out["logits"].shape == (1, 1000) and np.all(np.isfinite(out["logits"]))


def test_sobel_vertical_edge():
    """A dark-to-bright vertical edge: gx = 4 * step on the two columns beside it, 0 elsewhere; gy = 0."""
    from graphconv.reference.executor import run_graph
    from graphconv.weights import init_weights

    graph = _load("sobel", {"size": 5})
    image = np.zeros((1, 1, 5, 5), np.float32)
    image[..., 2:] = 1.0  # columns 0-1 dark, 2-4 bright
    out = run_graph(graph, {"image": image}, init_weights(graph, 0))
    expected_gx = np.tile(np.array([0, 4, 4, 0, 0], np.float32), (5, 1))[None, None]
    np.testing.assert_allclose(out["gx"], expected_gx, atol=1e-6)
    np.testing.assert_allclose(out["gy"], 0, atol=1e-6)
    np.testing.assert_allclose(out["magnitude2"], expected_gx ** 2, atol=1e-5)
    # a horizontal edge is the transpose
    out = run_graph(graph, {"image": image.transpose(0, 1, 3, 2).copy()}, init_weights(graph, 0))
    np.testing.assert_allclose(out["gy"], expected_gx.transpose(0, 1, 3, 2), atol=1e-6)
    np.testing.assert_allclose(out["gx"], 0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_forward_full_size(name):
    """Every spec at its default size (224x224 for the ImageNet networks, so VGG's classifier sees 512x7x7)."""
    graph = _load(name, {"aux_logits": True} if name == "googlenet" else {})
    out = _forward(graph)
    for k, v in out.items():
        assert v.shape == graph.outputs[k].type.concrete(1) and np.all(np.isfinite(v)), k
