"""`wa-sidecar run` with the real neonize library on a machine with no route to WhatsApp.

neonize fails to dial at once here; the sidecar must show it, retry with
backoff, record what happened, and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from .test_replay import cli_config, free_port, get, sidecar_cli, wait_ready


def sample(metrics: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}{{{re.escape(labels)}}} (\S+)$", metrics, re.MULTILINE)
    assert match, f"{name}{{{labels}}} missing"
    return float(match.group(1))


def test_run_without_network_counts_failed_dials_and_stops_on_sigterm(
    tmp_path: Path, tokens_file: Path
) -> None:
    port = free_port()
    accounts = ["alpha", "beta", "gamma"]
    config = cli_config(tmp_path, tokens_file, port, accounts)
    recording = tmp_path / "live.jsonl"
    process = sidecar_cli("run", "--config", str(config), "--record", str(recording))
    try:
        wait_ready(port, process)
        deadline = time.monotonic() + 30
        while True:
            metrics = get(f"http://127.0.0.1:{port}/metrics")
            reconnects = [
                sample(metrics, "whatsapp_reconnects_total", f'account="{a}"') for a in accounts
            ]
            if min(reconnects) >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for account in accounts:
            assert (
                sample(
                    metrics,
                    "whatsapp_connection_state",
                    f'account="{account}",state="disconnected"',
                )
                == 1.0
            )
            assert sample(metrics, "whatsapp_reconnects_total", f'account="{account}"') >= 1.0
            failures = sample(
                metrics, "whatsapp_events_total", f'account="{account}",event="ConnectFailureEv"'
            )
            assert (
                failures == sample(metrics, "whatsapp_reconnects_total", f'account="{account}"') + 1
            )
            assert (
                tmp_path / "state" / "sessions" / f"{account}.sqlite3"
            ).stat().st_mode & 0o777 == 0o600
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    lines = recording.read_text().splitlines()
    assert lines, "the recording is empty"
    assert all('"event": "ConnectFailureEv"' in line for line in lines)
