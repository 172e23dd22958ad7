"""Resident memory per account: the slope of RSS against the number of accounts.

For each account count a fresh ``wa-sidecar replay --linger`` process (``python
-m sidecar``) gets a config of that many accounts and a capture in which every
account connects and receives a realistic hour (8 real text messages into 4
chats, 4 history-sync notifications, 4 app-state key shares, offline sync, a
reconnect: 21 events). Once the replay line is printed and every real message
is in the SQLite store (counted from outside: a scrape during the drain leaves
RSS higher), /metrics is scraped once, so scrape-time structures count, and
VmRSS is read from /proc/<pid>/status; then 9 more scrapes and VmRSS again,
which is where it settles under Prometheus. A least-squares line through
(accounts, RSS) gives the cost per account (slope) and the fixed cost
(intercept). The baseline is the same processes with the same accounts
configured and an empty capture: what configured-but-idle accounts cost.

RSS is the whole process: Python, its imports (neonize, protobuf, aiohttp) and
neonize's Go runtime, which is loaded but runs no client in replay. Nothing on
the Go side grows with accounts, so it lands in the intercept and the slope is
the Python side.

    python -m bench.memory            # 100, 500, 1000, 2000 accounts; exits 1 over target
    python -m bench.memory --smoke    # 10 and 50 accounts; never fails on the target
"""

from __future__ import annotations

import argparse
import contextlib
import re
import select
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.common import Result, report
from sidecar import testing as build
from sidecar.adapters.capture import encode_record
from sidecar.adapters.store_sqlite import SqliteMessageStore

TARGET_KIB_PER_ACCOUNT = 50.0
FULL_COUNTS = (100, 500, 1000, 2000)
SMOKE_COUNTS = (10, 50)
#: Scrapes after which RSS is read a second time (it stops growing after a few).
STEADY_SCRAPES = 10
#: How long one sidecar may take to start, replay and drain before the run gives up.
POINT_TIMEOUT_S = 300.0

START = 1_764_068_400.0  # 2025-11-25 11:00:00 UTC
MINUTE = 60.0
CHATS = tuple(build.jid(f"120255501{20 + n}") for n in range(4))
REAL_MESSAGES_PER_ACCOUNT = 8
#: A history-sync notification and an app-state key share, each.
PROTOCOL_PAIRS_PER_ACCOUNT = 4
#: Connect, offline sync preview and completion, disconnect, reconnect.
STATUS_EVENTS_PER_ACCOUNT = 5
EVENTS_PER_ACCOUNT = (
    REAL_MESSAGES_PER_ACCOUNT + 2 * PROTOCOL_PAIRS_PER_ACCOUNT + STATUS_EVENTS_PER_ACCOUNT
)
REPLAY_LINE = re.compile(r"^replay: (\d+) events from ")
LISTENING_LINE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")

Record = tuple[float, str | None, Any]


@dataclass(frozen=True)
class Point:
    accounts: int
    traffic: bool
    rss_kib: int
    steady_rss_kib: int


def account_events(account: str, offset: float) -> list[Record]:
    """One account's hour, starting ``offset`` seconds after ``START``."""
    t0 = START + offset
    own = build.jid(build.OWN_PHONE)
    events: list[Record] = [
        (t0, account, build.connected()),
        (t0 + 1, account, build.offline_sync_preview(total=4)),
        (t0 + 3, account, build.offline_sync_completed(count=4)),
    ]
    for n in range(REAL_MESSAGES_PER_ACCOUNT):
        t = t0 + (n + 1) * 6 * MINUTE
        body = f"Is order {1000 + n} ready?" if n % 2 == 0 else "Yes, it ships today."
        message = build.message_event(
            build.text(body),
            chat=CHATS[n % len(CHATS)],
            from_me=n % 2 == 1,
            timestamp_ms=int((t - 0.4) * 1000),
        )
        events.append((t, account, message))
    for n in range(PROTOCOL_PAIRS_PER_ACCOUNT):
        t = t0 + (n + 1) * 11 * MINUTE
        history = build.message_event(build.history_sync_notification(), chat=own, from_me=True)
        key_share = build.message_event(build.app_state_key_share(), chat=own, from_me=True)
        events.append((t, account, history))
        events.append((t + 30, account, key_share))
    events.append((t0 + 50 * MINUTE, account, build.disconnected()))
    events.append((t0 + 50 * MINUTE + 4, account, build.connected()))
    return events


def account_ids(count: int) -> list[str]:
    return [f"acct-{n:05d}" for n in range(count)]


def write_capture(path: Path, accounts: Sequence[str]) -> None:
    """Every account's hour, interleaved in time, with a tick every minute."""
    records: list[Record] = []
    for index, account in enumerate(accounts):
        records.extend(account_events(account, offset=index % 60))
    end = max(t for t, _, _ in records)
    minutes = int((end - START) / MINUTE) + 2
    records.extend((START + m * MINUTE, None, None) for m in range(minutes))
    records.sort(key=lambda record: record[0])
    with path.open("w", encoding="utf-8") as stream:
        for t, account_id, event in records:
            stream.write(encode_record(t, account_id, event) + "\n")


def write_config(path: Path, accounts: Sequence[str], state_dir: Path) -> None:
    config = {
        "http": {"listen": "127.0.0.1:0"},
        "state_dir": str(state_dir),
        "accounts": [{"id": account} for account in accounts],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def scrape(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        response.read()


def stored_messages(state_dir: Path) -> int:
    """Messages in the SQLite store, read from outside, so the measured process
    does no work for the asking."""
    path = state_dir / SqliteMessageStore.FILENAME
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (count,) = db.execute("SELECT count(*) FROM messages").fetchone()
    return int(count)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def measure(count: int, traffic: bool) -> Point:
    """Start one sidecar on ``count`` accounts, let it replay and drain, scrape, read RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        accounts = account_ids(count)
        config, capture, log = work / "config.yaml", work / "capture.jsonl", work / "sidecar.log"
        write_config(config, accounts, work / "state")
        if traffic:
            write_capture(capture, accounts)
        else:
            capture.write_text("")
        events = count * EVENTS_PER_ACCOUNT if traffic else 0
        real_messages = count * REAL_MESSAGES_PER_ACCOUNT if traffic else 0
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "sidecar", "replay", str(capture)),
                    *("--config", str(config), "--linger", str(POINT_TIMEOUT_S)),
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            try:
                port = wait_until_replayed(process, log, events)
                wait_until_stored(work / "state", real_messages)
                scrape(port)
                after_one_scrape = rss_kib(process.pid)
                for _ in range(STEADY_SCRAPES - 1):
                    scrape(port)
                after_steady_scrapes = rss_kib(process.pid)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
    return Point(count, traffic, after_one_scrape, after_steady_scrapes)


def wait_until_replayed(process: subprocess.Popen[str], log: Path, events: int) -> int:
    """Read the replay line and check its count; returns the HTTP port from the log."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], POINT_TIMEOUT_S)
    line = process.stdout.readline() if ready else ""
    replayed = REPLAY_LINE.match(line)
    listening = LISTENING_LINE.search(log.read_text())
    if replayed is None or int(replayed.group(1)) != events or listening is None:
        raise RuntimeError(
            f"the sidecar did not replay {events} events: {line.strip() or '(no replay line)'}"
            f"\n{log.read_text()[-2000:]}"
        )
    return int(listening.group(1))


def wait_until_stored(state_dir: Path, messages: int) -> None:
    deadline = time.monotonic() + POINT_TIMEOUT_S
    while stored_messages(state_dir) != messages:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the store did not receive all {messages} real messages")
        time.sleep(0.2)


def fit(accounts: Sequence[int], rss: Sequence[int]) -> tuple[float, float]:
    """(slope in KiB per account, intercept in MiB) of the least-squares line."""
    slope, intercept = statistics.linear_regression(accounts, rss)
    return slope, intercept / 1024


def results(traffic: Sequence[Point], idle: Sequence[Point]) -> list[Result]:
    accounts = [p.accounts for p in traffic]
    slope, intercept = fit(accounts, [p.rss_kib for p in traffic])
    idle_slope, idle_intercept = fit(accounts, [p.rss_kib for p in idle])
    steady_slope, _ = fit(accounts, [p.steady_rss_kib for p in traffic])
    steady_idle_slope, _ = fit(accounts, [p.steady_rss_kib for p in idle])
    target = f"< {TARGET_KIB_PER_ACCOUNT:g} KiB/account"
    span = f"{accounts[0]}→{accounts[-1]}"
    return [
        Result(
            f"memory per account (slope {span})",
            slope,
            idle_slope,
            "KiB",
            target,
            slope < TARGET_KIB_PER_ACCOUNT,
        ),
        Result(
            f"same after {STEADY_SCRAPES} scrapes",
            steady_slope,
            steady_idle_slope,
            "KiB",
            "(information)",
            True,
        ),
        Result("fixed cost (intercept)", intercept, idle_intercept, "MiB", "(information)", True),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--accounts",
        type=int,
        nargs="+",
        default=list(FULL_COUNTS),
        metavar="N",
        help="account counts to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help=f"measure {SMOKE_COUNTS} accounts; never fail"
    )
    args = parser.parse_args(argv)
    counts = sorted(set(SMOKE_COUNTS if args.smoke else args.accounts))
    if len(counts) < 2:
        parser.error("a slope needs at least two account counts")
    traffic: list[Point] = []
    idle: list[Point] = []
    print(f"{'accounts':>8} {'capture':>8} {'RSS MiB, 1 scrape':>18} {STEADY_SCRAPES:>3} scrapes")
    for count in counts:
        for points, with_traffic in ((idle, False), (traffic, True)):
            point = measure(count, with_traffic)
            points.append(point)
            print(
                f"{count:>8} {'traffic' if with_traffic else 'empty':>8}"
                f" {point.rss_kib / 1024:>18.1f} {point.steady_rss_kib / 1024:>11.1f}",
                flush=True,
            )
    print("baseline: the same accounts configured, empty capture")
    return report(results(traffic, idle), check=not args.smoke)


if __name__ == "__main__":
    sys.exit(main())
