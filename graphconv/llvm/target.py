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
        """The host CPU; `cpu` names another (its features implied by the name) and `features` adds or removes
        features ("+avx2,-avx512f") on top of the CPU's."""
        init_llvm()
        triple = llvm.get_process_triple()
        if cpu is None:
            base = llvm.get_host_cpu_features().flatten()
            cpu = llvm.get_host_cpu_name()
        else:
            _check_cpu(triple, cpu)
            base = ",".join(f"+{f}" for f in _implied_features(cpu))
        extra = ",".join(f.strip() for f in (features or "").split(",") if f.strip())
        for f in extra.split(",") if extra else []:
            if f[0] not in "+-" or not f[1:]:
                raise GraphconvError(f"CPU feature {f!r} must start with + or - (e.g. +avx2,-avx512f)")
        return cls(triple, cpu, ",".join(x for x in (base, extra) if x))

    def enabled(self, feature: str) -> bool:
        """Whether the feature string turns `feature` on (the last mention wins, as in LLVM)."""
        state = False
        for f in self.features.split(","):
            if f[1:] == feature:
                state = f[0] == "+"
        return state

    @property
    def feature_set(self) -> set[str]:
        return {f[1:] for f in self.features.split(",") if f and self.enabled(f[1:])}

    @property
    def vector_bits(self) -> int:
        """The widest vectors the kernels use: 512 bits with AVX-512, 256 with AVX, else 128. (Removing avx or avx2
        removes AVX-512 too, as in LLVM.)"""
        if self.enabled("avx512f") and self.enabled("avx2") and self.enabled("avx"):
            return 512
        if self.enabled("avx"):
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

    def runs_here(self) -> list[str]:
        """The vector extensions this target uses that the host lacks (code for it would crash here)."""
        host = Target.host()
        return sorted(f for f in ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq")
                      if self.enabled(f) and not host.enabled(f))

    def describe(self) -> str:
        return f"{self.cpu} ({self.vector_bits}-bit vectors) {self.triple}"


# Vector extensions implied by common x86 CPU names (llvmlite cannot list a named CPU's features).
_AVX512 = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client", "icelake-server",
           "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids", "znver4", "znver5",
           "x86-64-v4", "knl", "knm")
_AVX2 = ("haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "arrowlake", "lunarlake",
         "znver1", "znver2", "znver3", "x86-64-v3", "bdver4")
_AVX = ("sandybridge", "ivybridge", "bdver1", "bdver2", "bdver3", "btver2")


def _implied_features(cpu: str) -> list[str]:
    if cpu in _AVX512:
        return ["avx", "avx2", "fma", "avx512f"]
    if cpu in _AVX2:
        return ["avx", "avx2", "fma"]
    if cpu in _AVX:
        return ["avx"]
    return []


def _check_cpu(triple: str, cpu: str) -> None:
    """LLVM only warns on stderr about a CPU name it does not know (and then generates generic code): catch the
    warning and make it an error."""
    import os
    import tempfile

    if not cpu or any(ch.isspace() for ch in cpu):
        raise GraphconvError(f"--target-cpu {cpu!r} is not a CPU name")
    target = llvm.Target.from_triple(triple)
    with tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        try:
            os.dup2(err.fileno(), 2)
            target.create_target_machine(cpu=cpu, opt=0)  # warns here; generating code for it could abort
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    if "not a recognized processor" in text:
        raise GraphconvError(f"LLVM does not know the CPU {cpu!r} (e.g. x86-64-v3, skylake-avx512, znver4; this "
                             f"machine is {llvm.get_host_cpu_name()})")
