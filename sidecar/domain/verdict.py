"""The degraded verdict: is a connected session deaf?

Every reader (health API, ``whatsapp_session_degraded``, logs) asks the one
rule that :data:`sidecar.core.service.VERDICT_RULE` names, so a better rule
replaces this one there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sidecar.domain.account import AccountSettings, AccountSnapshot, OfflineSync, Status


@dataclass(frozen=True, slots=True)
class Verdict:
    degraded: bool
    reasons: tuple[str, ...] = ()
    warning: str | None = None
    #: What the verdict looked at, for readers that show it (None: the rule gathers none).
    evidence: Evidence | None = None


HEALTHY = Verdict(degraded=False)

VerdictRule = Callable[[AccountSnapshot, AccountSettings, float], Verdict]


def legacy_verdict(snapshot: AccountSnapshot, settings: AccountSettings, now: float) -> Verdict:
    """The existing backend's rule, kept so that nothing regresses.

    Connected, has had a real message, and none for ``silence_threshold``.
    """
    if snapshot.status is not Status.CONNECTED or snapshot.last_real_at is None:
        return HEALTHY
    if now - snapshot.last_real_at <= settings.silence_threshold_s:
        return HEALTHY
    return Verdict(
        degraded=True,
        reasons=("silence_over_threshold",),
        warning=(
            f"No real messages received in last {describe_duration(settings.silence_threshold_s)}"
            " - session may be degraded"
        ),
    )


def describe_duration(seconds: float) -> str:
    """``300`` -> ``5 minutes``, as the existing backend words its warning."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}" + ("" if count == 1 else "s")
    return f"{seconds:g} seconds"


#: A connection whose offline backlog never completes starts listening after this.
SYNC_GRACE_S = 120.0
#: Keepalive failing this long counts as evidence on its own: past whatsmeow's own
#: cure, a reconnect once keepalives have failed for 3 minutes since the last success
#: (the first failure is reported 30-40 s after it).
KEEPALIVE_GRACE_S = 240.0

REASON_TEXT = {
    "silence_with_protocol_traffic": (
        "No real messages received in last {threshold} - session may be degraded"
    ),
    "never_real_with_protocol_traffic": (
        "No real message since the session started listening {silence} ago, though protocol"
        " traffic arrives - session may be degraded"
    ),
    "keepalive_lost": "Keepalives have failed for {keepalive}",
    "probe_not_received": "{misses} canary probes in a row did not arrive",
    "probe_send_failed": "{sends} canary probes in a row could not be sent",
    "sends_not_delivered": (
        "Messages sent to {chats} different chats in a row were not delivered within"
        " {delivery_timeout}"
    ),
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the verdict looked at, for the health object and the logs."""

    listening_since: float | None
    silence_s: float | None
    threshold_s: float
    learned_gap_s: float | None
    protocol_during_silence: bool
    probe_misses: int
    quiet: bool


def listening_since(snapshot: AccountSnapshot, now: float) -> float | None:
    if snapshot.first_listening_at is not None:
        return snapshot.first_listening_at
    if (
        snapshot.first_connected_at is not None
        and now - snapshot.first_connected_at >= SYNC_GRACE_S
    ):
        return snapshot.first_connected_at + SYNC_GRACE_S
    return None


def catching_up(snapshot: AccountSnapshot, now: float) -> bool:
    """Connected, and the connection's offline backlog may still be arriving: the real
    messages, probes and receipts it holds are not in yet, so their absence proves
    nothing (a backlog often brings protocol traffic before the messages)."""
    if snapshot.status is not Status.CONNECTED or snapshot.offline_sync is OfflineSync.COMPLETED:
        return False
    since = snapshot.connected_at if snapshot.connected_at is not None else snapshot.status_since
    return since is not None and now - since < SYNC_GRACE_S


def effective_threshold(snapshot: AccountSnapshot, settings: AccountSettings) -> float:
    """The configured threshold is a floor; an account that is usually quiet at these
    hours waits until its usual traffic would have brought several real messages."""
    learned = snapshot.learned_gap_s
    floor = settings.silence_threshold_s
    return floor if learned is None else max(floor, learned)


def probe_misses(snapshot: AccountSnapshot, settings: AccountSettings, now: float) -> int:
    """Overdue probes in a row, newest first (probes not yet due are skipped)."""
    expected = settings.expects_probes
    if expected is None:
        return 0
    misses = 0
    for record in reversed(snapshot.probes_received):
        if record.received_at is not None:
            break
        if now - record.sent_at > expected.timeout_s:
            misses += 1
    return misses


def gather_evidence(snapshot: AccountSnapshot, settings: AccountSettings, now: float) -> Evidence:
    since = listening_since(snapshot, now)
    start = snapshot.last_real_at if snapshot.last_real_at is not None else since
    silence = None if start is None else max(0.0, now - start)
    protocol = (
        start is not None
        and snapshot.last_protocol_at is not None
        and snapshot.last_protocol_at > start
    )
    probing = settings.expects_probes is not None or settings.probe is not None
    threshold = effective_threshold(snapshot, settings)
    # quiet: silent past the threshold with nothing else arriving (a message a second ago
    # is no silence at all)
    silent = silence is not None and silence >= threshold
    return Evidence(
        listening_since=since,
        silence_s=silence,
        threshold_s=threshold,
        learned_gap_s=snapshot.learned_gap_s,
        protocol_during_silence=protocol,
        probe_misses=probe_misses(snapshot, settings, now),
        quiet=silent and not protocol and not probing,
    )


def evidence_verdict(snapshot: AccountSnapshot, settings: AccountSettings, now: float) -> Verdict:
    """Degraded only on evidence that the session is deaf, never on silence alone.

    Evidence, strongest first: canary probes that do not arrive (or cannot be
    sent); keepalives failing for a while; messages the server accepted that were
    not delivered to several different chats in a row; and a silence longer than the
    account's usual gap at that hour while protocol traffic keeps arriving
    (the session hears the servers but not people). A silent account with no
    protocol traffic and no probes is quiet, not degraded. Probes that do
    arrive on time prove the session hears, whatever the silence. Nothing is judged
    while a connection's offline backlog is still arriving (:func:`catching_up`).
    """
    if snapshot.status is not Status.CONNECTED:
        return HEALTHY
    evidence = gather_evidence(snapshot, settings, now)
    if catching_up(snapshot, now):
        return Verdict(degraded=False, evidence=evidence)
    reasons: list[str] = []
    expected = settings.expects_probes
    probe_proves_alive = False
    if expected is not None:
        if evidence.probe_misses >= expected.misses:
            reasons.append("probe_not_received")
        elif (
            snapshot.last_probe_success_at is not None
            and now - snapshot.last_probe_success_at <= expected.interval_s + expected.timeout_s
        ):
            probe_proves_alive = True
    if (
        settings.probe is not None
        and snapshot.probe_send_failures_in_a_row >= settings.probe.misses
    ):
        reasons.append("probe_send_failed")
    if (
        snapshot.keepalive_failing_since is not None
        and now - snapshot.keepalive_failing_since >= KEEPALIVE_GRACE_S
    ):
        reasons.append("keepalive_lost")
    if snapshot.deliveries.not_delivered_to_several_chats(now, settings.delivery_timeout_s):
        reasons.append("sends_not_delivered")
    if (
        not probe_proves_alive
        and evidence.silence_s is not None
        and evidence.protocol_during_silence
        and evidence.silence_s > evidence.threshold_s
    ):
        reasons.append(
            "silence_with_protocol_traffic"
            if snapshot.last_real_at is not None
            else "never_real_with_protocol_traffic"
        )
    if not reasons:
        return Verdict(degraded=False, evidence=evidence)
    return Verdict(
        degraded=True,
        reasons=tuple(reasons),
        warning=_warning(reasons, snapshot, settings, evidence, now),
        evidence=evidence,
    )


def _warning(
    reasons: list[str],
    snapshot: AccountSnapshot,
    settings: AccountSettings,
    evidence: Evidence,
    now: float,
) -> str:
    keepalive = (
        describe_duration(round(now - snapshot.keepalive_failing_since))
        if snapshot.keepalive_failing_since is not None
        else ""
    )
    values = {
        "threshold": describe_duration(_round_minutes(evidence.threshold_s)),
        "silence": describe_duration(_round_minutes(evidence.silence_s or 0.0)),
        "keepalive": keepalive,
        "misses": str(evidence.probe_misses),
        "sends": str(snapshot.probe_send_failures_in_a_row),
        "chats": str(snapshot.deliveries.chats_in_a_row),
        "delivery_timeout": describe_duration(settings.delivery_timeout_s),
    }
    return "; ".join(REASON_TEXT[reason].format(**values) for reason in reasons)


def _round_minutes(seconds: float) -> float:
    """Whole minutes once past one, as people say them."""
    return float(round(seconds / 60) * 60) if seconds >= 60 else float(round(seconds))
