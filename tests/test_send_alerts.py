"""The send path's alerts end to end (issue 16).

The sends_not_delivered scenario (examples/scenarios) is replayed and the sidecar's
/metrics scraped every replayed minute; promtool then runs the shipped rules on those
scrapes: the alerts fire for the account whose sends vanish in several chats, never for
the one whose single customer has the phone off, nor for the one whose sends arrive. A
real Alertmanager with the shipped config shows that cause pages once.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.config import MonitoringConfig
from monitoring.durations import minutes_after
from monitoring.promtool_cases import INSTANCE, Cases
from sidecar.compose import assemble
from sidecar.core.clock import ReplayClock

from .support.config import ConfigFactory
from .support.http import refused_address
from .support.paths import REPO
from .support.polling import wait_for
from .support.scrapes import input_series, promtool_test, sample, scrape_replay
from .support.services import alertmanager, alertmanager_config_for, post_alerts

SCENARIOS = REPO / "examples" / "scenarios"
SCENARIO = next(
    s
    for s in yaml.safe_load((SCENARIOS / "scenarios.yaml").read_text())["scenarios"]
    if s["name"] == "sends_not_delivered"
)
RULES = REPO / "alerts" / "wa-sidecar.rules.yml"
NOT_DELIVERED = "sends_not_delivered"


@pytest.mark.services
async def test_replayed_sends_fire_the_send_alerts_for_the_right_account_only(
    tmp_path: Path, make_config: ConfigFactory
) -> None:
    clock = ReplayClock(speed=0)
    assembly = assemble(make_config(SCENARIO["accounts"]), clock, storage=False)
    try:
        start, scrapes = await scrape_replay(assembly, clock, SCENARIOS / SCENARIO["capture"])
    finally:
        assembly.close()
    assert len(scrapes) == 46  # minutes 0 to 45 of the capture

    def at(minute: int, name: str, **labels: str) -> float | None:
        return sample(scrapes[minute], name, **labels)

    # lost's third chat (sent 09:10:10) is past the 5-minute timeout at minute 16, not 15
    for minute, verdict in ((15, 0.0), (16, 1.0)):
        assert (
            at(minute, "whatsapp_session_degraded_reason", account="lost", reason=NOT_DELIVERED)
            == verdict
        )
    # offline has more undelivered sends than lost, but all to one chat: no verdict
    assert at(44, "whatsapp_sent_messages_undelivered", account="offline") == 19
    assert at(44, "whatsapp_sent_messages_undelivered", account="lost") == 17
    assert at(44, "whatsapp_sent_messages_undelivered", account="shop") == 0
    assert not any(
        at(m, "whatsapp_session_degraded", account=a)
        for m in range(46)
        for a in ("offline", "shop")
    )
    assert at(44, "whatsapp_messages_sent_total", account="shop", result="timeout") == 1
    assert (at(44, "whatsapp_message_delivery_seconds_count", account="shop") or 0) > 10

    config = MonitoringConfig()
    c = Cases(config)
    lost = c.account("lost")
    # degraded from minute 16; the ticket and the page once it held for their `for`
    ticket = minutes_after(16, config.for_sends_not_delivered)
    page = minutes_after(16, config.for_degraded)
    result = promtool_test(
        tmp_path,
        RULES,
        [
            {
                "name": "the sends_not_delivered scenario, as the sidecar exported it",
                "interval": "1m",
                "input_series": input_series(scrapes, start, config.job, INSTANCE),
                "alert_rule_test": [
                    c.expect("WhatsappSendsNotDelivered", f"{ticket - 1}m"),
                    c.expect("WhatsappSessionDegraded", f"{page - 1}m"),
                    c.expect("WhatsappSendsNotDelivered", "22m", lost, value="6"),
                    c.expect(
                        "WhatsappSessionDegraded",
                        f"{page}m",
                        lost | {"_reasons": f"{NOT_DELIVERED} "},
                    ),
                    c.expect("WhatsappSendsNotDelivered", "44m", lost, value="17"),
                    # no outbox in a replay, and silent accounts without protocol traffic
                    c.expect("WhatsappOutboxStuck", "44m"),
                    c.expect("WhatsappNoRealMessages", "44m"),
                ],
            }
        ],
    )
    assert result.returncode == 0, result.stdout + result.stderr


def shipped_labels(alert: str) -> dict[str, str]:
    """The labels the shipped rule gives ``alert`` (its severity decides where it goes)."""
    rules = yaml.safe_load(RULES.read_text())["groups"]
    labels: dict[str, str] = next(
        r["labels"] for g in rules for r in g["rules"] if r.get("alert") == alert
    )
    return labels


def am_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as response:
        found: list[dict[str, Any]] = json.load(response)
    return found


@pytest.mark.services
def test_sends_not_delivered_pages_once_and_a_logged_out_account_mutes_the_send_alerts(
    tmp_path: Path,
) -> None:
    """Alertmanager's own view (its API), so nothing waits for a notification that should
    not come: which receivers each alert goes to, and which are inhibited."""
    with refused_address() as nowhere:
        config = tmp_path / "alertmanager.yml"
        config.write_text(yaml.safe_dump(alertmanager_config_for(f"http://{nowhere}")))
        with alertmanager(config, tmp_path) as am:
            base = {"job": "wa-sidecar", "instance": INSTANCE}
            sent = [
                ("WhatsappSessionDegraded", "lost"),
                ("WhatsappSendsNotDelivered", "lost"),
                ("WhatsappAccountLoggedOut", "gone"),
                ("WhatsappSendsNotDelivered", "gone"),
                ("WhatsappOutboxStuck", "gone"),
                ("WhatsappOutboxStuck", "stuck"),
            ]
            post_alerts(
                am,
                [
                    {**base, "alertname": name, "account": account, **shipped_labels(name)}
                    | ({"cause": "queued_too_long"} if name == "WhatsappOutboxStuck" else {})
                    for name, account in sent
                ],
            )

            def by_alert() -> dict[tuple[str, str], dict[str, Any]]:
                return {
                    (a["labels"]["alertname"], a["labels"]["account"]): a for a in am_alerts(am)
                }

            # the inhibitor learns of the logged-out alert asynchronously
            wait_for(
                lambda: sum(a["status"]["state"] == "suppressed" for a in by_alert().values()) == 2,
                30,
                "the logged-out account's send alerts to be inhibited",
            )
            alerts = by_alert()
            assert set(alerts) == set(sent)
            state = {key: a["status"]["state"] for key, a in alerts.items()}
            assert state == {
                ("WhatsappSessionDegraded", "lost"): "active",
                ("WhatsappSendsNotDelivered", "lost"): "active",
                ("WhatsappAccountLoggedOut", "gone"): "active",
                ("WhatsappSendsNotDelivered", "gone"): "suppressed",
                ("WhatsappOutboxStuck", "gone"): "suppressed",
                ("WhatsappOutboxStuck", "stuck"): "active",
            }
            logged_out = alerts[("WhatsappAccountLoggedOut", "gone")]["fingerprint"]
            for name in ("WhatsappSendsNotDelivered", "WhatsappOutboxStuck"):
                assert alerts[(name, "gone")]["status"]["inhibitedBy"] == [logged_out]

            receivers = {key: {r["name"] for r in a["receivers"]} for key, a in alerts.items()}
            # one page for lost's undelivered sends; the remediation ladder gets the degraded
            # alert; the details go to tickets
            assert receivers[("WhatsappSessionDegraded", "lost")] == {
                "sidecar-remediation",
                "pager",
            }
            assert receivers[("WhatsappSendsNotDelivered", "lost")] == {"tickets"}
            assert [k for k, names in receivers.items() if k[1] == "lost" and "pager" in names] == [
                ("WhatsappSessionDegraded", "lost")
            ]
            assert receivers[("WhatsappOutboxStuck", "stuck")] == {"pager"}
