"""A store outage longer than the client's retry deadline, then SIGKILL, then both back:
every message is in the store exactly once.

Firestore: the real emulator behind a TCP proxy that the test cuts, so the
emulator keeps what it already holds. SQLite: another connection holds the
database's exclusive lock, so every write fails with 'database is locked'.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sidecar import testing as build
from sidecar.adapters.capture import encode_record

from .support.backends import Backend
from .support.cli import SidecarProcess, sidecar_cli, wait_ready
from .support.config import TOKEN
from .support.firestore import TcpProxy
from .support.http import get
from .support.polling import wait_for

pytestmark = pytest.mark.services  # the Firestore emulator and wa-sidecar processes

T0 = 1_764_068_400.0
MESSAGES = 40
SPACING_S = 0.5
CHATS = [
    build.jid("12025550123"),
    build.jid("12025550147"),
    build.jid("120363000000000001", "g.us"),
]


class Outage:
    """Makes the backend unreachable and brings it back, keeping what it holds."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.proxy = TcpProxy(backend.emulator) if backend.emulator else None
        self._locker: sqlite3.Connection | None = None

    @property
    def environment(self) -> dict[str, str]:
        return {"FIRESTORE_EMULATOR_HOST": self.proxy.address} if self.proxy else {}

    def begin(self) -> None:
        if self.proxy is not None:
            self.proxy.cut()
            return
        self._locker = sqlite3.connect(
            self.backend.state_dir / "messages.sqlite3", isolation_level=None
        )
        self._locker.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        elif self._locker is not None:
            self._locker.execute("ROLLBACK")
            self._locker.close()
            self._locker = None

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        else:
            self.end()


@pytest.fixture
def outage(backend: Backend) -> Iterator[Outage]:
    made = Outage(backend)
    yield made
    made.close()


def config_file(tmp_path: Path, backend: Backend, name: str, tokens_file: Path) -> Path:
    path = tmp_path / f"outage-{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "http": {"listen": "127.0.0.1:0"},
                "state_dir": str(backend.state_dir),
                "auth": {"tokens_file": str(tokens_file)},
                "store": backend.store_config(write_timeout="3s"),
                "accounts": [{"id": "sales"}],
            }
        )
    )
    return path


def start(
    tmp_path: Path,
    backend: Backend,
    tokens_file: Path,
    capture: Path,
    env: dict[str, str],
    *extra: str,
) -> tuple[SidecarProcess, int]:
    config = config_file(tmp_path, backend, capture.stem, tokens_file)
    os.environ.update(env)
    try:
        process = sidecar_cli("replay", str(capture), "--config", str(config), *extra)
    finally:
        for key in env:
            os.environ.pop(key, None)
    return process, wait_ready(process)


def stored_ids(backend: Backend) -> list[str]:
    return sorted(m for _, messages in backend.read().values() for m in messages)


def test_outage_then_sigkill_loses_and_duplicates_nothing(
    tmp_path: Path, tokens_file: Path, backend: Backend, outage: Outage
) -> None:
    records = [(T0, "sales", build.connected())]
    for i in range(MESSAGES):
        event = build.message_event(
            build.text(f"message {i}"),
            chat=CHATS[i % 3],
            message_id=f"M{i:03d}",
            timestamp_ms=int((T0 + i * SPACING_S) * 1000),
        )
        records.append((T0 + 1 + i * SPACING_S, "sales", event))
    capture = tmp_path / "messages.jsonl"
    capture.write_text("".join(encode_record(t, a, e) + "\n" for t, a, e in records))
    if backend.name == "sqlite":
        backend.state_dir.mkdir(parents=True)
        # the store file must exist before the lock can be held on it
        import asyncio

        from sidecar.adapters.store_sqlite import SqliteMessageStore

        asyncio.run(SqliteMessageStore(backend.state_dir).close())

    first, port = start(
        tmp_path,
        backend,
        tokens_file,
        capture,
        outage.environment,
        "--speed",
        "1",
        "--linger",
        "120",
    )
    try:
        wait_for(lambda: len(stored_ids(backend)) >= 4, 30, "the first messages to land")
        outage.begin()
        outage_started = time.monotonic()

        def replayed() -> bool:
            metrics = get(f"http://127.0.0.1:{port}/metrics")
            return (
                f'whatsapp_events_total{{account="sales",event="MessageEv"}} {float(MESSAGES)}'
                in metrics
            )

        wait_for(replayed, 60, "every message to be handled")
        # longer than the client's retry deadline (write_timeout 3 s) several times over
        time.sleep(max(0.0, 10 - (time.monotonic() - outage_started)))
        metrics = get(f"http://127.0.0.1:{port}/metrics")
        health = get(f"http://127.0.0.1:{port}/api/whatsapp/accounts/sales/health", TOKEN)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=15)
    finally:
        if first.poll() is None:
            first.kill()
    assert f'whatsapp_store_write_errors_total{{backend="{backend.name}"}} 0.0' not in metrics
    depth = float(metrics.split('whatsapp_spool_messages{account="sales"} ')[1].split()[0])
    assert depth > 0
    assert health["store"]["backlog"] == depth
    assert health["store"]["lastError"]
    assert "12025550" not in health["store"]["lastError"]

    outage.end()
    before_restart = stored_ids(backend)
    assert len(before_restart) < MESSAGES, "the outage should have kept some messages in the spool"

    ticks = tmp_path / "ticks.jsonl"
    ticks.write_text(encode_record(T0 + 100, None, None) + "\n")
    second, port = start(
        tmp_path, backend, tokens_file, ticks, outage.environment, "--linger", "60"
    )
    try:
        wait_for(
            lambda: len(stored_ids(backend)) >= MESSAGES, 60, "the spool to drain after the restart"
        )
        wait_for(
            lambda: (
                '{account="sales"} 0.0'
                in get(f"http://127.0.0.1:{port}/metrics").split("whatsapp_spool_messages")[-1]
            ),
            30,
            "an empty spool",
        )
    finally:
        second.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            second.communicate(timeout=15)
    docs = backend.read()
    ids = [m for _, messages in docs.values() for m in messages]
    assert sorted(ids) == [f"M{i:03d}" for i in range(MESSAGES)]
    bodies = {m: fields["body"] for _, messages in docs.values() for m, fields in messages.items()}
    assert all(bodies[f"M{i:03d}"] == f"message {i}" for i in range(MESSAGES))
    assert all(thread is not None for thread, _ in docs.values())
