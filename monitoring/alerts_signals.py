"""Alert rules for early signs of trouble that the deaf verdict does not see: a temporary
ban (with its end), a stream another client took, a storm of messages this device cannot
decrypt, and an account left without a paired device."""

from __future__ import annotations

from typing import Any

from monitoring.common import BY_ACCOUNT, alert_annotations, repair_line
from monitoring.config import MonitoringConfig


def account_banned(config: MonitoringConfig) -> dict[str, Any]:
    """A page with the ban's end, from ``whatsapp_temporary_ban_expiry_timestamp_seconds``
    (present only while a ban of known length is in force). A ban is a fact WhatsApp told,
    not an inference: no ``for`` is needed. It pages because the number receives and sends
    nothing until then, and what got it banned (mass sends) may still be running; nobody
    needs to restart anything, the sidecar reconnects after the end by itself.
    ``WhatsappAccountUnusable`` stays for bans of unknown length; the shipped Alertmanager
    config inhibits it while this one fires."""
    job = f'job="{config.job}"'
    return {
        "alert": "WhatsappAccountBanned",
        "expr": f"max by ({BY_ACCOUNT}) (whatsapp_temporary_ban_expiry_timestamp_seconds{{{job}}})",
        "for": config.for_banned,
        "labels": {"severity": "critical"},
        "annotations": alert_annotations(
            config,
            "whatsappaccountbanned",
            "WhatsApp account {{ $labels.account }} is banned until"
            " {{ $value | humanizeTimestamp }}",
            "WhatsApp has temporarily banned {{ $labels.account }}: it receives and sends"
            " nothing until {{ $value | humanizeTimestamp }}. The sidecar connects it again by"
            " itself a minute after that, and not before (WhatsApp may lengthen a ban for"
            " connections during it; a restart remembers the ban). Find what got it banned"
            " (the health object's banReason) and stop it before the ban ends: a second ban"
            " lasts longer.",
            repair=False,
        ),
    }


def stream_replaced(config: MonitoringConfig) -> dict[str, Any]:
    """Another client connected with this device's keys. Counted, not only read from the
    state: a stream replaced and then re-paired or restarted within a scrape or two still
    pages (``whatsapp_events_total{event="StreamReplacedEv"}`` exists at 0 from start-up, so
    the first one counts). Critical at once: someone else may be reading and sending as the
    account, and the two clients knock each other off until one stops."""
    job = f'job="{config.job}"'
    window = config.stream_replaced_window
    return {
        "alert": "WhatsappStreamReplaced",
        "expr": (
            f"(sum by ({BY_ACCOUNT}) (increase(whatsapp_events_total"
            f'{{{job},event="StreamReplacedEv"}}[{window}])) > 0)'
            f"\nor on ({BY_ACCOUNT})\n"
            f'(max by ({BY_ACCOUNT}) (whatsapp_connection_state{{{job},state="replaced"}}) == 1)'
        ),
        "for": config.for_stream_replaced,
        "labels": {"severity": "critical"},
        "annotations": alert_annotations(
            config,
            "whatsappstreamreplaced",
            "Another client is using the device keys of WhatsApp account {{ $labels.account }}",
            "WhatsApp replaced the session of {{ $labels.account }} (StreamReplaced, in the"
            f" last {window} or still): another process connected with this linked device's"
            " keys. Either a second sidecar replica holds the account (leases off, or two"
            " deployments sharing a session store), or the session store leaked. The sidecar"
            " does not reconnect it. Find and stop the other process; if none of yours, treat"
            " the store as leaked: log the device out on the phone and re-pair (runbook)."
            + repair_line(config),
            repair=True,
        ),
    }


def undecryptable_storm(config: MonitoringConfig) -> dict[str, Any]:
    """A share of the account's messages this device cannot decrypt ("Bad MAC" storms come
    before sessions break), counted as ``other``/``undecodable``: at least
    ``undecryptable_min`` in the window, so the odd one never fires, and at least
    ``undecryptable_share`` of all message events, so a busy account's usual few do not.

    A warning (a ticket), not a page: most messages still arrive, whatsmeow asks the
    sender's phone to send each failed one again (a success then arrives as a normal
    message), and the cure, a re-pair, is daytime work. When the storm makes the session
    deaf, ``WhatsappSessionDegraded`` pages for that."""
    job = f'job="{config.job}"'
    window = config.undecryptable_window
    failed = (
        f"sum by ({BY_ACCOUNT}) (increase(whatsapp_messages_received_total"
        f'{{{job},class="other",kind="undecodable"}}[{window}]))'
    )
    every = f"sum by ({BY_ACCOUNT}) (increase(whatsapp_messages_received_total{{{job}}}[{window}]))"
    return {
        "alert": "WhatsappUndecryptableStorm",
        "expr": (
            f"{failed} >= {config.undecryptable_min}"
            f"\nand on ({BY_ACCOUNT})\n"
            f"({failed}\n/ {every}\n>= {config.undecryptable_share})"
        ),
        "for": config.for_undecryptable,
        "labels": {"severity": "warning"},
        "annotations": alert_annotations(
            config,
            "whatsappundecryptablestorm",
            "Many messages to {{ $labels.account }} cannot be decrypted",
            '{{ $value | printf "%.0f" }} messages {{ $labels.account }} received in the last'
            f" {window} could not be decrypted, {config.undecryptable_share:.0%} or more of all"
            ' it received: its encryption sessions are breaking (a "Bad MAC" storm), which'
            " often comes before the session goes deaf or is logged out. Their content is not"
            " stored unless the sender's phone sends them again. Re-pair the device in working"
            " hours (runbook)." + repair_line(config),
            repair=True,
        ),
    }


def account_not_paired(config: MonitoringConfig) -> dict[str, Any]:
    """An account that stays ``qr_pending``: it has no paired device (new, or a re-pair
    nobody finished) and nothing else says so (``WhatsappAccountLoggedOut`` covers
    ``logged_out``, ``WhatsappAccountNeedsRepair`` a degraded session; the shipped
    Alertmanager config lets either inhibit this one). Its value is the account's queued
    outbox messages (0 without a send path), which wait until it is paired. A warning: a
    fresh account waiting for its phone is a chore, not an outage."""
    job = f'job="{config.job}"'
    pending = (
        f'(max by ({BY_ACCOUNT}) (whatsapp_connection_state{{{job},state="qr_pending"}}) == 1)'
    )
    queued = f'sum by ({BY_ACCOUNT}) (whatsapp_outbox_messages{{{job},status="queued"}})'
    return {
        "alert": "WhatsappAccountNotPaired",
        "expr": f"({queued}\nor on ({BY_ACCOUNT}) {pending} * 0)\nand on ({BY_ACCOUNT})\n{pending}",
        "for": config.for_not_paired,
        "labels": {"severity": "warning"},
        "annotations": alert_annotations(
            config,
            "whatsappaccountnotpaired",
            "WhatsApp account {{ $labels.account }} has no paired device",
            f"{{{{ $labels.account }}}} has waited for a QR scan for over {config.for_not_paired}:"
            " no device is paired (a new account, or a re-pair nobody finished). It receives"
            ' nothing, and {{ $value | printf "%.0f" }} messages wait in its outbox until it is'
            " paired (an ingest account is paired in its gateway)." + repair_line(config),
            repair=True,
        ),
    }


def signal_alerts(config: MonitoringConfig) -> list[dict[str, Any]]:
    return [
        account_banned(config),
        stream_replaced(config),
        undecryptable_storm(config),
        account_not_paired(config),
    ]
