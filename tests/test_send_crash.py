"""Crashes and replicas on the send path (issue 16, docs/sending.md, "What WhatsApp lets
us promise"): a replica killed (SIGKILL) at each step of a send, and two replicas
draining one outbox. WhatsApp's side is a scripted (fake) session that logs what it
received, so the tests count what a recipient would see."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sidecar.adapters.outbox_sqlite import SqliteOutbox
from sidecar.adapters.send_journal import SqliteSendJournal
from sidecar.core.clock import SystemClock
from sidecar.core.ports import OutboxStore
from sidecar.core.sender import OutboxWorker
from sidecar.domain.outbox import OutboxItem, SendPolicy

from .support.backends import Backend, make_outbox
from .support.paths import REPO
from .support.sending import ScriptedWhatsApp, queued_item

LEASE_S = 60.0


def item(n: int, now: float) -> OutboxItem:
    return queued_item(f"k-{n:03d}", now, text=f"text {n}")


class Later:
    """The wall clock moved on by ``ahead`` seconds (past a dead replica's leases)."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def now(self) -> float:
        return time.time() + self.ahead


def worker(
    store: OutboxStore, state_dir: Path, session: Any, clock: Any, name: str
) -> OutboxWorker:
    return OutboxWorker(
        store,
        SqliteSendJournal(state_dir),
        clock,
        worker_id=name,
        sessions=lambda _account: session,
        held=lambda: ["sales"],
        deliver=lambda _account, _event: None,
        policy=SendPolicy(lease_s=LEASE_S),
        rate=(6000.0, 1000),
        poll_interval_s=0.05,
    )


def kill_during_send(state_dir: Path, step: str, log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.crash_worker", str(state_dir), step, str(log)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


@pytest.mark.parametrize(
    ("step", "received", "unknown"),
    [
        ("claimed", 1, 0),  # between claim and send: sent once, by the next holder
        ("journaled", 1, 0),  # between send and record: the journal has its id, never resent
        ("sent", 2, 1),  # the window: WhatsApp took it, the id never reached the disk
    ],
)
async def test_a_replica_killed_during_a_send(
    tmp_path: Path, step: str, received: int, unknown: int
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    log = tmp_path / "whatsapp.log"
    log.touch()
    store = SqliteOutbox(state_dir)
    await store.add(item(1, time.time()))
    await asyncio.to_thread(kill_during_send, state_dir, step, log)
    held = await store.get("k-001")
    assert held is not None
    assert (held.status, held.claimed_by) == ("processing", "doomed")

    # the process comes back on the same disk, after the dead one's claim ran out
    again = worker(store, state_dir, ScriptedWhatsApp(), Later(LEASE_S + 1), "reborn")
    session = again._sessions("sales")
    assert isinstance(session, ScriptedWhatsApp)
    assert await again.claim_once() == 1
    await again.senders_done()
    lines = log.read_text().splitlines() + [f"{wa} {text}" for _, text, wa in session.sent]
    assert [line.split(" ", 1)[1] for line in lines] == ["text 1"] * received
    final = await store.get("k-001")
    assert final is not None
    assert final.status == "sent"
    assert final.provider_message_id == lines[-1].split(" ")[0]
    assert again.stats.unknown["sales"] == unknown
    await again.close()


async def test_two_replicas_draining_one_outbox_never_send_a_message_twice(
    backend: Backend, tmp_path: Path
) -> None:
    now = time.time()
    seed = make_outbox(backend)
    for n in range(40):
        await seed.add(item(n, now))
    await seed.close()

    class Slow(ScriptedWhatsApp):
        """The fake session, a little slow, so the two claims interleave."""

        def send_message(self, to_jid: str, text: str) -> str:
            time.sleep(0.002)
            return super().send_message(to_jid, text)

    sessions = [Slow(), Slow()]
    workers = [
        worker(make_outbox(backend), tmp_path / f"replica-{i}", sessions[i], SystemClock(), f"r{i}")
        for i in range(2)
    ]
    stopping = asyncio.Event()
    runs = [asyncio.create_task(w.run(stopping)) for w in workers]
    deadline = time.monotonic() + 60
    while sum(len(s.sent) for s in sessions) < 40 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stopping.set()
    await asyncio.wait(runs, timeout=10)
    texts = Counter(text for s in sessions for _, text, _ in s.sent)
    assert texts == Counter(f"text {n}" for n in range(40))  # every one, once
    assert all(s.sent for s in sessions), "one replica did all the work: no contention tested"
    check = make_outbox(backend)
    assert await check.counts(["sales"]) == [("sales", "sent", 40)]
    for w in workers:
        await w.close()
    await check.close()
