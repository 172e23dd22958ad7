"""Accounts whose session lives in another gateway (issue 17): Baileys' events posted to
``/api/ingest/baileys/{account}`` (or inside WAHA's envelope to ``/api/ingest/waha/...``)
count, judge and change state exactly as the same events from a neonize session do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e

from sidecar import testing as build
from sidecar.compose import Assembly, assemble, build_app, live_source
from sidecar.core.clock import ReplayClock

from .support.cases import CASES
from .support.config import TOKEN, ConfigFactory
from .support.gateway_json import protobufjs_json, raw_json, waha_envelope

SHAPES = [(name, content) for name, content, _, _, _ in CASES if content is not None]
FORMS: dict[str, Callable[[e2e.Message], dict[str, Any]]] = {
    "gw-protobufjs": protobufjs_json,
    "gw-buffers": raw_json,
    "gw-index-maps": lambda message: raw_json(message, index_maps=True),
}
#: An account fed by WAHA's NOWEB engine: the same Baileys event, raw, in WAHA's envelope.
WAHA = "gw-waha"
CHAT = "12025550123@s.whatsapp.net"
Client = TestClient[Any, Any]


@pytest.fixture
async def served(
    make_config: ConfigFactory, clock: ReplayClock
) -> AsyncIterator[tuple[Assembly, Client]]:
    ingest = [{"id": name, "source": "ingest"} for name in [*FORMS, WAHA]]
    loaded = make_config([*ingest, {"id": "live"}])
    assembly = assemble(loaded, clock, storage=False)
    live_source(assembly, None)  # wires the ingest accounts as `run` does; nothing connects
    async with TestClient(TestServer(build_app(assembly))) as client:
        yield assembly, client
    assembly.close()


async def post(client: Client, path: str, body: Any, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.post(path, json=body, headers=headers) as reply:
        return reply.status, await reply.json()


def upsert(messages: Any) -> dict[str, Any]:
    return {"event": "messages.upsert", "data": {"type": "notify", "messages": messages}}


def wa_message(n: int, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": {"remoteJid": CHAT, "fromMe": False, "id": f"3EB0{n:016X}"},
        "messageTimestamp": 1_764_068_400 + n,
        "pushName": "Test Person",
        "message": content,
    }


def received(assembly: Assembly, account: str) -> dict[tuple[str, str], float]:
    counts = {}
    for metric in assembly.metrics.registry.collect():
        if metric.name != "whatsapp_messages_received":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["account"] == account:
                counts[sample.labels["class"], sample.labels["kind"]] = sample.value
    return counts


async def test_every_classifier_shape_counts_the_same_whichever_way_it_arrived(
    served: tuple[Assembly, Client], clock: ReplayClock
) -> None:
    assembly, client = served
    for n, (_, content) in enumerate(SHAPES):
        assembly.sidecar.handle("live", build.message_event(content), clock.now())
    for account, form in FORMS.items():
        batch = [wa_message(n, form(content)) for n, (_, content) in enumerate(SHAPES)]
        status, answer = await post(client, f"/api/ingest/baileys/{account}", upsert(batch))
        assert status == 200, answer
        assert answer == {
            "accepted": len(SHAPES),
            "duplicates": 0,
            "ignored": 0,
            "unreadable": 0,
        }
    batch = [wa_message(n, raw_json(content)) for n, (_, content) in enumerate(SHAPES)]
    body = waha_envelope("engine.event", upsert(batch))
    status, answer = await post(client, f"/api/ingest/waha/{WAHA}", body)
    assert (status, answer["accepted"]) == (200, len(SHAPES)), answer
    expected = received(assembly, "live")
    assert sum(expected.values()) == len(SHAPES)
    for account in [*FORMS, WAHA]:
        assert received(assembly, account) == expected, account


async def test_a_gateways_retry_is_not_counted_twice(
    served: tuple[Assembly, Client],
) -> None:
    assembly, client = served
    batch = upsert([wa_message(n, {"conversation": f"hi {n}"}) for n in range(3)])
    assert (await post(client, "/api/ingest/baileys/gw-protobufjs", batch))[0] == 200
    status, again = await post(client, "/api/ingest/baileys/gw-protobufjs", batch)
    assert status == 200
    assert (again["accepted"], again["duplicates"]) == (0, 3)
    assert received(assembly, "gw-protobufjs")[("real", "conversation")] == 3


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ({"connection": "open"}, "connected"),
        ({"connection": "close", "lastDisconnect": {"statusCode": 401}}, "logged_out"),
        (
            {"connection": "close", "lastDisconnect": {"error": {"output": {"statusCode": 440}}}},
            "replaced",
        ),
        ({"connection": "close", "lastDisconnect": {"statusCode": 428}}, "disconnected"),
        ({"qr": "2@fake-qr-code"}, "qr_pending"),
    ],
)
async def test_the_gateways_connection_events_drive_the_state(
    served: tuple[Assembly, Client], data: dict[str, Any], status: str
) -> None:
    assembly, client = served
    body = {"event": "connection.update", "data": data}
    code, _ = await post(client, "/api/ingest/baileys/gw-buffers", body)
    assert code == 200
    assert assembly.sidecar.health("gw-buffers").status.value == status


@pytest.mark.parametrize(
    ("path", "body", "token", "status", "error"),
    [
        (
            "/api/ingest/baileys/gw-buffers",
            {"event": "creds.update", "data": {}},
            TOKEN,
            400,
            "private keys",
        ),
        ("/api/ingest/baileys/gw-buffers", {"event": "no.such", "data": {}}, TOKEN, 422, "unknown"),
        ("/api/ingest/baileys/gw-buffers", {"data": {}}, TOKEN, 400, "expected"),
        ("/api/ingest/baileys/gw-buffers", upsert("x"), TOKEN, 400, "list"),
        ("/api/ingest/baileys/live", upsert([]), TOKEN, 409, "not ingest"),
        ("/api/ingest/baileys/nobody", upsert([]), TOKEN, 404, "unknown account"),
        ("/api/ingest/wacli/gw-buffers", upsert([]), TOKEN, 404, "unknown ingest format"),
        ("/api/ingest/baileys/nobody", upsert([]), None, 401, "unauthorized"),
    ],
)
async def test_bad_requests_get_a_clear_answer_and_change_nothing(
    served: tuple[Assembly, Client],
    path: str,
    body: Any,
    token: str | None,
    status: int,
    error: str,
) -> None:
    assembly, client = served
    got, answer = await post(client, path, body, token)
    assert got == status
    assert error in answer["error"]
    assert sum(received(assembly, "gw-buffers").values()) == 0


async def test_unreadable_messages_are_counted_and_the_rest_taken(
    served: tuple[Assembly, Client],
) -> None:
    assembly, client = served
    batch = upsert(
        [
            wa_message(1, {"conversation": "ok"}),
            {"key": {"remoteJid": CHAT}},  # no id
            "not a message",
            {"key": {"remoteJid": CHAT, "id": "STUB"}, "messageStubType": 2},  # undecryptable
            {"key": {"remoteJid": CHAT, "id": "OTHER"}, "messageStubType": 27},
        ]
    )
    status, answer = await post(client, "/api/ingest/baileys/gw-buffers", batch)
    assert status == 200
    assert answer == {"accepted": 2, "duplicates": 0, "ignored": 1, "unreadable": 2}
    counts = received(assembly, "gw-buffers")
    assert counts[("real", "conversation")] == 1
    assert counts[("other", "undecodable")] == 1


async def test_ingest_events_are_recorded_and_replay_to_the_same_counts(
    make_config: ConfigFactory, clock: ReplayClock, tmp_path: Any
) -> None:
    """`run --record` writes what an ingest account's gateway posted as the neonize
    events it stood for: `replay` of that capture gives the same numbers."""
    from sidecar.adapters.capture import capture_records
    from sidecar.core.replay import Replayer

    loaded = make_config([{"id": "gw-protobufjs", "source": "ingest"}])
    assembly = assemble(loaded, clock, storage=False)
    capture = tmp_path / "ingest.jsonl"
    source, _ = live_source(assembly, capture)
    async with TestClient(TestServer(build_app(assembly))) as client:
        batch = [wa_message(n, protobufjs_json(content)) for n, (_, content) in enumerate(SHAPES)]
        status, _ = await post(client, "/api/ingest/baileys/gw-protobufjs", upsert(batch))
        assert status == 200
        body = {"event": "connection.update", "data": {"connection": "open"}}
        assert (await post(client, "/api/ingest/baileys/gw-protobufjs", body))[0] == 200
    live = received(assembly, "gw-protobufjs")
    stop = asyncio.Event()
    stop.set()
    await source(stop)  # stops at once and closes the recording
    assembly.close()

    again = assemble(loaded, ReplayClock(speed=0), storage=False)
    report = await Replayer(again.sidecar, ReplayClock(speed=0), again.replay_errors).run(
        capture_records(capture)
    )
    assert report.errors == 0
    assert received(again, "gw-protobufjs") == live
    assert sum(live.values()) == len(SHAPES)
    assert again.sidecar.health("gw-protobufjs").status.value == "connected"
    again.close()


async def test_a_message_proves_the_gateways_session_open_after_a_restart(
    served: tuple[Assembly, Client],
) -> None:
    """A Baileys socket that stayed open while the sidecar restarted never says `open`
    again; its next message must make the account connected, or it is never judged."""
    assembly, client = served
    assert assembly.sidecar.status("gw-buffers").value == "connecting"
    batch = upsert([wa_message(1, {"conversation": "still here"})])
    assert (await post(client, "/api/ingest/baileys/gw-buffers", batch))[0] == 200
    assert assembly.sidecar.status("gw-buffers").value == "connected"
    assert received(assembly, "gw-buffers")[("real", "conversation")] == 1


async def test_an_ingest_account_is_re_paired_in_its_gateway_not_here(
    make_config: ConfigFactory, clock: ReplayClock
) -> None:
    from sidecar.compose import build_repairs

    loaded = make_config([{"id": "shop", "source": "ingest"}])
    assembly = assemble(loaded, clock, storage=False)
    _, control = live_source(assembly, None)
    app = build_app(assembly, repairs=build_repairs(assembly, control))
    async with TestClient(TestServer(app)) as client:
        status, answer = await post(client, "/api/whatsapp/regenerate-qr/shop", {})
        assert status == 409
        assert "another gateway" in answer["error"]
        status, answer = await post(
            client, "/api/whatsapp/accounts/shop/pair-code", {"phone": "+12025550123"}
        )
        assert status == 409
        alert = {
            "status": "firing",
            "labels": {"alertname": "WhatsappSessionDegraded", "account": "shop"},
        }
        status, answer = await post(client, "/api/alertmanager/webhook", {"alerts": [alert]})
        assert (status, answer) == (200, {"started": [], "skipped": ["shop"]})
    assembly.close()


async def test_received_pending_notifications_completes_the_offline_sync(
    served: tuple[Assembly, Client],
) -> None:
    assembly, client = served
    body = {"event": "connection.update", "data": {"connection": "open"}}
    assert (await post(client, "/api/ingest/baileys/gw-buffers", body))[0] == 200
    assert assembly.sidecar.health("gw-buffers").offline_sync != "completed"
    body = {"event": "connection.update", "data": {"receivedPendingNotifications": True}}
    status, answer = await post(client, "/api/ingest/baileys/gw-buffers", body)
    assert (status, answer["accepted"]) == (200, 1)
    assert assembly.sidecar.health("gw-buffers").offline_sync == "completed"
