"""A replica that dies (SIGKILL) at one step of a send, for tests/test_send_crash.py.

``python -m tests.support.crash_worker STATE_DIR STEP WHATSAPP_LOG``: claims the queued
messages in ``STATE_DIR``'s outbox and sends them through a scripted (**fake**)
WhatsApp session, which appends each message it takes to ``WHATSAPP_LOG`` (fsynced:
what WhatsApp received survives the kill); the process kills itself at ``STEP``:

- ``claimed``: after the claim, before the attempt is journaled (nothing sent);
- ``sent``: after WhatsApp took the message, before its id reaches the journal (the
  one window neonize leaves);
- ``journaled``: after the id is journaled, before the outbox records it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sidecar.adapters.outbox_sqlite import SqliteOutbox
from sidecar.adapters.send_journal import SqliteSendJournal
from sidecar.core.clock import SystemClock
from sidecar.core.sender import OutboxWorker
from sidecar.domain.outbox import OutboxItem, SendPolicy


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # never reached


class DyingJournal(SqliteSendJournal):
    def __init__(self, state_dir: Path, step: str) -> None:
        super().__init__(state_dir)
        self.step = step

    def started(self, item: OutboxItem, at: float) -> None:
        if self.step == "claimed":
            die()
        super().started(item, at)

    def accepted(self, item_id: str, wa_id: str, at: float) -> None:
        if self.step == "sent":
            die()
        super().accepted(item_id, wa_id, at)
        if self.step == "journaled":
            die()


class LoggingWhatsApp:
    """**Fake** WhatsApp (unreachable here): takes every message, logs it durably."""

    connected = True

    def __init__(self, log: Path) -> None:
        self.log = log

    def send_message(self, to_jid: str, text: str) -> str:
        with self.log.open("a") as out:
            count = sum(1 for _ in self.log.open())
            wa_id = f"3EB0DEAD{count + 1:08X}"
            out.write(f"{wa_id} {text}\n")
            out.flush()
            os.fsync(out.fileno())
        return wa_id

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    def logout(self) -> None: ...

    def pair_phone(self, phone: str) -> str:
        raise NotImplementedError


async def main(state_dir: Path, step: str, log: Path) -> None:
    session: Any = LoggingWhatsApp(log)
    worker = OutboxWorker(
        SqliteOutbox(state_dir),
        DyingJournal(state_dir, step),
        SystemClock(),
        worker_id="doomed",
        sessions=lambda _account: session,
        held=lambda: ["sales"],
        deliver=lambda _account, _event: None,
        policy=SendPolicy(lease_s=60.0),
        rate=(600.0, 100),
        poll_interval_s=0.1,
    )
    await worker.claim_once()
    await worker.senders_done()
    raise SystemExit("the step to die at was never reached")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
