"""What a browser sees: the status page, the pair page with its script and style, and
the pair page's event stream. Pages are unauthenticated and say nothing about which
accounts exist; the stream is under /api/ and needs a token like the rest."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from sidecar.adapters.http.common import (
    LIMITS,
    READY,
    SECURITY_HEADERS,
    Handler,
    json_error,
    log,
)
from sidecar.adapters.http.routes import account, who
from sidecar.adapters.http.streams import FEED, STREAMS, qr_svg, view_json
from sidecar.config import ACCOUNT_ID_PATTERN
from sidecar.core.service import Sidecar

#: The assets stay in sidecar/adapters/web/, beside this package (package data there).
PAGES = Path(__file__).parent.with_name("web")
#: How often the pair page's event stream looks for news, and how long one stream lasts.
PAIR_EVENTS_POLL_S = 0.5
PAIR_EVENTS_MAX_S = 600.0


def pairing_view(sidecar: Sidecar, account_id: str) -> dict[str, Any]:
    """What the pair page shows (each event of its stream is this, as JSON)."""
    view = sidecar.pairing_view(account_id)
    return view_json(view, qr_svg(view.qr_code))


async def pair_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events with the pairing view, sent whenever it changes. At most
    ``http.event_streams`` are open at once (429 beyond); each reads the view shared
    by every stream of the account (:class:`PairFeed`)."""
    account_id = account(request)
    principal = who(request)
    slots = request.app[STREAMS]
    if not slots.take(principal):
        log.debug("refused a pair event stream: %d open", slots.open)
        return json_error(429, "too many event streams")
    try:
        return await _stream(request, account_id)
    finally:
        slots.give_back(principal)


async def _stream(request: web.Request, account_id: str) -> web.StreamResponse:
    feed = request.app[FEED]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    response.headers.update(SECURITY_HEADERS)
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PAIR_EVENTS_MAX_S
    last: bytes | None = None
    ready = request.app[READY]
    write_timeout = request.app[LIMITS].write_timeout
    while loop.time() < deadline and ready.is_set():
        if request.transport is None or request.transport.is_closing():
            break  # the page went away
        event = feed.event(account_id)
        if event is not last:
            try:
                async with asyncio.timeout(write_timeout):
                    await response.write(event)
            except TimeoutError:
                log.info("a pair page did not read its events for %.0f s; dropped", write_timeout)
                if request.transport is not None:
                    request.transport.abort()
                break
            last = event
        await asyncio.sleep(feed.poll_s)
    return response


_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def page(name: str) -> Handler:
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


def account_page(name: str) -> Handler:
    """The page for any well-formed account id: unauthenticated, it must not tell which
    accounts exist; anything that could not be an account id is 404."""
    plain = page(name)
    pattern = re.compile(ACCOUNT_ID_PATTERN)

    async def handler(request: web.Request) -> web.StreamResponse:
        if not pattern.fullmatch(request.match_info["account_id"]):
            raise web.HTTPNotFound(reason="Not found")
        return await plain(request)

    return handler
