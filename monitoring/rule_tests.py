"""`promtool test rules` cases: for every alert, a case where it fires and one where it does not.

Written in Python so that the expected annotations are expanded from the
same templates the rules use, and stay in step with them.
"""

from __future__ import annotations

from typing import Any

from monitoring.config import MonitoringConfig
from monitoring.durations import minutes_after
from monitoring.promtool_cases import INSTANCE, Cases, series
from monitoring.rule_tests_ingest import ingest_tests
from monitoring.rule_tests_phone import phone_tests
from monitoring.rule_tests_sending import sending_tests
from monitoring.rule_tests_signals import signal_tests


def test_groups(config: MonitoringConfig) -> list[dict[str, Any]]:
    c = Cases(config)

    def s(name: str, values: str, **labels: str) -> dict[str, str]:
        return series(config, name, values, **labels)

    sales = c.account("sales", _reasons="silence_with_protocol_traffic ")
    # the sidecar's verdict turns degraded at minute 5; it pages once it held for `for`
    pages_at = minutes_after(5, config.for_degraded)
    # degraded until 6 minutes past the page, then clear for 3 minutes, then degraded again
    degraded = f"0x4 1x{pages_at + 1} 0x2 1x30"
    never = f"0x{pages_at + 40}"
    # degraded from minute 0 until 10 minutes past the page
    lasts = minutes_after(0, config.for_degraded) + 10
    return [
        {
            "name": "degraded: pages as soon as the sidecar's confirmed verdict has held for"
            f" `for` ({config.for_degraded}), stays up across a reconnect; the quiet and"
            " reconnecting look-alikes never page",
            "interval": "1m",
            "input_series": [
                s("whatsapp_session_degraded", degraded, account="sales"),
                s("whatsapp_session_degraded", never, account="quiet"),
                # reconnects every few minutes: the sidecar judges it, and never finds it deaf
                s("whatsapp_session_degraded", never, account="flappy"),
                s(
                    "whatsapp_connection_state",
                    "1x3 0 1x3 0 1x3 0 1x3 0 1x3 0 1x3 0 1x3 0 1x3 0 1x4",
                    account="flappy",
                    state="connected",
                ),
                s(
                    "whatsapp_session_degraded_reason",
                    degraded,
                    account="sales",
                    reason="silence_with_protocol_traffic",
                ),
                s(
                    "whatsapp_session_degraded_reason",
                    never,
                    account="sales",
                    reason="probe_not_received",
                ),
            ],
            "alert_rule_test": [
                c.expect("WhatsappSessionDegraded", f"{pages_at - 1}m"),
                c.expect("WhatsappSessionDegraded", f"{pages_at}m", sales),
                c.expect("WhatsappSessionDegraded", f"{pages_at + 5}m", sales),
                # keep_firing_for holds it, with the annotations of its last active evaluation
                c.expect("WhatsappSessionDegraded", f"{pages_at + 7}m", sales),
                c.expect("WhatsappSessionDegraded", f"{pages_at + 25}m", sales),
            ],
        },
        {
            "name": "degraded: resolves only after keep_firing_for once healthy for good",
            "interval": "1m",
            "input_series": [s("whatsapp_session_degraded", f"1x{lasts} 0x30", account="sales")],
            "alert_rule_test": [
                c.expect("WhatsappSessionDegraded", f"{lasts - 1}m", c.account("sales")),
                c.expect("WhatsappSessionDegraded", f"{lasts + 8}m", c.account("sales")),
                c.expect("WhatsappSessionDegraded", f"{lasts + 15}m"),
            ],
        },
        {
            "name": "no real messages: Prometheus's own judgement",
            "interval": "1m",
            "input_series": [
                # deaf: connected, protocol flowing, last real message at t=60 s
                s("whatsapp_connection_state", "1x40", account="deaf", state="connected"),
                s(
                    "whatsapp_messages_received_total",
                    "0+5x40",
                    account="deaf",
                    **{"class": "protocol", "kind": "protocolMessage.HISTORY_SYNC_NOTIFICATION"},
                ),
                s("whatsapp_last_real_message_timestamp_seconds", "60x40", account="deaf"),
                s("whatsapp_effective_silence_threshold_seconds", "300x40", account="deaf"),
                # never: connected, protocol flowing, never a real message
                s("whatsapp_connection_state", "1x40", account="never", state="connected"),
                s(
                    "whatsapp_messages_received_total",
                    "0+5x40",
                    account="never",
                    **{"class": "protocol", "kind": "protocolMessage.APP_STATE_SYNC_KEY_SHARE"},
                ),
                s("whatsapp_effective_silence_threshold_seconds", "300x40", account="never"),
                # busy: real messages keep coming
                s("whatsapp_connection_state", "1x40", account="busy", state="connected"),
                s(
                    "whatsapp_messages_received_total",
                    "0+5x40",
                    account="busy",
                    **{"class": "protocol", "kind": "protocolMessage.HISTORY_SYNC_NOTIFICATION"},
                ),
                s("whatsapp_last_real_message_timestamp_seconds", "0+60x40", account="busy"),
                s("whatsapp_effective_silence_threshold_seconds", "300x40", account="busy"),
                # probed: connected, only canary probes arrive (protocol/probe): they prove it hears
                s("whatsapp_connection_state", "1x40", account="probed", state="connected"),
                s(
                    "whatsapp_messages_received_total",
                    "0+1x40",
                    account="probed",
                    **{"class": "protocol", "kind": "probe"},
                ),
                s("whatsapp_effective_silence_threshold_seconds", "300x40", account="probed"),
                # quiet: connected, silent, and no protocol traffic either: not deaf
                s("whatsapp_connection_state", "1x40", account="quiet", state="connected"),
                s(
                    "whatsapp_messages_received_total",
                    "0x40",
                    account="quiet",
                    **{"class": "protocol", "kind": "protocolMessage.HISTORY_SYNC_NOTIFICATION"},
                ),
                s("whatsapp_last_real_message_timestamp_seconds", "60x40", account="quiet"),
                s("whatsapp_effective_silence_threshold_seconds", "300x40", account="quiet"),
            ],
            "alert_rule_test": [
                c.expect("WhatsappNoRealMessages", "5m"),
                c.expect(
                    "WhatsappNoRealMessages",
                    "30m",
                    c.account("deaf", state="connected"),
                    c.account("never", state="connected"),
                ),
            ],
        },
        {
            "name": "needs repair pages at once; a cured account does not",
            "interval": "1m",
            "input_series": [
                s("whatsapp_account_needs_repair", "0x2 1x5", account="sales"),
                s("whatsapp_account_needs_repair", "0x7", account="support"),
            ],
            "alert_rule_test": [
                c.expect("WhatsappAccountNeedsRepair", "1m"),
                c.expect("WhatsappAccountNeedsRepair", "4m", c.account("sales")),
            ],
        },
        {
            "name": "audit log writes failing: refused actions page, then clear",
            "interval": "1m",
            "input_series": [
                s("whatsapp_audit_write_errors_total", "0x5 2x20"),
                {
                    "series": f'whatsapp_audit_write_errors_total{{job="{config.job}",instance="other:9464"}}',
                    "values": "0x25",
                },
            ],
            "alert_rule_test": [
                c.expect("WhatsappAuditWriteErrors", "4m"),
                c.expect(
                    "WhatsappAuditWriteErrors",
                    "10m",
                    {"job": config.job, "instance": INSTANCE},
                    value="2",
                ),
                c.expect("WhatsappAuditWriteErrors", "20m"),
            ],
        },
        {
            "name": "logged out and unusable states page; connected does not",
            "interval": "1m",
            "input_series": [
                s("whatsapp_connection_state", "1x10", account="gone", state="logged_out"),
                s("whatsapp_connection_state", "1x10", account="taken", state="replaced"),
                s("whatsapp_connection_state", "0x10", account="sales", state="logged_out"),
                s("whatsapp_connection_state", "0x10", account="sales", state="replaced"),
            ],
            "alert_rule_test": [
                c.expect("WhatsappAccountLoggedOut", "5m", c.account("gone", state="logged_out")),
                c.expect("WhatsappAccountUnusable", "5m", c.account("taken", state="replaced")),
            ],
        },
        {
            "name": "disconnected pages after a while; a short drop does not",
            "interval": "1m",
            "input_series": [
                s("whatsapp_connection_state", "1x30", account="down", state="disconnected"),
                s(
                    "whatsapp_connection_state",
                    "0x5 1x3 0x22",
                    account="blip",
                    state="disconnected",
                ),
            ],
            "alert_rule_test": [
                c.expect(
                    "WhatsappAccountDisconnected", "20m", c.account("down", state="disconnected")
                ),
            ],
        },
        {
            "name": "reconnect storm",
            "interval": "1m",
            "input_series": [
                s("whatsapp_reconnects_total", "0+2x30", account="flapping"),
                s("whatsapp_reconnects_total", "0+0.1x30", account="steady"),
            ],
            "alert_rule_test": [
                c.expect("WhatsappReconnectStorm", "25m", c.account("flapping"), value="30")
            ],
        },
        {
            "name": "sidecar down: scrape failing",
            "interval": "1m",
            "input_series": [
                {"series": f'up{{job="{config.job}",instance="{INSTANCE}"}}', "values": "1x5 0x20"},
                {"series": f'up{{job="{config.job}",instance="other:9464"}}', "values": "1x25"},
            ],
            "alert_rule_test": [
                c.expect("WhatsappSidecarDown", "4m"),
                c.expect("WhatsappSidecarDown", "15m", {"job": config.job, "instance": INSTANCE}),
            ],
        },
        {
            "name": "sidecar down: no target at all",
            "interval": "1m",
            "input_series": [
                {"series": 'up{job="something-else",instance="x:1"}', "values": "1x20"}
            ],
            "alert_rule_test": [c.expect("WhatsappSidecarDown", "10m", {"job": config.job})],
        },
        {
            "name": "canary probes failing",
            "interval": "1m",
            "input_series": [
                s(
                    "whatsapp_probe_failures_total",
                    "0x5 1x20",
                    account="receiver",
                    reason="not_received",
                ),
                s("whatsapp_probe_failures_total", "0x25", account="sender", reason="send_failed"),
                s(
                    "whatsapp_probe_failures_total",
                    "0x5 3x20",
                    account="receiver",
                    reason="unexpected",
                ),
            ],
            "alert_rule_test": [
                c.expect("WhatsappCanaryProbeFailing", "3m"),
                c.expect(
                    "WhatsappCanaryProbeFailing",
                    "10m",
                    c.account("receiver", reason="not_received"),
                ),
            ],
        },
        {
            "name": "handler errors, store errors, messages the spool could not take",
            "interval": "1m",
            "input_series": [
                s("whatsapp_event_errors_total", "0+1x30", account="sales", event="MessageEv"),
                s("whatsapp_event_errors_total", "0x30", account="quiet", event="MessageEv"),
                s("whatsapp_store_write_errors_total", "0+3x30", backend="firestore"),
                s("whatsapp_spool_write_errors_total", "0x10 1x20", account="full-disk"),
                s("whatsapp_spool_write_errors_total", "0x30", account="fine"),
                {
                    "series": f'whatsapp_store_write_errors_total{{job="{config.job}",instance="other:9464",backend="sqlite"}}',
                    "values": "0x30",
                },
            ],
            "alert_rule_test": [
                c.expect(
                    "WhatsappEventHandlerErrors", "25m", c.account("sales", event="MessageEv")
                ),
                c.expect(
                    "WhatsappStoreWriteErrors",
                    "25m",
                    {"job": config.job, "instance": INSTANCE, "backend": "firestore"},
                ),
                c.expect("WhatsappSpoolWriteErrors", "9m"),
                c.expect("WhatsappSpoolWriteErrors", "12m", c.account("full-disk"), value="1"),
                c.expect("WhatsappSpoolWriteErrors", "25m"),
            ],
        },
        {
            "name": "spool backlog growing and too old",
            "interval": "1m",
            "input_series": [
                s("whatsapp_spool_messages", "0+10x40", account="piling"),
                s("whatsapp_spool_messages", "150x40", account="stuck-but-flat"),
                s("whatsapp_spool_oldest_message_timestamp_seconds", "0x40", account="piling"),
                s("whatsapp_spool_oldest_message_timestamp_seconds", "0+60x40", account="fresh"),
            ],
            "alert_rule_test": [
                c.expect("WhatsappSpoolBacklogGrowing", "35m", c.account("piling"), value="350"),
                c.expect("WhatsappSpoolOldestMessageTooOld", "10m"),
                c.expect(
                    "WhatsappSpoolOldestMessageTooOld", "30m", c.account("piling"), value="30m 0s"
                ),
            ],
        },
        *sending_tests(config),
        *ingest_tests(config),
        *phone_tests(config),
        *signal_tests(config),
    ]


def rule_test_file(config: MonitoringConfig) -> dict[str, Any]:
    return {
        "rule_files": ["../wa-sidecar.rules.yml"],
        "evaluation_interval": "1m",
        "tests": test_groups(config),
    }
