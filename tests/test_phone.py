"""When the account's own phone was last seen (docs/phone.md): what proves it, what does
not, that the time only moves forward, and that it survives a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from neonize.proto.Neonize_pb2 import Receipt

from sidecar import testing as build
from sidecar.adapters.health_json import health_json
from sidecar.adapters.sqlite_state import SqliteStateStore
from sidecar.compose import assemble
from sidecar.config import LoadedConfig
from sidecar.core.clock import ReplayClock
from sidecar.core.pipeline import EventPipeline
from sidecar.domain.account import AccountSettings, AccountState, PersistedState
from sidecar.domain.phone import phone_seen_at

from .support.config import ConfigFactory
from .support.scrapes import parse, sample

T0 = 1_764_068_400.0
#: The event's own time: before it arrives (a backlog after a reconnect), not on the hour.
SENT = T0 - 2000
CHAT = build.jid(build.FICTIONAL_PHONE)
GROUP = build.jid("120363000000000001", "g.us")


def own_message(content: Any = None, **info: Any) -> Any:
    return build.message_event(
        content or build.text("on my way"), timestamp_ms=int(SENT * 1000), **info
    )


def own_receipt(sender: Any, kind: int = Receipt.READ_SELF, *, from_me: bool = True) -> Any:
    return build.receipt(
        ["3EB0AAAA"], CHAT, kind, from_me=from_me, sender=sender, timestamp_s=int(SENT)
    )


SEEN: list[tuple[str, Any]] = [
    ("message from the phone", own_message(from_me=True, sender=build.own(0))),
    ("message from the phone, LID form", own_message(from_me=True, sender=build.own(0, lid=True))),
    (
        "group message from the phone",
        own_message(chat=GROUP, from_me=True, is_group=True, sender=build.own(0)),
    ),
    (
        "history sync pushed by the phone",
        own_message(build.history_sync_notification(), from_me=True, sender=build.own(0)),
    ),
    (
        "app-state key share from the phone",
        own_message(build.app_state_key_share(), from_me=True, sender=build.own(0)),
    ),
    (
        "undecryptable message from the phone",
        build.undecryptable(from_me=True, sender=build.own(0), timestamp_ms=int(SENT * 1000)),
    ),
    ("chat read on the phone", own_receipt(build.own(0))),
    ("chat read on the phone, LID form", own_receipt(build.own(0, lid=True))),
    ("the phone got this device's sent copy", own_receipt(build.own(0), Receipt.SENDER)),
]

NOT_SEEN: list[tuple[str, Any]] = [
    ("message from WhatsApp Web", own_message(from_me=True, sender=build.own(7))),
    (
        "message from WhatsApp Web, LID form",
        own_message(from_me=True, sender=build.own(3, lid=True)),
    ),
    ("message from a peer", own_message()),
    ("group message from a peer", own_message(chat=GROUP, is_group=True, sender=CHAT)),
    ("chat read on WhatsApp Web", own_receipt(build.own(7))),
    ("a peer read the message", own_receipt(CHAT, Receipt.READ, from_me=False)),
    ("from me with no sender", own_message(from_me=True, sender=build.empty_jid())),
    ("failed pairing", build.pair_status(success=False)),
    ("connected", build.connected()),
    ("offline sync completed", build.offline_sync_completed()),
]


@pytest.mark.parametrize(("what", "event"), SEEN, ids=[w for w, _ in SEEN])
def test_what_the_phone_did_proves_it_online_at_the_events_own_time(what: str, event: Any) -> None:
    assert phone_seen_at(event, T0) == SENT


@pytest.mark.parametrize(("what", "event"), NOT_SEEN, ids=[w for w, _ in NOT_SEEN])
def test_other_devices_peers_and_connection_events_prove_nothing(what: str, event: Any) -> None:
    assert phone_seen_at(event, T0) is None


def test_a_pairing_proves_the_phone_at_its_arrival() -> None:
    assert phone_seen_at(build.pair_status(success=True), T0) == T0


@pytest.mark.parametrize("timestamp_ms", [0, int((T0 + 600) * 1000)], ids=["none", "future"])
def test_an_event_time_missing_or_after_the_arrival_gives_the_arrival(timestamp_ms: int) -> None:
    event = build.message_event(
        build.text("x"), from_me=True, sender=build.own(0), timestamp_ms=timestamp_ms
    )
    assert phone_seen_at(event, T0) == T0


def pipeline(source: str = "neonize") -> tuple[EventPipeline, AccountState]:
    state = AccountState(AccountSettings("sales", 300.0, "UTC", source=source))
    return EventPipeline({"sales": state}), state


def test_the_pipeline_records_the_latest_sighting_and_never_rewinds() -> None:
    events, state = pipeline()
    events.handle("sales", build.connected(), T0 - 7200)
    assert state.snapshot().phone_seen_at is None
    events.handle("sales", own_receipt(build.own(0)), T0)
    # a backlog delivered later, of what the phone did earlier, does not move it back
    older = build.message_event(
        build.text("x"), from_me=True, sender=build.own(0), timestamp_ms=int((SENT - 60) * 1000)
    )
    events.handle("sales", older, T0 + 60)
    events.handle("sales", own_message(from_me=True, sender=build.own(7)), T0 + 120)
    assert state.snapshot().phone_seen_at == SENT
    persisted = state.take_persisted()
    assert persisted is not None
    assert persisted.phone_seen_at == SENT


def test_an_ingest_accounts_own_messages_do_not_say_which_device_sent_them() -> None:
    """A gateway's ``fromMe`` message has no device: the chat's JID (device 0) stands in
    for its sender, which would otherwise look like the phone."""
    events, state = pipeline(source="ingest")
    events.handle("sales", own_message(from_me=True, sender=CHAT), T0)
    events.handle("sales", build.pair_status(success=True), T0)
    assert state.snapshot().phone_seen_at is None


def test_restore_keeps_the_later_sighting() -> None:
    state = AccountState(AccountSettings("sales", 300.0, "UTC"))
    state.record_phone_seen(T0)
    state.restore(PersistedState(None, None, phone_seen_at=T0 - 100))
    assert state.snapshot().phone_seen_at == T0
    state.restore(PersistedState(None, None, phone_seen_at=T0 + 100))
    assert state.snapshot().phone_seen_at == T0 + 100


def test_the_state_store_keeps_the_sighting(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    store.save([("sales", PersistedState(T0, None, phone_seen_at=SENT))])
    store.save([("support", PersistedState(None, None, phone_seen_at=T0))])
    store.save([("sales", PersistedState(T0 + 5, None, phone_seen_at=T0))])
    store.close()
    saved = SqliteStateStore(tmp_path).load()
    assert saved["sales"].phone_seen_at == T0
    assert saved["sales"].last_real_at == T0 + 5
    assert saved["support"].phone_seen_at == T0


def test_a_state_database_from_before_the_phone_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / SqliteStateStore.FILENAME)
    db.execute(
        "CREATE TABLE account_state (account_id TEXT PRIMARY KEY, last_real_at REAL,"
        " last_protocol_at REAL, updated_at REAL NOT NULL DEFAULT 0)"
    )
    db.execute("INSERT INTO account_state VALUES ('sales', ?, NULL, 0)", (T0,))
    db.commit()
    db.close()
    store = SqliteStateStore(tmp_path)
    saved = store.load()
    assert (saved["sales"].last_real_at, saved["sales"].phone_seen_at) == (T0, None)
    store.save([("sales", PersistedState(T0, None, phone_seen_at=T0 + 1))])
    assert store.load()["sales"].phone_seen_at == T0 + 1
    store.close()


def test_the_sighting_reaches_health_and_metrics_and_survives_a_restart(
    make_config: ConfigFactory, clock: ReplayClock
) -> None:
    loaded: LoadedConfig = make_config([{"id": "sales"}, {"id": "support"}])
    assembly = assemble(loaded, clock, storage=False)
    sidecar = assembly.sidecar
    sidecar.handle("sales", build.connected(), T0)
    sidecar.handle("support", build.connected(), T0)
    seen_at = T0 + 3 * 3600 + 125.5
    clock.advance_to(seen_at)
    sidecar.handle("sales", own_receipt(build.own(0)), seen_at)  # its own time is earlier
    scrape = parse(assembly.metrics.render().decode())
    health = health_json(sidecar.health("sales"))
    assert health["phoneLastSeenMs"] == SENT * 1000
    assert health_json(sidecar.health("support"))["phoneLastSeenMs"] is None
    name = "whatsapp_primary_phone_last_seen_timestamp_seconds"
    # to the hour on /metrics, which needs no token
    assert sample(scrape, name, account="sales") == SENT // 3600 * 3600
    assert sample(scrape, name, account="support") is None
    assert sidecar.flush_state() >= 1
    assembly.close()

    again = assemble(make_config([{"id": "sales"}, {"id": "support"}]), clock, storage=False)
    try:
        assert health_json(again.sidecar.health("sales"))["phoneLastSeenMs"] == SENT * 1000
        scrape = parse(again.metrics.render().decode())
        assert sample(scrape, name, account="sales") == SENT // 3600 * 3600
    finally:
        again.close()
