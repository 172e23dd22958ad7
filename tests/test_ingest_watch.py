"""Watching the watcher (docs/ingest.md): what an ingest account's gateway posted is
counted by outcome, refused requests by reason, and the time of its last post is
exported, so a forwarder that stopped or a webhook set up wrong is seen. The health
object says where the session lives."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.adapters.http.ingest import MAX_EVENTS
from sidecar.compose import Assembly, assemble, build_app, live_source
from sidecar.core.clock import ReplayClock

from .support.config import TOKEN, ConfigFactory

CHAT = "12025550123@s.whatsapp.net"
START = 1_764_068_400.0  # the clock fixture's start
Client = TestClient[Any, Any]
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def served(
    make_config: ConfigFactory, clock: ReplayClock
) -> AsyncIterator[tuple[Assembly, Client]]:
    loaded = make_config([{"id": "shop", "source": "ingest"}, {"id": "live"}])
    assembly = assemble(loaded, clock, storage=True)
    live_source(assembly, None)
    async with TestClient(TestServer(build_app(assembly))) as client:
        yield assembly, client
    assembly.close()


def message(n: int) -> dict[str, Any]:
    return {
        "key": {"remoteJid": CHAT, "fromMe": False, "id": f"3EB0{n:016X}"},
        "messageTimestamp": 1_764_068_400 + n,
        "message": {"conversation": f"hello {n}"},
    }


def upsert(messages: list[Any]) -> dict[str, Any]:
    return {"event": "messages.upsert", "data": {"type": "notify", "messages": messages}}


def value(assembly: Assembly, name: str, **labels: str) -> float | None:
    got = assembly.metrics.registry.get_sample_value(name, labels)
    return None if got is None else float(got)


def events(assembly: Assembly, account: str) -> dict[str, float | None]:
    return {
        outcome: value(assembly, "whatsapp_ingest_events_total", account=account, outcome=outcome)
        for outcome in ("accepted", "duplicate", "ignored", "unreadable")
    }


def refused(assembly: Assembly, account: str) -> dict[str, float | None]:
    return {
        reason: value(
            assembly, "whatsapp_ingest_requests_refused_total", account=account, reason=reason
        )
        for reason in ("bad_body", "unknown_event", "too_large")
    }


async def post(client: Client, path: str, **kwargs: Any) -> int:
    async with client.post(path, headers=HEADERS, **kwargs) as reply:
        await reply.read()
        return reply.status


async def test_posted_events_are_counted_by_outcome_and_the_last_post_timed(
    served: tuple[Assembly, Client], clock: ReplayClock
) -> None:
    assembly, client = served
    last = "whatsapp_ingest_last_request_timestamp_seconds"
    # before any post: every outcome at 0, and the last post is the start of listening
    assert events(assembly, "shop") == dict.fromkeys(events(assembly, "shop"), 0.0)
    assert value(assembly, last, account="shop") == START
    batch = upsert([message(1), message(2), {"key": {"remoteJid": CHAT}}, "not a message"])
    clock.advance_to(START + 60)
    assert await post(client, "/api/ingest/baileys/shop", json=batch) == 200
    clock.advance_to(START + 120)
    assert await post(client, "/api/ingest/baileys/shop", json=batch) == 200  # a retry
    assert await post(client, "/api/ingest/baileys/shop", json={"event": "chats.update"}) == 200
    assert events(assembly, "shop") == {
        "accepted": 2.0,
        "duplicate": 2.0,
        "ignored": 1.0,
        "unreadable": 4.0,
    }
    assert value(assembly, last, account="shop") == START + 120
    # a refused request is no sign of life
    clock.advance_to(START + 180)
    assert await post(client, "/api/ingest/baileys/shop", data=b"{not json") == 400
    assert value(assembly, last, account="shop") == START + 120
    # a neonize account has no ingest series
    assert value(assembly, last, account="live") is None


async def test_refused_requests_are_counted_by_reason(served: tuple[Assembly, Client]) -> None:
    assembly, client = served
    path = "/api/ingest/baileys/shop"
    assert await post(client, path, data=b"{not json") == 400
    assert await post(client, path, json={"event": "creds.update", "data": {}}) == 400
    assert await post(client, path, json=upsert("x")) == 400  # type: ignore[arg-type]
    assert await post(client, path, json={"event": "no.such.event"}) == 422
    many = upsert([message(n) for n in range(MAX_EVENTS + 1)])
    assert await post(client, path, json=many) == 413
    huge = b'{"event": "messages.upsert", "data": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    assert await post(client, path, data=huge) == 413
    assert refused(assembly, "shop") == {"bad_body": 3.0, "unknown_event": 1.0, "too_large": 2.0}
    # none of their events was taken
    assert events(assembly, "shop")["accepted"] == 0.0
    # posts for a neonize account count for nobody
    assert await post(client, "/api/ingest/baileys/live", json=upsert([])) == 409
    assert await post(client, "/api/ingest/baileys/live", data=b"{not json") == 400
    assert refused(assembly, "live") == dict.fromkeys(refused(assembly, "live"))


async def test_the_health_object_says_where_the_session_lives(
    served: tuple[Assembly, Client],
) -> None:
    _, client = served
    seen = {}
    for account in ("shop", "live"):
        async with client.get(f"/api/whatsapp/accounts/{account}/health", headers=HEADERS) as r:
            seen[account] = await r.json()
    assert (seen["shop"]["source"], seen["live"]["source"]) == ("ingest", "neonize")
    # the ingest account's messages are not stored here (store_messages defaults to false)
    assert "store" not in seen["shop"]
    assert seen["live"]["store"]["backend"] == "sqlite"


async def test_refused_requests_are_logged_once_a_minute_without_the_body(
    served: tuple[Assembly, Client], caplog: pytest.LogCaptureFixture
) -> None:
    _, client = served
    secret = "12025550199 secret words"
    bad = {"event": "messages.upsert", "data": {"type": "notify", "messages": secret}}
    with caplog.at_level(logging.WARNING, logger="sidecar.core.ingest"):
        for _ in range(3):
            assert await post(client, "/api/ingest/baileys/shop", json=bad) == 400
        assert await post(client, "/api/ingest/baileys/shop", json={"event": "no.such"}) == 422
    lines = [r.getMessage() for r in caplog.records if r.name == "sidecar.core.ingest"]
    # one line per reason within the minute: the first of three bad bodies, the unknown event
    assert len(lines) == 2, lines
    assert lines[0].startswith("account=shop ingest request refused (bad_body: ")
    assert "unknown_event: unknown Baileys event" in lines[1]
    assert not any(secret in line or "no.such" in line for line in lines)
