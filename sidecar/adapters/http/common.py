"""What every module of the HTTP side shares: the app keys, the client time limits,
the JSON error shape and the headers every response carries. A module of its own so
the others import it, never each other in a circle."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from sidecar.adapters.auth import Authenticator, Principal
from sidecar.adapters.ratelimit import FailureLimiter
from sidecar.core.repair import Repairs
from sidecar.core.service import Sidecar

#: One logger for the whole HTTP side, named after the package as the single module
#: was: log lines and logging settings read the same as before the split.
log = logging.getLogger(__package__)


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

API_PREFIX = "/api/"

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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_dumps(data: Any) -> str:
    """JSON as RFC 8259 has it: a number that is not finite is refused (the handler fails:
    a 500), never written as ``Infinity`` or ``NaN``, which ``JSON.parse`` rejects."""
    return json.dumps(data, allow_nan=False)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=json_dumps)


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return json_response({"error": message}, status=status, headers=headers or None)
