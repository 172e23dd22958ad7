"""The verdict scenario suite: every capture in examples/scenarios replayed, every account's
verdict checked against what the scenario says, and detection latency printed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.adapters.capture import capture_records
from sidecar.adapters.health_json import health_json
from sidecar.compose import assemble
from sidecar.config import load_config
from sidecar.core.clock import ReplayClock
from sidecar.core.replay import Replayer
from sidecar.core.service import Sidecar

from .support.generated import assert_up_to_date

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "scenarios"
INDEX = yaml.safe_load((SCENARIOS / "scenarios.yaml").read_text())["scenarios"]
#: Verdicts are judged at every capture tick (30 s apart in the judged day).
TICK_S = 30.0


def test_scenario_files_are_what_the_generator_writes() -> None:
    assert_up_to_date(SCENARIOS / "make_scenarios.py")


def test_there_are_at_least_ten_scenarios() -> None:
    assert len(INDEX) >= 10
    assert sum(1 for s in INDEX for e in s["expect"].values() if e["degraded"]) >= 5
    assert sum(1 for s in INDEX for e in s["expect"].values() if not e["degraded"]) >= 5


async def replay(scenario: dict[str, Any], tmp_path: Path) -> Sidecar:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"state_dir": str(tmp_path / "state"), "accounts": scenario["accounts"]})
    )
    loaded = load_config(config)
    clock = ReplayClock(speed=0)
    assembly = assemble(loaded, clock, storage=False)
    sidecar = assembly.sidecar
    report = await Replayer(sidecar, clock, assembly.replay_errors).run(
        capture_records(SCENARIOS / scenario["capture"])
    )
    assert report.errors == 0
    return sidecar


def probe_interval(scenario: dict[str, Any], account: str) -> float:
    for entry in scenario["accounts"]:
        probe = entry.get("probe")
        if probe and account in (entry["id"], probe["peer"]):
            return {"5m": 300.0}[probe["interval"]]
    return 0.0


@pytest.mark.parametrize("scenario", INDEX, ids=[s["name"] for s in INDEX])
async def test_scenario(
    scenario: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sidecar = await replay(scenario, tmp_path)
    try:
        for account, expected in scenario["expect"].items():
            health = health_json(sidecar.health(account))
            judged_from_ms = scenario.get("judge_from", 0) * 1000
            history = [h for h in health["verdictHistory"] if h["atMs"] >= judged_from_ms]
            assert health["isDegraded"] is expected["degraded"], (
                account,
                health["reasons"],
                history,
            )
            assert health["reasons"] == expected["reasons"], account
            if "status" in expected:
                assert health["status"] == expected["status"]
            if "quiet" in expected:
                assert health["quiet"] is expected["quiet"]
            if not expected["degraded"]:
                # zero false alarms: never degraded at any tick of the whole replay
                assert not [h for h in history if h["isDegraded"]], (account, history)
                continue
            first = next(h for h in history if h["isDegraded"])
            latency = first["atMs"] / 1000 - expected["onset"]
            # the account's threshold is its effective one: the configured floor, or longer
            # where its usual traffic says so
            threshold = first["thresholdSeconds"]
            assert threshold >= sidecar.settings(account).silence_threshold_s
            assert threshold <= expected.get("max_threshold_s", threshold)
            # the verdict turns degraded at the first tick that finds the evidence held
            # for the confirmation (verdict.confirm), after the first tick that finds it
            confirm = sidecar.confirm_s
            bound = threshold + probe_interval(scenario, account) + TICK_S
            bound += math.ceil(confirm / TICK_S) * TICK_S
            with capsys.disabled():
                print(
                    f"\n  {scenario['name']}/{account}: degraded {latency:.0f} s after onset ({', '.join(first['reasons'])}); threshold {threshold:.0f} s, bound {bound:.0f} s"
                )
            assert 0 <= latency <= bound, (account, latency, bound)
            assert set(expected["reasons"]) <= set(first["reasons"]) | set(health["reasons"])
    finally:
        sidecar.close()
