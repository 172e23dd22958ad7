"""`wa-sidecar run` with the real neonize library on a machine with no route to WhatsApp.

neonize fails to dial at once here. Fifty accounts must show it, retry on
the backoff schedule, stay within the thread bound, keep /metrics quick,
record what happened, and stop cleanly on SIGTERM; the recording must
replay to the same numbers.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import statistics
import time
from collections import defaultdict
from pathlib import Path

import pytest

from sidecar.config_sections import ConnectionsConfig
from sidecar.domain.supervision import Backoff

from .support.cli import sidecar_cli, wait_ready
from .support.config import cli_config
from .support.http import get

pytestmark = pytest.mark.services  # wa-sidecar processes

ACCOUNTS = [f"acct-{i:02d}" for i in range(50)]
#: Threads at the peak: two per dial, at most connections.max_concurrent_dials (16 by
#: default) at once, plus Python, aiohttp and Go; not two per account.
THREAD_BOUND = 2 * ConnectionsConfig().max_concurrent_dials + 20
#: The longest a failing dial takes here (the resolver's timeout), plus scheduling slack.
DIAL_TIMEOUT_S = 5.5
#: The most a dial waits before it queues for a slot (connections.dial_jitter's default).
DIAL_JITTER_S = ConnectionsConfig().dial_jitter


def sample(metrics: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}{{{re.escape(labels)}}} (\S+)$", metrics, re.MULTILINE)
    assert match, f"{name}{{{labels}}} missing"
    return float(match.group(1))


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_fifty_accounts_without_network(tmp_path: Path, tokens_file: Path) -> None:
    config = cli_config(tmp_path, tokens_file, ACCOUNTS)
    recording = tmp_path / "live.jsonl"
    process = sidecar_cli("run", "--config", str(config), "--record", str(recording))
    latencies: list[float] = []
    peak_threads = 0
    try:
        port = wait_ready(process)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            started = time.perf_counter()
            metrics = get(f"http://127.0.0.1:{port}/metrics")
            latencies.append(time.perf_counter() - started)
            peak_threads = max(peak_threads, threads_of(process.pid))
            reconnects = re.findall(
                r"^whatsapp_reconnects_total\{[^}]*\} (\S+)$", metrics, re.MULTILINE
            )
            if len(reconnects) == len(ACCOUNTS) and min(map(float, reconnects)) >= 2:
                break
            time.sleep(0.05)
        for account in ACCOUNTS:
            labels = f'account="{account}"'
            connecting = sample(
                metrics, "whatsapp_connection_state", f'{labels},state="connecting"'
            )
            disconnected = sample(
                metrics, "whatsapp_connection_state", f'{labels},state="disconnected"'
            )
            assert connecting + disconnected == 1.0
            assert sample(metrics, "whatsapp_reconnects_total", labels) >= 2.0
            assert (
                tmp_path / "state" / "sessions" / f"{account}.sqlite3"
            ).stat().st_mode & 0o777 == 0o600
        stop_started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
        stop_seconds = time.monotonic() - stop_started
    finally:
        if process.poll() is None:
            process.kill()
    print(
        f"50 accounts: peak threads {peak_threads} (bound {THREAD_BOUND}),"
        f" /metrics median {statistics.median(latencies) * 1000:.1f} ms"
        f" max {max(latencies) * 1000:.1f} ms over {len(latencies)} scrapes, SIGTERM to exit {stop_seconds:.2f} s"
    )
    assert process.returncode == 0, err
    assert stop_seconds < 10
    assert "Traceback" not in err
    assert statistics.median(latencies) < 0.2, (
        f"median /metrics latency {statistics.median(latencies):.3f} s"
    )
    assert peak_threads <= THREAD_BOUND, f"{peak_threads} threads"

    # Every retry waited as the backoff schedule says: attempt n after [c/2, c], c = 2 s * 2^n,
    # then the dial's jitter. Failures are recorded when the dial gives up, which can take
    # up to the resolver's 5 s timeout on this machine: the gap may exceed c by that much.
    attempts: dict[str, list[float]] = defaultdict(list)
    for line in recording.read_text().splitlines():
        record = json.loads(line)
        assert record["event"] == "ConnectFailureEv"
        attempts[record["account"]].append(record["t"])
    assert sorted(attempts) == ACCOUNTS
    schedule = Backoff()
    for times in attempts.values():
        for n, gap in enumerate(b - a for a, b in itertools.pairwise(times)):
            ceiling = schedule.ceiling(n)
            assert ceiling / 2 - 0.05 <= gap <= ceiling + DIAL_JITTER_S + DIAL_TIMEOUT_S, (n, gap)

    # The final state logged at shutdown is what the recording replays to.
    final = dict(re.findall(r"account=(acct-\d\d) status=disconnected .*?reconnects=(\d+)", err))
    assert sorted(final) == ACCOUNTS
    for account, times in attempts.items():
        assert int(final[account]) == len(times) - 1
    replay_dir = tmp_path / "replay"
    replay_dir.mkdir()
    replay_config = cli_config(replay_dir, tokens_file, ACCOUNTS)
    replay = sidecar_cli("replay", str(recording), "--config", str(replay_config), "--linger", "30")
    try:
        replay_port = wait_ready(replay)
        time.sleep(0.5)
        replayed = get(f"http://127.0.0.1:{replay_port}/metrics")
    finally:
        replay.terminate()
        replay.communicate(timeout=15)
    for account, times in attempts.items():
        labels = f'account="{account}"'
        assert sample(replayed, "whatsapp_reconnects_total", labels) == float(final[account])
        assert sample(
            replayed, "whatsapp_events_total", f'{labels},event="ConnectFailureEv"'
        ) == len(times)
        assert (
            sample(replayed, "whatsapp_connection_state", f'{labels},state="disconnected"') == 1.0
        )


def test_a_send_while_whatsapp_is_unreachable_is_queued_and_stays_queued(
    tmp_path: Path, tokens_file: Path
) -> None:
    """The live path with sending on: neonize's real sessions fail to dial, so the
    message waits in the outbox, whatever the worker tries, and outlives the process."""
    import sqlite3
    import urllib.request

    import yaml

    from .support.config import TOKEN

    config = cli_config(tmp_path, tokens_file, ["sales"])
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump(data | {"send": {"enabled": True, "poll_interval": "100ms"}}))
    process = sidecar_cli("run", "--config", str(config))
    try:
        port = wait_ready(process)
        body = {
            "accountId": "sales",
            "to": "+12025550123",
            "message": "hi",
            "clientMessageId": "l-1",
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/whatsapp/send-message",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=15) as reply:
            answer = json.loads(reply.read())
        assert answer == {
            "success": True,
            "messageId": "l-1",
            "clientMessageId": "l-1",
            "queued": True,
            "status": "queued",
        }
        time.sleep(1.0)  # several of the worker's looks: none may claim it while unconnected
        metrics = get(f"http://127.0.0.1:{port}/metrics")
        assert sample(metrics, "whatsapp_messages_sent_total", 'account="sales",result="ok"') == 0
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err[-3000:]
    db = sqlite3.connect(tmp_path / "state" / "messages.sqlite3")
    row = db.execute("SELECT status, attempt_count FROM outbox WHERE id = 'l-1'").fetchone()
    db.close()
    assert row == ("queued", 0)
    assert "12025550123" not in out + err  # the recipient, with or without its +
