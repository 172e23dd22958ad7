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

import logging
from collections import Counter
from collections.abc import Collection
from datetime import datetime
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore
from google.cloud.firestore_v1 import FieldFilter

from sidecar.adapters import outbox_firestore_fields as docs
from sidecar.domain import outbox
from sidecar.domain.outbox import OutboxItem, SendPolicy, UnreadableItem

log = logging.getLogger(__name__)

OUTBOX = "outbox"
#: How many values one ``in`` filter may hold.
IN_LIMIT = 30


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
        for _ in range(3):  # a duplicate deleted before it was read: create again
            try:
                await ref.create(docs.new_document(item), timeout=self._timeout)
            except api_exceptions.AlreadyExists:
                there = await self.get(item.id)
                if there is not None:
                    return there
            else:
                return None
        raise RuntimeError(f"outbox item {item.id!r} keeps appearing and vanishing")

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
        taken: list[OutboxItem] = []
        for ref in candidates:
            if len(taken) == limit:
                break
            try:
                item = await self._take(ref, now, worker, policy)
            except ValueError as exc:
                if not isinstance(exc.__cause__, api_exceptions.Aborted):
                    raise
                continue  # contended until the retries ran out: another worker has it
            except Exception as exc:
                if not taken:
                    raise
                # what is claimed must reach the caller, or it waits for its lease to run out
                log.warning(
                    "outbox claim stopped after %d items: %s", len(taken), type(exc).__name__
                )
                break
            if item is not None:
                taken.append(item)
        return taken

    async def settle(self, claim: OutboxItem, after: OutboxItem) -> bool:
        if after.id != claim.id:
            raise ValueError("a claim settles its own item only")
        ref = self._outbox.document(claim.id)
        held = docs.held_by(claim)

        @firestore.async_transactional
        async def write(tx: Any) -> bool:
            snapshot = await ref.get(transaction=tx, timeout=self._timeout)
            if not snapshot.exists or docs.lease_of(snapshot.to_dict() or {}) != held:
                return False
            tx.update(ref, docs.update(claim, after))
            return True

        result: bool = await write(self._client.transaction())
        return result

    async def counts(self) -> list[tuple[str, str, int]]:
        tally: Counter[tuple[str, str]] = Counter()
        for status in outbox.STATUSES:
            query = self._outbox.where(filter=FieldFilter("status", "==", status))
            async for snapshot in query.select(["accountId"]).stream(timeout=self._timeout):
                account = (snapshot.to_dict() or {}).get("accountId")
                if isinstance(account, str):
                    tally[account, status] += 1
        return [(account, status, n) for (account, status), n in sorted(tally.items())]

    async def oldest_queued(self) -> dict[str, float]:
        oldest: dict[str, float] = {}
        query = self._outbox.where(filter=FieldFilter("status", "==", outbox.QUEUED))
        async for snapshot in query.select(["accountId", "createdAt"]).stream(
            timeout=self._timeout
        ):
            data = snapshot.to_dict() or {}
            account, created = data.get("accountId"), data.get("createdAt")
            if isinstance(account, str) and isinstance(created, datetime):
                at = docs.seconds(created)
                oldest[account] = min(at, oldest.get(account, at))
        return oldest

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
        self, ref: Any, now: float, worker: str, policy: SendPolicy
    ) -> OutboxItem | None:
        """Claim one document if it is still claimable: re-read, decide, write, atomically."""
        unreadable: list[UnreadableItem] = []

        @firestore.async_transactional
        async def take(tx: Any) -> OutboxItem | None:
            unreadable.clear()
            snapshot = await ref.get(transaction=tx, timeout=self._timeout)
            if not snapshot.exists:
                return None
            data = snapshot.to_dict() or {}
            try:
                item = docs.read(snapshot.id, data)
            except UnreadableItem as exc:
                if data.get("status") in (outbox.QUEUED, outbox.PROCESSING):
                    tx.update(ref, docs.unreadable(exc, now))
                    unreadable.append(exc)
                return None
            if outbox.already_sent(item):
                tx.update(ref, docs.update(item, docs.as_stored(outbox.sent_already(item, now))))
                return None
            if not outbox.claimable(item, now):
                return None
            after = docs.as_stored(outbox.claimed(item, now, worker, policy))
            tx.update(ref, docs.update(item, after))
            return after

        taken: OutboxItem | None = await take(self._client.transaction())
        for exc in unreadable:
            log.warning("outbox document %s marked failed: %s", exc.item_id, exc.field)
        return taken
