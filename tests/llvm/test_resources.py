"""Resources and concurrency of compiled models (issue 8): no memory growth over many calls, a compile cache that
two processes can fill at once, and cache entries that are rebuilt, never loaded, when damaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphconv
from graphconv.llvm.compiler import cache_dir

ROOT = Path(__file__).resolve().parents[2]


def _rss_bytes() -> int:
    """The process's resident memory now (not its peak)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_ten_thousand_calls_do_not_grow_memory():
    net = graphconv.load(ROOT / "specs" / "lenet5.gc", seed=0)
    model = graphconv.compile(net, backend="llvm", threads=2)
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
    first = model(x)
    for _ in range(1000):  # warm-up: arenas, numpy's allocation caches
        model(x)
    before = _rss_bytes()
    for _ in range(10_000):
        y = model(x)
    grown = _rss_bytes() - before
    assert np.array_equal(y, first)
    assert grown < 1 << 20, f"resident memory grew by {grown:,} bytes over 10,000 calls"


COMPILE = """
import sys, numpy as np, graphconv
net = graphconv.load(sys.argv[1], seed=0)
model = graphconv.compile(net, backend="llvm", threads=1, opt_level=3)
x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
print(model.compiled.cached, model(x).tobytes().hex()[:4000])
"""


def _compile_in_processes(spec: Path, env: dict, count: int) -> list[tuple[str, str]]:
    procs = [subprocess.Popen([sys.executable, "-c", COMPILE, str(spec)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(count)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        cached, digits = stdout.split()
        out.append((cached, digits))
    return out


def test_two_processes_compiling_the_same_model_share_the_cache(tmp_path):
    spec = tmp_path / "net.gc"
    spec.write_text("network net() {\n  input image: f32[N, 3, 32, 32]\n"
                    "  y = image -> conv2d(32, 3, padding=1) -> relu -> max_pool2d(2) -> conv2d(32, 3) -> relu\n"
                    "    -> global_avg_pool -> flatten -> dense(10)\n  output y\n}\n")
    env = {**os.environ, "GRAPHCONV_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    both = _compile_in_processes(spec, env, 2)
    assert both[0][1] == both[1][1]  # the same results, whichever process wrote the entry last
    (after,) = _compile_in_processes(spec, env, 1)
    assert after == ("True", both[0][1])  # a complete entry: loaded, not rebuilt
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(entries) == 2 and not any(name.startswith(".") for name in entries), entries  # no temporaries


@pytest.mark.parametrize("damage", ["truncated object", "object of another entry", "metadata not JSON",
                                    "metadata of another size", "metadata missing"])
def test_a_damaged_cache_entry_is_rebuilt_not_loaded(damage):
    net = graphconv.load(ROOT / "specs" / "lenet5.gc", seed=0)
    first = graphconv.compile(net, backend="llvm", threads=1, opt_level=2)
    key = first.compiled.key
    obj, meta = cache_dir() / f"{key}.o", cache_dir() / f"{key}.json"
    if damage == "truncated object":
        obj.write_bytes(obj.read_bytes()[: obj.stat().st_size // 2])
    elif damage == "object of another entry":
        obj.write_bytes(b"\x7fELF" + bytes(obj.stat().st_size - 4))
    elif damage == "metadata not JSON":
        meta.write_text("{not json")
    elif damage == "metadata of another size":
        m = json.loads(meta.read_text())
        m["object_bytes"] += 1
        meta.write_text(json.dumps(m))
    else:
        meta.unlink()
    again = graphconv.compile(net, backend="llvm", threads=1, opt_level=2)
    assert not again.compiled.cached
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(again(x), first(x))
    assert graphconv.compile(net, backend="llvm", threads=1, opt_level=2).compiled.cached  # and rewritten whole
