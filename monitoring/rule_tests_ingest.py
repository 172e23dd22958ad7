"""`promtool test rules` cases of the ingest alerts: a gateway that stopped posting pages
after its account's threshold, a quiet night or a gateway that said "closed" never; posts
the sidecar cannot read make a ticket that ends when they stop."""

from __future__ import annotations

from typing import Any

from monitoring.config import MonitoringConfig
from monitoring.promtool_cases import Cases, series

#: The links a sidecar exports in the silent case (http.external_url, http.runbook_url).
SIDECAR_URL = "https://wa.example.org"
RUNBOOK_URL = "https://wiki.example.org/wa-runbook"


def ingest_tests(config: MonitoringConfig) -> list[dict[str, Any]]:
    c = Cases(config)

    def s(name: str, values: str, **labels: str) -> dict[str, str]:
        return series(config, name, values, **labels)

    def watched(account: str, posts: str, threshold: int, connected: str = "1x60") -> list[Any]:
        return [
            s("whatsapp_ingest_last_request_timestamp_seconds", posts, account=account),
            s("whatsapp_effective_silence_threshold_seconds", f"{threshold}x60", account=account),
            s("whatsapp_connection_state", connected, account=account, state="connected"),
        ]

    return [
        {
            "name": "ingest silent: a gateway that stopped posting pages after the account's"
            " threshold; one that posts, a quiet night or a gateway that said closed never",
            "interval": "1m",
            "input_series": [
                # stopped: posts every minute until 20 m, then nothing (threshold 15 m)
                *watched("stopped", "0+60x20 1200x40", 900),
                # fresh: the sidecar started at 0 and its gateway never posted
                *watched("fresh", "0x60", 900),
                # posting: a post every minute
                *watched("posting", "0+60x60", 900),
                # night: stopped at 20 m too, but its learned threshold is 2 h
                *watched("night", "0+60x20 1200x40", 7200),
                # closed: stopped at 20 m after saying the session closed
                *watched("closed", "0+60x20 1200x40", 900, connected="1x20 0x40"),
                # the sidecar's links: the runbook link is read from them
                s(
                    "whatsapp_sidecar_links_info",
                    "1x60",
                    external_url=SIDECAR_URL,
                    runbook_url=RUNBOOK_URL,
                ),
            ],
            "alert_rule_test": [
                c.expect("WhatsappIngestSilent", "20m"),
                c.expect(
                    "WhatsappIngestSilent",
                    "30m",
                    c.account("fresh", _runbook_url=RUNBOOK_URL),
                    value="30m 0s",
                ),
                c.expect(
                    "WhatsappIngestSilent",
                    "50m",
                    c.account("stopped", _value="30m 0s", _runbook_url=RUNBOOK_URL),
                    c.account("fresh", _value="50m 0s", _runbook_url=RUNBOOK_URL),
                ),
            ],
        },
        {
            "name": "ingest refused: refused requests and unreadable messages make a ticket"
            " that ends once they stop; a gateway whose posts are read never",
            "interval": "1m",
            "input_series": [
                # wrong-format: three requests refused at 6 m (an unknown event name)
                s(
                    "whatsapp_ingest_requests_refused_total",
                    "0x5 3x30",
                    account="wrong-format",
                    reason="unknown_event",
                ),
                # old-gateway: two messages it could not read, at 6 m
                s(
                    "whatsapp_ingest_events_total",
                    "0x5 2x30",
                    account="old-gateway",
                    outcome="unreadable",
                ),
                # fine: everything read
                s(
                    "whatsapp_ingest_requests_refused_total",
                    "0x35",
                    account="fine",
                    reason="bad_body",
                ),
                s("whatsapp_ingest_events_total", "0x35", account="fine", outcome="unreadable"),
                s("whatsapp_ingest_events_total", "0+10x35", account="fine", outcome="accepted"),
            ],
            "alert_rule_test": [
                c.expect("WhatsappIngestRefused", "8m"),
                c.expect(
                    "WhatsappIngestRefused",
                    "12m",
                    c.account("wrong-format", reason="unknown_event", _value="3"),
                    c.account("old-gateway", reason="unreadable", _value="2"),
                ),
                c.expect("WhatsappIngestRefused", "25m"),
            ],
        },
    ]
