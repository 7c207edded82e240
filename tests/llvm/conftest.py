"""The LLVM backend's tests compile into a private cache directory, never the user's."""

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GRAPHCONV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "llvm-cache"))
