"""Labels files: one per line, a JSON list, ImageNet's class index; every malformed file is a LabelsError."""

from __future__ import annotations

import json
import re

import pytest

from graphconv.imaging import labels as labels_module
from graphconv.imaging.labels import LabelsError, check_labels, read_labels


def _file(tmp_path, data, name="labels.txt"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(path)


def test_one_label_per_line(tmp_path):
    assert read_labels(_file(tmp_path, "tench\n goldfish \r\ngreat white shark\n\n\n")) == [
        "tench", "goldfish", "great white shark"]
    assert read_labels(_file(tmp_path, "\ufeffa\nb")) == ["a", "b"]  # a byte-order mark, no final newline


def test_json_list_and_imagenet_index(tmp_path):
    assert read_labels(_file(tmp_path, json.dumps(["cat", "dog"]), "l.json")) == ["cat", "dog"]
    index = {"1": ["n01443537", "goldfish"], "0": ["n01440764", "tench"], "2": "shark"}
    assert read_labels(_file(tmp_path, json.dumps(index), "i.json")) == ["tench", "goldfish", "shark"]


@pytest.mark.parametrize("text, match", [
    ("a\n\nb\n", "line 2 is empty"),
    ("", "no labels"),
    ("[1, {\"x\": 2}]", "entry 1 is not a name"),
    ("{\"0\": \"a\", \"2\": \"c\"}", "0..1; 1 is missing"),
    ("{\"a\": \"x\"}", "not a class index"),
    ("[\"a\",", "not valid JSON"),
    ("{\"0\": true}", "class 0 is not a name"),
])
def test_malformed_labels(tmp_path, text, match):
    path = _file(tmp_path, text)
    with pytest.raises(LabelsError, match=match):
        read_labels(path)


def test_unreadable_labels(tmp_path, monkeypatch):
    with pytest.raises(LabelsError, match="not UTF-8"):
        read_labels(_file(tmp_path, b"caf\xe9\n"))
    with pytest.raises(LabelsError, match="No such file"):
        read_labels(str(tmp_path / "missing.txt"))
    with pytest.raises(LabelsError, match="not a regular file"):
        read_labels(str(tmp_path))
    monkeypatch.setattr(labels_module, "MAX_LABELS_BYTES", 4)
    with pytest.raises(LabelsError, match="limited to 4 bytes"):
        read_labels(_file(tmp_path, "one\ntwo\n"))


def test_count_must_match_the_classes():
    check_labels(["a", "b"], 2, "l.txt", "logits")
    with pytest.raises(LabelsError, match="'l.txt' has 3 labels, but output 'logits' has 2 classes"):
        check_labels(["a", "b", "c"], 2, "l.txt", "logits")


@pytest.mark.parametrize("text, expected", [
    ("[background]\ncat\n[PAD]\n", ["[background]", "cat", "[PAD]"]),  # a first label in brackets: still text
    ("{unknown}\ncat\n", ["{unknown}", "cat"]),
    ("[0] zero\n[1] one\n", ["[0] zero", "[1] one"]),
    ("[1, 2]", ["1", "2"]),  # valid JSON is JSON, whatever follows the bracket
    (" \n[\"a\", \"b\"]\n", ["a", "b"]),
])
def test_text_or_json_is_decided_by_the_whole_file(tmp_path, text, expected):
    assert read_labels(_file(tmp_path, text)) == expected


@pytest.mark.parametrize("text", ["[\"tench\",\n\"goldfish\",\n]\n", "[\n\"a\"\n", "{\"0\": \"a\",}", "{\n",
                                  "[", "[{\"0\": 1]"])
def test_broken_json_is_reported_as_json(tmp_path, text):
    """A file that starts like a JSON list or object is not read line by line when it fails to parse."""
    with pytest.raises(LabelsError, match="is not valid JSON at line"):
        read_labels(_file(tmp_path, text))


def test_lines_end_at_newline_only(tmp_path):
    text = "a\x0cb\nc\u2028d\r\ne\x85f\x1dg\nh\x0bi\n"
    assert read_labels(_file(tmp_path, text)) == ["a\x0cb", "c\u2028d", "e\x85f\x1dg", "h\x0bi"]
    assert read_labels(_file(tmp_path, "one\r\ntwo\r\n")) == ["one", "two"]


@pytest.mark.parametrize("text, match", [
    ("{\"0\": \"a\", \"00\": \"b\", \"1\": \"c\"}", "keys '0' and '00' both name class 0"),
    ("{\"0\": \"a\", \"1\": \"b\", \"0\": \"c\"}", "key '0' is given twice"),
    ("[{\"x\": 1, \"x\": 2}]", "key 'x' is given twice"),
    ("{\"0\": \"a\", \" 1\": \"b\"}", "key ' 1' is not a class index"),
    ("{\"0\": \"a\", \"+1\": \"b\"}", "key '+1' is not a class index"),
    ("{\"0\": \"a\", \"-1\": \"b\"}", "key '-1' is not a class index"),
    ("{\"0\": \"a\", \"\u0661\": \"b\"}", "is not a class index"),  # ARABIC-INDIC DIGIT ONE: int() takes it
])
def test_json_keys_name_each_class_once(tmp_path, text, match):
    with pytest.raises(LabelsError, match=re.escape(match)):
        read_labels(_file(tmp_path, text, "i.json"))


@pytest.mark.parametrize("text, shown", [
    ("tench", "tench"),
    ("café 🐟 great white", "café 🐟 great white"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("a\tb\rc\nd", "a\\tb\\rc\\nd"),
    ("abc\u202edcba", "abc\\u202edcba"),  # a right-to-left override (Cf)
    ("x\u2028y\x85z\x7f", "x\\u2028y\\x85z\\x7f"),
    ("bad \udcff", "bad \\udcff"),  # a lone surrogate could not even be printed
    ("tag \U000e0041", "tag \\U000e0041"),
])
def test_printable_escapes_control_characters(text, shown):
    assert labels_module.printable(text) == shown
