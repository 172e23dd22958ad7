"""The durable queue between the event handler and the message store.

A real message is committed here (SQLite, WAL) before the handler returns,
so a store that is slow or down, or a process that is killed, loses nothing.
Rows leave only after the store confirmed them. Thread updates are coalesced
per thread and written at most once per ``thread_interval_s``, which keeps a
busy chat under Firestore's sustained rate of one write per second per
document.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.adapters.sqlite_files import open_private
from sidecar.domain.records import (
    MessageDoc,
    ThreadPatch,
    decode_fields,
    encode_fields,
    merge_thread_fields,
)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS spool_messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        doc TEXT NOT NULL,
        merge INTEGER NOT NULL,
        enqueued_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS spool_messages_account ON spool_messages (account_id, seq)",
    """CREATE TABLE IF NOT EXISTS spool_threads (
        thread_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        patch TEXT NOT NULL,
        version INTEGER NOT NULL,
        pending INTEGER NOT NULL,
        enqueued_at REAL NOT NULL,
        last_written_at REAL
    )""",
)

MAX_BATCH_OPS = 500  # Firestore's limit for one batched write


class SpoolError(Exception):
    """The spool database cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class SpooledThread:
    patch: ThreadPatch
    version: int


@dataclass
class Batch:
    messages: list[tuple[int, MessageDoc]] = field(default_factory=list)
    threads: list[SpooledThread] = field(default_factory=list)
    #: Seconds until a thread update that had to wait becomes due (None: none waits).
    next_due_s: float | None = None

    def __len__(self) -> int:
        return len(self.messages) + len(self.threads)

    @property
    def accounts(self) -> set[str]:
        return {d.account_id for _, d in self.messages} | {t.patch.account_id for t in self.threads}


@dataclass(frozen=True, slots=True)
class Backlog:
    messages: int
    oldest_enqueued_at: float | None


class Spool:
    FILENAME = "spool.sqlite3"

    def __init__(
        self,
        state_dir: Path,
        *,
        thread_interval_s: float = 1.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path = state_dir / self.FILENAME
        self._thread_interval = thread_interval_s
        self._now = now
        self._lock = threading.Lock()
        try:
            self._db = open_private(self.path, SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc

    def enqueue(self, doc: MessageDoc, patch: ThreadPatch | None) -> None:
        """Commit one message (and its thread update) before returning."""
        now = self._now()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO spool_messages"
                    " (account_id, thread_id, message_id, doc, merge, enqueued_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        doc.account_id,
                        doc.thread_id,
                        doc.message_id,
                        encode_fields(doc.fields),
                        int(doc.merge),
                        now,
                    ),
                )
                if patch is not None:
                    self._merge_thread(patch, now)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise SpoolError(f"cannot write to the spool {self.path}: {exc}") from exc

    def _merge_thread(self, patch: ThreadPatch, now: float) -> None:
        row = self._db.execute(
            "SELECT patch, pending FROM spool_threads WHERE thread_id = ?", (patch.thread_id,)
        ).fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO spool_threads"
                " (thread_id, account_id, patch, version, pending, enqueued_at)"
                " VALUES (?, ?, ?, 1, 1, ?)",
                (patch.thread_id, patch.account_id, encode_fields(patch.fields), now),
            )
            return
        fields = (
            merge_thread_fields(decode_fields(row[0]), patch.fields) if row[1] else patch.fields
        )
        self._db.execute(
            "UPDATE spool_threads SET patch = ?, version = version + 1,"
            " enqueued_at = CASE WHEN pending THEN enqueued_at ELSE ? END, pending = 1"
            " WHERE thread_id = ?",
            (encode_fields(fields), now, patch.thread_id),
        )

    def take(self, limit: int = MAX_BATCH_OPS) -> Batch:
        """The oldest messages and the thread updates that are due, at most ``limit`` in all."""
        now = self._now()
        batch = Batch()
        with self._lock:
            due_before = now - self._thread_interval
            rows = self._db.execute(
                "SELECT thread_id, account_id, patch, version, last_written_at FROM spool_threads"
                " WHERE pending = 1 ORDER BY enqueued_at",
            ).fetchall()
            for thread_id, account_id, patch, version, last_written in rows:
                if last_written is not None and last_written > due_before:
                    wait = last_written - due_before
                    batch.next_due_s = (
                        wait if batch.next_due_s is None else min(batch.next_due_s, wait)
                    )
                    continue
                if len(batch.threads) >= limit // 2:
                    break
                batch.threads.append(
                    SpooledThread(ThreadPatch(account_id, thread_id, decode_fields(patch)), version)
                )
            for seq, account_id, thread_id, message_id, doc, merge in self._db.execute(
                "SELECT seq, account_id, thread_id, message_id, doc, merge FROM spool_messages"
                " ORDER BY seq LIMIT ?",
                (limit - len(batch.threads),),
            ):
                batch.messages.append(
                    (
                        seq,
                        MessageDoc(
                            account_id, thread_id, message_id, decode_fields(doc), bool(merge)
                        ),
                    )
                )
        return batch

    def ack(self, batch: Batch) -> None:
        """The store has confirmed ``batch``: forget its messages; mark its threads written
        unless a newer update arrived for them meanwhile."""
        now = self._now()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "DELETE FROM spool_messages WHERE seq = ?",
                    [(seq,) for seq, _ in batch.messages],
                )
                for thread in batch.threads:
                    self._db.execute(
                        "UPDATE spool_threads SET last_written_at = ?,"
                        " pending = CASE WHEN version = ? THEN 0 ELSE pending END"
                        " WHERE thread_id = ?",
                        (now, thread.version, thread.patch.thread_id),
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise SpoolError(f"cannot update the spool {self.path}: {exc}") from exc

    def is_empty(self) -> bool:
        """No message and no thread update waits to be written."""
        with self._lock:
            row = self._db.execute(
                "SELECT (SELECT COUNT(*) FROM spool_messages)"
                " + (SELECT COUNT(*) FROM spool_threads WHERE pending = 1)"
            ).fetchone()
        return bool(row[0] == 0)

    def backlog(self) -> dict[str, Backlog]:
        """Spooled messages per account, and when the oldest was committed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT account_id, COUNT(*), MIN(enqueued_at) FROM spool_messages"
                " GROUP BY account_id"
            ).fetchall()
        return {account: Backlog(count, oldest) for account, count, oldest in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
