"""WAHA's webhooks at ``/api/ingest/waha/{account}`` (issue 17): the NOWEB engine's
``engine.event`` counts as the Baileys event it wraps, ``session.status`` drives the
connection state, WAHA's own (filtered) message events are not counted a second time,
and other engines' events are refused. Fixtures are retyped from WAHA's source, each
naming where its shape comes from."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.adapters.ingest import waha
from sidecar.adapters.ingest.baileys import BadIngest, UnknownEvent
from sidecar.compose import Assembly, assemble, build_app, live_source
from sidecar.core.clock import ReplayClock

from .support.config import TOKEN, ConfigFactory
from .support.gateway_json import waha_envelope

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ingest"
Client = TestClient[Any, Any]
#: A number that must never come back in an answer or an error.
MARKER = "12025550177"
NOTHING = {"accepted": 0, "duplicates": 0, "ignored": 0, "unreadable": 0}


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    assert "src/" in data.pop("_source")  # names the WAHA file the shape comes from
    return data


@pytest.fixture
async def served(
    make_config: ConfigFactory, clock: ReplayClock
) -> AsyncIterator[tuple[Assembly, Client]]:
    loaded = make_config([{"id": "shop", "source": "ingest"}])
    assembly = assemble(loaded, clock, storage=False)
    live_source(assembly, None)
    async with TestClient(TestServer(build_app(assembly))) as client:
        yield assembly, client
    assembly.close()


async def post(client: Client, body: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with client.post("/api/ingest/waha/shop", json=body, headers=headers) as reply:
        return reply.status, await reply.json()


async def status_of(client: Client) -> str:
    """The account's ``status`` as the health JSON says it."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with client.get("/api/whatsapp/accounts/shop/health", headers=headers) as reply:
        assert reply.status == 200
        status: str = (await reply.json())["status"]
        return status


def received(assembly: Assembly) -> dict[tuple[str, str], float]:
    """The account's non-zero ``whatsapp_messages_received_total`` by (class, kind)."""
    counts = {}
    for metric in assembly.metrics.registry.collect():
        if metric.name == "whatsapp_messages_received":
            for sample in metric.samples:
                labels = sample.labels
                if sample.name.endswith("_total") and labels["account"] == "shop" and sample.value:
                    counts[labels["class"], labels["kind"]] = sample.value
    return counts


def answer(accepted: int = 0, duplicates: int = 0, ignored: int = 0) -> dict[str, int]:
    return {"accepted": accepted, "duplicates": duplicates, "ignored": ignored, "unreadable": 0}


def session_status(status: str) -> dict[str, Any]:
    return waha_envelope(
        "session.status",
        {"name": "default", "status": status, "statuses": [{"status": status, "timestamp": 1}]},
    )


def baileys_event(event: str, data: Any, *, engine: str = "NOWEB") -> dict[str, Any]:
    return waha_envelope("engine.event", {"event": event, "data": data}, engine=engine)


@pytest.mark.parametrize(
    ("name", "cls", "kind"),
    [
        ("waha-noweb-engine-event-upsert-text.json", "real", "conversation"),
        (
            "waha-noweb-engine-event-history-sync.json",
            "protocol",
            "protocolMessage.HISTORY_SYNC_NOTIFICATION",
        ),
    ],
)
async def test_nowebs_engine_event_counts_the_message_it_wraps_once(
    served: tuple[Assembly, Client], name: str, cls: str, kind: str
) -> None:
    assembly, client = served
    assert await status_of(client) == "connecting"
    assert await post(client, fixture(name)) == (200, answer(accepted=1))
    assert received(assembly) == {(cls, kind): 1}
    assert await status_of(client) == "connected"  # a message proves the session open
    # WAHA retries (15 times by default): a message it posted before is a duplicate
    assert await post(client, fixture(name)) == (200, answer(duplicates=1))
    assert received(assembly) == {(cls, kind): 1}


async def test_wahas_own_message_event_is_not_counted_a_second_time(
    served: tuple[Assembly, Client],
) -> None:
    """WAHA posts a received message twice when both events are on: as the socket's
    messages.upsert (engine.event) and as its own `message`."""
    assembly, client = served
    assert await post(client, fixture("waha-noweb-engine-event-upsert-text.json")) == (
        200,
        answer(accepted=1),
    )
    assert await post(client, fixture("waha-noweb-message.json")) == (200, answer(ignored=1))
    assert received(assembly) == {("real", "conversation"): 1}


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("waha-session-status-working.json", "connected"),
        ("waha-session-status-scan-qr-code.json", "qr_pending"),
    ],
)
async def test_wahas_session_status_drives_the_health_status(
    served: tuple[Assembly, Client], name: str, status: str
) -> None:
    assembly, client = served
    assert await post(client, fixture(name)) == (200, answer(accepted=1))
    assert await status_of(client) == status
    assert received(assembly) == {}


@pytest.mark.parametrize(
    ("waha_status", "status", "taken"),
    [
        ("FAILED", "disconnected", answer(accepted=1)),
        ("STOPPED", "disconnected", answer(accepted=1)),
        ("STARTING", "connected", answer(ignored=1)),  # the outcome follows
        ("WORKING", "connected", answer(accepted=1)),
    ],
)
async def test_each_session_status_after_working(
    served: tuple[Assembly, Client], waha_status: str, status: str, taken: dict[str, int]
) -> None:
    _, client = served
    assert (await post(client, session_status("WORKING")))[0] == 200
    assert await post(client, session_status(waha_status)) == (200, taken)
    assert await status_of(client) == status


async def test_a_logout_ends_logged_out_in_the_order_waha_posts_it(
    served: tuple[Assembly, Client],
) -> None:
    """WAHA posts FAILED before the engine.event of the close that caused it: the
    close's reason (401, a Boom error as JSON.stringify writes it) is what stays."""
    _, client = served
    assert (await post(client, session_status("WORKING")))[0] == 200
    assert (await post(client, session_status("FAILED")))[0] == 200
    close = {
        "connection": "close",
        "lastDisconnect": {
            "error": {
                "data": {"tag": "stream:error", "attrs": {"code": "401"}},
                "isBoom": True,
                "isServer": False,
                "output": {
                    "statusCode": 401,
                    "payload": {
                        "statusCode": 401,
                        "error": "Unauthorized",
                        "message": "Stream Errored (conflict)",
                    },
                    "headers": {},
                },
            },
            "date": "2025-11-25T10:05:00.000Z",
        },
    }
    assert await post(client, baileys_event("connection.update", close)) == (
        200,
        answer(accepted=1),
    )
    assert await status_of(client) == "logged_out"


async def test_another_engines_event_is_refused_and_changes_nothing(
    served: tuple[Assembly, Client],
) -> None:
    assembly, client = served
    status, reply = await post(client, fixture("waha-gows-engine-event-message.json"))
    assert status == 400
    assert "only the NOWEB engine" in reply["error"]
    assert "Good morning" not in reply["error"]
    assert "12025550123" not in reply["error"]
    assert received(assembly) == {}
    assert await status_of(client) == "connecting"


async def test_creds_update_in_engine_event_is_dropped_unread(
    served: tuple[Assembly, Client], caplog: pytest.LogCaptureFixture
) -> None:
    """WAHA posts every socket event, the session's keys included, and retries any
    answer but 2xx: a refusal would bring the keys back 15 times."""
    assembly, client = served
    keys = {"noiseKey": {"private": {"type": "Buffer", "data": [1, 2, 3]}}, "me": {"id": MARKER}}
    caplog.set_level("DEBUG")
    status, reply = await post(client, baileys_event("creds.update", keys))
    assert MARKER not in caplog.text
    assert (status, reply) == (200, answer(ignored=1))
    assert received(assembly) == {}
    assert await status_of(client) == "connecting"


@pytest.mark.parametrize(
    "body",
    [
        waha_envelope("message.any", {"id": "x", "body": MARKER}),
        waha_envelope("message.ack", {"id": "x", "ack": 3, "ackName": "READ"}),
        waha_envelope("presence.update", {"id": MARKER, "presences": []}),
        waha_envelope("state.change", {"state": "CONNECTED"}),
        waha_envelope("group.v2.join", {"group": {"id": MARKER}}),
        waha_envelope("event.response.failed", {}),
        baileys_event("messaging-history.set", {"chats": [], "messages": [], "isLatest": True}),
        baileys_event("group.member-tag.update", {"groupId": MARKER}),
        baileys_event("lid-mapping.update", {"lid": MARKER, "pn": MARKER}),
    ],
)
async def test_events_that_measure_nothing_are_accepted_and_ignored(
    served: tuple[Assembly, Client], body: dict[str, Any]
) -> None:
    assembly, client = served
    assert await post(client, body) == (200, answer(ignored=1))
    assert received(assembly) == {}


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"payload": {"event": MARKER}}, 400, "expected WAHA's webhook body"),
        (waha_envelope(f"no.such.{MARKER}", {}), 422, "unknown WAHA event"),
        (waha_envelope("engine.event", None), 400, "engine.event: 'payload' must be an object"),
        (waha_envelope("engine.event", [MARKER]), 400, "'payload' must be an object"),
        (waha_envelope("engine.event", {"data": MARKER}), 400, "engine.event: expected"),
        (baileys_event(f"x.{MARKER}", {}), 422, "engine.event: unknown Baileys event"),
        (
            baileys_event("messages.upsert", {"messages": MARKER}),
            400,
            "engine.event: messages.upsert: 'data.messages' must be a list",
        ),
        (
            baileys_event("messages.upsert", {"messages": []}, engine="WEBJS"),
            400,
            "only the NOWEB engine",
        ),
        (waha_envelope("session.status", None), 400, "'payload.status'"),
        (session_status(MARKER), 400, "one of WAHA's session statuses"),
    ],
)
async def test_bodies_waha_would_not_post_get_a_clear_answer_and_change_nothing(
    served: tuple[Assembly, Client], body: dict[str, Any], status: int, error: str
) -> None:
    assembly, client = served
    got, reply = await post(client, body)
    assert got == status
    assert error in reply["error"]
    assert MARKER not in reply["error"]
    assert received(assembly) == {}
    assert await status_of(client) == "connecting"


def test_an_engine_event_that_names_no_engine_is_read_as_nowebs() -> None:
    message = {
        "key": {"remoteJid": "12025550123@s.whatsapp.net", "fromMe": False, "id": "3EB0AA"},
        "message": {"conversation": "hi"},
    }
    body = baileys_event("messages.upsert", {"type": "notify", "messages": [message]})
    del body["engine"]
    out = waha.convert(body, now=1_764_068_400.0)
    assert [key for _, key in out.events] == [("12025550123@s.whatsapp.net", "", False, "3EB0AA")]
    body["engine"] = None
    assert len(waha.convert(body, now=1_764_068_400.0).events) == 1
    body["engine"] = "GOWS"
    with pytest.raises(BadIngest, match="only the NOWEB engine"):
        waha.convert(body)


def test_the_converter_says_what_is_wrong_with_the_right_exception() -> None:
    with pytest.raises(UnknownEvent):
        waha.convert(baileys_event("no.such", {}))
    with pytest.raises(BadIngest) as refused:
        waha.convert(waha_envelope("engine.event", MARKER))
    assert not isinstance(refused.value, UnknownEvent)
    assert waha.convert(session_status("STARTING")).ignored == 1
    assert waha.convert(baileys_event("creds.update", {"me": MARKER})).events == []


async def test_an_unknown_format_names_the_known_ones(served: tuple[Assembly, Client]) -> None:
    _, client = served
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with client.post("/api/ingest/wahaa/shop", json={}, headers=headers) as reply:
        assert reply.status == 404
        error = (await reply.json())["error"]
    assert error == "unknown ingest format (known: baileys, evolution, waha)"
