"""Payloads as Baileys-based gateways and Evolution API post them (retyped from their
public docs and source, each fixture naming where its shape comes from) counted and
turned into connection states by ``/api/ingest/{baileys,evolution}/...`` (issue 17)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.compose import Assembly, assemble, build_app, live_source
from sidecar.core.clock import ReplayClock

from .support.config import TOKEN, ConfigFactory

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ingest"
Client = TestClient[Any, Any]


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    assert data["_source"]  # every fixture says where its shape comes from
    return data


@pytest.fixture
async def served(
    make_config: ConfigFactory, clock: ReplayClock
) -> AsyncIterator[tuple[Assembly, Client]]:
    loaded = make_config([{"id": "shop", "source": "ingest"}, {"id": "node", "source": "ingest"}])
    assembly = assemble(loaded, clock, storage=False)
    live_source(assembly, None)
    async with TestClient(TestServer(build_app(assembly))) as client:
        yield assembly, client
    assembly.close()


async def post(client: Client, path: str, body: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with client.post(path, json=body, headers=headers) as reply:
        return reply.status, await reply.json()


def count(assembly: Assembly, account: str, cls: str, kind: str) -> float | None:
    value = assembly.metrics.registry.get_sample_value(
        "whatsapp_messages_received_total", {"account": account, "class": cls, "kind": kind}
    )
    return None if value is None else float(value)


@pytest.mark.parametrize(
    ("name", "fmt", "cls", "kind"),
    [
        ("evolution-2.3.6-upsert-image.json", "evolution", "real", "imageMessage"),
        ("evolution-2.3.2-upsert-text.json", "evolution", "real", "conversation"),
        (
            "evolution-messages-edited-history-sync.json",
            "evolution",
            "protocol",
            "protocolMessage.HISTORY_SYNC_NOTIFICATION",
        ),
        ("baileys-upsert-tojson.json", "baileys", "real", "extendedTextMessage"),
        ("baileys-upsert-raw.json", "baileys", "real", "conversation"),
    ],
)
async def test_a_gateways_own_payload_is_counted_as_what_it_holds(
    served: tuple[Assembly, Client], name: str, fmt: str, cls: str, kind: str
) -> None:
    assembly, client = served
    status, answer = await post(client, f"/api/ingest/{fmt}/shop", fixture(name))
    assert status == 200, answer
    assert (answer["accepted"], answer["unreadable"]) == (1, 0)
    assert count(assembly, "shop", cls, kind) == 1
    status, again = await post(client, f"/api/ingest/{fmt}/shop", fixture(name))
    # a retry: messages are deduplicated by key; a lone protocol message has none
    expected = 1 if name.startswith("evolution-messages-edited") else 0
    assert again["accepted"] == expected


def evolution(event: str, data: Any) -> dict[str, Any]:
    return {"event": event, "instance": "shop", "data": data, "sender": None, "apikey": None}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (
            evolution(
                "connection.update", {"instance": "shop", "state": "open", "statusReason": 200}
            ),
            "connected",
        ),
        (
            evolution(
                "connection.update", {"instance": "shop", "state": "close", "statusReason": 401}
            ),
            "logged_out",
        ),
        (
            evolution(
                "connection.update", {"instance": "shop", "state": "refused", "statusReason": 428}
            ),
            "disconnected",
        ),
        (evolution("CONNECTION_UPDATE", {"state": "close", "statusReason": 440}), "replaced"),
        (
            evolution(
                "qrcode.updated",
                {"qrcode": {"instance": "shop", "code": "2@fake", "base64": "data:"}},
            ),
            "qr_pending",
        ),
        (evolution("logout.instance", {"instance": "shop"}), "logged_out"),
    ],
)
async def test_evolutions_connection_events_drive_the_state(
    served: tuple[Assembly, Client], body: dict[str, Any], status: str
) -> None:
    assembly, client = served
    got, answer = await post(client, "/api/ingest/evolution/shop", body)
    assert got == 200, answer
    assert assembly.sidecar.health("shop").status.value == status


async def test_evolutions_status_updates_of_our_messages_are_receipts(
    served: tuple[Assembly, Client], clock: ReplayClock
) -> None:
    from sidecar.domain.delivery import SendResult

    assembly, client = served
    assembly.sidecar.handle(
        "shop", SendResult("3EB0SENT", "12025550123@s.whatsapp.net", True), clock.now()
    )
    update = {
        "keyId": "3EB0SENT",
        "remoteJid": "12025550123@s.whatsapp.net",
        "fromMe": True,
        "status": "DELIVERY_ACK",
    }
    status, answer = await post(
        client, "/api/ingest/evolution/shop", evolution("messages.update", update)
    )
    assert status == 200
    assert answer["accepted"] == 1
    assert (
        assembly.metrics.registry.get_sample_value(
            "whatsapp_message_delivery_seconds_count", {"account": "shop"}
        )
        == 1
    )
    server_ack = update | {"status": "SERVER_ACK"}
    _, answer = await post(
        client, "/api/ingest/evolution/shop", evolution("messages.update", server_ack)
    )
    assert (answer["accepted"], answer["ignored"]) == (0, 1)


async def test_an_unknown_evolution_event_is_422(served: tuple[Assembly, Client]) -> None:
    _, client = served
    status, answer = await post(
        client, "/api/ingest/evolution/shop", evolution("no.such.event", {})
    )
    assert status == 422
    assert "unknown Evolution API event" in answer["error"]


@pytest.mark.parametrize(
    ("data", "accepted", "kind"),
    [
        ({"foo": "bar"}, 0, None),  # no type: never taken for a revoke
        (
            {
                "key": {"id": "X"},
                "message": {"protocolMessage": {"type": "APP_STATE_SYNC_KEY_SHARE"}},
            },
            1,
            "protocolMessage.APP_STATE_SYNC_KEY_SHARE",
        ),
        ({"type": 5}, 1, "protocolMessage.HISTORY_SYNC_NOTIFICATION"),
    ],
)
async def test_evolutions_edited_bodies_are_read_or_refused_never_guessed(
    served: tuple[Assembly, Client], data: dict[str, Any], accepted: int, kind: str | None
) -> None:
    assembly, client = served
    status, answer = await post(
        client, "/api/ingest/evolution/shop", evolution("messages.edited", data)
    )
    assert status == 200
    assert (answer["accepted"], answer["unreadable"]) == (accepted, 1 - accepted)
    if kind is not None:
        assert count(assembly, "shop", "protocol", kind) == 1
    assert not count(assembly, "shop", "protocol", "protocolMessage.REVOKE")


async def test_creds_update_is_refused_whatever_the_format(served: tuple[Assembly, Client]) -> None:
    _, client = served
    status, answer = await post(client, "/api/ingest/evolution/shop", evolution("creds.update", {}))
    assert status == 400
    assert "private keys" in answer["error"]
