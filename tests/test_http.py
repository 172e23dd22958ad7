"""The HTTP side through aiohttp's test client: auth, errors, health, metrics."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, cast

import pytest
import segno
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from sidecar import testing as build
from sidecar.adapters.http import READY, pages
from sidecar.compose import Assembly, assemble, build_app, build_repairs
from sidecar.config import LoadedConfig
from sidecar.core.clock import ReplayClock
from sidecar.core.repair import RecordingControl
from sidecar.core.service import Sidecar

from .support.config import TOKEN, AssemblyFactory, ConfigFactory

T0 = 1_764_068_400.0
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[Any, Any]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
def accounts() -> list[dict[str, Any]]:
    return [{"id": "sales"}, {"id": "support", "silence_threshold": "30m"}]


@pytest.fixture
async def client(assembly: Assembly, aiohttp_client: AiohttpClient) -> Client:
    app = build_app(assembly, repairs=build_repairs(assembly, RecordingControl()))
    app[READY].set()
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
    ],
    ids=["none", "wrong", "basic-scheme", "empty", "longer", "prefix"],
)
@pytest.mark.parametrize(
    "path",
    [
        "/api/whatsapp/accounts",
        "/api/whatsapp/accounts/sales/health",
        "/api/whatsapp/accounts/nobody/health",
        "/api/nothing-here",
    ],
)
async def test_api_without_a_valid_token_is_401(
    client: Client, path: str, headers: dict[str, str]
) -> None:
    response = await client.get(path, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "unauthorized"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_every_configured_token_works(client: Client) -> None:
    response = await client.get(
        "/api/whatsapp/accounts", headers={"Authorization": "Bearer second-token"}
    )
    assert response.status == 200


async def test_unknown_account_with_a_valid_token_is_404_without_echo(client: Client) -> None:
    response = await client.get("/api/whatsapp/accounts/12025550100/health", headers=AUTH)
    assert response.status == 404
    body = await response.json()
    assert body == {"error": "unknown account"}


async def test_unknown_path_and_wrong_method_are_json_errors(client: Client) -> None:
    missing = await client.get("/api/whatsapp/nope", headers=AUTH)
    assert (missing.status, await missing.json()) == (404, {"error": "not found"})
    wrong = await client.post("/api/whatsapp/accounts", headers=AUTH)
    assert (wrong.status, await wrong.json()) == (405, {"error": "method not allowed"})


async def test_health_object_value_by_value(
    client: Client, sidecar: Sidecar, clock: ReplayClock
) -> None:
    sidecar.handle("sales", build.connected(), T0)
    sidecar.handle("sales", build.message_event(build.text("hi")), T0 + 0.25)
    sidecar.handle("sales", build.message_event(build.history_sync_notification()), T0 + 100)
    clock.advance_to(T0 + 330.25)
    sidecar.evaluate_verdicts()  # the evidence, first seen: confirmed 30 s later
    clock.advance_to(T0 + 360.25)
    response = await client.get("/api/whatsapp/accounts/sales/health", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert list(body)[:8] == [
        "accountId",
        "status",
        "connected",
        "lastRealMessageMs",
        "timeSinceLastRealMs",
        "isDegraded",
        "warning",
        "reasons",
    ]
    assert body["accountId"] == "sales"
    assert body["status"] == "connected"
    assert body["connected"] is True
    assert body["lastRealMessageMs"] == 1_764_068_400_250
    assert body["timeSinceLastRealMs"] == 360_000
    assert body["isDegraded"] is True
    assert (
        body["warning"] == "No real messages received in last 5 minutes - session may be degraded"
    )
    assert body["reasons"] == ["silence_with_protocol_traffic"]
    assert body["messages"] == {"real": 1, "protocol": 1, "other": 0}
    assert body["lastProtocolMessageMs"] == 1_764_068_500_000


async def test_a_number_that_is_not_finite_never_reaches_a_json_body(
    client: Client, sidecar: Sidecar
) -> None:
    """JSON has no Infinity or NaN (a browser's JSON.parse refuses the whole body): the
    encoder refuses them, and the request fails as a bare JSON 500. The config lets none
    through (tests/test_config.py); here one is put in behind its back."""
    settings = sidecar.settings("sales")
    sidecar._settings["sales"] = replace(settings, silence_threshold_s=math.inf)
    for path in ("/api/whatsapp/accounts/sales/health", "/api/whatsapp/accounts"):
        response = await client.get(path, headers=AUTH)
        text = await response.text()
        assert "Infinity" not in text
        assert (response.status, strict_json(text)) == (500, {"error": "internal error"})
    sidecar._settings["sales"] = settings
    response = await client.get("/api/whatsapp/accounts/sales/health", headers=AUTH)
    assert strict_json(await response.text())["silenceThresholdSeconds"] == 300.0


def strict_json(text: str) -> Any:
    """``json.loads`` as a browser's ``JSON.parse``: no NaN, no Infinity."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


async def test_account_list_and_nulls_before_any_real_message(client: Client) -> None:
    response = await client.get("/api/whatsapp/accounts", headers=AUTH)
    accounts = (await response.json())["accounts"]
    assert [a["accountId"] for a in accounts] == ["sales", "support"]
    support = accounts[1]
    assert support["status"] == "connecting"
    assert support["connected"] is False
    assert support["lastRealMessageMs"] is None
    assert support["timeSinceLastRealMs"] is None
    assert support["isDegraded"] is False
    assert support["warning"] is None
    assert support["reasons"] == []
    assert support["silenceThresholdSeconds"] == 1800.0


async def test_liveness_and_readiness_need_no_token(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    cast(TestServer, client.server).app[READY].clear()
    not_ready = await client.get("/readyz")
    assert (not_ready.status, await not_ready.json()) == (503, {"error": "not ready"})


async def test_metrics_text_and_openmetrics(client: Client) -> None:
    plain = await client.get("/metrics")
    assert plain.status == 200
    assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'whatsapp_connection_state{account="sales",state="connecting"} 1.0' in await plain.text()
    om = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await om.text()
    assert text.rstrip().endswith("# EOF")
    assert "_created" not in text


async def test_scrape_of_a_thousand_accounts_has_every_account(
    make_config: ConfigFactory,
    make_assembly: AssemblyFactory,
    aiohttp_client: AiohttpClient,
) -> None:
    assembly = make_assembly(make_config([{"id": f"acct-{i:04d}"} for i in range(1000)]))
    for i in range(0, 1000, 7):
        assembly.sidecar.handle(f"acct-{i:04d}", build.message_event(build.text("x")), T0)
    client = await aiohttp_client(build_app(assembly))
    text = await (await client.get("/metrics")).text()
    states = [line for line in text.splitlines() if line.startswith("whatsapp_connection_state{")]
    assert len(states) == 1000 * 9
    assert text.count("whatsapp_last_real_message_timestamp_seconds{") == len(range(0, 1000, 7))


# -- the pair page's event streams: shared work, capped numbers --------------------------


def stream_config(make_config: ConfigFactory, total: int, per_principal: int) -> LoadedConfig:
    return make_config(
        [{"id": "sales"}],
        http={
            "listen": "127.0.0.1:0",
            "event_streams": {"total": total, "per_principal": per_principal},
        },
    )


async def first_event(response: ClientResponse) -> dict[str, Any]:
    line = b""
    while not line.startswith(b"data: "):
        line = await asyncio.wait_for(response.content.readline(), 10)
    return cast(dict[str, Any], json.loads(line[6:]))


async def test_pair_streams_cost_the_same_whatever_their_number(
    make_config: ConfigFactory,
    aiohttp_client: AiohttpClient,
    clock: ReplayClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every stream of an account reads one shared view: per poll interval the account is
    judged at most once and its QR drawn only when the code changes, and the spool (a
    GROUP BY under its lock) is never read, whether 1 or 12 streams are open."""
    monkeypatch.setattr(pages, "PAIR_EVENTS_POLL_S", 0.05)
    assembly = assemble(stream_config(make_config, 20, 20), clock)  # with its spool
    try:
        await count_stream_work(assembly, aiohttp_client, clock, monkeypatch)
    finally:
        assembly.close()
        assert assembly.storage is not None
        await assembly.storage.close()


async def count_stream_work(
    assembly: Assembly,
    aiohttp_client: AiohttpClient,
    clock: ReplayClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sidecar, storage = assembly.sidecar, assembly.storage
    assert storage is not None
    calls: Counter[str] = Counter()

    def counted(name: str, work: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            calls[name] += 1
            return work(*args)

        return call

    monkeypatch.setattr(sidecar, "pairing_view", counted("views", sidecar.pairing_view))
    monkeypatch.setattr(storage.spool, "backlog", counted("backlog", storage.spool.backlog))
    monkeypatch.setattr(segno, "make_qr", counted("qr drawn", segno.make_qr))
    for n in range(50):  # messages waiting in the spool
        sidecar.handle("sales", build.message_event(build.text("x"), message_id=f"M{n}"), T0)
    assert storage.spool.backlog()["sales"].messages == 50
    assert calls["backlog"] == 1  # counted, were anything to read it
    app = build_app(assembly, repairs=build_repairs(assembly, RecordingControl()))
    app[READY].set()
    client = await aiohttp_client(app)
    sidecar.handle("sales", build.qr_with_code("2@only-code,xyz"), clock.now())
    loop = asyncio.get_running_loop()
    for streams in (1, 12):
        responses = [
            await client.get("/api/whatsapp/accounts/sales/pair/events", headers=AUTH)
            for _ in range(streams)
        ]
        for response in responses:
            assert (await first_event(response))["status"] == "qr_pending"
        calls.clear()
        started = loop.time()
        await asyncio.sleep(20 * 0.05)  # about 20 ticks of every stream
        polls = (loop.time() - started) / 0.05
        assert 1 <= calls["views"] <= polls + 2, (streams, calls)
        assert (calls["qr drawn"], calls["backlog"]) == (0, 0), (streams, calls)
        for response in responses:
            response.close()


async def test_pair_streams_are_capped_per_principal_and_in_all(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, aiohttp_client: AiohttpClient
) -> None:
    assembly = make_assembly(stream_config(make_config, 3, 2))
    app = build_app(assembly, repairs=build_repairs(assembly, RecordingControl()))
    app[READY].set()
    client = await aiohttp_client(app)
    path = "/api/whatsapp/accounts/sales/pair/events"
    second = {"Authorization": "Bearer second-token"}

    async def opened(headers: dict[str, str]) -> ClientResponse:
        response = await client.get(path, headers=headers)
        assert response.status == 200
        await first_event(response)
        return response

    async def refused(headers: dict[str, str]) -> None:
        response = await client.get(path, headers=headers)
        assert response.status == 429  # before the body: a stream's never ends
        assert await response.json() == {"error": "too many event streams"}

    mine = [await opened(AUTH), await opened(AUTH)]
    await refused(AUTH)  # this token's two
    theirs = await opened(second)
    await refused(second)  # three in all
    mine[0].close()  # the page went away: its slot is free again
    deadline = asyncio.get_running_loop().time() + 10
    while (again := await client.get(path, headers=AUTH)).status != 200:
        assert again.status == 429
        assert asyncio.get_running_loop().time() < deadline, "the closed stream kept its slot"
        await asyncio.sleep(0.1)
    for response in (mine[1], theirs, again):
        response.close()


async def test_health_requests_share_one_read_of_the_spool_a_second(
    make_config: ConfigFactory,
    aiohttp_client: AiohttpClient,
    clock: ReplayClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read of the spool's backlog is a GROUP BY under its lock, which holds up the
    event path: however many health requests come, it is read at most once a second."""
    assembly = assemble(make_config([{"id": "sales"}, {"id": "support"}]), clock)
    storage = assembly.storage
    assert storage is not None
    try:
        now = [100.0]
        monkeypatch.setattr(storage, "monotonic", lambda: now[0])
        reads = [0]
        backlog = storage.spool.backlog

        def read() -> Any:
            reads[0] += 1
            return backlog()

        monkeypatch.setattr(storage.spool, "backlog", read)
        for n in range(3):
            assembly.sidecar.handle(
                "sales", build.message_event(build.text("x"), message_id=f"M{n}"), T0
            )
        client = await aiohttp_client(build_app(assembly))

        async def sales_backlog(path: str) -> int:
            body = await (await client.get(path, headers=AUTH)).json()
            health = body["accounts"][0] if "accounts" in body else body
            return int(health["store"]["backlog"])

        paths = ["/api/whatsapp/accounts", "/api/whatsapp/accounts/sales/health"] * 15
        assert await asyncio.gather(*map(sales_backlog, paths)) == [3] * 30
        assert reads == [1]
        assembly.sidecar.handle("sales", build.message_event(build.text("x"), message_id="M3"), T0)
        assert await sales_backlog(paths[1]) == 3  # at most a second old
        now[0] += 1.0
        assert await sales_backlog(paths[0]) == 4
        assert reads == [2]
    finally:
        assembly.close()
        await storage.close()
