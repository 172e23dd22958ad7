"""The storage-drain benchmark runs end to end against the real emulator (smoke size,
no timing assertions)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_storage_drain_benchmark_reports_both_rates_and_their_ratio() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.storage_drain", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    row = re.search(
        r"^spool drain to Firestore, messages/s\s+([\d,.]+) /s\s+([\d,.]+)\s+([\d.]+)\s",
        result.stdout,
        re.MULTILINE,
    )
    assert row is not None, result.stdout
    drain_rate, baseline_rate, ratio = (float(g.replace(",", "")) for g in row.groups())
    assert drain_rate > 0
    assert baseline_rate > 0
    assert ratio > 0
    assert "all 200 message documents of each side landed" in result.stdout
