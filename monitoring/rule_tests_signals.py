"""`promtool test rules` cases of the early-sign alerts: a ban pages with its end and stops
when it does; a replaced stream pages at once, also when the session was taken back; an
undecryptable storm makes a ticket, the odd failure or a busy account's few never; an
account left waiting for a QR scan makes a ticket with its queued messages."""

from __future__ import annotations

from typing import Any

from monitoring.config import MonitoringConfig
from monitoring.promtool_cases import Cases, series


def signal_tests(config: MonitoringConfig) -> list[dict[str, Any]]:
    c = Cases(config)

    def s(name: str, values: str, **labels: str) -> dict[str, str]:
        return series(config, name, values, **labels)

    def state(account: str, values: str, status: str) -> dict[str, str]:
        return s("whatsapp_connection_state", values, account=account, state=status)

    def received(account: str, values: str, cls: str, kind: str) -> dict[str, str]:
        return s(
            "whatsapp_messages_received_total", values, account=account, kind=kind, **{"class": cls}
        )

    def undecodable(account: str, values: str) -> dict[str, str]:
        return received(account, values, "other", "undecodable")

    def real(account: str, values: str) -> dict[str, str]:
        return received(account, values, "real", "conversation")

    replaced = "StreamReplacedEv"
    return [
        {
            "name": "banned: pages at once with the ban's end, and stops when the ban does",
            "interval": "1m",
            "input_series": [
                # promo: banned at 5 m until 2 h (on promtool's clock); back at 20 m
                s(
                    "whatsapp_temporary_ban_expiry_timestamp_seconds",
                    "_x5 7200x15 stale",
                    account="promo",
                ),
                state("promo", "0x4 1x15 0x20", "banned"),
                # calm: never banned
                state("calm", "0x40", "banned"),
            ],
            "alert_rule_test": [
                c.expect("WhatsappAccountBanned", "4m"),
                c.expect(
                    "WhatsappAccountBanned",
                    "5m",
                    c.account("promo"),
                    value="1970-01-01 02:00:00 +0000 UTC",
                ),
                c.expect("WhatsappAccountBanned", "25m"),
            ],
        },
        {
            "name": "stream replaced: pages at once, also for a session taken back since;"
            " one never replaced never",
            "interval": "1m",
            "input_series": [
                # twin: replaced at 6 m and parked there
                s("whatsapp_events_total", "0x5 1x40", account="twin", event=replaced),
                state("twin", "0x5 1x40", "replaced"),
                # flip: replaced at 6 m, re-paired and connected again at 8 m
                s("whatsapp_events_total", "0x5 1x40", account="flip", event=replaced),
                state("flip", "0x5 1x2 0x38", "replaced"),
                # solo: never replaced
                s("whatsapp_events_total", "0x45", account="solo", event=replaced),
                state("solo", "0x45", "replaced"),
            ],
            "alert_rule_test": [
                c.expect("WhatsappStreamReplaced", "5m"),
                c.expect(
                    "WhatsappStreamReplaced",
                    "6m",
                    c.account("flip"),
                    c.account("twin"),
                ),
                c.expect(
                    "WhatsappStreamReplaced",
                    "15m",
                    c.account("flip"),
                    c.account("twin"),
                ),
                # 15 minutes after the replace only the parked one still pages
                c.expect("WhatsappStreamReplaced", "25m", c.account("twin")),
            ],
        },
        {
            "name": "undecryptable storm: a ticket once a fifth of the messages fail; the odd"
            " one, or a busy account's few, never",
            "interval": "1m",
            "input_series": [
                # storm: 10 real messages a minute; from 10 m 3 a minute fail as well (23 %)
                real("storm", "0+10x45"),
                undecodable("storm", "0x10 0+3x35"),
                # steady: the same traffic, and one failure at 20 m
                real("steady", "0+10x45"),
                undecodable("steady", "0x20 1x25"),
                # busy: 100 a minute, one failure a minute (15 in the window, 1 %)
                real("busy", "0+100x45"),
                undecodable("busy", "0+1x45"),
            ],
            "alert_rule_test": [
                # the window still holds the calm before: 12 % at 18 m, 22 % at 25 m
                c.expect("WhatsappUndecryptableStorm", "25m"),
                c.expect("WhatsappUndecryptableStorm", "35m", c.account("storm", _value="45")),
                c.expect("WhatsappUndecryptableStorm", "44m", c.account("storm", _value="45")),
            ],
        },
        {
            "name": "not paired: a ticket after 30 minutes of qr_pending, with the queued"
            " outbox messages; a scan in time, or a connected account, never",
            "interval": "1m",
            "input_series": [
                # waiting: qr_pending throughout, 3 messages queued for it
                state("waiting", "1x50", "qr_pending"),
                s("whatsapp_outbox_messages", "3x50", account="waiting", status="queued"),
                # fresh: qr_pending throughout, no send path (no outbox series)
                state("fresh", "1x50", "qr_pending"),
                # scanned: paired after 20 minutes
                state("scanned", "1x20 0x30", "qr_pending"),
                s("whatsapp_outbox_messages", "2x50", account="scanned", status="queued"),
                # connected: never waiting
                state("connected", "0x50", "qr_pending"),
            ],
            "alert_rule_test": [
                c.expect("WhatsappAccountNotPaired", "29m"),
                c.expect(
                    "WhatsappAccountNotPaired",
                    "31m",
                    c.account("fresh", _value="0"),
                    c.account("waiting", _value="3"),
                ),
            ],
        },
    ]
