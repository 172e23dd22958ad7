"""Alert rules that watch the watcher of an ingest account (docs/ingest.md): a gateway
that stopped posting, and posts the sidecar cannot read. Either way the sidecar cannot
tell whether the session is deaf, and no other alert says so."""

from __future__ import annotations

from typing import Any

from monitoring.common import BY_ACCOUNT, alert_annotations
from monitoring.config import MonitoringConfig


def ingest_silent(config: MonitoringConfig) -> dict[str, Any]:
    """Nothing posted for longer than the account's effective silence threshold (learned
    from its traffic, so a quiet night does not page) while the gateway's last word was
    "connected". A neonize session that dies says so; a forwarder that dies says
    nothing, and the deaf verdict needs traffic to judge: without this, a deaf session
    behind a dead forwarder is never paged. A gateway that said "closed" is left to the
    connection alerts."""
    job = f'job="{config.job}"'
    return {
        "alert": "WhatsappIngestSilent",
        "expr": (
            f"(time() - max by ({BY_ACCOUNT}) (whatsapp_ingest_last_request_timestamp_seconds{{{job}}}))"
            f"\n> on ({BY_ACCOUNT}) max by ({BY_ACCOUNT}) (whatsapp_effective_silence_threshold_seconds{{{job}}})"
            f"\nand on ({BY_ACCOUNT})\n"
            f'(whatsapp_connection_state{{{job},state="connected"}} == 1)'
        ),
        "for": config.for_ingest_silent,
        "labels": {"severity": "critical"},
        "annotations": alert_annotations(
            config,
            "whatsappingestsilent",
            "The gateway of {{ $labels.account }} has posted nothing for"
            " {{ $value | humanizeDuration }}: the sidecar cannot see this session",
            "{{ $labels.account }}'s session lives in another gateway (source: ingest), whose"
            " last word was that it is connected. Nothing has been posted to"
            " /api/ingest/.../{{ $labels.account }} for {{ $value | humanizeDuration }},"
            " longer than the account's silence threshold. The forwarder or webhook has"
            " probably stopped (the gateway restarted without it, its URL or token changed,"
            " its events were unsubscribed); until it posts again a deaf session goes"
            " unnoticed. Check the gateway's webhook settings and its log (runbook). The"
            " session itself is re-paired in the gateway, never here.",
            repair=False,
        ),
    }


def ingest_refused(config: MonitoringConfig) -> dict[str, Any]:
    """Requests refused whole, or messages in them that could not be read, by ``reason``:
    a webhook set up for the wrong format or events, or a gateway version whose JSON the
    sidecar does not read. A ticket: what was read still counts, and a gateway that
    stops posting altogether pages as ``WhatsappIngestSilent``."""
    job = f'job="{config.job}"'
    window = config.ingest_refused_window
    refused = (
        f"sum by ({BY_ACCOUNT}, reason) (increase(whatsapp_ingest_requests_refused_total"
        f"{{{job}}}[{window}])) > 0"
    )
    unreadable = (
        f"sum by ({BY_ACCOUNT}) (increase(whatsapp_ingest_events_total"
        f'{{{job},outcome="unreadable"}}[{window}])) > 0'
    )
    return {
        "alert": "WhatsappIngestRefused",
        "expr": f'{refused}\nor\nlabel_replace(\n{unreadable},\n"reason", "unreadable", "", "")',
        "for": config.for_ingest_refused,
        "labels": {"severity": "warning"},
        "annotations": alert_annotations(
            config,
            "whatsappingestrefused",
            "The sidecar cannot read what the gateway of {{ $labels.account }} posts"
            " ({{ $labels.reason }})",
            '{{ $value | printf "%.0f" }}'
            ' {{ if eq $labels.reason "unreadable" }}messages{{ else }}requests{{ end }}'
            f" from the gateway of {{{{ $labels.account }}}} in the last {window} could not"
            " be read (reason {{ $labels.reason }}); they are not measured. bad_body or"
            " unknown_event: the webhook's URL names the wrong format, or posts events the"
            " format does not hold. too_large: the gateway batches more than 8 MiB or 5,000"
            " events. unreadable: messages whose JSON is not a WhatsApp message (a gateway"
            " version the sidecar does not read). The gateway's log and the answers' error"
            " say which (runbook).",
            repair=False,
        ),
    }


def ingest_alerts(config: MonitoringConfig) -> list[dict[str, Any]]:
    return [ingest_silent(config), ingest_refused(config)]
