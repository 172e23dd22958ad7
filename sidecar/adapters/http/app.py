"""The aiohttp application: its middlewares in order, its state, its routes. Which
routes exist depends on whether re-pairing is wired in; the send endpoint always
exists and says so when sending is off."""

from __future__ import annotations

import asyncio

from aiohttp import web

from sidecar.adapters.auth import Authenticator
from sidecar.adapters.http import pages
from sidecar.adapters.http.common import (
    AUTH,
    LIMITER,
    LIMITS,
    READY,
    RENDER,
    REPAIRS,
    SIDECAR,
    Handler,
    HttpLimits,
    Render,
)
from sidecar.adapters.http.hardening import expect_nothing_yet
from sidecar.adapters.http.ingest import INGEST, count_refused, ingest
from sidecar.adapters.http.middleware import limit_body, require_token, respond_safely
from sidecar.adapters.http.pages import account_page, page, pair_events
from sidecar.adapters.http.routes import (
    BODY_LIMITS,
    account_health,
    alertmanager_webhook,
    healthz,
    list_accounts,
    metrics,
    pair_code,
    readyz,
    regenerate_qr,
)
from sidecar.adapters.http.send import SENDING, send_message
from sidecar.adapters.http.streams import FEED, STREAMS, PairFeed, StreamLimits, StreamSlots
from sidecar.adapters.ratelimit import FailureLimiter
from sidecar.core.ingest import Ingest
from sidecar.core.repair import Repairs
from sidecar.core.send_service import SendService
from sidecar.core.service import Sidecar


def create_app(
    sidecar: Sidecar,
    auth: Authenticator,
    repairs: Repairs | None = None,
    *,
    render: Render,
    limiter: FailureLimiter,
    limits: HttpLimits | None = None,
    streams: StreamLimits | None = None,
    sending: SendService | None = None,
    ingest_events: Ingest | None = None,
) -> web.Application:
    """The aiohttp application; the caller adds background tasks to ``cleanup_ctx``.

    Serve it with :class:`HardenedAppRunner`. Built by :func:`sidecar.compose.build_app`,
    which also exports ``limiter``'s counters."""
    limits = limits or HttpLimits()
    app = web.Application(
        middlewares=[respond_safely, require_token, count_refused, limit_body],
        client_max_size=max(BODY_LIMITS.values()),
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

    async def close_auth(_app: web.Application) -> None:
        await auth.close()  # a certificate fetch still running

    app.on_cleanup.append(close_auth)

    def get(path: str, handler: Handler) -> None:
        app.router.add_get(path, handler, expect_handler=expect_nothing_yet)

    def post(path: str, handler: Handler) -> None:
        app.router.add_post(path, handler, expect_handler=expect_nothing_yet)

    get("/metrics", metrics)
    get("/healthz", healthz)
    get("/readyz", readyz)
    get("/api/whatsapp/accounts", list_accounts)
    get("/api/whatsapp/accounts/{account_id}/health", account_health)
    if sending is not None:
        app[SENDING] = sending
    post("/api/whatsapp/send-message", send_message)  # says so when sending is off
    if ingest_events is not None:
        app[INGEST] = ingest_events
    post("/api/ingest/{format}/{account_id}", ingest)
    if repairs is not None:
        app[REPAIRS] = repairs
        app[STREAMS] = StreamSlots(streams or StreamLimits())
        app[FEED] = PairFeed(sidecar, pages.PAIR_EVENTS_POLL_S)
        post("/api/whatsapp/regenerate-qr/{account_id}", regenerate_qr)
        post("/api/whatsapp/accounts/{account_id}/pair-code", pair_code)
        get("/api/whatsapp/accounts/{account_id}/pair/events", pair_events)
        post("/api/alertmanager/webhook", alertmanager_webhook)
        get("/", page("status.html"))
        for name in ("common.js", "style.css"):
            get(f"/static/{name}", page(name))
        get("/accounts/{account_id}/pair", account_page("pair.html"))
    get("/runbook", page("runbook.html"))  # where the alerts' runbook links lead
    return app
