"""graphconv: a declarative graph compiler and runtime for convolutional neural networks."""

__version__ = "0.1.0"
