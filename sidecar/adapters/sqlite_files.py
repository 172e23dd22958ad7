"""Opening the sidecar's own SQLite files: owner-only, WAL, one way for all of them."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path


def open_private(
    path: Path, schema: Iterable[str], *, busy_timeout_s: float = 5.0
) -> sqlite3.Connection:
    """Create ``path`` with mode 0600 (in a 0700 folder) before SQLite opens it, use WAL
    with ``synchronous=NORMAL`` (a commit survives a killed process; a power cut can lose
    the last ones), and apply ``schema``. The connection is shared across threads; callers
    serialise their use of it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    db = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
    )
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for statement in schema:
        db.execute(statement)
    return db
