"""Evolution API v2's webhook bodies (``{"event", "instance", "data", ...}``) as the
neonize events they stand for (docs/ingest.md, "Evolution API").

Evolution rebuilds Baileys' messages before posting them: ``data`` of
``messages.upsert`` is one message (``key``, ``pushName``, ``message``,
``messageTimestamp``, fields of its own), its bytes and int64 encoded one of three
ways by version (all read by :mod:`.protojson`), an extended text folded into
``conversation``. It never posts a message with a ``protocolMessage`` as an upsert:
those come as ``messages.edited`` with the protocol message alone, no id, and are
counted as such (never deduplicated: nothing names them).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from neonize.proto.Neonize_pb2 import Receipt

from sidecar.adapters.ingest import baileys, events
from sidecar.adapters.ingest.baileys import BadIngest, Converted, UnknownEvent
from sidecar.adapters.ingest.protojson import integer, message_from_json

#: Evolution's events the sidecar takes and does nothing with (its own sends come back
#: as ``send.message``: a neonize session never hears its own sends either).
IGNORED = frozenset(
    {
        "application.startup",
        "instance.create",
        "instance.delete",
        "remove.instance",
        "messages.set",
        "messages.delete",
        "send.message",
        "send.message.update",
        "contacts.set",
        "contacts.upsert",
        "contacts.update",
        "presence.update",
        "chats.set",
        "chats.upsert",
        "chats.update",
        "chats.delete",
        "groups.upsert",
        "groups.update",
        "group-participants.update",
        "labels.edit",
        "labels.association",
        "call",
        "typebot.start",
        "typebot.change-status",
        "status.instance",
    }
)
_STATUS_RECEIPT = {
    "DELIVERY_ACK": Receipt.DELIVERED,
    "READ": Receipt.READ,
    "PLAYED": Receipt.PLAYED,
}


def convert(body: Any, *, now: float | None = None) -> Converted:
    if not isinstance(body, Mapping) or not isinstance(body.get("event"), str):
        raise BadIngest('expected Evolution API\'s webhook body: {"event", "instance", "data"}')
    # the event as in the body (messages.upsert), or as in its settings (MESSAGES_UPSERT)
    name = body["event"].lower().replace("_", ".")
    data = body.get("data")
    at = now if now is not None else time.time()
    out = Converted()
    if name == "creds.update":
        raise BadIngest("creds.update holds the session's private keys: never forward it")
    if name == "messages.upsert":
        baileys.add_message(out, baileys.message_of(data, at))
    elif name == "messages.edited":
        _protocol(data, out, at)
    elif name == "connection.update":
        _connection(data, out)
    elif name == "qrcode.updated":
        qr = data.get("qrcode") if isinstance(data, Mapping) else None
        code = qr.get("code") if isinstance(qr, Mapping) else None
        if isinstance(code, str) and code:
            out.events.append((events.qr(code), None))
        else:
            out.ignored += 1  # "QR code limit reached": the refusal follows as connection.update
    elif name == "messages.update":
        _status(data, out)
    elif name == "logout.instance":
        out.events.append((events.logged_out(), None))
    elif name in IGNORED:
        out.ignored += 1
    else:
        raise UnknownEvent("unknown Evolution API event (docs/ingest.md lists those taken)")
    return out


def _protocol(data: Any, out: Converted, at: float) -> None:
    """A protocol message, alone (``data`` is the ``protocolMessage``; a body that wraps
    it in ``message`` is read too): counted with the chat and id left empty. One whose
    ``type`` cannot be read is unreadable, never taken for its first type (a revoke)."""
    if isinstance(data, Mapping) and isinstance(data.get("message"), Mapping):
        data = data["message"].get("protocolMessage")
    if not isinstance(data, Mapping):
        out.unreadable += 1
        return
    content = message_from_json({"protocolMessage": data})
    known = content.protocolMessage.HasField("type")
    if not known and not isinstance(data.get("type"), int):  # a number kept unknown is a type
        out.unreadable += 1
        return
    about = events.info("", events.source(None, None, from_me=False), round(at) * 1000, "")
    out.events.append((events.message_event(about, content), None))


def _connection(data: Any, out: Converted) -> None:
    if not isinstance(data, Mapping):
        raise BadIngest("connection.update: 'data' must be an object")
    state, code = data.get("state"), integer(data.get("statusReason"))
    if state == "open":
        out.events.append((events.connected(), None))
    elif state in ("close", "refused"):
        out.events.append((baileys.closed(code), None))
    else:
        out.ignored += 1  # connecting: Evolution reconnects by itself


def _status(data: Any, out: Converted) -> None:
    """A status update of a message: a receipt when it is ours and says delivered, read
    or played (Evolution names the statuses, keyId names the message)."""
    if not isinstance(data, Mapping):
        out.unreadable += 1
        return
    kind = _STATUS_RECEIPT.get(str(data.get("status")))
    message_id, chat = data.get("keyId"), data.get("remoteJid")
    if kind is None or data.get("fromMe") is not True:
        out.ignored += 1
    elif not isinstance(message_id, str) or not isinstance(chat, str):
        out.unreadable += 1
    else:
        out.events.append((events.receipt([message_id], chat, kind, 0), None))
