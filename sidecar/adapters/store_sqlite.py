"""The embedded message store: Firestore's logical layout in one SQLite file.

``threads`` rows hold thread documents and ``messages`` rows their messages,
each a JSON document with the same field names as in Firestore; instants
are Unix milliseconds. It lets the main job run on a machine with no cloud
account, and the same tests run against both backends.

A file SQLite reports as corrupt when it opens is refused
(:class:`~sidecar.adapters.sqlite_files.CorruptDatabaseError`): it is the
message store itself. Damage found later fails the writes it touches, which
the writer retries and reports (``DatabaseError (SQLITE_CORRUPT)``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecar.adapters.spool import Batch
from sidecar.adapters.sqlite_files import CorruptDatabaseError, open_private
from sidecar.core.spooling import Conflict, Prepared
from sidecar.domain.authorship import CONFLICT_OUTCOMES, Stored, Write, author_of, resolve
from sidecar.domain.records import SERVER_TIME, MessageDoc, Timestamp

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS threads (
        thread_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        doc TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS messages (
        thread_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (thread_id, message_id)
    )""",
)


HOLDS = "the stored messages (the SQLite message store)"


FILENAME = "messages.sqlite3"


def open_message_file(
    state_dir: Path, schema: Sequence[str], *, busy_timeout_s: float
) -> tuple[Path, sqlite3.Connection]:
    """``state_dir/messages.sqlite3``, which the message store and the outbox share,
    each on a connection of its own; a file SQLite reports as corrupt is refused."""
    path = state_dir / FILENAME
    try:
        # no quick_check: it reads every page, and this file only grows
        return path, open_private(path, schema, busy_timeout_s=busy_timeout_s)
    except CorruptDatabaseError as exc:
        raise CorruptDatabaseError(exc.path, exc.detail, holds=HOLDS) from exc


class SqliteMessageStore:
    backend = "sqlite"
    FILENAME = FILENAME

    def __init__(self, state_dir: Path, *, busy_timeout_s: float = 2.0) -> None:
        self.path, self._db = open_message_file(state_dir, SCHEMA, busy_timeout_s=busy_timeout_s)
        self._lock = threading.Lock()

    def prepare(self, batch: Batch) -> Prepared:
        return Prepared(batch, batch)  # encoded inside the transaction: nothing to gain apart

    async def commit(self, prepared: Prepared) -> list[Conflict]:
        return await asyncio.to_thread(self._write, prepared.batch)

    def refuses(self, exc: BaseException) -> bool:
        """Too big for SQLite, or a value JSON cannot hold: the same every time."""
        return isinstance(exc, (sqlite3.DataError, TypeError, ValueError))

    def _write(self, batch: Batch) -> list[Conflict]:
        now_ms = round(time.time() * 1000)
        conflicts: list[Conflict] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for _, doc in batch.messages:
                    outcome = self._apply(doc, now_ms)
                    if outcome in CONFLICT_OUTCOMES:
                        conflicts.append(Conflict(doc.account_id, outcome))
                for thread in batch.threads:
                    patch = thread.patch
                    self._db.execute(
                        "INSERT INTO threads (thread_id, account_id, doc) VALUES (?, ?, ?)"
                        " ON CONFLICT DO UPDATE SET doc = json_patch(threads.doc, excluded.doc)",
                        (
                            patch.thread_id,
                            patch.account_id,
                            json.dumps(plain(patch.fields, now_ms), ensure_ascii=False),
                        ),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back by itself (SQLITE_FULL)
                    self._db.execute("ROLLBACK")
                raise
        return conflicts

    def _apply(self, doc: MessageDoc, now_ms: int) -> str:
        """One message operation, by the authorship rules, inside the open transaction."""
        current = self._read(doc.thread_id, doc.message_id)
        stored = None if current is None else _stored(current)
        resolution = resolve(doc, stored)
        write = resolution.write
        if write is not None:
            self._put(doc, write, current if write.message_id == doc.message_id else None, now_ms)
        return resolution.outcome

    def _read(self, thread_id: str, message_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT doc FROM messages WHERE thread_id = ? AND message_id = ?",
            (thread_id, message_id),
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def _put(
        self, doc: MessageDoc, write: Write, current: dict[str, Any] | None, now_ms: int
    ) -> None:
        fields = plain(write.fields, now_ms)
        if write.merge and current is not None:
            fields = merged(current, fields)
        self._db.execute(
            "INSERT INTO messages (thread_id, message_id, account_id, doc) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO UPDATE SET doc = excluded.doc",
            (
                doc.thread_id,
                write.message_id,
                doc.account_id,
                json.dumps(fields, ensure_ascii=False),
            ),
        )

    async def close(self) -> None:
        with self._lock:
            self._db.close()


def plain(value: Any, now_ms: int) -> Any:
    """A document's values as SQLite keeps them: instants in Unix milliseconds."""
    if isinstance(value, Timestamp):
        return value.ms
    if value is SERVER_TIME:
        return now_ms
    if isinstance(value, dict):
        return {k: plain(v, now_ms) for k, v in value.items()}
    return value


def _stored(current: dict[str, Any]) -> Stored:
    edited = current.get("editedAt")
    return Stored(author_of(current), edited if isinstance(edited, int) else None)


def merged(current: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """As a Firestore merge: the leaves named replace, the others stay."""
    out = dict(current)
    for key, value in fields.items():
        known = out.get(key)
        if isinstance(value, dict) and value and isinstance(known, dict):
            out[key] = merged(known, value)
        else:
            out[key] = value
    return out
