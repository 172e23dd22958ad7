"""Account state that must survive a restart, in an embedded SQLite file.

Without it, a restart would forget when the last real message came and a
deaf session would look fresh again. Writes are batched by the caller
(see :class:`sidecar.app.Sidecar.flush_state`), so the event path never waits
on the disk.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from sidecar.adapters.sqlite_files import open_private
from sidecar.domain.account import PersistedState

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS account_state (
        account_id       TEXT PRIMARY KEY,
        last_real_at     REAL,
        last_protocol_at REAL,
        updated_at       REAL NOT NULL DEFAULT (((julianday('now') - 2440587.5) * 86400.0))
    )""",
    # the learned hourly traffic of each account (sidecar.domain.gaps), one blob per part
    """CREATE TABLE IF NOT EXISTS traffic_model (
        account_id TEXT NOT NULL,
        part       INTEGER NOT NULL,
        model      BLOB NOT NULL,
        PRIMARY KEY (account_id, part)
    )""",
)


class StateStoreError(Exception):
    """The state database cannot be opened or written."""


class SqliteStateStore:
    FILENAME = "account_state.sqlite3"

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / self.FILENAME
        self._lock = threading.Lock()
        try:
            self._db = open_private(self.path, SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateStoreError(f"cannot open the state database {self.path}: {exc}") from exc

    def load(self) -> dict[str, PersistedState]:
        with self._lock:
            rows = self._db.execute(
                "SELECT account_id, last_real_at, last_protocol_at FROM account_state"
            ).fetchall()
            models = self._db.execute(
                "SELECT account_id, part, model FROM traffic_model"
            ).fetchall()
        states = {row[0]: PersistedState(row[1], row[2]) for row in rows}
        for account_id, part, model in models:
            states.setdefault(account_id, PersistedState(None, None)).gaps[part] = bytes(model)
        return states

    def save(self, states_in: Iterable[tuple[str, PersistedState]]) -> int:
        states = list(states_in)
        rows = [(a, s.last_real_at, s.last_protocol_at) for a, s in states]
        if not rows:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO traffic_model (account_id, part, model) VALUES (?, ?, ?)"
                    " ON CONFLICT DO UPDATE SET model = excluded.model",
                    [(a, part, blob) for a, s in states for part, blob in s.gaps.items()],
                )
                self._db.executemany(
                    "INSERT INTO account_state (account_id, last_real_at, last_protocol_at)"
                    " VALUES (?, ?, ?) ON CONFLICT(account_id) DO UPDATE SET"
                    " last_real_at = excluded.last_real_at,"
                    " last_protocol_at = excluded.last_protocol_at,"
                    " updated_at = ((julianday('now') - 2440587.5) * 86400.0)",
                    rows,
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StateStoreError(
                    f"cannot write the state database {self.path}: {exc}"
                ) from exc
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()
