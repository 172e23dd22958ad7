"""The detection benchmark runs end to end with real servers (smoke: every wait divided by
30, no timing assertions): both deaf accounts are paged, no control is."""

from __future__ import annotations

import re

import pytest

from bench.detection_setup import CONTROLS

from .support.bench import run_smoke

pytestmark = (
    pytest.mark.services
)  # runs the detection benchmark: the sidecar, Prometheus and Alertmanager


def seconds_to_page(stdout: str, figure: str) -> tuple[float, float]:
    """A case's line of the table: seconds from its onset to the page, and its baseline
    (the evidence's own wait)."""
    match = re.search(rf"^{re.escape(figure)}\s+([\d,.]+) s\s+([\d,.]+)\b", stdout, re.MULTILINE)
    assert match, f"no {figure!r} line in:\n{stdout}"
    return float(match.group(1).replace(",", "")), float(match.group(2).replace(",", ""))


def test_detection_smoke_run_pages_both_deaf_accounts_and_no_control() -> None:
    stdout = run_smoke("bench.detection", timeout=240)
    for figure in ("deafening: last real message -> page", "probed: first lost probe -> page"):
        paged, evidence = seconds_to_page(stdout, figure)
        assert paged > evidence > 0  # a page, after the evidence it needs
    assert re.search(r"^controls: pages\s+0\.0\b", stdout, re.MULTILINE)
    for control in CONTROLS:
        assert re.search(
            rf"^  {control}\s+pages 0; verdict never degraded; other alerts: none$",
            stdout,
            re.MULTILINE,
        ), control
    # each case's stages after its evidence add up to its page
    for block in stdout.split("-> page (seconds)\n")[1:]:
        lines = block.splitlines()
        evidence = float(lines[1].split()[-1])
        stages = [float(line.split()[-1]) for line in lines[2:5]]
        paged = float(re.findall(r"-> page ([\d.]+) s;", lines[5])[0])
        assert sum(stages) == pytest.approx(paged - evidence, abs=0.2)
