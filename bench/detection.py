"""Detection: from a session going deaf to the page at Alertmanager's receiver.

The sidecar replays a capture in real time (speed 1): account ``deafening`` gets
a real message every few seconds, then, from a known onset (its last real
message), only protocol traffic (history-sync notifications, app-state key
shares); account ``healthy``, the control, stays busy throughout. A real
Prometheus scrapes it and evaluates the shipped rules with the shipped scrape
and evaluation intervals (deploy/container/prometheus.yml); a real Alertmanager
routes with the shipped alertmanager.yml, its receivers' URLs pointed at a
webhook run here. Measured, in wall seconds after onset: the sidecar's verdict
(``whatsapp_session_degraded`` on /metrics, polled), Prometheus firing
WhatsappSessionDegraded (pending per /api/v1/alerts, firing at the evaluation
that the notification's ``startsAt`` names), and the page reaching the
receiver. The baseline is the sum of the configured waits: silence threshold +
the rule's ``for``.

    python -m bench.detection          # shipped waits and intervals: ~12 minutes
    python -m bench.detection --smoke  # every wait shortened, 1 s intervals: ~30 s

Exits 1 when the page never arrives or the healthy control is paged, and, on a
full run, when the page comes later than the configured waits + 2 x the
evaluation interval + group_wait + 10 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from subprocess import STDOUT, Popen, TimeoutExpired
from types import FrameType
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.common import Result, report
from sidecar import testing as build
from sidecar.adapters.capture import encode_record
from sidecar.config import load_config, parse_duration
from tests.support.ports import free_port
from tests.support.services import installed

REPO = Path(__file__).resolve().parent.parent
SHIPPED_RULES = REPO / "alerts/wa-sidecar.rules.yml"
SHIPPED_ALERTMANAGER = REPO / "alertmanager/alertmanager.yml"
SHIPPED_PROMETHEUS = REPO / "deploy/container/prometheus.yml"

DEAFENING = "deafening"
CONTROL = "healthy"
DEGRADED_ALERT = "WhatsappSessionDegraded"
RAW_ALERT = "WhatsappNoRealMessages"
PAGER = "pager"
REMEDIATION = "sidecar-remediation"
SLACK_S = 10.0

#: The sidecar's replay clock starts at the capture's first record once it serves
#: HTTP; starting the capture this far ahead keeps its clock close to wall time.
SIDECAR_START_S = 0.8
#: Accounts connect at the capture's start and have synced when traffic begins.
TRAFFIC_AFTER_S = 2.0
READY_TIMEOUT_S = 60.0
#: How long past the target to keep waiting before calling the page lost.
GIVE_UP_AFTER_TARGET_S = 60.0
#: How long the sidecar serves after its capture ends.
LINGER_S = 60.0

SMOKE_SILENCE_THRESHOLD = "10s"
SMOKE_RULE_DURATIONS = "3s"
SMOKE_INTERVAL = "1s"


@dataclass(frozen=True)
class Traffic:
    """The capture's shape: busy until onset, then protocol only for ``deafening``."""

    busy_s: float
    real_gap_s: float
    protocol_gap_s: float
    #: How often the watcher polls the sidecar and Prometheus.
    poll_s: float


FULL_TRAFFIC = Traffic(busy_s=60.0, real_gap_s=3.0, protocol_gap_s=10.0, poll_s=0.5)
SMOKE_TRAFFIC = Traffic(busy_s=8.0, real_gap_s=1.0, protocol_gap_s=1.0, poll_s=0.2)


@dataclass(frozen=True)
class Waits:
    """The configured waits and intervals, read back from the files the servers got."""

    silence_threshold_s: float
    degraded_for_s: float
    raw_for_s: float
    scrape_interval_s: float
    evaluation_interval_s: float
    group_wait_s: float

    @property
    def lower_bound_s(self) -> float:
        return self.silence_threshold_s + self.degraded_for_s

    @property
    def target_s(self) -> float:
        return self.lower_bound_s + 2 * self.evaluation_interval_s + self.group_wait_s + SLACK_S


# -- the configs ---------------------------------------------------------------------


def sidecar_config(smoke: bool, listen: str, state_dir: Path) -> dict[str, Any]:
    config: dict[str, Any] = {
        "http": {"listen": listen},
        "state_dir": str(state_dir),
        "accounts": [{"id": DEAFENING}, {"id": CONTROL}],
    }
    if smoke:
        config["silence_threshold"] = SMOKE_SILENCE_THRESHOLD
    return config


def rules_text(smoke: bool) -> str:
    """The shipped rules; in smoke, every ``for`` and ``keep_firing_for`` shortened."""
    if not smoke:
        return SHIPPED_RULES.read_text()
    rules = yaml.safe_load(SHIPPED_RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = SMOKE_RULE_DURATIONS
    return yaml.safe_dump(rules, sort_keys=False)


def prometheus_config(smoke: bool, rules: Path, alertmanager: str, sidecar: str) -> dict[str, Any]:
    """The shipped Prometheus config with this run's addresses (and 1 s intervals in smoke)."""
    config: dict[str, Any] = yaml.safe_load(SHIPPED_PROMETHEUS.read_text())
    if smoke:
        config["global"].update(scrape_interval=SMOKE_INTERVAL, evaluation_interval=SMOKE_INTERVAL)
    config["rule_files"] = [str(rules)]
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [sidecar]}]
    return config


def alertmanager_config(smoke: bool, webhook_url: str, token_file: Path) -> dict[str, Any]:
    """The shipped config, each receiver posting to ``webhook_url``/its name (the
    remediation hook's bearer token read from ``token_file``); short timers in smoke."""
    config: dict[str, Any] = yaml.safe_load(SHIPPED_ALERTMANAGER.read_text())
    if smoke:
        config["route"].update(group_wait=SMOKE_INTERVAL, group_interval=SMOKE_INTERVAL)
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{webhook_url}/{receiver['name']}"
            authorization = hook.get("http_config", {}).get("authorization")
            if authorization is not None:
                authorization["credentials_file"] = str(token_file)
    return config


def configured_waits(
    sidecar: Path, rules: Path, prometheus: dict[str, Any], alertmanager: dict[str, Any]
) -> Waits:
    settings = {s.account_id: s for s in load_config(sidecar).config.account_settings()}
    alerts = {
        rule["alert"]: rule
        for group in yaml.safe_load(rules.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    root = alertmanager["route"]
    pager_route = next(r for r in root["routes"] if r["receiver"] == PAGER)
    return Waits(
        silence_threshold_s=settings[DEAFENING].silence_threshold_s,
        degraded_for_s=parse_duration(alerts[DEGRADED_ALERT]["for"]),
        raw_for_s=parse_duration(alerts[RAW_ALERT]["for"]),
        scrape_interval_s=parse_duration(prometheus["global"]["scrape_interval"]),
        evaluation_interval_s=parse_duration(prometheus["global"]["evaluation_interval"]),
        group_wait_s=parse_duration(pager_route.get("group_wait", root["group_wait"])),
    )


# -- the capture ---------------------------------------------------------------------


def write_capture(path: Path, start: float, onset: float, end: float, traffic: Traffic) -> None:
    """Both accounts connect at ``start``; real messages until ``onset`` (the last one
    exactly then) for ``deafening`` and until ``end`` for ``healthy``; protocol traffic
    for both throughout."""
    records: list[tuple[float, str, Any]] = []
    for account in (DEAFENING, CONTROL):
        records.append((start, account, build.connected()))
        records.append((start + 1, account, build.offline_sync_completed()))
    t, n = start + TRAFFIC_AFTER_S, 0
    while t < end:
        n += 1
        records.append((t, CONTROL, real_message(f"H{n}", t)))
        if t <= onset:
            records.append((t, DEAFENING, real_message(f"D{n}", t)))
        t = min(t + traffic.real_gap_s, onset) if t < onset else t + traffic.real_gap_s
    t, n = start + TRAFFIC_AFTER_S, 0
    while t < end:
        n += 1
        for account in (DEAFENING, CONTROL):
            records.append((t, account, protocol_message(f"P{account[0]}{n}", t, n)))
        t += traffic.protocol_gap_s
    records.sort(key=lambda r: r[0])
    path.write_text("".join(encode_record(t, a, e) + "\n" for t, a, e in records))


def real_message(message_id: str, at: float) -> Any:
    return build.message_event(
        build.text("order update"), message_id=message_id, timestamp_ms=int(at * 1000)
    )


def protocol_message(message_id: str, at: float, n: int) -> Any:
    content = build.history_sync_notification() if n % 2 else build.app_state_key_share()
    return build.message_event(
        content, from_me=True, message_id=message_id, timestamp_ms=int(at * 1000)
    )


# -- what arrives and what the watcher sees ------------------------------------------


def unix_time(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


@dataclass(frozen=True)
class Delivery:
    arrived_at: float
    #: When Prometheus fired the alert: the evaluation the notification's startsAt names.
    fired_at: float


class Receiver:
    """Alertmanager's webhook target: the first firing delivery of each
    (receiver, alert, account)."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, str, str], Delivery] = {}
        first = self._first
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                receiver = self.path.strip("/")
                with lock:
                    for alert in body["alerts"]:
                        if alert["status"] != "firing":
                            continue
                        labels = alert["labels"]
                        key = (receiver, labels["alertname"], labels.get("account", ""))
                        first.setdefault(key, Delivery(arrived, unix_time(alert["startsAt"])))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._lock = lock
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def delivery(self, receiver: str, alertname: str, account: str) -> Delivery | None:
        with self._lock:
            return self._first.get((receiver, alertname, account))

    def alerts_for(self, account: str) -> set[str]:
        with self._lock:
            return {alert for (_, alert, acct) in self._first if acct == account}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Observations:
    """Wall times (Unix seconds) of what the watcher saw first."""

    #: The sidecar's clock minus wall time, from its least delayed /metrics answer.
    clock_offset_s: float | None = None
    clock_sample_rtt_s: float = float("inf")
    verdict_at: float | None = None
    #: Prometheus' activeAt (the evaluation that first found the condition), per alert.
    pending_at: dict[str, float] = field(default_factory=dict)
    firing_seen_at: dict[str, float] = field(default_factory=dict)
    control_firing: set[str] = field(default_factory=set)


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def sample_sidecar(url: str, seen: Observations) -> None:
    sent = time.time()
    exposition = get_text(f"{url}/metrics")
    answered = time.time()
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            account = sample.labels.get("account")
            if account is not None:
                values[(sample.name, account)] = sample.value
    if seen.verdict_at is None and values.get(("whatsapp_session_degraded", DEAFENING)) == 1:
        seen.verdict_at = answered
    # last message + its age = the sidecar's "now" when it answered
    last_real = values.get(("whatsapp_last_real_message_timestamp_seconds", CONTROL))
    age = values.get(("whatsapp_last_real_message_age_seconds", CONTROL))
    if last_real is not None and age is not None and answered - sent < seen.clock_sample_rtt_s:
        seen.clock_sample_rtt_s = answered - sent
        seen.clock_offset_s = last_real + age - (sent + answered) / 2


def sample_prometheus(url: str, seen: Observations) -> None:
    body = json.loads(get_text(f"{url}/api/v1/alerts"))
    answered = time.time()
    for alert in body["data"]["alerts"]:
        name, account = alert["labels"]["alertname"], alert["labels"].get("account")
        if account == CONTROL and alert["state"] == "firing":
            seen.control_firing.add(name)
        if account != DEAFENING:
            continue
        seen.pending_at.setdefault(name, unix_time(alert["activeAt"]))
        if alert["state"] == "firing":
            seen.firing_seen_at.setdefault(name, answered)


Processes = dict[str, tuple[Popen[bytes], Path]]


def check_running(processes: Processes) -> None:
    for name, (proc, log) in processes.items():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited early ({proc.returncode}):\n{tail(log)}")


def watch(
    sidecar_url: str,
    prometheus_url: str,
    receiver: Receiver,
    processes: Processes,
    give_up_at: float,
    control_grace_s: float,
    poll_s: float,
) -> Observations:
    """Poll until the page has arrived and ``control_grace_s`` more have passed, or
    until ``give_up_at`` (wall time)."""
    seen = Observations()
    stop_at = give_up_at
    while time.time() < stop_at:
        check_running(processes)
        sample_sidecar(sidecar_url, seen)
        sample_prometheus(prometheus_url, seen)
        page = receiver.delivery(PAGER, DEGRADED_ALERT, DEAFENING)
        if page is not None:
            stop_at = min(stop_at, page.arrived_at + control_grace_s)
        time.sleep(poll_s)
    return seen


# -- the servers ---------------------------------------------------------------------


@contextlib.contextmanager
def started(
    name: str, args: list[str], log: Path, ready_url: str, processes: Processes
) -> Iterator[None]:
    """Run ``args`` (output to ``log``) until the block ends; enter once ``ready_url`` answers."""
    with log.open("wb") as out:
        proc = Popen(args, stdout=out, stderr=STDOUT)
        processes[name] = (proc, log)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not answers(ready_url):
                check_running({name: (proc, log)})
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not come up:\n{tail(log)}")
                time.sleep(0.1)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except TimeoutExpired:
                proc.kill()
                proc.wait()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every server started here is stopped."""
    raise SystemExit(128 + signum)


# -- the run -------------------------------------------------------------------------


def run(smoke: bool, workdir: Path) -> int:
    traffic = SMOKE_TRAFFIC if smoke else FULL_TRAFFIC
    prometheus_bin = installed("prometheus")
    alertmanager_bin = installed("prometheus-alertmanager")
    sidecar_address, prometheus_address, alertmanager_address = (
        f"127.0.0.1:{free_port()}" for _ in range(3)
    )
    sidecar_url = f"http://{sidecar_address}"
    prometheus_url = f"http://{prometheus_address}"

    receiver = Receiver()
    token_file = workdir / "sidecar-token"
    token_file.write_text("bench-token\n")
    sidecar_yaml, rules, prometheus_yml, alertmanager_yml, capture = (
        workdir / name
        for name in (
            "sidecar.yaml",
            "rules.yml",
            "prometheus.yml",
            "alertmanager.yml",
            "capture.jsonl",
        )
    )
    sidecar_yaml.write_text(
        yaml.safe_dump(sidecar_config(smoke, sidecar_address, workdir / "state"))
    )
    rules.write_text(rules_text(smoke))
    prometheus = prometheus_config(smoke, rules, alertmanager_address, sidecar_address)
    prometheus_yml.write_text(yaml.safe_dump(prometheus))
    alertmanager = alertmanager_config(smoke, receiver.url, token_file)
    alertmanager_yml.write_text(yaml.safe_dump(alertmanager))
    waits = configured_waits(sidecar_yaml, rules, prometheus, alertmanager)
    control_grace_s = max(3.0, 2 * waits.evaluation_interval_s)
    run_s = TRAFFIC_AFTER_S + traffic.busy_s + waits.target_s + GIVE_UP_AFTER_TARGET_S

    intervals_from = "shortened" if smoke else SHIPPED_PROMETHEUS.relative_to(REPO)
    print(
        f"{'smoke' if smoke else 'full'} run: silence threshold {waits.silence_threshold_s:g} s;"
        f" rules' for: {DEGRADED_ALERT} {waits.degraded_for_s:g} s, {RAW_ALERT}"
        f" {waits.raw_for_s:g} s; scrape {waits.scrape_interval_s:g} s, evaluation"
        f" {waits.evaluation_interval_s:g} s ({intervals_from}); group_wait"
        f" {waits.group_wait_s:g} s; {DEAFENING} busy for {traffic.busy_s:g} s, then deaf",
        flush=True,
    )
    processes: Processes = {}
    with contextlib.ExitStack() as servers:
        servers.callback(receiver.close)
        servers.enter_context(
            started(
                "Alertmanager",
                [
                    alertmanager_bin,
                    f"--config.file={alertmanager_yml}",
                    f"--storage.path={workdir / 'alertmanager-data'}",
                    f"--web.listen-address={alertmanager_address}",
                    "--cluster.listen-address=",
                ],
                workdir / "alertmanager.log",
                f"http://{alertmanager_address}/-/ready",
                processes,
            )
        )
        start = time.time() + SIDECAR_START_S
        onset_capture = start + TRAFFIC_AFTER_S + traffic.busy_s
        write_capture(capture, start, onset_capture, start + run_s + control_grace_s, traffic)
        servers.enter_context(
            started(
                "wa-sidecar",
                [
                    *(sys.executable, "-m", "sidecar", "replay", str(capture)),
                    *("--config", str(sidecar_yaml), "--speed", "1", "--linger", str(LINGER_S)),
                ],
                workdir / "sidecar.log",
                f"{sidecar_url}/readyz",
                processes,
            )
        )
        servers.enter_context(
            started(
                "Prometheus",
                [
                    prometheus_bin,
                    f"--config.file={prometheus_yml}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address={prometheus_address}",
                ],
                workdir / "prometheus.log",
                f"{prometheus_url}/-/ready",
                processes,
            )
        )
        print(
            f"servers up; polling the sidecar and Prometheus every {traffic.poll_s:g} s"
            f" until the page arrives (at most {run_s:.0f} s)",
            flush=True,
        )
        seen = watch(
            sidecar_url,
            prometheus_url,
            receiver,
            processes,
            give_up_at=time.time() + run_s,
            control_grace_s=control_grace_s,
            poll_s=traffic.poll_s,
        )
    return summarize(smoke, waits, onset_capture, seen, receiver)


def summarize(
    smoke: bool, waits: Waits, onset_capture: float, seen: Observations, receiver: Receiver
) -> int:
    if seen.clock_offset_s is None:
        print("FAIL: the sidecar never exported the control's last real message", file=sys.stderr)
        return 1
    onset = onset_capture - seen.clock_offset_s

    def after_onset(at: float | None) -> float | None:
        return None if at is None else at - onset

    page = receiver.delivery(PAGER, DEGRADED_ALERT, DEAFENING)
    remediation = receiver.delivery(REMEDIATION, DEGRADED_ALERT, DEAFENING)
    raw_page = receiver.delivery(PAGER, RAW_ALERT, DEAFENING)
    control_pages = receiver.alerts_for(CONTROL) | seen.control_firing
    verdict = after_onset(seen.verdict_at)
    pending = after_onset(seen.pending_at.get(DEGRADED_ALERT))

    print(
        f"onset: the last real message of {DEAFENING};"
        f" sidecar clock - wall clock {seen.clock_offset_s:+.2f} s"
    )
    if page is None or verdict is None or pending is None:
        firing_seen = after_onset(seen.firing_seen_at.get(DEGRADED_ALERT))
        print(
            f"FAIL: {DEGRADED_ALERT} for {DEAFENING} never reached the receiver; seconds after"
            f" onset: sidecar verdict {verdict}, Prometheus pending {pending},"
            f" firing {firing_seen}",
            file=sys.stderr,
        )
        return 1
    fired = page.fired_at - onset
    paged = page.arrived_at - onset

    info = "info"
    lower = waits.lower_bound_s
    results = [
        Result("onset -> sidecar verdict", verdict, waits.silence_threshold_s, "s", info, True),
        Result("onset -> Prometheus firing", fired, lower, "s", info, True),
        Result(
            "onset -> receiver (page)",
            paged,
            lower,
            "s",
            f"<= {waits.target_s:g} s (waits + 2 x eval + group_wait + {SLACK_S:g} s)",
            paged <= waits.target_s,
        ),
    ]
    if raw_page is not None:
        raw_lower = waits.silence_threshold_s + waits.raw_for_s
        raw_paged = raw_page.arrived_at - onset
        results.append(
            Result("onset -> receiver (NoRealMessages)", raw_paged, raw_lower, "s", info, True)
        )
    results.append(
        Result(
            f"{CONTROL} control: pages",
            len(control_pages),
            None,
            "",
            "0 (every run)",
            not control_pages,
        )
    )
    status = report(results, check=not smoke)

    print(f"\ndecomposition of onset -> receiver ({DEGRADED_ALERT}, seconds)")
    print(f"{'stage':<46} {'configured':>11} {'measured':>9}")
    scrape_and_eval = waits.scrape_interval_s + waits.evaluation_interval_s
    for stage, configured, measured in (
        ("silence threshold: onset -> verdict", f"{waits.silence_threshold_s:.1f}", verdict),
        ("scrape + evaluation: verdict -> pending", f"0-{scrape_and_eval:.1f}", pending - verdict),
        ("rule for: pending -> firing", f"{waits.degraded_for_s:.1f}", fired - pending),
        ("group_wait + delivery: firing -> receiver", f"{waits.group_wait_s:.1f}", paged - fired),
    ):
        print(f"{stage:<46} {configured:>11} {measured:>9.1f}")
    print(
        f"lower bound (threshold + for) {lower:.1f} s, measured {paged:.1f} s:"
        f" overhead {paged - lower:.1f} s, ratio {paged / lower:.3f}"
    )
    if remediation is not None:
        print(
            f"{REMEDIATION} receiver: {DEGRADED_ALERT} at +{remediation.arrived_at - onset:.1f} s"
        )
    print(raw_alert_line(waits, onset, seen, raw_page))
    if control_pages:
        print(f"FAIL: the {CONTROL} control was paged: {sorted(control_pages)}", file=sys.stderr)
        return 1
    return status


def raw_alert_line(waits: Waits, onset: float, seen: Observations, page: Delivery | None) -> str:
    name = f"{RAW_ALERT} (for {waits.raw_for_s:g} s)"
    if page is not None:
        return (
            f"{name}: fired at +{page.fired_at - onset:.1f} s,"
            f" at the receiver at +{page.arrived_at - onset:.1f} s"
        )
    if RAW_ALERT in seen.firing_seen_at:
        firing = seen.firing_seen_at[RAW_ALERT] - onset
        return f"{name}: firing at +{firing:.1f} s; not at the receiver by the end of the run"
    if RAW_ALERT in seen.pending_at:
        pending = seen.pending_at[RAW_ALERT] - onset
        return (
            f"{name}: pending since +{pending:.1f} s, would fire at about"
            f" +{pending + waits.raw_for_s:.0f} s; not waited for"
        )
    return f"{name}: not active by the end of the run; not waited for"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every wait shortened, 1 s intervals; print the table, never fail on timing",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, raise_system_exit)
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as workdir:
        try:
            return run(args.smoke, Path(workdir))
        except RuntimeError as exc:
            print(f"FAIL: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted; servers stopped", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
