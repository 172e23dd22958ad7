"""The send journal: what this replica did with each message it sent, on local disk,
so a crash never makes it send a message WhatsApp already took (docs/sending.md,
"What WhatsApp lets us promise").

One SQLite file, ``state_dir/sends.sqlite3``, with ``synchronous=FULL``: each step
is on disk (fsync) before the send goes on. A row is written when an attempt starts,
given the WhatsApp id the moment the server accepted it, and kept once the outbox
records the send, for receipts to find their message document by WhatsApp id, until
it is older than :data:`KEEP_S`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

from sidecar.adapters.sqlite_files import open_private
from sidecar.core.ports import PastAttempt, SentMessage
from sidecar.domain import outbound
from sidecar.domain.outbox import OutboxItem

FILENAME = "sends.sqlite3"
#: How long a sent message's row is kept for its receipts (read receipts come late).
KEEP_S = 14 * 86_400.0
#: Rows kept at most; the oldest settled ones go first.
MAX_ROWS = 200_000

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sends (
        item_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        started_at REAL NOT NULL,
        wa_id TEXT,
        accepted_at REAL,
        settled INTEGER NOT NULL DEFAULT 0
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS sends_by_wa_id ON sends (account_id, wa_id)",
    "CREATE INDEX IF NOT EXISTS sends_by_age ON sends (settled, started_at)",
)


class SqliteSendJournal:
    """The :class:`~sidecar.core.ports.SendJournal` on local disk. Blocking: the
    worker calls it from a thread."""

    FILENAME = FILENAME

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILENAME
        self._db = open_private(self.path, SCHEMA)
        self._db.execute("PRAGMA synchronous=FULL")  # every commit fsynced
        self._lock = threading.Lock()

    def past(self, item_id: str) -> PastAttempt | None:
        with self._lock:
            row = self._db.execute(
                "SELECT wa_id, accepted_at FROM sends WHERE item_id = ?", (item_id,)
            ).fetchone()
        return None if row is None else PastAttempt(row[0], row[1])

    def started(self, item: OutboxItem, at: float) -> None:
        """An attempt at ``item`` begins (durable before the send)."""
        self._write(
            "INSERT INTO sends (item_id, account_id, thread_id, message_id, attempt, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (item_id) DO UPDATE SET"
            " attempt = excluded.attempt, started_at = excluded.started_at",
            (
                item.id,
                item.account_id,
                item.thread_id,
                outbound.message_id(item),
                item.attempt_count,
                at,
            ),
        )

    def accepted(self, item_id: str, wa_id: str, at: float) -> None:
        """WhatsApp's server took the attempt as ``wa_id`` (durable before anything else)."""
        self._write(
            "UPDATE sends SET wa_id = ?, accepted_at = ? WHERE item_id = ?", (wa_id, at, item_id)
        )

    def refused(self, item_id: str) -> None:
        """The attempt surely sent nothing (refused before or by the server): forgotten."""
        self._write("DELETE FROM sends WHERE item_id = ? AND wa_id IS NULL", (item_id,))

    def settled(self, item_id: str) -> None:
        """The outbox holds the outcome; the row stays for receipts only."""
        self._write("UPDATE sends SET settled = 1 WHERE item_id = ?", (item_id,))

    def sent(self, account_id: str, wa_ids: Iterable[str]) -> list[SentMessage]:
        """The documented messages among ``wa_ids`` this account sent."""
        wanted = list(dict.fromkeys(wa_ids))[:1000]
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(
                "SELECT wa_id, thread_id, message_id FROM sends"  # noqa: S608 (only marks)
                f" WHERE account_id = ? AND wa_id IN ({marks})",
                (account_id, *wanted),
            ).fetchall()
        return [SentMessage(*row) for row in rows]

    def prune(self, now: float | None = None) -> int:
        """Forget settled rows older than :data:`KEEP_S`, and the oldest settled ones
        past :data:`MAX_ROWS`; returns how many went."""
        cutoff = (time.time() if now is None else now) - KEEP_S
        with self._lock:
            gone = self._db.execute(
                "DELETE FROM sends WHERE settled = 1 AND started_at < ?", (cutoff,)
            ).rowcount
            (rows,) = self._db.execute("SELECT COUNT(*) FROM sends").fetchone()
            if rows > MAX_ROWS:
                gone += self._db.execute(
                    "DELETE FROM sends WHERE item_id IN (SELECT item_id FROM sends"
                    " WHERE settled = 1 ORDER BY started_at LIMIT ?)",
                    (rows - MAX_ROWS,),
                ).rowcount
        return int(gone)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)  # autocommit: one fsynced transaction each
