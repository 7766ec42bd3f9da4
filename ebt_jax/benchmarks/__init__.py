"""Benchmarks: ``python -m ebt_jax.benchmarks.<name>``; each prints a table and writes JSON (``--out``)."""
