"""Which replica runs which account: the policy that keeps the assignment.

Two replicas connecting the same account make WhatsApp answer StreamReplaced and
both sessions suffer. Replicas renew only their membership
(:class:`~sidecar.core.ports.Leases`), once per cycle; each works out from the live
members which accounts are its own (:func:`sidecar.domain.assignment.assign`) and
holds them through records written only when an account changes hands. The
handover is fenced: a replica stops an account before it releases it, and a
replica takes an account from another only once that one has released it or has
stopped being a member (docs/deploy.md, "Several replicas").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from sidecar.core.ports import Leases
from sidecar.core.waits import wait_event
from sidecar.domain.assignment import share_of

log = logging.getLogger(__name__)

Start = Callable[[str], Awaitable[None]]
Stop = Callable[[str], Awaitable[None]]

#: Account records taken at once (a replica starting with a thousand accounts).
TAKE_CONCURRENCY = 16


class LeaseKeeper:
    """Keeps this replica's share of the accounts running, and nothing else.

    Renewals never wait for an account to stop: stopping runs beside the cycle, and an
    account is released only once it has stopped. A watchdog stops every account when
    membership has gone unrenewed for most of its lifetime, whatever the cycle is
    doing, so this replica lets go before another may find it dead and take over.
    """

    #: Share of the membership lifetime after which an unrenewed replica stops all.
    SAFETY = 0.7

    def __init__(
        self,
        leases: Leases,
        accounts: Sequence[str],
        start: Start,
        stop: Stop,
    ) -> None:
        self._leases = leases
        self._accounts = sorted(accounts)
        self._start = start
        self._stop = stop
        self.held: set[str] = set()
        self._leaving: set[str] = set()
        self._renewed_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unreleased: set[str] = set()
        self._assigned: tuple[tuple[str, ...], set[str]] = ((), set())
        self._epoch = 0
        self._joined = asyncio.Event()
        self.lost = 0

    def holding(self) -> set[str]:
        """The accounts this replica holds, including those it is handing back."""
        return self.held | self._leaving

    @property
    def ttl_s(self) -> float:
        return self._leases.ttl_ms / 1000

    @property
    def cycle_s(self) -> float:
        return self.ttl_s / 3

    def _background(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, stopping: asyncio.Event) -> None:
        """Renew membership and keep the share until ``stopping``; then stop every
        account and leave. Renewals run apart from the takes and hand-backs, which may
        wait on contended records: a slow take never lets the membership lapse."""
        watchdog = asyncio.create_task(self._watchdog(stopping))
        renewals = asyncio.create_task(self._renew_every_cycle(stopping))
        try:
            while not stopping.is_set():
                if self._renewed_at is None:  # not a member yet: take nothing
                    await _first_of(stopping.wait(), self._joined.wait())
                    continue
                try:
                    await self.cycle()
                except Exception as exc:
                    log.warning("lease cycle failed (%s); trying again", type(exc).__name__)
                await wait_event(stopping, self.cycle_s)
        finally:
            await _cancelled(renewals)
            watchdog.cancel()
            leaving = sorted(self.held | self._leaving)
            self.held.clear()
            for account in leaving:
                await self._stop(account)
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self.ttl_s)
            try:
                await self._leases.leave()  # after every account stopped: all free at once
            except Exception as exc:
                log.warning("replica record not removed (%s)", type(exc).__name__)

    async def _renew_every_cycle(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.renew()
            except Exception as exc:
                log.warning(
                    "membership not renewed (%s); the watchdog lets go in time",
                    type(exc).__name__,
                )
            await wait_event(stopping, self.cycle_s)

    async def renew(self) -> None:
        """Renew this replica's membership; when it had lapsed, nothing held is ours."""
        begun = time.monotonic()
        if not await self._leases.heartbeat():
            self._let_go_of_everything("membership lapsed; another replica may run it")
        self._renewed_at = begun  # membership lasts ttl from before the renewal was asked
        self._joined.set()

    def _let_go_of_everything(self, why: str) -> None:
        self._epoch += 1  # a take under way when this happened does not count
        for account in sorted(self.held | self._leaving):
            self.held.discard(account)
            self._leaving.discard(account)
            self.lost += 1
            log.warning("account=%s lease lost (%s); stopping it here", account, why)
            self._background(self._stop(account))

    async def _watchdog(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            renewed = self._renewed_at
            if (
                renewed is not None
                and time.monotonic() - renewed > self.SAFETY * self.ttl_s
                and self.holding()
            ):
                self._let_go_of_everything("membership not renewed in time")
            await asyncio.sleep(min(0.5, self.cycle_s / 2))

    def _mine(self, replicas: list[str]) -> set[str]:
        """This replica's share, worked out again only when the members change."""
        members = tuple(sorted({*replicas, self._leases.replica_id}))
        if self._assigned[0] != members:
            self._assigned = (members, share_of(self._leases.replica_id, self._accounts, members))
        return self._assigned[1]

    async def cycle(self) -> None:
        """Hand back what is no longer this replica's, take what is (after a renewal)."""
        for account in sorted(self._unreleased - self.held):
            await self._release(account)
        mine = self._mine(await self._leases.live_replicas())
        for account in sorted(self.held - mine):
            self.held.discard(account)
            self._leaving.add(account)
            self._background(self._hand_back(account))
        wanted = [a for a in sorted(mine) if a not in self.held and a not in self._leaving]
        slots = asyncio.Semaphore(TAKE_CONCURRENCY)
        epoch = self._epoch

        async def take(account: str) -> None:
            async with slots:
                if epoch != self._epoch or not await self._leases.take(account):
                    return  # its holder has not let go yet: the next cycle asks again
            if epoch != self._epoch:
                return  # taken under a membership that lapsed meanwhile: not ours
            # held from here; a later cycle hands it back if the members changed meanwhile,
            # and the watchdog stops it with the rest if membership goes unrenewed
            self.held.add(account)
            self._unreleased.discard(account)
            log.info("account=%s lease taken by %s", account, self._leases.replica_id)
            await self._start(account)

        await asyncio.gather(*(take(a) for a in wanted))

    async def _hand_back(self, account: str) -> None:
        """Stop the account, then release it so its new replica may take it."""
        await self._stop(account)
        if account in self._leaving:
            self._leaving.discard(account)
            self._unreleased.add(account)
            await self._release(account)

    async def _release(self, account: str) -> None:
        """Release a stopped account; one that could not be is tried again each cycle
        (until then its new replica waits, and nobody runs it)."""
        try:
            await self._leases.release(account)
        except Exception as exc:
            log.warning("account=%s not released yet (%s)", account, type(exc).__name__)
            return
        self._unreleased.discard(account)
        log.info("account=%s handed back (it belongs to another replica now)", account)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _first_of(*waits: Awaitable[object]) -> None:
    """Return when the first of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
