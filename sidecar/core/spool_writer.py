"""The spool writer: moves spooled batches to the message store, retrying for as long
as the store is down, and confirms them to the spool only once the store took them."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

from sidecar.core.failures import Failures, error_kind
from sidecar.core.ports import MessageStore, SpoolPort
from sidecar.core.spooling import MAX_BATCH_OPS, Batch, Conflict, Prepared, SpoolError
from sidecar.core.waits import wait_event
from sidecar.domain.supervision import Backoff

log = logging.getLogger(__name__)

#: Write-latency buckets, in seconds: a batch to a healthy store takes tens of ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: How long the writer sleeps when the spool is empty and nobody wakes it.
IDLE_POLL_S = 1.0


class StoreStats:
    """What the writer did, for metrics and the health API (thread-safe)."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._lock = threading.Lock()
        self.writes = 0
        self.errors = 0
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.last_error: dict[str, tuple[str, float]] = {}
        self.last_write_at: dict[str, float] = {}
        #: Real messages per account that the spool could not take (not stored).
        self.spool_rejected: dict[str, int] = {}
        #: Message operations per (account, outcome) the store did not apply as asked.
        self.conflicts: dict[tuple[str, str], int] = {}

    def rejected(self, account: str) -> None:
        with self._lock:
            self.spool_rejected[account] = self.spool_rejected.get(account, 0) + 1

    def succeeded(self, batch: Batch, seconds: float, conflicts: Sequence[Conflict] = ()) -> None:
        now = self._now()
        with self._lock:
            for conflict in conflicts:
                key = (conflict.account_id, conflict.outcome)
                self.conflicts[key] = self.conflicts.get(key, 0) + 1
            self.writes += len(batch)
            self.bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum += seconds
            for account in batch.accounts:
                self.last_write_at[account] = now
                self.last_error.pop(account, None)

    def failed(self, batch: Batch, error: str) -> None:
        now = self._now()
        with self._lock:
            self.errors += 1
            for account in batch.accounts:
                self.last_error[account] = (error, now)

    def snapshot(self) -> tuple[int, int, list[int], float]:
        with self._lock:
            return self.writes, self.errors, list(self.bucket_counts), self.latency_sum


def describe_error(exc: BaseException) -> str:
    """The error's kind only: store errors quote document paths, which hold JIDs.
    gRPC errors name their status, SQLite errors their result code, OS errors their errno."""
    code = getattr(exc, "grpc_status_code", None) or getattr(exc, "code", None)
    name = getattr(code, "name", None)
    return f"{type(exc).__name__} ({name})" if isinstance(name, str) else error_kind(exc)


class SpoolWriter:
    def __init__(
        self,
        spool: SpoolPort,
        store: MessageStore,
        stats: StoreStats,
        backoff: Backoff | None = None,
        *,
        batch_ops: int = MAX_BATCH_OPS,
    ) -> None:
        self._spool = spool
        #: Operations taken at a time (Firestore's batches hold at most 500; a SQLite
        #: transaction of more writes each index page it touches fewer times a message).
        self._batch_ops = batch_ops
        self._store = store
        self._stats = stats
        self._backoff = backoff or Backoff(base_s=0.5, cap_s=60.0)
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        #: A wake-up is on its way to the loop (one is enough, however many messages).
        self._wake_sent = False
        self._spool_failures = Failures(
            log, "spool writer: taking or confirming a batch", "; it tries again"
        )

    def wake(self) -> None:
        """Something was spooled; safe from any thread. Called for every real message
        (a replay's batch): a wake-up on its way already is not sent again, and on the
        loop's own thread the event is set without a write to the loop's self-pipe."""
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None:
            return
        if threading.get_ident() == self._loop_thread:
            wakeup.set()  # on the loop already (a replay): no self-pipe, no callback
        elif not self._wake_sent:
            self._wake_sent = True
            loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        # cleared before the event is set: a wake() that still sees True is covered
        # by this set(), which comes after its message was spooled
        self._wake_sent = False
        assert self._wakeup is not None
        self._wakeup.set()

    async def run(self) -> None:
        """Drain, then wait to be woken (or for a thread update to become due); forever."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake_sent = False
        self._wakeup = asyncio.Event()
        while True:
            self._wakeup.clear()
            try:
                next_due = await self.drain()
            except Exception as exc:  # the spool failed (the store's errors stay in _commit)
                self._spool_failures.failed(exc)
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self._spool_failures.succeeded()
            timeout = IDLE_POLL_S if next_due is None else min(IDLE_POLL_S, next_due)
            await wait_event(self._wakeup, timeout)

    async def drain(self) -> float | None:
        """Write batches until nothing is due; returns the seconds until a waiting thread
        update is due (None: none waits).

        The next batch is taken and encoded while the previous one commits; commits
        stay one at a time and in spool order, so an edit never lands before the
        message it edits, and a failed commit discards the batch prepared behind it.
        """
        prepared = await asyncio.to_thread(self._prepare_next, None)
        while prepared.batch:
            commit = asyncio.create_task(self._commit(prepared))
            try:
                following = await asyncio.to_thread(self._prepare_next, prepared.batch)
                committed = await commit
            finally:
                if not commit.done():
                    commit.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await commit
            if committed and following.batch:
                prepared = following
            else:
                prepared = await asyncio.to_thread(self._prepare_next, None)
        return prepared.batch.next_due_s

    async def drain_once(self) -> int:
        """Write one batch now (tests). Returns how many operations it held."""
        prepared = await asyncio.to_thread(self._prepare_next, None)
        if prepared.batch:
            await self._commit(prepared)
        return len(prepared.batch)

    def _prepare_next(self, in_flight: Batch | None) -> Prepared:
        batch = self._spool.take(self._batch_ops, after=in_flight)
        if not batch:
            return Prepared(batch, None)
        return self._prepare(batch)

    def _prepare(self, batch: Batch) -> Prepared:
        """``batch`` encoded by the store; operations it can never take are set aside,
        so they do not hold up the others."""
        try:
            prepared = self._store.prepare(batch)
        except Exception as exc:  # an operation no store will ever take; the others go on
            unstorable = self._unstorable(batch)
            self._spool.discard(unstorable, describe_error(exc))
            rest = Batch(
                [m for m in batch.messages if m not in unstorable.messages],
                [t for t in batch.threads if t not in unstorable.threads],
                batch.next_due_s,
            )
            prepared = self._store.prepare(rest) if rest else Prepared(rest, None)
        if prepared.too_large:
            self._spool.discard(prepared.too_large, "larger than the store takes")
        return prepared

    def _unstorable(self, batch: Batch) -> Batch:
        """The operations of ``batch`` that cannot even be encoded, each tried alone."""

        def fails(single: Batch) -> bool:
            try:
                self._store.prepare(single)
            except Exception:
                return True
            return False

        return Batch(
            [m for m in batch.messages if fails(Batch(messages=[m]))],
            [t for t in batch.threads if fails(Batch(threads=[t]))],
        )

    async def _commit(self, prepared: Prepared) -> bool:
        batch = prepared.batch
        started = time.perf_counter()
        try:
            conflicts = await self._store.commit(prepared)
        except Exception as exc:
            error = describe_error(exc)
            self._stats.failed(batch, error)
            if self._store.refuses(exc):
                return await self._isolate(batch, error)
            delay = self._backoff.next_delay()
            log.warning(
                "store %s: writing %d operations failed (%s); retrying in %.1f s",
                self._store.backend,
                len(batch),
                error,
                delay,
            )
            await asyncio.sleep(delay)
            return False
        self._stats.succeeded(batch, time.perf_counter() - started, conflicts)
        if conflicts:
            log.warning(
                "store %s: %d message operations not applied as asked (%s): an edit by"
                " someone else than the message's author, or a message id another sender"
                " used first (whatsapp_message_conflicts_total)",
                self._store.backend,
                len(conflicts),
                ", ".join(sorted({c.outcome for c in conflicts})),
            )
        try:
            await asyncio.to_thread(self._spool.ack, batch)
        except SpoolError as exc:
            # Written but still spooled: written again later, as documents keyed by
            # message id, which leaves one document each.
            self._spool_failures.failed(exc)
            await asyncio.sleep(self._backoff.next_delay())
            return False
        self._backoff.reset()
        return True

    async def _isolate(self, batch: Batch, error: str) -> bool:
        """The store refuses something ``batch`` holds: write its halves apart, in order,
        down to the single operations it refuses, which are set aside; the rest is
        written. False when a half fails for another reason (retried later)."""
        if len(batch) == 1:
            await asyncio.to_thread(self._spool.discard, batch, error)
            return True
        for half in batch.halves():
            prepared = await asyncio.to_thread(self._prepare, half)
            if prepared.batch and not await self._commit(prepared):
                return False
        return True

    @property
    def spool_error(self) -> tuple[str, float] | None:
        """The error reading or updating the spool fails with now (None: it works)."""
        return self._spool_failures.last
