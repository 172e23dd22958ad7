"""The outbox in Firestore: the existing backend's ``outbox/{id}`` documents.

Its field names, kept exactly, so the app's documents (written by its Cloud Function:
SHA-256 ids, no ``updatedAt`` until claimed, fields of its own such as ``requestId``)
and ours are sent the same way (docs/sending.md, "The outbox"). Every write is an
update of the fields its step changed, plus ``updatedAt`` (server time): fields this
module does not know stay as they are (the fields: :mod:`.outbox_firestore_fields`).
Each step that reads before it writes is one transaction on one document, in the
style of :mod:`sidecar.adapters.firestore_leases`.

A queued or processing document that is not an item (a field missing or of the wrong
kind) would block the queue or be claimed forever: the claim marks it ``failed`` with
``lastError: "unreadable: <field>"`` and logs its id, never its contents.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Collection
from datetime import datetime
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore
from google.cloud.firestore_v1 import FieldFilter

from sidecar.adapters import outbox_firestore_fields as docs
from sidecar.core.ports import OpenItems
from sidecar.domain import outbound, outbox
from sidecar.domain.outbox import OutboxItem, SendPolicy, UnreadableItem
from sidecar.domain.sending import advanced

log = logging.getLogger(__name__)

OUTBOX, THREADS, MESSAGES = "outbox", "threads", "messages"
#: How many values one ``in`` filter may hold.
IN_LIMIT = 30
#: Count queries in flight at once (thousands of accounts would otherwise queue them
#: one after the other, or all at once).
COUNT_CONCURRENCY = 16
#: Open items of one status one query reads at most, per 30 accounts: up to this many,
#: reading them costs no more than counting the chunk per account would (a count and an
#: oldest-queued query per account, 60 reads).
OPEN_READ_LIMIT = 60


class FirestoreOutbox:
    backend = "firestore"

    def __init__(
        self, project: str, *, database: str = "(default)", timeout_s: float = 10.0
    ) -> None:
        # FIRESTORE_EMULATOR_HOST is honoured by the client itself
        self._client = firestore.AsyncClient(project=project, database=database)
        self._outbox = self._client.collection(OUTBOX)
        self._timeout = timeout_s

    async def add(self, item: OutboxItem) -> OutboxItem | None:
        ref = self._outbox.document(item.id)
        message = self._message_ref(item)
        thread = self._client.collection(THREADS).document(item.thread_id)
        there: list[OutboxItem] = []

        @firestore.async_transactional
        async def add(tx: Any) -> None:
            there.clear()
            snapshot = await ref.get(transaction=tx, timeout=self._timeout)
            if snapshot.exists:
                there.append(docs.read(snapshot.id, snapshot.to_dict() or {}))
                return
            stored = await message.get(transaction=tx, timeout=self._timeout)
            tx.create(ref, docs.new_document(item))
            if not stored.exists:  # the app may have written its own already
                tx.create(message, docs.native(outbound.message_document(item, outbox.QUEUED)))
            tx.set(thread, docs.native(outbound.thread_fields(item)), merge=True)

        await add(self._client.transaction())
        return there[0] if there else None

    async def get(self, item_id: str) -> OutboxItem | None:
        snapshot = await self._outbox.document(item_id).get(timeout=self._timeout)
        return docs.read(snapshot.id, snapshot.to_dict() or {}) if snapshot.exists else None

    async def claim(
        self,
        accounts: Collection[str],
        now: float,
        worker: str,
        policy: SendPolicy,
        limit: int,
    ) -> list[OutboxItem]:
        if not accounts or limit <= 0:
            return []
        candidates = await self._candidates(sorted(set(accounts)), now, limit)
        if not candidates:
            return []
        try:
            return await self._take(candidates, now, worker, policy, limit)
        except ValueError as exc:
            if not isinstance(exc.__cause__, api_exceptions.Aborted):
                raise
            return []  # contended until the retries ran out: other workers have them

    async def settle(self, claim: OutboxItem, after: OutboxItem) -> bool:
        if after.id != claim.id:
            raise ValueError("a claim settles its own item only")
        ref = self._outbox.document(claim.id)
        held = docs.held_by(claim)

        message = self._message_ref(after)
        settles_message = after.status in (outbox.SENT, outbox.FAILED)

        @firestore.async_transactional
        async def write(tx: Any) -> bool:
            refs = [ref, message] if settles_message else [ref]
            found = {
                snapshot.reference.path: snapshot  # both in one read
                async for snapshot in self._client.get_all(
                    refs, transaction=tx, timeout=self._timeout
                )
            }
            snapshot = found[ref.path]
            if not snapshot.exists or docs.lease_of(snapshot.to_dict() or {}) != held:
                return False
            tx.update(ref, docs.update(claim, after))
            if settles_message:
                self._settle_message(tx, found[message.path], after)
            return True

        result: bool = await write(self._client.transaction())
        return result

    def _settle_message(self, tx: Any, stored: Any, after: OutboxItem) -> None:
        """The message document follows a sent or failed item: made whole when it is
        not there (else the message would never appear in its thread), else moved on."""
        whole = outbound.message_document(after, after.status)
        _move_message(tx, stored, after.status, outbound.status_fields(after, after.status), whole)

    async def mark(self, thread_id: str, message_id: str, status: str, at: float) -> bool:
        ref = self._message_doc(thread_id, message_id)
        fields = outbound.receipt_fields(status, at)

        @firestore.async_transactional
        async def mark(tx: Any) -> bool:
            stored = await ref.get(transaction=tx, timeout=self._timeout)
            return _move_message(tx, stored, status, fields, None)

        result: bool = await mark(self._client.transaction())
        return result

    def _message_ref(self, item: OutboxItem) -> Any:
        return self._message_doc(item.thread_id, outbound.message_id(item))

    def _message_doc(self, thread_id: str, message_id: str) -> Any:
        thread = self._client.collection(THREADS).document(thread_id)
        return thread.collection(MESSAGES).document(message_id)

    async def counts(
        self, accounts: Collection[str], statuses: Collection[str] = outbox.STATUSES
    ) -> list[tuple[str, str, int]]:
        """One aggregation per account and status: Firestore counts without reading the
        documents (a read per 1,000 entries), however many sent ones there are. Costly
        for many accounts: the worker asks for the settled ones seldom (sender.py)."""
        slots = asyncio.Semaphore(COUNT_CONCURRENCY)
        found = await asyncio.gather(
            *(self._count(a, status, slots) for a in sorted(set(accounts)) for status in statuses)
        )
        return [row for row in found if row[2]]

    async def open_items(self, accounts: Collection[str]) -> OpenItems:
        """The queued and processing items read, ``accountId`` and ``createdAt`` only,
        with one query per 30 accounts and status: a read per item (one for a query that
        finds none) instead of five queries per account. Equality filters only, which
        the indexes of docs/sending.md serve. A chunk with more than
        :data:`OPEN_READ_LIMIT` items of a status (a backlog) is counted per account
        instead: reading a long backlog at every count would cost more than that."""
        wanted = sorted(set(accounts))
        slots = asyncio.Semaphore(COUNT_CONCURRENCY)
        parts = await asyncio.gather(
            *(
                self._open_chunk(wanted[start : start + IN_LIMIT], status, slots)
                for start in range(0, len(wanted), IN_LIMIT)
                for status in outbox.OPEN
            )
        )
        counts = sorted(row for rows, _ in parts for row in rows)
        return OpenItems(counts, {a: at for _, oldest in parts for a, at in oldest.items()})

    async def _open_chunk(
        self, chunk: list[str], status: str, slots: asyncio.Semaphore
    ) -> tuple[list[tuple[str, str, int]], dict[str, float]]:
        query = (
            self._outbox.where(filter=FieldFilter("accountId", "in", chunk))
            .where(filter=FieldFilter("status", "==", status))
            .select(["accountId", "createdAt"])
            .limit(OPEN_READ_LIMIT + 1)
        )
        async with slots:
            found = [s.to_dict() or {} async for s in query.stream(timeout=self._timeout)]
        if len(found) > OPEN_READ_LIMIT:
            return await self._open_backlog(chunk, status, slots)
        items: Counter[str] = Counter()
        oldest: dict[str, float] = {}
        for data in found:
            account, created = data.get("accountId"), data.get("createdAt")
            if not isinstance(account, str):
                continue
            items[account] += 1
            if status == outbox.QUEUED and isinstance(created, datetime):
                at = docs.seconds(created)
                oldest[account] = min(at, oldest.get(account, at))
        return [(a, status, n) for a, n in items.items()], oldest

    async def _open_backlog(
        self, chunk: list[str], status: str, slots: asyncio.Semaphore
    ) -> tuple[list[tuple[str, str, int]], dict[str, float]]:
        """A chunk's items of ``status`` counted per account, and its queued accounts'
        oldest looked up one by one: a read or two per account, whatever the backlog."""
        found = await asyncio.gather(*(self._count(a, status, slots) for a in chunk))
        waiting = [row for row in found if row[2]]
        if status != outbox.QUEUED:
            return waiting, {}
        oldest = await asyncio.gather(*(self._oldest(a, slots) for a, _, _ in waiting))
        return waiting, {account: at for account, at in oldest if at is not None}

    async def _count(
        self, account: str, status: str, slots: asyncio.Semaphore
    ) -> tuple[str, str, int]:
        query = self._outbox.where(filter=FieldFilter("accountId", "==", account)).where(
            filter=FieldFilter("status", "==", status)
        )
        counting: Any = query.count(alias="n")  # its stub types it as a class
        async with slots:
            results = await counting.get(timeout=self._timeout)
        return account, status, int(results[0][0].value) if results and results[0] else 0

    async def _oldest(self, account: str, slots: asyncio.Semaphore) -> tuple[str, float | None]:
        """The account's queued item created first: a single-document query (composite
        index: docs/sending.md)."""
        query = (
            self._outbox.where(filter=FieldFilter("accountId", "==", account))
            .where(filter=FieldFilter("status", "==", outbox.QUEUED))
            .order_by("createdAt")
            .limit(1)
        )
        async with slots:
            async for snapshot in query.select(["createdAt"]).stream(timeout=self._timeout):
                created = (snapshot.to_dict() or {}).get("createdAt")
                if isinstance(created, datetime):
                    return account, docs.seconds(created)
        return account, None

    async def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    async def _candidates(self, accounts: list[str], now: float, limit: int) -> list[Any]:
        """References to the documents that may be claimable, the earliest due first:
        queued ones whose time came, and processing ones whose claim ran out (composite
        indexes: docs/sending.md). ``claimable`` decides, in the transaction."""
        at = docs.timestamp(now)
        found: dict[str, tuple[float, Any]] = {}
        for start in range(0, len(accounts), IN_LIMIT):
            chunk = accounts[start : start + IN_LIMIT]
            for status, field in (
                (outbox.QUEUED, "nextAttemptAt"),
                (outbox.PROCESSING, "leaseUntil"),
            ):
                query = (
                    self._outbox.where(filter=FieldFilter("accountId", "in", chunk))
                    .where(filter=FieldFilter("status", "==", status))
                    .where(filter=FieldFilter(field, "<=", at))
                    .order_by(field)
                    .limit(limit)
                )
                async for snapshot in query.stream(timeout=self._timeout):
                    due = (snapshot.to_dict() or {}).get("nextAttemptAt")
                    key = docs.seconds(due) if isinstance(due, datetime) else float("-inf")
                    found[snapshot.id] = (key, snapshot.reference)
        return [ref for _, (_, ref) in sorted(found.items(), key=lambda kv: (kv[1][0], kv[0]))]

    async def _take(
        self, refs: list[Any], now: float, worker: str, policy: SendPolicy, limit: int
    ) -> list[OutboxItem]:
        """Claim those of ``refs`` still claimable, the earliest due first, up to
        ``limit``: one transaction (one read of them all, one commit), so a look at the
        outbox costs three round trips however many it claims."""
        unreadable: list[UnreadableItem] = []
        order = {ref.id: n for n, ref in enumerate(refs)}

        @firestore.async_transactional
        async def take(tx: Any) -> list[OutboxItem]:
            unreadable.clear()
            # the client's, not the transaction's get_all: that one awaits a generator
            reading = self._client.get_all(refs, transaction=tx, timeout=self._timeout)
            snapshots = [snapshot async for snapshot in reading]
            snapshots.sort(key=lambda snapshot: order[snapshot.id])
            taken: list[OutboxItem] = []
            for snapshot in snapshots:
                if not snapshot.exists:
                    continue
                data = snapshot.to_dict() or {}
                try:
                    item = docs.read(snapshot.id, data)
                except UnreadableItem as exc:
                    if data.get("status") in (outbox.QUEUED, outbox.PROCESSING):
                        tx.update(snapshot.reference, docs.unreadable(exc, now))
                        unreadable.append(exc)
                    continue
                if outbox.already_sent(item):
                    after = docs.as_stored(outbox.sent_already(item, now))
                    tx.update(snapshot.reference, docs.update(item, after))
                elif len(taken) < limit and outbox.claimable(item, now):
                    after = docs.as_stored(outbox.claimed(item, now, worker, policy))
                    tx.update(snapshot.reference, docs.update(item, after))
                    taken.append(after)
            return taken

        taken: list[OutboxItem] = await take(self._client.transaction())
        for exc in unreadable:
            log.warning("outbox document %s marked failed: %s", exc.item_id, exc.field)
        return taken


def _move_message(
    tx: Any, stored: Any, status: str, fields: dict[str, Any], whole: dict[str, Any] | None
) -> bool:
    """Give an outbound message document (``stored``, read in ``tx``) ``fields`` if
    ``status`` moves it forward; one that is not there is written ``whole`` when given.
    Whether it was written (the SQLite outbox's ``_move_message`` is its twin)."""
    if stored.exists:
        if not advanced((stored.to_dict() or {}).get("status"), status):
            return False
        tx.update(stored.reference, docs.as_update(fields))
        return True
    if whole is None:
        return False
    tx.create(stored.reference, docs.native(whole))
    return True
