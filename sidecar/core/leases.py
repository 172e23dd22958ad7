"""Which replica runs which account: the lease-keeping policy.

Two replicas connecting the same account make WhatsApp answer StreamReplaced
and both sessions suffer, so each account is run by the replica holding its
time-limited lease (:class:`~sidecar.core.ports.Leases`). Each replica aims for
its fair share (accounts divided by live replicas, rounded up), takes free or
expired leases up to it and gives back what is beyond it, so accounts spread
out and move away from a replica that dies once its leases expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from sidecar.core.ports import Leases

log = logging.getLogger(__name__)

Start = Callable[[str], Awaitable[None]]
Stop = Callable[[str], Awaitable[None]]


class LeaseKeeper:
    """Keeps this replica's fair share of account leases, and starts/stops accounts to match.

    Renewals never wait for an account to stop: stopping runs beside the cycle, the lease
    is renewed until the account has stopped and only then given back. A watchdog stops
    any account whose lease has gone unrenewed for most of its lifetime, whatever the
    cycle is doing, so this replica lets go before another may take over.
    """

    #: Share of the lease lifetime after which an unrenewed account is stopped here.
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
        self._renewed_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.lost = 0

    def holding(self) -> set[str]:
        """The accounts whose lease this replica holds, including those it is handing back."""
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
        watchdog = asyncio.create_task(self._watchdog(stopping))
        try:
            while not stopping.is_set():
                try:
                    await self.cycle()
                except Exception as exc:
                    log.warning(
                        "lease cycle failed (%s); the watchdog lets go in time", type(exc).__name__
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=self.cycle_s)
        finally:
            watchdog.cancel()
            leaving = sorted(self.held | self._leaving)
            self.held.clear()
            for account in leaving:
                await self._stop(account)
                try:
                    await self._leases.release(account)
                except Exception as exc:
                    log.warning("account=%s lease not released (%s)", account, type(exc).__name__)
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self.ttl_s)
            try:
                await self._leases.leave()
            except Exception as exc:
                log.warning("replica record not removed (%s)", type(exc).__name__)

    async def _watchdog(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            now = time.monotonic()
            for account in sorted(self.held | self._leaving):
                if now - self._renewed_at.get(account, now) > self.SAFETY * self.ttl_s:
                    self.held.discard(account)
                    self._leaving.discard(account)
                    self._renewed_at.pop(account, None)
                    self.lost += 1
                    log.warning(
                        "account=%s lease lost (not renewed in time); stopping it here", account
                    )
                    self._background(self._stop(account))
            await asyncio.sleep(min(0.5, self.cycle_s / 2))

    async def _renew(self, account: str) -> bool:
        if await self._leases.try_hold(account):
            self._renewed_at[account] = time.monotonic()
            return True
        return False

    async def cycle(self) -> None:
        await self._leases.heartbeat()
        for account in sorted(self.held | self._leaving):  # renew first, or notice it was taken
            if not await self._renew(account):
                self.held.discard(account)
                self._leaving.discard(account)
                self.lost += 1
                log.warning("account=%s lease lost; stopping it here", account)
                self._background(self._stop(account))
        target = math.ceil(len(self._accounts) / await self._leases.live_replicas())
        for account in sorted(self.held, reverse=True)[: max(0, len(self.held) - target)]:
            self.held.discard(account)
            self._leaving.add(account)
            self._background(self._hand_back(account, target))
        for account in self._accounts:
            if len(self.held) + len(self._leaving) >= target:
                break
            if account in self.held or account in self._leaving:
                continue
            if await self._renew(account):
                self.held.add(account)
                log.info("account=%s lease taken by %s", account, self._leases.replica_id)
                await self._start(account)

    async def _hand_back(self, account: str, target: int) -> None:
        """Stop the account (its lease still renewed meanwhile), then give the lease back."""
        await self._stop(account)
        if account in self._leaving:
            await self._leases.release(account)
            self._leaving.discard(account)
            self._renewed_at.pop(account, None)
            log.info("account=%s handed back for balance (target %d)", account, target)
