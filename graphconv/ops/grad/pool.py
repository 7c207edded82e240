"""Gradient ops of the pool family (in progress)."""
