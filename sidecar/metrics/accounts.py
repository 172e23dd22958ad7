"""Every account's series, read at each scrape from the account snapshots.

Custom collectors, as prometheus/client_python recommends for state that
lives elsewhere: clock-dependent values (ages, the degraded verdict) are
computed at scrape time, no ``_created`` series exist, and every configured
account has its series from start-up. The series are rows of plain tuples
(:class:`~sidecar.metrics.exposition.RowCollector`), which the /metrics
exposition renders with a per-account cache; an account whose state did not
change keeps its snapshot between scrapes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from sidecar.core.service import Sidecar
from sidecar.domain.account import PROBE_LATENCY_BUCKETS, AccountSettings, AccountSnapshot, Status
from sidecar.domain.classify import UNDECODABLE, MessageClass
from sidecar.domain.delivery import DELIVERY_BUCKETS, OK, DeliverySnapshot
from sidecar.domain.verdict import REASON_TEXT, gather_evidence
from sidecar.metrics.buckets import cumulative_buckets
from sidecar.metrics.exposition import AccountRow, RowCollector, Sample
from sidecar.metrics.families import (
    CONNECTION_STATE,
    DEGRADED,
    DEGRADED_REASON,
    DELIVERY_SECONDS,
    EFFECTIVE_THRESHOLD,
    EVENT_ERRORS,
    EVENTS,
    LAST_REAL,
    LAST_REAL_AGE,
    MESSAGES,
    MESSAGES_SENT,
    PHONE_LAST_SEEN,
    PROBE_DELIVERY,
    PROBE_FAILURES,
    PROBE_SUCCESS,
    PROBES_SENT,
    QUIET,
    RECONNECTS,
    SILENCE_THRESHOLD,
    UNDELIVERED,
)

REASONS = tuple(REASON_TEXT)
PROBE_FAILURE_REASONS = ("send_failed", "not_received", "unexpected")

#: Series that exist for every account before its first event, so that rules
#: such as ``sum by (account) (rate(...{class="real"}[5m]))`` see zeros
#: instead of nothing, and an ``increase`` counts the first undecryptable message
#: or replaced stream (a series born at 1 would hide it).
INITIAL_MESSAGE_SERIES: tuple[tuple[MessageClass, str], ...] = (
    (MessageClass.REAL, "conversation"),
    (MessageClass.PROTOCOL, "protocolMessage.HISTORY_SYNC_NOTIFICATION"),
    (MessageClass.OTHER, "empty"),
    (UNDECODABLE.message_class, UNDECODABLE.kind),
)
INITIAL_EVENT_SERIES: tuple[str, ...] = ("MessageEv", "StreamReplacedEv")
INITIAL_EVENT_ERROR_SERIES: tuple[str, ...] = ("MessageEv",)

_NO_SAMPLES: tuple[Sample, ...] = ()
#: The phone's last-seen time is exported to the hour: enough for a rule of days, and
#: /metrics needs no token, so it should not tell when the owner read a chat.
PHONE_SEEN_STEP_S = 3600.0
#: An unchanged account's snapshot is reused for this long; then read afresh, so that
#: what depends on the time of day (the learned silence threshold) moves on.
REREAD_S = 60.0

Samples = Sequence[Sample]


class _Stable(NamedTuple):
    """The samples that change only when the account's state does."""

    messages: Samples
    last_real: Samples
    phone_seen: Samples
    state: Samples
    probes_sent: Samples
    probe_failures: Samples
    probe_delivery: Samples
    probe_success: Samples
    events: Samples
    event_errors: Samples
    reconnects: Samples
    silence_threshold: Samples
    sent: Samples
    delivery: Samples


class AccountCollector(RowCollector):
    """Every account's series, computed from its snapshot and verdict at scrape time."""

    families = (
        MESSAGES,
        LAST_REAL,
        LAST_REAL_AGE,
        PHONE_LAST_SEEN,
        CONNECTION_STATE,
        DEGRADED,
        DEGRADED_REASON,
        QUIET,
        EFFECTIVE_THRESHOLD,
        PROBES_SENT,
        PROBE_FAILURES,
        PROBE_DELIVERY,
        PROBE_SUCCESS,
        EVENTS,
        EVENT_ERRORS,
        RECONNECTS,
        SILENCE_THRESHOLD,
        MESSAGES_SENT,
        DELIVERY_SECONDS,
        UNDELIVERED,
    )

    def __init__(self, sidecar: Sidecar) -> None:
        self._accounts = sidecar.accounts()
        self._clock = sidecar.clock
        self._verdict = sidecar.verdict_of
        # per account: its last snapshot, when it was taken, and the samples read from it
        self._stable: dict[str, tuple[AccountSnapshot, float, _Stable]] = {}

    def rows(self) -> Iterator[AccountRow]:
        now = self._clock.now()
        cache = self._stable
        for settings, state in self._accounts:
            account = settings.account_id
            known = cache.get(account)
            if known is None or known[0].version != state.version or now - known[1] > REREAD_S:
                snap = state.snapshot(now)
                known = cache[account] = (snap, now, _stable_samples(settings, snap))
            yield account, self._row(settings, known[0], known[2], now)

    def _row(
        self, settings: AccountSettings, snap: AccountSnapshot, stable: _Stable, now: float
    ) -> tuple[Samples, ...]:
        """Every family, in the order of :attr:`families`."""
        verdict = self._verdict(snap, settings, now)
        evidence = verdict.evidence or gather_evidence(snap, settings, now)
        connected_quiet = snap.status is Status.CONNECTED and evidence.quiet
        last_real = snap.last_real_at
        return (
            stable.messages,
            stable.last_real,
            _NO_SAMPLES if last_real is None else (((), max(0.0, now - last_real)),),
            stable.phone_seen,
            stable.state,
            _FLAG[verdict.degraded],
            _reason_samples(verdict.reasons),
            _FLAG[connected_quiet and not verdict.degraded],
            (((), evidence.threshold_s),),
            stable.probes_sent,
            stable.probe_failures,
            stable.probe_delivery,
            stable.probe_success,
            stable.events,
            stable.event_errors,
            stable.reconnects,
            stable.silence_threshold,
            stable.sent,
            stable.delivery,
            (((), snap.deliveries.undelivered(now, settings.delivery_timeout_s)),),
        )


def _stable_samples(settings: AccountSettings, snap: AccountSnapshot) -> _Stable:
    has_probe, expects = settings.probe is not None, settings.expects_probes is not None
    return _Stable(
        messages=_message_samples(snap.message_counts),
        last_real=_NO_SAMPLES if snap.last_real_at is None else (((), snap.last_real_at),),
        phone_seen=_NO_SAMPLES
        if snap.phone_seen_at is None
        else (((), snap.phone_seen_at // PHONE_SEEN_STEP_S * PHONE_SEEN_STEP_S),),
        state=_STATE_SAMPLES[snap.status],
        probes_sent=(((), snap.probes_sent),) if has_probe else _NO_SAMPLES,
        probe_failures=tuple(((r,), snap.probe_failures.get(r, 0)) for r in PROBE_FAILURE_REASONS)
        if has_probe or expects
        else _NO_SAMPLES,
        probe_delivery=_probe_latency_samples(snap) if expects else _NO_SAMPLES,
        probe_success=_NO_SAMPLES
        if snap.last_probe_success_at is None
        else (((), snap.last_probe_success_at),),
        events=tuple(
            ((e,), v) for e, v in _with_initial(snap.event_counts, INITIAL_EVENT_SERIES).items()
        ),
        event_errors=tuple(
            ((e,), v)
            for e, v in _with_initial(snap.event_errors, INITIAL_EVENT_ERROR_SERIES).items()
        ),
        reconnects=(((), snap.reconnects),),
        silence_threshold=(((), settings.silence_threshold_s),),
        sent=_sent_samples(snap.deliveries),
        delivery=_delivery_samples(snap.deliveries),
    )


# Samples that take few shapes are built once: a scrape of 10,000 accounts should
# mostly re-read state, not rebuild the same tuples.
_FLAG: dict[bool, tuple[Sample, ...]] = {True: (((), 1.0),), False: (((), 0.0),)}
_STATE_SAMPLES: dict[Status, tuple[Sample, ...]] = {
    current: tuple(((s.value,), 1.0 if s is current else 0.0) for s in Status) for current in Status
}
_MESSAGE_LABELS: dict[tuple[MessageClass, str], tuple[str, str]] = {}


@functools.lru_cache(maxsize=256)
def _reason_samples(reasons: tuple[str, ...]) -> tuple[Sample, ...]:
    return tuple(((r,), 1.0 if r in reasons else 0.0) for r in REASONS)


def _message_samples(counts: dict[tuple[MessageClass, str], int]) -> tuple[Sample, ...]:
    labels = _MESSAGE_LABELS
    samples = []
    for key, value in (dict.fromkeys(INITIAL_MESSAGE_SERIES, 0) | counts).items():
        label = labels.get(key)
        if label is None:
            label = labels[key] = (key[0].value, key[1])
        samples.append((label, value))
    return tuple(samples)


def _probe_latency_samples(snap: AccountSnapshot) -> tuple[Sample, ...]:
    buckets = tuple(cumulative_buckets(PROBE_LATENCY_BUCKETS, snap.probe_latency_counts))
    return (((), (buckets, snap.probe_latency_sum)),)


def _sent_samples(deliveries: DeliverySnapshot) -> tuple[Sample, ...]:
    return tuple(((r,), n) for r, n in ({OK: 0} | deliveries.results).items())


def _delivery_samples(deliveries: DeliverySnapshot) -> tuple[Sample, ...]:
    buckets = tuple(cumulative_buckets(DELIVERY_BUCKETS, list(deliveries.latency_counts)))
    return (((), (buckets, deliveries.latency_sum)),)


def _with_initial(counts: dict[str, int], initial: tuple[str, ...]) -> dict[str, int]:
    return dict.fromkeys(initial, 0) | counts
