"""Scale benchmarks of the whole pipeline, run on demand (`make bench`), not in the test suite."""
