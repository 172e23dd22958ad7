"""HTTP abuse, against a real server on a real socket: every endpoint with wrong methods,
malformed and oversized bodies, slow clients, path tricks in account ids, token guessing
and cross-origin requests. Requests are written byte by byte as a hostile client would,
so nothing (no client library) tidies them up first."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import hmac
import json
import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict
from pydantic import SecretStr

from sidecar import testing as build
from sidecar.adapters.auth import Authenticator, Principal, StaticTokens
from sidecar.adapters.http import (
    INGEST_BODY_BYTES,
    NO_BODY_BYTES,
    PAIR_CODE_BODY_BYTES,
    READY,
    SEND_BODY_BYTES,
    WEBHOOK_BODY_BYTES,
    HardenedAppRunner,
    HttpLimits,
)
from sidecar.adapters.ratelimit import FailureLimiter, client_key
from sidecar.compose import Assembly, build_app, build_repairs
from sidecar.core.repair import RecordingControl
from sidecar.core.service import Sidecar

from .support.clock import SettableClock
from .support.config import TOKEN, AssemblyFactory, ConfigFactory

PHONE = "+12025550100"
#: Short enough for a quick test, long enough that no honest local request comes near.
LIMITS = HttpLimits(header_timeout=1.0, body_timeout=1.0, write_timeout=1.0, lingering=0.2)
OTHER_ADDRESS = "127.0.0.2"  # Linux answers for all of 127/8: a second client address


# -- a raw HTTP client -----------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    if "Content-Length" in headers:
        body = body[: int(headers["Content-Length"])]
    return Reply(int(lines[0].split()[1]), headers, body, raw)


def request(
    method: str,
    target: str | bytes,
    *,
    token: str | None = None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    length: int | None = None,
) -> bytes:
    """One request, ``Connection: close``; ``length`` declares a Content-Length other
    than the body's own (a body the client never sends, say)."""
    target_bytes = target if isinstance(target, bytes) else target.encode("ascii")
    lines = [method.encode() + b" " + target_bytes + b" HTTP/1.1", b"Host: sidecar"]
    all_headers = {"Connection": "close", **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    if (body or length is not None) and "Transfer-Encoding" not in all_headers:
        all_headers.setdefault("Content-Length", str(len(body) if length is None else length))
    lines += [f"{k}: {v}".encode("latin-1") for k, v in all_headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def connect(
    port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def exchange(
    port: int, data: bytes, *, source: str = "127.0.0.1", timeout: float = 5.0
) -> Reply:
    reader, writer = await connect(port, source)
    try:
        writer.write(data)
        raw = await read_to_close(reader, timeout)  # Connection: close
    finally:
        writer.close()
    return parse(raw)


async def read_to_close(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything until the server closes; a reset (the server dropped a client that was
    still sending) ends it too, keeping what had arrived."""
    received = bytearray()
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


def assert_error(reply: Reply, status: int, message: str, *never: str) -> None:
    """A JSON error in the contract's shape, carrying nothing the client sent or a secret."""
    assert reply.status == status, reply.raw[:400]
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == {"error": message}
    for word in (TOKEN, "second-token", "Traceback", 'File "', *never):
        assert word.encode() not in reply.raw, word


def assert_no_cors(reply: Reply) -> None:
    assert not [h for h in reply.headers if h.lower().startswith("access-control-")]


# -- the server ------------------------------------------------------------------------


class Harness:
    def __init__(self, assembly: Assembly, control: RecordingControl) -> None:
        self.assembly = assembly
        self.control = control
        self.runner: HardenedAppRunner | None = None
        self.port = 0

    @property
    def connections(self) -> int:
        assert self.runner is not None
        assert self.runner.server is not None
        return len(self.runner.server.connections)

    def audit_lines(self) -> list[str]:
        path = self.assembly.state_dir / "audit.log"
        return path.read_text().splitlines() if path.exists() else []

    async def wait_for_no_connections(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert self.connections == 0


Serve = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve the app on a free port of 127.0.0.1 with :class:`HardenedAppRunner`, the
    runner it is meant to be served with."""
    runners: list[HardenedAppRunner] = []

    async def start(
        assembly: Assembly,
        *,
        control: RecordingControl | None = None,
        auth: Authenticator | None = None,
        limiter: FailureLimiter | None = None,
    ) -> Harness:
        harness = Harness(assembly, control or RecordingControl())
        app = build_app(
            assembly,
            auth=auth,
            repairs=build_repairs(assembly, harness.control),
            limits=LIMITS,
            limiter=limiter,
        )
        runner = HardenedAppRunner(app, access_log=None, shutdown_timeout=1.0)
        runners.append(runner)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        app[READY].set()
        harness.runner = runner
        harness.port = runner.addresses[0][1]
        return harness

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def server(assembly: Assembly, serve: Serve) -> Harness:
    return await serve(assembly)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    token: bool
    limit: int  # the largest body it takes

    @property
    def allow(self) -> str:
        return "GET,HEAD" if self.method == "GET" else self.method

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    Endpoint("GET", "/metrics", False, NO_BODY_BYTES),
    Endpoint("GET", "/healthz", False, NO_BODY_BYTES),
    Endpoint("GET", "/readyz", False, NO_BODY_BYTES),
    Endpoint("GET", "/api/whatsapp/accounts", True, NO_BODY_BYTES),
    Endpoint("GET", "/api/whatsapp/accounts/sales/health", True, NO_BODY_BYTES),
    Endpoint("POST", "/api/whatsapp/regenerate-qr/sales", True, NO_BODY_BYTES),
    Endpoint("POST", "/api/whatsapp/accounts/sales/pair-code", True, PAIR_CODE_BODY_BYTES),
    Endpoint("GET", "/api/whatsapp/accounts/sales/pair/events", True, NO_BODY_BYTES),
    Endpoint("POST", "/api/alertmanager/webhook", True, WEBHOOK_BODY_BYTES),
    Endpoint("POST", "/api/whatsapp/send-message", True, SEND_BODY_BYTES),
    Endpoint("POST", "/api/ingest/baileys/sales", True, INGEST_BODY_BYTES),
    Endpoint("GET", "/", False, NO_BODY_BYTES),
    Endpoint("GET", "/static/common.js", False, NO_BODY_BYTES),
    Endpoint("GET", "/static/style.css", False, NO_BODY_BYTES),
    Endpoint("GET", "/accounts/sales/pair", False, NO_BODY_BYTES),
    Endpoint("GET", "/runbook", False, NO_BODY_BYTES),
]
BY_NAME = {str(e): e for e in ENDPOINTS}
JSON_ENDPOINTS = [
    BY_NAME["POST /api/whatsapp/accounts/sales/pair-code"],
    BY_NAME["POST /api/alertmanager/webhook"],
    BY_NAME["POST /api/whatsapp/send-message"],
    BY_NAME["POST /api/ingest/baileys/sales"],
]
STREAM = BY_NAME["GET /api/whatsapp/accounts/sales/pair/events"]


def token_for(endpoint: Endpoint) -> str | None:
    return TOKEN if endpoint.token else None


def test_every_route_is_on_the_list(assembly: Assembly) -> None:
    """A new endpoint must join ENDPOINTS, and with it every test below."""
    app = build_app(
        assembly,
        auth=Authenticator(StaticTokens(())),
        repairs=build_repairs(assembly, RecordingControl()),
    )
    routes = {
        (
            route.method,
            route.resource.canonical.replace("{account_id}", "sales").replace(
                "{format}", "baileys"
            ),
        )
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert routes == {(e.method, e.path) for e in ENDPOINTS}


# -- methods ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
async def test_wrong_methods_are_405_json_with_allow(server: Harness, endpoint: Endpoint) -> None:
    wrong = ["DELETE", "PATCH", "POST"] if endpoint.method == "GET" else ["GET", "PUT", "DELETE"]
    for method in wrong:
        reply = await exchange(
            server.port, request(method, endpoint.path, token=token_for(endpoint))
        )
        assert_error(reply, 405, "method not allowed")
        assert reply.headers["Allow"] == endpoint.allow
    if endpoint.token:  # the token is checked before anything else, the method included
        reply = await exchange(server.port, request(wrong[0], endpoint.path))
        assert_error(reply, 401, "unauthorized")
    assert server.control.requests == []


# -- bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not json"),
        (b"", "body is not json"),
        (b"\xff\xfe{\x00}\x00", "body is not json"),  # UTF-16
        (b"\xef\xbb\xbf{}", "body is not json"),  # a byte-order mark
        (b"\xc0\xaf", "body is not json"),  # an overlong UTF-8 '/'
        (b"[" * 1000, "body is not json"),  # deep nesting
        (b'["+12025550100"]', "body must be a json object"),
        (b"null", "body must be a json object"),
        (b"12025550100", "body must be a json object"),
    ],
    ids=["broken", "empty", "utf16", "bom", "overlong", "nested", "array", "null", "number"],
)
@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=str)
async def test_malformed_json_bodies_are_400(
    server: Harness, endpoint: Endpoint, body: bytes, message: str
) -> None:
    reply = await exchange(
        server.port,
        request(
            "POST",
            endpoint.path,
            token=TOKEN,
            body=body,
            headers={"Content-Type": "application/json"},
        ),
    )
    assert_error(reply, 400, message, PHONE)
    assert server.control.requests == []


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"alerts": "WhatsappSessionDegraded"},
        {"alerts": [1]},
        {"alerts": [None]},
        {"alerts": [{"labels": "sales"}]},
        {"alerts": [{"labels": ["sales"]}]},
    ],
    ids=["no-alerts", "alerts-text", "alert-number", "alert-null", "labels-text", "labels-list"],
)
async def test_webhook_json_of_the_wrong_shape_is_400(
    server: Harness, payload: dict[str, Any]
) -> None:
    reply = await exchange(
        server.port,
        request(
            "POST", "/api/alertmanager/webhook", token=TOKEN, body=json.dumps(payload).encode()
        ),
    )
    assert_error(reply, 400, "expected Alertmanager's webhook JSON", "sales")
    assert server.control.requests == []


async def test_webhook_alerts_with_odd_labels_are_skipped(server: Harness) -> None:
    alerts = [
        {"status": "firing", "labels": {"alertname": "WhatsappSessionDegraded", "account": a}}
        for a in (["sales"], {"id": "sales"}, 7, None, "../sales", "SALES")
    ]
    reply = await exchange(
        server.port,
        request(
            "POST",
            "/api/alertmanager/webhook",
            token=TOKEN,
            body=json.dumps({"alerts": alerts}).encode(),
        ),
    )
    assert (reply.status, reply.json()) == (200, {"started": [], "skipped": []})
    await asyncio.sleep(0.05)
    assert server.control.requests == []


async def test_a_bogus_charset_is_ignored_json_is_utf8(server: Harness) -> None:
    bogus = {"Content-Type": "application/json; charset=no-such-charset"}
    pair_code = await exchange(
        server.port,
        request(
            "POST",
            "/api/whatsapp/accounts/sales/pair-code",
            token=TOKEN,
            body=json.dumps({"phone": PHONE}).encode(),
            headers=bogus,
        ),
    )
    assert pair_code.status == 503  # read, understood, and refused for want of a live session
    assert server.control.requests == [("pair_code", "sales")]
    webhook = await exchange(
        server.port,
        request(
            "POST", "/api/alertmanager/webhook", token=TOKEN, body=b'{"alerts": []}', headers=bogus
        ),
    )
    assert (webhook.status, webhook.json()) == (200, {"started": [], "skipped": []})


async def test_deep_nesting_and_huge_numbers_in_a_large_webhook_are_400(server: Harness) -> None:
    for body in (b"[" * 500_000, b"{" * 500_000, b"7" * 500_000):
        reply = await exchange(
            server.port, request("POST", "/api/alertmanager/webhook", token=TOKEN, body=body)
        )
        assert_error(reply, 400, "body is not json")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
async def test_oversized_bodies_are_413_on_the_declared_length_before_any_is_read(
    server: Harness, endpoint: Endpoint
) -> None:
    reader, writer = await connect(server.port)
    started = time.monotonic()
    # headers only: the server must answer without waiting for a body that never comes
    writer.write(
        request(
            endpoint.method, endpoint.path, token=token_for(endpoint), length=endpoint.limit + 1
        )
    )
    raw = await read_to_close(reader, 5.0)
    writer.close()
    assert time.monotonic() - started < LIMITS.body_timeout  # not the body timeout
    assert_error(parse(raw), 413, "request body too large")
    assert server.control.requests == []


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e is not STREAM], ids=str)
async def test_chunked_bodies_are_counted_as_they_come(server: Harness, endpoint: Endpoint) -> None:
    chunk = b"x" * 512
    size = endpoint.limit + len(chunk)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(size // len(chunk)))
    reply = await exchange(
        server.port,
        request(
            endpoint.method,
            endpoint.path,
            token=token_for(endpoint),
            body=body + b"0\r\n\r\n",
            headers={"Transfer-Encoding": "chunked"},
        ),
    )
    if endpoint in JSON_ENDPOINTS:
        assert_error(reply, 413, "request body too large")
    else:  # a body it does not take is not read at all: the answer is the usual one
        assert reply.status in {200, 202}, reply.raw[:300]
    assert server.control.requests in ([], [("start_pairing", "sales")])


async def test_bodies_up_to_each_limit_are_accepted(server: Harness) -> None:
    phone = json.dumps({"phone": PHONE, "pad": ""}).encode()
    pad = b" " * (PAIR_CODE_BODY_BYTES - len(phone))
    pair_code = await exchange(
        server.port,
        request(
            "POST",
            "/api/whatsapp/accounts/sales/pair-code",
            token=TOKEN,
            body=phone[:-1] + pad + b"}",
        ),
    )
    assert len(phone[:-1] + pad + b"}") == PAIR_CODE_BODY_BYTES
    assert_error(
        pair_code,
        503,
        "no live WhatsApp session to pair with (this sidecar replays a capture)",
        PHONE,
    )
    alerts = json.dumps({"alerts": []}).encode()
    webhook_body = alerts[:-1] + b" " * (WEBHOOK_BODY_BYTES - len(alerts)) + b"}"
    assert len(webhook_body) == WEBHOOK_BODY_BYTES
    webhook = await exchange(
        server.port, request("POST", "/api/alertmanager/webhook", token=TOKEN, body=webhook_body)
    )
    assert (webhook.status, webhook.json()) == (200, {"started": [], "skipped": []})
    stray = await exchange(
        server.port, request("POST", "/api/whatsapp/regenerate-qr/sales", token=TOKEN, body=b"{}")
    )
    assert (stray.status, stray.json()) == (202, {"accountId": "sales", "status": "pairing"})


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_compressed_bodies_are_refused(server: Harness, encoding: str) -> None:
    bomb = gzip.compress(b" " * 10_000_000)  # 10 MB of spaces in ~10 KB
    reply = await exchange(
        server.port,
        request(
            "POST",
            "/api/alertmanager/webhook",
            token=TOKEN,
            body=bomb,
            headers={"Content-Encoding": encoding},
        ),
    )
    assert_error(reply, 415, "compressed request bodies are not accepted")


async def test_100_continue_only_once_the_token_and_the_size_are_good(server: Harness) -> None:
    body = b'{"alerts": []}'
    expect = {"Expect": "100-continue"}

    async def ask(
        token: str | None, length: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        reader, writer = await connect(server.port)
        writer.write(
            request("POST", "/api/alertmanager/webhook", token=token, headers=expect, length=length)
        )
        with contextlib.suppress(TimeoutError):
            return reader, writer, await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.5)
        return reader, writer, b""

    reader, writer, interim = await ask(TOKEN, len(body))
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    reply = parse(await read_to_close(reader, 5.0))
    writer.close()
    assert (reply.status, reply.json()) == (200, {"started": [], "skipped": []})
    for token, length, status in ((None, len(body), 401), (TOKEN, WEBHOOK_BODY_BYTES + 1, 413)):
        reader, writer, first = await ask(token, length)
        assert not first.startswith(b"HTTP/1.1 100"), first  # refused without inviting the body
        assert parse(first + await read_to_close(reader, 5.0)).status == status
        writer.close()
    for path in ("/api/alertmanager/webhook", "/nothing-here"):  # other expectations: ignored
        odd = await exchange(
            server.port,
            request("POST", path, token=TOKEN, body=body, headers={"Expect": "the-unexpected"}),
        )
        assert odd.status in {200, 404}
        assert b"the-unexpected" not in odd.raw
        assert odd.headers["Content-Type"].startswith("application/json")


# -- slow clients ----------------------------------------------------------------------


async def test_clients_trickling_headers_are_cut_off_without_holding_up_others(
    server: Harness,
) -> None:
    async def trickle(endpoint: Endpoint) -> tuple[float, bytes]:
        reader, writer = await connect(server.port)
        started = time.monotonic()
        writer.write(f"{endpoint.method} {endpoint.path} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())

        async def drip() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(b"a")
                    await writer.drain()
                    await asyncio.sleep(0.1)

        dripping = asyncio.create_task(drip())
        received = await read_to_close(reader, 5.0)
        dripping.cancel()
        writer.close()
        return time.monotonic() - started, received

    async def idle() -> tuple[float, bytes]:  # connects and sends nothing at all
        reader, writer = await connect(server.port)
        started = time.monotonic()
        received = await read_to_close(reader, 5.0)
        writer.close()
        return time.monotonic() - started, received

    async def honest_requests() -> list[float]:
        await asyncio.sleep(0.3)  # while every slow client is connected
        took = []
        for endpoint in (BY_NAME["GET /healthz"], BY_NAME["GET /api/whatsapp/accounts"]):
            started = time.monotonic()
            reply = await exchange(server.port, request("GET", endpoint.path, token=TOKEN))
            assert reply.status == 200
            took.append(time.monotonic() - started)
        return took

    slow = asyncio.gather(
        *[trickle(e) for e in ENDPOINTS for _ in range(3)], *[idle() for _ in range(10)]
    )
    took = await honest_requests()
    cut = await slow
    assert max(took) < 0.5
    for elapsed, received in cut:
        assert received == b""  # dropped, not answered
        assert LIMITS.header_timeout - 0.1 <= elapsed < LIMITS.header_timeout + 1.0
    await server.wait_for_no_connections(1.0)


async def test_clients_trickling_a_body_get_408_and_are_dropped(server: Harness) -> None:
    async def trickle(endpoint: Endpoint) -> tuple[float, bytes]:
        reader, writer = await connect(server.port)
        started = time.monotonic()
        writer.write(request(endpoint.method, endpoint.path, token=token_for(endpoint), length=200))

        async def drip() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(200):
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.1)

        dripping = asyncio.create_task(drip())
        received = await read_to_close(reader, 5.0)
        dripping.cancel()
        writer.close()
        return time.monotonic() - started, received

    async def honest() -> float:
        await asyncio.sleep(0.3)
        started = time.monotonic()
        reply = await exchange(server.port, request("GET", "/healthz"))
        assert reply.status == 200
        return time.monotonic() - started

    endpoints = [e for e in ENDPOINTS if e is not STREAM]
    slow = asyncio.gather(*(trickle(e) for e in endpoints))
    took = await honest()
    results = await slow
    assert took < 0.5
    for endpoint, (elapsed, received) in zip(endpoints, results, strict=True):
        reply = parse(received)
        if endpoint in JSON_ENDPOINTS:
            assert_error(reply, 408, "request body too slow")
            assert elapsed < LIMITS.body_timeout + LIMITS.lingering + 1.0
        else:  # answered at once; the unread body is dropped with the connection soon after
            assert reply.status in {200, 202}, (endpoint, received[:200])
            assert elapsed < LIMITS.lingering + 1.0
    await server.wait_for_no_connections(1.0)


async def test_a_client_that_does_not_read_its_response_is_dropped(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, serve: Serve
) -> None:
    # 5,000 accounts: ~8 MB of metrics, more than the kernel's socket buffers hold
    many = make_assembly(make_config([{"id": f"acct-{i:04d}"} for i in range(5000)]))
    server = await serve(many)
    loop = asyncio.get_running_loop()
    sockets = []
    for _ in range(3):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        await loop.sock_sendall(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        sockets.append(sock)
    await asyncio.sleep(0.5)
    assert server.connections == 3  # rendering and sending, stuck on clients that do not read
    healthz = await exchange(server.port, request("GET", "/healthz"), timeout=1.0)
    assert healthz.status == 200
    await server.wait_for_no_connections(LIMITS.write_timeout + 3.0)
    for sock in sockets:
        sock.close()


# -- account ids -----------------------------------------------------------------------

#: Each one aimed at `sales` (or, through it, at `support`); none may reach either.
ID_TRICKS = {
    "dotdot": "..",
    "encoded-dotdot": "%2e%2e",
    "encoded-slash-to-other": "sales%2F..%2Fsupport",
    "encoded-slash": "sales%2F",
    "traversal-to-other": "%2e%2e%2Fsupport",
    "double-encoded": "%2573ales",
    "double-encoded-dotdot": "%252e%252e%252fsupport",
    "nul": "sales%00",
    "newline": "sales%0A",
    "space": "sales%20",
    "dot": "sales.",
    "upper": "SALES",
    "cyrillic-a": "s%D0%B0les",  # s, CYRILLIC SMALL LETTER A (U+0430), les
    "cyrillic-dze": "%D1%95ales",  # CYRILLIC SMALL LETTER DZE (U+0455), ales
    "fullwidth": "%EF%BD%93%EF%BD%81%EF%BD%8C%EF%BD%85%EF%BD%93",  # "sales" in FULLWIDTH LATIN letters
    "long": "s" * 5000,
    "phone": "12025550100",
    "backslash": "..%5Csupport",
}
ACCOUNT_ROUTES = [
    ("GET", "/api/whatsapp/accounts/{}/health"),
    ("POST", "/api/whatsapp/regenerate-qr/{}"),
    ("POST", "/api/whatsapp/accounts/{}/pair-code"),
    ("GET", "/api/whatsapp/accounts/{}/pair/events"),
]


@pytest.mark.parametrize(("method", "route"), ACCOUNT_ROUTES, ids=[r for _, r in ACCOUNT_ROUTES])
async def test_tricky_account_ids_reach_no_account_and_are_not_echoed(
    server: Harness, method: str, route: str
) -> None:
    body = json.dumps({"phone": PHONE}).encode() if route.endswith("pair-code") else b""
    for name, trick in ID_TRICKS.items():
        reply = await exchange(
            server.port, request(method, route.format(trick), token=TOKEN, body=body)
        )
        assert reply.status == 404, (name, reply.raw[:300])
        assert reply.json()["error"] in {"unknown account", "not found"}, name
        assert_error(reply, 404, reply.json()["error"], trick, trick.lower(), "sales", "support")
    assert server.control.requests == []
    assert server.audit_lines() == []
    # and the honest spellings, percent-encoding of plain letters included, do reach it
    for spelling in ("sales", "%73ales"):
        reply = await exchange(
            server.port, request("GET", f"/api/whatsapp/accounts/{spelling}/health", token=TOKEN)
        )
        assert (reply.status, reply.json()["accountId"]) == (200, "sales")


async def test_ids_that_are_not_http_are_refused_in_json_without_echo_or_logging(
    server: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    targets = [
        "/api/whatsapp/accounts/s\u0430les/health".encode(),  # raw UTF-8 in the request line
        "/api/whatsapp/accounts/\uff53ales/health".encode(),
        b"/api/whatsapp/accounts/sa\x00les/health",
        b"/api/whatsapp/accounts/sales\r/health",
        b"/api/whatsapp/accounts/" + PHONE.encode() * 800 + b"/health",  # past the line limit
    ]
    for target in targets:
        reply = await exchange(server.port, request("GET", target, token=TOKEN))
        assert_error(reply, 400, "bad request", PHONE, "whatsapp/accounts", "les/health")
    bad_header = await exchange(
        server.port,
        request("GET", "/healthz", headers={"X-Phone": PHONE * 1000}),  # a header too long
    )
    assert_error(bad_header, 400, "bad request", PHONE)
    smuggled = await exchange(  # both lengths: which one ends the request?
        server.port,
        request(
            "POST",
            "/api/whatsapp/regenerate-qr/sales",
            token=TOKEN,
            body=b"0\r\n\r\nPOST /api/whatsapp/regenerate-qr/support HTTP/1.1\r\n\r\n",
            headers={"Transfer-Encoding": "chunked", "Content-Length": "5"},
        ),
    )
    assert_error(smuggled, 400, "bad request")
    assert server.control.requests == []
    bad_token = await exchange(
        server.port, request("GET", "/api/whatsapp/accounts", token=TOKEN + "x" * 9000)
    )
    assert_error(bad_token, 400, "bad request", TOKEN)
    for secret in (PHONE, TOKEN, "\u0430", "whatsapp/accounts"):
        assert secret not in caplog.text, secret
    assert "not valid HTTP" in caplog.text
    assert "Traceback" not in caplog.text


async def test_the_pair_page_serves_any_well_formed_id_and_nothing_else(server: Harness) -> None:
    page = await exchange(server.port, request("GET", "/accounts/sales/pair"))
    unknown = await exchange(server.port, request("GET", "/accounts/nobody/pair"))
    assert page.status == unknown.status == 200
    assert page.body == unknown.body  # unauthenticated: it tells nobody which accounts exist
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    for name, trick in ID_TRICKS.items():
        if name == "phone":
            continue  # a well-formed id gets the page, which asks the API (with a token)
        reply = await exchange(server.port, request("GET", f"/accounts/{trick}/pair"))
        assert_error(reply, 404, "not found", trick)


@pytest.mark.parametrize(
    "path",
    [
        "//api/whatsapp/accounts",
        "/./api/whatsapp/accounts",
        "/x/../api/whatsapp/accounts",
        "/static/../api/whatsapp/accounts",
        "/%61pi/whatsapp/accounts",
        "/api%2Fwhatsapp/accounts",
        "/API/whatsapp/accounts",
        "/api/whatsapp//accounts",
        "/api/whatsapp/accounts/",
        "/api/whatsapp/accounts;x",
        "/api/whatsapp/accounts?token=" + TOKEN,
    ],
)
async def test_no_spelling_of_an_api_path_skips_the_token(server: Harness, path: str) -> None:
    reply = await exchange(server.port, request("GET", path))
    assert reply.status in {401, 404}, reply.raw[:300]
    assert b"accountId" not in reply.body
    assert_error(reply, reply.status, reply.json()["error"], "sales")


# -- token guessing --------------------------------------------------------------------


class CountingAuthenticator(Authenticator):
    def __init__(self, tokens: tuple[SecretStr, ...]) -> None:
        super().__init__(StaticTokens(tokens))
        self.calls = 0

    async def authenticate(self, header: str | None, *, limited: bool = False) -> Principal | None:
        if not limited:  # counts the full checks: a limited one accepts only strong tokens
            self.calls += 1
        return await super().authenticate(header, limited=limited)


async def test_failed_tokens_are_rate_limited_per_address(assembly: Assembly, serve: Serve) -> None:
    clock = SettableClock()
    auth = CountingAuthenticator(assembly.loaded.tokens)
    server = await serve(assembly, auth=auth, limiter=FailureLimiter(3, 60, clock=clock))
    accounts = "/api/whatsapp/accounts"

    async def get(token: str | None, source: str = "127.0.0.1", path: str = accounts) -> Reply:
        return await exchange(server.port, request("GET", path, token=token), source=source)

    for _ in range(20):  # requests without any token are not guesses
        assert_error(await get(None), 401, "unauthorized")
    for _ in range(10):  # nor are requests with a valid one
        assert (await get(TOKEN)).status == 200
    for guess in ("guess-1", "guess-2", "guess-3"):
        assert_error(await get(guess), 401, "unauthorized", guess)
    calls = auth.calls
    for token in ("guess-4", TOKEN, None):  # this address now waits, whatever it sends
        limited = await get(token)
        assert_error(limited, 429, "too many failed attempts", "guess-4")
        assert limited.headers["Retry-After"] == "20"  # 3 per 60 s: one more try every 20 s
    refused_paths = ["/api/whatsapp/accounts/sales/health", "/api/nothing-here"]
    for path in refused_paths:
        assert (await get(TOKEN, path=path)).status == 429
    # nothing was checked in full: a guess while waiting learns nothing (TOKEN, shorter
    # than 32 characters, counts as guessable: it waits with its address)
    assert auth.calls == calls
    # another address is not affected, neither with a valid token nor with a wrong one
    assert (await get(TOKEN, OTHER_ADDRESS)).status == 200
    assert_error(await get("guess-5", OTHER_ADDRESS), 401, "unauthorized")
    # unauthenticated endpoints stay open to the waiting address
    assert (await get(None, path="/healthz")).status == 200
    clock.now += 15
    assert (await get(TOKEN)).headers["Retry-After"] == "5"
    clock.now += 5
    assert (await get(TOKEN)).status == 200
    assert_error(await get("guess-6"), 401, "unauthorized")
    assert (await get("guess-7")).status == 429
    metrics = (await get(None, path="/metrics")).body.decode()
    assert "whatsapp_http_auth_failures_total 5.0" in metrics  # guesses 1-3, 5 and 6
    assert 'whatsapp_http_auth_rate_limited_total{budget="address"} 7.0' in metrics
    assert 'whatsapp_http_auth_rate_limited_total{budget="global"} 0.0' in metrics
    # no client's address: the one 127.0.0.1 is the sidecar's own link (links_info)
    assert [line for line in metrics.splitlines() if "127.0.0" in line] == [
        line for line in metrics.splitlines() if line.startswith("whatsapp_sidecar_links_info{")
    ]


async def test_an_open_event_stream_outlives_a_brute_force_from_its_address(
    assembly: Assembly, sidecar: Sidecar, serve: Serve
) -> None:
    server = await serve(assembly, limiter=FailureLimiter(2, 60, clock=SettableClock()))
    reader, writer = await connect(server.port)
    writer.write(
        b"GET /api/whatsapp/accounts/sales/pair/events HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )

    async def next_view() -> dict[str, Any]:
        line = b""
        while not line.startswith(b"data: "):
            line = await asyncio.wait_for(reader.readline(), 5)
        return dict(json.loads(line[6:]))

    assert (await next_view())["status"] == "connecting"
    for guess in ("a", "b", "c", "d"):
        await exchange(server.port, request("GET", "/api/whatsapp/accounts", token=guess))
    assert (await exchange(server.port, request("GET", "/api/whatsapp/accounts"))).status == 429
    sidecar.handle("sales", build.qr_with_code("2@code,for-the-test"), sidecar.clock.now())
    view = await next_view()
    assert view["status"] == "qr_pending"
    assert view["qrSvg"].startswith("<svg")
    writer.close()


async def test_the_limit_comes_from_the_config(
    make_config: ConfigFactory,
    make_assembly: AssemblyFactory,
    tokens_file: Any,
    serve: Serve,
) -> None:
    limited = make_assembly(
        make_config(
            auth={"tokens_file": str(tokens_file), "rate_limit": {"failures": 2, "window": "1m"}}
        )
    )
    server = await serve(limited)
    replies = [
        await exchange(server.port, request("GET", "/api/whatsapp/accounts", token=f"guess-{i}"))
        for i in range(3)
    ]
    assert [r.status for r in replies] == [401, 401, 429]
    assert replies[2].headers["Retry-After"] == "30"


def test_the_limiter_refills_forgets_and_stays_bounded() -> None:
    clock = SettableClock()
    limiter = FailureLimiter(3, 60, clock=clock)
    assert limiter.retry_after("a") == 0.0
    for _ in range(3):
        limiter.settle(limiter.attempt("a"), accepted=False)
    assert limiter.retry_after("a") == pytest.approx(20.0)
    refused = limiter.attempt("a")
    assert refused.budget == "address"
    assert refused.wait == pytest.approx(20.0)
    limiter.settle(refused, accepted=False)
    assert limiter.refused == {"address": 1}
    clock.now += 5
    assert limiter.retry_after("a") == pytest.approx(15.0)
    clock.now += 15
    assert limiter.retry_after("a") == 0.0
    good = limiter.attempt("a")  # paid for before the check...
    assert limiter.retry_after("a") == pytest.approx(20.0)
    limiter.settle(good, accepted=True)  # ...and given back: a good token costs nothing
    assert limiter.retry_after("a") == 0.0
    limiter.settle(limiter.attempt("a"), accepted=False)  # one try earned, one used
    assert limiter.retry_after("a") == pytest.approx(20.0)
    assert limiter.failed == 4
    clock.now += 60  # a whole window without failures: "a" is forgotten at the next count
    limiter.settle(limiter.attempt("b"), accepted=False)
    assert len(limiter) == 1
    assert limiter.retry_after("a") == 0.0
    clock.now += 59  # "b" has not refilled: it is remembered, however many others come
    for key in ("c", "d", "e"):
        limiter.settle(limiter.attempt(key), accepted=False)
    assert len(limiter) == 4
    with pytest.raises(ValueError, match="positive"):
        FailureLimiter(0, 60)
    for window in (0.0, math.inf, math.nan):  # infinity made every refusal divide by zero
        with pytest.raises(ValueError, match="positive and finite"):
            FailureLimiter(10, window)


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        (None, "unknown"),
        ("/run/wa.sock", "/run/wa.sock"),
    ],
)
def test_clients_are_keyed_by_address_and_ipv6_by_64(remote: str | None, key: str) -> None:
    assert client_key(remote) == key


def test_static_tokens_compare_fixed_length_digests_with_every_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module auth.py calls into
    tokens = StaticTokens([SecretStr("short"), SecretStr("x" * 100), SecretStr(TOKEN)])
    for candidate in ("", "s", "short", "x" * 100, "y" * 10_000, TOKEN):
        compared.clear()
        tokens.match(candidate)
        assert compared == [(32, 32)] * 3  # each token, whatever matched, whatever the length
    principal = tokens.match(TOKEN)
    assert principal is not None
    assert principal.id == "token:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    assert tokens.match(TOKEN + " ") is None
    assert tokens.match("short\x00") is None


# -- errors, cross-origin requests -----------------------------------------------------


class FailingControl(RecordingControl):
    async def start_pairing(self, account_id: str) -> None:
        raise RuntimeError(f"device store for {PHONE}@s.whatsapp.net is locked: 'hello there'")


async def test_an_unexpected_failure_is_a_bare_json_500(
    assembly: Assembly, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve(assembly, control=FailingControl())
    reply = await exchange(
        server.port, request("POST", "/api/whatsapp/regenerate-qr/sales", token=TOKEN)
    )
    assert_error(reply, 500, "internal error", PHONE, "whatsapp.net", "hello there", "RuntimeError")
    assert "error answering POST /api/whatsapp/regenerate-qr/{account_id}" in caplog.text
    after = await exchange(server.port, request("GET", "/healthz"))
    assert after.status == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
async def test_cors_is_closed(server: Harness, endpoint: Endpoint) -> None:
    origin = {"Origin": "https://evil.example"}
    preflight = await exchange(
        server.port,
        request(
            "OPTIONS",
            endpoint.path,
            headers={
                **origin,
                "Access-Control-Request-Method": endpoint.method,
                "Access-Control-Request-Headers": "authorization",
            },
        ),
    )
    assert_no_cors(preflight)
    if endpoint.token:  # a preflight carries no token
        assert_error(preflight, 401, "unauthorized")
    else:
        assert_error(preflight, 405, "method not allowed")
    if endpoint.path.endswith("/events"):
        return  # a stream; its headers are checked below
    actual = await exchange(
        server.port,
        request(
            endpoint.method,
            endpoint.path,
            token=token_for(endpoint),
            headers=origin,
            body=b'{"alerts": []}' if endpoint.path.endswith("webhook") else b"",
        ),
    )
    assert actual.status < 500
    assert_no_cors(actual)


async def test_every_response_carries_the_safety_headers(server: Harness) -> None:
    reader, writer = await connect(server.port)
    writer.write(
        b"GET /api/whatsapp/accounts/sales/pair/events HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nOrigin: https://evil.example\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    stream = parse(head)
    assert_no_cors(stream)
    replies = [stream]
    for endpoint in ENDPOINTS:
        if not endpoint.path.endswith("/events"):
            replies.append(
                await exchange(
                    server.port,
                    request(endpoint.method, endpoint.path, token=token_for(endpoint), body=b"{}"),
                )
            )
    replies.append(await exchange(server.port, request("GET", "/nothing")))
    for reply in replies:
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["X-Frame-Options"] == "DENY"
        assert reply.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        assert reply.headers["Referrer-Policy"] == "no-referrer"
        assert reply.headers["Server"] == "wa-sidecar"  # no aiohttp or Python version


async def test_pages_ignore_ranges_and_validators(server: Harness) -> None:
    whole = await exchange(server.port, request("GET", "/static/style.css"))
    assert whole.status == 200
    for headers in (
        {"Range": "bytes=999999-"},
        {"Range": "bytes=abc"},
        {"Range": "bytes=0-1,2-3,4-5"},
        {"If-Modified-Since": "garbage"},
        {"If-None-Match": "*"},
    ):
        reply = await exchange(server.port, request("GET", "/static/style.css", headers=headers))
        assert (reply.status, reply.body) == (200, whole.body), headers
