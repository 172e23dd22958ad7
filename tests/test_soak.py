"""The soak's CI version: ``python -m bench.soak --smoke`` (2 minutes of real-time traffic
over 200 accounts) passes its checks and reports fd growth, storage and RSS."""

from __future__ import annotations

import re

import pytest

from .support.bench import run_smoke

pytestmark = pytest.mark.services  # runs the soak benchmark: minutes of a wa-sidecar process

NUMBER = r"(-?[\d,]+\.\d)"


def figure(output: str, name: str, unit: str = "") -> float:
    found = re.search(rf"^{re.escape(name)}\s+{NUMBER} {re.escape(unit)}", output, re.MULTILINE)
    assert found, f"no {name!r} line in:\n{output}"
    return float(found.group(1).replace(",", ""))


def test_soak_smoke_stores_every_message_and_leaks_no_fds() -> None:
    out = run_smoke("bench.soak", timeout=420)

    plan = re.search(r"^soak: 200 accounts .* ([\d,]+) real messages;", out, re.MULTILINE)
    assert plan, out
    stored = re.search(r"^real messages sent ([\d,]+), stored ([\d,]+)", out, re.MULTILINE)
    assert stored, out
    sent = int(stored.group(1).replace(",", ""))
    assert sent == int(plan.group(1).replace(",", "")) > 0
    assert int(stored.group(2).replace(",", "")) == sent
    assert re.search(
        r"^deaf accounts judged degraded 10 of 10; other accounts judged degraded 0$",
        out,
        re.MULTILINE,
    ), out

    assert figure(out, "fd growth after warm-up", "fd") <= 5
    assert figure(out, "fds at start (after warm-up)", "fd") > 0
    assert figure(out, "real messages lost (sent - stored)") == 0
    assert figure(out, "ERROR log lines") == 0
    assert figure(out, "5xx and failed requests") == 0

    # RSS figures are printed (the slope is not checked in a 2-minute run)
    assert figure(out, "RSS at start (after warm-up)", "MiB") > 10  # Python + neonize alone
    assert figure(out, "RSS at end (after the drain)", "MiB") > 10
    figure(out, "RSS growth after warm-up (slope)", "MiB/h")
    assert figure(out, "scrape p99, last quarter (first: baseline)", "ms") > 0
