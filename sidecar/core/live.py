"""Running the live accounts: every supervisor (or those whose lease this replica
holds), the canary probes, and an orderly shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from sidecar.core.leases import LeaseKeeper
from sidecar.core.ports import Leases
from sidecar.core.service import Sidecar
from sidecar.core.supervisor import AccountSupervisor
from sidecar.domain.account import Status

log = logging.getLogger(__name__)


class Background(Protocol):
    """A part that runs beside the accounts until stopping (a canary prober, the outbox
    worker, the receipt marker)."""

    async def run(self, stopping: asyncio.Event) -> None: ...


#: How long shutdown waits for neonize's Go calls to return.
SHUTDOWN_GRACE_S = 6.0


class LiveAccounts:
    """The event source of ``wa-sidecar run``: supervisors connect the accounts and
    their sessions deliver events to the core, until ``stop`` is set."""

    def __init__(
        self,
        sidecar: Sidecar,
        supervisors: Sequence[AccountSupervisor],
        *,
        background: Sequence[Background] = (),
        leases: Leases | None = None,
        on_stopped: Callable[[], None] = lambda: None,
    ) -> None:
        self._sidecar = sidecar
        self._supervisors = {s.account_id: s for s in supervisors}
        self._background = background
        self._on_stopped = on_stopped
        self._running: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        #: Present when replicas share the accounts through leases.
        self.keeper = (
            None
            if leases is None
            else LeaseKeeper(leases, list(self._supervisors), self.start_account, self.stop_account)
        )
        for supervisor in supervisors:
            sidecar.add_status_listener(supervisor.on_status_change)

    def held(self) -> list[str]:
        """The accounts this replica runs now (all of them, without leases)."""
        return list(self._running)

    async def start_account(self, account_id: str) -> None:
        if account_id not in self._running:
            halt = asyncio.Event()
            task = asyncio.create_task(
                self._supervisors[account_id].run(halt), name=f"supervise-{account_id}"
            )
            self._running[account_id] = (task, halt)

    async def stop_account(self, account_id: str) -> None:
        entry = self._running.pop(account_id, None)
        if entry is None:
            return
        task, halt = entry
        halt.set()
        self._supervisors[account_id].stop_session()
        await asyncio.wait({task}, timeout=SHUTDOWN_GRACE_S)
        self._sidecar.set_status(account_id, Status.STOPPED, self._sidecar.clock.now())

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.Event()
        tasks = [
            asyncio.create_task(part.run(stopping), name=type(part).__name__)
            for part in self._background
        ]
        if self.keeper is None:
            for account_id in self._supervisors:
                await self.start_account(account_id)
        else:
            tasks.append(asyncio.create_task(self.keeper.run(stopping), name="leases"))
        try:
            await stop.wait()
        finally:
            stopping.set()
            await self._shut_down(tasks)

    async def _shut_down(self, tasks: list[asyncio.Task[None]]) -> None:
        for supervisor in self._supervisors.values():
            supervisor.stop_session()
        for _, halt in self._running.values():
            halt.set()
        everything = tasks + [task for task, _ in self._running.values()]
        _, pending = (
            await asyncio.wait(everything, timeout=SHUTDOWN_GRACE_S)
            if everything
            else (set(), set())
        )
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d task(s) did not stop in time", len(pending))
        self._sidecar.log_summaries()  # the final state of each account, before it is stopped
        now = self._sidecar.clock.now()
        for account_id in self._sidecar.account_ids:
            self._sidecar.set_status(account_id, Status.STOPPED, now)
        self._on_stopped()
