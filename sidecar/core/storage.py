"""Persistence of real messages: spool on the event path, a writer that drains it.

The event handler only commits to the local spool (fast, durable: the few values
the documents are built from); the :class:`SpoolWriter` builds the documents and
moves batches to the configured store, retrying with
capped exponential backoff and jitter for as long as the store is down, and
deletes spool rows only once the store confirmed them.

A real message the spool cannot take (a full or failing disk under
``state_dir``) is not stored: it is counted per account in
``whatsapp_spool_write_errors_total``, shown in the health object's ``store``,
and logged on one ERROR line (error kind only; repeats are summed, at most one
line a minute). The handler returns normally and the process keeps running.
The writer outlives every error of the spool or the store: it logs, backs off
and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from sidecar.core.failures import Failures
from sidecar.core.ports import MessageStore, SpoolPort
from sidecar.core.spool_writer import SpoolWriter, StoreStats
from sidecar.core.spooling import MAX_BATCH_OPS, Backlog, SpoolError
from sidecar.domain.classify import Classification
from sidecar.domain.facts import MessageFacts, message_facts
from sidecar.domain.health import StoreStatus, to_ms

log = logging.getLogger(__name__)


class StorageListener:
    """The pipeline's hook: real messages are spooled before the handler returns.

    On the event path it only reads the few values the documents are built from
    (:func:`~sidecar.domain.facts.message_facts`) and has them journaled; the writer
    builds the documents. A source that hands many events over at once (a replay)
    may make them durable together (:meth:`together`)."""

    def __init__(self, spool: SpoolPort, writer: SpoolWriter, stats: StoreStats) -> None:
        self._spool = spool
        self._writer = writer
        self._stats = stats
        self._failures: dict[str, Failures] = {}
        self._lock = threading.Lock()
        self._unstored: frozenset[str] = frozenset()
        #: Facts handled inside :meth:`together` on ``_held_by``, not durable yet.
        self._held: list[MessageFacts] | None = None
        self._held_by: int | None = None

    def leave_out(self, account_ids: Iterable[str]) -> None:
        """Never store these accounts' messages (``store_messages: false``)."""
        self._unstored = frozenset(account_ids)

    def on_message(
        self, account_id: str, event: Any, classification: Classification, received_at: float
    ) -> None:
        if account_id in self._unstored:
            return
        facts = message_facts(account_id, event, classification)
        if facts is None:
            return
        held = self._held
        if held is not None and threading.get_ident() == self._held_by:
            held.append(facts)
        else:
            self._spool_now([facts])

    @contextlib.contextmanager
    def together(self) -> Iterator[Callable[[], None]]:
        """Real messages handled on this thread inside the block are made durable together,
        in one journal write: when the function it yields is called, and when the block
        ends. For a caller that acknowledges nothing in between (a replay calls it before
        every pause); a live callback returns only once its own message is durable, so it
        never holds any (other threads are not held, whatever this one does)."""
        if self._held is not None:  # nested: the outer block makes them durable
            yield self._durable
            return
        self._held, self._held_by = [], threading.get_ident()
        try:
            yield self._durable
        finally:
            try:
                self._durable()
            finally:
                self._held = self._held_by = None

    def _durable(self) -> None:
        held = self._held
        if held:
            self._held = []
            self._spool_now(held)

    def _spool_now(self, facts: list[MessageFacts]) -> None:
        try:
            self._spool.enqueue_facts(facts)
        except SpoolError as exc:
            # They cannot be made durable, so they are not stored: say so, and go on with
            # the next event (their counts and times are recorded already).
            for each in facts:
                self._stats.rejected(each.account_id)
                self._failures_of(each.account_id).failed(exc)
            return
        if self._failures:
            for account_id in {each.account_id for each in facts}:
                failures = self._failures.get(account_id)
                if failures is not None:
                    failures.succeeded()
        self._writer.wake()

    def _failures_of(self, account_id: str) -> Failures:
        with self._lock:
            failures = self._failures.get(account_id)
            if failures is None:
                failures = self._failures[account_id] = Failures(
                    log,
                    f"account={account_id} spool: making a real message durable",
                    "; it is not stored (whatsapp_spool_write_errors_total)",
                    level=logging.ERROR,
                )
            return failures

    def spool_error(self, account_id: str) -> tuple[str, float] | None:
        failures = self._failures.get(account_id)
        return None if failures is None else failures.last


#: How old the backlog the health API shares may be (:meth:`Storage.recent_backlog`).
BACKLOG_MAX_AGE_S = 1.0


class Storage:
    """Spool, store, writer and their numbers, as one part for the wiring."""

    def __init__(
        self,
        spool: SpoolPort,
        store: MessageStore,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        batch_ops: int = MAX_BATCH_OPS,
    ) -> None:
        self.spool = spool
        self.store = store
        self.monotonic = monotonic  # the clock the shared backlog's age is read from
        self._recent: tuple[float, dict[str, Backlog]] | None = None
        self._recent_lock = threading.Lock()
        self.stats = StoreStats(spool.now)
        self.writer = SpoolWriter(spool, store, self.stats, batch_ops=batch_ops)
        self.listener = StorageListener(spool, self.writer, self.stats)

    def spool_error(self, account_id: str) -> tuple[str, float] | None:
        """What the spool fails with now for this account (None: it works): taking its
        messages, moving them into SQLite, reading or updating them."""
        failing = [
            error
            for error in (
                self.listener.spool_error(account_id),
                self.spool.error(),
                self.writer.spool_error,
            )
            if error is not None
        ]
        return max(failing, key=lambda kind_at: kind_at[1]) if failing else None

    def backlog(self) -> dict[str, Backlog]:
        """Every account's spooled messages, in one read of the spool."""
        return self.spool.backlog()

    def recent_backlog(self) -> dict[str, Backlog]:
        """:meth:`backlog` at most ``BACKLOG_MAX_AGE_S`` old, shared by every caller.

        A read is a GROUP BY under the spool's lock (~28 ms at 18,800 messages), which
        holds up the event path's enqueues: health requests, however many, cost at
        most one a second. Callers wait for a read in progress rather than start
        their own (call it off the event loop)."""
        with self._recent_lock:
            recent = self._recent
            if recent is None or self.monotonic() - recent[0] >= BACKLOG_MAX_AGE_S:
                recent = self._recent = (self.monotonic(), self.spool.backlog())
            return recent[1]

    def write_errors(self, account_id: str) -> int:
        """Real messages of the account that the spool could not take or keep."""
        return self.stats.spool_rejected.get(account_id, 0) + self.spool.dropped.get(account_id, 0)

    def status(self, account_id: str, backlog: dict[str, Backlog] | None = None) -> StoreStatus:
        """The health object's ``store``. Its times are the spool's clock, the wall
        clock even in a replay: these writes really happen now. ``backlog``: the
        spool's, read once for many accounts."""
        spooled = (self.spool.backlog() if backlog is None else backlog).get(account_id)
        wall = self.spool.now()
        error = self.stats.last_error.get(account_id)
        oldest = spooled.oldest_enqueued_at if spooled else None
        spool_error = self.spool_error(account_id)
        return StoreStatus(
            backend=self.store.backend,
            backlog=spooled.messages if spooled else 0,
            oldest_spooled_age_ms=None if oldest is None else round(max(0.0, wall - oldest) * 1000),
            last_error=error[0] if error else None,
            last_error_at_ms=to_ms(error[1]) if error else None,
            last_write_at_ms=to_ms(self.stats.last_write_at.get(account_id)),
            spool_error=spool_error[0] if spool_error else None,
            spool_error_at_ms=to_ms(spool_error[1]) if spool_error else None,
            spool_write_errors=self.write_errors(account_id),
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The writer runs inside this context, and is cancelled and awaited on exit."""
        task = asyncio.create_task(self.writer.run(), name="spool-writer")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        try:
            await self.store.close()
        finally:
            self.spool.close()
