"""Account state that must survive a restart, in an embedded SQLite file.

Without it, a restart would forget when the last real message came and a
deaf session would look fresh again. Writes are batched by the caller
(see :meth:`sidecar.core.service.Sidecar.flush_state`), so the event path never waits
on the disk. A save that fails (a full disk) is kept and written with the
next one.

A corrupt file is moved aside (``account_state.sqlite3.corrupt-<UTC time>``)
and replaced by one holding the rows that could still be read, with a
WARNING: what it holds (last-real times, learned traffic, bans in force) is
worth less than a sidecar that does not start, and it is learned again (a lost
ban by one connection attempt, which WhatsApp answers with the ban again).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from sidecar.adapters.sqlite_files import RUNBOOK, CorruptDatabaseError, open_private, salvage
from sidecar.domain.account import PersistedState
from sidecar.domain.signals import Ban

log = logging.getLogger(__name__)

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
    # when the account's own phone was last seen online (sidecar.domain.phone); a table of
    # its own, so that a database written before it existed opens as it is
    """CREATE TABLE IF NOT EXISTS phone_seen (
        account_id TEXT PRIMARY KEY,
        seen_at    REAL NOT NULL
    )""",
    # a temporary ban in force: a restart during it waits for its end (sidecar.domain.signals)
    """CREATE TABLE IF NOT EXISTS temporary_ban (
        account_id TEXT PRIMARY KEY,
        expires_at REAL NOT NULL,
        reason     TEXT NOT NULL
    )""",
)


class StateStoreError(Exception):
    """The state database cannot be opened or written."""


class SqliteStateStore:
    FILENAME = "account_state.sqlite3"

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / self.FILENAME
        self._lock = threading.Lock()
        #: States a failed save could not write, per account: written with the next save.
        self._unsaved: dict[str, PersistedState] = {}
        try:
            try:
                self._db = open_private(self.path, SCHEMA, check=True)
            except CorruptDatabaseError as exc:
                self._db = self._start_over(exc)
        except (OSError, sqlite3.Error) as exc:
            raise StateStoreError(f"cannot open the state database {self.path}: {exc}") from exc

    def _start_over(self, corrupt: CorruptDatabaseError) -> sqlite3.Connection:
        saved = salvage(self.path, SCHEMA)
        log.warning(
            "the state database %s is corrupt (%s): moved it to %s and started a new one with"
            " the %d rows that could be read; last-real times and learned traffic that were"
            " lost are learned again (%s)",
            self.path,
            corrupt.detail,
            saved.aside.name,
            saved.total,
            RUNBOOK,
        )
        return open_private(self.path, SCHEMA, check=True)

    def load(self) -> dict[str, PersistedState]:
        with self._lock:
            rows = self._db.execute(
                "SELECT account_id, last_real_at, last_protocol_at FROM account_state"
            ).fetchall()
            models = self._db.execute(
                "SELECT account_id, part, model FROM traffic_model"
            ).fetchall()
            phones = self._db.execute("SELECT account_id, seen_at FROM phone_seen").fetchall()
            bans = self._db.execute(
                "SELECT account_id, expires_at, reason FROM temporary_ban"
            ).fetchall()
        states = {row[0]: PersistedState(row[1], row[2]) for row in rows}
        for account_id, part, model in models:
            states.setdefault(account_id, PersistedState(None, None)).gaps[part] = bytes(model)
        for account_id, seen_at in phones:
            known = states.get(account_id, PersistedState(None, None))
            states[account_id] = dataclasses.replace(known, phone_seen_at=seen_at)
        for account_id, expires_at, reason in bans:
            known = states.get(account_id, PersistedState(None, None))
            states[account_id] = dataclasses.replace(known, ban=Ban(expires_at, reason))
        return states

    def save(self, states_in: Iterable[tuple[str, PersistedState]]) -> int:
        """Write ``states`` (and what earlier failed saves left); returns how many accounts
        were written. On failure they are kept for the next call, and StateStoreError says
        why."""
        with self._lock:
            states = self._unsaved
            self._unsaved = {}
            for account_id, state in states_in:
                known = states.get(account_id)
                states[account_id] = (
                    state
                    if known is None
                    else dataclasses.replace(state, gaps=known.gaps | state.gaps)
                )
            if not states:
                return 0
            rows = [(a, s.last_real_at, s.last_protocol_at) for a, s in states.items()]
            phones = [(a, s.phone_seen_at) for a, s in states.items() if s.phone_seen_at]
            try:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO traffic_model (account_id, part, model) VALUES (?, ?, ?)"
                    " ON CONFLICT DO UPDATE SET model = excluded.model",
                    [(a, part, blob) for a, s in states.items() for part, blob in s.gaps.items()],
                )
                self._db.executemany(
                    "INSERT INTO account_state (account_id, last_real_at, last_protocol_at)"
                    " VALUES (?, ?, ?) ON CONFLICT(account_id) DO UPDATE SET"
                    " last_real_at = excluded.last_real_at,"
                    " last_protocol_at = excluded.last_protocol_at,"
                    " updated_at = ((julianday('now') - 2440587.5) * 86400.0)",
                    rows,
                )
                self._db.executemany(
                    "INSERT INTO phone_seen (account_id, seen_at) VALUES (?, ?)"
                    " ON CONFLICT(account_id) DO UPDATE SET seen_at = excluded.seen_at",
                    phones,
                )
                self._db.executemany(
                    "DELETE FROM temporary_ban WHERE account_id = ?",
                    [(a,) for a, s in states.items() if s.ban is None],
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO temporary_ban (account_id, expires_at, reason)"
                    " VALUES (?, ?, ?)",
                    [(a, s.ban.expires_at, s.ban.reason) for a, s in states.items() if s.ban],
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._unsaved = states
                raise StateStoreError(
                    f"cannot write the state database {self.path}: {exc}"
                ) from exc
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()
