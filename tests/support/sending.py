"""The send path wired as ``wa-sidecar run`` wires it, with WhatsApp's side played by
:class:`ScriptedWhatsApp`: a **fake** session, since WhatsApp cannot be reached here.
Everything else is real: the outbox store (SQLite or the Firestore emulator), the
journal on disk, the worker, the pipeline, the metrics and the HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from sidecar.compose import Assembly, assemble, build_app, build_send_path
from sidecar.config import LoadedConfig
from sidecar.core.clock import Clock
from sidecar.core.ports import SendRefused
from sidecar.core.sender import OutboxWorker
from sidecar.domain.outbox import OutboxItem

from .config import TOKEN

#: The recipient the send tests use (a US test number: 555-01xx is never assigned).
TEST_JID = "12025550123@s.whatsapp.net"


def queued_item(item_id: str, at: float, *, text: str, account: str = "sales") -> OutboxItem:
    """An outbox item queued at ``at`` for :data:`TEST_JID`, due at once."""
    return OutboxItem(
        id=item_id,
        account_id=account,
        to_jid=TEST_JID,
        thread_id=f"{account}__{TEST_JID}",
        text=text,
        client_message_id=item_id,
        next_attempt_at=at,
        created_at=at,
    )


class ScriptedWhatsApp:
    """A **fake** of one account's session (WhatsApp is unreachable here): it takes
    every send and answers with a WhatsApp-style id, or refuses with the reasons in
    ``refuse``, one per send; ``gate``, when set, holds each send until it opens."""

    def __init__(self, *, connected: bool = True) -> None:
        self.connected = connected
        self.sent: list[tuple[str, str, str]] = []
        self.refuse: list[str] = []
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    async def run(self) -> None:
        raise AssertionError("a scripted session is never run")

    def stop(self) -> None:
        self.connected = False

    def send_message(self, to_jid: str, text: str) -> str:
        if self.gate is not None:
            self.gate.wait(10)
        with self._lock:
            if not self.connected:
                raise SendRefused("not_connected")
            if self.refuse:
                raise SendRefused(self.refuse.pop(0))
            wa_id = f"3EB0{len(self.sent) + 1:016X}"
            self.sent.append((to_jid, text, wa_id))
            return wa_id

    def logout(self) -> None:
        raise AssertionError("not used by the send path")

    def pair_phone(self, phone: str) -> str:
        raise AssertionError("not used by the send path")


@dataclass
class SendRig:
    """One sidecar with sending on: its assembly, scripted sessions, worker and client."""

    assembly: Assembly
    sessions: dict[str, ScriptedWhatsApp]
    client: TestClient[Any, Any]
    background: list[Any]
    held: set[str] = field(default_factory=set)

    @property
    def worker(self) -> OutboxWorker:
        assert self.assembly.sending is not None
        return self.assembly.sending.worker

    async def send(self, body: dict[str, Any], token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.client.post(
            "/api/whatsapp/send-message", json=body, headers=headers
        ) as reply:
            return reply.status, await reply.json()

    def metric(self, name: str, **labels: str) -> float | None:
        value = self.assembly.metrics.registry.get_sample_value(name, labels)
        return None if value is None else float(value)


@contextlib.asynccontextmanager
async def send_rig(
    loaded: LoadedConfig,
    clock: Clock,
    *,
    connected: bool = True,
    worker_id: str = "replica-a",
    run_worker: bool = True,
) -> AsyncIterator[SendRig]:
    """The send path of ``loaded`` (its accounts all held here), served over HTTP; the
    worker and the receipt marker run in the background unless ``run_worker`` is False
    (a test then drives the worker by hand)."""
    assembly = assemble(loaded, clock, storage=False)
    sessions = {a: ScriptedWhatsApp(connected=connected) for a in assembly.sidecar.account_ids}
    held = set(assembly.sidecar.account_ids)

    def deliver(account_id: str, event: Any) -> None:
        assembly.sidecar.handle(account_id, event, clock.now())

    background = build_send_path(
        assembly,
        worker_id=worker_id,
        held=lambda: held,
        sessions=sessions.get,
        deliver=deliver,
    )
    app = build_app(assembly)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(part.run(stopping)) for part in background] if run_worker else []
    rig = SendRig(assembly, sessions, client, background, held)
    try:
        yield rig
    finally:
        stopping.set()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await client.close()
        await rig.worker.close()
        assembly.close()
