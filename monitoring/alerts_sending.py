"""Alert rules for the send path (docs/sending.md): sends WhatsApp accepted that never
arrive, and an outbox that does not move while the account is connected."""

from __future__ import annotations

from typing import Any

from monitoring.common import BY_ACCOUNT, alert_annotations
from monitoring.config import MonitoringConfig


def sends_not_delivered(config: MonitoringConfig) -> dict[str, Any]:
    """Built on the sidecar's verdict, not on the raw counts: only the sidecar knows the
    undelivered sends went to several different chats, and one recipient whose phone is
    off fills ``whatsapp_sent_messages_undelivered`` just as well. The verdict's reason
    also makes ``WhatsappSessionDegraded`` page and start the remediation ladder, so this
    one is a warning (a ticket): the details for the same cause, never a second page."""
    job = f'job="{config.job}"'
    return {
        "alert": "WhatsappSendsNotDelivered",
        "expr": (
            f"max by ({BY_ACCOUNT}) (whatsapp_sent_messages_undelivered{{{job}}})"
            f"\nand on ({BY_ACCOUNT})\n"
            f"(max by ({BY_ACCOUNT}) (whatsapp_session_degraded_reason"
            f'{{{job},reason="sends_not_delivered"}}) == 1)'
        ),
        "for": config.for_sends_not_delivered,
        "keep_firing_for": config.keep_firing_for,
        "labels": {"severity": "warning"},
        "annotations": alert_annotations(
            config,
            "whatsappsendsnotdelivered",
            "Messages {{ $labels.account }} sends are accepted by WhatsApp but not delivered",
            "WhatsApp's server accepted what {{ $labels.account }} sent, but no recipient"
            " confirmed delivery in 3 or more different chats in a row within the delivery"
            ' timeout (send.delivery_timeout); {{ $value | printf "%.0f" }} accepted messages'
            " are undelivered now. One recipient whose phone is off never raises this."
            " Customers are probably not getting this account's messages. The page for this"
            " cause is WhatsappSessionDegraded (reason sends_not_delivered), which also starts"
            " the sidecar's reconnect; this ticket carries the details. Check the runbook"
            " before re-pairing: a number WhatsApp restricted does not recover by re-pairing"
            " (stop sending from it).",
            repair=True,
        ),
    }


def outbox_stuck(config: MonitoringConfig) -> dict[str, Any]:
    """Two ways an outbox stops moving while its account is connected, told apart by the
    ``cause`` label: the oldest queued message waits too long, or messages keep failing;
    either way with nothing accepted in the window, so a backlog that drains after a
    reconnect, or a few bad numbers among good sends, does not page. A disconnected or
    re-pairing account is left out: its messages are meant to wait (other alerts say why).
    """
    job = f'job="{config.job}"'
    window = config.outbox_window
    connected = f'(whatsapp_connection_state{{{job},state="connected"}} == 1)'
    accepted = (
        f"(sum by ({BY_ACCOUNT}) (increase(whatsapp_messages_sent_total"
        f'{{{job},result="ok"}}[{window}])) > 0)'
    )
    moving = f"\nand on ({BY_ACCOUNT}) {connected}\nunless on ({BY_ACCOUNT}) {accepted}"
    waiting = (
        f"max by ({BY_ACCOUNT}) (whatsapp_outbox_oldest_queued_age_seconds{{{job}}})"
        f" > {config.outbox_queued_threshold_s}"
    )
    failing = (
        f"sum by ({BY_ACCOUNT}) (delta(whatsapp_outbox_messages"
        f'{{{job},status="failed"}}[{window}])) >= {config.outbox_failed_threshold}'
    )
    return {
        "alert": "WhatsappOutboxStuck",
        "expr": (
            f'label_replace(\n{waiting}{moving},\n"cause", "queued_too_long", "", "")\nor\n'
            f'label_replace(\n{failing}{moving},\n"cause", "sends_failing", "", "")'
        ),
        "for": config.for_outbox_stuck,
        "keep_firing_for": config.keep_firing_for,
        "labels": {"severity": "critical"},
        "annotations": alert_annotations(
            config,
            "whatsappoutboxstuck",
            "Messages of {{ $labels.account }} are not leaving the outbox ({{ $labels.cause }})",
            "{{ $labels.account }} is connected, yet WhatsApp accepted none of its outbox"
            f" messages in the last {window}:"
            ' {{ if eq $labels.cause "queued_too_long" }}the oldest queued one has waited'
            " {{ $value | humanizeDuration }}{{ else }}"
            '{{ $value | printf "%.0f" }} more failed{{ end }}.'
            " The app shows them queued or failed; customers do not get them. The outbox"
            " documents' attemptCount and lastError say why (runbook).",
            repair=True,
        ),
    }


def sending_alerts(config: MonitoringConfig) -> list[dict[str, Any]]:
    return [sends_not_delivered(config), outbox_stuck(config)]
