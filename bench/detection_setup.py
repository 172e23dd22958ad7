"""What the detection benchmark gives its servers: the capture the sidecar replays, the
saved state of the night-quiet account, and the configs (the shipped ones, with this run's
addresses; in smoke, every wait scaled down)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from monitoring.durations import seconds
from sidecar import testing as build
from sidecar.adapters.capture import encode_record
from sidecar.adapters.sqlite_state import SqliteStateStore
from sidecar.domain.account import PersistedState
from sidecar.domain.gaps import GapModel
from sidecar.domain.probes import ProbeSent, probe_text

REPO = Path(__file__).resolve().parent.parent
SHIPPED_RULES = REPO / "alerts/wa-sidecar.rules.yml"
SHIPPED_ALERTMANAGER = REPO / "alertmanager/alertmanager.yml"
SHIPPED_PROMETHEUS = REPO / "deploy/container/prometheus.yml"

#: The two accounts that go deaf, each its own way.
DEAFENING = "deafening"  # real messages stop; protocol traffic goes on
PROBED = "probed"  # otherwise quiet; the canary probes from ``prober`` stop arriving
PROBER = "prober"
#: The controls: never paged.
HEALTHY = "healthy"  # busy throughout
QUIET = "quiet"  # connected, nothing arrives at all
NIGHT = "night"  # a protocol trickle at night, when its saved history says it is silent
RECONNECTING = "reconnecting"  # busy; a short drop, then an outage past its threshold
STALLED = "stalled"  # busy; keepalives fail for 3 minutes, whatsmeow reconnects by itself
CONTROLS = (HEALTHY, QUIET, NIGHT, RECONNECTING, STALLED, PROBER)

#: Accounts connect at the capture's start and have synced when traffic begins.
TRAFFIC_AFTER_S = 2.0


@dataclass(frozen=True)
class Timing:
    """The run's shape, in the full run's seconds after the capture's start; ``scale``
    divides every time and wait (the smoke run's 30 makes 5 minutes 10 s)."""

    scale: float
    #: Traffic of the busy accounts (not scaled: the smoke run's are its own).
    real_gap_s: float
    protocol_gap_s: float
    #: How often the watcher polls the sidecar and Prometheus.
    poll_s: float
    deaf_onset: float = 62.0  # busy for a minute first
    probe_first: float = 10.0  # delivered; the next ones are lost
    drop: tuple[float, float] = (20.0, 8.0)  # (at, for)
    outage: tuple[float, float] = (100.0, 330.0)  # longer than the 300 s threshold
    backlog_s: float = 40.0  # the outage's backlog: protocol traffic first
    stall: tuple[float, float] = (500.0, 200.0)  # keepalives fail from +35 s
    night_trickle_s: float = 20.0

    def at(self, seconds: float) -> float:
        return seconds / self.scale

    @property
    def controls_settled(self) -> float:
        """When the last control's episode has ended (capture seconds)."""
        return self.at(max(self.outage[0] + self.outage[1] + self.backlog_s, sum(self.stall)))


FULL = Timing(scale=1.0, real_gap_s=3.0, protocol_gap_s=10.0, poll_s=0.5)
SMOKE = Timing(scale=30.0, real_gap_s=0.5, protocol_gap_s=0.5, poll_s=0.2)


def scaled(duration: str, scale: float) -> str:
    """A config or rule duration divided by ``scale``, in whole seconds (at least 1 s
    unless it is 0)."""
    value = seconds(duration)
    return "0s" if value == 0 else f"{max(1, round(value / scale))}s"


# -- the configs -----------------------------------------------------------------------


def sidecar_config(timing: Timing, listen: str, state_dir: Path, night_zone: str) -> dict[str, Any]:
    """Default settings (silence threshold, verdict.confirm, probes), scaled in smoke."""
    probe: dict[str, Any] = {"peer": PROBED}
    config: dict[str, Any] = {
        "http": {"listen": listen},
        "state_dir": str(state_dir),
        "accounts": [
            {"id": DEAFENING},
            {"id": PROBER, "probe": probe},
            {"id": PROBED},
            {"id": HEALTHY},
            {"id": QUIET},
            {"id": NIGHT, "timezone": night_zone},
            {"id": RECONNECTING},
            {"id": STALLED},
        ],
    }
    if timing.scale != 1:
        config["silence_threshold"] = scaled("5m", timing.scale)
        config["verdict"] = {"confirm": scaled("30s", timing.scale)}
        probe.update(interval=scaled("5m", timing.scale), timeout=scaled("2m", timing.scale))
    return config


def rules_text(timing: Timing) -> str:
    """The shipped rules; in smoke, every ``for`` and ``keep_firing_for`` scaled down."""
    if timing.scale == 1:
        return SHIPPED_RULES.read_text()
    rules = yaml.safe_load(SHIPPED_RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = scaled(rule[key], timing.scale)
    return yaml.safe_dump(rules, sort_keys=False)


def prometheus_config(
    timing: Timing, rules: Path, alertmanager: str, sidecar: str
) -> dict[str, Any]:
    """The shipped Prometheus config with this run's addresses (and 1 s intervals in smoke)."""
    config: dict[str, Any] = yaml.safe_load(SHIPPED_PROMETHEUS.read_text())
    if timing.scale != 1:
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules)]
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [sidecar]}]
    return config


def alertmanager_config(timing: Timing, webhook_url: str, token_file: Path) -> dict[str, Any]:
    """The shipped config, each receiver posting to ``webhook_url``/its name (the
    remediation hook's bearer token read from ``token_file``); short timers in smoke."""
    config: dict[str, Any] = yaml.safe_load(SHIPPED_ALERTMANAGER.read_text())
    if timing.scale != 1:
        for route in (config["route"], *config["route"]["routes"]):
            for key in ("group_wait", "group_interval"):
                if key in route or route is config["route"]:
                    route[key] = "1s"
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{webhook_url}/{receiver['name']}"
            authorization = hook.get("http_config", {}).get("authorization")
            if authorization is not None:
                authorization["credentials_file"] = str(token_file)
    return config


# -- the night-quiet account's saved state -----------------------------------------------


def night_zone(now: float) -> str:
    """A fixed-offset zone where it is between 02:00 and 03:00 at ``now``."""
    hour = datetime.fromtimestamp(now, UTC).hour
    offset = (2 - hour) % 24
    if offset > 14:
        offset -= 24
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def save_night_history(state_dir: Path, zone: str, now: float) -> float:
    """A week of daytime traffic (08:00 to 20:00 in ``zone``, every 10 minutes), the last
    message yesterday at 20:00, as a restarted sidecar finds it; returns that time."""
    tz = ZoneInfo(zone)
    today = datetime.fromtimestamp(now, tz).replace(hour=0, minute=0, second=0, microsecond=0)
    model = GapModel(zone)
    last = 0.0
    for days_back in range(8, 0, -1):
        moment = today - timedelta(days=days_back) + timedelta(hours=8)
        while moment <= today - timedelta(days=days_back) + timedelta(hours=20):
            last = moment.timestamp()
            model.record(last)
            moment += timedelta(minutes=10)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = SqliteStateStore(state_dir)
    try:
        store.save([(NIGHT, PersistedState(last, last, model.take_dirty()))])
    finally:
        store.close()
    return last


# -- the capture ---------------------------------------------------------------------


@dataclass(frozen=True)
class Onsets:
    """Capture times (Unix seconds) the latencies are measured from."""

    #: The last real message of ``deafening``.
    deaf: float
    #: When the first probe that never arrives was sent to ``probed``.
    probe: float


class Capture:
    """Records ``(t, account, event)``, written sorted as the sidecar's capture format."""

    def __init__(self) -> None:
        self.records: list[tuple[float, str, Any]] = []
        self._ids = iter(range(1, 10**9))

    def add(self, t: float, account: str, event: Any) -> None:
        self.records.append((t, account, event))

    def real(self, t: float, account: str) -> None:
        content = build.text("order update")
        self.add(t, account, message(content, f"R{next(self._ids)}", t, from_me=False))

    def protocol(self, t: float, account: str) -> None:
        n = next(self._ids)
        content = build.history_sync_notification() if n % 2 else build.app_state_key_share()
        self.add(t, account, message(content, f"P{n}", t, from_me=True))

    def every(self, gap: float, start: float, end: float) -> list[float]:
        count = max(0, int((end - start) / gap - 1e-9) + 1) if end > start else 0
        return [start + k * gap for k in range(count)]

    def busy(self, account: str, start: float, end: float, timing: Timing) -> None:
        """Real messages and protocol traffic, as a connected account gets them."""
        for t in self.every(timing.real_gap_s, start, end):
            self.real(t, account)
        self.trickle(account, start + timing.protocol_gap_s / 2, end, timing.protocol_gap_s)

    def trickle(self, account: str, start: float, end: float, gap: float) -> None:
        for t in self.every(gap, start, end):
            self.protocol(t, account)

    def write(self, path: Path) -> None:
        self.records.sort(key=lambda r: r[0])
        path.write_text("".join(encode_record(t, a, e) + "\n" for t, a, e in self.records))


def message(content: Any, message_id: str, at: float, *, from_me: bool) -> Any:
    return build.message_event(
        content, from_me=from_me, message_id=message_id, timestamp_ms=int(at * 1000)
    )


def write_capture(
    path: Path, start: float, end: float, timing: Timing, probe_interval_s: float
) -> Onsets:
    """Every account connects at ``start``; the two deaf ones go deaf at their onsets;
    the controls go through their episodes (see the module's names)."""
    c, t = Capture(), timing
    first = start + TRAFFIC_AFTER_S
    for account in (DEAFENING, PROBER, PROBED, HEALTHY, QUIET, NIGHT, RECONNECTING, STALLED):
        c.add(start, account, build.connected())
        c.add(start + 1, account, build.offline_sync_completed())
    onset = start + t.at(t.deaf_onset)
    c.busy(DEAFENING, first, onset, t)
    c.real(onset, DEAFENING)
    c.trickle(DEAFENING, onset + t.protocol_gap_s / 2, end, t.protocol_gap_s)
    c.busy(HEALTHY, first, end, t)
    c.trickle(NIGHT, first, end, t.at(t.night_trickle_s))
    probes = c.every(probe_interval_s, start + t.at(t.probe_first), end)
    for n, sent in enumerate(probes):
        c.add(sent, PROBER, ProbeSent(f"probe-{n}", PROBED, ok=True))
    text = build.text(probe_text("probe-0"))  # the first arrives; the others never do
    c.add(probes[0] + t.at(2), PROBED, message(text, "PR0", probes[0], from_me=False))
    reconnects(c, start, end, t)
    stalls(c, start, end, t)
    c.write(path)
    return Onsets(deaf=onset, probe=probes[1])


def reconnects(c: Capture, start: float, end: float, t: Timing) -> None:
    """A short drop and an outage past the threshold; nothing arrives while away, and
    each return brings its offline backlog: protocol traffic first, then the real
    messages that waited."""
    first = start + TRAFFIC_AFTER_S
    for (at, length), backlog in ((t.drop, t.at(4)), (t.outage, t.at(t.backlog_s))):
        gone, back = start + t.at(at), start + t.at(at + length)
        c.busy(RECONNECTING, first, gone, t)
        c.add(gone, RECONNECTING, build.disconnected())
        c.add(back, RECONNECTING, build.connected())
        c.add(back + backlog / 40, RECONNECTING, build.offline_sync_preview(total=9))
        c.trickle(RECONNECTING, back + backlog / 20, back + backlog * 0.75, backlog / 4)
        for k in range(5):
            c.real(back + backlog * 0.8 + k * backlog / 40, RECONNECTING)
        c.add(back + backlog, RECONNECTING, build.offline_sync_completed(count=9))
        first = back + backlog + t.at(1)
    c.busy(RECONNECTING, first, end, t)


def stalls(c: Capture, start: float, end: float, t: Timing) -> None:
    """Keepalives fail and nothing arrives; whatsmeow reconnects by itself after 3
    minutes (a ``ConnectedEv`` with no ``DisconnectedEv`` before it) and the backlog
    brings what waited."""
    stall, back = start + t.at(t.stall[0]), start + t.at(sum(t.stall))
    c.busy(STALLED, start + TRAFFIC_AFTER_S, stall, t)
    for n, at in enumerate(c.every(t.at(30), stall + t.at(35), back)):
        c.add(at, STALLED, build.keepalive_timeout(errors=n + 1))
    c.add(back, STALLED, build.connected())
    c.add(back + t.at(1), STALLED, build.offline_sync_preview(total=3))
    for k in range(3):
        c.real(back + t.at(2 + k), STALLED)
    c.add(back + t.at(5), STALLED, build.offline_sync_completed(count=3))
    c.busy(STALLED, back + t.at(6), end, t)
