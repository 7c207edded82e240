"""The LLVM backend's tests compile into a private cache directory, never the user's, and always split work between
the threads they ask for (the runtime runs small work on one thread: tests use small shapes)."""

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    from graphconv.llvm.runtime import LLVMModel

    monkeypatch.setenv("GRAPHCONV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "llvm-cache"))
    monkeypatch.setattr(LLVMModel, "min_parallel_flops", 0)
