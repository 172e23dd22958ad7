"""Real messages land in the store, in the existing app's layout, against both backends:
the embedded SQLite store and the real Firestore emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e

from sidecar import testing as build
from sidecar.adapters.capture import capture_records, encode_record
from sidecar.adapters.health_json import health_json
from sidecar.adapters.spool import Spool
from sidecar.adapters.sqlite_state import SqliteStateStore
from sidecar.compose import build_store
from sidecar.core.clock import ReplayClock
from sidecar.core.replay import Replayer
from sidecar.core.service import Sidecar
from sidecar.core.storage import Storage
from sidecar.domain.classify import classify
from sidecar.domain.records import MessageDoc, build_records

from .support.backends import Backend
from .support.config import ConfigFactory
from .support.storage import close, drain, make_sidecar, storage_registry

T0 = 1_764_068_400.0
CUSTOMER = build.jid("12025550123")
GROUP = build.jid("120363000000000001", "g.us")
MEMBER = build.jid("12025550147")
LID_CHAT = build.jid("123456789012345", "lid")


def story() -> list[tuple[float, str | None, Any]]:
    M = e2e.Message

    def ts(t: float) -> int:
        return int(t * 1000) - 2000  # the sender's clock, 2 s before we received it

    return [
        (T0, "sales", build.connected()),
        (
            T0 + 1,
            "sales",
            build.message_event(
                build.text("Hello,   is my\norder ready?"),
                chat=CUSTOMER,
                message_id="IN1",
                timestamp_ms=ts(T0 + 1),
            ),
        ),
        (
            T0 + 2,
            "sales",
            build.message_event(
                M(extendedTextMessage=e2e.ExtendedTextMessage(text="Yes, today.")),
                chat=CUSTOMER,
                from_me=True,
                message_id="OUT1",
                timestamp_ms=ts(T0 + 2),
            ),
        ),
        (
            T0 + 3,
            "sales",
            build.message_event(
                M(imageMessage=e2e.ImageMessage(mimetype="image/jpeg", caption="receipt")),
                chat=GROUP,
                sender=MEMBER,
                is_group=True,
                message_id="GRP1",
                timestamp_ms=ts(T0 + 3),
            ),
        ),
        (
            T0 + 4,
            "sales",
            build.message_event(
                M(
                    documentWithCaptionMessage=e2e.FutureProofMessage(
                        message=M(
                            documentMessage=e2e.DocumentMessage(
                                mimetype="application/pdf",
                                fileName="invoice.pdf",
                                caption="the invoice",
                            )
                        )
                    )
                ),
                chat=CUSTOMER,
                message_id="DOC1",
                timestamp_ms=ts(T0 + 4),
                IsDocumentWithCaption=True,
            ),
        ),
        (
            T0 + 5,
            "sales",
            build.message_event(
                build.text("via lid"), chat=LID_CHAT, message_id="LID1", timestamp_ms=ts(T0 + 5)
            ),
        ),
        (
            T0 + 6,
            "sales",
            build.message_event(
                build.edit("IN1", "12025550123@s.whatsapp.net", "Hello, is my order ready now?"),
                chat=CUSTOMER,
                message_id="EDIT1",
                timestamp_ms=ts(T0 + 6),
                IsEdit=True,
            ),
        ),
        # nothing of these is stored
        (
            T0 + 7,
            "sales",
            build.message_event(
                build.history_sync_notification(),
                chat=build.jid("12025550188"),
                from_me=True,
                message_id="PROTO1",
            ),
        ),
        (
            T0 + 8,
            "sales",
            build.message_event(
                build.app_state_key_share(), chat=CUSTOMER, from_me=True, message_id="PROTO2"
            ),
        ),
        (
            T0 + 9,
            "sales",
            build.message_event(
                build.text("my status"),
                chat=build.jid("status", "broadcast"),
                sender=MEMBER,
                message_id="STATUS1",
            ),
        ),
        (T0 + 10, "sales", build.message_event(None, chat=LID_CHAT, message_id="EMPTY1")),
    ]


def write_capture(path: Path, records: list[tuple[float, str | None, Any]]) -> Path:
    path.write_text("".join(encode_record(t, a, e) + "\n" for t, a, e in records))
    return path


async def replay_and_drain(sidecar: Sidecar, capture: Path) -> None:
    clock = ReplayClock(speed=0)
    sidecar.clock = clock
    await Replayer(sidecar, clock).run(capture_records(capture))
    await drain(sidecar)


def near_now(value: Any) -> bool:
    import time

    return isinstance(value, int) and abs(value - time.time() * 1000) < 120_000


async def test_replayed_capture_lands_document_by_document(
    tmp_path: Path, make_config: ConfigFactory, backend: Backend
) -> None:
    sidecar = make_sidecar(make_config, backend)
    await replay_and_drain(sidecar, write_capture(tmp_path / "c.jsonl", story()))
    await close(sidecar)
    docs = backend.read()
    one_to_one = "sales__12025550123@s.whatsapp.net"
    group = "sales__120363000000000001@g.us"
    lid = "sales__123456789012345@lid"
    assert sorted(docs) == sorted([one_to_one, group, lid])

    thread, messages = docs[one_to_one]
    assert thread is not None
    assert near_now(thread.pop("updatedAt"))
    assert thread == {
        "accountId": "sales",
        "clientJid": "12025550123@s.whatsapp.net",
        "isLid": False,
        "phoneE164": "+12025550123",
        "lastMessageAt": 1_764_068_402_000,
        "lastMessageAtMs": 1_764_068_402_000,
        "lastMessageDirection": "inbound",
        "lastInboundAt": 1_764_068_402_000,
        "lastInboundAtMs": 1_764_068_402_000,
        "lastMessageText": "the invoice",
        "lastMessagePreview": "the invoice",
    }
    assert sorted(messages) == ["DOC1", "IN1", "OUT1"]
    inbound = messages["IN1"]
    for key in ("createdAt", "updatedAt", "editedAt"):
        assert key in inbound
    assert near_now(inbound.pop("createdAt"))
    assert near_now(inbound.pop("updatedAt"))
    assert inbound.pop("editedAt") == 1_764_068_404_000
    assert inbound == {
        "accountId": "sales",
        "clientJid": "12025550123@s.whatsapp.net",
        "threadId": one_to_one,
        "direction": "inbound",
        "body": "Hello, is my order ready now?",
        "messageType": "text",
        "media": None,
        "tsClient": 1_764_068_399_000,
        "key": {
            "id": "IN1",
            "remoteJid": "12025550123@s.whatsapp.net",
            "fromMe": False,
            "participant": None,
        },
    }
    outbound = messages["OUT1"]
    assert (outbound["direction"], outbound["body"], outbound["messageType"]) == (
        "outbound",
        "Yes, today.",
        "text",
    )
    assert outbound["key"] == {
        "id": "OUT1",
        "remoteJid": "12025550123@s.whatsapp.net",
        "fromMe": True,
        "participant": None,
    }
    assert "senderJid" not in outbound
    document = messages["DOC1"]
    assert document["messageType"] == "document"
    assert document["body"] == "the invoice"
    assert document["media"] == {
        "type": "document",
        "mimetype": "application/pdf",
        "caption": "the invoice",
        "filename": "invoice.pdf",
    }

    group_thread, group_messages = docs[group]
    assert group_thread is not None
    assert "phoneE164" not in group_thread
    assert group_thread["lastMessageText"] == "receipt"
    image = group_messages["GRP1"]
    assert image["senderJid"] == "12025550147@s.whatsapp.net"
    assert image["key"]["participant"] == "12025550147@s.whatsapp.net"
    assert image["media"] == {
        "type": "image",
        "mimetype": "image/jpeg",
        "caption": "receipt",
        "filename": None,
    }
    assert image["tsClient"] == 1_764_068_401_000

    lid_thread, lid_messages = docs[lid]
    assert lid_thread is not None
    assert lid_thread["isLid"] is True
    assert "phoneE164" not in lid_thread
    assert sorted(lid_messages) == ["LID1"]  # the empty message beside it is not stored


async def test_outbound_only_chat_has_no_inbound_fields(
    tmp_path: Path, make_config: ConfigFactory, backend: Backend
) -> None:
    sidecar = make_sidecar(make_config, backend)
    records: list[tuple[float, str | None, Any]] = [
        (
            T0,
            "sales",
            build.message_event(
                build.text("we are open"),
                chat=MEMBER,
                from_me=True,
                message_id="O1",
                timestamp_ms=1_764_068_400_000,
            ),
        )
    ]
    await replay_and_drain(sidecar, write_capture(tmp_path / "c.jsonl", records))
    await close(sidecar)
    thread, _ = backend.read()["sales__12025550147@s.whatsapp.net"]
    assert thread is not None
    assert thread["lastMessageDirection"] == "outbound"
    for key in ("lastInboundAt", "lastInboundAtMs", "lastMessageText", "lastMessagePreview"):
        assert key not in thread


async def test_a_message_replayed_twice_leaves_one_document(
    tmp_path: Path, make_config: ConfigFactory, backend: Backend
) -> None:
    capture = write_capture(tmp_path / "c.jsonl", story())
    for _ in range(2):
        sidecar = make_sidecar(make_config, backend)
        await replay_and_drain(sidecar, capture)
        await close(sidecar)
    docs = backend.read()
    assert sum(len(messages) for _, messages in docs.values()) == 5
    assert sorted(m for _, messages in docs.values() for m in messages) == [
        "DOC1",
        "GRP1",
        "IN1",
        "LID1",
        "OUT1",
    ]


async def test_protocol_messages_leave_nothing(
    tmp_path: Path, make_config: ConfigFactory, backend: Backend
) -> None:
    sidecar = make_sidecar(make_config, backend)
    records = [
        r
        for r in story()
        if r[2] is not None
        and getattr(r[2], "Info", None) is not None
        and r[2].Info.ID.startswith(("PROTO", "STATUS", "EMPTY"))
    ]
    assert len(records) == 4
    await replay_and_drain(sidecar, write_capture(tmp_path / "c.jsonl", records))
    assert sidecar.storage is not None
    assert sidecar.storage.stats.writes == 0
    await close(sidecar)
    assert backend.read() == {}


async def test_busy_chat_updates_its_thread_at_most_once_a_second(
    tmp_path: Path, make_config: ConfigFactory, backend: Backend
) -> None:
    loaded = make_config([{"id": "sales"}], store=backend.store_config())
    storage = Storage(Spool(backend.state_dir, thread_interval_s=1.0), build_store(loaded))
    sidecar = Sidecar(
        loaded.config.account_settings(),
        ReplayClock(speed=0),
        SqliteStateStore(backend.state_dir),
        storage=storage,
    )
    writer = asyncio.create_task(storage.writer.run())
    for i in range(40):
        event = build.message_event(
            build.text(f"message {i}"),
            chat=CUSTOMER,
            message_id=f"B{i:03d}",
            timestamp_ms=1_764_068_400_000 + i * 50,
        )
        sidecar.handle("sales", event, T0 + i * 0.05)
        await asyncio.sleep(0.05)
    for _ in range(100):
        if storage.spool.is_empty():
            break
        await asyncio.sleep(0.1)
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    thread_writes = storage.stats.writes - 40
    await close(sidecar)
    # ~2 s of traffic, 40 updates of one thread: one thread write a second at most
    assert 2 <= thread_writes <= 4, thread_writes
    thread, messages = backend.read()["sales__12025550123@s.whatsapp.net"]
    assert len(messages) == 40
    assert thread is not None
    assert thread["lastMessageText"] == "message 39"
    assert thread["lastMessageAtMs"] == 1_764_068_400_000 + 39 * 50


async def test_storage_metrics_and_health(tmp_path: Path, make_config: ConfigFactory) -> None:
    backend = Backend("sqlite", tmp_path / "state", None)
    sidecar = make_sidecar(make_config, backend)
    registry = storage_registry(sidecar)
    assert registry.get_sample_value("whatsapp_spool_messages", {"account": "sales"}) == 0.0
    assert (
        registry.get_sample_value(
            "whatsapp_spool_oldest_message_timestamp_seconds", {"account": "sales"}
        )
        is None
    )
    sidecar.handle(
        "sales", build.message_event(build.text("queued"), chat=CUSTOMER, message_id="Q1"), T0
    )
    assert registry.get_sample_value("whatsapp_spool_messages", {"account": "sales"}) == 1.0
    assert (
        registry.get_sample_value("whatsapp_spool_oldest_message_age_seconds", {"account": "sales"})
        is not None
    )
    health = health_json(sidecar.health("sales"))["store"]
    assert (health["backend"], health["backlog"], health["lastError"]) == ("sqlite", 1, None)
    assert sidecar.storage is not None
    assert await sidecar.storage.writer.drain_once() == 2  # the message and its thread
    assert registry.get_sample_value("whatsapp_store_writes_total", {"backend": "sqlite"}) == 2.0
    assert (
        registry.get_sample_value("whatsapp_store_write_errors_total", {"backend": "sqlite"}) == 0.0
    )
    assert (
        registry.get_sample_value(
            "whatsapp_store_write_duration_seconds_count", {"backend": "sqlite"}
        )
        == 1.0
    )
    assert (
        registry.get_sample_value(
            "whatsapp_store_write_duration_seconds_bucket", {"backend": "sqlite", "le": "+Inf"}
        )
        == 1.0
    )
    assert registry.get_sample_value("whatsapp_spool_messages", {"account": "sales"}) == 0.0
    assert health_json(sidecar.health("sales"))["store"]["lastWriteAtMs"] is not None
    await close(sidecar)


async def test_an_operation_the_store_refuses_is_set_aside_and_the_rest_lands(
    tmp_path: Path, make_config: ConfigFactory, emulator_host: str, monkeypatch: Any
) -> None:
    """A spooled id Firestore can never take ('/' in it: spooled before ids were made
    safe) must not hold up the spool forever."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator_host)
    backend = Backend("firestore", tmp_path / "state", emulator_host)
    sidecar = make_sidecar(make_config, backend)
    storage = sidecar.storage
    assert storage is not None
    good = build.message_event(build.text("kept"), chat=CUSTOMER, message_id="GOOD1")
    sidecar.handle("sales", good, T0)
    doc, _ = build_records("sales", good, classify(good.Message)) or (None, None)
    assert doc is not None
    poison = MessageDoc("sales", doc.thread_id, "bad/id", dict(doc.fields))
    storage.spool.enqueue(poison, None)
    later = build.message_event(build.text("kept too"), chat=CUSTOMER, message_id="GOOD2")
    sidecar.handle("sales", later, T0 + 1)
    await storage.writer.drain()
    assert storage.spool.is_empty()
    [(_, messages)] = backend.read().values()
    assert sorted(messages) == ["GOOD1", "GOOD2"]
    assert (
        storage_registry(sidecar).get_sample_value(
            "whatsapp_spool_write_errors_total", {"account": "sales"}
        )
        == 1.0
    )
    await close(sidecar)
