"""Re-pairing and remediation: what the re-pair page and Alertmanager's webhook ask for.

The HTTP side calls :class:`Repairs`; the live event source plugs in an
:class:`AccountControl` that acts on the real neonize sessions. In replay
there is nothing to act on, so :class:`RecordingControl` only records the
requests (named as such).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, Protocol

from sidecar.adapters.audit import AuditLog
from sidecar.exposition import AccountRow, Family, RowCollector
from sidecar.service import Sidecar

log = logging.getLogger(__name__)

DEGRADED_ALERT = "WhatsappSessionDegraded"


class RepairError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class AccountControl(Protocol):
    """What can be done to a live account."""

    async def start_pairing(self, account_id: str) -> None:
        """Log the old device out where possible, drop its session, connect for pairing."""
        ...

    async def reconnect(self, account_id: str) -> None: ...

    async def pair_code(self, account_id: str, phone: str) -> str:
        """A phone pairing code for the account's pairing session."""
        ...


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
        raise RepairError(
            503, "no live WhatsApp session to pair with (this sidecar replays a capture)"
        )


class Repairs:
    def __init__(self, sidecar: Sidecar, audit: AuditLog, control: AccountControl) -> None:
        self.sidecar = sidecar
        self.audit = audit
        self.control = control
        self._interval = sidecar.config.repair.interval
        self._grace = sidecar.config.repair.grace
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
                raise RepairError(429, "a re-pair of this account started recently", retry)
            self._last_repair[account_id] = now
        self.steps[(account_id, "repair")] += 1
        self.audit.record(who, "regenerate_qr", account_id, "started")
        log.info("account=%s re-pair started by %s", account_id, who)
        state = self.sidecar.states[account_id]
        state.set_qr(None, self.sidecar.clock.now())
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
            self.sidecar.states[account_id].set_needs_repair(True)
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


REMEDIATION_STEPS = Family(
    "whatsapp_remediation_steps",
    "Re-pairs started and remediation steps taken: repair, reconnect, recovered, needs_repair.",
    "counter",
    ("step",),
)
NEEDS_REPAIR = Family(
    "whatsapp_account_needs_repair",
    "1 when a reconnect did not cure a degraded session: a person has to re-pair it.",
    "gauge",
)
STEPS = ("repair", "reconnect", "recovered", "needs_repair")


class RepairCollector(RowCollector):
    families = (REMEDIATION_STEPS, NEEDS_REPAIR)

    def __init__(self, repairs: Repairs) -> None:
        self._repairs = repairs

    def rows(self) -> Iterator[AccountRow]:
        counts = dict(self._repairs.steps)
        for account_id, state in self._repairs.sidecar.states.items():
            steps = tuple(((step,), counts.get((account_id, step), 0)) for step in STEPS)
            yield account_id, (steps, (((), 1.0 if state.needs_repair else 0.0),))
