"""Gradient ops of the resize family (in progress)."""
