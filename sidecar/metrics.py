"""Prometheus metrics, built fresh at every scrape from the account snapshots.

One custom collector, as prometheus/client_python recommends for state that
lives elsewhere: clock-dependent values (ages, the degraded verdict) are
computed at scrape time, no ``_created`` series exist, and every configured
account has its series from start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from sidecar.clock import Clock
from sidecar.domain.account import PROBE_LATENCY_BUCKETS, AccountSettings, AccountState, Status
from sidecar.domain.classify import MessageClass
from sidecar.domain.verdict import REASON_TEXT, VerdictRule, gather_evidence

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


class SidecarCollector(Collector):
    def __init__(
        self,
        accounts: Sequence[tuple[AccountSettings, AccountState]],
        clock: Clock,
        verdict: VerdictRule,
        replay_errors: ReplayErrors,
        version: str,
    ) -> None:
        self._accounts = accounts
        self._clock = clock
        self._verdict = verdict
        self._replay_errors = replay_errors
        self._version = version

    def collect(self) -> Iterator[Metric]:
        now = self._clock.now()
        received = CounterMetricFamily(
            "whatsapp_messages_received",
            "Message events received, by class (real, protocol, other) and content kind.",
            labels=("account", "class", "kind"),
        )
        last_real = GaugeMetricFamily(
            "whatsapp_last_real_message_timestamp_seconds",
            "When the sidecar received the account's last real message (Unix time).",
            labels=("account",),
        )
        last_real_age = GaugeMetricFamily(
            "whatsapp_last_real_message_age_seconds",
            "Seconds since the account's last real message, at scrape time.",
            labels=("account",),
        )
        state_gauge = GaugeMetricFamily(
            "whatsapp_connection_state",
            "1 for the account's current connection state, 0 for the others.",
            labels=("account", "state"),
        )
        degraded = GaugeMetricFamily(
            "whatsapp_session_degraded",
            "1 when the sidecar judges a connected session deaf (see reasons in the health API).",
            labels=("account",),
        )
        events = CounterMetricFamily(
            "whatsapp_events",
            "neonize events received, by class name.",
            labels=("account", "event"),
        )
        errors = CounterMetricFamily(
            "whatsapp_event_errors",
            "Events whose handling raised an error, by class name.",
            labels=("account", "event"),
        )
        threshold = GaugeMetricFamily(
            "whatsapp_silence_threshold_seconds",
            "The account's configured silence threshold, for rules that judge silence themselves.",
            labels=("account",),
        )
        reasons = GaugeMetricFamily(
            "whatsapp_session_degraded_reason",
            "1 for each piece of evidence behind the degraded verdict, 0 for the others.",
            labels=("account", "reason"),
        )
        quiet = GaugeMetricFamily(
            "whatsapp_session_quiet",
            "1 when a connected account is silent with no protocol traffic and no probes:"
            " quiet, not degraded.",
            labels=("account",),
        )
        effective = GaugeMetricFamily(
            "whatsapp_effective_silence_threshold_seconds",
            "The silence that would count as evidence now: the configured threshold, or the"
            " account's usual gap at this hour (with a margin) when that is longer.",
            labels=("account",),
        )
        probes_sent = CounterMetricFamily(
            "whatsapp_probes_sent", "Canary probes this account tried to send.", labels=("account",)
        )
        probe_failures = CounterMetricFamily(
            "whatsapp_probe_failures",
            "Canary probes that failed: send_failed (sender), not_received, unexpected (receiver).",
            labels=("account", "reason"),
        )
        probe_latency = HistogramMetricFamily(
            "whatsapp_probe_delivery_seconds",
            "Time from a probe's send to its arrival at this account.",
            labels=("account",),
        )
        probe_success = GaugeMetricFamily(
            "whatsapp_probe_last_success_timestamp_seconds",
            "When this account last received an expected probe (Unix time).",
            labels=("account",),
        )
        reconnects = CounterMetricFamily(
            "whatsapp_reconnects", "Connection attempts after the first.", labels=("account",)
        )
        for settings, state in self._accounts:
            account = settings.account_id
            snap = state.snapshot(now)
            counts = dict.fromkeys(INITIAL_MESSAGE_SERIES, 0) | snap.message_counts
            for (message_class, kind), value in counts.items():
                received.add_metric((account, message_class.value, kind), value)
            if snap.last_real_at is not None:
                last_real.add_metric((account,), snap.last_real_at)
                last_real_age.add_metric((account,), max(0.0, now - snap.last_real_at))
            for status in Status:
                state_gauge.add_metric(
                    (account, status.value), 1.0 if snap.status is status else 0.0
                )
            verdict = self._verdict(snap, settings, now)
            degraded.add_metric((account,), 1.0 if verdict.degraded else 0.0)
            for reason in REASONS:
                reasons.add_metric((account, reason), 1.0 if reason in verdict.reasons else 0.0)
            evidence = verdict.evidence or gather_evidence(snap, settings, now)
            connected_quiet = snap.status is Status.CONNECTED and evidence.quiet
            quiet.add_metric((account,), 1.0 if connected_quiet and not verdict.degraded else 0.0)
            effective.add_metric((account,), evidence.threshold_s)
            if settings.probe is not None:
                probes_sent.add_metric((account,), snap.probes_sent)
            if settings.probe is not None or settings.expects_probes is not None:
                for reason in PROBE_FAILURE_REASONS:
                    probe_failures.add_metric((account, reason), snap.probe_failures.get(reason, 0))
            if settings.expects_probes is not None:
                probe_latency.add_metric(
                    (account,),
                    cumulative_buckets(PROBE_LATENCY_BUCKETS, snap.probe_latency_counts),
                    snap.probe_latency_sum,
                )
            if snap.last_probe_success_at is not None:
                probe_success.add_metric((account,), snap.last_probe_success_at)
            for event, value in _with_initial(snap.event_counts).items():
                events.add_metric((account, event), value)
            for event, value in _with_initial(snap.event_errors).items():
                errors.add_metric((account, event), value)
            reconnects.add_metric((account,), snap.reconnects)
            threshold.add_metric((account,), settings.silence_threshold_s)
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
        yield from (received, last_real, last_real_age, state_gauge, degraded, reasons, quiet)
        yield from (effective, probes_sent, probe_failures, probe_latency, probe_success)
        yield from (events, errors)
        yield from (reconnects, threshold, replay, build)


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
