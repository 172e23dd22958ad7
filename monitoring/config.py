"""What an operator may want to change in the shipped rules and dashboards."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class MonitoringConfig:
    #: The Prometheus job that scrapes the sidecar.
    job: str = "wa-sidecar"
    #: Where people reach the sidecar's pages (re-pair links in alerts).
    external_url: str = "http://127.0.0.1:9464"
    #: The runbook; each alert links its own section. Empty: the one the sidecar serves
    #: at /runbook. Both URLs are fallbacks: alerts read the sidecar's own.
    runbook_url: str = ""
    #: How long a condition must hold before it pages (scaled down only by the tests).
    #: None for the sidecar's verdict: the sidecar confirms its evidence (verdict.confirm,
    #: 30 s) and holds it through reconnects, so a ``for`` would only delay every page
    #: (``python -m monitoring --for-degraded 5m`` for the slower pages of before).
    for_degraded: str = "0s"
    for_no_real: str = "10m"
    for_logged_out: str = "1m"
    for_disconnected: str = "10m"
    for_reconnect_storm: str = "5m"
    for_sidecar_down: str = "5m"
    for_handler_errors: str = "10m"
    #: The account's own phone unseen this many days: a warning, then a page; WhatsApp
    #: logs the device out after about 14 (docs/phone.md).
    phone_warning_days: int = 10
    phone_critical_days: int = 12
    for_phone_offline: str = "10m"
    for_probe_failing: str = "1m"
    for_store_errors: str = "10m"
    for_spool_growing: str = "15m"
    for_spool_old: str = "5m"
    #: The same as ``for_degraded``: the ticket comes and goes with the page for that cause.
    for_sends_not_delivered: str = "0s"
    for_outbox_stuck: str = "5m"
    for_ingest_silent: str = "10m"
    for_ingest_refused: str = "5m"
    #: How long a page stays up after its condition clears, so a reconnect
    #: does not resolve and re-fire it.
    keep_firing_for: str = "10m"
    #: Windows of the rate/increase expressions.
    traffic_window: str = "15m"
    reconnect_storm_window: str = "15m"
    reconnect_storm_threshold: int = 10
    spool_backlog_threshold: int = 100
    spool_oldest_threshold_s: int = 900
    #: A queued outbox message this old, while connected and nothing is accepted, is stuck.
    outbox_queued_threshold_s: int = 600
    #: Failed outbox messages in ``outbox_window`` (with none accepted) that make it stuck.
    outbox_failed_threshold: int = 3
    #: How far back the outbox alert looks for failures and for sends WhatsApp accepted.
    outbox_window: str = "15m"
    #: How far back the ingest alert looks for refused requests and unreadable messages.
    ingest_refused_window: str = "10m"
    #: Early signs (monitoring/alerts_signals.py): a ban or a replaced stream pages at once;
    #: an account waiting for a QR scan this long gets a ticket.
    for_banned: str = "0m"
    for_stream_replaced: str = "0m"
    for_undecryptable: str = "5m"
    for_not_paired: str = "30m"
    #: How long a replaced stream keeps paging after the session was taken back.
    stream_replaced_window: str = "15m"
    #: An undecryptable storm: this many in the window, and this share of all messages.
    undecryptable_window: str = "15m"
    undecryptable_min: int = 5
    undecryptable_share: float = 0.2

    @property
    def runbook(self) -> str:
        return self.runbook_url or f"{self.external_url}/runbook"

    def with_durations(self, value: str) -> MonitoringConfig:
        """Every ``for``/``keep_firing_for`` set to ``value`` (end-to-end tests)."""
        fields: dict[str, Any] = {
            name: value for name in self.__dataclass_fields__ if name.startswith(("for_", "keep_"))
        }
        return replace(self, **fields)
