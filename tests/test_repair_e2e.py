"""The remediation ladder end to end: a real Alertmanager delivers its webhook JSON, with
the sidecar's bearer token, to a sidecar replaying a session that stays degraded."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar import testing as build
from sidecar.adapters.capture import encode_record

from .support.cli import sidecar_cli, wait_ready
from .support.config import TOKEN
from .support.http import get
from .support.polling import wait_for
from .support.services import alertmanager, post_alerts

pytestmark = pytest.mark.services  # Alertmanager and a wa-sidecar process


def test_alertmanager_webhook_runs_the_ladder_to_needs_repair(
    tmp_path: Path, tokens_file: Path
) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http": {"listen": "127.0.0.1:0"},
                "state_dir": str(tmp_path / "state"),
                "auth": {"tokens_file": str(tokens_file)},
                "silence_threshold": "5s",
                "verdict": {"confirm": "2s"},
                "repair": {"grace": "2s"},
                "accounts": [{"id": "sales"}, {"id": "support"}],
            }
        )
    )
    start = time.time() + 1
    records: list[tuple[float, str | None, Any]] = []
    for account in ("sales", "support"):
        records += [
            (start, account, build.connected()),
            (start + 0.5, account, build.offline_sync_completed()),
        ]
        records.append(
            (start + 1, account, build.message_event(build.text("hi"), message_id=f"{account}-1"))
        )
    records += [
        (
            start + 2 + k,
            "sales",
            build.message_event(
                build.history_sync_notification(), from_me=True, message_id=f"p{k}"
            ),
        )
        for k in range(40)
    ]
    records.sort(key=lambda r: r[0])
    capture = tmp_path / "c.jsonl"
    capture.write_text("".join(encode_record(t, a, e) + "\n" for t, a, e in records))

    sidecar = sidecar_cli(
        "replay", str(capture), "--config", str(config), "--speed", "1", "--linger", "60"
    )
    try:
        port = wait_ready(sidecar)
        am_config = tmp_path / "alertmanager.yml"
        am_config.write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "sidecar",
                        "group_by": ["account"],
                        "group_wait": "1s",
                        "group_interval": "1s",
                    },
                    "receivers": [
                        {
                            "name": "sidecar",
                            "webhook_configs": [
                                {
                                    "url": f"http://127.0.0.1:{port}/api/alertmanager/webhook",
                                    "http_config": {
                                        "authorization": {"type": "Bearer", "credentials": TOKEN}
                                    },
                                }
                            ],
                        }
                    ],
                }
            )
        )
        with alertmanager(am_config, tmp_path) as am:
            wait_for(
                lambda: get(f"http://127.0.0.1:{port}/api/whatsapp/accounts/sales/health", TOKEN)[
                    "isDegraded"
                ],
                30,
                "sales to degrade",
            )
            post_alerts(
                am,
                [
                    {
                        "alertname": "WhatsappSessionDegraded",
                        "account": "sales",
                        "severity": "critical",
                        "job": "wa-sidecar",
                    },
                    {
                        "alertname": "WhatsappSessionDegraded",
                        "account": "support",
                        "severity": "critical",
                        "job": "wa-sidecar",
                    },
                ],
            )

            def metric(name: str, labels: str) -> float | None:
                for line in get(f"http://127.0.0.1:{port}/metrics").splitlines():
                    if line.startswith(f"{name}{{{labels}}} "):
                        return float(line.split()[-1])
                return None

            wait_for(
                lambda: metric("whatsapp_account_needs_repair", 'account="sales"') == 1.0,
                30,
                "needs_repair",
            )
            assert (
                metric("whatsapp_remediation_steps_total", 'account="sales",step="reconnect"')
                == 1.0
            )
            assert (
                metric("whatsapp_remediation_steps_total", 'account="sales",step="needs_repair"')
                == 1.0
            )
            # support has had no protocol traffic: quiet, so the reconnect "cured" it
            wait_for(
                lambda: (
                    metric("whatsapp_remediation_steps_total", 'account="support",step="recovered"')
                    == 1.0
                ),
                30,
                "support recovered",
            )
            assert metric("whatsapp_account_needs_repair", 'account="support"') == 0.0
    finally:
        sidecar.terminate()
        try:
            sidecar.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            sidecar.kill()
    audit = [
        json.loads(line) for line in (tmp_path / "state" / "audit.log").read_text().splitlines()
    ]
    steps = [(a["action"], a["account"]) for a in audit]
    assert ("remediate_reconnect", "sales") in steps
    assert ("remediate_needs_repair", "sales") in steps
    assert ("remediate_needs_repair", "support") not in steps
    assert all(a["who"].startswith("static:token:") for a in audit)
