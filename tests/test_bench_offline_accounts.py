"""bench/offline_accounts.py runs end to end on 50 offline accounts (real neonize, no
route to WhatsApp), with no timing target asserted: the three processes ran, every
account dialed, and the cap held where the uncapped baseline did not."""

from __future__ import annotations

import math
import re

import pytest

from .support.bench import run_smoke

pytestmark = pytest.mark.services  # three wa-sidecar processes, real neonize

ROW = re.compile(
    r"^(idle|baseline|capped)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
    r"\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+|-)\s+(\d+)\s+([\d.]+)$",
    re.MULTILINE,
)


#: The columns of a run's row, after its name.
COLUMNS = "accounts cap threads rss p50 p99 scrapes dialing waiting dials dialed round fds stop"


def test_offline_accounts_benchmark_reports_threads_memory_scrapes_and_stop() -> None:
    out = run_smoke("bench.offline_accounts", timeout=300)
    rows = {
        found[0]: {  # "-": a round that did not complete
            column: math.nan if value == "-" else float(value)
            for column, value in zip(COLUMNS.split(), found[1:], strict=True)
        }
        for found in ROW.findall(out)
    }
    assert sorted(rows) == ["baseline", "capped", "idle"], out
    idle, baseline, capped = rows["idle"], rows["baseline"], rows["capped"]
    assert (capped["accounts"], capped["cap"]) == (50, 4)
    assert (baseline["accounts"], baseline["cap"]) == (50, 50)
    for run in (capped, baseline):  # every account dialed (and failed: no route)
        assert run["dialed"] == 50, out
        assert run["round"] >= 0  # completed (not NaN)
        assert run["dials"] >= 50
    assert (idle["dials"], idle["dialed"]) == (0, 0)  # no session to dial
    assert 0 < capped["dialing"] <= 4  # whatsapp_dials_in_progress as scraped
    assert capped["threads"] <= 2 * 4 + idle["threads"] + 16, out  # near the cap ...
    assert baseline["threads"] > capped["threads"]  # ... the baseline went with the accounts
    for run in rows.values():
        assert run["rss"] > 50  # MiB: Python with neonize loaded is far bigger
        assert run["scrapes"] > 10
        assert run["fds"] > 0
        assert run["stop"] > 0
    assert re.search(r"^peak threads, 50 accounts, cap 4\s+[\d.]+\s+[\d.]+\s", out, re.MULTILINE)
