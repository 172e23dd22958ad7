"""The spool: one lock around the journal, the SQLite queue and thread pacing.

It decides when journaled entries move into SQLite (the handler does it itself only
when the journal is long; the writer's ``take`` otherwise), and maps the failures of
the parts onto what its callers see: :class:`SpoolError`, a refused corrupt database,
the error its own writes are failing with now.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sidecar.adapters.spool.journal import Entry, Journal
from sidecar.adapters.spool.pacing import Pacing
from sidecar.adapters.spool.queue import HOLDS, Queue
from sidecar.adapters.sqlite_files import CorruptDatabaseError, is_corruption
from sidecar.core.failures import Failures
from sidecar.core.spooling import MAX_BATCH_OPS, Backlog, Batch, SpoolError
from sidecar.domain.facts import MessageFacts
from sidecar.domain.records import MessageDoc, ThreadPatch, message_doc

log = logging.getLogger(__package__)  # one logger for the whole spool

#: Journal entries that make the handler move them into SQLite itself; below this
#: the writer's next ``take`` moves them (it runs after every enqueue it is woken for),
#: off the event path. A handful of writer batches: it keeps up unless the store is slow.
FLUSH_EVERY = 4096
#: After a failed move into SQLite, the handler leaves the next tries to the writer this long.
FLUSH_RETRY_S = 1.0


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
        self.now = now  # the clock enqueue times and ages are read from
        self._lock = threading.Lock()
        self._pacing = Pacing(thread_interval_s)
        self._flush_retry_at = 0.0
        #: Messages per account dropped unstored: damaged spooled rows, or refused by the store.
        self.dropped: dict[str, int] = {}
        self.move_failures = Failures(
            log,
            f"spool: moving journaled messages into {self.FILENAME}",
            "; the journal keeps them",
        )
        self.journal_failures = Failures(log, f"spool: starting a new {self.JOURNAL}")
        self._queue = Queue(self.path)
        try:
            self._pacing.load(self._queue.load_threads())
            self._journal = Journal(self.journal_path, self.journal_failures)
            try:
                self._recover()
            except BaseException:
                self._journal.close()
                raise
        except sqlite3.Error as exc:
            self._queue.close()
            if is_corruption(exc):
                raise CorruptDatabaseError(self.path, str(exc), holds=HOLDS) from exc
            raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc
        except (OSError, ValueError) as exc:
            self._queue.close()
            raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc

    def enqueue(self, doc: MessageDoc, patch: ThreadPatch | None) -> None:
        """Make one message's documents durable before returning; raise
        :class:`SpoolError` when they cannot be (the message is then not stored)."""
        entry = Entry.of(doc, patch, self.now())
        self._append([entry], entry.encode())

    def enqueue_facts(self, facts: Sequence[MessageFacts]) -> None:
        """Make real messages durable, all in one write, before returning: the facts
        their documents are built from, which the writer builds. Raise
        :class:`SpoolError` when they cannot be (none of them is then stored)."""
        now = self.now()
        entries = [Entry.of_facts(f, now) for f in facts]
        self._append(entries, b"".join(entry.encode() for entry in entries))

    def _append(self, entries: list[Entry], lines: bytes) -> None:
        with self._lock:
            self._journal.append(entries, lines)
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

    def _recover(self) -> None:
        """Move what a previous process journaled but never flushed, then start the
        journal of the next generation. If the move fails (a full disk), the journal
        keeps its entries and the new ones are appended to it."""
        journal = self._journal
        if not journal.reopen(self._queue.flushed_generation()):
            return  # nothing to move: the next generation started
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
        merged = self._pacing.merge(
            (*update, entry.enqueued_at)
            for entry in entries
            if (update := entry.thread_update()) is not None
        )
        self._queue.move(entries, merged, generation)
        self._pacing.apply(merged)  # only once committed
        self._journal.moved()

    def take(self, limit: int = MAX_BATCH_OPS, *, after: Batch | None = None) -> Batch:
        """The oldest messages and the thread updates that are due, at most ``limit`` in all;
        past what ``after`` (a batch still being written) holds."""
        now = self.now()
        busy_threads = {t.patch.thread_id for t in after.threads} if after else set()
        after_seq = max((seq for seq, _ in after.messages), default=0) if after else 0
        with self._lock:
            if time.monotonic() >= self._flush_retry_at:
                self._try_flush()
            if not self._journal.ready and not self._journal.pending:
                self._journal.start_or_log()  # so the handler need not
            # thread updates take at most half of a batch
            threads, next_due_s = self._pacing.due(now, limit // 2, busy_threads)
            rows, dropped = self._queue.oldest(after_seq, limit - len(threads))
            for account in dropped:
                self.dropped[account] = self.dropped.get(account, 0) + 1
        # the documents are built here, on the writer's thread, and outside the lock
        messages = [
            (seq, row if isinstance(row, MessageDoc) else message_doc(row)) for seq, row in rows
        ]
        return Batch(messages, threads, next_due_s)

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
            written = self._pacing.written(batch.threads)
            self._queue.ack(
                [(seq, doc.account_id) for seq, doc in batch.messages],
                [(thread_id, pending) for thread_id, _, pending in written],
                now,
            )
            self._pacing.confirm(written, now)

    def is_empty(self) -> bool:
        """No message and no thread update waits to be written."""
        with self._lock:
            if self._journal.pending or self._pacing.any_pending():
                return False
            count = self._queue.count()
        return count == 0

    def backlog(self) -> dict[str, Backlog]:
        """Spooled messages per account, and when the oldest was committed."""
        with self._lock:
            backlog = self._queue.backlog()
            for entry in self._journal.pending:  # journaled, not yet moved into SQLite
                known = backlog.get(entry.account_id)
                backlog[entry.account_id] = Backlog(
                    (known.messages if known else 0) + 1,
                    entry.enqueued_at if known is None else known.oldest_enqueued_at,
                )
        return backlog

    def close(self) -> None:
        with self._lock:
            self._try_flush()  # what it cannot move, the journal keeps for the next start
            self._journal.close()
            self._queue.close()
