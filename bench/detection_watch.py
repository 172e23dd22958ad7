"""What the detection benchmark watches: Alertmanager's deliveries at a webhook run here,
the sidecar's /metrics and Prometheus' alerts, polled; and the servers it starts."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from subprocess import STDOUT, Popen, TimeoutExpired
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.detection_setup import CONTROLS, DEAFENING, HEALTHY, PROBED

READY_TIMEOUT_S = 60.0


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

    def received(self, account: str, receiver: str | None = None) -> set[str]:
        """Alerts delivered for ``account`` (to ``receiver``, or to any)."""
        with self._lock:
            return {
                alert
                for (to, alert, acct) in self._first
                if acct == account and receiver in (None, to)
            }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Observations:
    """Wall times (Unix seconds) of what the watcher saw first."""

    #: The sidecar's clock minus wall time, from its least delayed /metrics answer.
    clock_offset_s: float | None = None
    clock_sample_rtt_s: float = float("inf")
    clock_samples: int = 0
    #: The first scrape that read the sidecar's verdict degraded, per deaf account.
    verdict_at: dict[str, float] = field(default_factory=dict)
    #: The effective silence threshold each account exported last.
    threshold_s: dict[str, float] = field(default_factory=dict)
    #: Controls whose verdict read degraded at any scrape.
    control_verdicts: set[str] = field(default_factory=set)
    #: Prometheus' activeAt (the evaluation that first found the condition), per (alert,
    #: account), and when the watcher first saw it firing.
    pending_at: dict[tuple[str, str], float] = field(default_factory=dict)
    firing_seen_at: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Alerts that fired in Prometheus for a control, per control.
    control_firing: dict[str, set[str]] = field(default_factory=dict)


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def sample_sidecar_clock(url: str, seen: Observations) -> None:
    """The sidecar's clock against wall time. Read only at the start: every read of
    /metrics is a look at the verdicts, and the sidecar should look only as often as it
    does in production (every 5 s, and at each scrape)."""
    sent = time.time()
    exposition = get_text(f"{url}/metrics")
    answered = time.time()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.labels.get("account") == HEALTHY:
                values[sample.name] = sample.value
    # last message + its age = the sidecar's "now" when it answered
    last_real = values.get("whatsapp_last_real_message_timestamp_seconds")
    age = values.get("whatsapp_last_real_message_age_seconds")
    if last_real is None or age is None:
        return
    seen.clock_samples += 1
    if answered - sent < seen.clock_sample_rtt_s:
        seen.clock_sample_rtt_s = answered - sent
        seen.clock_offset_s = last_real + age - (sent + answered) / 2


def read_scraped_verdicts(url: str, seen: Observations, since: float) -> None:
    """What Prometheus scraped of the verdicts since ``since``: the first scrape that read
    each deaf account degraded, and any control that ever read so; the thresholds last."""
    window = f"{max(1, int(time.time() - since) + 1)}s"
    query = urllib.parse.quote(f"whatsapp_session_degraded[{window}]")
    for series in json.loads(get_text(f"{url}/api/v1/query?query={query}"))["data"]["result"]:
        account = series["metric"].get("account", "")
        degraded = [float(t) for t, v in series["values"] if float(v) == 1]
        if degraded and account in (DEAFENING, PROBED):
            seen.verdict_at[account] = degraded[0]
        elif degraded and account in CONTROLS:
            seen.control_verdicts.add(account)
    query = urllib.parse.quote("whatsapp_effective_silence_threshold_seconds")
    for series in json.loads(get_text(f"{url}/api/v1/query?query={query}"))["data"]["result"]:
        seen.threshold_s[series["metric"].get("account", "")] = float(series["value"][1])


def sample_prometheus(url: str, seen: Observations) -> None:
    body = json.loads(get_text(f"{url}/api/v1/alerts"))
    answered = time.time()
    for alert in body["data"]["alerts"]:
        name, account = alert["labels"]["alertname"], alert["labels"].get("account", "")
        if account in CONTROLS:
            if alert["state"] == "firing":
                seen.control_firing.setdefault(account, set()).add(name)
            continue
        seen.pending_at.setdefault((name, account), unix_time(alert["activeAt"]))
        if alert["state"] == "firing":
            seen.firing_seen_at.setdefault((name, account), answered)


# -- the servers ---------------------------------------------------------------------

Processes = dict[str, tuple[Popen[bytes], Path]]


def check_running(processes: Processes) -> None:
    for name, (proc, log) in processes.items():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited early ({proc.returncode}):\n{tail(log)}")


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
