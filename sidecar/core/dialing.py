"""How many accounts dial WhatsApp at once, per replica: slots, and jitter before each.

A connection attempt holds two threads (see :mod:`sidecar.adapters.neonize_session`)
and is a connection WhatsApp sees. After a network blip every account reconnects at
once: a thousand accounts would hold two thousand threads and hit WhatsApp together.
So each dial first waits a random part of ``jitter_s``, which spreads a storm out,
then for one of ``limit`` slots. The supervisor holds its slot from the session's
start until the session is up (connected, or showing a QR code), the attempt is over
(failed or refused, its client stopped; stopped; shut down) or ``max_hold_s`` passed,
so a dial that hangs cannot keep the others out for good. A re-pair a person asked
for skips the jitter and goes to the front of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections import deque
from typing import Any

log = logging.getLogger(__name__)

#: The longest a dial holds its slot: past it the slot goes to the next account (the
#: dial goes on; whatsmeow gives up on its own).
MAX_HOLD_S = 60.0


class DialSlot:
    """One account's permission to dial; :meth:`release` gives it back (loop thread)."""

    def __init__(self, slots: DialSlots) -> None:
        self._slots: DialSlots | None = slots
        self._timer: asyncio.TimerHandle | None = None

    @property
    def held(self) -> bool:
        return self._slots is not None

    def release(self) -> None:
        """Give the slot back; again is harmless."""
        slots, self._slots = self._slots, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if slots is not None:
            slots._released()


class DialSlots:
    """At most ``limit`` dials at once, first come first served (a re-pair first);
    ``jitter_s``: the most a dial waits, at random, before it queues."""

    def __init__(
        self,
        limit: int,
        jitter_s: float = 0.0,
        *,
        rng: random.Random | None = None,
        max_hold_s: float = MAX_HOLD_S,
    ) -> None:
        if limit < 1:
            raise ValueError("a dial limit is at least 1")
        self.limit = limit
        self.jitter_s = jitter_s
        self.max_hold_s = max_hold_s
        self._rng = rng or random.SystemRandom()
        self._waiters: deque[asyncio.Future[DialSlot]] = deque()
        self._in_progress = 0

    @classmethod
    def unlimited(cls) -> DialSlots:
        """No cap and no jitter: what a supervisor without a limiter gets."""
        return cls(sys.maxsize, max_hold_s=float("inf"))

    @property
    def in_progress(self) -> int:
        """Dials holding a slot now."""
        return self._in_progress

    @property
    def waiting(self) -> int:
        """Dials queued for a slot now (not those still in their jitter)."""
        return len(self._waiters)

    async def acquire(self, stopping: asyncio.Event, *, urgent: bool = False) -> DialSlot | None:
        """Wait the jitter (unless ``urgent``), then for a slot; None when stopping first."""
        if self.jitter_s > 0 and not urgent:
            delay = self._rng.uniform(0.0, self.jitter_s)
            if await _stopped_within(stopping, delay):
                return None
        if stopping.is_set():
            return None
        if self._in_progress < self.limit and not self.waiting:
            return self._grant()
        waiter: asyncio.Future[DialSlot] = asyncio.get_running_loop().create_future()
        if urgent:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        stop = asyncio.ensure_future(stopping.wait())
        slot: DialSlot | None = None
        try:
            waits: set[asyncio.Future[Any]] = {waiter, stop}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if _granted(waiter) and not stopping.is_set():
                slot = waiter.result()
            return slot
        finally:
            stop.cancel()
            if not waiter.done():
                waiter.cancel()
            _discard(self._waiters, waiter)
            if slot is None and _granted(waiter):
                waiter.result().release()  # stopping or cancelled: the next one dials

    def _grant(self) -> DialSlot:
        self._in_progress += 1
        slot = DialSlot(self)
        if self.max_hold_s < float("inf"):
            slot._timer = asyncio.get_running_loop().call_later(
                self.max_hold_s, self._overdue, slot
            )
        return slot

    def _overdue(self, slot: DialSlot) -> None:
        if slot.held:
            log.info(
                "a dial went %.0f s without an answer: its slot goes to the next account",
                self.max_hold_s,
            )
            slot._timer = None
            slot.release()

    def _released(self) -> None:
        self._in_progress -= 1
        while self._waiters and self._in_progress < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._grant())


def _granted(waiter: asyncio.Future[DialSlot]) -> bool:
    return waiter.done() and not waiter.cancelled()


def _discard(waiters: deque[asyncio.Future[DialSlot]], waiter: asyncio.Future[DialSlot]) -> None:
    with contextlib.suppress(ValueError):  # handed a slot: already off the queue
        waiters.remove(waiter)


async def _stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``, waking early on stop. True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    return stopping.is_set()
