"""The send-drain benchmark runs end to end against the real emulator, the real outbox
worker and journal, and a fake WhatsApp session (smoke size, no timing assertions)."""

from __future__ import annotations

import re

import pytest

from .support.bench import run_smoke

pytestmark = pytest.mark.services  # runs the send-drain benchmark against the Firestore emulator

NUMBER = r"([\d,.]+)"


def row(stdout: str, name: str, unit: str) -> tuple[float, float | None]:
    """A table row's measured figure and baseline (None when it has none)."""
    found = re.search(
        rf"^{re.escape(name)}\s+{NUMBER} {re.escape(unit)}\s+(-|{NUMBER[1:-1]})\s",
        stdout,
        re.MULTILINE,
    )
    assert found is not None, f"no row {name!r} in:\n{stdout}"
    measured, baseline = found.group(1), found.group(2)
    return (
        float(measured.replace(",", "")),
        None if baseline == "-" else float(baseline.replace(",", "")),
    )


def test_send_drain_benchmark_reports_its_figures_and_every_message_landed() -> None:
    stdout = run_smoke("bench.send_drain", timeout=240)
    drain, one_write = row(stdout, "send drain to Firestore, messages/s", "/s")
    assert drain > 0
    assert one_write is not None
    assert one_write > 0
    paced, none = row(stdout, "paced drain (target 40/s), messages/s", "/s")
    assert paced > 0
    assert none is None
    for name in ("p50", "p99", "longest"):
        lag, idle = row(stdout, f"loop lag while paced: {name}, ms", "ms")
        assert lag >= 0
        assert idle is not None
        assert idle >= 0
    loop_cpu, per_set = row(stdout, "loop CPU per message, us", "us")
    assert loop_cpu > 0
    assert per_set is not None
    assert per_set > 0
    sqlite, none = row(stdout, "send drain to SQLite, messages/s", "/s")
    assert sqlite > 0
    assert none is None
    assert (
        "all 100 messages of each side landed: each outbox item sent once,"
        " each sent once by the fake session, each message document sent"
    ) in stdout
