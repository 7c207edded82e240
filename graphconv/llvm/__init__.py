"""The LLVM CPU backend: native code for every op, compiled in process (JIT) or ahead of time for C programs.

The pipeline, one module per stage:

    target.py     the CPU to build for (host by default), its vector width, LLVM's target machine
    builder.py    structured helpers over llvmlite's IRBuilder (loops, index arithmetic, vector math)
    kernel.py     what a kernel emitter sees (KernelContext) and the registry of emitters by op
    kernels/      the emitters, one module per family of ops
    codegen.py    the whole network as one module: a kernel call per layer, barriers, arena, weights blob
    compiler.py   link, verify, optimize, emit an object; the on-disk compile cache
    runtime.py    LLVMModel: input checks, worker threads, calling the entry
    aot.py        object file, C header, weights blob and README for C applications
"""
