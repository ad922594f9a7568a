"""Benchmarks run from the repository root (``python -m benchmarks.<name>``).

A regular package, not a namespace one: Opacus installs a top-level ``benchmarks`` package
that would otherwise shadow this folder.
"""
