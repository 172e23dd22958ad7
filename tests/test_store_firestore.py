"""FirestoreStore encodes its writes itself (the library's encoding was the drain's
bottleneck): the raw ``Write`` protobufs must equal the ones the library's
``set()`` builds for the same records, and what lands in the real emulator must
read back as the library's writes do."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import pytest
from google.api_core.exceptions import GoogleAPIError
from google.cloud import firestore
from google.cloud.firestore_v1 import types
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e

from sidecar import testing as build
from sidecar.adapters.spool import Batch, SpooledThread
from sidecar.adapters.store_firestore import FirestoreStore
from sidecar.core.spool_writer import describe_error
from sidecar.domain.authorship import Stored, resolve
from sidecar.domain.classify import classify
from sidecar.domain.records import SERVER_TIME, MessageDoc, ThreadPatch, Timestamp, build_records
from sidecar.testing import firestore_library_values

from .support.http import refused_address

ACCOUNT = "sales"
TS = 1_764_068_400_123
CUSTOMER = build.jid("12025550123")
GROUP = build.jid("120363000000000001", "g.us")
MEMBER = build.jid("12025550147")
LID_CHAT = build.jid("123456789012345", "lid")
SERVER_TIME_FIELDS = {"createdAt", "updatedAt"}


def events() -> list[Any]:
    M = e2e.Message
    return [
        build.message_event(
            build.text("Hello,   is my\norder ready?"),
            chat=CUSTOMER,
            message_id="IN1",
            timestamp_ms=TS,
        ),
        build.message_event(
            M(extendedTextMessage=e2e.ExtendedTextMessage(text="Yes, today.")),
            chat=CUSTOMER,
            from_me=True,
            message_id="OUT1",
            timestamp_ms=TS + 1001,
        ),
        build.message_event(
            build.text("anyone?"),
            chat=GROUP,
            sender=MEMBER,
            is_group=True,
            message_id="GRP1",
            timestamp_ms=TS + 2002,
        ),
        build.message_event(
            M(imageMessage=e2e.ImageMessage(mimetype="image/jpeg", caption="receipt")),
            chat=GROUP,
            sender=MEMBER,
            is_group=True,
            message_id="IMG1",
            timestamp_ms=TS + 3003,
        ),
        build.message_event(
            M(
                documentWithCaptionMessage=e2e.FutureProofMessage(
                    message=M(
                        documentMessage=e2e.DocumentMessage(
                            mimetype="application/pdf", fileName="invoice.pdf", caption="invoice"
                        )
                    )
                )
            ),
            chat=LID_CHAT,
            message_id="DOC1",
            timestamp_ms=TS + 4004,
            IsDocumentWithCaption=True,
        ),
        build.message_event(
            build.edit("IN1", "12025550123@s.whatsapp.net", "Hello, is my order ready now?"),
            chat=CUSTOMER,
            message_id="EDIT1",
            timestamp_ms=TS + 5005,
            IsEdit=True,
        ),
    ]


def records_batch() -> Batch:
    """Every record the events make, in spool order: messages, then thread updates."""
    batch = Batch()
    for seq, event in enumerate(events()):
        records = build_records(ACCOUNT, event, classify(event.Message))
        assert records is not None
        doc, patch = records
        batch.messages.append((seq, doc))
        if patch is not None:
            batch.threads.append(SpooledThread(patch, seq))
    assert any(doc.merge for _, doc in batch.messages), "the edit is a merge"
    assert {t.patch.fields["lastMessageDirection"] for t in batch.threads} == {
        "inbound",
        "outbound",
    }
    return batch


def edge_cases_batch() -> Batch:
    """Shapes no record has today, where ``set()`` has rules of its own: a map of server
    times only (left out), an empty map (kept), names that need quoting, the epoch; in a
    whole document and in a merge."""
    fields = {
        "only server times": {"at": SERVER_TIME, "deeper": {"at": SERVER_TIME}},
        "mixed": {"empty": {}, "at": SERVER_TIME, "n": 1.5, "none": None, "yes": True},
        "empty": {},
        "epoch": Timestamp(0),
        "before the epoch": Timestamp(-1),
        "a.b": "dotted",
        "updatedAt": SERVER_TIME,
    }
    key = {"key": {"id": "replace", "fromMe": False, "participant": None}}
    return Batch(
        messages=[(1, MessageDoc(ACCOUNT, "t1", "replace", fields | key))],
        threads=[SpooledThread(ThreadPatch(ACCOUNT, "t1", fields), 1)],
    )


def library_batch(client: firestore.AsyncClient, batch: Batch) -> Any:
    """The same writes as the library's own ``set()`` calls make them, for the documents
    the authorship rules write when nothing was stored before the batch."""
    writes = client.batch()
    threads = client.collection("threads")
    known: dict[tuple[str, str], Stored | None] = {}
    for _, doc in batch.messages:
        resolution = resolve(doc, known.get((doc.thread_id, doc.message_id)))
        known[doc.thread_id, doc.message_id] = resolution.stored
        write = resolution.write
        assert write is not None
        messages = threads.document(doc.thread_id).collection("messages")
        writes.set(
            messages.document(write.message_id),
            firestore_library_values(write.fields),
            merge=write.merge,
        )
    for thread in batch.threads:
        patch = thread.patch
        writes.set(
            threads.document(patch.thread_id), firestore_library_values(patch.fields), merge=True
        )
    return writes


@pytest.fixture
def emulator(emulator_host: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator_host)
    return emulator_host


@pytest.mark.parametrize("make_batch", [records_batch, edge_cases_batch])
async def test_writes_equal_the_librarys_field_for_field(emulator: str, make_batch: Any) -> None:
    batch = make_batch()
    client = firestore.AsyncClient(project="wa-encoding")
    store = FirestoreStore("wa-encoding")

    request = store.prepare(batch).request.request
    ours = [types.Write.pb(w) for w in request.writes]
    theirs = [types.Write.pb(w) for w in library_batch(client, batch)._write_pbs]

    assert len(ours) == len(theirs) == len(batch)
    first_writes: set[str] = set()
    for mine, library in zip(ours, theirs, strict=True):
        name = mine.update.name
        if "/messages/" in name and name not in first_writes:  # a new message: not stored yet
            first_writes.add(name)
            assert mine.current_document.exists is False
            assert mine.HasField("current_document")
            mine.ClearField("current_document")
        assert not mine.HasField("current_document")
        assert mine == library, f"ours:\n{mine}\nthe library's:\n{library}"
    assert first_writes
    assert request.database == "projects/wa-encoding/databases/(default)"
    client.close()  # type: ignore[no-untyped-call]
    await store.close()


async def read_all(client: firestore.AsyncClient) -> dict[str, Any]:
    """Every thread and message document, by path; server times checked and masked."""
    docs: dict[str, Any] = {}
    async for thread in client.collection("threads").list_documents():
        snapshot = await thread.get()
        if snapshot.exists:
            docs[thread.path] = snapshot.to_dict()
        async for message in thread.collection("messages").stream():
            docs[message.reference.path] = message.to_dict()
    for fields in docs.values():
        for key in SERVER_TIME_FIELDS & fields.keys():
            assert isinstance(fields[key], datetime)
            assert abs(fields[key].timestamp() - time.time()) < 120
            fields[key] = "server time"
    return docs


async def test_documents_read_back_as_the_librarys_writes(emulator: str) -> None:
    batch = records_batch()
    store = FirestoreStore("wa-store-raw")
    await store.commit(await asyncio.to_thread(store.prepare, batch))  # as the writer does
    await store.close()
    library = firestore.AsyncClient(project="wa-store-library")
    await library_batch(library, batch).commit()

    ours = await read_all(firestore.AsyncClient(project="wa-store-raw"))
    theirs = await read_all(library)
    library.close()  # type: ignore[no-untyped-call]

    assert ours.keys() == {
        f"threads/{doc.thread_id}/messages/{doc.message_id}" for _, doc in batch.messages
    } | {f"threads/{thread.patch.thread_id}" for thread in batch.threads}
    assert ours == theirs
    inbound = ours["threads/sales__12025550123@s.whatsapp.net/messages/IN1"]
    assert inbound["body"] == "Hello, is my order ready now?"
    assert {"createdAt", "updatedAt", "editedAt"} <= inbound.keys()
    image = ours["threads/sales__120363000000000001@g.us/messages/IMG1"]
    assert image["media"] == {
        "type": "image",
        "mimetype": "image/jpeg",
        "caption": "receipt",
        "filename": None,
    }
    assert image["tsClient"].timestamp() * 1000 == TS + 3003


async def test_an_unreachable_store_fails_the_commit_with_its_error_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with refused_address() as nothing_there:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", nothing_there)
        store = FirestoreStore("wa-unreachable", timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(GoogleAPIError) as raised:
            await store.commit(store.prepare(records_batch()))
        await store.close()
    assert time.monotonic() - started < 5
    assert describe_error(raised.value) in ("RetryError", "ServiceUnavailable (UNAVAILABLE)")


def test_an_id_with_a_slash_is_refused_as_the_library_refuses_it() -> None:
    store = FirestoreStore("wa-ids")
    doc = MessageDoc(ACCOUNT, "t1", "a/b", {"body": "x"})
    with pytest.raises(ValueError, match="cannot contain '/'"):
        store.prepare(Batch(messages=[(1, doc)]))
