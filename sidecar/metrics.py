"""Prometheus metrics, read at every scrape from the account snapshots.

Custom collectors, as prometheus/client_python recommends for state that
lives elsewhere: clock-dependent values (ages, the degraded verdict) are
computed at scrape time, no ``_created`` series exist, and every configured
account has its series from start-up. The per-account series are rows of
plain tuples (:class:`sidecar.exposition.RowCollector`), which the /metrics
exposition renders with a per-account cache; an account whose state did not
change keeps its snapshot between scrapes.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from sidecar.clock import Clock
from sidecar.domain.account import (
    PROBE_LATENCY_BUCKETS,
    AccountSettings,
    AccountSnapshot,
    AccountState,
    Status,
)
from sidecar.domain.classify import MessageClass
from sidecar.domain.verdict import REASON_TEXT, VerdictRule, gather_evidence
from sidecar.exposition import AccountRow, Family, RowCollector, Sample

REASONS = tuple(REASON_TEXT)
PROBE_FAILURE_REASONS = ("send_failed", "not_received", "unexpected")

#: Series that exist for every account before its first event, so that rules
#: such as ``sum by (account) (rate(...{class="real"}[5m]))`` see zeros
#: instead of nothing.
INITIAL_MESSAGE_SERIES: tuple[tuple[MessageClass, str], ...] = (
    (MessageClass.REAL, "conversation"),
    (MessageClass.PROTOCOL, "protocolMessage.HISTORY_SYNC_NOTIFICATION"),
    (MessageClass.OTHER, "empty"),
)
INITIAL_EVENT_SERIES: tuple[str, ...] = ("MessageEv",)


class ReplayErrors:
    """Capture records that could not be parsed or decoded (process-wide)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def inc(self) -> None:
        with self._lock:
            self.count += 1


MESSAGES = Family(
    "whatsapp_messages_received",
    "Message events received, by class (real, protocol, other) and content kind.",
    "counter",
    ("class", "kind"),
)
LAST_REAL = Family(
    "whatsapp_last_real_message_timestamp_seconds",
    "When the sidecar received the account's last real message (Unix time).",
    "gauge",
)
LAST_REAL_AGE = Family(
    "whatsapp_last_real_message_age_seconds",
    "Seconds since the account's last real message, at scrape time.",
    "gauge",
)
CONNECTION_STATE = Family(
    "whatsapp_connection_state",
    "1 for the account's current connection state, 0 for the others.",
    "gauge",
    ("state",),
)
DEGRADED = Family(
    "whatsapp_session_degraded",
    "1 when the sidecar judges a connected session deaf (see reasons in the health API).",
    "gauge",
)
DEGRADED_REASON = Family(
    "whatsapp_session_degraded_reason",
    "1 for each piece of evidence behind the degraded verdict, 0 for the others.",
    "gauge",
    ("reason",),
)
QUIET = Family(
    "whatsapp_session_quiet",
    "1 when a connected account is silent with no protocol traffic and no probes:"
    " quiet, not degraded.",
    "gauge",
)
EFFECTIVE_THRESHOLD = Family(
    "whatsapp_effective_silence_threshold_seconds",
    "The silence that would count as evidence now: the configured threshold, or the"
    " account's usual gap at this hour (with a margin) when that is longer.",
    "gauge",
)
PROBES_SENT = Family("whatsapp_probes_sent", "Canary probes this account tried to send.", "counter")
PROBE_FAILURES = Family(
    "whatsapp_probe_failures",
    "Canary probes that failed: send_failed (sender), not_received, unexpected (receiver).",
    "counter",
    ("reason",),
)
PROBE_DELIVERY = Family(
    "whatsapp_probe_delivery_seconds",
    "Time from a probe's send to its arrival at this account.",
    "histogram",
)
PROBE_SUCCESS = Family(
    "whatsapp_probe_last_success_timestamp_seconds",
    "When this account last received an expected probe (Unix time).",
    "gauge",
)
EVENTS = Family("whatsapp_events", "neonize events received, by class name.", "counter", ("event",))
EVENT_ERRORS = Family(
    "whatsapp_event_errors",
    "Events whose handling raised an error, by class name.",
    "counter",
    ("event",),
)
RECONNECTS = Family("whatsapp_reconnects", "Connection attempts after the first.", "counter")
SILENCE_THRESHOLD = Family(
    "whatsapp_silence_threshold_seconds",
    "The account's configured silence threshold, for rules that judge silence themselves.",
    "gauge",
)

_NO_SAMPLES: tuple[Sample, ...] = ()
#: An unchanged account's snapshot is reused for this long; then read afresh, so that
#: what depends on the time of day (the learned silence threshold) moves on.
REREAD_S = 60.0


class SidecarCollector(RowCollector):
    """Every account's series, computed from its snapshot and verdict at scrape time."""

    families = (
        MESSAGES,
        LAST_REAL,
        LAST_REAL_AGE,
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
    )

    def __init__(
        self,
        accounts: Sequence[tuple[AccountSettings, AccountState]],
        clock: Clock,
        verdict: VerdictRule,
    ) -> None:
        self._accounts = accounts
        self._clock = clock
        self._verdict = verdict
        # per account: its last snapshot, when it was taken, and the samples read from it
        self._stable: dict[str, tuple[AccountSnapshot, float, tuple[Sequence[Sample], ...]]] = {}

    def rows(self) -> Iterator[AccountRow]:
        now = self._clock.now()
        cache = self._stable
        for settings, state in self._accounts:
            account = settings.account_id
            known = cache.get(account)
            if known is None or known[0].version != state.version or now - known[1] > REREAD_S:
                snap = state.snapshot(now)
                known = cache[account] = (snap, now, self._stable_samples(settings, snap))
            yield account, self._row(settings, known[0], known[2], now)

    def _stable_samples(
        self, settings: AccountSettings, snap: AccountSnapshot
    ) -> tuple[Sequence[Sample], ...]:
        """The families that change only when the account's state does."""
        has_probe, expects = settings.probe is not None, settings.expects_probes is not None
        return (
            _message_samples(snap.message_counts),
            _NO_SAMPLES if snap.last_real_at is None else (((), snap.last_real_at),),
            _STATE_SAMPLES[snap.status],
            (((), snap.probes_sent),) if has_probe else _NO_SAMPLES,
            tuple(((r,), snap.probe_failures.get(r, 0)) for r in PROBE_FAILURE_REASONS)
            if has_probe or expects
            else _NO_SAMPLES,
            _probe_latency_samples(snap) if expects else _NO_SAMPLES,
            _NO_SAMPLES
            if snap.last_probe_success_at is None
            else (((), snap.last_probe_success_at),),
            tuple(((e,), v) for e, v in _with_initial(snap.event_counts).items()),
            tuple(((e,), v) for e, v in _with_initial(snap.event_errors).items()),
            (((), snap.reconnects),),
            (((), settings.silence_threshold_s),),
        )

    def _row(
        self,
        settings: AccountSettings,
        snap: AccountSnapshot,
        stable: tuple[Sequence[Sample], ...],
        now: float,
    ) -> tuple[Sequence[Sample], ...]:
        """Every family, in order: the stable ones and those that move with the clock."""
        verdict = self._verdict(snap, settings, now)
        evidence = verdict.evidence or gather_evidence(snap, settings, now)
        connected_quiet = snap.status is Status.CONNECTED and evidence.quiet
        last_real = snap.last_real_at
        messages, last_real_samples, state, *probes, events, errors, reconnects, threshold = stable
        return (
            messages,
            last_real_samples,
            _NO_SAMPLES if last_real is None else (((), max(0.0, now - last_real)),),
            state,
            _FLAG[verdict.degraded],
            _reason_samples(verdict.reasons),
            _FLAG[connected_quiet and not verdict.degraded],
            (((), evidence.threshold_s),),
            *probes,
            events,
            errors,
            reconnects,
            threshold,
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


class ProcessCollector(Collector):
    """The sidecar's own series: capture records it could not read, and its version."""

    def __init__(self, replay_errors: ReplayErrors, version: str) -> None:
        self._replay_errors = replay_errors
        self._version = version

    def collect(self) -> Iterator[Metric]:
        replay = CounterMetricFamily(
            "whatsapp_replay_errors", "Capture records that could not be parsed or decoded."
        )
        replay.add_metric((), self._replay_errors.count)
        build = GaugeMetricFamily(
            "whatsapp_sidecar_build_info",
            "Always 1; the version label says which build runs.",
            labels=("version",),
        )
        build.add_metric((self._version,), 1.0)
        yield from (replay, build)


def cumulative_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last one past every bound) as a histogram's cumulative
    ``(le, count)`` pairs."""
    cumulative, running = [], 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
    return cumulative


def _with_initial(counts: dict[str, int]) -> dict[str, int]:
    return dict.fromkeys(INITIAL_EVENT_SERIES, 0) | counts


def build_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry of our own: nothing global, nothing from other libraries."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry
