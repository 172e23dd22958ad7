"""What every request goes through, in order: errors turned into JSON and the response
sent within the write timeout (:func:`respond_safely`), the bearer token and the
failed-attempt budgets on /api/ (:func:`require_token`), the body size (:func:`limit_body`).
"""

from __future__ import annotations

import asyncio
import math

from aiohttp import web

from sidecar.adapters.http.common import (
    API_PREFIX,
    AUTH,
    LIMITER,
    LIMITS,
    PRINCIPAL,
    SECURITY_HEADERS,
    Handler,
    json_error,
    log,
)
from sidecar.adapters.http.routes import body_limit
from sidecar.adapters.ratelimit import client_key

#: Errors after which the connection is closed: its body is unread or half read.
_CLOSING = frozenset({408, 413, 415})


def _private(path: str) -> bool:
    return path.startswith(API_PREFIX) or path == "/" or path.startswith("/accounts/")


def _route_name(request: web.Request) -> str:
    """The matched route's pattern, for logs: never the path, which may hold an id."""
    resource = request.match_info.route.resource
    return "(no route)" if resource is None else resource.canonical


@web.middleware
async def respond_safely(request: web.Request, handler: Handler) -> web.StreamResponse:
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
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Checked before anything else on /api/, so an unknown account without a token is 401.

    A token is charged to the failed-attempt budgets before it is checked. A client over
    a budget is answered 429 unless its token cannot be guessed (a strong static token, or
    a Firebase token whose key is cached): those are never refused for someone else's
    failures, and a guess made while waiting learns nothing."""
    if _needs_token(request):
        limiter = request.app[LIMITER]
        header = request.headers.get("Authorization")
        # a request without any token is not a guess: it costs nothing
        attempt = limiter.attempt(client_key(request.remote), charge=header is not None)
        principal = await request.app[AUTH].authenticate(header, limited=not attempt.admitted)
        limiter.settle(attempt, accepted=principal is not None)
        if principal is None:
            if not attempt.admitted:
                return json_error(
                    429,
                    "too many failed attempts",
                    # 5.000000001 is 5
                    **{"Retry-After": str(max(1, math.ceil(round(attempt.wait, 3))))},
                )
            return json_error(
                401, "unauthorized", **{"WWW-Authenticate": 'Bearer realm="wa-sidecar"'}
            )
        request[PRINCIPAL] = principal
    return await handler(request)


@web.middleware
async def limit_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a body larger than the endpoint takes, on its declared length, before any
    of it is read; and compressed bodies, which could inflate past any limit."""
    length = request.content_length
    if length is not None and length > body_limit(request):
        raise web.HTTPRequestEntityTooLarge(
            body_limit(request), length, reason="Request body too large"
        )
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if request.body_exists and encoding != "identity":
        raise web.HTTPUnsupportedMediaType(reason="Compressed request bodies are not accepted")
    return await handler(request)
