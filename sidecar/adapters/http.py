"""The HTTP side: /metrics, liveness and readiness, the account API, the re-pair flow.

Errors are JSON ``{"error": "..."}`` and never echo what the client sent
(an unknown account id could be a phone number). Nothing under /api/ or
the pages is cacheable: QR codes and pairing codes must not linger.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import segno
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from sidecar.adapters.auth import Authenticator, Principal
from sidecar.repair import RepairError, Repairs
from sidecar.service import Sidecar

log = logging.getLogger(__name__)

SIDECAR = web.AppKey("sidecar", Sidecar)
AUTH = web.AppKey("auth", Authenticator)
REPAIRS = web.AppKey("repairs", Repairs)
READY = web.AppKey("ready", asyncio.Event)
PRINCIPAL = web.RequestKey("principal", Principal)
PAGES = Path(__file__).with_name("web")

API_PREFIX = "/api/"
MAX_BODY_BYTES = 64 * 1024
#: How often the pair page's event stream looks for news, and how long one stream lasts.
PAIR_EVENTS_POLL_S = 0.5
PAIR_EVENTS_MAX_S = 600.0

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _private(path: str) -> bool:
    return path.startswith(API_PREFIX) or path == "/" or path.startswith("/accounts/")


@web.middleware
async def errors_as_json(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = json_error(exc.status, exc.reason.lower())
    if _private(request.path) and not response.prepared:
        response.headers["Cache-Control"] = "no-store"
    return response


@web.middleware
async def require_token(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Checked before anything else on /api/, so an unknown account without a token is 401."""
    if request.path.startswith(API_PREFIX):
        principal = await request.app[AUTH].authenticate(request.headers.get("Authorization"))
        if principal is None:
            return json_error(
                401, "unauthorized", **{"WWW-Authenticate": 'Bearer realm="wa-sidecar"'}
            )
        request[PRINCIPAL] = principal
    return await handler(request)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text, or OpenMetrics when asked. Built on a worker thread so a
    scrape of thousands of accounts does not stall the event loop."""
    _, content_type = choose_encoder(request.headers.get("Accept", ""))
    openmetrics = content_type.startswith("application/openmetrics-text")
    render = request.app[SIDECAR].exposition.render
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
    return web.json_response({"accounts": request.app[SIDECAR].all_health()})


def _account(request: web.Request) -> str:
    account_id = request.match_info["account_id"]
    if not request.app[SIDECAR].has_account(account_id):
        raise web.HTTPNotFound(reason="Unknown account")
    return account_id


def _who(request: web.Request) -> str:
    principal: Principal = request[PRINCIPAL]
    return f"{principal.kind}:{principal.id}"


def _repair_error(exc: RepairError) -> web.Response:
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else {}
    return json_error(exc.status, str(exc), **headers)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(reason="Body is not JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(reason="Body must be a JSON object")
    return data


async def account_health(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIDECAR].health(_account(request)))


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
    if not isinstance(data.get("alerts"), list):
        return json_error(400, "expected Alertmanager's webhook JSON")
    return web.json_response(await request.app[REPAIRS].on_alerts(data, _who(request)))


def pairing_view(sidecar: Sidecar, account_id: str) -> dict[str, Any]:
    """What the pair page shows: state, the QR as SVG while one waits, the paired device."""
    status, code, _, platform, paired_at = sidecar.states[account_id].pairing_view()
    health = sidecar.health(account_id)
    qr_svg = None
    if code is not None and status == "qr_pending":
        qr_svg = segno.make_qr(code).svg_inline(scale=8)
    return {
        "status": status,
        "qrSvg": qr_svg,
        "paired": platform is not None,
        "platform": platform,
        "pairedAtMs": None if paired_at is None else round(paired_at * 1000),
        "lastRealMessageMs": health["lastRealMessageMs"],
        "isDegraded": health["isDegraded"],
    }


async def pair_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events with the pairing view, sent whenever it changes."""
    sidecar = request.app[SIDECAR]
    account_id = _account(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PAIR_EVENTS_MAX_S
    last: dict[str, Any] | None = None
    ready = request.app[READY]
    while loop.time() < deadline and ready.is_set():
        if request.transport is None or request.transport.is_closing():
            break  # the page went away
        view = pairing_view(sidecar, account_id)
        if view != last:
            await response.write(f"data: {json.dumps(view)}\n\n".encode())
            last = view
        await asyncio.sleep(PAIR_EVENTS_POLL_S)
    return response


def _page(name: str) -> _Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGES / name, headers={"Cache-Control": "no-store"})

    return handler


def create_app(
    sidecar: Sidecar, auth: Authenticator, repairs: Repairs | None = None
) -> web.Application:
    """The aiohttp application; the caller adds background tasks to ``cleanup_ctx``."""
    app = web.Application(
        middlewares=[errors_as_json, require_token], client_max_size=MAX_BODY_BYTES
    )
    app[SIDECAR] = sidecar
    app[AUTH] = auth
    app[READY] = asyncio.Event()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/whatsapp/accounts", list_accounts)
    app.router.add_get("/api/whatsapp/accounts/{account_id}/health", account_health)
    if repairs is not None:
        app[REPAIRS] = repairs
        app.router.add_post("/api/whatsapp/regenerate-qr/{account_id}", regenerate_qr)
        app.router.add_post("/api/whatsapp/accounts/{account_id}/pair-code", pair_code)
        app.router.add_get("/api/whatsapp/accounts/{account_id}/pair/events", pair_events)
        app.router.add_post("/api/alertmanager/webhook", alertmanager_webhook)
        app.router.add_get("/", _page("status.html"))
        for name in ("common.js", "style.css"):
            app.router.add_get(f"/static/{name}", _page(name))
        app.router.add_get("/accounts/{account_id}/pair", _page("pair.html"))
    return app
