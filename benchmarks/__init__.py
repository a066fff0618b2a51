"""Benchmarks and robustness suites; each module runs as a script (see benchmarks/README.md)."""
