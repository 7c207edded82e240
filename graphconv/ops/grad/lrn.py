"""Gradient ops of the lrn family (in progress)."""
