"""Write the early-sign scenarios: one capture per scenario and signals.yaml.

A temporary ban that ends (the account connects again by itself), a stream another
client takes (once for good, once taken back by a re-pair), and an undecryptable storm
next to an account with the odd undecryptable message. Unlike the verdict scenarios
(../make_scenarios.py, whose Scenario builder this reuses), some of these page by
design: tests/test_signal_scenarios.py replays them and checks the metrics, the health
object and the shipped rules. Run ``python examples/scenarios/signals/make_signals.py``
to regenerate; that test checks the committed files are what this script writes.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from neonize.proto.Neonize_pb2 import TemporaryBan

from sidecar import testing as build
from sidecar.domain.supervision import BAN_MARGIN_S

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("make_scenarios", HERE.parent / "make_scenarios.py")
assert _spec is not None
assert _spec.loader is not None
scenarios_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scenarios_module)
Scenario = scenarios_module.Scenario
DAY8_9AM = scenarios_module.EPOCH + 7 * scenarios_module.DAY + 9 * 3600


def undecryptable(s: Any, t: float, account: str) -> None:
    s.add(
        t, account, build.undecryptable(message_id=f"U{next(s._ids)}", timestamp_ms=int(t * 1000))
    )


def traffic(s: Any, account: str, start: float, end: float) -> None:
    """A busy account: a real message a minute or so, protocol traffic beside it."""
    for t in s.every(start, end, 60):
        s.real(t, account)
    for t in s.every(start, end, 300):
        s.protocol(t, account)


def signal_scenarios() -> Iterator[tuple[Any, float, dict[str, Any]]]:
    start = DAY8_9AM
    banned_at, ban_s = start + 3600, 3600
    resumed = banned_at + ban_s + BAN_MARGIN_S  # when the supervisor connects it again
    s = Scenario(
        "temporary_ban",
        "promo is temporarily banned at 10:00 for an hour (it sent to too many people); the"
        " supervisor waits the ban out and connects it at 11:01 by itself, and traffic resumes."
        " calm is busy throughout.",
    )
    for account in ("promo", "calm"):
        s.account(account, silence_threshold="5m")
        s.connect(start, account)
    traffic(s, "promo", start + 10, banned_at)
    s.add(banned_at, "promo", build.temporary_ban(TemporaryBan.SEND_TO_TOO_MANY_PEOPLE, ban_s))
    s.connect(resumed, "promo")
    traffic(s, "promo", resumed + 10, start + 3 * 3600)
    traffic(s, "calm", start + 10, start + 3 * 3600)
    signals = {
        "promo": {"banned_at": banned_at, "ban_ends": banned_at + ban_s, "resumed": resumed},
        "calm": {},
    }
    yield s, start + 3 * 3600, signals

    replaced_at = start + 3600
    back_at = replaced_at + 180
    s = Scenario(
        "stream_replaced",
        "At 10:00 another client connects with the device keys of twin and of flip. twin"
        " stays replaced; flip is re-paired three minutes later and connected again. solo is"
        " never replaced.",
    )
    for account in ("twin", "flip", "solo"):
        s.account(account, silence_threshold="5m")
        s.connect(start, account)
        traffic(s, account, start + 10, replaced_at if account != "solo" else start + 2 * 3600)
    for account in ("twin", "flip"):
        s.add(replaced_at, account, build.stream_replaced())
    s.add(back_at, "flip", build.qr())
    s.add(back_at + 30, "flip", build.pair_status(success=True))
    s.connect(back_at + 35, "flip")
    traffic(s, "flip", back_at + 45, start + 2 * 3600)
    signals = {
        "twin": {"replaced_at": replaced_at},
        "flip": {"replaced_at": replaced_at, "back_at": back_at + 35},
        "solo": {},
    }
    yield s, start + 2 * 3600, signals

    storm_from = start + 3600
    s = Scenario(
        "undecryptable_storm",
        'From 10:00 about a third of the messages storm receives cannot be decrypted (a "Bad'
        ' MAC" storm); steady, as busy, has one it cannot decrypt at 10:30. Real messages'
        " keep arriving for both: neither is deaf.",
    )
    for account in ("storm", "steady"):
        s.account(account, silence_threshold="5m")
        s.connect(start, account)
        traffic(s, account, start + 10, start + 3 * 3600)
    failures = 0
    for t in s.every(storm_from, start + 3 * 3600, 120):
        undecryptable(s, t, "storm")
        failures += 1
    undecryptable(s, start + 5400, "steady")
    signals = {
        "storm": {"storm_from": storm_from, "undecryptable": failures},
        "steady": {"undecryptable": 1},
    }
    yield s, start + 3 * 3600, signals


def render() -> dict[Path, str]:
    files: dict[Path, str] = {}
    index = []
    for scenario, end, signals in signal_scenarios():
        files[HERE / f"{scenario.name}.jsonl"] = scenario.capture(end)
        index.append({**scenarios_module.index_entry(scenario), "signals": signals})
    files[HERE / "signals.yaml"] = "# Generated by make_signals.py\n" + yaml.safe_dump(
        {"scenarios": index}, sort_keys=False, width=100
    )
    return files


def main() -> int:
    files = render()
    for path, text in files.items():
        path.write_text(text)
    print(f"wrote {len(files)} files to {HERE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
