"""`promtool test rules` cases of the phone alert: a warning once the phone has been unseen
for 10 days, a page after 12 (never both), cleared when the phone is seen again; a phone
seen recently, an unpaired account and a phone never seen stay quiet.

promtool's clock starts at 0, so "seen 10 days ago" is a negative Unix time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from monitoring.alerts_phone import DAY_S, LOGOUT_AFTER_S
from monitoring.config import MonitoringConfig
from monitoring.promtool_cases import Cases, series


def humanized(unix_s: float) -> str:
    """What Prometheus's ``humanizeTimestamp`` prints for ``unix_s``."""
    return f"{datetime.fromtimestamp(unix_s, UTC):%Y-%m-%d %H:%M:%S} +0000 UTC"


def phone_tests(config: MonitoringConfig) -> list[dict[str, Any]]:
    c = Cases(config)
    warn_s, critical_s = config.phone_warning_days * DAY_S, config.phone_critical_days * DAY_S

    def s(name: str, values: str, **labels: str) -> dict[str, str]:
        return series(config, name, values, **labels)

    def account(name: str, seen: str, state: str = "connected") -> list[dict[str, str]]:
        states = [s("whatsapp_connection_state", "1x45", account=name, state=state)]
        if state != "connected":
            states.append(s("whatsapp_connection_state", "0x45", account=name, state="connected"))
        if seen:
            states.append(
                s("whatsapp_primary_phone_last_seen_timestamp_seconds", seen, account=name)
            )
        return states

    away = -(warn_s - 600)  # 10 days are up at 10 m; seen again at 30 m
    gone = -(critical_s + 3600)  # unseen for 12 days and an hour from the start
    slipping = -(critical_s - 1200)  # 12 days are up at 20 m

    def expect(minute: int, *alerts: tuple[str, str, float]) -> dict[str, Any]:
        return c.expect(
            "WhatsappPhoneOffline",
            f"{minute}m",
            *(
                c.account(name, severity=severity, _value=humanized(seen + LOGOUT_AFTER_S))
                for name, severity, seen in alerts
            ),
        )

    return [
        {
            "name": "phone offline: a warning after 10 days, a page after 12 (not both),"
            " cleared when the phone is seen; a recent phone, an unpaired account and a"
            " phone never seen stay quiet",
            "interval": "1m",
            "input_series": [
                *account("away", f"{away}x29 1800x15"),
                *account("gone", f"{gone}x45"),
                *account("slipping", f"{slipping}x45"),
                *account("daily", "-3600x45"),
                *account("unpaired", f"{gone}x45", state="qr_pending"),
                *account("logged-out", f"{gone}x45", state="logged_out"),
                *account("never", ""),
            ],
            "alert_rule_test": [
                expect(5),
                # slipping: the warning after its 10 minutes; gone pages from the start
                expect(12, ("gone", "critical", gone), ("slipping", "warning", slipping)),
                # away's warning (unseen 10 days from 10 m) is up; slipping is past 12 days,
                # its page still pending: no warning beside it
                expect(25, ("away", "warning", away), ("gone", "critical", gone)),
                # away's phone was seen at 30 m: cleared; slipping pages
                expect(35, ("gone", "critical", gone), ("slipping", "critical", slipping)),
            ],
        },
    ]
