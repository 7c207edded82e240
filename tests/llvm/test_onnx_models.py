"""Torchvision-style models built as ONNX (tests/onnx/test_import_models.py), imported and compiled by the llvm
backend: the same outputs as the reference executor (float64) at rtol 1e-4, atol 1e-5, at batch 1 and 3 (batch 1
only for a model exported with a fixed batch), threads 1 and 2, -O0, -O2 and -O3."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import graphconv
from graphconv.onnx.importer import import_onnx
from graphconv.network import Network
from graphconv.reference.executor import run_graph

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "onnx"))
from test_import_models import MODELS  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_imported_model_matches_reference(arch):
    model, shape = MODELS[arch]()
    graph, weights = import_onnx(model)
    net = Network(graph, weights)
    batches = (1, 3) if isinstance(graph.inputs[0].type.shape[0], str) else (int(graph.inputs[0].type.shape[0]),)
    for level in (0, 2, 3):
        for threads in (1, 2):
            compiled = graphconv.compile(net, backend="llvm", threads=threads, opt_level=level)
            for batch in batches:
                x = np.random.default_rng(batch).normal(size=(batch, *shape[1:]))
                name = graph.inputs[0].name
                ref = run_graph(graph, {name: x}, weights, dtype="float64")
                got = compiled.run({name: x.astype(np.float32)})
                for k in ref:
                    np.testing.assert_allclose(got[k], ref[k], rtol=RTOL, atol=ATOL,
                                               err_msg=f"{arch} {k} -O{level} threads={threads} batch={batch}")
