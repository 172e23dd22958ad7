"""A phone going offline for 11 days (issue 18), end to end: the phone_offline scenario
(examples/scenarios) is replayed; around the 10th and the 11th day since away's phone was
last seen, the sidecar's /metrics are scraped every replayed minute and go through
``promtool test rules`` with the shipped rules. The warning fires at 10 days, the page
not yet at 11; daily, whose phone is seen every day, never."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitoring.alerts_phone import LOGOUT_AFTER_S
from monitoring.config import MonitoringConfig
from monitoring.promtool_cases import INSTANCE, Cases
from monitoring.rule_tests_phone import humanized
from sidecar.adapters.capture import CaptureRecord, capture_records
from sidecar.adapters.health_json import health_json
from sidecar.compose import Assembly, assemble
from sidecar.core.clock import ReplayClock
from sidecar.core.replay import Replayer

from .support.config import ConfigFactory
from .support.paths import REPO
from .support.scrapes import Scrape, input_series, parse, promtool_test, sample

pytestmark = pytest.mark.services  # runs promtool

SCENARIOS = REPO / "examples" / "scenarios"
SCENARIO = next(
    s
    for s in yaml.safe_load((SCENARIOS / "scenarios.yaml").read_text())["scenarios"]
    if s["name"] == "phone_offline"
)
RULES = REPO / "alerts" / "wa-sidecar.rules.yml"
DAY = 86400.0
#: The scenario's day 1, 00:00 UTC; away's phone is last seen at 12:05 that day.
EPOCH = 1_763_337_600.0
AWAY_SEEN = EPOCH + 12 * 3600 + 300
LAST_SEEN = "whatsapp_primary_phone_last_seen_timestamp_seconds"


class Replay:
    """The capture replayed in order, stopped at the times asked for."""

    def __init__(self, assembly: Assembly, clock: ReplayClock, capture: Path) -> None:
        self.assembly = assembly
        self.clock = clock
        self.records = [r for r in capture_records(capture) if isinstance(r, CaptureRecord)]
        self.done = 0
        self.replayer = Replayer(assembly.sidecar, clock, assembly.replay_errors)

    async def until(self, at: float) -> None:
        upto = self.done
        while upto < len(self.records) and self.records[upto].t <= at:
            upto += 1
        report = await self.replayer.run(self.records[self.done : upto])
        assert report.errors == 0
        self.done = upto
        self.clock.advance_to(at)

    async def scrapes(self, start: float, minutes: int) -> list[Scrape]:
        """/metrics every minute from ``start``, as Prometheus would scrape them."""
        out = []
        for minute in range(minutes + 1):
            await self.until(start + 60 * minute)
            out.append(parse(self.assembly.metrics.render().decode()))
        return out


async def test_a_phone_offline_for_11_days_warns_at_10_and_does_not_page_yet(
    tmp_path: Path, make_config: ConfigFactory
) -> None:
    assert SCENARIO["accounts"] == [
        {"id": "away", "silence_threshold": "5m"},
        {"id": "daily", "silence_threshold": "5m"},
    ]
    clock = ReplayClock(speed=0)
    assembly = assemble(make_config(SCENARIO["accounts"]), clock, storage=False)
    replay = Replay(assembly, clock, SCENARIOS / SCENARIO["capture"])
    ten_days = EPOCH + 10 * DAY + 11.5 * 3600  # 30 minutes before away's 10 days are up
    eleven_days = EPOCH + 11 * DAY + 12 * 3600
    try:
        first = await replay.scrapes(ten_days, 60)
        health = health_json(assembly.sidecar.health("away"))
        second = await replay.scrapes(eleven_days, 40)
        daily = health_json(assembly.sidecar.health("daily"))
        away = health_json(assembly.sidecar.health("away"))
    finally:
        assembly.close()

    # the health key: the exact sighting (its read receipt at 12:05); WhatsApp Web's
    # messages and reads every afternoon since did not move it
    assert health["phoneLastSeenMs"] == AWAY_SEEN * 1000
    assert away["phoneLastSeenMs"] == AWAY_SEEN * 1000
    assert away["status"] == "connected"
    assert not away["isDegraded"]
    # daily's phone read a chat at 12:05 on the last day
    assert daily["phoneLastSeenMs"] == (EPOCH + 11 * DAY + 12 * 3600 + 300) * 1000
    # the metric: to the hour
    assert sample(first[0], LAST_SEEN, account="away") == EPOCH + 12 * 3600
    assert sample(second[-1], LAST_SEEN, account="away") == EPOCH + 12 * 3600
    assert sample(second[-1], LAST_SEEN, account="daily") == EPOCH + 11 * DAY + 12 * 3600

    c = Cases(MonitoringConfig())

    def warning(start: float) -> dict[str, str]:
        # the value, moved onto promtool's clock: the expected logout
        logout = EPOCH + 12 * 3600 + LOGOUT_AFTER_S - start
        return c.account("away", severity="warning", _value=humanized(logout))

    job = MonitoringConfig().job
    result = promtool_test(
        tmp_path,
        RULES,
        [
            {
                "name": "away's phone unseen for 10 days (exported: seen at 12:00): the"
                " warning once 10 minutes past 12:00 hold it; daily never",
                "interval": "1m",
                "input_series": input_series(first, ten_days, job, INSTANCE),
                "alert_rule_test": [
                    c.expect("WhatsappPhoneOffline", "30m"),
                    c.expect("WhatsappPhoneOffline", "40m"),
                    c.expect("WhatsappPhoneOffline", "41m", warning(ten_days)),
                    c.expect("WhatsappPhoneOffline", "60m", warning(ten_days)),
                ],
            },
            {
                "name": "11 days: still the warning, no page (that comes at 12); daily never",
                "interval": "1m",
                "input_series": input_series(second, eleven_days, job, INSTANCE),
                "alert_rule_test": [
                    c.expect("WhatsappPhoneOffline", "5m"),
                    c.expect("WhatsappPhoneOffline", "15m", warning(eleven_days)),
                    c.expect("WhatsappPhoneOffline", "40m", warning(eleven_days)),
                ],
            },
        ],
    )
    assert result.returncode == 0, result.stdout + result.stderr
