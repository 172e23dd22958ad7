"""The detection benchmark runs end to end with real servers (smoke: short waits,
no timing assertions)."""

from __future__ import annotations

import re

import pytest

from .support.bench import run_smoke

pytestmark = (
    pytest.mark.services
)  # runs the detection benchmark: the sidecar, Prometheus and Alertmanager


def seconds_after_onset(stdout: str, figure: str) -> float:
    match = re.search(rf"^{re.escape(figure)}\s+([\d,.]+) s\b", stdout, re.MULTILINE)
    assert match, f"no {figure!r} line in:\n{stdout}"
    return float(match.group(1).replace(",", ""))


def test_detection_smoke_run_pages_the_deaf_account_and_reports_each_stage() -> None:
    stdout = run_smoke("bench.detection", timeout=240)
    verdict = seconds_after_onset(stdout, "onset -> sidecar verdict")
    firing = seconds_after_onset(stdout, "onset -> Prometheus firing")
    received = seconds_after_onset(stdout, "onset -> receiver (page)")
    assert received > 0
    assert verdict <= firing <= received
    assert re.search(r"^healthy control: pages\s+0\.0\b", stdout, re.MULTILINE)
    assert re.search(r"overhead -?[\d.]+ s, ratio [\d.]+$", stdout, re.MULTILINE)
