"""The outbox in the embedded store: an ``outbox`` table in ``messages.sqlite3``.

The same queue as Firestore's ``outbox`` collection (docs/sending.md, "The outbox"),
one row per item, a column per :class:`~sidecar.domain.outbox.OutboxItem` field
(times in Unix seconds) plus ``updated_at``, the wall-clock time of the last write.
The table is ``STRICT`` and checked, so a row is always an item. Each step is one
``BEGIN IMMEDIATE`` transaction on the outbox's own connection: two processes (or
two outboxes in one) never hold one item, and a step never sees half of another.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from sidecar.adapters import store_sqlite
from sidecar.adapters.store_sqlite import merged, open_message_file, plain
from sidecar.core.ports import OpenItems
from sidecar.domain import outbound, outbox
from sidecar.domain.outbox import OutboxItem, SendPolicy
from sidecar.domain.sending import advanced

T = TypeVar("T")

#: The item's fields, in column order; ``tests/test_outbox_store.py`` checks they are
#: all of :class:`OutboxItem`'s.
COLUMNS: dict[str, str] = {
    "id": "TEXT PRIMARY KEY",
    "account_id": "TEXT NOT NULL",
    "to_jid": "TEXT NOT NULL",
    "thread_id": "TEXT NOT NULL",
    "text": "TEXT NOT NULL",
    "client_message_id": "TEXT",
    "status": "TEXT NOT NULL CHECK (status IN ({}))".format(
        ", ".join(f"'{s}'" for s in outbox.STATUSES)
    ),
    "attempt_count": "INTEGER NOT NULL CHECK (attempt_count >= 0)",
    "next_attempt_at": "REAL NOT NULL",
    "lease_until": "REAL",
    "claimed_by": "TEXT",
    "provider_message_id": "TEXT",
    "last_error": "TEXT",
    "created_at": "REAL NOT NULL",
    "sent_at": "REAL",
    "failed_at": "REAL",
}
_NAMES = ", ".join(COLUMNS)
SCHEMA = (
    *store_sqlite.SCHEMA,  # the outbound message documents live beside the received ones
    "CREATE TABLE IF NOT EXISTS outbox ({}, updated_at REAL NOT NULL) STRICT".format(
        ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
    ),
    # the claim's two ways in: due queued items, and claims that ran out
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, account_id, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS outbox_leases ON outbox (status, lease_until)",
)
_INSERT = (
    f"INSERT INTO outbox ({_NAMES}, updated_at)"  # noqa: S608 (names are this module's)
    f" VALUES ({', '.join('?' * len(COLUMNS))}, ?) ON CONFLICT (id) DO NOTHING"
)
_UPDATE = (
    f"UPDATE outbox SET {', '.join(f'{name} = ?' for name in COLUMNS)}, updated_at = ?"  # noqa: S608
    " WHERE id = ?"
)
_SELECT = f"SELECT {_NAMES} FROM outbox"  # noqa: S608
_CANDIDATES = (
    f"{_SELECT} WHERE account_id IN (SELECT value FROM json_each(?))"  # noqa: S608
    " AND ((status = ? AND next_attempt_at <= ?) OR (status = ? AND lease_until <= ?))"
    " ORDER BY next_attempt_at, id"
)


def _row(item: OutboxItem) -> list[Any]:
    return [getattr(item, name) for name in COLUMNS]


def _move_message(
    db: sqlite3.Connection,
    thread_id: str,
    message_id: str,
    status: str,
    fields: dict[str, Any],
    whole: tuple[str, dict[str, Any]] | None,
) -> bool:
    """Give an outbound message document ``fields`` if ``status`` moves it forward;
    one that is not there is written ``whole`` (account, document) when given. Whether
    it was written."""
    row = db.execute(
        "SELECT doc FROM messages WHERE thread_id = ? AND message_id = ?",
        (thread_id, message_id),
    ).fetchone()
    now_ms = _now_ms()
    if row is not None:
        current = json.loads(row[0])
        if not advanced(current.get("status"), status):
            return False
        db.execute(
            "UPDATE messages SET doc = ? WHERE thread_id = ? AND message_id = ?",
            (
                json.dumps(merged(current, plain(fields, now_ms)), ensure_ascii=False),
                thread_id,
                message_id,
            ),
        )
        return True
    if whole is None:
        return False
    account_id, doc = whole
    db.execute(
        "INSERT INTO messages (thread_id, message_id, account_id, doc) VALUES (?, ?, ?, ?)",
        (thread_id, message_id, account_id, json.dumps(plain(doc, now_ms), ensure_ascii=False)),
    )
    return True


def _now_ms() -> int:
    return round(time.time() * 1000)


def _item(row: tuple[Any, ...]) -> OutboxItem:
    return OutboxItem(**dict(zip(COLUMNS, row, strict=True)))


class SqliteOutbox:
    backend = "sqlite"

    def __init__(self, state_dir: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path, self._db = open_message_file(state_dir, SCHEMA, busy_timeout_s=busy_timeout_s)
        self._lock = threading.Lock()

    async def add(self, item: OutboxItem) -> OutboxItem | None:
        return await asyncio.to_thread(self._step, self._add, item)

    async def get(self, item_id: str) -> OutboxItem | None:
        return await asyncio.to_thread(self._step, self._get, item_id)

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
        wanted = json.dumps(sorted(set(accounts)))

        def claim(db: sqlite3.Connection) -> list[OutboxItem]:
            rows = db.execute(_CANDIDATES, (wanted, outbox.QUEUED, now, outbox.PROCESSING, now))
            due: list[OutboxItem] = []
            sent: list[OutboxItem] = []
            for row in rows:
                item = _item(row)
                if outbox.already_sent(item):
                    sent.append(outbox.sent_already(item, now))
                elif outbox.claimable(item, now):
                    due.append(item)
                    if len(due) == limit:
                        break
            rows.close()
            taken = [outbox.claimed(item, now, worker, policy) for item in due]
            for item in sent + taken:
                self._put(db, item)
            return taken

        return await asyncio.to_thread(self._step, claim)

    async def settle(self, claim: OutboxItem, after: OutboxItem) -> bool:
        if after.id != claim.id:
            raise ValueError("a claim settles its own item only")

        def settle(db: sqlite3.Connection) -> bool:
            held = db.execute(
                "SELECT claimed_by, lease_until FROM outbox WHERE id = ?", (claim.id,)
            ).fetchone()
            if held is None or tuple(held) != (claim.claimed_by, claim.lease_until):
                return False
            self._put(db, after)
            if after.status in (outbox.SENT, outbox.FAILED):
                self._message(db, after, outbound.status_fields(after, after.status), after.status)
            return True

        return await asyncio.to_thread(self._step, settle)

    async def mark(self, thread_id: str, message_id: str, status: str, at: float) -> bool:
        fields = outbound.receipt_fields(status, at)
        return await asyncio.to_thread(
            self._step, _move_message, thread_id, message_id, status, fields, None
        )

    async def counts(
        self, accounts: Collection[str], statuses: Collection[str] = outbox.STATUSES
    ) -> list[tuple[str, str, int]]:
        wanted, among = json.dumps(sorted(set(accounts))), json.dumps(sorted(set(statuses)))

        def counts(db: sqlite3.Connection) -> list[tuple[str, str, int]]:
            rows = db.execute(
                "SELECT account_id, status, COUNT(*) FROM outbox"
                " WHERE account_id IN (SELECT value FROM json_each(?))"
                " AND status IN (SELECT value FROM json_each(?))"
                " GROUP BY account_id, status ORDER BY account_id, status",
                (wanted, among),
            )
            return [(str(a), str(s), int(n)) for a, s, n in rows]

        return await asyncio.to_thread(self._step, counts)

    async def open_items(self, accounts: Collection[str]) -> OpenItems:
        """One grouped query: counted in the file, nothing to save by reading items."""
        wanted = json.dumps(sorted(set(accounts)))

        def open_items(db: sqlite3.Connection) -> OpenItems:
            rows = db.execute(
                "SELECT account_id, status, COUNT(*), MIN(created_at) FROM outbox"
                " WHERE status IN (?, ?) AND account_id IN (SELECT value FROM json_each(?))"
                " GROUP BY account_id, status ORDER BY account_id, status",
                (*outbox.OPEN, wanted),
            )
            counts: list[tuple[str, str, int]] = []
            oldest: dict[str, float] = {}
            for account, status, n, first in rows:
                counts.append((str(account), str(status), int(n)))
                if status == outbox.QUEUED:
                    oldest[str(account)] = float(first)
            return OpenItems(counts, oldest)

        return await asyncio.to_thread(self._step, open_items)

    async def close(self) -> None:
        with self._lock:
            self._db.close()

    def _add(self, db: sqlite3.Connection, item: OutboxItem) -> OutboxItem | None:
        now = time.time()
        if item.created_at is None:
            item = replace(item, created_at=now)
        if db.execute(_INSERT, [*_row(item), now]).rowcount == 1:
            self._message(db, item, {}, outbox.QUEUED)
            db.execute(
                "INSERT INTO threads (thread_id, account_id, doc) VALUES (?, ?, ?)"
                " ON CONFLICT DO UPDATE SET doc = json_patch(threads.doc, excluded.doc)",
                (
                    item.thread_id,
                    item.account_id,
                    json.dumps(plain(outbound.thread_fields(item), _now_ms()), ensure_ascii=False),
                ),
            )
            return None
        return self._get(db, item.id)

    def _message(
        self, db: sqlite3.Connection, item: OutboxItem, fields: dict[str, Any], status: str
    ) -> None:
        """The item's message document: made whole when it is not there, else given
        ``fields`` if ``status`` moves it forward."""
        whole = (item.account_id, outbound.message_document(item, status))
        _move_message(db, item.thread_id, outbound.message_id(item), status, fields, whole)

    def _get(self, db: sqlite3.Connection, item_id: str) -> OutboxItem | None:
        row = db.execute(f"{_SELECT} WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else _item(row)

    def _put(self, db: sqlite3.Connection, item: OutboxItem) -> None:
        db.execute(_UPDATE, [*_row(item), time.time(), item.id])

    def _step(self, work: Callable[..., T], *args: Any) -> T:
        """``work(db, *args)`` in one ``BEGIN IMMEDIATE`` transaction: it holds the
        write lock from its first read, so what it read is what it writes over."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._db, *args)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back by itself
                    self._db.execute("ROLLBACK")
                raise
        return result
