"""Write the verdict scenarios: one capture per scenario and scenarios.yaml.

Each scenario says, per account, what the verdict must be at the end, and
for the degraded ones when the trouble began (``onset``), so the tests can
check there is no false alarm, that every degradation is seen, and how long
it took. Run ``python examples/scenarios/make_scenarios.py`` to regenerate;
a test checks the committed files are what this script writes.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from neonize.proto.Neonize_pb2 import Receipt

from sidecar import testing as build
from sidecar.adapters.capture import encode_record
from sidecar.domain.delivery import SendResult
from sidecar.domain.probes import ProbeSent, probe_text

HERE = Path(__file__).resolve().parent
DAY = 86400.0
#: Day 1 of every scenario: Monday 2025-11-17, 00:00 UTC.
EPOCH = datetime(2025, 11, 17, tzinfo=UTC).timestamp()
TICK = 30.0

Record = tuple[float, str | None, Any]


class Scenario:
    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self.records: list[Record] = []
        self.accounts: dict[str, dict[str, Any]] = {}
        self.expect: dict[str, dict[str, Any]] = {}
        self._ids = iter(range(1, 10**7))
        self._rng = random.Random(name)
        #: Verdicts before this are the model's training and not judged.
        self.judge_from: float | None = None

    def account(self, account_id: str, **config: Any) -> None:
        self.accounts[account_id] = {"id": account_id, **config}

    def add(self, t: float, account: str | None, event: Any) -> None:
        self.records.append((t, account, event))

    def connect(self, t: float, account: str, *, synced: bool = True) -> None:
        self.add(t, account, build.connected())
        if synced:
            self.add(t + 1, account, build.offline_sync_preview(total=3))
            self.add(t + 3, account, build.offline_sync_completed(count=3))

    def real(self, t: float, account: str, text: str = "hello") -> None:
        self.add(
            t,
            account,
            build.message_event(
                build.text(text),
                message_id=f"{self.name[:6].upper()}{next(self._ids)}",
                timestamp_ms=int(t * 1000) - 500,
            ),
        )

    def protocol(self, t: float, account: str) -> None:
        content = (
            build.history_sync_notification()
            if self._rng.random() < 0.5
            else build.app_state_key_share()
        )
        self.add(
            t,
            account,
            build.message_event(
                content, from_me=True, message_id=f"P{next(self._ids)}", timestamp_ms=int(t * 1000)
            ),
        )

    def own_message(self, t: float, account: str, *, device: int, lid: bool = False) -> None:
        """A text the account's owner sent from ``device`` of its own number (0: the phone)."""
        self.add(
            t,
            account,
            build.message_event(
                build.text("on my way"),
                from_me=True,
                sender=build.own(device, lid=lid),
                message_id=f"O{next(self._ids)}",
                timestamp_ms=int(t * 1000),
            ),
        )

    @staticmethod
    def own_receipt(t: float, chat: Any, *, device: int, lid: bool = False) -> Any:
        """The owner read ``chat`` on ``device`` of its own number."""
        return build.receipt(
            ["3EB0AAAA"],
            chat,
            Receipt.READ_SELF,
            from_me=True,
            sender=build.own(device, lid=lid),
            timestamp_s=int(t),
        )

    def every(self, start: float, end: float, mean_gap: float) -> Iterator[float]:
        """Times from ``start`` to ``end`` with gaps around ``mean_gap`` (+-50 %)."""
        t = start + self._rng.uniform(0.5, 1.5) * mean_gap
        while t < end:
            yield t
            t += self._rng.uniform(0.5, 1.5) * mean_gap

    def daytime_history(self, account: str, days: int, gap: float) -> None:
        """``days`` days of real traffic from 08:00 to 20:00, none at night."""
        for day in range(days):
            for t in self.every(EPOCH + day * DAY + 8 * 3600, EPOCH + day * DAY + 20 * 3600, gap):
                self.real(t, account)

    def probe(
        self, t: float, sender: str, receiver: str, *, delay: float | None, ok: bool = True
    ) -> None:
        probe_id = f"{sender}-{int(t)}"
        self.add(
            t, sender, ProbeSent(probe_id, receiver, ok=ok, reason=None if ok else "send_failed")
        )
        if ok and delay is not None:
            self.add(
                t + delay,
                receiver,
                build.message_event(
                    build.text(probe_text(probe_id)),
                    message_id=f"PR{next(self._ids)}",
                    timestamp_ms=int(t * 1000),
                ),
            )

    def send(self, t: float, account: str, chat: str, *, receipt: float | None = None) -> str:
        """A message the server accepted for the chat of fictional number ``chat``;
        ``receipt``: the recipient's delivered receipt comes this many seconds later."""
        message_id = f"3EB0{self.name[:4].upper()}{next(self._ids):08d}"
        self.add(t, account, SendResult(message_id, f"{chat}@s.whatsapp.net", ok=True))
        if receipt is not None:
            self.add(t + receipt, account, build.receipt([message_id], build.jid(chat)))
        return message_id

    def healthy(self, account: str) -> None:
        self.expect[account] = {"degraded": False, "reasons": []}

    def degraded(
        self, account: str, reasons: list[str], onset: float, max_threshold_s: float | None = None
    ) -> None:
        self.expect[account] = {"degraded": True, "reasons": reasons, "onset": onset}
        if max_threshold_s is not None:
            self.expect[account]["max_threshold_s"] = max_threshold_s

    def capture(self, end: float) -> str:
        """Ticks every 30 s over the last day (where verdicts are judged closely), every
        10 minutes before it."""
        t = min(r[0] for r in self.records)
        while t <= end:
            self.records.append((t, None, None))
            t += TICK if t >= end - DAY else 600.0
        self.records.sort(key=lambda r: (r[0], r[2] is None))
        return "".join(encode_record(round(t, 3), a, e) + "\n" for t, a, e in self.records)


def scenarios() -> Iterator[tuple[Scenario, float]]:
    day8 = EPOCH + 7 * DAY

    s = Scenario(
        "busy_healthy",
        "Real messages every minute or so for two hours, protocol traffic beside them.",
    )
    s.account("shop", silence_threshold="5m")
    s.connect(day8 + 9 * 3600, "shop")
    for t in s.every(day8 + 9 * 3600 + 10, day8 + 11 * 3600, 60):
        s.real(t, "shop")
    for t in s.every(day8 + 9 * 3600 + 10, day8 + 11 * 3600, 240):
        s.protocol(t, "shop")
    s.healthy("shop")
    yield s, day8 + 11 * 3600

    s = Scenario(
        "quiet_night",
        "A week of daytime traffic; the night is silent, with no protocol traffic either.",
    )
    s.account("dentist", silence_threshold="5m")
    s.connect(EPOCH + 7 * 3600, "dentist")
    s.daytime_history("dentist", 8, 300)
    s.healthy("dentist")
    yield s, day8 + DAY + 3 * 3600

    s = Scenario(
        "quiet_night_protocol",
        "As quiet_night, but app-state and history-sync traffic trickles in at night: the learned hourly rates say the silence is normal. The first three days teach the model (before that the floor applies and the nights are flagged); days 4 to 8 are judged.",
    )
    s.judge_from = EPOCH + 4 * DAY
    s.account("dentist", silence_threshold="5m")
    s.connect(EPOCH + 7 * 3600, "dentist")
    s.daytime_history("dentist", 8, 300)
    for day in range(8):
        for t in s.every(
            EPOCH + day * DAY + 20.5 * 3600, EPOCH + (day + 1) * DAY + 7.5 * 3600, 2400
        ):
            s.protocol(t, "dentist")
    s.healthy("dentist")
    yield s, day8 + DAY + 3 * 3600

    onset = day8 + 14 * 3600
    s = Scenario(
        "degraded_after_traffic",
        "A busy account goes deaf at 14:00 on day 8; protocol traffic goes on every minute.",
    )
    s.account("sales", silence_threshold="5m")
    s.connect(EPOCH + 7 * 3600, "sales")
    s.daytime_history("sales", 7, 120)
    for t in s.every(day8 + 8 * 3600, onset, 120):
        s.real(t, "sales")
    for t in s.every(day8 + 8 * 3600, day8 + 16 * 3600, 60):
        s.protocol(t, "sales")
    # a busy afternoon: the learned threshold stays close to the 5-minute floor
    s.degraded("sales", ["silence_with_protocol_traffic"], onset, max_threshold_s=900)
    yield s, day8 + 15 * 3600

    start = day8 + 10 * 3600
    s = Scenario(
        "never_real", "Connected and synced, protocol traffic flowing, not one real message."
    )
    s.account("fresh", silence_threshold="10m")
    s.connect(start, "fresh")
    for t in s.every(start + 60, start + 3600, 90):
        s.protocol(t, "fresh")
    s.degraded("fresh", ["never_real_with_protocol_traffic"], start + 3)
    yield s, start + 3600

    start = day8 + 9 * 3600
    deaf_from = start + 1800
    s = Scenario(
        "reconnect_storm",
        "Two accounts reconnect every 3 minutes: one keeps receiving (healthy), one went deaf; a reconnect must not reset the evidence.",
    )
    s.account("flappy", silence_threshold="5m")
    s.account("flappy-deaf", silence_threshold="5m")
    for account in ("flappy", "flappy-deaf"):
        s.connect(start, account)
        for k, t in enumerate(s.every(start + 180, start + 2 * 3600, 180)):
            s.add(t, account, build.disconnected())
            s.connect(t + 5 + k % 3, account)  # each with its (empty) offline backlog
    for t in s.every(start + 10, start + 2 * 3600, 45):
        s.real(t, "flappy")
        s.protocol(t + 7, "flappy-deaf")
    for t in s.every(start + 10, deaf_from, 45):
        s.real(t, "flappy-deaf")
    s.healthy("flappy")
    s.degraded("flappy-deaf", ["silence_with_protocol_traffic"], deaf_from)
    yield s, start + 2 * 3600

    start = day8 + 9 * 3600
    s = Scenario(
        "reconnect_backlog",
        "Two busy accounts come back from a drop: outage is away for 8 minutes from 10:00"
        " and its offline backlog takes a minute, protocol traffic first, the waiting"
        " messages last; forced's keepalives fail for 3 minutes from 10:30, nothing arrives,"
        " and whatsmeow reconnects it by itself (no DisconnectedEv, and no"
        " KeepAliveRestoredEv on the new connection). Neither is ever deaf.",
    )
    drop, back = start + 3600, start + 3600 + 480
    stall = start + 5400
    for account in ("outage", "forced"):
        s.account(account, silence_threshold="5m")
        s.connect(start, account)
    for t in s.every(start + 10, start + 2 * 3600, 60):
        if not drop <= t < back + 60:
            s.real(t, "outage")
        if not stall <= t < stall + 200:
            s.real(t, "forced")
    for t in s.every(start + 10, start + 2 * 3600, 240):
        for account in ("outage", "forced"):
            s.protocol(t, account)
    s.add(drop, "outage", build.disconnected())
    s.add(back, "outage", build.connected())
    s.add(back + 1, "outage", build.offline_sync_preview(total=12))
    for k in range(4):
        s.protocol(back + 2 + 10 * k, "outage")
    for k in range(8):
        s.real(back + 50 + k, "outage", "sent while it was away")
    s.add(back + 61, "outage", build.offline_sync_completed(count=12))
    for n, t in enumerate(range(int(stall) + 35, int(stall) + 200, 30)):
        s.add(t, "forced", build.keepalive_timeout(errors=n + 1))
    s.add(stall + 200, "forced", build.connected())
    s.add(stall + 201, "forced", build.offline_sync_preview(total=3))
    for k in range(3):
        s.real(stall + 202 + k, "forced", "sent while it was stuck")
    s.add(stall + 206, "forced", build.offline_sync_completed(count=3))
    s.healthy("outage")
    s.healthy("forced")
    yield s, start + 2 * 3600

    start = day8 + 9 * 3600
    lost = start + 3600
    s = Scenario(
        "keepalive_loss",
        "Keepalives start failing after an hour and never recover; nothing arrives after that.",
    )
    s.account("kiosk", silence_threshold="15m")
    s.connect(start, "kiosk")
    for t in s.every(start + 10, lost, 60):
        s.real(t, "kiosk")
    for n, t in enumerate(s.every(lost, lost + 1800, 30)):
        s.add(t, "kiosk", build.keepalive_timeout(errors=n + 1))
    s.degraded("kiosk", ["keepalive_lost"], lost)
    yield s, lost + 1800

    start = day8 + 9 * 3600
    s = Scenario(
        "logged_out",
        "The phone logs the device out; the status says so, the verdict does not pile on.",
    )
    s.account("gone", silence_threshold="5m")
    s.connect(start, "gone")
    for t in s.every(start + 10, start + 1800, 60):
        s.real(t, "gone")
    s.add(start + 1800, "gone", build.logged_out())
    s.expect["gone"] = {"degraded": False, "reasons": [], "status": "logged_out"}
    yield s, start + 3 * 3600

    start = day8 + 9 * 3600
    lost_from = start + 3600
    s = Scenario(
        "probe_lost",
        "Account a probes b every 5 minutes; b is otherwise quiet; from 10:00 b stops receiving the probes.",
    )
    s.account(
        "a",
        silence_threshold="5m",
        probe={"peer": "b", "interval": "5m", "timeout": "2m", "misses": 2},
    )
    s.account("b", silence_threshold="5m")
    for account in ("a", "b"):
        s.connect(start, account)
    t = start + 300
    while t < start + 2 * 3600:
        s.probe(t, "a", "b", delay=20.0 if t < lost_from else None)
        t += 300
    s.healthy("a")
    s.degraded("b", ["probe_not_received"], lost_from)
    yield s, start + 2 * 3600

    start = day8 + 9 * 3600
    s = Scenario(
        "probe_late",
        "Probes arrive 90 s after they were sent, within the 2-minute timeout: healthy.",
    )
    s.account(
        "a",
        silence_threshold="5m",
        probe={"peer": "b", "interval": "5m", "timeout": "2m", "misses": 2},
    )
    s.account("b", silence_threshold="5m")
    for account in ("a", "b"):
        s.connect(start, account)
    t = start + 300
    while t < start + 2 * 3600:
        s.probe(t, "a", "b", delay=90.0)
        t += 300
    for tp in s.every(start + 60, start + 2 * 3600, 600):
        s.protocol(tp, "b")
    s.healthy("a")
    s.healthy("b")
    yield s, start + 2 * 3600

    start = day8 + 9 * 3600
    failing_from = start + 1800
    s = Scenario(
        "probe_send_failing", "Account a cannot send its probes from 09:30: a is marked, b is not."
    )
    s.account(
        "a",
        silence_threshold="5m",
        probe={"peer": "b", "interval": "5m", "timeout": "2m", "misses": 2},
    )
    s.account("b", silence_threshold="5m")
    for account in ("a", "b"):
        s.connect(start, account)
    t = start + 300
    while t < start + 3600:
        s.probe(t, "a", "b", delay=15.0, ok=t < failing_from)
        t += 300
    s.degraded("a", ["probe_send_failed"], failing_from)
    s.healthy("b")
    yield s, start + 3600

    start = day8 + 9 * 3600
    onset = start + 600
    s = Scenario(
        "sends_not_delivered",
        "Three accounts send every 2 minutes: shop's messages are delivered; from 09:10 lost's"
        " go to several chats and none is delivered (its own phone's receipt and a retry"
        " request come back, which prove nothing);"
        " offline sends to one customer whose phone stays off.",
    )
    chats = [f"155500100{n:02d}" for n in range(5)]
    for account in ("shop", "lost", "offline"):
        s.account(account, silence_threshold="5m")
        s.connect(start, account)
    for n, t in enumerate(s.every(start + 60, start + 2700, 120)):
        sent = s.send(t, "shop", chats[n % 4], receipt=1.5)
        if n % 3 == 0:
            s.add(t + 40, "shop", build.receipt([sent], build.jid(chats[n % 4]), Receipt.READ))
    for t in range(int(start) + 90, int(start) + 2700, 120):
        s.send(t, "offline", chats[4])
    s.add(start + 300, "shop", SendResult("", f"{chats[0]}@s.whatsapp.net", False, "timeout"))
    first = s.send(onset, "lost", chats[0])
    s.add(onset + 2, "lost", build.receipt([first], build.jid(chats[0]), from_me=True))
    second = s.send(onset + 5, "lost", chats[1])
    # the recipient's phone asks for the message again: it could not decrypt it
    s.add(onset + 6, "lost", build.receipt([second], build.jid(chats[1]), Receipt.RETRY))
    s.send(onset + 10, "lost", chats[2])
    for n, t in enumerate(range(int(onset) + 127, int(start) + 2700, 120)):
        s.send(t, "lost", chats[n % 4])
    s.healthy("shop")
    s.healthy("offline")
    s.degraded("lost", ["sends_not_delivered"], onset)
    yield s, start + 2700

    start = day8 + 9 * 3600
    s = Scenario(
        "quiet_no_history",
        "A new account with no history, connected for six hours without a single message: quiet.",
    )
    s.account("newbie", silence_threshold="5m")
    s.connect(start, "newbie")
    s.healthy("newbie")
    s.expect["newbie"]["quiet"] = True
    yield s, start + 6 * 3600

    yield phone_offline()


def phone_offline() -> tuple[Scenario, float]:
    """Two paired accounts over 11 days; ``away``'s phone is last seen at 12:05 on day 1,
    while the account goes on receiving and its WhatsApp Web (device 7) goes on sending
    and reading, which proves nothing about the phone. ``daily``'s phone sends and reads
    every day, in phone-number and LID form. Neither session is deaf."""
    s = Scenario(
        "phone_offline",
        "away's phone is last seen at 12:05 on day 1 (it sent a message, then read a chat);"
        " its WhatsApp Web goes on sending and reading and messages keep arriving for 11"
        " days. daily's phone sends and reads every day. Both sessions hear.",
    )
    for account in ("away", "daily"):
        s.account(account, silence_threshold="5m")
        s.connect(EPOCH + 8 * 3600, account)
        s.real(EPOCH + 8 * 3600 + 30, account)
        s.protocol(EPOCH + 8 * 3600 + 40, account)  # the phone's history sync after pairing
        s.daytime_history(account, 11, 600)
        s.add(EPOCH + 5 * DAY + 3 * 3600, account, build.disconnected())
        s.connect(EPOCH + 5 * DAY + 3 * 3600 + 20, account)
    chat = build.jid(build.FICTIONAL_PHONE)
    end = EPOCH + 11 * DAY + 13 * 3600
    for day in range(12):
        noon = EPOCH + day * DAY + 12 * 3600
        if day == 0:
            s.own_message(noon, "away", device=0)
            s.add(noon + 300, "away", s.own_receipt(noon + 300, chat, device=0))
        if noon + 3 * 3600 < end:
            s.own_message(noon + 3 * 3600, "away", device=7)
            web_read = noon + 3 * 3600 + 60
            s.add(web_read, "away", s.own_receipt(web_read, chat, device=7))
        s.own_message(noon, "daily", device=0, lid=day % 2 == 1)
        s.add(noon + 300, "daily", s.own_receipt(noon + 300, chat, device=0, lid=day % 2 == 0))
    s.healthy("away")
    s.healthy("daily")
    return s, end


def index_entry(scenario: Scenario) -> dict[str, Any]:
    """What an index says of every scenario: its name, story, capture and accounts (the
    signal scenarios' index too)."""
    return {
        "name": scenario.name,
        "description": scenario.description,
        "capture": f"{scenario.name}.jsonl",
        "accounts": list(scenario.accounts.values()),
    }


def render() -> dict[Path, str]:
    files: dict[Path, str] = {}
    index = []
    for scenario, end in scenarios():
        files[HERE / f"{scenario.name}.jsonl"] = scenario.capture(end)
        index.append(
            {
                **index_entry(scenario),
                "expect": scenario.expect,
                **({"judge_from": scenario.judge_from} if scenario.judge_from else {}),
            }
        )
    files[HERE / "scenarios.yaml"] = "# Generated by make_scenarios.py\n" + yaml.safe_dump(
        {"scenarios": index}, sort_keys=False, width=100
    )
    return files


def main() -> int:
    for path, text in render().items():
        path.write_text(text)
    print(f"wrote {len(render())} files to {HERE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
