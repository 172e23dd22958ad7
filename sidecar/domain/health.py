"""What the health API tells about an account, as typed values.

Built here from a snapshot and a verdict, in one place; turned into the JSON of
docs/reference.md ("Health object") by :mod:`sidecar.adapters.health_json` and
nowhere else. Times are Unix milliseconds, as the JSON has them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.domain.account import AccountSettings, AccountSnapshot, Status
from sidecar.domain.classify import MessageClass
from sidecar.domain.next_step import next_step
from sidecar.domain.verdict import Evidence, Verdict, effective_threshold, gather_evidence


def to_ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


@dataclass(frozen=True, slots=True)
class VerdictChange:
    """One change of an account's verdict, remembered for its health object."""

    at_ms: int
    degraded: bool
    reasons: tuple[str, ...]
    threshold_s: float

    @classmethod
    def of(
        cls, verdict: Verdict, snapshot: AccountSnapshot, settings: AccountSettings, now: float
    ) -> VerdictChange:
        return cls(
            round(now * 1000),
            verdict.degraded,
            verdict.reasons,
            effective_threshold(snapshot, settings),
        )

    @staticmethod
    def continues(last: VerdictChange | None, verdict: Verdict) -> bool:
        """Whether ``verdict`` is what ``last`` recorded (no history: a healthy verdict)."""
        if last is None:
            return not verdict.degraded and not verdict.reasons
        return (last.degraded, last.reasons) == (verdict.degraded, verdict.reasons)


@dataclass(frozen=True, slots=True)
class EvidenceView:
    """What the verdict looked at, with the last probe that arrived."""

    listening_since_ms: int | None
    silence_s: float | None
    threshold_s: float
    learned_gap_s: float | None
    protocol_during_silence: bool
    probe_misses: int
    last_probe_success_ms: int | None

    @classmethod
    def of(cls, evidence: Evidence, snapshot: AccountSnapshot) -> EvidenceView:
        return cls(
            to_ms(evidence.listening_since),
            evidence.silence_s,
            evidence.threshold_s,
            evidence.learned_gap_s,
            evidence.protocol_during_silence,
            evidence.probe_misses,
            to_ms(snapshot.last_probe_success_at),
        )


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """The message store as one account sees it. ``last_error`` is the store's (writes
    are retried); ``spool_error`` the local spool's; ``spool_write_errors`` counts the
    real messages the spool could not take, which are not stored."""

    backend: str
    backlog: int
    oldest_spooled_age_ms: int | None
    last_error: str | None
    last_error_at_ms: int | None
    last_write_at_ms: int | None
    spool_error: str | None
    spool_error_at_ms: int | None
    spool_write_errors: int


@dataclass(frozen=True, slots=True)
class AccountHealth:
    """The health object. The first seven fields are the existing backend's."""

    account_id: str
    status: Status
    last_real_message_ms: int | None
    time_since_last_real_ms: int | None
    degraded: bool
    warning: str | None
    reasons: tuple[str, ...]
    status_since_ms: int | None
    last_protocol_message_ms: int | None
    messages: dict[str, int]
    reconnects: int
    offline_sync: str
    keepalive_failing_since_ms: int | None
    silence_threshold_s: float
    timezone: str
    now_ms: int
    quiet: bool
    evidence: EvidenceView
    verdict_history: tuple[VerdictChange, ...]
    store: StoreStatus | None
    #: ``neonize`` or ``ingest`` (another gateway holds the session and is re-paired there)
    source: str = "neonize"
    #: What a person should do about the state, in one sentence (None: nothing).
    next_step: str | None = None
    #: When the account's own phone was last seen online (docs/phone.md).
    phone_last_seen_ms: int | None = None
    #: While a temporary ban of known length is in force: its end, and why WhatsApp banned.
    ban_expires_ms: int | None = None
    ban_reason: str | None = None

    @property
    def connected(self) -> bool:
        return self.status is Status.CONNECTED


def account_health(
    snapshot: AccountSnapshot,
    settings: AccountSettings,
    verdict: Verdict,
    now: float,
    history: tuple[VerdictChange, ...] = (),
    store: StoreStatus | None = None,
    unpaired: bool = False,
) -> AccountHealth:
    evidence = verdict.evidence or gather_evidence(snapshot, settings, now)
    last_real = snapshot.last_real_at
    ban = snapshot.ban if snapshot.status is Status.BANNED else None  # a stop keeps, not shows
    return AccountHealth(
        account_id=snapshot.account_id,
        status=snapshot.status,
        last_real_message_ms=to_ms(last_real),
        time_since_last_real_ms=None
        if last_real is None
        else max(0, round((now - last_real) * 1000)),
        degraded=verdict.degraded,
        warning=verdict.warning,
        reasons=verdict.reasons,
        status_since_ms=to_ms(snapshot.status_since),
        last_protocol_message_ms=to_ms(snapshot.last_protocol_at),
        messages={cls.value: snapshot.class_total(cls) for cls in MessageClass},
        reconnects=snapshot.reconnects,
        offline_sync=snapshot.offline_sync.value,
        keepalive_failing_since_ms=to_ms(snapshot.keepalive_failing_since),
        silence_threshold_s=settings.silence_threshold_s,
        timezone=settings.timezone,
        now_ms=round(now * 1000),
        quiet=snapshot.status is Status.CONNECTED and not verdict.degraded and evidence.quiet,
        evidence=EvidenceView.of(evidence, snapshot),
        verdict_history=history,
        store=store,
        source=settings.source,
        phone_last_seen_ms=to_ms(snapshot.phone_seen_at),
        ban_expires_ms=None if ban is None else to_ms(ban.expires_at),
        ban_reason=None if ban is None else ban.reason,
        next_step=next_step(snapshot.account_id, snapshot.status, settings.source, unpaired),
    )


@dataclass(frozen=True, slots=True)
class PairingView:
    """What the pair page shows: the state, the QR code while one waits, the device."""

    status: str
    qr_code: str | None
    platform: str | None
    paired_at_ms: int | None
    last_real_message_ms: int | None
    degraded: bool
    #: ``ingest``: the session is re-paired in the gateway that holds it, not on this page
    source: str = "neonize"
    #: When the supervisor tries again after a connection that failed (None: not waiting).
    next_attempt_ms: int | None = None
