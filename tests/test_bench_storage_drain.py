"""The storage-drain benchmark runs end to end against the real emulator (smoke size,
no timing assertions)."""

from __future__ import annotations

import re

import pytest

from .support.bench import run_smoke

pytestmark = pytest.mark.services  # runs the storage-drain benchmark against the Firestore emulator


def test_storage_drain_benchmark_reports_both_rates_and_their_ratio() -> None:
    stdout = run_smoke("bench.storage_drain", timeout=180)
    row = re.search(
        r"^spool drain to Firestore, messages/s\s+([\d,.]+) /s\s+([\d,.]+)\s+([\d.]+)\s",
        stdout,
        re.MULTILINE,
    )
    assert row is not None, stdout
    drain_rate, baseline_rate, ratio = (float(g.replace(",", "")) for g in row.groups())
    assert drain_rate > 0
    assert baseline_rate > 0
    assert ratio > 0
    assert "all 200 message documents of each side landed" in stdout
