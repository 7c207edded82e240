"""Helpers for testing graphconv and programs built on it: random valid networks (random_cnn)."""
