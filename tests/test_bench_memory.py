"""bench/memory.py runs end to end on a few accounts (no memory target asserted)."""

from __future__ import annotations

import re

import pytest

from .support.bench import run_smoke

pytestmark = pytest.mark.services  # runs the memory benchmark: many wa-sidecar processes

NUMBER = r"(-?[\d,]+\.\d)"


def test_memory_benchmark_reports_rss_slopes_and_intercept() -> None:
    out = run_smoke("bench.memory", timeout=300)

    points = re.findall(rf"^\s+(\d+)\s+(empty|traffic)\s+{NUMBER}\s+{NUMBER}$", out, re.MULTILINE)
    assert {(int(n), capture) for n, capture, _, _ in points} == {
        (n, capture) for n in (10, 50) for capture in ("empty", "traffic")
    }
    for _, _, rss, steady in points:
        assert float(rss) > 10  # MiB: Python with neonize loaded is far bigger
        assert float(steady) > 10

    # the figure, with the idle accounts' slope as its baseline
    slope = rf"^memory per account \(slope 10→50\)\s+{NUMBER} KiB\s+{NUMBER}\s"
    assert re.search(slope, out, re.MULTILINE), out
    intercept = re.search(
        rf"^fixed cost \(intercept\)\s+{NUMBER} MiB\s+{NUMBER}\s", out, re.MULTILINE
    )
    assert intercept is not None, out
    assert float(intercept.group(1).replace(",", "")) > 10
