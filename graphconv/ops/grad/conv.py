"""Gradient ops of the conv family (in progress)."""
