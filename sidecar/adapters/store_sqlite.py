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
import threading
import time
from pathlib import Path
from typing import Any

from sidecar.adapters.spool import Batch
from sidecar.adapters.sqlite_files import CorruptDatabaseError, open_private
from sidecar.domain.records import SERVER_TIME, Timestamp

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


class SqliteMessageStore:
    backend = "sqlite"
    FILENAME = "messages.sqlite3"

    def __init__(self, state_dir: Path, *, busy_timeout_s: float = 2.0) -> None:
        self.path = state_dir / self.FILENAME
        try:
            # no quick_check: it reads every page, and this file only grows
            self._db = open_private(self.path, SCHEMA, busy_timeout_s=busy_timeout_s)
        except CorruptDatabaseError as exc:
            raise CorruptDatabaseError(exc.path, exc.detail, holds=HOLDS) from exc
        self._lock = threading.Lock()

    def prepare(self, batch: Batch) -> Batch:
        return batch  # encoded inside the transaction: nothing to gain apart

    async def commit(self, batch: Batch) -> None:
        await asyncio.to_thread(self._write, batch)

    def _write(self, batch: Batch) -> None:
        now_ms = round(time.time() * 1000)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for _, doc in batch.messages:
                    fields = json.dumps(_plain(doc.fields, now_ms), ensure_ascii=False)
                    if doc.merge:
                        self._db.execute(
                            "INSERT INTO messages (thread_id, message_id, account_id, doc)"
                            " VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE"
                            " SET doc = json_patch(messages.doc, excluded.doc)",
                            (doc.thread_id, doc.message_id, doc.account_id, fields),
                        )
                    else:
                        # A rewrite (retry, replay) keeps the first createdAt, as a create would.
                        self._db.execute(
                            "INSERT INTO messages (thread_id, message_id, account_id, doc)"
                            " VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET doc = json_set("
                            "excluded.doc, '$.createdAt', json_extract(messages.doc, ?))",
                            (doc.thread_id, doc.message_id, doc.account_id, fields, "$.createdAt"),
                        )
                for thread in batch.threads:
                    patch = thread.patch
                    self._db.execute(
                        "INSERT INTO threads (thread_id, account_id, doc) VALUES (?, ?, ?)"
                        " ON CONFLICT DO UPDATE SET doc = json_patch(threads.doc, excluded.doc)",
                        (
                            patch.thread_id,
                            patch.account_id,
                            json.dumps(_plain(patch.fields, now_ms), ensure_ascii=False),
                        ),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back by itself (SQLITE_FULL)
                    self._db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        with self._lock:
            self._db.close()


def _plain(value: Any, now_ms: int) -> Any:
    if isinstance(value, Timestamp):
        return value.ms
    if value is SERVER_TIME:
        return now_ms
    if isinstance(value, dict):
        return {k: _plain(v, now_ms) for k, v in value.items()}
    return value
