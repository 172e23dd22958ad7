"""The coordination benchmark runs end to end (short): replicas settle, and what they
send Firestore in steady state is their renewals, however many accounts they share."""

from __future__ import annotations

import re

import pytest

from .support.bench import run_smoke

pytestmark = pytest.mark.services  # the Firestore emulator and wa-sidecar processes

#: The smoke plan: ttl 6 s, so a cycle every 2 s, 30 a minute per replica; each is a
#: renewal (begin, read, commit: 3 calls) and the membership read (1 call).
CALLS_PER_REPLICA_MINUTE = 30 * 4


def test_coordination_costs_the_same_for_four_times_the_accounts() -> None:
    output = run_smoke("bench.coordination", timeout=300)
    lines = re.findall(
        r"^\s+(\d) replicas,\s+(\d+) accounts: settled in\s+[\d.]+ s; ([\d,]+) calls/min",
        output,
        re.MULTILINE,
    )
    assert [(r, a) for r, a, _ in lines] == [("2", "10"), ("2", "40")], output
    for replicas, _, calls in lines:
        expected = int(replicas) * CALLS_PER_REPLICA_MINUTE
        # the window catches one cycle more or less per replica
        assert 0.75 * expected <= int(calls.replace(",", "")) <= 1.25 * expected, output
    ratio = re.search(r"^2 replicas, 40 accts: calls/min\s+\S+ /m\s+\S+\s+(\d+\.\d+)", output, re.M)
    assert ratio, output
    assert float(ratio.group(1)) <= 1.5
