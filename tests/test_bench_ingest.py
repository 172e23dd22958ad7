"""The ingest benchmark runs end to end (smoke size, no timing assertions): the real HTTP
app, the conversion and the pipeline, against the neonize path."""

from __future__ import annotations

import re

import pytest

from .support.bench import run_smoke

pytestmark = pytest.mark.services  # serves the HTTP app and benchmarks it


def test_ingest_benchmark_reports_both_rates_and_every_message_counted() -> None:
    stdout = run_smoke("bench.ingest", timeout=180)
    row = re.search(r"^ingest, messages/s\s+([\d,.]+) /s\s+([\d,.]+)\s+([\d.]+)\s", stdout, re.M)
    assert row is not None, stdout
    rate, baseline, ratio = (float(g.replace(",", "")) for g in row.groups())
    assert rate > 0
    assert baseline > 0
    assert ratio > 0
    assert "every message of every round counted alike on both sides" in stdout
