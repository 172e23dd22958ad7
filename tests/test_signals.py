"""Early signs (issue 18): refused connections counted by a bounded reason, and a temporary
ban's end in the metrics, the health object and the saved state."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from neonize.events import ConnectFailureEv
from neonize.proto.Neonize_pb2 import ConnectFailureReason as Reason
from neonize.proto.Neonize_pb2 import Node

from sidecar import testing as build
from sidecar.adapters.capture import CaptureRecord, parse_line
from sidecar.adapters.health_json import health_json
from sidecar.adapters.sqlite_state import SqliteStateStore, StateStoreError
from sidecar.compose import Assembly
from sidecar.domain.account import PersistedState, Status
from sidecar.domain.signals import CONNECT_FAILURE_REASONS, Ban

T0 = 1_764_068_400.0
FAILURES = "whatsapp_connect_failures_total"
BAN_END = "whatsapp_temporary_ban_expiry_timestamp_seconds"


def samples(assembly: Assembly, name: str) -> dict[tuple[str, ...], float]:
    """Every sample of ``name``, by its label values."""
    return {
        tuple(sample.labels.values()): sample.value
        for metric in assembly.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == name
    }


def value(assembly: Assembly, name: str, **labels: str) -> float | None:
    return assembly.metrics.registry.get_sample_value(name, {"account": "sales", **labels})


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (build.connect_failure(Reason.GENERIC, "dial failed"), "generic"),
        (build.connect_failure(Reason.SERVICE_UNAVAILABLE), "service_unavailable"),
        (build.connect_failure(Reason.MAIN_DEVICE_GONE), "main_device_gone"),
        (build.connect_failure(Reason.BAD_USER_AGENT), "bad_user_agent"),
        # whatsmeow sends these refusals as events of their own
        (build.temporary_ban(), "temp_banned"),
        (build.logged_out(Reason.UNKNOWN_LOGOUT, on_connect=True), "unknown_logout"),
        (build.client_outdated(), "client_outdated"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_each_refused_connection_is_counted_by_its_reason(
    assembly: Assembly, event: Any, reason: str
) -> None:
    sidecar = assembly.sidecar
    sidecar.handle("sales", build.connected(), T0)
    sidecar.handle("sales", event, T0 + 1)
    # one series: a reason appears with its first failure, an account without any has none
    assert samples(assembly, FAILURES) == {("sales", reason): 1.0}
    assert reason in CONNECT_FAILURE_REASONS
    # the refusal is a connection attempt of its own, as a ConnectFailureEv always was
    assert value(assembly, "whatsapp_reconnects_total") == 1.0


def test_a_device_removed_while_connected_is_no_refused_connection(assembly: Assembly) -> None:
    sidecar = assembly.sidecar
    sidecar.handle("sales", build.connected(), T0)
    sidecar.handle("sales", build.logged_out(Reason.LOGGED_OUT), T0 + 1)
    assert sidecar.status("sales") is Status.LOGGED_OUT
    assert samples(assembly, FAILURES) == {}
    assert value(assembly, "whatsapp_reconnects_total") == 0.0


def test_a_reason_neonize_has_no_name_for_is_other(assembly: Assembly) -> None:
    """A newer whatsmeow reason reaches an older neonize as a number its closed enum does not
    hold: the field reads as unset, and must not pass for GENERIC."""
    failure = ConnectFailureEv(Message="", Raw=Node(Tag="failure"))
    payload = failure.SerializePartialToString() + bytes([0x08, 99])  # Reason = 99
    line = json.dumps(
        {
            "t": T0,
            "account": "sales",
            "event": "ConnectFailureEv",
            "payload": base64.b64encode(payload).decode(),
        }
    )
    record = parse_line(line.encode(), 1)
    assert isinstance(record, CaptureRecord)
    assembly.sidecar.handle("sales", record.decode(), T0)
    assert samples(assembly, FAILURES) == {("sales", "other"): 1.0}
    assert assembly.sidecar.status("sales") is Status.DISCONNECTED


def ban_view(assembly: Assembly) -> tuple[str, int | None, str | None]:
    health = health_json(assembly.sidecar.health("sales"))
    return health["status"], health["banExpiresMs"], health["banReason"]


def test_a_ban_shows_its_end_until_the_account_connects_again(assembly: Assembly) -> None:
    sidecar = assembly.sidecar
    sidecar.handle("sales", build.connected(), T0)
    sidecar.handle("sales", build.temporary_ban(code=4, expire_s=7200), T0 + 10)
    assert ban_view(assembly) == ("banned", round((T0 + 7210) * 1000), "sent_too_many_same_message")
    assert samples(assembly, BAN_END) == {("sales",): T0 + 7210}
    # refused again during the ban: the new end is the one WhatsApp gives now
    sidecar.handle("sales", build.temporary_ban(code=4, expire_s=3600), T0 + 4000)
    assert samples(assembly, BAN_END) == {("sales",): T0 + 7600}
    sidecar.handle("sales", build.connected(), T0 + 7700)
    assert ban_view(assembly) == ("connected", None, None)
    assert samples(assembly, BAN_END) == {}


def test_a_ban_of_unknown_length_is_banned_without_an_end(assembly: Assembly) -> None:
    assembly.sidecar.handle("sales", build.temporary_ban(code=2, expire_s=0), T0)
    assert ban_view(assembly) == ("banned", None, None)
    assert samples(assembly, BAN_END) == {}
    assert assembly.sidecar.snapshot("sales").ban is None


def test_an_unknown_ban_code_is_other(assembly: Assembly) -> None:
    ban = build.temporary_ban(expire_s=60)
    ban.ClearField("Code")  # a code neonize has no name for reads as unset
    assembly.sidecar.handle("sales", ban, T0)
    assert ban_view(assembly) == ("banned", round((T0 + 60) * 1000), "other")


def test_the_saved_state_keeps_a_ban_in_force_and_forgets_one_that_ended(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    ban = Ban(T0 + 3600, "blocked_by_users")
    store.save([("sales", PersistedState(T0, None, ban=ban)), ("support", PersistedState(T0, T0))])
    saved = store.load()
    assert (saved["sales"].ban, saved["support"].ban) == (ban, None)
    store.save([("sales", PersistedState(T0 + 1, None))])  # connected again: no ban
    assert store.load()["sales"].ban is None
    store.close()


def test_a_failed_save_keeps_the_ban_for_the_next_one(tmp_path: Path) -> None:
    """A failed save is merged with the next: the merge kept only the fields it named."""
    store = SqliteStateStore(tmp_path)
    ban = Ban(T0 + 3600, "broadcast_list")
    store._db.execute("PRAGMA query_only = 1")  # every write fails, as on a failing disk
    with pytest.raises(StateStoreError):
        store.save([("sales", PersistedState(T0, None, {0: b"x"}, ban=ban))])
    store._db.execute("PRAGMA query_only = 0")
    store.save([("sales", PersistedState(T0 + 5, None, {1: b"y"}, ban=ban))])
    saved = store.load()["sales"]
    assert (saved.ban, saved.gaps, saved.last_real_at) == (ban, {0: b"x", 1: b"y"}, T0 + 5)
    store.close()
