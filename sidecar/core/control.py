"""What the re-pair page and Alertmanager's webhook do to live accounts."""

from __future__ import annotations

import asyncio
import logging

from sidecar.core.ports import SessionKeys
from sidecar.core.repair import PairingNotStarted, PairingRefused
from sidecar.core.supervisor import AccountSupervisor

log = logging.getLogger(__name__)


class LiveControl:
    """Acts on the live sessions for :class:`~sidecar.core.repair.Repairs`."""

    def __init__(self) -> None:
        self._supervisors: dict[str, AccountSupervisor] = {}
        self._keys: dict[str, SessionKeys] = {}

    def add(self, supervisor: AccountSupervisor, keys: SessionKeys) -> None:
        self._supervisors[supervisor.account_id] = supervisor
        self._keys[supervisor.account_id] = keys

    async def reconnect(self, account_id: str) -> None:
        supervisor = self._supervisors[account_id]
        supervisor.backoff.reset()
        supervisor.stop_session()
        supervisor.wake()

    async def start_pairing(self, account_id: str) -> None:
        supervisor = self._supervisors[account_id]
        session = supervisor.session
        supervisor.pairing = True
        if session is not None:
            await asyncio.to_thread(session.logout)
            supervisor.stop_session()
        self._keys[account_id].forget()
        supervisor.backoff.reset()
        supervisor.wake()

    async def pair_code(self, account_id: str, phone: str) -> str:
        supervisor = self._supervisors[account_id]
        session = supervisor.session
        if session is None:
            if supervisor.pairing:  # asked for, but the dial keeps failing
                raise PairingNotStarted(
                    "cannot reach WhatsApp yet: ask for a phone code once the page shows a QR code"
                )
            raise PairingNotStarted("start a re-pair first, then ask for a phone code")
        try:
            code: str = await asyncio.to_thread(session.pair_phone, phone)
        except Exception as exc:
            log.info("account=%s phone pairing refused: %s", account_id, type(exc).__name__)
            raise PairingRefused("WhatsApp refused the phone pairing request") from None
        return code
