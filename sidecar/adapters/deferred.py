"""Parts under ``state_dir`` that a full (or failing) disk kept from opening at start-up.

The sidecar starts without them rather than not at all: it serves /metrics, /healthz,
the health API and the alerts, and says what fails. The spool refuses real messages
(counted in ``whatsapp_spool_write_errors_total``; the health object's
``store.spoolError`` names the error), the SQLite store's writes fail (the store's
``lastError``; ``whatsapp_store_write_errors_total``), the account state is neither
read nor written. Each is tried again, at most once a second, from the thread that
uses it (never the event path), and used from the moment it opens.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from sidecar.adapters.spool import Batch, Spool, SpoolError
from sidecar.adapters.sqlite_state import SqliteStateStore, StateStoreError
from sidecar.core.failures import Failures
from sidecar.core.ports import MessageStore
from sidecar.core.spooling import MAX_BATCH_OPS, Backlog, Conflict, Prepared
from sidecar.domain.account import PersistedState
from sidecar.domain.facts import MessageFacts
from sidecar.domain.records import MessageDoc, ThreadPatch

log = logging.getLogger(__name__)

#: How often a part that did not open is tried again, at most.
RETRY_S = 1.0
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})
_DISK_SQLITE_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})

T = TypeVar("T")


def is_disk_failure(exc: BaseException) -> bool:
    """A full or failing disk anywhere in the exception's chain: ``ENOSPC``, ``EDQUOT``,
    ``EIO``, ``SQLITE_FULL``, ``SQLITE_IOERR`` (a WAL's shared memory that cannot grow)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_ERRNOS:
            return True
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _DISK_SQLITE_CODES:
            return True
        current = current.__cause__ or current.__context__
    return False


class Opener(Generic[T]):
    """Opens a part that failed to open at start-up, when asked and at most once per
    ``retry_s``. Failures are logged at ERROR (when they start, at most once a minute
    while they last) and the opening at WARNING."""

    def __init__(
        self,
        what: str,
        open_part: Callable[[], T],
        failure: BaseException,
        consequence: str,
        *,
        retry_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open = open_part
        self._retry_s = RETRY_S if retry_s is None else retry_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = Failures(log, f"opening {what}", consequence, level=logging.ERROR)
        self._failures.failed(failure)
        self.error: BaseException = failure
        self._next_try = clock() + self._retry_s
        #: The part, once it opened.
        self.part: T | None = None

    def get(self) -> T | None:
        """The part, opening it if it is time to try again; None while it does not open."""
        if self.part is not None:
            return self.part
        with self._lock:
            now = self._clock()
            if self.part is not None or now < self._next_try:
                return self.part
            self._next_try = now + self._retry_s
            try:
                self.part = self._open()
            except Exception as exc:
                self.error = exc
                self._failures.failed(exc)
                return None
        self._failures.succeeded()
        return self.part

    @property
    def cause(self) -> BaseException:
        """What the last failure came from (past the sidecar's own wrappers)."""
        cause = self.error
        while cause.__cause__ is not None and type(cause).__module__.startswith("sidecar"):
            cause = cause.__cause__
        return cause

    @property
    def last(self) -> tuple[str, float] | None:
        """The kind of error it fails with, and when (None once it opened)."""
        return self._failures.last


class DeferredSpool:
    """The spool port until the spool opens. Real messages are refused meanwhile (the
    caller counts them); the writer's ``take`` opens it."""

    def __init__(self, opener: Opener[Spool]) -> None:
        self._opener = opener
        self._no_drops: dict[str, int] = {}

    @property
    def dropped(self) -> dict[str, int]:
        spool = self._opener.part
        return self._no_drops if spool is None else spool.dropped

    def enqueue(self, doc: MessageDoc, patch: ThreadPatch | None) -> None:
        self._opened_for_the_event_path().enqueue(doc, patch)

    def enqueue_facts(self, facts: Sequence[MessageFacts]) -> None:
        self._opened_for_the_event_path().enqueue_facts(facts)

    def take(self, limit: int = MAX_BATCH_OPS, *, after: Batch | None = None) -> Batch:
        spool = self._opener.get()
        return Batch() if spool is None else spool.take(limit, after=after)

    def discard(self, batch: Batch, error: str) -> None:
        self._opened().discard(batch, error)

    def ack(self, batch: Batch) -> None:
        self._opened().ack(batch)

    def backlog(self) -> dict[str, Backlog]:
        spool = self._opener.part
        return {} if spool is None else spool.backlog()

    def is_empty(self) -> bool:
        spool = self._opener.part
        return spool is None or spool.is_empty()

    def error(self) -> tuple[str, float] | None:
        spool = self._opener.part
        return self._opener.last if spool is None else spool.error()

    def now(self) -> float:
        return time.time()

    def close(self) -> None:
        if self._opener.part is not None:
            self._opener.part.close()

    def _opened_for_the_event_path(self) -> Spool:
        spool = self._opener.part  # the event path never waits for an opening
        if spool is None:
            raise SpoolError("the spool is not open") from self._opener.cause
        return spool

    def _opened(self) -> Spool:
        spool = self._opener.part
        if spool is None:  # only batches it handed out are acked or discarded
            raise SpoolError("the spool is not open") from self._opener.cause
        return spool


class StoreNotOpenError(Exception):
    """The message store has not opened yet; its cause says why."""


class DeferredStore:
    """The message store port until the store opens: each batch's write fails (and the
    writer retries it with backoff) until then. Opened in ``prepare``, off the loop."""

    def __init__(self, opener: Opener[MessageStore], backend: str) -> None:
        self._opener = opener
        self.backend = backend

    def prepare(self, batch: Batch) -> Prepared:
        store = self._opener.get()
        if store is None:
            return Prepared(batch, None)
        inner = store.prepare(batch)
        return Prepared(inner.batch, (store, inner), inner.too_large)

    async def commit(self, prepared: Prepared) -> list[Conflict]:
        if prepared.request is None:
            raise StoreNotOpenError("the message store is not open") from self._opener.cause
        store: MessageStore = prepared.request[0]
        return await store.commit(prepared.request[1])

    def refuses(self, exc: BaseException) -> bool:
        store = self._opener.part
        return store is not None and store.refuses(exc)

    async def close(self) -> None:
        if self._opener.part is not None:
            await self._opener.part.close()


class DeferredStateStore:
    """The state store port until the state database opens: nothing is read (the core
    asks again) and so nothing is written over what it holds."""

    def __init__(self, opener: Opener[SqliteStateStore]) -> None:
        self._opener = opener

    def load(self) -> dict[str, PersistedState] | None:
        store = self._opener.get()
        return None if store is None else store.load()

    def save(self, states: Iterable[tuple[str, PersistedState]]) -> int:
        store = self._opener.part
        if store is None:
            raise StateStoreError("the state database is not open") from self._opener.cause
        return store.save(states)

    def close(self) -> None:
        if self._opener.part is not None:
            self._opener.part.close()


def open_or_defer(
    what: str, open_part: Callable[[], T], consequence: str
) -> tuple[T | None, Opener[T] | None]:
    """``open_part()``, or, when a full or failing disk keeps it from opening, an
    :class:`Opener` that tries again later (the failure is logged at ERROR). Other
    errors (a corrupt file, a permission) are raised: they need a person."""
    try:
        return open_part(), None
    except Exception as exc:
        if not is_disk_failure(exc):
            raise
        return None, Opener(what, open_part, exc, consequence)
