"""Patchers that swap fiber_kernels modules into live models of other codebases, keeping the weights."""
