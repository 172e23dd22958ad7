"""bench/offline_accounts.py runs end to end on 50 offline accounts (real neonize, no
route to WhatsApp), with no timing target asserted: the three processes ran, every
account dialed, and the cap held where the uncapped baseline did not."""

from __future__ import annotations

import re

import pytest

from .support.bench import run_smoke

pytestmark = pytest.mark.services  # three wa-sidecar processes, real neonize

ROW = re.compile(
    r"^(idle|baseline|capped)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
    r"\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)$",
    re.MULTILINE,
)


def test_offline_accounts_benchmark_reports_threads_memory_scrapes_and_stop() -> None:
    out = run_smoke("bench.offline_accounts", timeout=300)
    rows = {found[0]: found[1:] for found in ROW.findall(out)}
    assert sorted(rows) == ["baseline", "capped", "idle"], out
    idle, baseline, capped = (
        [float(value) for value in rows[name]] for name in ("idle", "baseline", "capped")
    )
    accounts, cap, threads, rss, _, _, scrapes, dialing, _, dials, _, fds, stop = capped
    assert (accounts, cap) == (50, 4)
    assert baseline[:2] == [50, 50]
    assert dials >= accounts  # every account dialed (and failed: no route) at least once
    assert baseline[9] >= accounts
    assert idle[9] == 0  # the idle process has no session to dial
    assert 0 < dialing <= cap  # whatsapp_dials_in_progress as scraped
    assert threads <= 2 * cap + idle[2] + 16, out  # near the cap ...
    assert baseline[2] > threads  # ... where the baseline went with the accounts
    assert rss > 50  # MiB: Python with neonize loaded is far bigger
    assert scrapes > 10
    assert stop > 0
    assert fds >= idle[11] > 0  # open files: reported, no target
    assert re.search(r"^peak threads, 50 accounts, cap 4\s+[\d.]+\s+[\d.]+\s", out, re.MULTILINE)
