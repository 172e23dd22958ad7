"""Live WhatsApp sessions through neonize: the event source of ``wa-sidecar run``.

A first, simple form: one neonize client per account on its own thread,
reconnecting with capped exponential backoff and jitter. Every neonize event
goes to the same pipeline that replay feeds; a failed dial, which neonize
reports by raising rather than with an event, becomes a ``ConnectFailureEv``
so that live runs and their recordings count it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
from pathlib import Path
from typing import Any

from neonize.client import NewClient
from neonize.events import ConnectFailureEv, QREv
from neonize.proto.Neonize_pb2 import ConnectFailureReason, Node

from sidecar.adapters.capture import CaptureWriter
from sidecar.clock import Clock
from sidecar.domain.account import TERMINAL_STATUSES
from sidecar.pipeline import EVENT_CLASSES
from sidecar.service import Sidecar

log = logging.getLogger(__name__)

#: neonize raises instead of sending an event when the dial fails; this is that event.
DIAL_FAILED = ConnectFailureEv(
    Reason=ConnectFailureReason.GENERIC, Message="dial failed", Raw=Node(Tag="dial")
)

BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Full jitter over a capped exponential: spreads many accounts' retries apart."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** min(attempt, 16)))
    return rng.uniform(ceiling / 2, ceiling)


class Recorder:
    """Writes live events in the capture format; QR codes are never written."""

    def __init__(self, path: Path) -> None:
        self._writer = CaptureWriter(path)
        self._lock = threading.Lock()

    def write(self, t: float, account: str, event: Any) -> None:
        if isinstance(event, QREv):
            event = QREv()
        with self._lock:
            self._writer.write(t, account, event)
            self._writer.flush()

    def close(self) -> None:
        with self._lock:
            self._writer.close()


class LiveAccount:
    def __init__(
        self, account_id: str, sidecar: Sidecar, clock: Clock, recorder: Recorder | None
    ) -> None:
        self.account_id = account_id
        self._sidecar = sidecar
        self._clock = clock
        self._recorder = recorder
        self._client: NewClient | None = None
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self.session_path = sidecar.config.state_dir / "sessions" / f"{account_id}.sqlite3"

    def _deliver(self, event: Any) -> None:
        now = self._clock.now()
        if self._recorder is not None:
            try:
                self._recorder.write(now, self.account_id, event)
            except Exception:
                log.exception("account=%s cannot record an event; handling it", self.account_id)
        self._sidecar.pipeline.handle(self.account_id, event, now)

    def _new_client(self) -> NewClient:
        client = NewClient(str(self.session_path))
        for cls in EVENT_CLASSES.values():
            client.event(cls)(lambda _client, event: self._deliver(event))
        # The QR is for a person, never for a shared log: hold only the fact it exists.
        client.event.qr(lambda _client, _data: self._deliver(QREv()))
        return client

    def run(self, stop: threading.Event) -> None:
        self.session_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.session_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        attempt = 0
        while not stop.is_set():
            try:
                self._client = self._new_client()
                self._client.connect()
            except Exception as exc:
                log.info("account=%s connect failed: %s", self.account_id, type(exc).__name__)
                self._deliver(DIAL_FAILED)
            if self._sidecar.states[self.account_id].snapshot().status in TERMINAL_STATUSES:
                log.warning("account=%s stopped reconnecting: needs a person", self.account_id)
                return
            stop.wait(backoff_delay(attempt, self._rng))
            attempt += 1

    def stop(self) -> None:
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                client.stop()


def live_source(clock: Clock, record: Path | None) -> Any:
    async def source(sidecar: Sidecar, stop: asyncio.Event) -> None:
        recorder = Recorder(record) if record is not None else None
        halt = threading.Event()
        accounts = [LiveAccount(a, sidecar, clock, recorder) for a in sidecar.states]
        threads = [
            threading.Thread(
                target=a.run, args=(halt,), name=f"account-{a.account_id}", daemon=True
            )
            for a in accounts
        ]
        for thread in threads:
            thread.start()
        try:
            await stop.wait()
        finally:
            halt.set()
            for account in accounts:
                account.stop()
            loop = asyncio.get_running_loop()
            for thread in threads:
                await loop.run_in_executor(None, thread.join, 5.0)
            if recorder is not None:
                recorder.close()

    return source
