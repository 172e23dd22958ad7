"""Where an account's linked-device keys live, and the lock that keeps one process
per account: the session-keys and account-lock ports for neonize sessions."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sidecar.adapters.sqlite_files import private_dir


@dataclass(frozen=True)
class SessionStore:
    """Where one account's linked-device keys live: a SQLite file or a Postgres URL."""

    account_id: str
    location: str
    sqlite_path: Path | None

    @classmethod
    def for_account(
        cls, state_dir: Path, account_id: str, postgres_url: str | None
    ) -> SessionStore:
        if postgres_url:
            return cls(account_id, postgres_url, None)
        path = state_dir / "sessions" / f"{account_id}.sqlite3"
        return cls(account_id, str(path), path)

    def prepare(self) -> None:
        """Create the SQLite file owner-only before whatsmeow opens it."""
        if self.sqlite_path is None:
            return
        private_dir(self.sqlite_path.parent)
        fd = os.open(self.sqlite_path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(self.sqlite_path, 0o600)

    def device_id(self) -> str | None:
        """The paired device's JID (kept in memory only), or None when unpaired or unknown."""
        if self.sqlite_path is None or not self.sqlite_path.exists():
            return None
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=1)
            ) as db:
                row = db.execute("SELECT jid FROM whatsmeow_device LIMIT 1").fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else str(row[0])

    def forget(self) -> None:
        """Delete a SQLite store (and its WAL files) so the next connection pairs anew;
        a Postgres store is left to whatsmeow, which replaces the device on pairing."""
        if self.sqlite_path is None:
            return
        for suffix in ("", "-wal", "-shm"):
            self.sqlite_path.with_name(self.sqlite_path.name + suffix).unlink(missing_ok=True)
        self.prepare()


class FileAccountLock:
    """One process at a time per account: two connections to the same device make
    WhatsApp answer StreamReplaced and both sessions suffer."""

    def __init__(self, state_dir: Path, account_id: str) -> None:
        self.path = state_dir / "sessions" / f"{account_id}.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        # the holder's pid is only for the message of a process that waits: a full disk
        # that keeps it from being written must not keep the lock from being held
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
