"""Talking HTTP to a server a test started, and an address that refuses connections."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any


def get(url: str, token: str | None = None) -> Any:
    """GET ``url`` (with a bearer token if given): parsed JSON, or the text of any other body."""
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read().decode()
        return (
            json.loads(body)
            if response.headers["Content-Type"].startswith("application/json")
            else body
        )


LEASE_HELD = re.compile(r'^whatsapp_lease_held\{account="([^"]+)"\} 1\.0$', re.MULTILINE)


def held_by(port: int) -> set[str]:
    """The accounts the sidecar on ``port`` holds, as its /metrics says."""
    return set(LEASE_HELD.findall(get(f"http://127.0.0.1:{port}/metrics")))


def wait_http(url: str, what: str, timeout: float = 30) -> None:
    """Wait until ``url`` answers with a success; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not come up") from None
            time.sleep(0.2)


@contextlib.contextmanager
def refused_address() -> Iterator[str]:
    """``127.0.0.1:PORT`` where connections are refused for as long as the block runs.

    The port is bound but never listened on, so the kernel refuses connections to it and
    no other process can take it meanwhile (a port merely found free could be taken)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"
