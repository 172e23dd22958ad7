"""The shipped Baileys forwarder (examples/ingest/baileys-forwarder.js), run by Node
against the real sidecar: a **fake** socket (no Baileys, no WhatsApp here) emits the
events a Baileys socket emits, and the sidecar counts and changes state from them."""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from sidecar.compose import assemble, build_app, live_source
from sidecar.core.clock import ReplayClock

from .support.config import TOKEN, ConfigFactory
from .support.paths import REPO

FORWARDER = REPO / "examples" / "ingest" / "baileys-forwarder.js"
#: A fake Baileys socket: `ev.process` hands the forwarder one batch of events, as
#: Baileys' event buffer does, and returns the unsubscribe function Baileys returns.
SCRIPT = """
const { forwardToSidecar } = require(process.argv[1])
const batches = JSON.parse(process.argv[3])
let handler
const sock = { ev: { process: (fn) => { handler = fn; return () => { handler = null } } } }
const off = forwardToSidecar(sock, { url: process.argv[2], token: process.env.TOKEN })
for (const batch of batches) handler(batch)
off()
setTimeout(() => process.exit(handler === null ? 0 : 3), 1500)
"""


def boom_close(code: int) -> dict[str, Any]:
    """``connection.update`` as Baileys emits it: a Boom error (its status code in
    ``output``, which the forwarder keeps) and a date."""
    return {
        "connection": "close",
        "lastDisconnect": {"error": {"output": {"statusCode": code}}, "date": "2026-11-30"},
    }


async def test_the_forwarder_delivers_a_sockets_events_to_the_sidecar(
    make_config: ConfigFactory, clock: ReplayClock
) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed (scripts/setup installs it)"
    assembly = assemble(make_config([{"id": "sales", "source": "ingest"}]), clock, storage=False)
    live_source(assembly, None)
    server = TestServer(build_app(assembly))
    await server.start_server()
    try:
        message = {
            "key": {"remoteJid": "12025550123@s.whatsapp.net", "fromMe": False, "id": "3EB0F1"},
            "messageTimestamp": 1764068400,
            "message": {"conversation": "hello"},
        }
        batches = [
            {"connection.update": {"connection": "open"}},
            {
                "messages.upsert": {"type": "notify", "messages": [message]},
                "creds.update": {"noiseKey": "never forwarded"},
            },
            {"connection.update": boom_close(401)},
        ]
        process = await asyncio.create_subprocess_exec(
            node,
            "-e",
            SCRIPT,
            str(FORWARDER),
            str(server.make_url("/api/ingest/baileys/sales")),
            json.dumps(batches),
            env={"TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        assert b"not delivered" not in err, err.decode()
        health = assembly.sidecar.health("sales")
        assert health.status.value == "logged_out"
        real = assembly.metrics.registry.get_sample_value(
            "whatsapp_messages_received_total",
            {"account": "sales", "class": "real", "kind": "conversation"},
        )
        assert real == 1
    finally:
        await server.close()
        assembly.close()


pytestmark = pytest.mark.services  # runs Node.js against a served sidecar
