"""Kernels: see graphconv/llvm/kernel.py (placeholder until written)."""
