"""Benchmarks of multiloss against the libraries it matches (run as ``python -m benchmarks.NAME``)."""
