"""``POST /api/ingest/{format}/{accountId}``: events of an account whose session lives in
another gateway (docs/ingest.md). The same bearer token as the rest of the API.

Answers say how many events were taken, duplicates skipped (gateways retry), and what
was left out; a body that is not what the format says is 400 (a gateway does not retry
it), an unknown event name 422.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from sidecar.adapters.http.common import SIDECAR, Handler, json_error, json_response
from sidecar.adapters.http.routes import BODY_LIMITS, json_body
from sidecar.adapters.ingest import baileys, evolution, waha
from sidecar.core.ingest import Ingest, Refusal

INGEST = web.AppKey("ingest", Ingest)
#: A history or a burst of messages in one request, as JSON with media keys in base64.
INGEST_BODY_BYTES = 8 * 1024 * 1024
#: Events one request may carry; past it the request is refused whole (413).
MAX_EVENTS = 5_000
#: Each format's converter: body -> what it stands for.
FORMATS: dict[str, Callable[..., baileys.Converted]] = {
    "baileys": baileys.convert,
    "evolution": evolution.convert,
    "waha": waha.convert,
}


async def ingest(request: web.Request) -> web.Response:
    fmt, account_id = request.match_info["format"], request.match_info["account_id"]
    converter = FORMATS.get(fmt)
    if converter is None:
        return json_error(404, f"unknown ingest format (known: {', '.join(FORMATS)})")
    if not request.app[SIDECAR].has_account(account_id):
        raise web.HTTPNotFound(reason="Unknown account")
    service = _service(request, account_id)
    # read whatever the answer (the connection stays usable); megabytes parse off the loop
    body = await json_body(request, in_thread=True)
    if service is None:
        return json_error(409, "this account's source is not ingest (accounts[].source)")
    try:
        # thousands of messages take a good part of a second to convert: off the loop
        converted = await asyncio.to_thread(converter, body)
    except baileys.UnknownEvent as exc:
        service.refused(account_id, "unknown_event", str(exc))
        return json_error(422, str(exc))
    except baileys.BadIngest as exc:
        service.refused(account_id, "bad_body", str(exc))
        return json_error(400, str(exc))
    if len(converted.events) > MAX_EVENTS:
        too_many = f"more than {MAX_EVENTS} events in one request: send them apart"
        service.refused(account_id, "too_large", too_many)
        return json_error(413, too_many)
    taken = await asyncio.to_thread(
        service.take, account_id, converted.events, converted.ignored, converted.unreadable
    )
    return json_response(
        {
            "accepted": taken.accepted,
            "duplicates": taken.duplicates,
            "ignored": converted.ignored,
            "unreadable": converted.unreadable,
        }
    )


def _service(request: web.Request, account_id: str) -> Ingest | None:
    """The ingest service, if ``account_id`` is one of its accounts."""
    service = request.app.get(INGEST)
    return service if service is not None and account_id in service.accounts else None


@web.middleware
async def count_refused(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count an ingest request refused for its body, whether before the handler runs (a
    declared length past the limit, a compressed body: :func:`limit_body`) or while it
    reads it (not JSON, not an object). Inside the token check: nobody without a token
    moves an account's counts."""
    if request.match_info.route.handler is not ingest:
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        service = _service(request, request.match_info.get("account_id", ""))
        if service is not None and exc.status in (400, 413, 415):
            account_id = request.match_info["account_id"]
            why: Refusal = "too_large" if exc.status == 413 else "bad_body"
            service.refused(account_id, why, exc.reason)
        raise


BODY_LIMITS[ingest] = INGEST_BODY_BYTES  # registered beside the endpoint it is for
