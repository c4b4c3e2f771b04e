"""Benchmarks of issue 8: each measures a toolkit path against a bare baseline in the same run.

`python -m bench` (or `python bench/run.py`) runs them all and prints one ratio line per case and
a final table; `--quick` runs tiny sizes (the smoke test uses it). Figures: bench/RESULTS.md.
"""
