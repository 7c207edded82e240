"""The CPU a build targets: its name and features (the host's by default, from llvmlite), the widest vector unit,
and the LLVM target machine for it.

`--target-cpu` / `--target-features` (or `Target.host(cpu=..., features=...)`) override the host's, e.g. to build
an object for an AVX2 machine on an AVX-512 one: the kernels use vectors of `vector_bits` (512 with avx512f, 256
with avx/avx2, else 128), and LLVM only emits instructions the features allow.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import llvmlite.binding as llvm

from ..errors import GraphconvError

_init_lock = threading.Lock()
_initialized = False


def init_llvm() -> None:
    """Initialize LLVM's native target once per process."""
    global _initialized
    with _init_lock:
        if not _initialized:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _initialized = True


@dataclass(frozen=True)
class Target:
    triple: str
    cpu: str
    features: str  # "+avx512f,+avx2,..." as LLVM takes it

    @classmethod
    def host(cls, cpu: str | None = None, features: str | None = None) -> "Target":
        """The host CPU, or the given CPU name and features (`features` without a CPU keeps the host's name)."""
        init_llvm()
        triple = llvm.get_process_triple()
        if cpu is None:
            cpu = llvm.get_host_cpu_name()
            if features is None:
                features = llvm.get_host_cpu_features().flatten()
        t = cls(triple, cpu, features or "")
        return t

    @property
    def feature_set(self) -> set[str]:
        return {f[1:] for f in self.features.split(",") if f.startswith("+")}

    @property
    def vector_bits(self) -> int:
        fs = self.feature_set
        if "avx512f" in fs:
            return 512
        if "avx" in fs or "avx2" in fs:
            return 256
        return 128

    @property
    def is_x86(self) -> bool:
        return self.triple.startswith(("x86_64", "i686", "i386"))

    def target_machine(self, *, opt: int = 3, aot: bool = False) -> llvm.TargetMachine:
        """An LLVM target machine; `aot` makes position-independent code for an object file a C program links."""
        init_llvm()
        try:
            target = llvm.Target.from_triple(self.triple)
        except RuntimeError as e:
            raise GraphconvError(f"LLVM has no target for {self.triple}: {e}") from None
        if aot:
            return target.create_target_machine(cpu=self.cpu, features=self.features, opt=opt, reloc="pic",
                                                codemodel="small")
        return target.create_target_machine(cpu=self.cpu, features=self.features, opt=opt, jit=True)

    def describe(self) -> str:
        return f"{self.cpu} ({self.vector_bits}-bit vectors) {self.triple}"
