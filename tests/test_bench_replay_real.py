"""The whole-replay benchmark runs end to end (short, without timing assertions): every
message replayed is stored, every thread shows its last inbound text."""

from __future__ import annotations

import re

import pytest

from .support.bench import run_smoke

pytestmark = pytest.mark.services  # runs a benchmark: slow by design

NUMBER = r"[\d,]+\.\d"


def test_replay_benchmark_stores_every_message_and_reports_the_ratio_to_decoding() -> None:
    output = run_smoke("bench.replay_real", timeout=300)
    summary = re.search(
        r"replayed ([\d,]+), stored ([\d,]+), threads ([\d,]+)$", output, re.MULTILINE
    )
    assert summary, output
    assert summary.groups() == ("2,000", "2,000", "80")
    row = re.search(
        rf"^µs per message until stored \(decode\)\s+({NUMBER}) µs\s+({NUMBER})\s+(\d+\.\d+)\s",
        output,
        re.MULTILINE,
    )
    assert row, output
    per_message, decode, ratio = (float(g.replace(",", "")) for g in row.groups())
    assert per_message > decode > 0
    assert ratio == pytest.approx(per_message / decode, rel=0.1)
    assert "target" in output
