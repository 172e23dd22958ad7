"""The embedded message store: Firestore's logical layout in one SQLite file.

``threads`` rows hold thread documents and ``messages`` rows their messages,
each a JSON document with the same field names as in Firestore; instants
are Unix milliseconds. It lets the main job run on a machine with no cloud
account, and the same tests run against both backends.

A file SQLite reports as corrupt when it opens is refused
(:class:`~sidecar.adapters.sqlite_files.CorruptDatabaseError`): it is the
message store itself. Damage found later fails the writes it touches, which
the writer retries and reports (``DatabaseError (SQLITE_CORRUPT)``).
"""

from __future__ import annotations

import asyncio
import json
import json.encoder as json_encoder
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sidecar.adapters.spool import Batch
from sidecar.adapters.sqlite_files import CorruptDatabaseError, open_private
from sidecar.core.spooling import Conflict, Prepared
from sidecar.domain.authorship import CONFLICT_OUTCOMES, Stored, author_of, resolve
from sidecar.domain.records import SERVER_TIME, MessageDoc, Timestamp

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS threads (
        thread_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        doc TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS messages (
        thread_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (thread_id, message_id)
    )""",
)


_T = TypeVar("_T")

HOLDS = "the stored messages (the SQLite message store)"


FILENAME = "messages.sqlite3"


def open_message_file(
    state_dir: Path, schema: Sequence[str], *, busy_timeout_s: float
) -> tuple[Path, sqlite3.Connection]:
    """``state_dir/messages.sqlite3``, which the message store and the outbox share,
    each on a connection of its own; a file SQLite reports as corrupt is refused."""
    path = state_dir / FILENAME
    try:
        # no quick_check: it reads every page, and this file only grows
        return path, open_private(path, schema, busy_timeout_s=busy_timeout_s)
    except CorruptDatabaseError as exc:
        raise CorruptDatabaseError(exc.path, exc.detail, holds=HOLDS) from exc


class SqliteMessageStore:
    backend = "sqlite"
    FILENAME = FILENAME
    #: Operations per batch the writer hands it: one transaction has no limit of its own,
    #: and its cost is the index pages it rewrites, about as many for 2,000 messages
    #: over a few hundred chats as for 500 (bench/replay_real.py).
    BATCH_OPS = 2000

    def __init__(self, state_dir: Path, *, busy_timeout_s: float = 2.0) -> None:
        self.path, self._db = open_message_file(state_dir, SCHEMA, busy_timeout_s=busy_timeout_s)
        self._lock = threading.Lock()

    def prepare(self, batch: Batch) -> Prepared:
        return Prepared(batch, batch)  # encoded inside the transaction: nothing to gain apart

    async def commit(self, prepared: Prepared) -> list[Conflict]:
        return await asyncio.to_thread(self._write, prepared.batch)

    def refuses(self, exc: BaseException) -> bool:
        """Too big for SQLite, or a value JSON cannot hold: the same every time."""
        return isinstance(exc, (sqlite3.DataError, TypeError, ValueError))

    def _write(self, batch: Batch) -> list[Conflict]:
        """The batch in one transaction: the documents its messages name read with one
        query, resolved in order among themselves, written with one statement a kind.

        Few statements, not one per message: each SQLite step lets go of the GIL, and
        with the event path busy on the other thread every one of them was a switch
        (bench/replay_real.py)."""
        now_ms = round(time.time() * 1000)
        encode = _encoder(now_ms)
        conflicts: list[Conflict] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                held = self._held(batch.messages)
                rows: list[tuple[str, str, str, str]] = []
                for _, doc in batch.messages:
                    outcome = self._apply(doc, held, rows, encode, now_ms)
                    if outcome in CONFLICT_OUTCOMES:
                        conflicts.append(Conflict(doc.account_id, outcome))
                # in the primary key's order (stable: a later write of a document wins):
                # the index is walked once, not jumped around in
                rows.sort(key=_primary_key)
                for chunk in _chunks(rows, _ROWS_PER_STATEMENT):
                    self._db.execute(_upsert_messages(len(chunk)), [v for r in chunk for v in r])
                threads = sorted(  # one update per thread in a batch
                    (t.patch.thread_id, t.patch.account_id, encode(t.patch.fields))
                    for t in batch.threads
                )
                for part in _chunks(threads, _ROWS_PER_STATEMENT):
                    self._db.execute(_upsert_threads(len(part)), [v for r in part for v in r])
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back by itself (SQLITE_FULL)
                    self._db.execute("ROLLBACK")
                raise
        return conflicts

    def _held(self, messages: Sequence[tuple[int, MessageDoc]]) -> dict[tuple[str, str], str]:
        """The stored documents (JSON) under the ids ``messages`` name, in one query per
        few hundred ids."""
        keys = list(dict.fromkeys((doc.thread_id, doc.message_id) for _, doc in messages))
        held: dict[tuple[str, str], str] = {}
        for chunk in _chunks(keys, _ROWS_PER_STATEMENT):
            for thread_id, message_id, text in self._db.execute(
                _select_messages(len(chunk)), [v for key in chunk for v in key]
            ):
                held[(thread_id, message_id)] = text
        return held

    def _apply(
        self,
        doc: MessageDoc,
        held: dict[tuple[str, str], str],
        rows: list[tuple[str, str, str, str]],
        encode: Callable[[Any], str],
        now_ms: int,
    ) -> str:
        """One message operation, by the authorship rules, against what the store holds
        with the batch's earlier operations applied (``held``, updated here); its row
        is added to ``rows``."""
        text = held.get((doc.thread_id, doc.message_id))
        current = None if text is None else dict(json.loads(text))
        stored = None if current is None else _stored(current)
        resolution = resolve(doc, stored)
        write = resolution.write
        if write is not None:
            if write.merge and current is not None and write.message_id == doc.message_id:
                text = encode(merged(current, plain(write.fields, now_ms)))
            else:
                text = encode(write.fields)
            held[(doc.thread_id, write.message_id)] = text
            rows.append((doc.thread_id, write.message_id, doc.account_id, text))
        return resolution.outcome

    async def close(self) -> None:
        with self._lock:
            self._db.close()


#: Rows (or ids) per statement: well under SQLite's limit of bound values.
_ROWS_PER_STATEMENT = 200


def _upsert_messages(rows: int) -> str:
    marks = ", ".join(["(?, ?, ?, ?)"] * rows)  # placeholders only: the values are bound
    return (
        f"INSERT INTO messages (thread_id, message_id, account_id, doc) VALUES {marks}"  # noqa: S608
        " ON CONFLICT DO UPDATE SET doc = excluded.doc"
    )


def _primary_key(row: tuple[str, str, str, str]) -> tuple[str, str]:
    return row[0], row[1]


def _upsert_threads(rows: int) -> str:
    marks = ", ".join(["(?, ?, ?)"] * rows)  # placeholders only: the values are bound
    return (
        f"INSERT INTO threads (thread_id, account_id, doc) VALUES {marks}"  # noqa: S608
        " ON CONFLICT DO UPDATE SET doc = json_patch(threads.doc, excluded.doc)"
    )


def _select_messages(ids: int) -> str:
    """The documents of ``ids`` (thread, message) pairs: each looked up by the primary
    key (CROSS JOIN keeps the ids the outer loop; ``IN`` with row values scans the table)."""
    marks = ", ".join(["(?, ?)"] * ids)  # placeholders only: the values are bound
    return (
        "SELECT m.thread_id, m.message_id, m.doc"  # noqa: S608
        f" FROM (VALUES {marks}) AS k CROSS JOIN messages AS m"
        " ON m.thread_id = k.column1 AND m.message_id = k.column2"
    )


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _encoder(now_ms: int) -> Callable[[Any], str]:
    """``json.dumps(plain(fields, now_ms), ensure_ascii=False)``, to the byte, in one
    pass of the C encoder: instants become Unix milliseconds as they are met. Made once
    per batch: ``json.dumps`` makes a new encoder at every call. An error ends its batch,
    and the encoder with it (what the circular check keeps after one is never read)."""

    def instant(value: Any) -> Any:
        if isinstance(value, Timestamp):
            return value.ms
        if value is SERVER_TIME:
            return now_ms
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    make = getattr(json_encoder, "c_make_encoder", None)  # what json.dumps uses, if there
    if make is None:  # a Python without the C accelerator
        return json.JSONEncoder(ensure_ascii=False, default=instant).encode
    chunks = make({}, instant, json_encoder.encode_basestring, None, ": ", ", ", False, False, True)
    return lambda value: "".join(chunks(value, 0))


def plain(value: Any, now_ms: int) -> Any:
    """A document's values as SQLite keeps them: instants in Unix milliseconds."""
    if isinstance(value, Timestamp):
        return value.ms
    if value is SERVER_TIME:
        return now_ms
    if isinstance(value, dict):
        return {k: plain(v, now_ms) for k, v in value.items()}
    return value


def _stored(current: dict[str, Any]) -> Stored:
    edited = current.get("editedAt")
    return Stored(author_of(current), edited if isinstance(edited, int) else None)


def merged(current: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """As a Firestore merge: the leaves named replace, the others stay."""
    out = dict(current)
    for key, value in fields.items():
        known = out.get(key)
        if isinstance(value, dict) and value and isinstance(known, dict):
            out[key] = merged(known, value)
        else:
            out[key] = value
    return out
