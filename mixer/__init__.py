"""MLP-Mixer in JAX/Flax: the paper's model, its training recipes and tools."""

__version__ = '0.1.0'
