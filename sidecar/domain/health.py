"""The health object of the contract, built from a snapshot and a verdict."""

from __future__ import annotations

from typing import Any

from sidecar.domain.account import AccountSettings, AccountSnapshot, Status
from sidecar.domain.classify import MessageClass
from sidecar.domain.verdict import Verdict


def to_ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def health_object(
    snapshot: AccountSnapshot, settings: AccountSettings, verdict: Verdict, now: float
) -> dict[str, Any]:
    """The first seven keys are the existing backend's; the rest are ours."""
    last_real_ms = to_ms(snapshot.last_real_at)
    since_real_ms = (
        None
        if snapshot.last_real_at is None
        else max(0, round((now - snapshot.last_real_at) * 1000))
    )
    return {
        "accountId": snapshot.account_id,
        "status": snapshot.status.value,
        "connected": snapshot.status is Status.CONNECTED,
        "lastRealMessageMs": last_real_ms,
        "timeSinceLastRealMs": since_real_ms,
        "isDegraded": verdict.degraded,
        "warning": verdict.warning,
        "reasons": list(verdict.reasons),
        "statusSinceMs": to_ms(snapshot.status_since),
        "lastProtocolMessageMs": to_ms(snapshot.last_protocol_at),
        "messages": {cls.value: snapshot.class_total(cls) for cls in MessageClass},
        "reconnects": snapshot.reconnects,
        "offlineSync": snapshot.offline_sync.value,
        "keepAliveFailingSinceMs": to_ms(snapshot.keepalive_failing_since),
        "silenceThresholdSeconds": settings.silence_threshold_s,
        "timezone": settings.timezone,
        "nowMs": to_ms(now),
    }
