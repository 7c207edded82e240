"""Gradient ops of the activation family (in progress)."""
