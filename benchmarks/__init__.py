"""Benchmark scripts (run as ``python benchmarks/NAME.py``) and the helpers they share (``common``).

A regular package, so that ``benchmarks.common`` is ours even where an installed distribution
ships a top-level ``benchmarks`` package of its own (opacus does).
"""
