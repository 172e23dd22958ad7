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

When the disk is full, a message the journal cannot take is refused with
:class:`SpoolError` (the caller counts and logs it: it is not stored); a move
into SQLite that fails leaves the entries in the journal and is tried again.
A spool database that is corrupt is refused at start
(:class:`~sidecar.adapters.sqlite_files.CorruptDatabaseError`): it may hold
messages that are in no other place, so an operator decides (docs/runbook.md).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.adapters.failures import Failures
from sidecar.adapters.spool.batch import (
    MAX_BATCH_OPS,
    Backlog,
    Batch,
    SpooledThread,
    SpoolError,
)
from sidecar.adapters.spool.journal import Entry, Journal
from sidecar.adapters.sqlite_files import (
    CorruptDatabaseError,
    error_kind,
    is_corruption,
    open_private,
)
from sidecar.domain.records import (
    MessageDoc,
    ThreadPatch,
    decode_fields,
    encode_fields,
    merge_thread_fields,
)

log = logging.getLogger(__name__)

__all__ = [
    "FLUSH_EVERY",
    "FLUSH_RETRY_S",
    "HOLDS",
    "MAX_BATCH_OPS",
    "SCHEMA",
    "Backlog",
    "Batch",
    "Spool",
    "SpoolError",
    "SpooledThread",
]

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

#: Journal entries that make the handler move them into SQLite itself; below this
#: the writer's next ``take`` moves them (it runs after every enqueue it is woken for).
FLUSH_EVERY = 512
#: After a failed move into SQLite, the handler leaves the next tries to the writer this long.
FLUSH_RETRY_S = 1.0
#: What the spool database holds, for the error that refuses a corrupt one.
HOLDS = "real messages not yet written to the store"


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
        self._threads: dict[str, _Thread] = {}
        self._flush_retry_at = 0.0
        #: Messages per account dropped unstored: damaged spooled rows, or refused by the store.
        self.dropped: dict[str, int] = {}
        self.move_failures = Failures(
            log,
            f"spool: moving journaled messages into {self.FILENAME}",
            "; the journal keeps them",
        )
        self.journal_failures = Failures(log, f"spool: starting a new {self.JOURNAL}")
        try:
            self._db = open_private(self.path, SCHEMA, check=True)
        except CorruptDatabaseError as exc:
            raise CorruptDatabaseError(exc.path, exc.detail, holds=HOLDS) from exc
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc
        try:
            self._load_threads()
            self._journal = Journal(self.journal_path, self.journal_failures)
            try:
                self._recover()
            except BaseException:
                self._journal.close()
                raise
        except sqlite3.Error as exc:
            self._db.close()
            if is_corruption(exc):
                raise CorruptDatabaseError(self.path, str(exc), holds=HOLDS) from exc
            raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc
        except (OSError, ValueError) as exc:
            self._db.close()
            raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc

    def enqueue(self, doc: MessageDoc, patch: ThreadPatch | None) -> None:
        """Make one message (and its thread update) durable before returning; raise
        :class:`SpoolError` when it cannot be (the message is then not stored)."""
        entry = Entry.of(doc, patch, self.now())
        line = entry.encode()
        with self._lock:
            self._journal.append(entry, line)
            if (
                len(self._journal.pending) >= FLUSH_EVERY
                and time.monotonic() >= self._flush_retry_at
            ):
                self._try_flush()

    def error(self) -> tuple[str, float] | None:
        """The kind of error the spool's own writes are failing with now, and since when
        it was last seen (None: they work)."""
        failing = [f.last for f in (self.move_failures, self.journal_failures) if f.last]
        return max(failing, key=lambda kind_at: kind_at[1]) if failing else None

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
            fields = _decoded(account_id, thread_id, thread_id, patch)
            numbers_ok = isinstance(version, int) and all(
                isinstance(v, int | float) for v in (enqueued_at, written or 0.0)
            )
            if fields is None or not numbers_ok:
                # a damaged row (salvaged): the thread's next message mends the thread
                log.warning("spool: a damaged thread update in %s was skipped", self.FILENAME)
                continue
            self._threads[thread_id] = _Thread(
                account_id, fields, version, bool(pending), enqueued_at, written
            )

    def _recover(self) -> None:
        """Move what a previous process journaled but never flushed, then start the
        journal of the next generation. If the move fails (a full disk), the journal
        keeps its entries and the new ones are appended to it."""
        (flushed,) = self._db.execute("SELECT flushed_generation FROM spool_journal").fetchone()
        journal = self._journal
        if not journal.reopen(flushed):
            return
        recovered = len(journal.pending)
        try:
            self._flush(journal.generation)
        except sqlite3.Error as exc:
            if is_corruption(exc):
                raise
            self.move_failures.failed(exc)
            self._flush_retry_at = time.monotonic() + FLUSH_RETRY_S
            return
        log.info("spool: %d journaled messages recovered", recovered)
        journal.next_generation()

    def _try_flush(self) -> None:
        """Flush now if SQLite lets us; the journal keeps the entries if it does not.
        The caller holds the lock."""
        if not self._journal.pending:
            return
        try:
            self._flush(self._journal.generation)
        except sqlite3.Error as exc:
            self.move_failures.failed(exc)
            self._flush_retry_at = time.monotonic() + FLUSH_RETRY_S
            return
        self.move_failures.succeeded()
        self._journal.next_generation()

    def _flush(self, generation: int) -> None:
        """Move the pending entries into SQLite in one transaction (caller holds the lock)."""
        entries = self._journal.pending
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
        self._journal.moved()

    def take(self, limit: int = MAX_BATCH_OPS, *, after: Batch | None = None) -> Batch:
        """The oldest messages and the thread updates that are due, at most ``limit`` in all;
        past what ``after`` (a batch still being written) holds."""
        now = self.now()
        batch = Batch()
        busy_threads = {t.patch.thread_id for t in after.threads} if after else set()
        after_seq = max((seq for seq, _ in after.messages), default=0) if after else 0
        with self._lock:
            if time.monotonic() >= self._flush_retry_at:
                self._try_flush()
            if not self._journal.ready and not self._journal.pending:
                self._journal.start_or_log()  # so the handler need not
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
            try:
                rows = self._db.execute(
                    "SELECT seq, account_id, thread_id, message_id, doc, merge"
                    " FROM spool_messages WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit - len(batch.threads)),
                ).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
            damaged = []
            for seq, account_id, thread_id, message_id, doc, merge in rows:
                fields = _decoded(account_id, thread_id, message_id, doc)
                if fields is None:
                    damaged.append((seq, account_id))
                    continue
                batch.messages.append(
                    (seq, MessageDoc(account_id, thread_id, message_id, fields, bool(merge)))
                )
            if damaged:
                self._drop_damaged(damaged)
        return batch

    def _drop_damaged(self, damaged: list[tuple[int, object]]) -> None:
        """Rows that cannot be read back (a damaged page, salvaged): no store could take
        them, and they must not hold up the others. The caller holds the lock."""
        try:
            self._db.executemany(
                "DELETE FROM spool_messages WHERE seq = ?", [(s,) for s, _ in damaged]
            )
        except sqlite3.Error as exc:  # they are skipped again at the next take
            log.warning("spool: dropping damaged rows failed: %s", error_kind(exc))
            return
        for _, account_id in damaged:
            account = account_id if isinstance(account_id, str) else ""
            self.dropped[account] = self.dropped.get(account, 0) + 1
        log.error(
            "spool: %d damaged rows of %s could not be read and were dropped: those messages"
            " are not stored (whatsapp_spool_write_errors_total)",
            len(damaged),
            self.FILENAME,
        )

    def discard(self, batch: Batch, error: str) -> None:
        """Operations the store can never take (it refuses to encode them): out of the
        spool, so they do not hold up the others; their messages count as not stored."""
        self.ack(batch)
        with self._lock:
            for _, doc in batch.messages:
                self.dropped[doc.account_id] = self.dropped.get(doc.account_id, 0) + 1
        log.error(
            "spool: the store cannot take %d messages and %d thread updates (%s): they were"
            " set aside and are not stored (whatsapp_spool_write_errors_total)",
            len(batch.messages),
            len(batch.threads),
            error,
        )

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
            try:
                self._db.execute("BEGIN IMMEDIATE")
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
                if self._db.in_transaction:  # SQLite may have rolled back by itself
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
            if self._journal.pending or any(thread.pending for thread in self._threads.values()):
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
            for entry in self._journal.pending:  # journaled, not yet moved into SQLite
                known = backlog.get(entry.doc.account_id)
                backlog[entry.doc.account_id] = Backlog(
                    (known.messages if known else 0) + 1,
                    entry.enqueued_at if known is None else known.oldest_enqueued_at,
                )
        return backlog

    def close(self) -> None:
        with self._lock:
            self._try_flush()  # what it cannot move, the journal keeps for the next start
            self._journal.close()
            self._db.close()


def _decoded(account_id: object, thread_id: object, message_id: object, doc: object) -> Any:
    """A spooled message's fields, or None when its row is damaged."""
    if not all(isinstance(v, str) and v for v in (account_id, thread_id, message_id, doc)):
        return None
    try:
        fields = decode_fields(doc)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return fields if isinstance(fields, dict) else None


def _message_row(entry: Entry) -> Sequence[object]:
    doc = entry.doc
    return (
        doc.account_id,
        doc.thread_id,
        doc.message_id,
        entry.doc_json,
        int(doc.merge),
        entry.enqueued_at,
    )
