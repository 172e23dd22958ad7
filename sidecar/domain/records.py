"""What a real message becomes in the store: a message document and a thread update.

The layout is the existing backend's (docs/reference.md, "Firestore layout"):
``threads/{accountId}__{chatJid}`` and its ``messages/{whatsappMessageId}``.
Values are backend-neutral: :class:`Timestamp` for instants, :data:`SERVER_TIME`
for "when the store received it"; each backend turns them into its own types.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ProtocolMessage

from sidecar.domain.classify import MAX_WRAPPER_DEPTH, WRAPPER_FIELDS, Classification, unwrap

PREVIEW_LENGTH = 100
_WHITESPACE = re.compile(r"\s+")

#: Chats that are not conversations: nothing is stored for them.
NOT_A_CHAT_SERVERS = frozenset({"broadcast"})

_MESSAGE_TYPES = {
    "conversation": "text",
    "extendedTextMessage": "text",
    "imageMessage": "image",
    "videoMessage": "video",
    "ptvMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
    "locationMessage": "location",
    "liveLocationMessage": "location",
    "contactMessage": "contact",
    "contactsArrayMessage": "contact",
    "pollCreationMessage": "poll",
    "pollCreationMessageV2": "poll",
    "pollCreationMessageV3": "poll",
    "pollUpdateMessage": "poll_vote",
    "reactionMessage": "reaction",
}
_MEDIA_KINDS = frozenset(
    {
        "imageMessage",
        "videoMessage",
        "ptvMessage",
        "audioMessage",
        "documentMessage",
        "stickerMessage",
    }
)
EDIT_KIND = "protocolMessage.MESSAGE_EDIT"

#: Firestore's limit on a document id's length (the SQLite store uses the same ids).
MAX_ID_BYTES = 1500
_RESERVED_ID = re.compile(r"__.*__", re.DOTALL)
#: The instants Firestore can hold, 0001-01-01 to 9999-12-31, in Unix milliseconds.
MIN_MS, MAX_MS = -62_135_596_800_000, 253_402_300_799_999


@dataclass(frozen=True, slots=True)
class Timestamp:
    """An instant, in Unix milliseconds."""

    ms: int


class _ServerTime:
    def __repr__(self) -> str:
        return "SERVER_TIME"


SERVER_TIME: Any = _ServerTime()


@dataclass(frozen=True, slots=True)
class MessageDoc:
    account_id: str
    thread_id: str
    message_id: str
    fields: dict[str, Any]
    #: An edit updates the fields it names in an existing document.
    merge: bool = False


@dataclass(frozen=True, slots=True)
class ThreadPatch:
    account_id: str
    thread_id: str
    fields: dict[str, Any]


def text_of(value: Any) -> str:
    """A protobuf string field as text. Go does not check proto2 strings for UTF-8, and
    the Python binding hands one that is not valid UTF-8 over as ``bytes``: it becomes
    text with replacement characters, not ``b'...'`` (and not a value JSON refuses)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def jid_string(jid: Any) -> str:
    """``user@server`` without the device part (chat JIDs never carry one)."""
    user, server = text_of(jid.User), text_of(jid.Server)
    return f"{user}@{server}" if user else server


def document_id(value: str) -> str:
    """``value`` itself when Firestore takes it as a document id, else a stable stand-in.

    Message ids are chosen by the sending client and JIDs come off the wire: an empty
    id, a ``/``, ``.``/``..``, ``__...__`` or more than 1,500 bytes would make every
    write of the batch fail, again and again, and hold up the whole spool behind it.
    """
    encoded = value.encode("utf-8", "surrogatepass")
    if (
        value
        and "/" not in value
        and value not in (".", "..")
        and not _RESERVED_ID.fullmatch(value)
        and len(encoded) <= MAX_ID_BYTES
    ):
        return value
    return "~" + hashlib.sha256(encoded).hexdigest()


def thread_id(account_id: str, chat_jid: str) -> str:
    return document_id(f"{account_id}__{chat_jid}")


def timestamp_ms(value: int) -> int:
    """A message's own timestamp (from the sender's side), held to what a store can keep."""
    return min(MAX_MS, max(MIN_MS, int(value)))


def preview(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()[:PREVIEW_LENGTH]


def build_records(
    account_id: str, event: Any, classification: Classification
) -> tuple[MessageDoc, ThreadPatch | None] | None:
    """The documents for one real message, or None when nothing is stored.

    Only real messages are stored; status posts are not a chat.
    """
    if not classification.is_real:
        return None
    info = event.Info
    source = info.MessageSource
    if source.Chat.Server in NOT_A_CHAT_SERVERS:
        return None
    message = event.Message if event.HasField("Message") else event.Raw
    kind = classification.kind
    content = _content(message, kind)
    chat = jid_string(source.Chat)
    tid = thread_id(account_id, chat)
    message_id = text_of(info.ID)
    ts_ms = timestamp_ms(info.Timestamp)
    if kind == EDIT_KIND:
        # The edit names its message; the store applies it only for the message's own
        # author (sidecar.domain.authorship), and keeps it whole if the message is not there.
        edited = content.protocolMessage
        new_content = edited.editedMessage
        new_kind = _first_kind(new_content)
        target = text_of(edited.key.ID) or message_id
        fields = _message_fields(
            account_id, chat, tid, source, target, ts_ms, new_content, new_kind
        ) | {"editedAt": Timestamp(ts_ms)}
        return MessageDoc(account_id, tid, document_id(target), fields, merge=True), None
    fields = _message_fields(account_id, chat, tid, source, message_id, ts_ms, content, kind)
    return MessageDoc(account_id, tid, document_id(message_id), fields), _thread_patch(
        account_id, tid, chat, source, fields["direction"], ts_ms, fields["body"]
    )


def _message_fields(
    account_id: str,
    chat: str,
    tid: str,
    source: Any,
    message_id: str,
    ts_ms: int,
    content: WAMessage,
    kind: str,
) -> dict[str, Any]:
    """A message document's fields, in the existing backend's layout."""
    fields: dict[str, Any] = {
        "accountId": account_id,
        "clientJid": chat,
        "threadId": tid,
        "direction": "outbound" if source.IsFromMe else "inbound",
        "body": _body(content, kind),
        "messageType": _MESSAGE_TYPES.get(kind, kind),
        "media": _media(content, kind),
        "tsClient": Timestamp(ts_ms),
        "createdAt": SERVER_TIME,
        "updatedAt": SERVER_TIME,
        "key": {
            "id": message_id,
            "remoteJid": chat,
            "fromMe": bool(source.IsFromMe),
            "participant": jid_string(source.Sender) if source.IsGroup else None,
        },
    }
    if source.IsGroup:
        fields["senderJid"] = jid_string(source.Sender)
    return fields


def _content(message: WAMessage, kind: str) -> WAMessage:
    """The (possibly wrapped) message that holds the content ``kind`` names, looked for
    in the order :func:`~sidecar.domain.classify.classify` looks: a text beside a wrapped
    image is the text, not the image's missing caption."""
    field, _, protocol_type = kind.partition(".")
    if field not in WAMessage.DESCRIPTOR.fields_by_name:
        return unwrap(message)
    wanted = ProtocolMessage.Type.Value(protocol_type) if protocol_type else None

    def holds(candidate: WAMessage) -> bool:
        return candidate.HasField(field) and (
            wanted is None or candidate.protocolMessage.type == wanted
        )

    found = _find(message, holds, 0)
    return unwrap(message) if found is None else found


def _find(message: WAMessage, holds: Callable[[WAMessage], bool], depth: int) -> WAMessage | None:
    if holds(message):
        return message
    if depth >= MAX_WRAPPER_DEPTH:
        return None
    for field, value in message.ListFields():
        if field.name in WRAPPER_FIELDS and value.HasField("message"):
            found = _find(value.message, holds, depth + 1)
            if found is not None:
                return found
    return None


def _thread_patch(
    account_id: str, tid: str, chat: str, source: Any, direction: str, ts_ms: int, body: str
) -> ThreadPatch:
    fields: dict[str, Any] = {
        "accountId": account_id,
        "clientJid": chat,
        "isLid": source.Chat.Server == "lid",
        "lastMessageAt": Timestamp(ts_ms),
        "lastMessageAtMs": ts_ms,
        "lastMessageDirection": direction,
        "updatedAt": SERVER_TIME,
    }
    if source.Chat.Server == "s.whatsapp.net" and not source.IsGroup:
        fields["phoneE164"] = f"+{text_of(source.Chat.User)}"
    if direction == "inbound":
        fields |= {
            "lastInboundAt": Timestamp(ts_ms),
            "lastInboundAtMs": ts_ms,
            "lastMessageText": body,
            "lastMessagePreview": preview(body),
        }
    return ThreadPatch(account_id, tid, fields)


_INBOUND_FIELDS = ("lastInboundAt", "lastInboundAtMs", "lastMessageText", "lastMessagePreview")


def merge_thread_fields(older: dict[str, Any], newer: dict[str, Any]) -> dict[str, Any]:
    """Coalesce two pending thread updates; the later message wins each group of fields,
    so a backlog delivered out of order never rewinds the thread."""
    merged = dict(older)
    general = {k: v for k, v in newer.items() if k not in _INBOUND_FIELDS}
    if newer.get("lastMessageAtMs", 0) >= older.get("lastMessageAtMs", 0):
        merged |= general
    else:
        merged |= {k: v for k, v in general.items() if k not in older}
    if "lastInboundAtMs" in newer and newer["lastInboundAtMs"] >= older.get("lastInboundAtMs", -1):
        merged |= {k: newer[k] for k in _INBOUND_FIELDS}
    return merged


def _first_kind(message: WAMessage) -> str:
    fields = message.ListFields()
    return fields[0][0].name if fields else ""


def _body(content: WAMessage, kind: str) -> str:
    if kind == "conversation":
        return text_of(content.conversation)
    if kind == "extendedTextMessage":
        return text_of(content.extendedTextMessage.text)
    if kind in ("imageMessage", "videoMessage", "ptvMessage", "documentMessage"):
        return text_of(getattr(content, kind).caption)
    if kind.startswith("pollCreationMessage"):
        return text_of(getattr(content, kind).name)
    if kind == "reactionMessage":
        return text_of(content.reactionMessage.text)
    if kind in ("locationMessage", "liveLocationMessage"):
        location = getattr(content, kind)
        return text_of(getattr(location, "name", "") or getattr(location, "caption", ""))
    if kind in ("contactMessage", "contactsArrayMessage"):
        return text_of(getattr(content, kind).displayName)
    return ""


def _media(content: WAMessage, kind: str) -> dict[str, Any] | None:
    if kind not in _MEDIA_KINDS:
        return None
    media = getattr(content, kind)
    return {
        "type": _MESSAGE_TYPES[kind],
        "mimetype": text_of(media.mimetype) or None,
        "caption": (text_of(media.caption) or None) if hasattr(media, "caption") else None,
        "filename": (text_of(media.fileName) or None) if kind == "documentMessage" else None,
    }
