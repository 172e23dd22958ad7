"""Baileys' events, as a forwarder beside a Baileys socket posts them
(``{"event": "<name>", "data": <its argument>}``), as the neonize events they stand for
(docs/ingest.md, "Baileys").

Every decrypted message reaches ``messages.upsert``, protocol traffic included, so an
ingest account is measured as a neonize one is. ``connection.update`` drives the
connection state (its close code says logged out, replaced or banned); the status
updates of our own messages are receipts. Events that say nothing the sidecar measures
are accepted and ignored; ``creds.update`` (the session's private keys) is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from neonize.proto.Neonize_pb2 import ConnectFailureReason, Receipt

from sidecar.adapters.ingest import events
from sidecar.adapters.ingest.protojson import integer, message_from_json

#: Events a Baileys socket emits that the sidecar takes and does nothing with.
IGNORED = frozenset(
    {
        "messaging-history.set",
        "messaging-history.status",
        "chats.upsert",
        "chats.update",
        "chats.delete",
        "chats.lock",
        "contacts.upsert",
        "contacts.update",
        "presence.update",
        "messages.delete",
        "messages.reaction",
        "messages.media-update",
        "groups.upsert",
        "groups.update",
        "group-participants.update",
        "group.join-request",
        "group.member-tag.update",
        "blocklist.set",
        "blocklist.update",
        "call",
        "labels.edit",
        "labels.association",
        "lid-mapping.update",
        "message-capping.update",
        "newsletter.reaction",
        "newsletter.view",
        "newsletter-participants.update",
        "newsletter-settings.update",
        "settings.update",
    }
)
#: A close code and the event it stands for (Baileys' DisconnectReason): logged out,
#: replaced by another client, refused (403: WhatsApp refuses the number, a ban); any
#: other closes a connection the gateway opens again: disconnected.
_CLOSED: dict[int, Callable[[], Any]] = {
    401: events.logged_out,
    440: events.stream_replaced,
    403: lambda: events.refused(ConnectFailureReason.TEMP_BANNED),
}
#: A status update of a message we sent, as the receipt it is (WebMessageInfo.Status).
_STATUS_RECEIPT = {
    3: Receipt.DELIVERED,
    "DELIVERY_ACK": Receipt.DELIVERED,
    4: Receipt.READ,
    "READ": Receipt.READ,
    5: Receipt.PLAYED,
    "PLAYED": Receipt.PLAYED,
}
#: ``messageStubType`` of a message that could not be decrypted.
_CIPHERTEXT = (2, "CIPHERTEXT")


class BadIngest(ValueError):
    """A body that is not what the format says; the message names what, never a value."""


class UnknownEvent(BadIngest):
    """An event name the format does not know."""


#: A message's identity: chat, participant, from us, id (ids are unique per sender).
MessageKey = tuple[str, str, bool, str]


@dataclass
class Converted:
    """What one request stands for: events in order (each with its message key, for
    the dedupe, or None), and what was left out."""

    events: list[tuple[Any, MessageKey | None]] = field(default_factory=list)
    ignored: int = 0
    unreadable: int = 0


def convert(body: Any, *, now: float | None = None) -> Converted:
    if not isinstance(body, Mapping) or not isinstance(body.get("event"), str):
        raise BadIngest('expected {"event": "<Baileys event name>", "data": ...}')
    name, data = body["event"], body.get("data")
    out = Converted()
    if name == "creds.update":
        raise BadIngest("creds.update holds the session's private keys: never forward it")
    if name == "messages.upsert":
        _messages(data, out, now if now is not None else time.time())
    elif name == "connection.update":
        _connection(data, out)
    elif name == "messages.update":
        _status_updates(data, out)
    elif name == "message-receipt.update":
        _receipts(data, out)
    elif name in IGNORED:
        out.ignored += 1
    else:
        raise UnknownEvent("unknown Baileys event (docs/ingest.md lists those taken)")
    return out


def _messages(data: Any, out: Converted, now: float) -> None:
    if not isinstance(data, Mapping) or not isinstance(data.get("messages"), list):
        raise BadIngest("messages.upsert: 'data.messages' must be a list")
    for message in data["messages"]:
        add_message(out, message_of(message, now))


def add_message(out: Converted, converted: tuple[Any, MessageKey] | bool | None) -> None:
    """What :func:`message_of` made of a message, into ``out``."""
    if converted is None:
        out.unreadable += 1
    elif isinstance(converted, tuple):
        out.events.append(converted)
    else:
        out.ignored += 1


def message_of(message: Any, now: float) -> tuple[Any, MessageKey] | bool | None:
    """The event a WAMessage stands for; None when it cannot be read, False when it is
    no message event (a stub of another kind)."""
    if not isinstance(message, Mapping) or not isinstance(message.get("key"), Mapping):
        return None
    key = message["key"]
    message_id, chat = key.get("id"), key.get("remoteJid")
    if not isinstance(message_id, str) or not message_id or not isinstance(chat, str):
        return None
    from_me = key.get("fromMe") is True
    participant = key.get("participant") if isinstance(key.get("participant"), str) else ""
    seconds = integer(message.get("messageTimestamp"))
    about = events.info(
        message_id,
        events.source(chat, participant or chat, from_me=from_me),
        (seconds if seconds is not None and seconds > 0 else round(now)) * 1000,
        events.text_of(message, "pushName"),
    )
    identity: MessageKey = (chat, participant, from_me, message_id)
    content = message.get("message")
    if isinstance(content, Mapping):
        return events.message_event(about, message_from_json(content)), identity
    if message.get("messageStubType") in _CIPHERTEXT:
        return events.undecryptable(about), identity
    return False


def _connection(data: Any, out: Converted) -> None:
    if not isinstance(data, Mapping):
        raise BadIngest("connection.update: 'data' must be an object")
    qr = data.get("qr")
    if isinstance(qr, str) and qr:
        out.events.append((events.qr(qr), None))
    state = data.get("connection")
    if state == "open":
        out.events.append((events.connected(), None))
    elif state == "close":
        out.events.append((closed(_close_code(data.get("lastDisconnect"))), None))
    if data.get("receivedPendingNotifications") is True:  # what waited offline is in
        out.events.append((events.offline_sync_completed(), None))
    if not out.events:
        out.ignored += 1  # connecting, isOnline ...


def closed(code: int | None) -> Any:
    """The event a connection closed with ``code`` stands for."""
    return _CLOSED.get(code or 0, events.disconnected)()


def _close_code(last: Any) -> int | None:
    """The close code, flattened by the forwarder (``statusCode``) or as a Boom error
    serialises (``error.output.statusCode``)."""
    if not isinstance(last, Mapping):
        return None
    code = integer(last.get("statusCode"))
    if code is None:
        error = last.get("error")
        output = error.get("output") if isinstance(error, Mapping) else None
        code = integer(output.get("statusCode")) if isinstance(output, Mapping) else None
    return code


def _status_updates(data: Any, out: Converted) -> None:
    if not isinstance(data, list):
        raise BadIngest("messages.update: 'data' must be a list")
    for entry in data:
        key = entry.get("key") if isinstance(entry, Mapping) else None
        update = entry.get("update") if isinstance(entry, Mapping) else None
        if not isinstance(key, Mapping) or not isinstance(update, Mapping):
            out.unreadable += 1
            continue
        kind = _STATUS_RECEIPT.get(update.get("status"))
        if kind is None or key.get("fromMe") is not True:
            out.ignored += 1  # a server ack, an edit, someone else's message ...
            continue
        made = _receipt_of(key, kind, update.get("messageTimestamp"))
        if made is None:
            out.unreadable += 1
        else:
            out.events.append(made)


def _receipts(data: Any, out: Converted) -> None:
    """Group receipts: one per participant that received, read or played our message."""
    if not isinstance(data, list):
        raise BadIngest("message-receipt.update: 'data' must be a list")
    for entry in data:
        key = entry.get("key") if isinstance(entry, Mapping) else None
        receipt = entry.get("receipt") if isinstance(entry, Mapping) else None
        if not isinstance(key, Mapping) or not isinstance(receipt, Mapping):
            out.unreadable += 1
            continue
        for field_name, kind in (
            ("playedTimestamp", Receipt.PLAYED),
            ("readTimestamp", Receipt.READ),
            ("receiptTimestamp", Receipt.DELIVERED),
        ):
            if receipt.get(field_name) is not None and key.get("fromMe") is True:
                made = _receipt_of(key, kind, receipt.get(field_name))
                if made is not None:
                    out.events.append(made)
                break
        else:
            out.ignored += 1


def _receipt_of(key: Mapping[str, Any], kind: int, at: Any) -> tuple[Any, None] | None:
    message_id, chat = key.get("id"), key.get("remoteJid")
    if not isinstance(message_id, str) or not isinstance(chat, str):
        return None
    seconds = integer(at)
    return events.receipt([message_id], chat, kind, seconds or 0), None
