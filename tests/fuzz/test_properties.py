"""Property-based fuzzing (issue 8) with Hypothesis, on a fixed budget: the spec front end, the weights loader and
the ONNX importer take any input and either succeed or raise graphconv's own error, never anything else.
`derandomize=True` makes every run draw the same examples (the suite is deterministic); `tools/fuzz.py` runs longer
campaigns."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from graphconv.errors import GraphconvError, SpecError  # noqa: E402
from graphconv.spec import load_graph, load_graph_text  # noqa: E402
from graphconv.testing.mutate import HOSTILE  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUDGET = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# pieces of the spec language, so that generated text reaches past the lexer into the parser and the checks
PIECES = list(HOSTILE) + [
    "network n(c = 8) {", "block b(x, c) {", "input x: f32[N, 3, 8, 8]", "output y", "y = x", "return x",
    "-> conv2d(c, 3)", "-> relu", "-> dense(10)", "-> flatten", "-> batchnorm", "-> max_pool2d(2)", "add(x, y)",
    "concat(x, y)", "repeat 3 { relu }", "if c > 2 {", "} else {", "let k = 3", "stride=2", "padding=same", " ", "\n",
    "  ", "[", "]", "f32", "N", "1", "2", "3.5", "-", "*", "+", "channels(x)", "b(x, 4)",
]


@BUDGET
@given(st.lists(st.sampled_from(PIECES), max_size=60))
def test_spec_text_from_language_pieces(pieces):
    text = " ".join(pieces)
    try:
        load_graph_text(text, "fuzz.gc")
    except SpecError as e:
        assert all(d.loc is not None for d in e.diagnostics)


@BUDGET
@given(st.text(max_size=400))
def test_spec_from_any_text(text):
    try:
        load_graph_text(text, "fuzz.gc")
    except SpecError:
        pass


@BUDGET
@given(st.binary(max_size=400))
def test_spec_file_of_any_bytes(tmp_path, data):
    path = tmp_path / "fuzz.gc"
    path.write_bytes(data)
    try:
        load_graph(str(path))
    except SpecError:
        pass


def _lenet():
    return load_graph(str(ROOT / "specs" / "lenet5.gc"))


@functools.lru_cache(maxsize=1)
def _valid_npz() -> bytes:
    """lenet5's initial weights as graphconv writes them."""
    from graphconv.weights import init_weights, save_weights

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.npz"
        save_weights(path, init_weights(_lenet(), 0))
        return path.read_bytes()


@BUDGET
@given(st.data())
def test_weights_file_with_damaged_bytes(tmp_path, data):
    """A valid weights file with bytes overwritten, cut or inserted: loads or raises WeightsError."""
    from graphconv.weights import load_weights

    graph = _lenet()
    raw = bytearray(_valid_npz())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["set", "cut", "insert"]))
        if action == "set":
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at:at + data.draw(st.integers(1, 64))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        if not raw:
            raw = bytearray(b"\0")
    path = tmp_path / "w.npz"
    path.write_bytes(bytes(raw))
    try:
        load_weights(path, graph)
    except GraphconvError:
        pass


@BUDGET
@given(st.data())
def test_onnx_model_with_damaged_bytes(tmp_path, data):
    """An exported model with bytes overwritten or cut: imports, or raises a GraphconvError."""
    from graphconv.onnx.export import export_onnx
    from graphconv.onnx.importer import import_onnx
    from graphconv.weights import init_weights

    graph = _lenet()
    model = export_onnx(graph, weights=init_weights(graph, 0)).SerializeToString()
    raw = bytearray(model)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[at] = data.draw(st.integers(0, 255))
        else:
            del raw[at:]
            if not raw:
                raw = bytearray(b"\x08")
    path = tmp_path / "m.onnx"
    path.write_bytes(bytes(raw))
    try:
        import_onnx(str(path))
    except GraphconvError:
        pass
