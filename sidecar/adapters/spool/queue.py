"""The SQLite queue (WAL, ``synchronous=NORMAL``): where journaled messages wait until
the store confirmed them.

Entries move in from the journal in batches, one transaction each, together with the
thread rows pacing computed and the journal generation they complete. The writer takes
the oldest rows and acks them; rows that cannot be read back are dropped, so that they
hold up nothing.

What the store confirmed leaves at once: its messages, and the rows of its thread updates
(the last text and the chat's JID) unless a newer update waits; pacing keeps only when
each thread was written, in memory. Deleted content is overwritten (``secure_delete``),
and once the spool is empty the WAL is checkpointed and truncated, so no copy stays in
free pages or in the WAL.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from sidecar.adapters.spool.codec import decode_facts, decode_fields, decode_thread
from sidecar.adapters.spool.journal import Entry
from sidecar.adapters.spool.pacing import Thread
from sidecar.adapters.sqlite_files import CorruptDatabaseError, open_private
from sidecar.core.failures import error_kind
from sidecar.core.spooling import Backlog, SpoolError
from sidecar.domain.facts import MessageFacts
from sidecar.domain.records import MessageDoc

log = logging.getLogger(__package__)  # one logger for the whole spool

_T = TypeVar("_T")

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

#: How long a statement waits for a lock another connection holds (open_private's default).
BUSY_TIMEOUT_MS = 5000

#: What the spool database holds, for the error that refuses a corrupt one.
HOLDS = "real messages not yet written to the store"


class Queue:
    """The spool database. Not thread-safe: the spool holds its lock around every call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = open_private(path, SCHEMA, check=True, busy_timeout_s=BUSY_TIMEOUT_MS / 1000)
        except CorruptDatabaseError as exc:
            raise CorruptDatabaseError(exc.path, exc.detail, holds=HOLDS) from exc
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the spool {path}: {exc}") from exc
        # content deleted is overwritten, not left in free pages (nor in the WAL's copies)
        self.db.execute("PRAGMA secure_delete = ON")
        # a WAL that was reset is truncated: it keeps no copies of deleted rows
        self.db.execute("PRAGMA journal_size_limit = 0")
        # Messages per account, kept as rows come and go: the backlog is read at every
        # scrape and health request, and counting the rows took tens of ms (under the
        # spool's lock) with a large backlog. Counted once here.
        self._counts: dict[str, int] = {}
        for account, count in self.db.execute(
            "SELECT account_id, COUNT(*) FROM spool_messages GROUP BY account_id"
        ):
            key = account if isinstance(account, str) else ""  # a damaged row's
            self._counts[key] = self._counts.get(key, 0) + count
        #: When each account's oldest row was enqueued, where known (found again lazily).
        self._oldest: dict[str, float] = {}

    def load_threads(self) -> list[tuple[str, Thread]]:
        """The thread rows still pending. Rows of updates already written (an earlier
        version kept them for a while) are deleted."""
        self.db.execute("DELETE FROM spool_threads WHERE pending = 0")
        threads = []
        for (
            thread_id,
            account_id,
            patch,
            version,
            pending,
            enqueued_at,
            written,
        ) in self.db.execute(
            "SELECT thread_id, account_id, patch, version, pending, enqueued_at, last_written_at"
            " FROM spool_threads WHERE pending = 1"
        ):
            update = _thread_update(account_id, thread_id, patch)
            numbers_ok = isinstance(version, int) and all(
                isinstance(v, int | float) for v in (enqueued_at, written or 0.0)
            )
            if update is None or not numbers_ok:
                # a damaged row (salvaged): the thread's next message mends the thread
                log.warning("spool: a damaged thread update in %s was skipped", self.path.name)
                continue
            fields, unfolded = update
            threads.append(
                (
                    thread_id,
                    Thread(
                        account_id, fields, version, bool(pending), enqueued_at, written, unfolded
                    ),
                )
            )
        return threads

    def flushed_generation(self) -> int:
        """The newest journal generation whose entries are all in here."""
        row = self.db.execute("SELECT flushed_generation FROM spool_journal").fetchone()
        flushed: int = row[0]
        return flushed

    def move(self, entries: list[Entry], threads: dict[str, Thread], generation: int) -> None:
        """Insert journal entries, and the thread rows they make, in one transaction that
        also records ``generation`` as wholly moved. Raises :class:`sqlite3.Error`."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            _insert(
                self.db,
                "INSERT INTO spool_messages"
                " (account_id, thread_id, message_id, doc, merge, enqueued_at)",
                [entry.row() for entry in entries],
            )
            _insert(
                self.db,
                "INSERT OR REPLACE INTO spool_threads (thread_id, account_id, patch, version,"
                " pending, enqueued_at, last_written_at)",
                [thread.row(thread_id) for thread_id, thread in threads.items()],
            )
            self.db.execute("UPDATE spool_journal SET flushed_generation = ?", (generation,))
            self.db.execute("COMMIT")
        except sqlite3.Error:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        for entry in entries:
            account = entry.account_id
            if not self._counts.get(account):
                self._oldest[account] = entry.enqueued_at
            self._counts[account] = self._counts.get(account, 0) + 1

    def oldest(
        self, after_seq: int, limit: int
    ) -> tuple[list[tuple[int, MessageDoc | MessageFacts]], list[str]]:
        """Up to ``limit`` messages past ``after_seq``, oldest first: their facts (the
        caller builds their documents, outside the spool's lock), or their documents as
        an earlier version spooled them; and the accounts of damaged rows that were
        dropped on the way."""
        try:
            rows = self.db.execute(
                "SELECT seq, account_id, thread_id, message_id, doc, merge"
                " FROM spool_messages WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
        messages: list[tuple[int, MessageDoc | MessageFacts]] = []
        damaged = []
        for seq, account_id, thread_id, message_id, doc, merge in rows:
            if isinstance(doc, str) and doc.startswith("["):
                facts = _facts(account_id, doc)
                if facts is None:
                    damaged.append((seq, account_id))
                else:
                    messages.append((seq, facts))
                continue
            fields = _decoded(account_id, thread_id, message_id, doc)
            if fields is None:
                damaged.append((seq, account_id))
                continue
            messages.append(
                (seq, MessageDoc(account_id, thread_id, message_id, fields, bool(merge)))
            )
        return messages, self._drop_damaged(damaged) if damaged else []

    def _drop_damaged(self, damaged: list[tuple[int, object]]) -> list[str]:
        """Rows that cannot be read back (a damaged page, salvaged): no store could take
        them, and they must not hold up the others. Returns their accounts."""
        try:
            self._delete_messages(damaged)
        except sqlite3.Error as exc:  # they are skipped again at the next take
            log.warning("spool: dropping damaged rows failed: %s", error_kind(exc))
            return []
        log.error(
            "spool: %d damaged rows of %s could not be read and were dropped: those messages"
            " are not stored (whatsapp_spool_write_errors_total)",
            len(damaged),
            self.path.name,
        )
        return [account if isinstance(account, str) else "" for _, account in damaged]

    def ack(
        self, messages: list[tuple[int, str]], threads: list[tuple[str, bool]], now: float
    ) -> None:
        """Forget ``messages`` (seq and account); forget the rows of ``threads``, written at
        ``now``, except those a newer update is pending for (marked written at ``now``).
        Once the spool is empty, checkpoint and truncate the WAL."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            deleted = self._delete_messages(messages, commit=False)
            self.db.executemany(
                "UPDATE spool_threads SET last_written_at = ? WHERE thread_id = ?",
                [(now, thread_id) for thread_id, pending in threads if pending],
            )
            # written: what the row held (the last text, the chat's JID) is needed no more
            self.db.executemany(
                "DELETE FROM spool_threads WHERE thread_id = ?",
                [(thread_id,) for thread_id, pending in threads if not pending],
            )
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.db.in_transaction:  # SQLite may have rolled back by itself
                self.db.execute("ROLLBACK")
            raise SpoolError(f"cannot update the spool {self.path}: {exc}") from exc
        self._forget(deleted)
        self._truncate_wal_when_empty()

    def _delete_messages(
        self, messages: Sequence[tuple[int, object]], *, commit: bool = True
    ) -> dict[str, int]:
        """Delete rows by seq; returns how many each account lost. With ``commit`` (a
        statement of its own), the counts are updated here; else once the caller commits."""
        by_account: dict[str, list[int]] = {}
        for seq, account in messages:
            by_account.setdefault(account if isinstance(account, str) else "", []).append(seq)
        deleted = {
            account: sum(
                self.db.execute(
                    f"DELETE FROM spool_messages WHERE seq IN ({_marks(len(chunk))})",  # noqa: S608
                    chunk,
                ).rowcount
                for chunk in _chunks(seqs)
            )
            for account, seqs in by_account.items()
        }
        if commit:
            self._forget(deleted)
        return deleted

    def _forget(self, deleted: dict[str, int]) -> None:
        for account, count in deleted.items():
            if count <= 0:
                continue
            self._oldest.pop(account, None)  # it may have been among them
            left = self._counts.get(account, 0) - count
            if left > 0:
                self._counts[account] = left
            else:
                self._counts.pop(account, None)

    def _truncate_wal_when_empty(self) -> None:
        """Once nothing waits, copy the WAL into the database and truncate it: the copies
        it held of deleted rows go. It never waits for a reader, and a failure is left to
        the next time (the rows themselves are gone already)."""
        try:
            waiting = self.db.execute(
                "SELECT 1 FROM spool_messages UNION ALL SELECT 1 FROM spool_threads LIMIT 1"
            ).fetchone()
            if waiting is not None:
                return
            self.db.execute("PRAGMA busy_timeout = 0")
            try:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            log.debug("spool: truncating the WAL failed: %s", error_kind(exc))

    def count(self) -> int:
        return sum(self._counts.values())

    def backlog(self) -> dict[str, Backlog]:
        """Messages per account in here, and when the oldest was enqueued: counted as rows
        come and go, the oldest looked up (by index) only after it left."""
        backlog = {}
        for account, count in self._counts.items():
            oldest = self._oldest.get(account)
            if oldest is None:
                row = self.db.execute(
                    "SELECT enqueued_at FROM spool_messages WHERE account_id = ?"
                    " ORDER BY seq LIMIT 1",
                    (account,),
                ).fetchone()
                oldest = row[0] if row is not None and isinstance(row[0], float) else None
                if oldest is not None:
                    self._oldest[account] = oldest
            backlog[account] = Backlog(count, oldest)
        return backlog

    def close(self) -> None:
        self.db.close()


#: Rows (or values) per statement: one statement is one SQLite step, which lets go of the
#: GIL; a step per row made the event path and the writer trade it row by row.
_ROWS_PER_STATEMENT = 500


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _ROWS_PER_STATEMENT):
        yield items[start : start + _ROWS_PER_STATEMENT]


def _marks(count: int) -> str:
    return ", ".join(["?"] * count)  # placeholders only: the values are bound


def _insert(db: sqlite3.Connection, into: str, rows: Sequence[Sequence[object]]) -> None:
    """``into`` ``VALUES`` each of ``rows``, in order, a few hundred rows a statement."""
    for chunk in _chunks(rows):
        values = ", ".join([f"({_marks(len(chunk[0]))})"] * len(chunk))
        db.execute(f"{into} VALUES {values}", [value for row in chunk for value in row])


def _thread_update(
    account_id: object, thread_id: object, patch: object
) -> tuple[dict[str, Any], list[MessageFacts]] | None:
    """A spooled thread update, or None when its row is damaged."""
    if not all(isinstance(v, str) and v for v in (account_id, thread_id, patch)):
        return None
    try:
        update = decode_thread(patch)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    if update is None or any(facts.account_id != account_id for facts in update[1]):
        return None
    return update


def _facts(account_id: object, doc: str) -> MessageFacts | None:
    """A spooled message's facts, or None when its row is damaged."""
    try:
        facts = decode_facts(orjson.loads(doc))
    except (ValueError, TypeError):
        return None
    return facts if facts is not None and facts.account_id == account_id else None


def _decoded(account_id: object, thread_id: object, message_id: object, doc: object) -> Any:
    """A spooled message's fields, or None when its row is damaged."""
    if not all(isinstance(v, str) and v for v in (account_id, thread_id, message_id, doc)):
        return None
    try:
        fields = decode_fields(doc)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return fields if isinstance(fields, dict) else None
