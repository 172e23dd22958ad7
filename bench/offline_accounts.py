"""A thousand offline accounts in one ``wa-sidecar run``: threads, memory, /metrics, SIGTERM.

One real ``python -m sidecar run`` process (real neonize, SQLite defaults) gets a
config of N never-paired accounts on a machine with no route to WhatsApp: every
dial fails at once ("cannot reach WhatsApp"), so the accounts churn through the
backoff schedule, the start being one big reconnect storm. For ``--seconds``
/metrics is scraped every ``--scrape-every`` (p50 and p99 of its latency) while a
thread of this benchmark samples ``/proc/PID/status`` every 5 ms: ``Threads`` (the
peak) and ``VmHWM`` (the peak RSS). Then SIGTERM, and the time until the process
has exited. The sidecar's log says how many dials were made and when each account
first dialed.

Three processes, one after the other, in the same run:

- idle: one ingest account, no session (what Python, aiohttp and neonize's Go
  runtime cost with nothing dialing): the fixed overhead;
- baseline: N accounts, the cap at N and no jitter to speak of (1 ms), which is how
  the sidecar dialed before the dial slots;
- capped: N accounts with ``connections.max_concurrent_dials`` = ``--cap`` and the
  default 2 s jitter.

Target: the capped peak stays within 2 x cap + the idle process's peak + ``SLACK``
threads (the Go runtime's own: a dial blocked in a system call takes a Go thread),
not 2 x accounts.

    python -m bench.offline_accounts            # 1,000 accounts, cap 16, 120 s each
    python -m bench.offline_accounts --smoke    # 50 accounts, cap 4, 12 s each; never fails
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bench.common import Result, median, percentile, report

FULL = {"accounts": 1000, "cap": 16, "seconds": 120.0}
SMOKE = {"accounts": 50, "cap": 4, "seconds": 12.0}
#: Threads beyond 2 x cap + idle the target allows: the Go runtime's, which grow with
#: dials blocked in system calls at once (and are never given back).
SLACK = 16
SAMPLE_EVERY_S = 0.005
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
#: /metrics p99 target, as the scrape benchmark's (docs/performance.md, "2. Scrape").
SCRAPE_P99_TARGET_MS = 300.0
#: The sidecar's own promise: SIGTERM to exit within 10 s (docs/configuration.md).
STOP_TARGET_S = 10.0

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
DIAL_FAILED = re.compile(r"^(\S+ \S+) INFO \S+ account=(\S+) cannot reach WhatsApp", re.MULTILINE)
GAUGE = r"^{name} (\S+)$"


@dataclass(frozen=True)
class Run:
    label: str
    accounts: int
    cap: int
    peak_threads: int
    peak_rss_mib: float
    scrapes_ms: list[float]
    peak_in_progress: int
    peak_waiting: int
    #: Open file descriptors at the last scrape (neonize 0.5.2 keeps one per dial).
    fds: int
    stop_s: float
    dials: int
    #: Accounts that dialed at least once.
    dialed: int
    #: Seconds from the first dial until every account had dialed (None: not all did).
    first_round_s: float | None

    @property
    def p50_ms(self) -> float:
        return median(self.scrapes_ms)

    @property
    def p99_ms(self) -> float:
        return percentile(self.scrapes_ms, 0.99)


class Sampler(threading.Thread):
    """Reads the process's thread count and peak RSS until it is gone or told to stop."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="sampler", daemon=True)
        self._path = Path(f"/proc/{pid}/status")
        self._done = threading.Event()
        self.peak_threads = 0
        self.hwm_kib = 0

    def run(self) -> None:
        while not self._done.is_set():
            try:
                status = self._path.read_text()
            except OSError:
                return
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if "VmHWM" not in fields:  # exited: a zombie has no memory left
                return
            self.peak_threads = max(self.peak_threads, int(fields["Threads"]))
            self.hwm_kib = max(self.hwm_kib, int(fields["VmHWM"].split()[0]))
            self._done.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._done.set()
        self.join()


def account_ids(count: int) -> list[str]:
    return [f"acct-{n:05d}" for n in range(count)]


def write_config(path: Path, state_dir: Path, accounts: int, cap: int, jitter: str) -> None:
    listed: list[dict[str, Any]] = (
        [{"id": account} for account in account_ids(accounts)]
        if accounts
        else [{"id": "idle", "source": "ingest"}]  # no session: nothing dials
    )
    config = {
        "http": {"listen": "127.0.0.1:0"},
        "state_dir": str(state_dir),
        "connections": {"max_concurrent_dials": cap, "dial_jitter": jitter},
        "accounts": listed,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        body: bytes = response.read()
    return body.decode()


def gauge(metrics: str, name: str) -> int:
    found = re.search(GAUGE.format(name=re.escape(name)), metrics, re.MULTILINE)
    return 0 if found is None else int(float(found.group(1)))


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # exited
        return 0


def wait_for_port(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text())
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"the sidecar did not start:\n{log.read_text()[-2000:]}")


def measure(label: str, accounts: int, cap: int, jitter: str, seconds: float, every: float) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        work = Path(tmp)
        config, log = work / "config.yaml", work / "sidecar.log"
        write_config(config, work / "state", accounts, cap, jitter)
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "sidecar", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            sampler = Sampler(process.pid)
            sampler.start()
            try:
                port = wait_for_port(process, log)
                latencies, in_progress, waiting, fds = [], 0, 0, 0
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    began = time.perf_counter()
                    metrics = scrape(port)
                    took = time.perf_counter() - began
                    latencies.append(took * 1000)
                    in_progress = max(in_progress, gauge(metrics, "whatsapp_dials_in_progress"))
                    waiting = max(waiting, gauge(metrics, "whatsapp_dials_waiting"))
                    fds = open_fds(process.pid)
                    time.sleep(max(0.0, every - took))
                stopping = time.monotonic()
                process.send_signal(signal.SIGTERM)
                code = process.wait(timeout=STOP_TIMEOUT_S)
                stop_s = time.monotonic() - stopping
            finally:
                if process.poll() is None:
                    process.kill()
                sampler.stop()
        text = log.read_text()
    if code != 0 or "Traceback" in text:
        raise RuntimeError(f"{label}: exit {code}\n{text[-3000:]}")
    dials = DIAL_FAILED.findall(text)
    return Run(
        label=label,
        accounts=accounts,
        cap=cap,
        peak_threads=sampler.peak_threads,
        peak_rss_mib=sampler.hwm_kib / 1024,
        scrapes_ms=latencies,
        peak_in_progress=in_progress,
        peak_waiting=waiting,
        fds=fds,
        stop_s=stop_s,
        dials=len(dials),
        dialed=len({account for _, account in dials}),
        first_round_s=first_round(dials, accounts),
    )


def first_round(dials: Sequence[tuple[str, str]], accounts: int) -> float | None:
    """Seconds from the first failed dial until every account had one (log times)."""
    first: dict[str, datetime] = {}
    for stamp, account in dials:
        first.setdefault(account, datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f"))
    if not first or len(first) < accounts:
        return None
    return (max(first.values()) - min(first.values())).total_seconds()


def results(idle: Run, baseline: Run, capped: Run) -> list[Result]:
    n, cap = capped.accounts, capped.cap
    bound = 2 * cap + idle.peak_threads + SLACK
    return [
        Result(
            f"peak threads, {n:,} accounts, cap {cap}",
            capped.peak_threads,
            baseline.peak_threads,
            "",
            f"<= 2 x cap + idle {idle.peak_threads} + {SLACK} = {bound}",
            capped.peak_threads <= bound,
        ),
        Result(
            "peak RSS (VmHWM)", capped.peak_rss_mib, baseline.peak_rss_mib, "MiB", "(info)", True
        ),
        Result(
            "/metrics p99 ms",
            capped.p99_ms,
            baseline.p99_ms,
            "ms",
            f"< {SCRAPE_P99_TARGET_MS:g} ms",
            capped.p99_ms < SCRAPE_P99_TARGET_MS,
        ),
        Result(
            "SIGTERM to exit",
            capped.stop_s,
            baseline.stop_s,
            "s",
            f"< {STOP_TARGET_S:g} s",
            capped.stop_s < STOP_TARGET_S,
        ),
        Result("accounts that dialed", capped.dialed, baseline.dialed, "", "(info)", True),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=FULL["accounts"], metavar="N")
    parser.add_argument("--cap", type=int, default=FULL["cap"], help="max_concurrent_dials")
    parser.add_argument("--seconds", type=float, default=FULL["seconds"], help="per process")
    parser.add_argument("--scrape-every", type=float, default=0.25, metavar="SECONDS")
    parser.add_argument(
        "--smoke", action="store_true", help="50 accounts, cap 4, 12 s each; never fail"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.accounts, args.cap, args.seconds = SMOKE["accounts"], SMOKE["cap"], SMOKE["seconds"]
    plan = [
        ("idle", 0, 1, "2s"),
        ("baseline", args.accounts, args.accounts, "1ms"),
        ("capped", args.accounts, args.cap, "2s"),
    ]
    print(
        f"{'run':<9} {'accounts':>8} {'cap':>5} {'threads':>8} {'RSS MiB':>8} {'p50 ms':>7}"
        f" {'p99 ms':>7} {'scrapes':>7} {'dialing':>7} {'waiting':>7} {'dials':>6}"
        f" {'dialed':>6} {'round s':>7} {'fds':>6} {'stop s':>6}"
    )
    runs: dict[str, Run] = {}
    for label, accounts, cap, jitter in plan:
        run = measure(label, accounts, cap, jitter, args.seconds, args.scrape_every)
        runs[label] = run
        round_s = "-" if run.first_round_s is None else f"{run.first_round_s:.1f}"
        print(
            f"{label:<9} {accounts:>8} {cap:>5} {run.peak_threads:>8} {run.peak_rss_mib:>8.1f}"
            f" {run.p50_ms:>7.1f} {run.p99_ms:>7.1f} {len(run.scrapes_ms):>7}"
            f" {run.peak_in_progress:>7} {run.peak_waiting:>7} {run.dials:>6}"
            f" {run.dialed:>6} {round_s:>7} {run.fds:>6} {run.stop_s:>6.2f}",
            flush=True,
        )
    print(
        "threads: peak of /proc/PID/status every 5 ms; RSS: VmHWM; dialing, waiting: the"
        " highest whatsapp_dials_in_progress and _waiting scraped; dials: failed dials logged;"
        " dialed: accounts that dialed; round: from the first dial until every account had"
        " dialed (-: not all did); fds: open at the last scrape;"
        " baseline: cap = accounts, 1 ms jitter"
    )
    return report(results(runs["idle"], runs["baseline"], runs["capped"]), check=not args.smoke)


if __name__ == "__main__":
    sys.exit(main())
