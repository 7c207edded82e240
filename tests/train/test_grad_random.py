"""Gradient checks of random composed networks (graphconv.testing.random_cnn): convolutions of every kind, pooling,
activations, batchnorm in training, dropout, residual adds, concats and upsampling stacked at random, each checked
against central differences (float64 reference) and exported to onnxruntime."""

from __future__ import annotations

from collections import Counter

import pytest

from graphconv.ir.verify import verify
from graphconv.testing.random_cnn import random_cnn
from graphconv.train.autodiff import Loss

from .grad_helpers import assert_gradients, assert_onnx_matches

SEEDS = range(24)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_network_gradients(seed):
    case = random_cnn(seed)
    verify(case.graph)
    losses = [Loss("logits", label_smoothing=0.05)]
    assert_gradients(case.graph, case.weights, case.inputs, losses=losses, max_elements=8, seed=seed)
    assert_onnx_matches(case.graph, case.weights, case.inputs, losses=losses, seed=seed)


def test_the_generator_covers_the_ops():
    ops = Counter(n.op for seed in SEEDS for n in random_cnn(seed).graph.nodes)
    for op in ("conv2d", "batchnorm", "max_pool2d", "avg_pool2d", "add", "concat", "dropout", "upsample", "dense",
               "relu", "global_avg_pool"):
        assert ops[op] > 0, f"no {op} in {len(SEEDS)} random networks"
    convs = [n.attrs for seed in SEEDS for n in random_cnn(seed).graph.nodes if n.op == "conv2d"]
    assert any(a["stride"] != (1, 1) for a in convs) and any(a["dilation"] != (1, 1) for a in convs)
    assert any(a["groups"] > 1 for a in convs)
    assert any(len(set(a["padding"])) > 1 for a in convs)  # asymmetric padding


def test_a_seed_names_one_network():
    a, b = random_cnn(5), random_cnn(5)
    assert [(n.op, n.attrs) for n in a.graph.nodes] == [(n.op, n.attrs) for n in b.graph.nodes]
    assert all((a.weights[k] == b.weights[k]).all() for k in a.weights)
