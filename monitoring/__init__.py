"""Monitoring as code: alert rules and Grafana dashboards generated from Python.

``python -m monitoring`` writes ``alerts/`` and ``grafana/dashboards/``; the
generated files are committed, and a test fails when they are stale.
"""
