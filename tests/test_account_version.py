"""Every change to an account bumps its version: the scrape reuses a snapshot while the
version stands, so a change that forgot to bump it would never reach /metrics."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from sidecar.domain.account import (
    AccountSettings,
    AccountState,
    PersistedState,
    ProbeSettings,
    Status,
)
from sidecar.domain.classify import Classification, MessageClass
from sidecar.domain.delivery import SendResult
from sidecar.domain.signals import Ban

PROBES = ProbeSettings(peer="b", interval_s=300, timeout_s=120, misses=2)

CHANGES: dict[str, Callable[[AccountState], Any]] = {
    "restore": lambda s: s.restore(PersistedState(5.0, 6.0)),
    "record_event": lambda s: s.record_event("MessageEv"),
    "record_event_error": lambda s: s.record_event_error("MessageEv"),
    "record_message": lambda s: s.record_message(
        Classification(MessageClass.REAL, "conversation"), 10.0
    ),
    "record_connect_attempt": lambda s: s.record_connect_attempt(),
    "record_connected": lambda s: s.record_connected(10.0),
    "record_phone_seen": lambda s: s.record_phone_seen(10.0),
    "set_status": lambda s: s.set_status(Status.CONNECTED, 10.0),
    "set_keepalive_failing": lambda s: s.set_keepalive_failing(True, 10.0),
    "set_offline_sync": lambda s: s.set_offline_sync(s.offline_sync.COMPLETED, 10.0),
    "record_probe_sent": lambda s: s.record_probe_sent(False, "timeout"),
    "expect_probe": lambda s: s.expect_probe("p1", 10.0),
    "record_probe_delivery": lambda s: s.record_probe_delivery("p1", 11.0),
    "set_qr": lambda s: s.set_qr("2@code", 10.0),
    "set_paired": lambda s: s.set_paired("android", 10.0),
    "set_needs_repair": lambda s: s.set_needs_repair(True),
    "record_send": lambda s: s.record_send(SendResult("M1", "c@s.whatsapp.net", True), 10.0),
    "record_receipt": lambda s: s.record_receipt(["M1"], "delivered", 11.0),
    "record_connect_failure": lambda s: s.record_connect_failure("temp_banned"),
    "set_ban": lambda s: s.set_ban(Ban(3600.0, "blocked_by_users")),
}
#: Methods that read, or change only what no snapshot shows (the "dirty" flag).
READERS = {"snapshot", "pairing_view", "take_persisted", "was_sent_probe", "signals_view"}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_each_change_bumps_the_version(change: str) -> None:
    state = AccountState(AccountSettings("a", 300, "UTC", expects_probes=PROBES))
    before = state.snapshot(10.0)
    CHANGES[change](state)
    after = state.snapshot(10.0)
    assert after.version > before.version


def test_every_public_method_is_known_as_a_change_or_a_read() -> None:
    methods = {
        name
        for name, member in inspect.getmembers(AccountState, inspect.isfunction)
        if not name.startswith("_")
    }
    assert methods == set(CHANGES) | READERS
