"""Re-pairing and remediation: what the re-pair page and Alertmanager's webhook ask for.

The HTTP side calls :class:`Repairs`; the composition root plugs in an
:class:`~sidecar.core.ports.AccountControl` that acts on the real sessions. In
replay there is nothing to act on, so :class:`RecordingControl` only records the
requests (named as such). Errors say what went wrong in the domain's words;
the HTTP side picks their status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from typing import Any

from sidecar.core.ports import AccountControl, Audit
from sidecar.core.service import Sidecar

log = logging.getLogger(__name__)

DEGRADED_ALERT = "WhatsappSessionDegraded"


#: Steps counted per account in ``whatsapp_remediation_steps_total``.
REMEDIATION_STEP_NAMES = ("repair", "reconnect", "recovered", "needs_repair")


class RepairError(Exception):
    """A re-pair request that cannot be done; the message is safe to show."""


class RepairTooSoon(RepairError):
    """A re-pair of the account started less than ``repair.interval`` ago."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoLiveSession(RepairError):
    """There is no live WhatsApp session to act on (a replay)."""


class PairingNotStarted(RepairError):
    """A phone code was asked for before a re-pair started a pairing session."""


class PairingRefused(RepairError):
    """WhatsApp refused the phone pairing request."""


class RecordingControl:
    """Replay has no live session to act on: requests are recorded and nothing else."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    async def start_pairing(self, account_id: str) -> None:
        self.requests.append(("start_pairing", account_id))

    async def reconnect(self, account_id: str) -> None:
        self.requests.append(("reconnect", account_id))

    async def pair_code(self, account_id: str, phone: str) -> str:
        self.requests.append(("pair_code", account_id))
        raise NoLiveSession(
            "no live WhatsApp session to pair with (this sidecar replays a capture)"
        )


class Repairs:
    def __init__(
        self,
        sidecar: Sidecar,
        audit: Audit,
        control: AccountControl,
        *,
        interval_s: float,
        grace_s: float,
    ) -> None:
        self.sidecar = sidecar
        self.audit = audit
        self.control = control
        self._interval = interval_s
        self._grace = grace_s
        self._last_repair: dict[str, float] = {}
        self._lock = threading.Lock()
        self.steps: Counter[tuple[str, str]] = Counter()
        self._ladders: dict[str, asyncio.Task[None]] = {}

    # -- the re-pair page ---------------------------------------------------------------

    async def start_repair(self, account_id: str, who: str) -> dict[str, str]:
        now = time.monotonic()
        with self._lock:
            last = self._last_repair.get(account_id)
            if last is not None and now - last < self._interval:
                retry = self._interval - (now - last)
                self.audit.record(who, "regenerate_qr", account_id, "refused: too soon")
                raise RepairTooSoon("a re-pair of this account started recently", retry)
            self._last_repair[account_id] = now
        self.steps[(account_id, "repair")] += 1
        self.audit.record(who, "regenerate_qr", account_id, "started")
        log.info("account=%s re-pair started by %s", account_id, who)
        self.sidecar.clear_qr(account_id)
        await self.control.start_pairing(account_id)
        return {"accountId": account_id, "status": "pairing"}

    async def pair_code(self, account_id: str, phone: str, who: str) -> dict[str, str]:
        try:
            code = await self.control.pair_code(account_id, phone)
        except RepairError:
            self.audit.record(who, "pair_code", account_id, "failed")
            raise
        self.audit.record(who, "pair_code", account_id, "issued")
        return {"accountId": account_id, "code": code}

    # -- Alertmanager's webhook: the remediation ladder ------------------------------------

    async def on_alerts(self, payload: dict[str, Any], who: str) -> dict[str, list[str]]:
        started: list[str] = []
        skipped: list[str] = []
        alerts = payload.get("alerts")
        for alert in alerts if isinstance(alerts, list) else []:
            labels = alert.get("labels") if isinstance(alert, dict) else None
            if not isinstance(labels, dict):
                continue
            account = labels.get("account")
            if labels.get("alertname") != DEGRADED_ALERT or not isinstance(account, str):
                continue
            if not self.sidecar.has_account(account):
                continue
            if alert.get("status") != "firing" or account in self._ladders:
                skipped.append(account)
                continue
            self._ladders[account] = asyncio.create_task(self._ladder(account, who))
            started.append(account)
        return {"started": started, "skipped": skipped}

    async def _ladder(self, account_id: str, who: str) -> None:
        try:
            self.steps[(account_id, "reconnect")] += 1
            self.audit.record(who, "remediate_reconnect", account_id, "started")
            log.warning("account=%s degraded: remediation step 1, reconnecting", account_id)
            await self.control.reconnect(account_id)
            await asyncio.sleep(self._grace)
            verdict = self.sidecar.judge(account_id, self.sidecar.clock.now())
            if not verdict.degraded:
                self.steps[(account_id, "recovered")] += 1
                log.info("account=%s recovered after the reconnect", account_id)
                return
            self.steps[(account_id, "needs_repair")] += 1
            self.sidecar.mark_needs_repair(account_id)
            self.audit.record(who, "remediate_needs_repair", account_id, "marked")
            log.warning(
                "account=%s still degraded %.0f s after a reconnect: needs_repair,"
                " a person must re-pair",
                account_id,
                self._grace,
            )
        finally:
            self._ladders.pop(account_id, None)

    async def close(self) -> None:
        for task in list(self._ladders.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
