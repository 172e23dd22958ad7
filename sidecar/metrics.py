"""Prometheus metrics, built fresh at every scrape from the account snapshots.

One custom collector, as prometheus/client_python recommends for state that
lives elsewhere: clock-dependent values (ages, the degraded verdict) are
computed at scrape time, no ``_created`` series exist, and every configured
account has its series from start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from sidecar.clock import Clock
from sidecar.domain.account import AccountSettings, AccountState, Status
from sidecar.domain.classify import MessageClass
from sidecar.domain.verdict import VerdictRule

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
        reconnects = CounterMetricFamily(
            "whatsapp_reconnects", "Connection attempts after the first.", labels=("account",)
        )
        for settings, state in self._accounts:
            account = settings.account_id
            snap = state.snapshot()
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
        yield from (received, last_real, last_real_age, state_gauge, degraded, events, errors)
        yield from (reconnects, threshold, replay, build)


def _with_initial(counts: dict[str, int]) -> dict[str, int]:
    return dict.fromkeys(INITIAL_EVENT_SERIES, 0) | counts


def build_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry of our own: nothing global, nothing from other libraries."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry
