"""Canary probes: each account with ``probe`` sends a marked text to its peer."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from sidecar.core.supervisor import AccountSupervisor, sleep_unless
from sidecar.domain.account import ProbeSettings
from sidecar.domain.probes import ProbeSent, probe_text

log = logging.getLogger(__name__)


class Prober:
    """Sends this account's canary probe to its peer every interval.

    Each try becomes a :class:`ProbeSent` event (recorded, and replayable);
    the peer's sidecar recognises the probe when it arrives.
    """

    def __init__(
        self,
        account_id: str,
        probe: ProbeSettings,
        supervisor: AccountSupervisor,
        peer_device: Callable[[], str | None],
        deliver: Callable[[Any], None],
    ) -> None:
        self.account_id = account_id
        self._probe = probe
        self._supervisor = supervisor
        self._peer_device = peer_device
        self._deliver = deliver

    async def run(self, stopping: asyncio.Event) -> None:
        while not await sleep_unless(stopping, self._probe.interval_s):
            await self.send_one()

    async def send_one(self) -> ProbeSent:
        probe_id = uuid.uuid4().hex[:16]
        session = self._supervisor.session
        device = await asyncio.to_thread(self._peer_device)
        reason: str | None = None
        if device is None:
            reason = "peer_unpaired"
        elif session is None or not session.connected:
            reason = "not_connected"
        else:
            user = device.split("@", 1)[0].split(":", 1)[0]
            try:
                await asyncio.to_thread(
                    session.send_message, f"{user}@s.whatsapp.net", probe_text(probe_id)
                )
            except Exception as exc:
                reason = "send_failed"
                log.info("account=%s probe not sent: %s", self.account_id, type(exc).__name__)
        event = ProbeSent(probe_id, self._probe.peer, ok=reason is None, reason=reason)
        self._deliver(event)
        return event
