"""The early-sign scenarios (examples/scenarios/signals, issue 18), replayed and scraped every
replayed minute: what the metrics and the health object say at each minute, then the shipped
rules run by promtool on those very scrapes, firing where they should and quiet elsewhere."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.config import MonitoringConfig
from monitoring.promtool_cases import INSTANCE, Cases
from sidecar.adapters.health_json import health_json
from sidecar.compose import assemble
from sidecar.core.clock import ReplayClock

from .support.config import ConfigFactory
from .support.generated import assert_up_to_date
from .support.http import refused_address
from .support.paths import REPO
from .support.polling import wait_for
from .support.scrapes import Scrape, input_series, promtool_test, sample, scrape_replay
from .support.services import alertmanager, alertmanager_config_for, post_alerts

SIGNALS = REPO / "examples" / "scenarios" / "signals"
INDEX = {s["name"]: s for s in yaml.safe_load((SIGNALS / "signals.yaml").read_text())["scenarios"]}
RULES = REPO / "alerts" / "wa-sidecar.rules.yml"


@dataclass
class Replayed:
    """A scenario replayed: its first time, and per minute the scrape and each health object."""

    scenario: dict[str, Any]
    start: float
    scrapes: list[Scrape]
    health: list[dict[str, dict[str, Any]]]

    def minute(self, t: float) -> int:
        """The first scrape that saw what happened at ``t``."""
        return int((t - self.start + 59.999) // 60)

    def at(self, minute: int, name: str, **labels: str) -> float | None:
        return sample(self.scrapes[minute], name, **labels)


async def replay(name: str, make_config: ConfigFactory) -> Replayed:
    scenario = INDEX[name]
    clock = ReplayClock(speed=0)
    assembly = assemble(make_config(scenario["accounts"]), clock, storage=False)
    health: list[dict[str, dict[str, Any]]] = []

    def observe(_: float) -> None:
        health.append({a: health_json(assembly.sidecar.health(a)) for a in scenario["signals"]})

    try:
        start, scrapes = await scrape_replay(
            assembly, clock, SIGNALS / scenario["capture"], observe=observe
        )
    finally:
        assembly.close()
    replayed = Replayed(scenario, start, scrapes, health)
    for account, last in health[-1].items():
        # none of these is a deaf session: the verdict never said so, at any minute
        assert not [h for h in last["verdictHistory"] if h["isDegraded"]], account
    return replayed


def rules_on(replayed: Replayed, tmp_path: Path, *cases: dict[str, Any]) -> None:
    result = promtool_test(
        tmp_path,
        RULES,
        [
            {
                "name": f"the {replayed.scenario['name']} scenario, as the sidecar exported it",
                "interval": "1m",
                "input_series": input_series(
                    replayed.scrapes, replayed.start, MonitoringConfig().job, INSTANCE
                ),
                "alert_rule_test": list(cases),
            }
        ],
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_signal_scenario_files_are_what_the_generator_writes() -> None:
    assert_up_to_date(SIGNALS / "make_signals.py")


# -- a temporary ban that ends ---------------------------------------------------------

BAN_END = "whatsapp_temporary_ban_expiry_timestamp_seconds"


@pytest.fixture
async def banned(make_config: ConfigFactory) -> Replayed:
    return await replay("temporary_ban", make_config)


async def test_a_ban_shows_its_end_while_it_lasts_and_nothing_once_the_account_is_back(
    banned: Replayed,
) -> None:
    promo = banned.scenario["signals"]["promo"]
    first, back = banned.minute(promo["banned_at"]), banned.minute(promo["resumed"])
    for minute, scrape in enumerate(banned.scrapes):
        in_ban = first <= minute < back
        assert banned.at(minute, BAN_END, account="promo") == (
            promo["ban_ends"] if in_ban else None
        ), minute
        state = banned.at(minute, "whatsapp_connection_state", account="promo", state="banned")
        assert state == (1.0 if in_ban else 0.0), minute
        assert banned.at(minute, BAN_END, account="calm") is None
        health = banned.health[minute]["promo"]
        assert (health["status"] == "banned") is in_ban
        assert health["banExpiresMs"] == (round(promo["ban_ends"] * 1000) if in_ban else None)
        assert health["banReason"] == ("send_to_too_many_people" if in_ban else None)
    end = len(banned.scrapes) - 1
    assert banned.at(end, "whatsapp_connect_failures_total", account="promo", reason="temp_banned")
    assert banned.health[end]["promo"]["status"] == "connected"
    # it resumed by itself: real messages arrive again after the ban
    assert banned.health[end]["promo"]["lastRealMessageMs"] > promo["resumed"] * 1000


@pytest.mark.services
async def test_a_ban_pages_with_its_end_until_the_account_is_back(
    banned: Replayed, tmp_path: Path
) -> None:
    c = Cases(MonitoringConfig())
    promo = banned.scenario["signals"]["promo"]
    first, back = banned.minute(promo["banned_at"]), banned.minute(promo["resumed"])
    # promtool's clock starts at the capture's first record: the end is 2 h after it
    until = "1970-01-01 02:00:00 +0000 UTC"
    assert promo["ban_ends"] - banned.start == 7200
    rules_on(
        banned,
        tmp_path,
        c.expect("WhatsappAccountBanned", f"{first - 1}m"),
        c.expect("WhatsappAccountBanned", f"{first}m", c.account("promo"), value=until),
        c.expect("WhatsappAccountBanned", f"{back - 1}m", c.account("promo"), value=until),
        c.expect("WhatsappAccountBanned", f"{back}m"),
        # silent for a while and not connected: not deaf, and not a disconnection either
        c.expect("WhatsappNoRealMessages", f"{back - 1}m"),
        c.expect("WhatsappAccountDisconnected", f"{back - 1}m"),
    )


# -- a stream replaced -------------------------------------------------------------------

REPLACED = {"event": "StreamReplacedEv"}


@pytest.fixture
async def replaced(make_config: ConfigFactory) -> Replayed:
    return await replay("stream_replaced", make_config)


async def test_a_replaced_stream_is_counted_and_the_status_says_so(replaced: Replayed) -> None:
    signals = replaced.scenario["signals"]
    at = replaced.minute(signals["twin"]["replaced_at"])
    for account in ("twin", "flip", "solo"):
        # from start-up at 0, so that the first one counts in an increase
        assert replaced.at(0, "whatsapp_events_total", account=account, **REPLACED) == 0.0
    end = len(replaced.scrapes) - 1
    assert replaced.at(at - 1, "whatsapp_events_total", account="twin", **REPLACED) == 0.0
    for account in ("twin", "flip"):
        assert replaced.at(at, "whatsapp_events_total", account=account, **REPLACED) == 1.0
    assert replaced.at(end, "whatsapp_events_total", account="solo", **REPLACED) == 0.0
    assert replaced.health[at]["flip"]["status"] == "replaced"
    assert [replaced.health[end][a]["status"] for a in ("twin", "flip", "solo")] == [
        "replaced",
        "connected",
        "connected",
    ]


@pytest.mark.services
async def test_a_replaced_stream_pages_at_once_also_when_taken_back(
    replaced: Replayed, tmp_path: Path
) -> None:
    c = Cases(MonitoringConfig())
    at = replaced.minute(replaced.scenario["signals"]["twin"]["replaced_at"])
    both = (c.account("flip"), c.account("twin"))
    rules_on(
        replaced,
        tmp_path,
        c.expect("WhatsappStreamReplaced", f"{at - 1}m"),
        c.expect("WhatsappStreamReplaced", f"{at}m", *both),
        # flip is connected again from minute 64: its page stays up for the window
        c.expect("WhatsappStreamReplaced", f"{at + 10}m", *both),
        c.expect("WhatsappStreamReplaced", f"{at + 20}m", c.account("twin")),
    )


# -- an undecryptable storm beside the odd undecryptable message -------------------------

UNDECODABLE = {"class": "other", "kind": "undecodable"}


@pytest.fixture
async def storm(make_config: ConfigFactory) -> Replayed:
    return await replay("undecryptable_storm", make_config)


async def test_undecryptable_messages_are_counted_per_account(storm: Replayed) -> None:
    signals = storm.scenario["signals"]
    end = len(storm.scrapes) - 1
    name = "whatsapp_messages_received_total"
    for account in ("storm", "steady"):
        assert storm.at(0, name, account=account, **UNDECODABLE) == 0.0  # there from start-up
        expected = signals[account]["undecryptable"]
        assert storm.at(end, name, account=account, **UNDECODABLE) == expected
        # the health object counts them among "other" (nothing else is other here)
        assert storm.health[end][account]["messages"]["other"] == expected
    assert (
        storm.at(
            storm.minute(signals["storm"]["storm_from"]) - 1, name, account="storm", **UNDECODABLE
        )
        == 0.0
    )


@pytest.mark.services
async def test_an_undecryptable_storm_makes_a_ticket_and_the_odd_one_does_not(
    storm: Replayed, tmp_path: Path
) -> None:
    c = Cases(MonitoringConfig())
    onset = storm.minute(storm.scenario["signals"]["storm"]["storm_from"])
    rules_on(
        storm,
        tmp_path,
        # the share needs the window to fill with the storm, then the `for`
        c.expect("WhatsappUndecryptableStorm", f"{onset + 10}m"),
        # the value: Prometheus's increase over the 15 minutes, extrapolated, as printed
        c.expect("WhatsappUndecryptableStorm", f"{onset + 30}m", c.account("storm"), value="6"),
        c.expect("WhatsappUndecryptableStorm", f"{onset + 100}m", c.account("storm"), value="7"),
        c.expect("WhatsappSessionDegraded", f"{onset + 100}m"),
    )


# -- routing and inhibitions in the shipped Alertmanager config ---------------------------


def shipped_severity(alert: str) -> str:
    rules = yaml.safe_load(RULES.read_text())["groups"]
    severity: str = next(
        r["labels"]["severity"] for g in rules for r in g["rules"] if r.get("alert") == alert
    )
    return severity


@pytest.mark.services
def test_the_new_alerts_page_or_ticket_and_do_not_page_twice(tmp_path: Path) -> None:
    """Alertmanager's own view (its API): which receivers each alert goes to, and which are
    inhibited. A ban or a replaced stream would otherwise page twice (WhatsappAccountUnusable
    fires for the same state); a logged-out account, or one marked for a re-pair, would
    also get a ticket for waiting for its QR scan."""
    sent = [
        ("WhatsappAccountBanned", "promo"),
        ("WhatsappAccountUnusable", "promo"),
        ("WhatsappStreamReplaced", "twin"),
        ("WhatsappAccountUnusable", "twin"),
        ("WhatsappAccountUnusable", "old"),  # outdated: still pages
        ("WhatsappUndecryptableStorm", "storm"),
        ("WhatsappAccountNeedsRepair", "deaf"),
        ("WhatsappAccountNotPaired", "deaf"),
        ("WhatsappAccountNotPaired", "fresh"),
    ]
    with refused_address() as nowhere:
        config = tmp_path / "alertmanager.yml"
        config.write_text(yaml.safe_dump(alertmanager_config_for(f"http://{nowhere}")))
        with alertmanager(config, tmp_path) as am:
            base = {"job": "wa-sidecar", "instance": INSTANCE}
            post_alerts(
                am,
                [
                    {**base, "alertname": name, "account": account}
                    | {"severity": shipped_severity(name)}
                    for name, account in sent
                ],
            )

            def by_alert() -> dict[tuple[str, str], dict[str, Any]]:
                with urllib.request.urlopen(f"{am}/api/v2/alerts", timeout=5) as response:
                    found: list[dict[str, Any]] = json.load(response)
                return {(a["labels"]["alertname"], a["labels"]["account"]): a for a in found}

            # the inhibitor learns of the source alerts asynchronously
            wait_for(
                lambda: sum(a["status"]["state"] == "suppressed" for a in by_alert().values()) == 3,
                30,
                "the duplicates to be inhibited",
            )
            alerts = by_alert()
    assert set(alerts) == set(sent)
    suppressed = {key for key, a in alerts.items() if a["status"]["state"] == "suppressed"}
    assert suppressed == {
        ("WhatsappAccountUnusable", "promo"),
        ("WhatsappAccountUnusable", "twin"),
        ("WhatsappAccountNotPaired", "deaf"),
    }
    receivers = {key: {r["name"] for r in a["receivers"]} for key, a in alerts.items()}
    for key in (("WhatsappAccountBanned", "promo"), ("WhatsappStreamReplaced", "twin")):
        assert receivers[key] == {"pager"}, key
    for key in (("WhatsappUndecryptableStorm", "storm"), ("WhatsappAccountNotPaired", "fresh")):
        assert receivers[key] == {"tickets"}, key
