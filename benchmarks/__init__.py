"""Speed benchmarks: ``python -m benchmarks --help``."""
