"""Prometheus and Alertmanager, the Debian-packaged servers the monitoring tests run.

Ports: both are told to listen on ``127.0.0.1:0`` and the port is read back from their
``msg="Listening on" address=127.0.0.1:PORT`` log line (Prometheus' exporter-toolkit
logs the bound address), so there is no window in which another process could take a
port picked for them.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .http import wait_http
from .paths import REPO

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"
LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')


def installed(binary: str) -> str:
    """The path of a Debian-packaged server or tool the tests run; fail loudly without it."""
    found = shutil.which(binary)
    if found is None:
        raise RuntimeError(
            f"{binary} is not installed (Debian: prometheus, prometheus-alertmanager);"
            " scripts/test installs them"
        )
    return found


@contextlib.contextmanager
def server(args: list[str], log: Path, what: str, timeout: float = 30) -> Iterator[str]:
    """Run ``args`` plus ``--web.listen-address=127.0.0.1:0``, output to ``log``; yield its
    ``http://127.0.0.1:PORT`` once ``/-/ready`` answers. Stopped when the block ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*args, "--web.listen-address=127.0.0.1:0"], stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout
            while not (match := LISTENING.search(log.read_text(errors="replace"))):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"{what} did not start listening: {log.read_text()[-2000:]}"
                    )
                time.sleep(0.1)
            url = f"http://127.0.0.1:{match.group(1)}"
            wait_http(f"{url}/-/ready", what, timeout)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def alertmanager(config: Path, workdir: Path) -> Iterator[str]:
    """A real Alertmanager with ``config``, its data and log under ``workdir``, no cluster;
    yields its URL."""
    args = [
        installed(ALERTMANAGER),
        f"--config.file={config}",
        f"--storage.path={workdir / 'am-data'}",
        "--cluster.listen-address=",
    ]
    with server(args, workdir / "alertmanager.log", "Alertmanager") as url:
        yield url


def post_alerts(am_url: str, alerts: list[dict[str, str]]) -> None:
    """Post alerts with these labels to Alertmanager's API, as Prometheus would."""
    body = json.dumps(
        [{"labels": labels, "annotations": {"summary": "test"}} for labels in alerts]
    ).encode()
    request = urllib.request.Request(
        f"{am_url}/api/v2/alerts",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def alertmanager_config_for(webhook_url: str) -> dict[str, Any]:
    """The shipped Alertmanager config, with the test's receiver and short timers."""
    config: dict[str, Any] = yaml.safe_load((REPO / "alertmanager/alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{webhook_url}/{receiver['name']}"
    return config
