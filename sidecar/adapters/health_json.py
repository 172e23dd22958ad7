"""The health object as JSON: the one place its camelCase keys are spelled.

The keys and their order are the API's (docs/reference.md, "Health object"); the
first seven are the existing backend's.
"""

from __future__ import annotations

from typing import Any

from sidecar.domain.health import AccountHealth, EvidenceView, StoreStatus, VerdictChange


def health_json(health: AccountHealth) -> dict[str, Any]:
    out: dict[str, Any] = {
        "accountId": health.account_id,
        "status": health.status.value,
        "connected": health.connected,
        "lastRealMessageMs": health.last_real_message_ms,
        "timeSinceLastRealMs": health.time_since_last_real_ms,
        "isDegraded": health.degraded,
        "warning": health.warning,
        "reasons": list(health.reasons),
        "statusSinceMs": health.status_since_ms,
        "lastProtocolMessageMs": health.last_protocol_message_ms,
        "messages": dict(health.messages),
        "reconnects": health.reconnects,
        "offlineSync": health.offline_sync,
        "keepAliveFailingSinceMs": health.keepalive_failing_since_ms,
        "silenceThresholdSeconds": health.silence_threshold_s,
        "timezone": health.timezone,
        "nowMs": health.now_ms,
        "quiet": health.quiet,
        "evidence": _evidence(health.evidence),
        "verdictHistory": [_verdict_change(change) for change in health.verdict_history],
        "source": health.source,
        "nextStep": health.next_step,
        "phoneLastSeenMs": health.phone_last_seen_ms,
        "banExpiresMs": health.ban_expires_ms,
        "banReason": health.ban_reason,
    }
    if health.store is not None:
        out["store"] = _store(health.store)
    return out


def _evidence(evidence: EvidenceView) -> dict[str, Any]:
    return {
        "listeningSinceMs": evidence.listening_since_ms,
        "silenceSeconds": evidence.silence_s,
        "thresholdSeconds": evidence.threshold_s,
        "learnedGapSeconds": evidence.learned_gap_s,
        "protocolDuringSilence": evidence.protocol_during_silence,
        "probeMisses": evidence.probe_misses,
        "lastProbeSuccessMs": evidence.last_probe_success_ms,
    }


def _verdict_change(change: VerdictChange) -> dict[str, Any]:
    return {
        "atMs": change.at_ms,
        "isDegraded": change.degraded,
        "reasons": list(change.reasons),
        "thresholdSeconds": change.threshold_s,
    }


def _store(store: StoreStatus) -> dict[str, Any]:
    return {
        "backend": store.backend,
        "backlog": store.backlog,
        "oldestSpooledAgeMs": store.oldest_spooled_age_ms,
        "lastError": store.last_error,
        "lastErrorAtMs": store.last_error_at_ms,
        "lastWriteAtMs": store.last_write_at_ms,
        "spoolError": store.spool_error,
        "spoolErrorAtMs": store.spool_error_at_ms,
        "spoolWriteErrors": store.spool_write_errors,
    }
