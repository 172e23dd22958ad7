"""Supervision: when an account connects, reconnects, waits or gives up.

One :class:`AccountSupervisor` (an asyncio task) per account asks its
session factory for a connection, waits for it to end, and decides what next
(:func:`sidecar.domain.supervision.decide`): reconnect with backoff, wait for
a newly paired device, wait out a temporary ban (also one a restart remembers),
or park where a person must act, until a re-pair is asked for. An account that
is backing off, banned or parked holds no session and no thread. Before each
connection it waits for a dial slot (:mod:`sidecar.core.dialing`), which it gives
back once the session is up (connected, a QR code) or has ended: only so many
accounts dial at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sidecar.core.dialing import DialSlot, DialSlots
from sidecar.core.failures import Failures
from sidecar.core.ports import AccountLock, Session, SessionFactory
from sidecar.core.service import Sidecar
from sidecar.domain.account import Status, StatusChange
from sidecar.domain.supervision import Backoff, Decision, ban_wait_s, decide

log = logging.getLogger(__name__)

#: A session that stayed up this long earns a fresh backoff schedule.
STABLE_SESSION_S = 60.0
#: How often a parked account looks for a newly paired device, or a busy lock.
PAIRING_POLL_S = 5.0
#: Status changes after which the supervisor, not whatsmeow, decides what next.
_END_SESSION_ON = frozenset(
    {
        Status.DISCONNECTED,
        Status.LOGGED_OUT,
        Status.REPLACED,
        Status.BANNED,
        Status.OUTDATED,
        Status.QR_PENDING,
    }
)

#: Statuses in which a session stays up after its dial: the dial slot is given back.
_UP = frozenset({Status.CONNECTED, Status.QR_PENDING})


class AccountSupervisor:
    """Connects one account, reconnects it with backoff, parks it where a person must act."""

    def __init__(
        self,
        account_id: str,
        sidecar: Sidecar,
        session_factory: SessionFactory,
        *,
        backoff: Backoff | None = None,
        lock: AccountLock | None = None,
        device_id: Callable[[], str | None] = lambda: None,
        poll_s: float = PAIRING_POLL_S,
        dials: DialSlots | None = None,
    ) -> None:
        self.account_id = account_id
        self._sidecar = sidecar
        self._factory = session_factory
        self.backoff = backoff or Backoff()
        self._lock = lock
        self._device_id = device_id
        self._poll_s = poll_s
        self._dials = dials or DialSlots.unlimited()
        #: The slot of the dial under way, until the session is up or has ended.
        self._dial: DialSlot | None = None
        self._session: Session | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        #: A re-pair was asked for: QR codes are wanted, not a reason to hang up.
        self.pairing = False
        self.decisions: list[Decision] = []

    def on_status_change(self, change: StatusChange) -> None:
        """Called from whichever thread delivered the event: end the session where
        the supervisor, not whatsmeow, should decide what happens next."""
        if change.account_id != self.account_id:
            return
        if self.pairing and change.new is Status.CONNECTING:
            self.pairing = False  # paired: from here on, business as usual
        if change.new not in _END_SESSION_ON or (self.pairing and change.new is Status.QR_PENDING):
            return
        session, loop = self._session, self._loop
        if session is not None and loop is not None:
            loop.call_soon_threadsafe(session.stop)

    def on_session_event(self) -> None:
        """The session delivered an event, now handled (from whichever thread). If the
        session is up (connected, or showing a QR code) the dial is over and its slot goes
        to the next account; a refusal ends the session, and the slot comes back with it
        (its threads are still at work until then)."""
        slot, loop = self._dial, self._loop
        if slot is None or loop is None or self._sidecar.status(self.account_id) not in _UP:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: nothing waits
            loop.call_soon_threadsafe(slot.release)

    @property
    def session(self) -> Session | None:
        return self._session

    def stop_session(self) -> None:
        if self._session is not None:
            self._session.stop()

    def wake(self) -> None:
        """Cut short a backoff or a wait for pairing (loop thread only)."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        while not stopping.is_set():
            if await self._wait_out_ban(stopping):
                break
            if self._lock is not None and not await self._take_lock(stopping):
                break
            await self._note_pairing()
            slot = await self._dials.acquire(stopping, urgent=self.pairing)
            if slot is None:  # stopping while it waited its turn
                if self._lock is not None:
                    self._lock.release()
                break
            started = time.monotonic()
            try:
                self._dial = slot
                self._session = self._factory()
                await self._session.run()
            finally:
                self._dial = None
                slot.release()
                self._session = None
                if self._lock is not None:
                    self._lock.release()
            if time.monotonic() - started >= STABLE_SESSION_S:
                self.backoff.reset()
            ended = self._sidecar.snapshot(self.account_id)
            ban_end = None if ended.ban is None else ended.ban.expires_at
            decision = decide(ended.status, stopping=stopping.is_set(), ban_expires_at=ban_end)
            self.decisions.append(decision)
            if decision is Decision.STOP:
                break
            if decision in (Decision.PARK, Decision.AWAIT_BAN_EXPIRY):
                self.pairing = False  # a re-pair that ended here was answered: no retry loop
            if decision is Decision.PARK:
                log.warning(
                    "account=%s is %s: not reconnecting until a re-pair or a restart"
                    ' (see docs/operations.md, "Connection states")',
                    self.account_id,
                    ended.status,
                )
                if not await self._await_repair(stopping):
                    break
                continue
            if self.pairing and not stopping.is_set():
                if ended.status is not Status.DISCONNECTED:
                    continue  # the old session, or QR codes that ran out: at once, for a QR
                # the dial failed (WhatsApp unreachable): the same capped backoff as ever,
                # with the pair page told when the next try is
                if await self._retry_later(stopping):
                    break
                continue
            if decision is Decision.AWAIT_PAIRING:
                if not await self._await_new_device(stopping):
                    break
                self.backoff.reset()
                continue
            if await self._retry_later(stopping):
                break

    async def _note_pairing(self) -> None:
        """Tell the sidecar whether the account has a paired device in its store, so a
        never-paired account says "not paired" even while WhatsApp cannot be reached (it
        only shows a QR code once WhatsApp answers)."""
        device = await asyncio.get_running_loop().run_in_executor(None, self._device_id)
        self._sidecar.set_unpaired(self.account_id, device is None)

    async def _retry_later(self, stopping: asyncio.Event) -> bool:
        """Wait the backoff's next delay before connecting again (the pair page shows
        when); True when stopping."""
        delay = self.backoff.next_delay()
        self._sidecar.set_next_attempt(self.account_id, self._sidecar.clock.now() + delay)
        try:
            return await self._pause(stopping, delay)
        finally:
            self._sidecar.set_next_attempt(self.account_id, None)

    async def _wait_out_ban(self, stopping: asyncio.Event) -> bool:
        """Before connecting: wait until a temporary ban has ended (on the sidecar's clock),
        since WhatsApp may lengthen a ban for connections during it. Only a re-pair someone
        asks for cuts it short. True when stopping."""
        warned = False
        while not self.pairing:
            ban = self._sidecar.snapshot(self.account_id).ban
            left = 0.0 if ban is None else ban_wait_s(ban.expires_at, self._sidecar.clock.now())
            if left <= 0:
                return False
            if not warned:
                log.warning(
                    "account=%s is temporarily banned (%s): connecting again in %.0f s,"
                    " after the ban ends",
                    self.account_id,
                    ban.reason if ban is not None else "",
                    left,
                )
                warned = True
            if await self._pause(stopping, min(left, self._poll_s)):
                return True
        return False

    async def _await_repair(self, stopping: asyncio.Event) -> bool:
        """Parked: hold nothing until a re-pair is asked for (the page, the webhook). False
        when stopping."""
        while not self.pairing:
            if await self._pause(stopping, None):
                return False
        return True

    async def _pause(self, stopping: asyncio.Event, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: until woken), or less when woken; True when stopping."""
        self._wake.clear()
        waits = {asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(self._wake.wait())}
        _, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return stopping.is_set()

    async def _take_lock(self, stopping: asyncio.Event) -> bool:
        """Wait for the account lock: another process may hold it, or a full disk may
        keep its file from being made (the account connects once there is space)."""
        assert self._lock is not None
        warned = False
        failures = Failures(
            log, f"account={self.account_id} taking the account lock", "; it is tried again"
        )
        while True:
            try:
                if self._lock.acquire():
                    failures.succeeded()
                    return True
            except OSError as exc:
                failures.failed(exc)
            else:
                if not warned:
                    log.warning(
                        "account=%s is held by another wa-sidecar process (pid %s); waiting",
                        self.account_id,
                        self._lock.holder(),
                    )
                    warned = True
            if await sleep_unless(stopping, self._poll_s):
                return False

    async def _await_new_device(self, stopping: asyncio.Event) -> bool:
        """Park until a device other than the one that just failed is paired."""
        loop = asyncio.get_running_loop()
        old = await loop.run_in_executor(None, self._device_id)
        log.info(
            "account=%s needs pairing: run `wa-sidecar pair %s --config FILE`",
            self.account_id,
            self.account_id,
        )
        while True:
            if await self._pause(stopping, self._poll_s):
                return False
            if self.pairing:
                return True
            current = await loop.run_in_executor(None, self._device_id)
            if current is not None and current != old:
                log.info("account=%s has a newly paired device; connecting", self.account_id)
                return True


async def sleep_unless(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early on stop. True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    return stopping.is_set()
