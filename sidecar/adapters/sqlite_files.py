"""The sidecar's own SQLite files: opening them (owner-only, WAL, one way for all of
them), telling corruption from other errors, and salvaging a corrupt one.

Corruption is what SQLite reports as ``SQLITE_CORRUPT`` or ``SQLITE_NOTADB`` (a file
overwritten with garbage, or truncated mid-page), or what ``PRAGMA quick_check``
finds. Other errors (permissions, a full disk, a lock held by another process) are
not corruption: the file itself is fine and nothing should be moved.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The primary result codes of a damaged file (an extended code keeps them in its low byte).
_CORRUPTION_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
#: A database's companion files, moved together with it.
COMPANION_SUFFIXES = ("-wal", "-shm")
#: Where the recovery is documented; error messages point operators here.
RUNBOOK = "docs/runbook.md#corrupt-state-database"


class CorruptDatabaseError(Exception):
    """``path`` is not a readable SQLite database, or fails its integrity check.
    ``holds`` says what in it is kept nowhere else (for the operator's error message)."""

    def __init__(self, path: Path, detail: str, *, holds: str | None = None) -> None:
        detail = " ".join(detail.split())  # quick_check reports one problem per line
        super().__init__(f"{path} is corrupt ({detail})")
        self.path = path
        self.detail = detail
        self.holds = holds


def is_corruption(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _CORRUPTION_CODES


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) mode 0700, or take group and other access away
    from one that exists: it holds session keys and messages."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, mode & 0o700)
        log.warning("%s was open to group or others (%o): now owner-only", path, mode)
    return path


def open_private(
    path: Path, schema: Iterable[str], *, busy_timeout_s: float = 5.0, check: bool = False
) -> sqlite3.Connection:
    """Create ``path`` with mode 0600 (in a 0700 folder) before SQLite opens it, use WAL
    with ``synchronous=NORMAL`` (a commit survives a killed process; a power cut can lose
    the last ones), and apply ``schema``. The connection is shared across threads; callers
    serialise their use of it.

    ``check`` runs ``PRAGMA quick_check`` first (it reads every page: for small files).
    Raises :class:`CorruptDatabaseError` when the file is damaged.
    """
    private_dir(path.parent)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    db = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
    )
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if check:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise CorruptDatabaseError(path, "; ".join(problems))
        for statement in schema:
            db.execute(statement)
    except sqlite3.Error as exc:
        db.close()
        if is_corruption(exc):
            raise CorruptDatabaseError(path, str(exc)) from exc
        raise
    except BaseException:
        db.close()
        raise
    return db


def move_aside(path: Path, *, now: float | None = None) -> Path:
    """Rename ``path`` and its ``-wal``/``-shm`` files to ``NAME.corrupt-YYYYmmddTHHMMSSZ``
    (their ``-wal``/``-shm`` keep SQLite's naming, so the copy opens with its WAL).
    Returns the new path of the database."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    serial = 1
    while aside.exists():
        serial += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{serial}")
    for suffix in COMPANION_SUFFIXES:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(aside.with_name(aside.name + suffix))
    path.rename(aside)
    return aside


def open_read_only(path: Path) -> sqlite3.Connection:
    """``path`` as it is, WAL included, without changing it (no checkpoint on close)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)


def integrity_problem(path: Path) -> str | None:
    """What is wrong with the database at ``path`` (None: nothing; it opens and passes
    ``quick_check``). Reads only: the file and its WAL stay as they are."""
    db = open_read_only(path)
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
    except sqlite3.Error as exc:
        if is_corruption(exc):
            return str(exc)
        raise
    finally:
        db.close()
    return None if problems == ["ok"] else "; ".join(problems)


@dataclass
class Salvage:
    """What :func:`salvage` saved of a corrupt database."""

    aside: Path
    rows: dict[str, int] = field(default_factory=dict)
    #: Tables some of whose rows could not be read.
    damaged: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def salvage(path: Path, schema: Iterable[str], *, now: float | None = None) -> Salvage:
    """Replace the corrupt database at ``path`` with a new one that holds every row of its
    tables that can still be read; the corrupt file (and its WAL) is moved aside, untouched.

    Rows are read in rowid order; where a page cannot be read, the scan seeks past it,
    so the rows on intact pages before and after a damaged one are kept. A file whose
    header or schema is gone yields nothing (an empty database with the schema).
    """
    schema = list(schema)
    aside = move_aside(path, now=now)
    report = Salvage(aside)
    target = open_private(path, schema)
    try:
        source = open_read_only(aside)
        try:
            # as the sqlite3 shell's .dump: a damaged schema entry must not hide the others
            source.execute("PRAGMA writable_schema=ON")
            for table in _tables(target):
                columns = [row[1] for row in target.execute(f'PRAGMA table_info("{table}")')]
                report.rows[table] = _copy_rows(source, target, table, columns, report)
        finally:
            source.close()
    finally:
        target.close()
    return report


def _tables(db: sqlite3.Connection) -> list[str]:
    return [
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
    ]


def _copy_rows(
    source: sqlite3.Connection,
    target: sqlite3.Connection,
    table: str,
    columns: list[str],
    report: Salvage,
) -> int:
    # names come from the schema of the database just created, not from outside
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" * len(columns))
    insert = f'INSERT OR REPLACE INTO "{table}" (rowid, {names}) VALUES (?, {marks})'  # noqa: S608
    query = f'SELECT rowid, {names} FROM "{table}" WHERE rowid > ? ORDER BY rowid'  # noqa: S608

    def keep(row: tuple[object, ...]) -> int:
        try:
            target.execute(insert, row)
        except sqlite3.IntegrityError:  # a damaged row: NULL where none may be
            _mark(report, table)
            return 0
        return 1

    copied = 0
    after = _MIN_ROWID
    target.execute("BEGIN")
    try:
        while True:
            try:
                for row in source.execute(query, (after,)):
                    if row[0] <= after:  # a damaged page: rowids out of order
                        raise _Unreadable
                    after = row[0]
                    copied += keep(row)
                break
            except sqlite3.Error as exc:
                _mark(report, table)
                if is_corruption(exc):
                    pass
                elif "no such table" in str(exc):  # the schema lost it
                    break
                else:
                    raise
            except _Unreadable:
                _mark(report, table)
            found = _next_readable(source, query, after)
            if found is None:
                break
            after = found[0]
            copied += keep(found)
        target.execute("COMMIT")
    except BaseException:
        target.execute("ROLLBACK")
        raise
    return copied


_MIN_ROWID = -(2**63)
_MAX_ROWID = 2**63 - 1


class _Unreadable(Exception):
    pass


def _mark(report: Salvage, table: str) -> None:
    if table not in report.damaged:
        report.damaged.append(table)


def _seek(
    source: sqlite3.Connection, query: str, rowid: int
) -> tuple[bool, tuple[Any, ...] | None]:
    """Whether the first row past ``rowid`` can be read, and that row (None: none)."""
    try:
        row = source.execute(query + " LIMIT 1", (rowid,)).fetchone()
    except sqlite3.Error:
        return False, None
    if row is not None and not row[0] > rowid:
        return False, None
    return True, row


def _next_readable(source: sqlite3.Connection, query: str, after: int) -> tuple[Any, ...] | None:
    """The first row that can be read past the damaged page after ``after`` (None:
    nothing readable lies beyond)."""
    step = 1
    while True:
        if after + step >= _MAX_ROWID:
            return None
        readable, row = _seek(source, query, after + step)
        if readable:
            if row is None:
                return None
            break
        step *= 2
    # narrow the gap: the smallest start past ``after`` from which the seek reads
    low, high = after, after + step  # a seek from ``high`` reads; from ``low`` it does not
    while high - low > 1:
        middle = (low + high) // 2
        readable, found = _seek(source, query, middle)
        if readable and found is not None:
            high, row = middle, found
        else:
            low = middle
    return row
