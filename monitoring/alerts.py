"""Prometheus recording and alerting rules for wa-sidecar."""

from __future__ import annotations

from typing import Any

from monitoring.alerts_ingest import ingest_alerts
from monitoring.alerts_phone import phone_alerts
from monitoring.alerts_sending import sending_alerts
from monitoring.alerts_signals import signal_alerts
from monitoring.common import BY_ACCOUNT, alert_annotations, repair_line
from monitoring.config import MonitoringConfig

__all__ = ["BY_ACCOUNT", "RATE_BY_CLASS", "rule_groups"]

RATE_BY_CLASS = "account_class:whatsapp_messages_received:rate5m"


def rule_groups(config: MonitoringConfig) -> dict[str, Any]:
    job = f'job="{config.job}"'
    repair = repair_line(config)
    # Used by the overview dashboard: one cheap series per account and class
    # instead of a rate over every kind of message at every refresh.
    recording = [
        {
            "record": RATE_BY_CLASS,
            "expr": f"sum by ({BY_ACCOUNT}, class) (rate(whatsapp_messages_received_total{{{job}}}[5m]))",
        },
    ]
    connected = f'whatsapp_connection_state{{{job},state="connected"}} == 1'
    # probes are protocol-class but prove the session hears: they are no sign of deafness
    protocol_flowing = (
        f"sum by ({BY_ACCOUNT}) (rate(whatsapp_messages_received_total"
        f'{{{job},class="protocol",kind!="probe"}}[{config.traffic_window}])) > 0'
    )
    # the sidecar's effective threshold: the configured floor, or longer where the account's
    # learned traffic says silence is normal at these hours (so nights do not page)
    threshold = f"whatsapp_effective_silence_threshold_seconds{{{job}}}"
    silence = (
        f"(time() - whatsapp_last_real_message_timestamp_seconds{{{job}}})"
        f" > on ({BY_ACCOUNT}) {threshold}"
        f"\nor on ({BY_ACCOUNT})\n"
        f"({threshold} unless on ({BY_ACCOUNT}) whatsapp_last_real_message_timestamp_seconds{{{job}}})"
    )
    alerts = [
        {
            "alert": "WhatsappSessionDegraded",
            "expr": f"max by ({BY_ACCOUNT}) (whatsapp_session_degraded{{{job}}}) == 1",
            "for": config.for_degraded,
            "keep_firing_for": config.keep_firing_for,
            "labels": {"severity": "critical"},
            "annotations": alert_annotations(
                config,
                "whatsappsessiondegraded",
                "WhatsApp account {{ $labels.account }} is connected but deaf: messages are not"
                " getting through",
                "The sidecar judges the session of {{ $labels.account }} deaf: it stays connected,"
                " but the evidence (the reasons annotation) says messages are not getting through."
                " silence_with_protocol_traffic, never_real_with_protocol_traffic: protocol"
                " traffic arrives but no real message has come for longer than its threshold, so"
                " messages sent to this number are probably not reaching you. probe_*: the canary"
                " probes between two accounts are lost. sends_not_delivered: what it sends is"
                " accepted by WhatsApp but not delivered to several chats (the"
                " WhatsappSendsNotDelivered ticket has the details)." + repair,
                repair=True,
            )
            | {
                "reasons": (
                    "{{ range query (printf "
                    '"whatsapp_session_degraded_reason{job=%q,instance=%q,account=%q} == 1"'
                    " $labels.job $labels.instance $labels.account) }}{{ .Labels.reason }} {{ end }}"
                )
            },
        },
        {
            "alert": "WhatsappNoRealMessages",
            "expr": f"({connected})\nand on ({BY_ACCOUNT})\n({protocol_flowing})\nand on ({BY_ACCOUNT})\n({silence})",
            "for": config.for_no_real,
            "keep_firing_for": config.keep_firing_for,
            "labels": {"severity": "critical"},
            "annotations": alert_annotations(
                config,
                "whatsappnorealmessages",
                "WhatsApp account {{ $labels.account }}: protocol traffic but no real message",
                "Judged by Prometheus from the raw metrics, independently of the sidecar's own verdict:"
                " {{ $labels.account }} is connected and receives protocol traffic, but its last real"
                " message is older than its silence threshold (or there has been none)." + repair,
                repair=True,
            ),
        },
        {
            "alert": "WhatsappAccountNeedsRepair",
            "expr": f"whatsapp_account_needs_repair{{{job}}} == 1",
            "for": "0m",
            "labels": {"severity": "critical"},
            "annotations": alert_annotations(
                config,
                "whatsappaccountneedsrepair",
                "WhatsApp account {{ $labels.account }} needs a person to re-pair it",
                "The remediation ladder reconnected {{ $labels.account }} and it stayed degraded"
                " through the grace period." + repair,
                repair=True,
            ),
        },
        {
            "alert": "WhatsappAuditWriteErrors",
            "expr": f"sum by (job, instance) (increase(whatsapp_audit_write_errors_total{{{job}}}[10m])) > 0",
            "labels": {"severity": "warning"},
            "annotations": alert_annotations(
                config,
                "whatsappauditwriteerrors",
                "wa-sidecar cannot write its audit log: re-pairs and remediations are refused",
                '{{ $value | printf "%.0f" }} audit records could not be written in the last 10'
                " minutes (a full or failing disk under state_dir). Re-pairs, pairing codes and"
                " the remediation ladder's reconnects are refused until it works again.",
                repair=False,
            ),
        },
        {
            "alert": "WhatsappAccountLoggedOut",
            "expr": f'whatsapp_connection_state{{{job},state="logged_out"}} == 1',
            "for": config.for_logged_out,
            "labels": {"severity": "critical"},
            "annotations": alert_annotations(
                config,
                "whatsappaccountloggedout",
                "WhatsApp account {{ $labels.account }} was logged out",
                "The phone (or WhatsApp) removed the linked device of {{ $labels.account }}. Nothing is"
                " received until it is paired again." + repair,
                repair=True,
            ),
        },
        {
            "alert": "WhatsappAccountUnusable",
            "expr": f'whatsapp_connection_state{{{job},state=~"replaced|banned|outdated"}} == 1',
            "for": config.for_logged_out,
            "labels": {"severity": "critical"},
            "annotations": alert_annotations(
                config,
                "whatsappaccountunusable",
                "WhatsApp account {{ $labels.account }} is {{ $labels.state }}",
                "The sidecar stopped reconnecting {{ $labels.account }}: state {{ $labels.state }} needs a"
                " person (another client took the session, a temporary ban, or an outdated client).",
                repair=True,
            ),
        },
        {
            "alert": "WhatsappAccountDisconnected",
            "expr": f'whatsapp_connection_state{{{job},state=~"disconnected|connecting"}} == 1',
            "for": config.for_disconnected,
            "keep_firing_for": config.keep_firing_for,
            "labels": {"severity": "warning"},
            "annotations": alert_annotations(
                config,
                "whatsappaccountdisconnected",
                "WhatsApp account {{ $labels.account }} has not been connected for a while",
                "{{ $labels.account }} is {{ $labels.state }}; the sidecar keeps retrying with backoff."
                " Check the sidecar host's network and WhatsApp's status.",
                repair=False,
            ),
        },
        {
            "alert": "WhatsappReconnectStorm",
            "expr": (
                f"sum by ({BY_ACCOUNT}) (increase(whatsapp_reconnects_total{{{job}}}"
                f"[{config.reconnect_storm_window}])) > {config.reconnect_storm_threshold}"
            ),
            "for": config.for_reconnect_storm,
            "labels": {"severity": "warning"},
            "annotations": alert_annotations(
                config,
                "whatsappreconnectstorm",
                "WhatsApp account {{ $labels.account }} keeps reconnecting",
                '{{ $labels.account }} reconnected {{ $value | printf "%.0f" }} times in'
                f" {config.reconnect_storm_window}: an unstable network, or another client fighting"
                " over the session.",
                repair=False,
            ),
        },
        {
            "alert": "WhatsappSidecarDown",
            "expr": f"up{{{job}}} == 0\nor\nabsent(up{{{job}}})",
            "for": config.for_sidecar_down,
            "labels": {"severity": "critical"},
            "annotations": alert_annotations(
                config,
                "whatsappsidecardown",
                "wa-sidecar is down or not scraped",
                "Prometheus cannot scrape the sidecar ({{ $labels.instance }}), or has no target for"
                f" job {config.job} at all. No WhatsApp session is watched, and none may be connected.",
                repair=False,
            ),
        },
        {
            "alert": "WhatsappEventHandlerErrors",
            "expr": f"sum by ({BY_ACCOUNT}, event) (rate(whatsapp_event_errors_total{{{job}}}[10m])) > 0",
            "for": config.for_handler_errors,
            "labels": {"severity": "warning"},
            "annotations": alert_annotations(
                config,
                "whatsappeventhandlererrors",
                "wa-sidecar fails to handle {{ $labels.event }} events of {{ $labels.account }}",
                "Handling {{ $labels.event }} raises errors; those events are counted but not stored."
                " The sidecar's ERROR log lines say where.",
                repair=False,
            ),
        },
        {
            "alert": "WhatsappCanaryProbeFailing",
            "expr": (
                f"sum by ({BY_ACCOUNT}, reason) (increase(whatsapp_probe_failures_total"
                f'{{{job},reason=~"not_received|send_failed"}}[30m])) >= 1'
            ),
            "for": config.for_probe_failing,
            "labels": {"severity": "warning"},
            "annotations": alert_annotations(
                config,
                "whatsappcanaryprobefailing",
                "Canary probes of {{ $labels.account }} fail ({{ $labels.reason }})",
                "Probes between {{ $labels.account }} and its peer fail with {{ $labels.reason }}."
                " One miss is a warning; misses in a row make the receiver degraded.",
                repair=False,
            ),
        },
        {
            "alert": "WhatsappStoreWriteErrors",
            "expr": f"sum by (job, instance, backend) (rate(whatsapp_store_write_errors_total{{{job}}}[10m])) > 0",
            "for": config.for_store_errors,
            "labels": {"severity": "warning"},
            "annotations": alert_annotations(
                config,
                "whatsappstorewriteerrors",
                "wa-sidecar cannot write messages to {{ $labels.backend }}",
                "Writes to the message store keep failing; messages wait in the local spool and are"
                " retried. The health API's store.lastError says which error.",
                repair=False,
            ),
        },
        {
            "alert": "WhatsappSpoolWriteErrors",
            "expr": f"sum by (job, instance, account) (increase(whatsapp_spool_write_errors_total{{{job}}}[5m])) > 0",
            "labels": {"severity": "critical"},
            "annotations": alert_annotations(
                config,
                "whatsappspoolwriteerrors",
                "Messages of {{ $labels.account }} are being lost: the spool cannot take them",
                '{{ $value | printf "%.0f" }} real messages of {{ $labels.account }} could not be made'
                " durable in the last 5 minutes (a full or failing disk under state_dir, or damaged"
                " spool rows): they will not reach the app.",
                repair=False,
            ),
        },
        {
            "alert": "WhatsappSpoolBacklogGrowing",
            "expr": (
                f"whatsapp_spool_messages{{{job}}} > {config.spool_backlog_threshold}"
                f"\nand\nderiv(whatsapp_spool_messages{{{job}}}[15m]) > 0"
            ),
            "for": config.for_spool_growing,
            "labels": {"severity": "warning"},
            "annotations": alert_annotations(
                config,
                "whatsappspoolbackloggrowing",
                "Messages of {{ $labels.account }} pile up in the spool",
                '{{ $value | printf "%.0f" }} messages wait for the store and the number keeps growing:'
                " the store is slower than the traffic, or failing.",
                repair=False,
            ),
        },
        {
            "alert": "WhatsappSpoolOldestMessageTooOld",
            "expr": (
                f"time() - whatsapp_spool_oldest_message_timestamp_seconds{{{job}}}"
                f" > {config.spool_oldest_threshold_s}"
            ),
            "for": config.for_spool_old,
            "labels": {"severity": "critical"},
            "annotations": alert_annotations(
                config,
                "whatsappspoololdestmessagetooold",
                "Messages of {{ $labels.account }} have not reached the app for a long time",
                "The oldest spooled message of {{ $labels.account }} has waited"
                " {{ $value | humanizeDuration }}: the app does not show it yet.",
                repair=False,
            ),
        },
    ]
    alerts += sending_alerts(config) + ingest_alerts(config)
    alerts += phone_alerts(config)
    alerts += signal_alerts(config)
    return {
        "groups": [
            {"name": "wa-sidecar.recording", "rules": recording},
            {"name": "wa-sidecar.alerts", "rules": alerts},
        ]
    }
