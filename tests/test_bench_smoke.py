"""The benchmarks run end to end (short, without timing assertions)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_scrape_stall_benchmark_runs_and_reports_both_handlers() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "bench/scrape_stall.py",
            "--accounts",
            "50",
            "--scrapes",
            "3",
            "--no-check",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = {
        m.group(1): m.groups()[1:]
        for m in re.finditer(
            r"^(sidecar|baseline)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", result.stdout, re.MULTILINE
        )
    }
    assert set(rows) == {"sidecar", "baseline"}
    assert re.search(r"^stall ratio sidecar/baseline: [\d.]+$", result.stdout, re.MULTILINE)
