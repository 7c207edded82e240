"""Training kernels (in progress)."""
