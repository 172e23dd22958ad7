"""The outbox worker: claims the queued messages of the accounts this replica holds and
sends each through its account's session, one sender per account, at the account's
send rate (docs/sending.md, "The worker").

Every attempt is journaled before it goes out and its WhatsApp id the moment the
server accepts it (:class:`~sidecar.core.ports.SendJournal`), so a crash anywhere
never makes this replica send a message WhatsApp already took; a crash during the
send itself (the one window neonize leaves) is counted and the message sent again.
The outcome reaches the pipeline as a :class:`SendResult` (recorded in a capture,
like every event) and the outbox, with its message document, in one step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from sidecar.core.clock import Clock
from sidecar.core.failures import Failures, error_kind
from sidecar.core.outbox_counting import OutboxCounter, OutboxCounts
from sidecar.core.ports import OutboxStore, SendJournal, SendRefused, Session
from sidecar.core.supervisor import sleep_unless
from sidecar.domain import outbox
from sidecar.domain.delivery import SendResult
from sidecar.domain.outbox import OutboxItem, SendPolicy, SendRate

log = logging.getLogger(__name__)

#: Seconds from a send to the server's acceptance, per bucket.
SEND_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Items claimed in one look (the existing backend's worker takes 10).
CLAIM_BATCH = 10
#: An item is given back, unsent, when its account's rate would send it this close to
#: the end of its claim: an attempt needs time for the server's answer.
LEASE_MARGIN_S = 30.0
#: Tries to write an attempt's outcome before leaving it to the journal and the lease.
SETTLE_TRIES = 3
#: How long stopping waits for the senders (within the live accounts' grace).
STOP_WAIT_S = 5.0
#: How often the outbox is counted for the metrics (open items; the settled ones less
#: often: :mod:`sidecar.core.outbox_counting`).
COUNT_INTERVAL_S = 30.0


@dataclass
class SendStats:
    """What the worker counts, per account, for the metrics."""

    #: Per account: histogram counts per bucket of :data:`SEND_BUCKETS` (+Inf last), sum.
    durations: dict[str, tuple[list[int], float]] = field(default_factory=dict)
    #: Attempts whose outcome a crash left unknown (each was sent again).
    unknown: Counter[str] = field(default_factory=Counter)

    def observe(self, account_id: str, seconds: float) -> None:
        counts, total = self.durations.get(account_id) or ([0] * (len(SEND_BUCKETS) + 1), 0.0)
        index = next((i for i, bound in enumerate(SEND_BUCKETS) if seconds <= bound), -1)
        counts[index] += 1
        self.durations[account_id] = (counts, total + seconds)


class OutboxWorker:
    """Drains the outbox for the accounts ``held()`` names."""

    def __init__(
        self,
        store: OutboxStore,
        journal: SendJournal,
        clock: Clock,
        *,
        worker_id: str,
        sessions: Callable[[str], Session | None],
        held: Callable[[], Collection[str]],
        deliver: Callable[[str, SendResult], None],
        policy: SendPolicy,
        rate: tuple[float, int],
        poll_interval_s: float,
    ) -> None:
        self.store = store
        self._journal = journal
        self._clock = clock
        self.worker_id = worker_id
        self._sessions = sessions
        self._held = held
        self._deliver = deliver
        self.policy = policy
        self._rate_config = rate
        self._poll_s = poll_interval_s
        self.stats = SendStats()
        self._counter = OutboxCounter(store, clock)
        # a missing index or a store that is down fails every look: one line a minute
        self._claim_failures = Failures(
            log, "outbox: claiming messages", "; queued messages wait (docs/sending.md)"
        )
        self._count_failures = Failures(log, "outbox: counting messages for the metrics")
        self._rates: dict[str, SendRate] = {}
        self._queues: dict[str, deque[OutboxItem]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, list[asyncio.Future[OutboxItem]]] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        """Look at the outbox now (an item was queued here)."""
        self._wake.set()

    def connected(self, account_id: str) -> bool:
        session = self._sessions(account_id)
        return session is not None and session.connected

    async def outcome(self, item_id: str, timeout_s: float) -> OutboxItem | None:
        """What the next attempt at ``item_id`` (looked at now) made of it, or None
        after ``timeout_s``."""
        future: asyncio.Future[OutboxItem] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(item_id, []).append(future)
        self.wake()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            return None
        finally:
            waiting = self._waiters.get(item_id, [])
            with contextlib.suppress(ValueError):
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(item_id, None)

    async def run(self, stopping: asyncio.Event) -> None:
        """Claim and hand out until ``stopping``; then give back what was not sent."""
        stop = asyncio.create_task(stopping.wait())
        counting = asyncio.create_task(self._count_every(stopping), name="outbox-counts")
        try:
            while not stopping.is_set():
                try:
                    await self.claim_once()
                except Exception as exc:
                    self._claim_failures.failed(exc)
                else:
                    self._claim_failures.succeeded()
                await self._pause(stop)
        finally:
            self._stopping.set()
            stop.cancel()
            counting.cancel()
            senders = list(self._senders.values())
            if senders:  # they give back what they hold; a send under way may finish
                await asyncio.wait(senders, timeout=STOP_WAIT_S)

    async def senders_done(self) -> None:
        """Return once every account's sender has ended (what was claimed is settled)."""
        while self._senders:
            await asyncio.wait(list(self._senders.values()))

    async def _count_every(self, stopping: asyncio.Event) -> None:
        """Count apart from the claims: counting many accounts takes a while."""
        while not stopping.is_set():
            await self.count()
            await sleep_unless(stopping, COUNT_INTERVAL_S)

    async def count(self) -> None:
        """Count the held accounts' items (the metrics read the result), and let the
        journal forget what is old."""
        try:
            await asyncio.to_thread(self._journal.prune)
            await self._counter.count(self._held())
        except Exception as exc:
            self._count_failures.failed(exc)
            return
        self._count_failures.succeeded()

    @property
    def counted(self) -> OutboxCounts:
        """The outbox as last counted."""
        return self._counter.counted

    async def close(self) -> None:
        """Close the store and the journal (after :meth:`run` returned)."""
        try:
            await self.store.close()
        finally:
            await asyncio.to_thread(self._journal.close)

    async def claim_once(self) -> int:
        """Claim for each held, connected account whose sender is idle; returns how many."""
        accounts = [a for a in self._held() if a not in self._senders and self.connected(a)]
        if not accounts:
            return 0
        items = await self.store.claim(
            accounts, self._clock.now(), self.worker_id, self.policy, CLAIM_BATCH
        )
        for item in items:
            self._queues.setdefault(item.account_id, deque()).append(item)
        for account_id in {item.account_id for item in items}:
            self._senders[account_id] = asyncio.create_task(
                self._send_queue(account_id), name=f"send-{account_id}"
            )
        return len(items)

    async def _pause(self, stop: asyncio.Task[Any]) -> None:
        wake = asyncio.create_task(self._wake.wait())
        await asyncio.wait({wake, stop}, timeout=self._poll_s, return_when="FIRST_COMPLETED")
        wake.cancel()
        self._wake.clear()

    async def _send_queue(self, account_id: str) -> None:
        """Send this account's claimed items in order, at its rate."""
        queue = self._queues[account_id]
        rate = self._rates.setdefault(account_id, SendRate(*self._rate_config))
        try:
            while queue:
                item = queue.popleft()
                now = self._clock.now()
                wait = rate.wait(now)
                lease_end = item.lease_until or now
                if self._stopping.is_set() or now + wait > lease_end - LEASE_MARGIN_S:
                    await self._settle(item, outbox.released(item, now + wait))
                    continue
                if wait > 0 and await sleep_unless(self._stopping, wait):
                    await self._settle(item, outbox.released(item, self._clock.now()))
                    continue
                await self.attempt(item, rate)
        except Exception as exc:  # its text may quote a document path (a JID): the kind only
            log.error(
                "account=%s sender stopped; its claims run out: %s", account_id, error_kind(exc)
            )
        finally:
            queue.clear()
            self._senders.pop(account_id, None)
            self._wake.set()  # its next items may be due

    async def attempt(self, item: OutboxItem, rate: SendRate | None = None) -> OutboxItem:
        """One attempt at a claimed item; returns what it became."""
        account_id = item.account_id
        past = await asyncio.to_thread(self._journal.past, item.id)
        if past is not None and past.wa_id is not None:
            # WhatsApp took it before a crash kept the outbox from hearing: record, never resend
            accepted_at = past.accepted_at or self._clock.now()
            return await self._finish(item, outbox.recorded(item, past.wa_id, accepted_at))
        if past is not None:
            self.stats.unknown[account_id] += 1
            log.warning(
                "account=%s outbox item %s: an earlier attempt's outcome is unknown (the process"
                " stopped during the send); sending it again",
                account_id,
                item.id,
            )
        session = self._sessions(account_id)
        if session is None or not session.connected:
            return await self._finish(
                item, outbox.not_connected(item, self._clock.now(), self.policy)
            )
        started = self._clock.now()
        await asyncio.to_thread(self._journal.started, item, started)
        if rate is not None:
            rate.take(started)
        began = time.monotonic()
        wa_id: str | None = None
        reason = "other"
        try:
            wa_id = await asyncio.to_thread(session.send_message, item.to_jid, item.text)
        except SendRefused as exc:
            reason = exc.reason
        except Exception as exc:
            log.warning("account=%s send failed: %s", account_id, type(exc).__name__)
        self.stats.observe(account_id, time.monotonic() - began)
        now = self._clock.now()
        if wa_id is not None:
            await asyncio.to_thread(self._journal.accepted, item.id, wa_id, now)
            self._deliver(account_id, SendResult(wa_id, item.to_jid, ok=True))
            return await self._finish(item, outbox.recorded(item, wa_id, now))
        if reason != "timeout":  # a timeout may have reached WhatsApp: its row stays, unknown
            await asyncio.to_thread(self._journal.refused, item.id)
        self._deliver(account_id, SendResult(item.id, item.to_jid, ok=False, reason=reason))
        if reason == "not_connected":
            return await self._finish(item, outbox.not_connected(item, now, self.policy))
        return await self._finish(item, outbox.attempt_failed(item, now, reason, self.policy))

    async def _finish(self, claim: OutboxItem, after: OutboxItem) -> OutboxItem:
        settled = await self._settle(claim, after)
        if settled and after.status == outbox.SENT:
            await asyncio.to_thread(self._journal.settled, claim.id)
        for future in self._waiters.pop(claim.id, []):
            if not future.done():
                future.set_result(after)
        return after

    async def _settle(self, claim: OutboxItem, after: OutboxItem) -> bool:
        """Write the outcome, retrying a store error a little; a claim someone else
        holds now is left to them."""
        for attempt in range(SETTLE_TRIES):
            try:
                if await self.store.settle(claim, after):
                    if after.status in outbox.SETTLED:
                        self._counter.settled(claim.account_id)
                    return True
                log.warning(
                    "account=%s outbox item %s: its claim ran out before the outcome (%s)"
                    " was written",
                    claim.account_id,
                    claim.id,
                    after.status,
                )
                return False
            except Exception as exc:
                log.warning(
                    "account=%s outbox item %s: cannot write its outcome: %s",
                    claim.account_id,
                    claim.id,
                    error_kind(exc),
                )
                await asyncio.sleep(0.5 * 2**attempt)
        return False
