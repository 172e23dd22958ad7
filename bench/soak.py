"""Soak: real-time traffic over 200 accounts; memory, fd and latency trends, errors, losses.

One real sidecar process (``python -m sidecar replay --speed 1``) gets a config
of 200 accounts (SQLite store, state in a temporary folder) and a capture
that keeps traffic flowing for the whole run: per account, real texts and
photos into three one-to-one chats and a group (one every 15-45 s, a third
of them sent from the phone), history-sync notifications, app-state key
shares, undecryptable messages, a disconnect every 6-15 minutes whose
messages arrive as a backlog after the reconnect (with offline sync), and
short keepalive failures on some accounts. Every 20th account goes deaf in
cycles (45 s of real messages, then 135 s of protocol traffic only, with a
30 s silence threshold and a 10 s verdict.confirm), so verdicts change all the time; everything else
must never be judged degraded.

Every ``--interval`` seconds (5) the soak samples the process from outside:
VmRSS, open file descriptors (/proc/<pid>/fd) and threads, a timed scrape of
/metrics (with Prometheus's Accept header) and a timed call of the health
API for all accounts (bearer token from ``auth.tokens_file``). When the
replay is over it waits until every real message sent is in the SQLite store
(counted from outside), samples once more and stops the sidecar.

Checked on every run: file descriptors at the end (after the drain) at most
5 more than after warm-up (the first 10 % of the run); no 5xx or failed
request; no ERROR line in the log; no replay, event-handler or store-write
error counted; every real message stored and counted as real; deaf accounts
judged degraded and no other account; the sidecar exits 0 on SIGTERM.
Checked on full runs (not ``--smoke``, at least 20 minutes): RSS growth
below 20 MiB per hour (the least-squares slope over the samples after
warm-up, while traffic flows) and scrape p99 in the last quarter of those
samples at most 2x the first quarter's. Shorter runs print both without
failing on them: RSS rises by ~2 MiB in the first 10-15 minutes while
SQLite's page cache (2 MiB per connection) fills as the message store
grows, then stays flat, so a 10-minute window sees mostly that (16 MiB/h
measured at 10 minutes, 2.8 MiB/h at 30).

Why 20 MiB/hour: the traffic is ~23,000 real messages and ~16,000 other
events an hour, so a leak of one 1 KiB object per real message grows RSS by
~23 MiB/hour and is caught, while growth that stops (the page cache, the
executor starting its threads) stays well below it over a 27-minute window.

    python -m bench.soak                  # 30 minutes; exits 1 on a leak, drift, error or loss
    python -m bench.soak --minutes 10     # shorter: trends printed, not checked
    python -m bench.soak --smoke          # 2 minutes (CI): errors, losses and fd leaks only
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ExtendedTextMessage, ImageMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

from bench.common import Result, percentile, report
from sidecar import testing as build
from sidecar.adapters.capture import encode_record
from sidecar.adapters.spool import Spool
from sidecar.adapters.store_sqlite import SqliteMessageStore

REPO = Path(__file__).resolve().parent.parent

ACCOUNTS = 200
FULL_MINUTES = 30.0
SMOKE_MINUTES = 2.0
SAMPLE_INTERVAL_S = 5.0
#: The first part of the run, left out of the start figures and the trends.
WARMUP_FRACTION = 0.10
#: Runs shorter than this print the trends but never fail on them.
MIN_TREND_MINUTES = 20.0

MAX_FD_GROWTH = 5
MAX_RSS_MIB_PER_HOUR = 20.0
MAX_SCRAPE_P99_DRIFT = 2.0

STARTUP_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 180.0
HTTP_TIMEOUT_S = 30.0
#: The sidecar keeps serving this long after the last record; the soak stops it sooner.
LINGER_S = 3600.0
#: What Prometheus 2.x asks for: OpenMetrics if the target has it.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

#: Every this-many-th account goes deaf in cycles.
DEAF_EVERY = 20
DEAF_THRESHOLD_S = 30
DEAF_THRESHOLD = f"{DEAF_THRESHOLD_S}s"
DEAF_CYCLE_S = 180.0
DEAF_HEARING_S = 45.0
DEAF_CONFIRM_S = 10
DEAF_CONFIRM = f"{DEAF_CONFIRM_S}s"
#: Accounts whose keepalive fails for a few seconds now and then.
KEEPALIVE_EVERY = 25
TICK_S = 10.0

OWN = build.jid(build.OWN_PHONE)
CHATS = (
    *(build.jid(f"120255501{20 + n}") for n in range(3)),
    build.jid("120363025550100", server="g.us"),
)
GROUP = CHATS[-1]
MEMBERS = tuple(build.jid(f"120255501{40 + n}") for n in range(5))

LISTENING_LINE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
REPLAY_LINE = re.compile(r"^replay: (\d+) events from ")
LOG_LEVEL = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")

Record = tuple[float, str | None, Any]


# -- the traffic --------------------------------------------------------------------


@dataclass
class Traffic:
    """The capture's contents, and what the soak expects the sidecar to make of them."""

    records: list[Record] = field(default_factory=list)
    events: int = 0
    real_messages: int = 0
    deaf: set[str] = field(default_factory=set)
    thresholds: dict[str, str] = field(default_factory=dict)


def account_ids(count: int) -> list[str]:
    return [f"acct-{n:03d}" for n in range(count)]


def is_deaf(index: int) -> bool:
    return index % DEAF_EVERY == DEAF_EVERY - 1


def every(rng: random.Random, begin: float, end: float, low: float, high: float) -> Iterator[float]:
    """Times from ``begin`` to ``end``, ``low``-``high`` seconds apart (first one random)."""
    t = begin + rng.uniform(0, high)
    while t < end:
        yield t
        t += rng.uniform(low, high)


def real_message(rng: random.Random, t: float, n: int) -> Any:
    chat = rng.choice(CHATS)
    from_me = rng.random() < 0.3
    draw = rng.random()
    content: WAMessage
    if draw < 0.7:
        content = build.text(f"Is order {1000 + n} ready?" if n % 2 else "Yes, it ships today.")
    elif draw < 0.9:
        content = WAMessage(
            extendedTextMessage=ExtendedTextMessage(text=f"Tracking: https://example.test/{n}")
        )
    else:
        content = WAMessage(imageMessage=ImageMessage(mimetype="image/jpeg", caption="the box"))
    group = chat == GROUP
    sender = OWN if from_me else (rng.choice(MEMBERS) if group else chat)
    return build.message_event(
        content,
        chat=chat,
        sender=sender,
        from_me=from_me,
        is_group=group,
        timestamp_ms=int((t - rng.uniform(0.2, 2.0)) * 1000),
    )


def protocol_message(kind: str) -> Any:
    content = (
        build.history_sync_notification() if kind == "history" else build.app_state_key_share()
    )
    return build.message_event(content, chat=OWN, from_me=True)


def account_traffic(index: int, account: str, start: float, end: float) -> tuple[list[Record], int]:
    """One account's records from ``start`` to about ``end``, and its real messages."""
    rng = random.Random(index)
    connect = start + (index % 100) * 0.1
    records: list[Record] = [
        (connect, account, build.connected()),
        (connect + 0.5, account, build.offline_sync_preview(total=0)),
        (connect + 1.0, account, build.offline_sync_completed(count=0)),
    ]
    begin = connect + 2.0
    # (time, kind): real, history, keyshare, undecryptable
    messages: list[tuple[float, str]] = []
    if is_deaf(index):
        cycle = begin
        while cycle < end:
            hearing_end = min(cycle + DEAF_HEARING_S, end)
            messages += [(t, "real") for t in every(rng, cycle, hearing_end, 5, 15)]
            cycle_end = min(cycle + DEAF_CYCLE_S, end)
            for n, t in enumerate(every(rng, cycle, cycle_end, 8, 20)):
                messages.append((t, "history" if n % 2 else "keyshare"))
            cycle += DEAF_CYCLE_S
        windows: list[tuple[float, float]] = []
    else:
        messages += [(t, "real") for t in every(rng, begin, end, 15, 45)]
        messages += [(t, "history") for t in every(rng, begin, end, 60, 240)]
        messages += [(t, "keyshare") for t in every(rng, begin, end, 120, 480)]
        messages += [(t, "undecryptable") for t in every(rng, begin, end, 240, 720)]
        windows = []
        down = begin + rng.uniform(60, 600)
        while down < end - 20:
            up = down + rng.uniform(2, 10)
            windows.append((down, up))
            down = up + rng.uniform(360, 900)
        if index % KEEPALIVE_EVERY == 3:
            for t in every(rng, begin, end - 40, 300, 600):
                if not any(d - 40 < t < u + 5 for d, u in windows):
                    records.append((t, account, build.keepalive_timeout()))
                    records.append((t + rng.uniform(5, 30), account, build.keepalive_restored()))
    messages.sort()
    real = 0
    moved: dict[int, list[tuple[float, str]]] = {}
    for t, kind in messages:
        window = next((w for w, (d, u) in enumerate(windows) if d <= t < u), None)
        if window is not None:  # delivered as the backlog after the reconnect
            moved.setdefault(window, []).append((t, kind))
            continue
        real += kind == "real"
        records.append((t, account, message_record(rng, kind, t, real)))
    for w, (down, up) in enumerate(windows):
        backlog = moved.get(w, [])
        records.append((down, account, build.disconnected()))
        records.append((up, account, build.connected()))
        records.append((up + 0.5, account, build.offline_sync_preview(total=len(backlog))))
        at = up + 1.0
        for sent, kind in backlog:
            real += kind == "real"
            records.append((at, account, message_record(rng, kind, sent, real)))
            at += 0.05
        records.append((at + 0.5, account, build.offline_sync_completed(count=len(backlog))))
    return records, real


def message_record(rng: random.Random, kind: str, sent: float, n: int) -> Any:
    if kind == "real":
        return real_message(rng, sent, n)
    if kind == "undecryptable":
        return build.undecryptable(chat=rng.choice(CHATS), timestamp_ms=int(sent * 1000))
    return protocol_message(kind)


def plan_traffic(accounts: Sequence[str], start: float, duration: float) -> Traffic:
    traffic = Traffic()
    end = start + duration
    for index, account in enumerate(accounts):
        records, real = account_traffic(index, account, start, end)
        traffic.records += records
        traffic.real_messages += real
        if is_deaf(index):
            traffic.deaf.add(account)
            traffic.thresholds[account] = DEAF_THRESHOLD
    traffic.events = len(traffic.records)
    last = max(max(t for t, _, _ in traffic.records), end)
    ticks = int((last - start) / TICK_S) + 1
    traffic.records += [(start + n * TICK_S, None, None) for n in range(ticks)]
    traffic.records.append((last, None, None))  # the replay lasts the whole run
    traffic.records.sort(key=lambda record: record[0])
    return traffic


def write_capture(path: Path, traffic: Traffic) -> None:
    with path.open("w", encoding="utf-8") as stream:
        for t, account, event in traffic.records:
            stream.write(encode_record(t, account, event) + "\n")


def write_config(path: Path, accounts: Sequence[str], traffic: Traffic, work: Path) -> None:
    tokens = work / "tokens"
    tokens.write_text(f"soak-{os.urandom(16).hex()}\n", encoding="utf-8")
    tokens.chmod(0o600)
    entries: list[dict[str, str]] = []
    for account in accounts:
        entry = {"id": account}
        if account in traffic.thresholds:
            entry["silence_threshold"] = traffic.thresholds[account]
        entries.append(entry)
    config = {
        "http": {"listen": "127.0.0.1:0"},
        "state_dir": str(work / "state"),
        "store": {"backend": "sqlite"},
        "auth": {"tokens_file": str(tokens)},
        # verdicts change all the time: the deaf accounts' evidence is confirmed quickly
        "verdict": {"confirm": DEAF_CONFIRM},
        "accounts": entries,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


# -- watching the process -------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the sidecar started listening
    draining: bool  # the replay is over
    rss_kib: int
    fds: int
    threads: int
    scrape_ms: float | None
    health_ms: float | None


@dataclass
class Observations:
    samples: list[Sample] = field(default_factory=list)
    requests: int = 0
    server_errors: int = 0
    failed_requests: int = 0
    problems: list[str] = field(default_factory=list)
    degraded_seen: set[str] = field(default_factory=set)
    counters: dict[str, float] = field(default_factory=dict)
    replayed_events: int | None = None
    stored: int = 0
    exit_status: int | None = None


def proc_status(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB, threads) of ``pid``."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def count_rows(path: Path, table: str) -> int:
    """Rows of ``table`` in the sidecar's SQLite file, read from outside (read-only)."""
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            (count,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    except sqlite3.OperationalError:  # busy for longer than the timeout: ask again later
        return -1
    return int(count)


def metric_sums(text: str) -> dict[str, float]:
    """The counters the soak watches, summed over their series."""
    wanted = {
        "whatsapp_replay_errors_total": "replay errors",
        "whatsapp_event_errors_total": "event errors",
        "whatsapp_store_write_errors_total": "store write errors",
        "whatsapp_events_total": "events",
        "whatsapp_spool_messages": "spooled",
    }
    sums = dict.fromkeys([*wanted.values(), "real messages"], 0.0)
    for line in text.splitlines():
        if not line.startswith("whatsapp_"):
            continue
        series, _, value = line.rpartition(" ")
        name = series.split("{", 1)[0]
        if name in wanted:
            sums[wanted[name]] += float(value)
        elif name == "whatsapp_messages_received_total" and 'class="real"' in series:
            sums["real messages"] += float(value)
    return sums


class Client:
    """The soak's HTTP side: timed GETs, with every 5xx and failure counted."""

    def __init__(self, port: int, token: str, seen: Observations) -> None:
        self._base = f"http://127.0.0.1:{port}"
        self._token = token
        self._seen = seen

    def get(self, path: str, headers: dict[str, str]) -> tuple[bytes, float] | None:
        self._seen.requests += 1
        request = urllib.request.Request(self._base + path, headers=headers)
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                body: bytes = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                self._seen.server_errors += 1
            else:
                self._seen.failed_requests += 1
            self._seen.problems.append(f"GET {path}: HTTP {exc.code}")
            return None
        except (OSError, urllib.error.URLError) as exc:
            self._seen.failed_requests += 1
            self._seen.problems.append(f"GET {path}: {exc}")
            return None
        return body, (time.perf_counter() - started) * 1000

    def scrape(self) -> float | None:
        answer = self.get("/metrics", {"Accept": PROMETHEUS_ACCEPT})
        if answer is None:
            return None
        body, ms = answer
        self._seen.counters = metric_sums(body.decode())
        return ms

    def health(self) -> float | None:
        answer = self.get("/api/whatsapp/accounts", {"Authorization": f"Bearer {self._token}"})
        if answer is None:
            return None
        body, ms = answer
        for account in json.loads(body)["accounts"]:
            if account["isDegraded"]:
                self._seen.degraded_seen.add(account["accountId"])
        return ms


def sample(pid: int, client: Client, at: float, draining: bool) -> Sample:
    """The process first (between requests, so no connection of ours is open), then HTTP."""
    rss, threads = proc_status(pid)
    fds = open_fds(pid)
    return Sample(at, draining, rss, fds, threads, client.scrape(), client.health())


def wait_for_port(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        found = LISTENING_LINE.search(log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the sidecar did not start listening:\n{tail(log)}")


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"


def soak(
    work: Path, accounts: Sequence[str], minutes: float, interval: float
) -> tuple[Traffic, Observations, Path]:
    """Generate, run, watch, drain, stop. Returns the plan, what was seen and the log."""
    duration = minutes * 60
    traffic = plan_traffic(accounts, round(time.time()), duration)
    config, capture = work / "config.yaml", work / "capture.jsonl"
    log, out = work / "sidecar.log", work / "sidecar.out"
    write_config(config, accounts, traffic, work)
    write_capture(capture, traffic)
    token = (work / "tokens").read_text().strip()
    state = work / "state"
    print(
        f"soak: {len(accounts)} accounts ({len(traffic.deaf)} going deaf in cycles),"
        f" {minutes:g} minutes at speed 1: {traffic.events:,} events,"
        f" {traffic.real_messages:,} real messages; a sample every {interval:g} s,"
        f" warm-up {duration * WARMUP_FRACTION:.0f} s",
        flush=True,
    )
    print(
        f"{'time s':>7} {'phase':>7} {'RSS MiB':>8} {'fds':>4} {'threads':>7}"
        f" {'scrape ms':>9} {'health ms':>9} {'stored':>7}",
        flush=True,
    )
    seen = Observations()
    with log.open("wb") as stderr, out.open("wb") as stdout:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "sidecar", "replay", str(capture)),
                *("--config", str(config), "--speed", "1", "--linger", str(LINGER_S)),
            ],
            stdout=stdout,
            stderr=stderr,
            cwd=REPO,
        )
        try:
            port = wait_for_port(process, log)
            client = Client(port, token, seen)
            started = time.monotonic()
            drain_deadline: float | None = None
            progress_every = max(1, round(60 / interval))
            n = 0
            while True:
                n += 1
                next_at = started + n * interval
                if process.poll() is not None:
                    seen.problems.append(f"the sidecar exited early with {process.returncode}")
                    break
                if seen.replayed_events is None:
                    replayed = REPLAY_LINE.match(out.read_text(errors="replace"))
                    if replayed:
                        seen.replayed_events = int(replayed.group(1))
                        drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S
                draining = seen.replayed_events is not None
                seen.stored = count_rows(state / SqliteMessageStore.FILENAME, "messages")
                drained = draining and seen.stored == traffic.real_messages
                drained = drained and count_rows(state / Spool.FILENAME, "spool_messages") == 0
                try:
                    point = sample(process.pid, client, time.monotonic() - started, draining)
                except (FileNotFoundError, ProcessLookupError):  # it exited meanwhile
                    time.sleep(0.1)
                    continue
                seen.samples.append(point)
                if n % progress_every == 0 or drained:
                    show(point, seen.stored)
                if drained:
                    break
                if drain_deadline is not None and time.monotonic() > drain_deadline:
                    seen.problems.append(
                        f"the store holds {seen.stored} of {traffic.real_messages} real messages"
                        f" {DRAIN_TIMEOUT_S:g} s after the replay ended"
                    )
                    break
                time.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                seen.exit_status = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                seen.problems.append("the sidecar did not stop within 30 s of SIGTERM")
    seen.stored = count_rows(state / SqliteMessageStore.FILENAME, "messages")
    write_samples(work / "samples.csv", seen.samples)
    return traffic, seen, log


def write_samples(path: Path, samples: Sequence[Sample]) -> None:
    """Every sample, for a closer look (kept with ``--keep``)."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["at_s", "draining", "rss_kib", "fds", "threads", "scrape_ms", "health_ms"])
        for s in samples:
            writer.writerow(
                [
                    f"{s.at:.2f}",
                    int(s.draining),
                    s.rss_kib,
                    s.fds,
                    s.threads,
                    "" if s.scrape_ms is None else f"{s.scrape_ms:.3f}",
                    "" if s.health_ms is None else f"{s.health_ms:.3f}",
                ]
            )


def show(point: Sample, stored: int) -> None:
    def ms(value: float | None) -> str:
        return "failed" if value is None else f"{value:.1f}"

    print(
        f"{point.at:>7.0f} {'drain' if point.draining else 'traffic':>7}"
        f" {point.rss_kib / 1024:>8.1f} {point.fds:>4} {point.threads:>7}"
        f" {ms(point.scrape_ms):>9} {ms(point.health_ms):>9} {stored:>7,}",
        flush=True,
    )


# -- the verdict -----------------------------------------------------------------------


def log_lines(log: Path) -> dict[str, list[str]]:
    """Log lines by level; a traceback counts as an error."""
    by_level: dict[str, list[str]] = {"WARNING": [], "ERROR": []}
    for line in log.read_text(errors="replace").splitlines():
        level = LOG_LEVEL.match(line)
        if level and level.group(1) in ("ERROR", "CRITICAL"):
            by_level["ERROR"].append(line)
        elif level and level.group(1) == "WARNING":
            by_level["WARNING"].append(line)
        elif line.startswith("Traceback"):
            by_level["ERROR"].append(line)
    return by_level


def rss_slope_mib_per_hour(samples: Sequence[Sample]) -> float:
    if len(samples) < 2:
        return 0.0
    hours = [s.at / 3600 for s in samples]
    mib = [s.rss_kib / 1024 for s in samples]
    return statistics.linear_regression(hours, mib).slope


def latencies(samples: Sequence[Sample], which: str) -> list[float]:
    values = (s.scrape_ms if which == "scrape" else s.health_ms for s in samples)
    return [v for v in values if v is not None]


def quarters(samples: Sequence[Sample]) -> tuple[Sequence[Sample], Sequence[Sample]]:
    size = max(1, len(samples) // 4)
    return samples[:size], samples[-size:]


def p(values: Sequence[float], q: float) -> float:
    return percentile(values, q) if values else 0.0


def evaluate(
    traffic: Traffic, seen: Observations, log: Path, minutes: float, check_trends: bool
) -> int:
    warmup_s = minutes * 60 * WARMUP_FRACTION
    after_warmup = [s for s in seen.samples if s.at >= warmup_s]
    measured = [s for s in after_warmup if not s.draining]
    if not after_warmup or not measured:
        print("FAIL: too few samples after warm-up", file=sys.stderr)
        for problem in seen.problems:
            print(f"  {problem}", file=sys.stderr)
        print(tail(log), file=sys.stderr)
        return 1
    first, last = after_warmup[0], seen.samples[-1]
    lines = log_lines(log)
    counters = seen.counters
    lost = traffic.real_messages - seen.stored
    deaf_missed = traffic.deaf - seen.degraded_seen
    false_degraded = seen.degraded_seen - traffic.deaf
    # the first deaf phase starts after DEAF_HEARING_S; evidence after the threshold,
    # confirmed after verdict.confirm
    deaf_due = (
        minutes * 60
        >= DEAF_HEARING_S + DEAF_THRESHOLD_S + DEAF_CONFIRM_S + 2 * SAMPLE_INTERVAL_S + 10
    )

    print()
    print(
        f"real messages sent {traffic.real_messages:,}, stored {seen.stored:,}"
        f" (counted by the sidecar {counters.get('real messages', 0):,.0f})"
    )
    replayed = "none" if seen.replayed_events is None else f"{seen.replayed_events:,}"
    print(f"events replayed {replayed} of {traffic.events:,}")
    print(
        f"deaf accounts judged degraded {len(traffic.deaf & seen.degraded_seen)} of"
        f" {len(traffic.deaf)}; other accounts judged degraded {len(false_degraded)}"
    )
    print(
        f"HTTP: {seen.requests:,} requests, {seen.server_errors} 5xx,"
        f" {seen.failed_requests} other failures"
    )
    print(
        f"log: {len(lines['ERROR'])} ERROR lines, {len(lines['WARNING'])} WARNING lines;"
        f" sidecar exit status {seen.exit_status}"
    )
    for line in (lines["ERROR"] + lines["WARNING"])[:10]:
        print(f"  {line}")
    for problem in seen.problems[:10]:
        print(f"  problem: {problem}")
    print()

    def zero(name: str, value: float) -> Result:
        return Result(name, value, None, "", "0", value == 0)

    counted = counters.get("real messages", -1)
    checks = [
        Result("fds at start (after warm-up)", first.fds, None, "fd", "(information)", True),
        Result("fds at end (after the drain)", last.fds, None, "fd", "(information)", True),
        Result(
            "fd growth after warm-up",
            last.fds - first.fds,
            None,
            "fd",
            f"<= {MAX_FD_GROWTH} fd",
            last.fds - first.fds <= MAX_FD_GROWTH,
        ),
        zero("5xx and failed requests", seen.server_errors + seen.failed_requests),
        zero("ERROR log lines", len(lines["ERROR"])),
        zero("replay errors", counters.get("replay errors", -1)),
        zero("event handler errors", counters.get("event errors", -1)),
        zero("store write errors", counters.get("store write errors", -1)),
        zero("events not replayed", traffic.events - (seen.replayed_events or 0)),
        zero("real messages lost (sent - stored)", lost),
        zero("real messages miscounted", traffic.real_messages - counted),
        Result(
            "deaf accounts never judged degraded",
            len(deaf_missed),
            None,
            "",
            "0" if deaf_due else "(information: run too short)",
            not deaf_due or not deaf_missed,
        ),
        zero("healthy accounts judged degraded", len(false_degraded)),
        zero("sidecar exit status", 1 if seen.exit_status is None else seen.exit_status),
        zero("other problems", len(seen.problems) - seen.server_errors - seen.failed_requests),
    ]
    first_q, last_q = quarters(measured)
    scrape_first, scrape_last = latencies(first_q, "scrape"), latencies(last_q, "scrape")
    health_first, health_last = latencies(first_q, "health"), latencies(last_q, "health")
    slope = rss_slope_mib_per_hour(measured)
    p99_first, p99_last = p(scrape_first, 0.99), p(scrape_last, 0.99)
    drift_ok = p99_first > 0 and p99_last <= MAX_SCRAPE_P99_DRIFT * p99_first
    trends = [
        Result("RSS at start (after warm-up)", first.rss_kib / 1024, None, "MiB", "(info)", True),
        Result("RSS at end (after the drain)", last.rss_kib / 1024, None, "MiB", "(info)", True),
        Result(
            "RSS growth after warm-up (slope)",
            slope,
            None,
            "MiB/h",
            f"< {MAX_RSS_MIB_PER_HOUR:g} MiB/h",
            slope < MAX_RSS_MIB_PER_HOUR,
        ),
        Result(
            "threads at end (start as baseline)", last.threads, first.threads, "", "(info)", True
        ),
        Result(
            "scrape p50, last quarter (first: baseline)",
            p(scrape_last, 0.5),
            p(scrape_first, 0.5),
            "ms",
            "(information)",
            True,
        ),
        Result(
            "scrape p99, last quarter (first: baseline)",
            p99_last,
            p99_first,
            "ms",
            f"ratio <= {MAX_SCRAPE_P99_DRIFT:g}",
            drift_ok,
        ),
        Result(
            "health p99, last quarter (first: baseline)",
            p(health_last, 0.99),
            p(health_first, 0.99),
            "ms",
            "(information)",
            True,
        ),
    ]
    print("Checked on every run:")
    failed = report(checks, check=True)
    print()
    print(
        "Trends (checked on full runs of at least"
        f" {MIN_TREND_MINUTES:g} minutes; {len(measured)} samples with traffic after warm-up,"
        f" quarters of {len(first_q)}):"
    )
    trends_failed = report(trends, check=check_trends)
    return failed or trends_failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help=f"how long traffic flows (default {FULL_MINUTES:g}; {SMOKE_MINUTES:g} with --smoke)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"{SMOKE_MINUTES:g} minutes; never fails on RSS growth or latency drift",
    )
    parser.add_argument("--accounts", type=int, default=ACCOUNTS, metavar="N")
    parser.add_argument(
        "--interval", type=float, default=SAMPLE_INTERVAL_S, metavar="SECONDS", help="sampling"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="work in DIR and keep it (config, capture, log, samples.csv)",
    )
    args = parser.parse_args(argv)
    minutes = (
        args.minutes
        if args.minutes is not None
        else (SMOKE_MINUTES if args.smoke else FULL_MINUTES)
    )
    if minutes <= 0 or args.interval <= 0 or args.accounts < DEAF_EVERY:
        parser.error(f"--minutes and --interval must be > 0, --accounts >= {DEAF_EVERY}")
    check_trends = not args.smoke and minutes >= MIN_TREND_MINUTES
    accounts = account_ids(args.accounts)
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            work = args.keep
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-soak-")))
        traffic, seen, log = soak(work, accounts, minutes, args.interval)
        return evaluate(traffic, seen, log, minutes, check_trends)


if __name__ == "__main__":
    sys.exit(main())
