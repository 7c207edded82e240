"""Gradient ops of the elementwise family (in progress)."""
