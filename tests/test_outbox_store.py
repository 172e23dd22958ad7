"""The outbox in both stores (issue 16): the embedded SQLite store and the real
Firestore emulator, in the existing backend's layout, each step atomic so that two
replicas never hold one message."""

from __future__ import annotations

import asyncio
import logging
import stat
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from sidecar.adapters.outbox_firestore_fields import timestamp
from sidecar.domain import outbox
from sidecar.domain.outbox import OutboxItem, SendPolicy, UnreadableItem

from .support.backends import Backend, make_outbox

POLICY = SendPolicy(max_attempts=3, lease_s=60.0)
T0 = 1_764_068_400.0


def item(n: int, account: str = "sales", **fields: Any) -> OutboxItem:
    base = OutboxItem(
        id=f"c-{n:03d}",
        account_id=account,
        to_jid="12025550123@s.whatsapp.net",
        thread_id=f"{account}__12025550123@s.whatsapp.net",
        text=f"message {n}",
        client_message_id=f"c-{n:03d}",
        next_attempt_at=T0 + n,
        created_at=T0 + n,
    )
    return replace(base, **fields)


async def test_an_item_reads_back_as_queued_and_a_duplicate_changes_nothing(
    backend: Backend,
) -> None:
    store = make_outbox(backend)
    first = item(1)
    assert await store.add(first) is None
    assert await store.get("c-001") == first
    again = replace(first, text="another text")
    assert await store.add(again) == first  # the one there, unchanged
    assert await store.get("c-001") == first
    assert await store.get("c-404") is None
    await store.close()


async def test_claims_take_due_items_of_the_accounts_held_earliest_first(
    backend: Backend,
) -> None:
    store = make_outbox(backend)
    for n in (3, 1, 2):
        await store.add(item(n))
    await store.add(item(4, next_attempt_at=T0 + 1000))  # not due yet
    await store.add(item(5, account="support"))  # not an account this worker holds
    claimed = await store.claim(["sales"], T0 + 10, "replica-a", POLICY, limit=2)
    assert [c.id for c in claimed] == ["c-001", "c-002"]
    for c in claimed:
        assert (c.status, c.claimed_by, c.lease_until, c.attempt_count) == (
            outbox.PROCESSING,
            "replica-a",
            T0 + 10 + POLICY.lease_s,
            1,
        )
        assert await store.get(c.id) == c
    rest = await store.claim(["sales"], T0 + 10, "replica-a", POLICY, limit=10)
    assert [c.id for c in rest] == ["c-003"]
    assert await store.claim(["sales"], T0 + 10, "replica-b", POLICY, limit=10) == []
    # a holder that died: its claims run out and are taken again
    taken = await store.claim(["sales"], T0 + 10 + POLICY.lease_s, "replica-b", POLICY, 10)
    assert [c.id for c in taken] == ["c-001", "c-002", "c-003"]
    assert {(c.claimed_by, c.attempt_count) for c in taken} == {("replica-b", 2)}
    await store.close()


async def test_two_replicas_claiming_at_once_never_hold_one_item(backend: Backend) -> None:
    first, second = make_outbox(backend), make_outbox(backend)
    for n in range(1, 31):
        await first.add(item(n))
    a, b = await asyncio.gather(
        first.claim(["sales"], T0 + 100, "replica-a", POLICY, limit=30),
        second.claim(["sales"], T0 + 100, "replica-b", POLICY, limit=30),
    )
    ids_a, ids_b = {c.id for c in a}, {c.id for c in b}
    assert not ids_a & ids_b
    assert ids_a | ids_b == {f"c-{n:03d}" for n in range(1, 31)}
    for c in a + b:
        stored = await first.get(c.id)
        assert stored is not None
        assert stored.claimed_by == c.claimed_by
    await first.close()
    await second.close()


async def test_only_the_holder_settles_a_claim(backend: Backend) -> None:
    store = make_outbox(backend)
    await store.add(item(1))
    [held] = await store.claim(["sales"], T0 + 10, "replica-a", POLICY, limit=1)
    [retaken] = await store.claim(["sales"], T0 + 100, "replica-b", POLICY, limit=1)
    late = outbox.recorded(held, "3EB0-A", T0 + 101)
    assert await store.settle(held, late) is False  # replica-b holds it now
    assert (await store.get("c-001")) == retaken
    sent = outbox.recorded(retaken, "3EB0-B", T0 + 102)
    assert await store.settle(retaken, sent) is True
    assert await store.get("c-001") == sent
    assert await store.claim(["sales"], T0 + 1000, "replica-c", POLICY, limit=1) == []
    await store.close()


async def test_counts_and_the_oldest_queued(backend: Backend) -> None:
    store = make_outbox(backend)
    for n in range(1, 4):
        await store.add(item(n))
    await store.add(item(4, account="support"))
    [held] = await store.claim(["sales"], T0 + 10, "replica-a", POLICY, limit=1)
    await store.settle(
        held, outbox.attempt_failed(replace(held, attempt_count=3), T0 + 11, "x", POLICY)
    )
    counts = sorted(await store.counts(["sales", "support"]))
    assert counts == [("sales", "failed", 1), ("sales", "queued", 2), ("support", "queued", 1)]
    assert await store.counts(["sales", "support"], outbox.SETTLED) == [("sales", "failed", 1)]
    found = await store.open_items(["sales", "support"])
    assert found.counts == [("sales", "queued", 2), ("support", "queued", 1)]
    assert found.oldest_queued == {"sales": T0 + 2, "support": T0 + 4}
    await store.close()


@pytest.mark.parametrize("backend", ["firestore"], indirect=True)
async def test_a_document_the_app_wrote_is_claimed_and_read_as_ours(backend: Backend) -> None:
    """The app queues through its own Cloud Function: a SHA-256 id, server times, no
    updatedAt, fields of its own (requestId, createdByUid) that stay untouched."""
    from google.cloud import firestore

    client = firestore.AsyncClient(project=backend.project)
    doc_id = "9f" * 32
    await (
        client.collection("outbox")
        .document(doc_id)
        .set(
            {
                "requestId": doc_id,
                "threadId": "sales__12025550123@s.whatsapp.net",
                "accountId": "sales",
                "toJid": "12025550123@s.whatsapp.net",
                "body": "from the app",
                "payload": {"text": "from the app"},
                "status": "queued",
                "attemptCount": 0,
                "nextAttemptAt": firestore.SERVER_TIMESTAMP,
                "createdAt": firestore.SERVER_TIMESTAMP,
                "createdByUid": "uid-alice",
                "clientMessageId": "5b0f3c1e-0000-4000-8000-000000000000",
            }
        )
    )
    store = make_outbox(backend)
    import time

    [claimed] = await store.claim(["sales"], time.time() + 5, "replica-a", POLICY, limit=5)
    assert (claimed.id, claimed.text, claimed.to_jid, claimed.client_message_id) == (
        doc_id,
        "from the app",
        "12025550123@s.whatsapp.net",
        "5b0f3c1e-0000-4000-8000-000000000000",
    )
    assert claimed.created_at is not None
    assert abs(claimed.created_at - time.time()) < 120
    sent = outbox.recorded(claimed, "3EB0-APP", time.time())
    assert await store.settle(claimed, sent)
    stored = (await client.collection("outbox").document(doc_id).get()).to_dict()
    assert stored is not None
    assert (stored["status"], stored["providerMessageId"]) == ("sent", "3EB0-APP")
    assert (stored["createdByUid"], stored["requestId"]) == ("uid-alice", doc_id)
    assert (stored["claimedBy"], stored["leaseUntil"]) == ("replica-a", None)
    assert {"updatedAt", "sentAt"} <= stored.keys()
    client.close()  # type: ignore[no-untyped-call]
    await store.close()


# -- beyond the contract: races, odd times, documents others wrote, reopening ----------


async def test_a_claim_racing_the_holders_settle_leaves_one_winner_per_item(
    backend: Backend,
) -> None:
    """The holder settles just as its claims run out and another replica claims: for
    each item either the settle or the new claim wins, never both, never neither."""
    first, second = make_outbox(backend), make_outbox(backend)
    for n in range(1, 11):
        await first.add(item(n))
    held = await first.claim(["sales"], T0 + 20, "replica-a", POLICY, limit=10)
    assert len(held) == 10
    late = T0 + 20 + POLICY.lease_s
    claiming = asyncio.ensure_future(second.claim(["sales"], late, "replica-b", POLICY, 10))
    # the settles go from the last item, the claim from the first: they meet between
    settled = {
        h.id: await first.settle(h, outbox.recorded(h, f"3EB0-{h.id}", late))
        for h in reversed(held)
    }
    retaken = await claiming
    taken = {c.id: c for c in retaken}
    for h in held:
        won = settled[h.id]
        assert won != (h.id in taken)
        stored = await first.get(h.id)
        expected = outbox.recorded(h, f"3EB0-{h.id}", late) if won else taken[h.id]
        assert stored == expected
    await first.close()
    await second.close()


async def test_times_that_are_not_whole_seconds_read_back_as_claimed(backend: Backend) -> None:
    """Firestore keeps microseconds: what a claim returns is what is stored, so its
    holder can still settle it."""
    store = make_outbox(backend)
    await store.add(item(1, next_attempt_at=T0 + 0.123456789, created_at=None))
    stored = await store.get("c-001")
    assert stored is not None
    assert stored.created_at is not None  # filled in when queued
    now = T0 + 1.000000123
    [held] = await store.claim(["sales"], now, "replica-a", POLICY, limit=1)
    assert await store.get("c-001") == held
    assert held.lease_until == pytest.approx(now + POLICY.lease_s, abs=1e-6)
    assert await store.settle(held, outbox.not_connected(held, now + 0.5, POLICY))
    back = await store.get("c-001")
    assert back is not None
    assert (back.status, back.attempt_count, back.lease_until) == (outbox.QUEUED, 0, None)
    assert back.next_attempt_at == pytest.approx(now + 0.5 + POLICY.offline_retry_s, abs=1e-6)
    assert await store.settle(held, outbox.recorded(held, "3EB0-late", now + 1)) is False
    await store.close()


async def test_many_accounts_are_claimed_across_query_chunks(backend: Backend) -> None:
    """Firestore's ``in`` takes 30 values: an account past the first 30 is claimed too."""
    store = make_outbox(backend)
    accounts = [f"acct-{i:02d}" for i in range(65)]
    await store.add(item(1, account="acct-64"))
    await store.add(item(2, account="acct-30"))
    claimed = await store.claim(accounts, T0 + 10, "replica-a", POLICY, limit=5)
    assert [(c.id, c.account_id) for c in claimed] == [("c-001", "acct-64"), ("c-002", "acct-30")]
    assert await store.claim([], T0 + 10, "replica-a", POLICY, limit=5) == []
    await store.close()


def test_both_stores_convert_every_field_of_an_item() -> None:
    from sidecar.adapters.outbox_firestore_fields import FIELDS
    from sidecar.adapters.outbox_sqlite import COLUMNS

    names = {f.name for f in fields(OutboxItem)}
    assert set(COLUMNS) == names
    assert set(FIELDS) | {"id", "text"} == names


async def test_the_sqlite_outbox_survives_a_reopen_beside_the_message_store(
    tmp_path: Path,
) -> None:
    from sidecar.adapters.outbox_sqlite import SqliteOutbox
    from sidecar.adapters.store_sqlite import SqliteMessageStore

    state = tmp_path / "state"
    messages = SqliteMessageStore(state)
    store = SqliteOutbox(state)
    await store.add(item(1))
    [held] = await store.claim(["sales"], T0 + 10, "replica-a", POLICY, limit=1)
    await store.close()
    await messages.close()
    assert stat.S_IMODE((state / "messages.sqlite3").stat().st_mode) == 0o600
    reopened = SqliteOutbox(state)
    messages = SqliteMessageStore(state)  # both schemas in one file, either opened first
    assert await reopened.get("c-001") == held
    assert await reopened.settle(held, outbox.recorded(held, "3EB0-A", T0 + 11))
    assert await reopened.counts(["sales"]) == [("sales", "sent", 1)]
    await reopened.close()
    await messages.close()


@pytest.mark.parametrize("backend", ["firestore"], indirect=True)
async def test_our_documents_have_the_existing_backends_fields(backend: Backend) -> None:
    """Only the fields that have a value, in its names and kinds; a step updates only
    the fields it changed, and ``updatedAt`` on every write."""
    from google.cloud import firestore

    client = firestore.AsyncClient(project=backend.project)
    ref = client.collection("outbox").document("c-001")
    store = make_outbox(backend)
    await store.add(item(1))
    doc = (await ref.get()).to_dict()
    assert doc is not None
    assert set(doc) == {
        "accountId", "toJid", "threadId", "payload", "body", "clientMessageId", "status",
        "attemptCount", "nextAttemptAt", "createdAt", "updatedAt",
    }  # fmt: skip
    assert (doc["payload"], doc["body"], doc["status"], doc["attemptCount"]) == (
        {"text": "message 1"},
        "message 1",
        "queued",
        0,
    )
    assert doc["nextAttemptAt"].timestamp() == T0 + 1
    await ref.update({"requestId": "kept"})
    doc = (await ref.get()).to_dict()
    assert doc is not None
    [held] = await store.claim(["sales"], T0 + 10, "replica-a", POLICY, limit=1)
    claimed = (await ref.get()).to_dict()
    assert claimed is not None
    changed = {k for k in claimed if claimed[k] != doc.get(k)}
    assert changed == {"status", "attemptCount", "leaseUntil", "claimedBy", "updatedAt"}
    assert claimed["requestId"] == "kept"
    await store.settle(held, outbox.attempt_failed(held, T0 + 11, "timeout", POLICY))
    failed = (await ref.get()).to_dict()
    assert failed is not None
    assert {k for k in failed if failed[k] != claimed.get(k)} == {
        "status", "nextAttemptAt", "leaseUntil", "lastError", "updatedAt",
    }  # fmt: skip
    client.close()  # type: ignore[no-untyped-call]
    await store.close()


@pytest.mark.parametrize("backend", ["firestore"], indirect=True)
async def test_documents_that_are_not_items_are_failed_not_claimed_again(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone else's odd document (no recipient, a text that is not one, a count that
    is not a number) never stops the claim, never blocks the queue, never comes back;
    the log names its id and the field, never the contents."""
    from google.cloud import firestore

    client = firestore.AsyncClient(project=backend.project)
    outbox_docs = client.collection("outbox")
    good = {
        "accountId": "sales",
        "toJid": "12025550123@s.whatsapp.net",
        "threadId": "sales__12025550123@s.whatsapp.net",
        "body": "secret text",
        "status": "queued",
        "attemptCount": 0,
        "nextAttemptAt": timestamp(T0),
        "createdAt": timestamp(T0),
    }
    odd = {
        "no-recipient": ({k: v for k, v in good.items() if k != "toJid"}, "toJid"),
        "number-body": ({**good, "body": 42, "payload": {"text": None}}, "body"),
        "text-count": ({**good, "attemptCount": "1"}, "attemptCount"),
        "lost-claim": (
            {**good, "status": "processing", "leaseUntil": timestamp(T0), "nextAttemptAt": "x"},
            "nextAttemptAt",
        ),
    }
    for doc_id, (data, _) in odd.items():
        await outbox_docs.document(doc_id).set(data)
    await outbox_docs.document("fine").set({**good, "nextAttemptAt": timestamp(T0 + 5)})
    store = make_outbox(backend)
    with caplog.at_level(logging.WARNING):
        claimed = await store.claim(["sales"], T0 + 10, "replica-a", POLICY, limit=10)
    assert [c.id for c in claimed] == ["fine"]
    for doc_id, (_, field) in odd.items():
        stored = (await outbox_docs.document(doc_id).get()).to_dict()
        assert stored is not None
        assert (stored["status"], stored["lastError"]) == ("failed", f"unreadable: {field}")
        assert f"{doc_id} marked failed: {field}" in caplog.text
        with pytest.raises(UnreadableItem, match=field):
            await store.get(doc_id)
    assert "secret text" not in caplog.text
    assert "12025550123" not in caplog.text
    assert await store.claim(["sales"], T0 + 30, "replica-b", POLICY, limit=10) == []
    counts = sorted(await store.counts(["sales", "support"]))
    assert counts == [("sales", "failed", 4), ("sales", "processing", 1)]
    client.close()  # type: ignore[no-untyped-call]
    await store.close()


async def test_an_item_whatsapp_took_already_is_recorded_never_claimed(backend: Backend) -> None:
    """A holder that died after its send was recorded on the item but before it was
    released (or another worker that left it so) must not make the item go out twice,
    nor let such items fill every claim's places ahead of the others."""
    store = make_outbox(backend)
    for n in (1, 2):
        await store.add(
            item(
                n,
                status=outbox.PROCESSING,
                provider_message_id=f"3EB0-{n}",
                attempt_count=1,
                lease_until=T0 + 50,
                claimed_by="replica-gone",
            )
        )
    await store.add(item(3))
    first = await store.claim(["sales"], T0 + 100, "replica-a", POLICY, limit=2)
    second = await store.claim(["sales"], T0 + 100, "replica-a", POLICY, limit=2)
    assert [c.id for c in first + second] == ["c-003"]
    for n in (1, 2):
        stored = await store.get(f"c-00{n}")
        assert stored is not None
        assert (stored.status, stored.provider_message_id, stored.lease_until) == (
            outbox.SENT,
            f"3EB0-{n}",
            None,
        )
        assert stored.sent_at == T0 + 100
    await store.close()
