"""The HTTP side: /metrics, liveness and readiness, the account API, the re-pair flow.

Errors are JSON ``{"error": "..."}`` and never echo what the client sent
(an unknown account id could be a phone number), not even for requests
that do not parse as HTTP (:class:`HardenedAppRunner`). Nothing under
/api/ or the pages is cacheable: QR codes and pairing codes must not linger.

Abuse is bounded: every endpoint takes a body of at most what it needs
(413 on the declared length, before anything is read), a client has
:class:`HttpLimits` seconds to send its headers, its body and to take its
response, and an address that presents wrong bearer tokens too often is
answered 429 (:mod:`sidecar.adapters.ratelimit`). No CORS headers are ever
sent: browsers keep other sites' pages away from the API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import segno
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client.exposition import choose_encoder

from sidecar.adapters.auth import Authenticator, Principal
from sidecar.adapters.health_json import health_json
from sidecar.adapters.ratelimit import FailureLimiter, client_key
from sidecar.config import ACCOUNT_ID_PATTERN
from sidecar.core.repair import (
    NoLiveSession,
    PairingNotStarted,
    PairingRefused,
    RepairError,
    Repairs,
    RepairTooSoon,
)
from sidecar.core.service import Sidecar

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How long a client may take. A slow client is cut off; it never holds up others."""

    #: From a connection's opening (or its previous response) to a request's full headers;
    #: also how long an idle keep-alive connection stays open.
    header_timeout: float = 10.0
    #: To send a whole request body.
    body_timeout: float = 10.0
    #: To take a whole response (each event of the pair page's stream, separately).
    write_timeout: float = 30.0
    #: After answering without reading a body, how long the rest is read and dropped.
    lingering: float = 2.0


class Render(Protocol):
    """Renders /metrics: Prometheus text, or OpenMetrics when asked."""

    def __call__(self, openmetrics: bool = False, /) -> bytes: ...


SIDECAR = web.AppKey("sidecar", Sidecar)
RENDER = web.AppKey("render", Render)
AUTH = web.AppKey("auth", Authenticator)
REPAIRS = web.AppKey("repairs", Repairs)
READY = web.AppKey("ready", asyncio.Event)
LIMITS = web.AppKey("limits", HttpLimits)
LIMITER = web.AppKey("limiter", FailureLimiter)
PRINCIPAL = web.RequestKey("principal", Principal)
PAGES = Path(__file__).with_name("web")

API_PREFIX = "/api/"
#: Bodies: the pair-code request is a phone number; an Alertmanager webhook carries its
#: whole group of alerts (~1 KiB each); everything else takes none (a stray ``{}`` is fine).
NO_BODY_BYTES = 1024
PAIR_CODE_BODY_BYTES = 1024
WEBHOOK_BODY_BYTES = 1024 * 1024
#: How often the pair page's event stream looks for news, and how long one stream lasts.
PAIR_EVENTS_POLL_S = 0.5
PAIR_EVENTS_MAX_S = 600.0

#: Sent with every response that is not a stream: no sniffing, no framing (the re-pair
#: button must not be clickjacked), no referrer. Never any Access-Control-* header.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    # instead of aiohttp's "Python/3.x aiohttp/3.x": no versions to match against advisories
    "Server": "wa-sidecar",
}
#: Errors after which the connection is closed: its body is unread or half read.
_CLOSING = frozenset({408, 413, 415})

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_RequestFactory = Callable[..., web.BaseRequest]


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _private(path: str) -> bool:
    return path.startswith(API_PREFIX) or path == "/" or path.startswith("/accounts/")


def _route_name(request: web.Request) -> str:
    """The matched route's pattern, for logs: never the path, which may hold an id."""
    resource = request.match_info.route.resource
    return "(no route)" if resource is None else resource.canonical


@web.middleware
async def respond_safely(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every error as JSON (whatever went wrong), the headers every response carries,
    and a deadline for the client to take its response."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: exc.headers[k] for k in ("Allow", "Retry-After") if k in exc.headers}
        response = json_error(exc.status, exc.reason.lower(), **kept)
        if exc.status in _CLOSING:
            response.force_close()
    except ConnectionError:
        log.debug("the client of %s went away", _route_name(request))
        response = json_error(400, "client went away")
        response.force_close()
    except Exception:
        log.exception("error answering %s %s", request.method, _route_name(request))
        response = json_error(500, "internal error")
    if response.prepared:  # a stream: it has its own headers and deadlines
        return response
    response.headers.update(SECURITY_HEADERS)
    if _private(request.path):
        response.headers["Cache-Control"] = "no-store"
    await _send(request, response, request.app[LIMITS].write_timeout)
    return response


async def _send(request: web.Request, response: web.StreamResponse, timeout: float) -> None:
    """Send the whole response now, so a client that does not read cannot hold the
    handler and the body for ever: after ``timeout`` its connection is dropped."""
    try:
        async with asyncio.timeout(timeout):
            await response.prepare(request)
            await response.write_eof()
    except TimeoutError:
        log.info(
            "a client of %s took more than %.0f s to take its response; dropped",
            _route_name(request),
            timeout,
        )
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError:
        log.debug("the client of %s went away", _route_name(request))


def _needs_token(request: web.Request) -> bool:
    if request.path.startswith(API_PREFIX):
        return True
    resource = request.match_info.route.resource  # however the path was spelled
    return resource is not None and resource.canonical.startswith(API_PREFIX)


@web.middleware
async def require_token(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Checked before anything else on /api/, so an unknown account without a token is 401.

    An address that failed too often is told to wait, before its token is looked at."""
    if _needs_token(request):
        limiter = request.app[LIMITER]
        client = client_key(request.remote)
        wait = limiter.check(client)
        if wait > 0:
            return json_error(
                429,
                "too many failed attempts",
                **{"Retry-After": str(max(1, math.ceil(round(wait, 3))))},  # 5.000000001 is 5
            )
        header = request.headers.get("Authorization")
        principal = await request.app[AUTH].authenticate(header)
        if principal is None:
            if header is not None:  # a guess; a request without any token is not one
                limiter.record_failure(client)
            return json_error(
                401, "unauthorized", **{"WWW-Authenticate": 'Bearer realm="wa-sidecar"'}
            )
        request[PRINCIPAL] = principal
    return await handler(request)


@web.middleware
async def limit_body(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Refuse a body larger than the endpoint takes, on its declared length, before any
    of it is read; and compressed bodies, which could inflate past any limit."""
    length = request.content_length
    if length is not None and length > _body_limit(request):
        raise web.HTTPRequestEntityTooLarge(
            _body_limit(request), length, reason="Request body too large"
        )
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if request.body_exists and encoding != "identity":
        raise web.HTTPUnsupportedMediaType(reason="Compressed request bodies are not accepted")
    return await handler(request)


def _body_limit(request: web.Request) -> int:
    return _BODY_LIMITS.get(request.match_info.route.handler, NO_BODY_BYTES)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text, or OpenMetrics when asked. Built on a worker thread so a
    scrape of thousands of accounts does not stall the event loop."""
    _, content_type = choose_encoder(request.headers.get("Accept", ""))
    openmetrics = content_type.startswith("application/openmetrics-text")
    render = request.app[RENDER]
    body = await asyncio.get_running_loop().run_in_executor(None, render, openmetrics)
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[READY].is_set():
        return web.json_response({"status": "ready"})
    return json_error(503, "not ready")


async def list_accounts(request: web.Request) -> web.Response:
    accounts = [health_json(health) for health in request.app[SIDECAR].all_health()]
    return web.json_response({"accounts": accounts})


def _account(request: web.Request) -> str:
    account_id = request.match_info["account_id"]
    if not request.app[SIDECAR].has_account(account_id):
        raise web.HTTPNotFound(reason="Unknown account")
    return account_id


def _who(request: web.Request) -> str:
    principal: Principal = request[PRINCIPAL]
    return f"{principal.kind}:{principal.id}"


#: The status code of each kind of failed re-pair request.
_REPAIR_STATUS: dict[type[RepairError], int] = {
    RepairTooSoon: 429,
    PairingNotStarted: 409,
    PairingRefused: 502,
    NoLiveSession: 503,
}


def _repair_error(exc: RepairError) -> web.Response:
    status = _REPAIR_STATUS.get(type(exc), 500)
    if isinstance(exc, RepairTooSoon) and exc.retry_after:
        return json_error(status, str(exc), **{"Retry-After": str(max(1, round(exc.retry_after)))})
    return json_error(status, str(exc))


async def _read_body(request: web.Request) -> bytes:
    """The body, up to the endpoint's limit, within the body timeout (chunked bodies
    have no declared length: they are counted as they come)."""
    limit = _body_limit(request)
    body = bytearray()
    if _expects_continue(request):  # only now, authenticated and within the limit
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not started
    try:
        async with asyncio.timeout(request.app[LIMITS].body_timeout):
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > limit:
                    raise web.HTTPRequestEntityTooLarge(
                        limit, len(body), reason="Request body too large"
                    )
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason="Request body too slow") from None
    return bytes(body)


def _expects_continue(request: web.Request) -> bool:
    expect = request.headers.get("Expect", "")
    return request.version >= (1, 1) and expect.strip().lower() == "100-continue"


async def _expect_nothing_yet(_request: web.Request) -> None:
    """aiohttp answers ``Expect: 100-continue`` on routing, before the token and the
    size are checked, and any other expectation with a text 417 that quotes it. Here
    "100 Continue" waits until the body is wanted (:func:`_read_body`), and other
    expectations are ignored, as RFC 9110 allows."""


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await _read_body(request)
    try:
        # JSON is UTF-8 (RFC 8259): a charset parameter is not consulted
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, huge integers, deep nesting
        raise web.HTTPBadRequest(reason="Body is not JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(reason="Body must be a JSON object")
    return data


async def account_health(request: web.Request) -> web.Response:
    return web.json_response(health_json(request.app[SIDECAR].health(_account(request))))


async def regenerate_qr(request: web.Request) -> web.Response:
    account_id = _account(request)
    try:
        body = await request.app[REPAIRS].start_repair(account_id, _who(request))
    except RepairError as exc:
        return _repair_error(exc)
    return web.json_response(body, status=202)


async def pair_code(request: web.Request) -> web.Response:
    from sidecar.adapters.neonize_pairing import E164

    account_id = _account(request)
    phone = (await _json_body(request)).get("phone")
    if not isinstance(phone, str) or not E164.match(phone.replace(" ", "")):
        return json_error(400, 'send {"phone": "+<country code><number>"}')
    try:
        body = await request.app[REPAIRS].pair_code(
            account_id, phone.replace(" ", ""), _who(request)
        )
    except RepairError as exc:
        return _repair_error(exc)
    return web.json_response(body)


async def alertmanager_webhook(request: web.Request) -> web.Response:
    data = await _json_body(request)
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or not all(
        isinstance(alert, dict) and isinstance(alert.get("labels", {}), dict) for alert in alerts
    ):
        return json_error(400, "expected Alertmanager's webhook JSON")
    return web.json_response(await request.app[REPAIRS].on_alerts(data, _who(request)))


def pairing_view(sidecar: Sidecar, account_id: str) -> dict[str, Any]:
    """What the pair page shows: state, the QR as SVG while one waits, the paired device."""
    view = sidecar.pairing_view(account_id)
    return {
        "status": view.status,
        "qrSvg": None if view.qr_code is None else segno.make_qr(view.qr_code).svg_inline(scale=8),
        "paired": view.platform is not None,
        "platform": view.platform,
        "pairedAtMs": view.paired_at_ms,
        "lastRealMessageMs": view.last_real_message_ms,
        "isDegraded": view.degraded,
    }


async def pair_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events with the pairing view, sent whenever it changes."""
    sidecar = request.app[SIDECAR]
    account_id = _account(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    response.headers.update(SECURITY_HEADERS)
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PAIR_EVENTS_MAX_S
    last: dict[str, Any] | None = None
    ready = request.app[READY]
    write_timeout = request.app[LIMITS].write_timeout
    while loop.time() < deadline and ready.is_set():
        if request.transport is None or request.transport.is_closing():
            break  # the page went away
        view = pairing_view(sidecar, account_id)
        if view != last:
            try:
                async with asyncio.timeout(write_timeout):
                    await response.write(f"data: {json.dumps(view)}\n\n".encode())
            except TimeoutError:
                log.info("a pair page did not read its events for %.0f s; dropped", write_timeout)
                if request.transport is not None:
                    request.transport.abort()
                break
            last = view
        await asyncio.sleep(PAIR_EVENTS_POLL_S)
    return response


_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def _page(name: str) -> _Handler:
    """A page or its script or style, read once: small, never cached, no ranges."""
    body = (PAGES / name).read_bytes()
    content_type = _CONTENT_TYPES[Path(name).suffix]

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    return handler


def _account_page(name: str) -> _Handler:
    """The page for any well-formed account id: unauthenticated, it must not tell which
    accounts exist; anything that could not be an account id is 404."""
    page = _page(name)
    pattern = re.compile(ACCOUNT_ID_PATTERN)

    async def handler(request: web.Request) -> web.StreamResponse:
        if not pattern.fullmatch(request.match_info["account_id"]):
            raise web.HTTPNotFound(reason="Not found")
        return await page(request)

    return handler


_BODY_LIMITS: dict[Callable[..., Any], int] = {
    pair_code: PAIR_CODE_BODY_BYTES,
    alertmanager_webhook: WEBHOOK_BODY_BYTES,
}


class _ConnectionHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, except for requests that do not parse as HTTP
    (a line or header too long, a bad method, a byte that has no place there): aiohttp
    answers those in plain text quoting the offending bytes, and logs them with a
    traceback; here they get a JSON error quoting nothing, and a one-line log."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("error answering a request from %s", request.remote, exc_info=exc)
        else:
            log.info(
                "refused a request from %s that is not valid HTTP (%s)",
                request.remote,
                type(exc).__name__ if exc is not None else status,
            )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already on its way; dropping the connection")
        text = "bad request" if status == 400 else HTTPStatus(status).phrase.lower()
        response = json_error(status, text)
        response.headers.update(SECURITY_HEADERS)
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _ConnectionHandler(self, loop=self._loop, **self._kwargs)


def _without_odd_expectations(factory: _RequestFactory) -> _RequestFactory:
    """Requests without an ``Expect`` other than 100-continue, which would otherwise
    get aiohttp's text 417 quoting it on paths that match no route."""

    def make(*args: Any) -> web.BaseRequest:
        request = factory(*args)
        expect = request.headers.get("Expect")
        if expect is not None and expect.strip().lower() != "100-continue":
            headers = CIMultiDict(request.headers)
            del headers["Expect"]
            request = request.clone(headers=headers)
        return request

    return make


class HardenedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer malformed requests in JSON, without
    echoing them (:class:`_ConnectionHandler`), and ignore odd ``Expect`` headers.
    Use it wherever the app is served."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return _Server(
            plain.request_handler,
            request_factory=_without_odd_expectations(plain.request_factory),
            handler_cancellation=plain.handler_cancellation,
            **plain._kwargs,
        )


def create_app(
    sidecar: Sidecar,
    auth: Authenticator,
    repairs: Repairs | None = None,
    *,
    render: Render,
    limiter: FailureLimiter,
    limits: HttpLimits | None = None,
) -> web.Application:
    """The aiohttp application; the caller adds background tasks to ``cleanup_ctx``.

    Serve it with :class:`HardenedAppRunner`. Built by :func:`sidecar.compose.build_app`,
    which also exports ``limiter``'s counters."""
    limits = limits or HttpLimits()
    app = web.Application(
        middlewares=[respond_safely, require_token, limit_body],
        client_max_size=max(_BODY_LIMITS.values()),
        handler_args={
            # aiohttp closes a connection whose request has not arrived within its
            # keep-alive timeout, counted from the connection's start: a header timeout
            "keepalive_timeout": limits.header_timeout,
            "lingering_time": limits.lingering,
            "auto_decompress": False,
        },
    )
    app[SIDECAR] = sidecar
    app[AUTH] = auth
    app[READY] = asyncio.Event()
    app[LIMITS] = limits
    app[LIMITER] = limiter
    app[RENDER] = render

    def get(path: str, handler: _Handler) -> None:
        app.router.add_get(path, handler, expect_handler=_expect_nothing_yet)

    def post(path: str, handler: _Handler) -> None:
        app.router.add_post(path, handler, expect_handler=_expect_nothing_yet)

    get("/metrics", metrics)
    get("/healthz", healthz)
    get("/readyz", readyz)
    get("/api/whatsapp/accounts", list_accounts)
    get("/api/whatsapp/accounts/{account_id}/health", account_health)
    if repairs is not None:
        app[REPAIRS] = repairs
        post("/api/whatsapp/regenerate-qr/{account_id}", regenerate_qr)
        post("/api/whatsapp/accounts/{account_id}/pair-code", pair_code)
        get("/api/whatsapp/accounts/{account_id}/pair/events", pair_events)
        post("/api/alertmanager/webhook", alertmanager_webhook)
        get("/", _page("status.html"))
        for name in ("common.js", "style.css"):
            get(f"/static/{name}", _page(name))
        get("/accounts/{account_id}/pair", _account_page("pair.html"))
    return app
