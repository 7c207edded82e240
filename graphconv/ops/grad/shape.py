"""Gradient ops of the shape family (in progress)."""
