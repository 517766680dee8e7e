"""fiber-fast microbenchmarks (pytest-benchmark). Not part of the test run; see bench/README.md."""
