"""Tests of fiber_kernels.testing: a package, so that test_aot.py and the others never clash with
same-named test files elsewhere in tests/."""
