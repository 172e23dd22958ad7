"""The HTTP side: /metrics, liveness and readiness, and the account health API.

Errors are JSON ``{"error": "..."}`` and never echo what the client sent
(an unknown account id could be a phone number).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from sidecar.adapters.auth import StaticTokens, bearer_token
from sidecar.service import Sidecar

log = logging.getLogger(__name__)

SIDECAR = web.AppKey("sidecar", Sidecar)
TOKENS = web.AppKey("tokens", StaticTokens)
READY = web.AppKey("ready", asyncio.Event)

API_PREFIX = "/api/"
MAX_BODY_BYTES = 64 * 1024

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


@web.middleware
async def errors_as_json(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason.lower())


@web.middleware
async def require_token(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Checked before anything else on /api/, so an unknown account without a token is 401."""
    if request.path.startswith(API_PREFIX):
        token = bearer_token(request.headers.get("Authorization"))
        if token is None or not request.app[TOKENS].verify(token):
            return json_error(
                401, "unauthorized", **{"WWW-Authenticate": 'Bearer realm="wa-sidecar"'}
            )
    return await handler(request)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text, or OpenMetrics when asked. Built on a worker thread so a
    scrape of thousands of accounts does not stall the event loop."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    registry = request.app[SIDECAR].registry
    body = await asyncio.get_running_loop().run_in_executor(None, encoder, registry)
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


async def account_health(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    account_id = request.match_info["account_id"]
    if not sidecar.has_account(account_id):
        return json_error(404, "unknown account")
    return web.json_response(sidecar.health(account_id))


def create_app(sidecar: Sidecar, tokens: StaticTokens) -> web.Application:
    """The aiohttp application; the caller adds background tasks to ``cleanup_ctx``."""
    app = web.Application(
        middlewares=[errors_as_json, require_token], client_max_size=MAX_BODY_BYTES
    )
    app[SIDECAR] = sidecar
    app[TOKENS] = tokens
    app[READY] = asyncio.Event()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/whatsapp/accounts", list_accounts)
    app.router.add_get("/api/whatsapp/accounts/{account_id}/health", account_health)
    return app
