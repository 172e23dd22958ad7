"""What a browser sees: the status page, the pair page with its script and style, and
the pair page's event stream. Pages are unauthenticated and say nothing about which
accounts exist; the stream is under /api/ and needs a token like the rest."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import segno
from aiohttp import web

from sidecar.adapters.http.common import (
    LIMITS,
    READY,
    SECURITY_HEADERS,
    SIDECAR,
    Handler,
    json_dumps,
    log,
)
from sidecar.adapters.http.routes import account
from sidecar.config import ACCOUNT_ID_PATTERN
from sidecar.core.service import Sidecar

#: The assets stay in sidecar/adapters/web/, beside this package (package data there).
PAGES = Path(__file__).parent.with_name("web")
#: How often the pair page's event stream looks for news, and how long one stream lasts.
PAIR_EVENTS_POLL_S = 0.5
PAIR_EVENTS_MAX_S = 600.0


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
    account_id = account(request)
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
                    await response.write(f"data: {json_dumps(view)}\n\n".encode())
            except TimeoutError:
                log.info("a pair page did not read its events for %.0f s; dropped", write_timeout)
                if request.transport is not None:
                    request.transport.abort()
                break
            last = view
        await asyncio.sleep(PAIR_EVENTS_POLL_S)
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
