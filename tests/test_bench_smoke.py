"""The event-path and scrape benchmarks run end to end (short, without timing assertions)."""

from __future__ import annotations

import re

import pytest

from .support.bench import run_smoke

pytestmark = pytest.mark.services  # runs benchmarks: slow by design

NUMBER = r"[\d,]+\.\d"


def figure(output: str, name: str) -> tuple[float, float, float]:
    """measured, baseline, ratio of one line of the result table."""
    found = re.search(
        rf"^{re.escape(name)}\s+({NUMBER}) \S+\s+({NUMBER})\s+(\d+\.\d+)\s", output, re.MULTILINE
    )
    assert found, f"no {name!r} line in:\n{output}"
    measured, baseline, ratio = (float(g.replace(",", "")) for g in found.groups())
    return measured, baseline, ratio


def test_event_path_benchmark_counts_and_spools_every_real_message() -> None:
    output = run_smoke("bench.event_path", timeout=180)
    counted = re.search(r"real messages counted ([\d,]+), spooled ([\d,]+)", output)
    assert counted
    assert counted.group(1) == counted.group(2) == "1,500"
    rate, decode_rate, _ = figure(output, "events/s (decode alone as baseline)")
    assert 0 < rate < decode_rate
    per_event, decode_per_event, ratio = figure(output, "µs per event (decode alone as baseline)")
    assert ratio > 1
    assert per_event > decode_per_event


def test_scrape_benchmark_reports_both_handlers() -> None:
    output = run_smoke("bench.scrape", timeout=180)
    rows = re.findall(
        r"^\s+50 (sidecar|baseline)\s+[\d.]+\s+[\d.]+\s+[\d.]+$", output, re.MULTILINE
    )
    assert sorted(rows) == ["baseline", "sidecar"]
    p99, baseline_p99, _ = figure(output, "50 accounts: p99 ms")
    assert p99 > 0
    assert baseline_p99 > 0


def test_pair_streams_benchmark_measures_healthz_with_and_without_streams() -> None:
    output = run_smoke("bench.pair_streams", timeout=180)
    rows = re.findall(r"^\s+(0|10)\s+[\d.]+\s+[\d.]+\s+[\d.]+$", output, re.MULTILINE)
    assert sorted(rows) == ["0", "10"]
    p99, baseline_p99, _ = figure(output, "10 streams: /healthz p99 ms")
    assert p99 > 0
    assert baseline_p99 > 0
