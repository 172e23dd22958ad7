"""Benchmarks: each measures one path against a baseline in the same run.

Run them from the repository root as modules, e.g. ``.venv/bin/python -m bench.event_path``.
"""
