"""WAHA's webhooks (``{"id", "timestamp", "event", "session", "engine", "payload", ...}``)
as the neonize events they stand for (docs/ingest.md, "WAHA").

Two of WAHA's events are read. ``engine.event`` of the NOWEB engine is every event of
its Baileys socket, unfiltered, as ``{"event", "data"}``: the ``baileys`` format's body,
handed to :mod:`.baileys` whole. GOWS and WEBJS post their own engine's models
(whatsmeow's Go JSON, whatsapp-web.js objects), not the protobuf JSON read here: refused.
``session.status`` is WAHA's view of the session. WAHA builds its other events
(``message``, ``message.any``, ``message.ack`` ...) from the same socket events,
filtered (no protocol messages): taking them beside ``engine.event`` would count each
message twice, so they are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sidecar.adapters.ingest import baileys, events
from sidecar.adapters.ingest.baileys import BadIngest, Converted, UnknownEvent

#: WAHA's events (WAHAEvents) other than the two read: accepted and ignored.
IGNORED = frozenset(
    {
        "message",
        "message.reaction",
        "message.any",
        "message.ack",
        "message.ack.group",
        "message.waiting",
        "message.revoked",
        "message.edited",
        "state.change",
        "group.join",
        "group.leave",
        "group.v2.join",
        "group.v2.leave",
        "group.v2.update",
        "group.v2.participants",
        "presence.update",
        "poll.vote",
        "poll.vote.failed",
        "chat.archive",
        "call.received",
        "call.accepted",
        "call.rejected",
        "label.upsert",
        "label.deleted",
        "label.chat.added",
        "label.chat.deleted",
        "event.response",
        "event.response.failed",
    }
)
#: The engine whose ``engine.event`` is Baileys' (WAHA names the engine in its webhooks;
#: a body that names none is read as NOWEB's, and another engine's payload then fails
#: as an unknown Baileys event).
NOWEB = "NOWEB"
#: A WAHASessionStatus and the event it stands for; STARTING says nothing (WAHA is
#: opening the socket: the outcome follows as WORKING, SCAN_QR_CODE or FAILED).
_STATUS: dict[str, Callable[[], Any] | None] = {
    "WORKING": events.connected,
    # the device is not paired and WAHA shows a QR: qr_pending, as a Baileys `qr` or
    # Evolution's qrcode.updated give. WAHA's body holds no code, and none is needed
    # (the account is paired in WAHA, never here), so the event carries none; a
    # logged_out would page (WhatsappAccountLoggedOut) while a person is scanning.
    "SCAN_QR_CODE": events.qr_waiting,
    # WAHA gave up on the session (logged out, a QR never scanned, a start that failed)
    # or was told to stop: nothing is received until someone acts in WAHA. The reason,
    # when there is one, comes with engine.event's connection.update (a 401 close:
    # logged_out); WAHA posts the status first (it sets it in its own connection.update
    # handler, which Baileys runs before the engine.event's), so the reason stays.
    "FAILED": events.disconnected,
    "STOPPED": events.disconnected,
    "STARTING": None,
}


def convert(body: Any, *, now: float | None = None) -> Converted:
    if not isinstance(body, Mapping) or not isinstance(body.get("event"), str):
        raise BadIngest('expected WAHA\'s webhook body: {"event", "session", "engine", "payload"}')
    name, payload = body["event"], body.get("payload")
    if name == "engine.event":
        return _engine_event(body.get("engine") or NOWEB, payload, now)
    if name == "session.status":
        return _session_status(payload)
    if name in IGNORED:
        return Converted(ignored=1)
    raise UnknownEvent("unknown WAHA event (docs/ingest.md lists those taken)")


def _engine_event(engine: Any, payload: Any, now: float | None) -> Converted:
    if engine != NOWEB:
        raise BadIngest(
            "engine.event: only the NOWEB engine's events can be read (GOWS posts whatsmeow's"
            " JSON, WEBJS whatsapp-web.js objects): docs/ingest.md"
        )
    if not isinstance(payload, Mapping):
        raise BadIngest("engine.event: 'payload' must be an object")
    if payload.get("event") == "creds.update":
        # WAHA posts every socket event, the session's private keys included, and cannot
        # be told not to: dropped unread. A refusal would make WAHA send them again, up
        # to 15 times (it retries on any answer but 2xx).
        return Converted(ignored=1)
    try:
        return baileys.convert(payload, now=now)
    except BadIngest as exc:  # UnknownEvent stays one (422)
        raise type(exc)(f"engine.event: {exc}") from None


def _session_status(payload: Any) -> Converted:
    status = payload.get("status") if isinstance(payload, Mapping) else None
    if not isinstance(status, str) or status not in _STATUS:
        raise BadIngest(
            "session.status: 'payload.status' must be one of WAHA's session statuses"
            f" ({', '.join(_STATUS)})"
        )
    make = _STATUS[status]
    if make is None:
        return Converted(ignored=1)
    return Converted(events=[(make(), None)])
