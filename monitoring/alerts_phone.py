"""The alert for a phone that has been away too long (docs/phone.md): WhatsApp logs a
linked device out once the account's own phone has not been online for about 14 days,
and nothing in the session looks wrong until then."""

from __future__ import annotations

from typing import Any

from monitoring.common import BY_ACCOUNT, alert_annotations
from monitoring.config import MonitoringConfig

DAY_S = 86400
#: WhatsApp logs the linked device out about this long after the phone was last online.
LOGOUT_AFTER_S = 14 * DAY_S
#: Statuses of a paired account (an unpaired, logged-out or parked one has no phone to
#: watch: its own alerts say what is wrong).
PAIRED = "connected|connecting|disconnected"


def phone_offline(config: MonitoringConfig, severity: str, after_days: int) -> dict[str, Any]:
    """The phone unseen for more than ``after_days`` days (and, for the warning, not yet
    for the critical rule's days: one of the two fires at a time). The value is when the
    device is expected to be logged out: the last sighting plus 14 days."""
    job = f'job="{config.job}"'
    logout = (
        f"max by ({BY_ACCOUNT}) (whatsapp_primary_phone_last_seen_timestamp_seconds{{{job}}})"
        f" + {LOGOUT_AFTER_S}"
    )
    # logout - now < 14 d - after  <=>  now - last seen > after
    expr = f"({logout})\n< time() + {LOGOUT_AFTER_S - after_days * DAY_S}"
    if severity == "warning":
        expr += f"\n>= time() + {LOGOUT_AFTER_S - config.phone_critical_days * DAY_S}"
    expr += (
        f"\nand on ({BY_ACCOUNT})\n"
        f'(max by ({BY_ACCOUNT}) (whatsapp_connection_state{{{job},state=~"{PAIRED}"}}) == 1)'
    )
    return {
        "alert": "WhatsappPhoneOffline",
        "expr": expr,
        "for": config.for_phone_offline,
        "labels": {"severity": severity},
        "annotations": alert_annotations(
            config,
            "whatsappphoneoffline",
            "The phone of {{ $labels.account }} has been offline for days: WhatsApp will log"
            " this device out around {{ $value | humanizeTimestamp }}",
            "WhatsApp removes a linked device once the account's own phone has not been online"
            " for about 14 days. The sidecar last saw the phone of {{ $labels.account }} online"
            " (a message or receipt it sent, a history sync it pushed) 14 days before"
            " {{ $value | humanizeTimestamp }}, when the device is expected to be logged out;"
            " the session itself is fine until then. Open WhatsApp on the phone, with a"
            " network connection, and read a chat there; the alert clears once the sidecar"
            " sees the phone again (runbook). Once logged out, the account has to be"
            " re-paired.",
            repair=False,
        ),
    }


def phone_alerts(config: MonitoringConfig) -> list[dict[str, Any]]:
    return [
        phone_offline(config, "warning", config.phone_warning_days),
        phone_offline(config, "critical", config.phone_critical_days),
    ]
