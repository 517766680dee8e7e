"""fiber-fast: FIBER-style vision-language models and the two-stage trainer built on fiber_kernels."""

__version__ = "0.1.0"
