"""Benchmark of dreamdata-logging against the logging floor and segment-analytics-python.

Run with ``python -m benchmarks.run`` from the repository root; see ``benchmarks/README.md``.
"""
