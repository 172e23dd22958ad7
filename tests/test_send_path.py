"""Sending through the sidecar (issue 16), end to end on both stores: the endpoint, the
outbox, the worker, the message documents and the metrics, with WhatsApp's side played
by a scripted (fake) session, since WhatsApp cannot be reached here."""

from __future__ import annotations

import hashlib
from typing import Any

from neonize.proto.Neonize_pb2 import Receipt

from sidecar.core.clock import SystemClock
from sidecar.domain import outbox
from sidecar.domain.outbox import OutboxItem

from .support.backends import Backend
from .support.config import ConfigFactory
from .support.polling import eventually
from .support.sending import SendRig, send_rig

PHONE = "+1 202-555-0123"
JID = "12025550123@s.whatsapp.net"
THREAD = f"sales__{JID}"


def config(make_config: ConfigFactory, backend: Backend, **send: Any) -> Any:
    return make_config(
        [{"id": "sales"}, {"id": "support"}],
        store=backend.store_config(),
        send={"enabled": True, "poll_interval": "100ms", **send},
    )


def message_doc(backend: Backend, thread: str, message_id: str) -> dict[str, Any] | None:
    _, messages = backend.read().get(thread, (None, {}))
    return messages.get(message_id)


async def test_a_connected_account_sends_at_once_and_the_app_sees_it_sent(
    make_config: ConfigFactory, backend: Backend
) -> None:
    async with send_rig(config(make_config, backend), SystemClock()) as rig:
        status, body = await rig.send(
            {"accountId": "sales", "to": PHONE, "message": "Hello", "clientMessageId": "m-1"}
        )
        assert status == 200, body
        [(to, text, wa_id)] = rig.sessions["sales"].sent
        assert (to, text) == (JID, "Hello")
        assert body == {
            "success": True,
            "messageId": wa_id,
            "clientMessageId": "m-1",
            "queued": False,
            "status": "sent",
        }
        item = await rig.worker.store.get("m-1")
        assert item is not None
        assert (item.status, item.provider_message_id, item.attempt_count) == ("sent", wa_id, 1)
        doc = message_doc(backend, THREAD, "m-1")
        assert doc is not None
        assert doc["direction"] == "outbound"
        assert doc["clientMessageId"] == "m-1"
        assert doc["status"] == "sent"
        assert doc["providerMessageId"] == doc["waMessageId"] == doc["key"]["id"] == wa_id
        assert doc["body"] == "Hello"
        assert rig.metric("whatsapp_messages_sent_total", account="sales", result="ok") == 1
        assert rig.metric("whatsapp_send_duration_seconds_count", account="sales") == 1
        assert rig.metric("whatsapp_messages_sent_total", account="support", result="ok") == 0


async def test_a_disconnected_account_queues_and_drains_once_connected(
    make_config: ConfigFactory, backend: Backend
) -> None:
    async with send_rig(config(make_config, backend), SystemClock(), connected=False) as rig:
        answers = []
        for n in range(3):
            status, body = await rig.send(
                {"accountId": "sales", "to": JID, "message": f"m{n}", "clientMessageId": f"q-{n}"}
            )
            assert status == 200
            answers.append(body)
        assert [a["queued"] for a in answers] == [True, True, True]
        assert [a["messageId"] for a in answers] == ["q-0", "q-1", "q-2"]
        assert rig.sessions["sales"].sent == []
        doc = message_doc(backend, THREAD, "q-0")
        assert doc is not None
        assert doc["status"] == "queued"
        assert doc["key"]["id"] is None
        thread, _ = backend.read()[THREAD]
        assert thread is not None
        assert thread["lastMessageDirection"] == "outbound"
        assert (thread["phoneE164"], thread["isLid"]) == ("+12025550123", False)
        assert "lastMessageText" not in thread  # the last received text stays
        await rig.worker.count()
        assert rig.metric("whatsapp_outbox_messages", account="sales", status="queued") == 3
        assert rig.metric("whatsapp_outbox_messages", account="sales", status="sent") == 0
        assert rig.metric("whatsapp_outbox_messages", account="support", status="queued") == 0
        age = rig.metric("whatsapp_outbox_oldest_queued_age_seconds", account="sales")
        assert age is not None
        assert 0 <= age < 60
        assert rig.metric("whatsapp_outbox_oldest_queued_age_seconds", account="support") is None
        rig.sessions["sales"].connected = True  # a re-pair or an outage ends
        rig.worker.wake()
        await eventually(lambda: len(rig.sessions["sales"].sent) == 3, what="the queue drained")
        assert [text for _, text, _ in rig.sessions["sales"].sent] == ["m0", "m1", "m2"]
        for n in range(3):
            item_id = f"q-{n}"
            item = await eventually(lambda: _sent(rig, item_id), what=f"{item_id} recorded")
            assert item.attempt_count == 1  # waiting while disconnected spent no attempt
        await rig.worker.count()
        assert rig.metric("whatsapp_outbox_messages", account="sales", status="sent") == 3
        assert rig.metric("whatsapp_outbox_messages", account="sales", status="queued") == 0
        assert rig.metric("whatsapp_outbox_oldest_queued_age_seconds", account="sales") is None


async def _sent(rig: SendRig, item_id: str) -> OutboxItem | None:
    item = await rig.worker.store.get(item_id)
    return item if item is not None and item.status == outbox.SENT else None


async def test_a_repeated_client_message_id_is_never_sent_twice(
    make_config: ConfigFactory, backend: Backend
) -> None:
    async with send_rig(config(make_config, backend), SystemClock()) as rig:
        body = {"accountId": "sales", "to": JID, "message": "once", "clientMessageId": "a b/c"}
        status, first = await rig.send(body)
        assert status == 200
        assert first["status"] == "sent"
        status, again = await rig.send(body | {"to": "+1 202 555 0123"})  # the same recipient
        assert status == 200
        assert again == {
            "success": True,
            "messageId": first["messageId"],
            "clientMessageId": "a b/c",
            "queued": False,
            "status": "sent",
            "duplicate": True,
        }
        assert len(rig.sessions["sales"].sent) == 1
        # the outbox id is the clientMessageId made safe, as the existing backend makes it
        assert (await rig.worker.store.get("a_b_c")) is not None


async def test_a_client_message_id_naming_another_message_is_409_never_a_silent_drop(
    make_config: ConfigFactory, backend: Backend
) -> None:
    async with send_rig(config(make_config, backend), SystemClock(), connected=False) as rig:
        body = {"accountId": "sales", "to": JID, "message": "first", "clientMessageId": "o/7"}
        assert (await rig.send(body))[0] == 200
        for other in (
            {"accountId": "support"},  # another account
            {"message": "second"},  # another text
            {"to": "+12025550199"},  # another recipient
            {"clientMessageId": "o.7"},  # another id, the same document id once made safe
        ):
            status, answer = await rig.send(body | other)
            assert status == 409, other
            assert answer["error"] == "client_message_id_reused"
            assert "o/7" not in answer["message"]
        assert await rig.worker.store.counts(["sales", "support"]) == [("sales", "queued", 1)]


async def test_a_message_the_app_queued_in_the_outbox_is_sent_and_its_fields_kept(
    make_config: ConfigFactory, backend: Backend
) -> None:
    request_id = hashlib.sha256(b"thread|uid|client-uuid").hexdigest()
    async with send_rig(config(make_config, backend), SystemClock(), run_worker=False) as rig:
        now = SystemClock().now()
        queued = OutboxItem(
            id=request_id,
            account_id="sales",
            to_jid=JID,
            thread_id=THREAD,
            text="from the app",
            client_message_id="client-uuid",
            next_attempt_at=now,
            created_at=now,
        )
        written = await write_as_the_app(backend, rig, queued)
        assert await rig.worker.claim_once() == 1
        await eventually(lambda: _sent(rig, request_id), what="the app's message sent")
        [(to, text, wa_id)] = rig.sessions["sales"].sent
        assert (to, text) == (JID, "from the app")
        if written is not None:  # Firestore: the app's own fields are left as they were
            stored = written.get().to_dict()
            assert stored["requestId"] == request_id
            assert stored["createdByUid"] == "uid-1"
            assert stored["providerMessageId"] == wa_id
            assert stored["claimedBy"] == "replica-a"
        doc = message_doc(backend, THREAD, request_id)
        assert doc is not None
        assert (doc["status"], doc["waMessageId"], doc["direction"]) == ("sent", wa_id, "outbound")


async def write_as_the_app(backend: Backend, rig: SendRig, item: OutboxItem) -> Any:
    """Queue ``item`` as the app does: in Firestore through its Cloud Function's fields
    (a SHA-256 id, no ``updatedAt``, fields of its own); in SQLite, a row."""
    if backend.name == "sqlite":
        await rig.worker.store.add(item)
        return None
    from google.cloud import firestore

    client = firestore.Client(project=backend.project)
    ref = client.collection("outbox").document(item.id)
    ref.set(
        {
            "requestId": item.id,
            "threadId": item.thread_id,
            "accountId": item.account_id,
            "toJid": item.to_jid,
            "body": item.text,
            "payload": {"text": item.text},
            "status": "queued",
            "attemptCount": 0,
            "nextAttemptAt": firestore.SERVER_TIMESTAMP,
            "createdAt": firestore.SERVER_TIMESTAMP,
            "createdByUid": "uid-1",
            "clientMessageId": item.client_message_id,
        }
    )
    return ref


async def test_receipts_move_the_message_forward_and_never_back(
    make_config: ConfigFactory, backend: Backend
) -> None:
    async with send_rig(config(make_config, backend), SystemClock()) as rig:
        _, body = await rig.send(
            {"accountId": "sales", "to": JID, "message": "tick", "clientMessageId": "r-1"}
        )
        wa_id = body["messageId"]
        sent_at = SystemClock().now()
        rig.assembly.sidecar.handle("sales", receipt(wa_id, Receipt.DELIVERED), sent_at + 2)

        def status() -> Any:
            doc = message_doc(backend, THREAD, "r-1")
            return None if doc is None else doc["status"]

        await eventually(lambda: status() == "delivered", what="delivered")
        rig.assembly.sidecar.handle("sales", receipt(wa_id, Receipt.READ), sent_at + 5)
        await eventually(lambda: status() == "read", what="read")
        # a late delivered receipt, and one from our own phone, change nothing
        rig.assembly.sidecar.handle("sales", receipt(wa_id, Receipt.DELIVERED), sent_at + 6)
        rig.assembly.sidecar.handle(
            "sales", receipt(wa_id, Receipt.DELIVERED, from_me=True), sent_at + 7
        )
        marker = rig.background[1]
        # the one from our own phone proves nothing and never reaches the marker
        await eventually(lambda: marker.handled == 3, what="receipts applied")
        doc = message_doc(backend, THREAD, "r-1")
        assert doc is not None
        assert doc["status"] == "read"
        assert doc["deliveredAt"] == round((sent_at + 2) * 1000)
        assert doc["readAt"] == round((sent_at + 5) * 1000)
        assert rig.metric("whatsapp_message_delivery_seconds_count", account="sales") == 1


def receipt(wa_id: str, kind: int, *, from_me: bool = False) -> Any:
    event = Receipt(Type=kind, MessageIDs=[wa_id])
    event.MessageSource.IsFromMe = from_me
    event.MessageSource.Chat.User = "12025550123"
    event.MessageSource.Chat.Server = "s.whatsapp.net"
    return event


async def test_a_client_message_id_whose_outbox_document_is_not_a_message_is_409(
    make_config: ConfigFactory, tmp_path: Any, emulator_host: str, monkeypatch: Any
) -> None:
    """Only Firestore can hold such a document (SQLite's rows are always items)."""
    from google.cloud import firestore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator_host)
    backend = Backend("firestore", tmp_path / "state", emulator_host)
    firestore.Client(project=backend.project).collection("outbox").document("odd").set(
        {"status": "queued", "note": "written by hand"}
    )
    async with send_rig(config(make_config, backend), SystemClock()) as rig:
        status, body = await rig.send(
            {"accountId": "sales", "to": JID, "message": "m", "clientMessageId": "odd"}
        )
        assert status == 409
        assert body["error"] == "outbox_conflict"
        assert rig.sessions["sales"].sent == []
