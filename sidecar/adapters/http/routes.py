"""The endpoints that answer in JSON or Prometheus text: metrics, liveness and
readiness, the account API, the re-pair flow and Alertmanager's webhook. Each takes a
body of at most what it needs (:data:`BODY_LIMITS`), read within the body timeout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from sidecar.adapters.auth import Principal
from sidecar.adapters.health_json import health_json
from sidecar.adapters.http.common import (
    LIMITS,
    PRINCIPAL,
    READY,
    RENDER,
    REPAIRS,
    SIDECAR,
    json_error,
    json_response,
)
from sidecar.adapters.http.hardening import continue_if_expected
from sidecar.core.repair import (
    AuditUnavailable,
    NoLiveSession,
    PairingNotStarted,
    PairingRefused,
    RepairError,
    RepairTooSoon,
    SessionElsewhere,
)
from sidecar.domain.health import AccountHealth

#: Bodies: the pair-code request is a phone number; an Alertmanager webhook carries its
#: whole group of alerts (~1 KiB each); everything else takes none (a stray ``{}`` is fine).
NO_BODY_BYTES = 1024
PAIR_CODE_BODY_BYTES = 1024
WEBHOOK_BODY_BYTES = 1024 * 1024


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
    return json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[READY].is_set():
        return json_response({"status": "ready"})
    return json_error(503, "not ready")


async def list_accounts(request: web.Request) -> web.Response:
    # off the event loop: the store's part reads the spool's SQLite file
    healths = await asyncio.to_thread(request.app[SIDECAR].all_health)
    accounts = [health_json(health) for health in healths]
    return json_response({"accounts": accounts})


def account(request: web.Request) -> str:
    """The path's account id, if the sidecar holds that account; 404 otherwise."""
    account_id = request.match_info["account_id"]
    if not request.app[SIDECAR].has_account(account_id):
        raise web.HTTPNotFound(reason="Unknown account")
    return account_id


def who(request: web.Request) -> str:
    """The principal as the audit log and the stream caps name it: kind and id."""
    principal: Principal = request[PRINCIPAL]
    return f"{principal.kind}:{principal.id}"


#: The status code of each kind of failed re-pair request.
_REPAIR_STATUS: dict[type[RepairError], int] = {
    RepairTooSoon: 429,
    PairingNotStarted: 409,
    PairingRefused: 502,
    NoLiveSession: 503,
    SessionElsewhere: 409,
    AuditUnavailable: 503,
}


def _repair_error(exc: RepairError) -> web.Response:
    status = _REPAIR_STATUS.get(type(exc), 500)
    if isinstance(exc, RepairTooSoon) and exc.retry_after:
        return json_error(status, str(exc), **{"Retry-After": str(max(1, round(exc.retry_after)))})
    return json_error(status, str(exc))


async def _read_body(request: web.Request) -> bytes:
    """The body, up to the endpoint's limit, within the body timeout (chunked bodies
    have no declared length: they are counted as they come)."""
    limit = body_limit(request)
    body = bytearray()
    await continue_if_expected(request)  # only now, authenticated and within the limit
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


async def json_body(request: web.Request, *, in_thread: bool = False) -> dict[str, Any]:
    """The body as a JSON object (400 otherwise), within the endpoint's limits; parsed on
    a worker thread with ``in_thread`` (megabytes take tens of milliseconds)."""
    raw = await _read_body(request)
    if in_thread:
        return await asyncio.to_thread(json_object, raw)
    return json_object(raw)


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        # JSON is UTF-8 (RFC 8259): a charset parameter is not consulted
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, huge integers, deep nesting
        raise web.HTTPBadRequest(reason="Body is not JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(reason="Body must be a JSON object")
    return data


async def account_health(request: web.Request) -> web.Response:
    sidecar, account_id = request.app[SIDECAR], account(request)

    def build() -> AccountHealth:  # the backlog every health request shares
        return sidecar.health(account_id, sidecar.recent_backlog())

    health = await asyncio.to_thread(build)
    return json_response(health_json(health))


async def regenerate_qr(request: web.Request) -> web.Response:
    account_id = account(request)
    try:
        body = await request.app[REPAIRS].start_repair(account_id, who(request))
    except RepairError as exc:
        return _repair_error(exc)
    return json_response(body, status=202)


async def pair_code(request: web.Request) -> web.Response:
    from sidecar.adapters.neonize_pairing import E164

    account_id = account(request)
    phone = (await json_body(request)).get("phone")
    if not isinstance(phone, str) or not E164.match(phone.replace(" ", "")):
        return json_error(400, 'send {"phone": "+<country code><number>"}')
    try:
        body = await request.app[REPAIRS].pair_code(
            account_id, phone.replace(" ", ""), who(request)
        )
    except RepairError as exc:
        return _repair_error(exc)
    return json_response(body)


async def alertmanager_webhook(request: web.Request) -> web.Response:
    data = await json_body(request)
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or not all(
        isinstance(alert, dict) and isinstance(alert.get("labels", {}), dict) for alert in alerts
    ):
        return json_error(400, "expected Alertmanager's webhook JSON")
    return json_response(await request.app[REPAIRS].on_alerts(data, who(request)))


#: The endpoints that take a body larger than :data:`NO_BODY_BYTES`, and how large.
BODY_LIMITS: dict[Callable[..., Any], int] = {
    pair_code: PAIR_CODE_BODY_BYTES,
    alertmanager_webhook: WEBHOOK_BODY_BYTES,
}


def body_limit(request: web.Request) -> int:
    """The largest body the matched endpoint takes (unmatched paths: :data:`NO_BODY_BYTES`)."""
    return BODY_LIMITS.get(request.match_info.route.handler, NO_BODY_BYTES)
