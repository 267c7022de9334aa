"""Benchmarks (`make bench`): they print their figures; see docs/benchmarks.md."""
