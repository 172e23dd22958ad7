"""The durable queue between the event handler and the message store.

A real message is made durable here before the handler returns, so a store
that is slow or down, or a process that is killed, loses nothing. The
handler only appends one line to a journal file (one ``write`` call: what is
written survives a killed process, as a WAL commit with
``synchronous=NORMAL`` does); batches of journal entries then move into
SQLite (WAL) in one transaction each, off the handler's critical path, and
the journal starts over. A restart moves whatever the journal still holds
before anything else. Rows leave SQLite only after the store confirmed them.
Thread updates are coalesced per thread and written at most once per
``thread_interval_s``, which keeps a busy chat under Firestore's sustained
rate of one write per second per document.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sidecar.adapters.sqlite_files import open_private
from sidecar.domain.records import (
    MessageDoc,
    ThreadPatch,
    decode_fields,
    encode_fields,
    merge_thread_fields,
)

log = logging.getLogger(__name__)

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
    # The newest journal generation whose entries are all in the tables above.
    """CREATE TABLE IF NOT EXISTS spool_journal (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        flushed_generation INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO spool_journal (id, flushed_generation) VALUES (1, 0)",
)

MAX_BATCH_OPS = 500  # Firestore's limit for one batched write
#: Journal entries that make the handler move them into SQLite itself; below this
#: the writer's next ``take`` moves them (it runs after every enqueue it is woken for).
FLUSH_EVERY = 512


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


@dataclass(frozen=True, slots=True)
class _Entry:
    """One enqueued message (and its thread update) as the journal holds it."""

    doc: MessageDoc
    patch: ThreadPatch | None
    enqueued_at: float
    doc_json: str  # encoded once: the journal line and the SQLite row share it

    @classmethod
    def of(cls, doc: MessageDoc, patch: ThreadPatch | None, enqueued_at: float) -> _Entry:
        return cls(doc, patch, enqueued_at, encode_fields(doc.fields))

    def encode(self) -> bytes:
        doc, patch = self.doc, self.patch
        patch_json = None if patch is None else encode_fields(patch.fields)
        return orjson.dumps(
            [
                doc.account_id,
                doc.thread_id,
                doc.message_id,
                doc.merge,
                self.enqueued_at,
                self.doc_json,
                None if patch is None else patch.thread_id,
                patch_json,
            ],
            option=orjson.OPT_APPEND_NEWLINE,
        )

    @classmethod
    def decode(cls, line: bytes) -> _Entry:
        account, thread, message, merge, at, doc_json, patch_thread, patch_json = json.loads(line)
        doc = MessageDoc(account, thread, message, decode_fields(doc_json), bool(merge))
        patch = (
            None
            if patch_json is None
            else ThreadPatch(account, patch_thread, decode_fields(patch_json))
        )
        return cls(doc, patch, float(at), doc_json)


@dataclass(slots=True)
class _Thread:
    """A row of ``spool_threads``, mirrored in memory so that merging an update costs
    no read and no decode. Rows no longer pending leave once their pacing is over."""

    account_id: str
    fields: dict[str, Any]
    version: int
    pending: bool
    enqueued_at: float
    last_written_at: float | None

    def row(self, thread_id: str) -> tuple[object, ...]:
        return (
            thread_id,
            self.account_id,
            encode_fields(self.fields),
            self.version,
            int(self.pending),
            self.enqueued_at,
            self.last_written_at,
        )


class Spool:
    FILENAME = "spool.sqlite3"
    JOURNAL = "spool.journal"

    def __init__(
        self,
        state_dir: Path,
        *,
        thread_interval_s: float = 1.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path = state_dir / self.FILENAME
        self.journal_path = state_dir / self.JOURNAL
        self._thread_interval = thread_interval_s
        self.now = now  # the clock enqueue times and ages are read from
        self._lock = threading.Lock()
        self._pending: list[_Entry] = []
        self._threads: dict[str, _Thread] = {}
        try:
            self._db = open_private(self.path, SCHEMA)
            self._load_threads()
            self._journal = os.open(self.journal_path, os.O_CREAT | os.O_RDWR | os.O_APPEND, 0o600)
            self._generation = self._recover()
        except (OSError, sqlite3.Error, ValueError) as exc:
            raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc

    def enqueue(self, doc: MessageDoc, patch: ThreadPatch | None) -> None:
        """Make one message (and its thread update) durable before returning."""
        entry = _Entry.of(doc, patch, self.now())
        line = entry.encode()
        with self._lock:
            try:
                written = os.write(self._journal, line)
            except OSError as exc:
                raise SpoolError(f"cannot write to the spool {self.journal_path}: {exc}") from exc
            if written != len(line):  # out of space half-way: take the torn line back
                os.ftruncate(self._journal, os.lseek(self._journal, 0, os.SEEK_END) - written)
                raise SpoolError(f"cannot write to the spool {self.journal_path}: disk full")
            self._pending.append(entry)
            if len(self._pending) >= FLUSH_EVERY:
                self._try_flush()

    def flush(self) -> None:
        """Move journaled messages into SQLite now (the writer's ``take`` also does)."""
        with self._lock:
            self._try_flush()

    def _load_threads(self) -> None:
        for (
            thread_id,
            account_id,
            patch,
            version,
            pending,
            enqueued_at,
            written,
        ) in self._db.execute(
            "SELECT thread_id, account_id, patch, version, pending, enqueued_at, last_written_at"
            " FROM spool_threads WHERE pending = 1 OR last_written_at > ?",
            (self.now() - self._thread_interval,),
        ):
            self._threads[thread_id] = _Thread(
                account_id, decode_fields(patch), version, bool(pending), enqueued_at, written
            )

    def _recover(self) -> int:
        """Move what a previous process journaled but never flushed; return the generation
        the new journal starts."""
        (flushed,) = self._db.execute("SELECT flushed_generation FROM spool_journal").fetchone()
        data = os.pread(self._journal, os.fstat(self._journal).st_size, 0)
        header, _, body = data.partition(b"\n")
        generation = int(json.loads(header)["generation"]) if header else flushed
        if generation > flushed and body:
            entries, torn = [], 0
            for line in body.splitlines():
                try:
                    entries.append(_Entry.decode(line))
                except (ValueError, KeyError, TypeError, IndexError):
                    torn += 1
            if torn:
                log.warning("spool: %d unreadable journal entries skipped", torn)
            self._pending = entries
            self._flush(generation)
            log.info("spool: %d journaled messages recovered", len(entries))
        return self._start_journal(max(generation, flushed) + 1)

    def _start_journal(self, generation: int) -> int:
        os.ftruncate(self._journal, 0)
        os.write(self._journal, json.dumps({"generation": generation}).encode() + b"\n")
        return generation

    def _try_flush(self) -> None:
        """Flush now if SQLite lets us; the journal keeps the entries if it does not.
        The caller holds the lock."""
        if not self._pending:
            return
        try:
            self._flush(self._generation)
        except sqlite3.Error as exc:
            log.warning("spool: moving journaled messages into %s failed: %s", self.path, exc)
            return
        self._generation = self._start_journal(self._generation + 1)

    def _flush(self, generation: int) -> None:
        """Move the pending entries into SQLite in one transaction (caller holds the lock)."""
        entries = self._pending
        if not entries:
            return
        merged: dict[str, _Thread] = {}  # applied to the mirror only once committed
        for entry in entries:
            patch = entry.patch
            if patch is None:
                continue
            known = merged.get(patch.thread_id) or self._threads.get(patch.thread_id)
            if known is None:
                merged[patch.thread_id] = _Thread(
                    patch.account_id, patch.fields, 1, True, entry.enqueued_at, None
                )
                continue
            merged[patch.thread_id] = _Thread(
                known.account_id,
                merge_thread_fields(known.fields, patch.fields) if known.pending else patch.fields,
                known.version + 1,
                True,
                known.enqueued_at if known.pending else entry.enqueued_at,
                known.last_written_at,
            )
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO spool_messages"
                " (account_id, thread_id, message_id, doc, merge, enqueued_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [_message_row(e) for e in entries],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO spool_threads (thread_id, account_id, patch, version,"
                " pending, enqueued_at, last_written_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [thread.row(thread_id) for thread_id, thread in merged.items()],
            )
            self._db.execute("UPDATE spool_journal SET flushed_generation = ?", (generation,))
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._threads.update(merged)
        self._pending = []

    def take(self, limit: int = MAX_BATCH_OPS, *, after: Batch | None = None) -> Batch:
        """The oldest messages and the thread updates that are due, at most ``limit`` in all;
        past what ``after`` (a batch still being written) holds."""
        now = self.now()
        batch = Batch()
        busy_threads = {t.patch.thread_id for t in after.threads} if after else set()
        after_seq = max((seq for seq, _ in after.messages), default=0) if after else 0
        with self._lock:
            self._try_flush()
            due_before = now - self._thread_interval
            waiting = sorted(
                (
                    (t.enqueued_at, thread_id, t)
                    for thread_id, t in self._threads.items()
                    if t.pending
                ),
                key=lambda item: item[0],
            )
            for _, thread_id, thread in waiting:
                if thread_id in busy_threads:
                    continue
                last_written = thread.last_written_at
                if last_written is not None and last_written > due_before:
                    wait = last_written - due_before
                    batch.next_due_s = (
                        wait if batch.next_due_s is None else min(batch.next_due_s, wait)
                    )
                    continue
                if len(batch.threads) >= limit // 2:
                    break
                batch.threads.append(
                    SpooledThread(
                        ThreadPatch(thread.account_id, thread_id, thread.fields), thread.version
                    )
                )
            for seq, account_id, thread_id, message_id, doc, merge in self._db.execute(
                "SELECT seq, account_id, thread_id, message_id, doc, merge FROM spool_messages"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit - len(batch.threads)),
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
        now = self.now()
        with self._lock:
            written = []
            for spooled in batch.threads:
                thread = self._threads.get(spooled.patch.thread_id)
                if thread is not None:
                    still_pending = thread.pending and thread.version != spooled.version
                    written.append((spooled.patch.thread_id, thread, still_pending))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "DELETE FROM spool_messages WHERE seq = ?",
                    [(seq,) for seq, _ in batch.messages],
                )
                self._db.executemany(
                    "UPDATE spool_threads SET last_written_at = ?, pending = ? WHERE thread_id = ?",
                    [(now, int(pending), thread_id) for thread_id, _, pending in written],
                )
                # rows whose pacing is over matter no more
                self._db.execute(
                    "DELETE FROM spool_threads WHERE pending = 0 AND last_written_at <= ?",
                    (now - self._thread_interval,),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise SpoolError(f"cannot update the spool {self.path}: {exc}") from exc
            for _, thread, pending in written:
                thread.last_written_at, thread.pending = now, pending
            done_before = now - self._thread_interval
            for thread_id in [
                thread_id
                for thread_id, thread in self._threads.items()
                if not thread.pending
                and thread.last_written_at is not None
                and thread.last_written_at <= done_before
            ]:
                del self._threads[thread_id]

    def is_empty(self) -> bool:
        """No message and no thread update waits to be written."""
        with self._lock:
            if self._pending or any(thread.pending for thread in self._threads.values()):
                return False
            row = self._db.execute("SELECT COUNT(*) FROM spool_messages").fetchone()
        return bool(row[0] == 0)

    def backlog(self) -> dict[str, Backlog]:
        """Spooled messages per account, and when the oldest was committed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT account_id, COUNT(*), MIN(enqueued_at) FROM spool_messages"
                " GROUP BY account_id"
            ).fetchall()
            backlog = {account: Backlog(count, oldest) for account, count, oldest in rows}
            for entry in self._pending:  # journaled, not yet moved into SQLite
                known = backlog.get(entry.doc.account_id)
                backlog[entry.doc.account_id] = Backlog(
                    (known.messages if known else 0) + 1,
                    entry.enqueued_at if known is None else known.oldest_enqueued_at,
                )
        return backlog

    def close(self) -> None:
        with self._lock:
            self._try_flush()
            os.close(self._journal)
            self._db.close()


def _message_row(entry: _Entry) -> Sequence[object]:
    doc = entry.doc
    return (
        doc.account_id,
        doc.thread_id,
        doc.message_id,
        entry.doc_json,
        int(doc.merge),
        entry.enqueued_at,
    )
