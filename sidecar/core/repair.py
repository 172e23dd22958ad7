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
from collections.abc import Coroutine
from typing import Any

from sidecar.core.failures import Failures, error_kind
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


class SessionElsewhere(RepairError):
    """The account's session lives in another gateway (``source: ingest``): re-pair it
    there; the sidecar holds nothing to re-pair or reconnect."""

    def __init__(self) -> None:
        super().__init__(
            "this account's session lives in another gateway (source: ingest): re-pair it there"
        )


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


class AuditUnavailable(RepairError):
    """The audit log cannot take the action's record, so the action is not taken."""


class Repairs:
    """What people and Alertmanager ask for, each action audited before it is taken.

    An action someone asks for (a re-pair, a pairing code, a remediation) is taken
    only once its audit record is written: when the log cannot be written (a full
    disk) it is refused (:class:`AuditUnavailable`), counted in
    ``whatsapp_audit_write_errors_total`` and logged at ERROR. What the sidecar only
    observes (a refusal, a failure, needs_repair) is recorded best effort: the
    failure is counted and logged, and nothing else changes. An action is counted
    (``steps``) and reported as started only once it really started."""

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
        #: Audit records that could not be written (``whatsapp_audit_write_errors_total``).
        self.audit_errors = 0
        self._audit_failures = Failures(
            log,
            "audit log: writing a record",
            "; re-pairs, pairing codes and remediations are refused while it fails"
            " (whatsapp_audit_write_errors_total)",
            level=logging.ERROR,
        )
        #: Accounts whose remediation ladder is starting or running.
        self._laddering: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the audit log ------------------------------------------------------------------

    def _audit(self, who: str, action: str, account_id: str, outcome: str) -> bool:
        """Record one action; False (counted, logged) if the record could not be written."""
        try:
            self.audit.record(who, action, account_id, outcome)
        except Exception as exc:  # whatever the log fails with, the record is not there
            self.audit_errors += 1  # on the event loop, as every caller of Repairs
            self._audit_failures.failed(exc)
            return False
        self._audit_failures.succeeded()
        return True

    def _audit_or_refuse(self, who: str, action: str, account_id: str, outcome: str) -> None:
        if not self._audit(who, action, account_id, outcome):
            raise AuditUnavailable("the audit log cannot be written; nothing was done")

    # -- the re-pair page ---------------------------------------------------------------

    async def start_repair(self, account_id: str, who: str) -> dict[str, str]:
        """Start a re-pair: at most one per ``interval`` per account. The slot is taken
        once the start is audited, and given back if the start fails."""
        self._held_here(account_id)
        now = time.monotonic()
        with self._lock:
            last = self._last_repair.get(account_id)
            if last is not None and now - last < self._interval:
                retry = self._interval - (now - last)
                self._audit(who, "regenerate_qr", account_id, "refused: too soon")
                raise RepairTooSoon("a re-pair of this account started recently", retry)
            self._audit_or_refuse(who, "regenerate_qr", account_id, "started")
            self._last_repair[account_id] = now
        log.info("account=%s re-pair started by %s", account_id, who)
        try:
            self.sidecar.clear_qr(account_id)
            await self.control.start_pairing(account_id)
        except Exception as exc:
            with self._lock:
                if self._last_repair.get(account_id) == now:  # ours: a retry may start at once
                    if last is None:
                        del self._last_repair[account_id]
                    else:
                        self._last_repair[account_id] = last
            self._audit(who, "regenerate_qr", account_id, f"failed: {error_kind(exc)}")
            raise
        self.steps[(account_id, "repair")] += 1
        return {"accountId": account_id, "status": "pairing"}

    async def pair_code(self, account_id: str, phone: str, who: str) -> dict[str, str]:
        """A phone pairing code, handed out only once its issue is in the audit log."""
        self._held_here(account_id)
        try:
            code = await self.control.pair_code(account_id, phone)
        except RepairError:
            self._audit(who, "pair_code", account_id, "failed")
            raise
        self._audit_or_refuse(who, "pair_code", account_id, "issued")
        return {"accountId": account_id, "code": code}

    def _held_here(self, account_id: str) -> None:
        if self.sidecar.settings(account_id).source == "ingest":
            raise SessionElsewhere

    # -- Alertmanager's webhook: the remediation ladder ------------------------------------

    async def on_alerts(self, payload: dict[str, Any], who: str) -> dict[str, list[str]]:
        """Start the ladder of each firing degraded account: its reconnect is done before
        the answer, which lists as started only the ladders whose reconnect was; those
        that could not start (audit log, reconnect) are listed under ``failed``."""
        started: list[str] = []
        skipped: list[str] = []
        failed: list[str] = []
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
            if self.sidecar.settings(account).source == "ingest":
                skipped.append(account)  # its session lives in another gateway
                continue
            if alert.get("status") != "firing" or account in self._laddering:
                skipped.append(account)
                continue
            self._laddering.add(account)
            try:
                await self._reconnect(account, who)
            except Exception:
                self._laddering.discard(account)
                failed.append(account)
                continue
            self._spawn(self._watch(account, who), f"remediation-{account}")
            started.append(account)
        answer = {"started": started, "skipped": skipped}
        if failed:
            answer["failed"] = failed
        return answer

    async def _reconnect(self, account_id: str, who: str) -> None:
        """The ladder's first step; raises if it was not taken."""
        self._audit_or_refuse(who, "remediate_reconnect", account_id, "started")
        log.warning("account=%s degraded: remediation step 1, reconnecting", account_id)
        try:
            await self.control.reconnect(account_id)
        except Exception as exc:
            log.error(
                "account=%s remediation: the reconnect failed: %s", account_id, error_kind(exc)
            )
            self._audit(who, "remediate_reconnect", account_id, f"failed: {error_kind(exc)}")
            raise
        self.steps[(account_id, "reconnect")] += 1

    async def _watch(self, account_id: str, who: str) -> None:
        """After the grace period: recovered, or needs_repair (a person must re-pair)."""
        try:
            await asyncio.sleep(self._grace)
            verdict = self.sidecar.judge(account_id, self.sidecar.clock.now())
            if not verdict.degraded:
                self.steps[(account_id, "recovered")] += 1
                log.info("account=%s recovered after the reconnect", account_id)
                return
            self.steps[(account_id, "needs_repair")] += 1
            self.sidecar.mark_needs_repair(account_id)
            self._audit(who, "remediate_needs_repair", account_id, "marked")
            log.warning(
                "account=%s still degraded %.0f s after a reconnect: needs_repair,"
                " a person must re-pair",
                account_id,
                self._grace,
            )
        finally:
            self._laddering.discard(account_id)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` as a task that is kept until it ends and whose error, if any,
        is logged: none ends unobserved ("Task exception was never retrieved")."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s failed: %s", task.get_name(), error_kind(exc))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
