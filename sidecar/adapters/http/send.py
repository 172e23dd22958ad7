"""``POST /api/whatsapp/send-message``: the existing backend's send endpoint
(docs/reference.md, "HTTP endpoints"; docs/sending.md, "The request").

Answers as that backend does, ``success`` first, plus ``error`` on a refusal; an
error names the field at fault, never what it held (a number, a text).
"""

from __future__ import annotations

import uuid

from aiohttp import web

from sidecar.adapters.http.common import SIDECAR, json_response
from sidecar.adapters.http.routes import BODY_LIMITS, json_body, who
from sidecar.core.send_service import IdReused, ItemUnreadable, SendService, SendTooFast
from sidecar.domain import sending

SENDING = web.AppKey("sending", SendService)

#: The longest text (65,536 characters) as JSON may escape it (12 bytes for a character
#: outside the BMP as a surrogate pair), with room for the other fields.
SEND_BODY_BYTES = 1024 * 1024


def _refused(status: int, error: str, message: str, **headers: str) -> web.Response:
    body = {"success": False, "error": error, "message": message}
    return json_response(body, status=status, headers=headers or None)


async def send_message(request: web.Request) -> web.Response:
    data = await json_body(request)  # read whatever the answer: the connection stays usable
    if SENDING not in request.app:
        return _refused(
            403, "sending_disabled", "sending is off: set send.enabled: true in the config"
        )
    account_id = data.get("accountId")
    if not isinstance(account_id, str) or not account_id:
        return _refused(400, "invalid_request", "'accountId' must be a non-empty string")
    if not request.app[SIDECAR].has_account(account_id):
        return _refused(404, "account_not_found", "Account not found")
    try:
        to = sending.recipient(data.get("to"))
        text = sending.text(data.get("message"))
        thread_id = sending.thread_of(account_id, to, data.get("threadId"))
        client_id = sending.client_message_id(
            data.get("clientMessageId"), f"client_{uuid.uuid4().hex}"
        )
    except sending.TextTooLong as exc:
        return _refused(413, "message_too_long", str(exc))
    except sending.BadSendRequest as exc:
        return _refused(400, "invalid_request", str(exc))
    try:
        submitted = await request.app[SENDING].submit(
            account_id, to, thread_id, text, client_id, who(request)
        )
    except ItemUnreadable:
        return _refused(
            409,
            "outbox_conflict",
            "an outbox document with this clientMessageId exists and is not a message"
            " (see the log); use another clientMessageId",
        )
    except IdReused:
        return _refused(
            409,
            "client_message_id_reused",
            "this clientMessageId already names another message (another account, recipient"
            " or text, or an id that differs only in characters outside A-Z a-z 0-9 _ -);"
            " use another clientMessageId",
        )
    except SendTooFast as exc:
        return _refused(429, "rate_limited", str(exc), **{"Retry-After": str(exc.retry_after)})
    body: dict[str, object] = {
        "success": submitted.status != "failed",
        "messageId": submitted.message_id,
        "clientMessageId": submitted.client_message_id,
        "queued": submitted.queued,
        "status": submitted.status,
    }
    if submitted.duplicate:
        body["duplicate"] = True
    if submitted.status == "failed":
        body["error"] = "send_failed"
        body["reason"] = submitted.reason
        return json_response(body, status=502)
    return json_response(body)


BODY_LIMITS[send_message] = SEND_BODY_BYTES  # registered beside the endpoint it is for
