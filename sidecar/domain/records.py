"""What a real message becomes in the store: a message document and a thread update.

The layout is the existing backend's (docs/reference.md, "Firestore layout"):
``threads/{accountId}__{chatJid}`` and its ``messages/{whatsappMessageId}``.
Values are backend-neutral: :class:`Timestamp` for instants, :data:`SERVER_TIME`
for "when the store received it"; each backend turns them into its own types.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from sidecar.domain.classify import Classification
from sidecar.domain.facts import (
    EDIT_KIND,
    MAX_MS,
    MESSAGE_TYPES,
    MIN_MS,
    NOT_A_CHAT_SERVERS,
    MessageFacts,
    jid_string,
    message_facts,
    text_of,
    timestamp_ms,
)

__all__ = [  # what the layout's users import from here, wherever it is defined
    "EDIT_KIND",
    "MAX_MS",
    "MIN_MS",
    "NOT_A_CHAT_SERVERS",
    "PHONE_SERVER",
    "SERVER_TIME",
    "MessageDoc",
    "MessageFacts",
    "ThreadPatch",
    "Timestamp",
    "build_records",
    "document_id",
    "jid_string",
    "merge_thread_fields",
    "message_doc",
    "preview",
    "text_of",
    "thread_id",
    "thread_of",
    "thread_patch",
    "timestamp_ms",
]

PREVIEW_LENGTH = 100
#: The server of chats with a phone number (a thread of one has ``phoneE164``).
PHONE_SERVER = "s.whatsapp.net"
_WHITESPACE = re.compile(r"\s+")

#: Firestore's limit on a document id's length (the SQLite store uses the same ids).
MAX_ID_BYTES = 1500
_RESERVED_ID = re.compile(r"__.*__", re.DOTALL)


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


def document_id(value: str) -> str:
    """``value`` itself when Firestore takes it as a document id, else a stable stand-in.

    Message ids are chosen by the sending client and JIDs come off the wire: an empty
    id, a ``/``, ``.``/``..``, ``__...__`` or more than 1,500 bytes would make every
    write of the batch fail, again and again, and hold up the whole spool behind it.
    """
    if (
        0 < len(value) <= MAX_ID_BYTES // 4  # at most 4 bytes a character: short enough
        and "/" not in value
        and value not in (".", "..")
        and not (len(value) >= 4 and value.startswith("__") and value.endswith("__"))
    ):
        return value  # the common case, decided without encoding it
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


def preview(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()[:PREVIEW_LENGTH]


def build_records(
    account_id: str, event: Any, classification: Classification
) -> tuple[MessageDoc, ThreadPatch | None] | None:
    """The documents for one real message, or None when nothing is stored.

    Only real messages are stored; status posts are not a chat. The same as building
    from :func:`~sidecar.domain.facts.message_facts`, which is what the spool does."""
    facts = message_facts(account_id, event, classification)
    if facts is None:
        return None
    return message_doc(facts), thread_patch(facts)


@functools.lru_cache(maxsize=4096)
def _chat_ids(account_id: str, chat_user: str, chat_server: str) -> tuple[str, str]:
    """The chat's ``user@server`` and its thread's id (a busy chat's are asked for again
    and again; hashing an id that needs it is not free)."""
    chat = f"{chat_user}@{chat_server}" if chat_user else chat_server
    return chat, thread_id(account_id, chat)


def thread_of(facts: MessageFacts) -> str:
    """The id of the thread ``facts`` belong to."""
    return _chat_ids(facts.account_id, facts.chat_user, facts.chat_server)[1]


def message_doc(facts: MessageFacts) -> MessageDoc:
    """A message document (an edit's, for an edit), in the existing backend's layout."""
    account_id, _, _, is_group, from_me, sender, message_id, ts_ms, kind, body, media, edit = facts
    chat, tid = _chat_ids(account_id, facts.chat_user, facts.chat_server)
    fields: dict[str, Any] = {
        "accountId": account_id,
        "clientJid": chat,
        "threadId": tid,
        "direction": "outbound" if from_me else "inbound",
        "body": body,
        "messageType": MESSAGE_TYPES.get(kind, kind),
        "media": None if media is None else dict(media),
        "tsClient": Timestamp(ts_ms),
        "createdAt": SERVER_TIME,
        "updatedAt": SERVER_TIME,
        "key": {
            "id": message_id,
            "remoteJid": chat,
            "fromMe": from_me,
            "participant": sender if is_group else None,
        },
    }
    if is_group:
        fields["senderJid"] = sender
    if edit:
        fields["editedAt"] = Timestamp(ts_ms)
    return MessageDoc(account_id, tid, document_id(message_id), fields, merge=edit)


def thread_patch(facts: MessageFacts) -> ThreadPatch | None:
    """The thread update a message makes (an edit makes none)."""
    if facts.edit:
        return None
    account_id, chat_user, chat_server, is_group, from_me, _, _, ts_ms, _, body, _, _ = facts
    chat, tid = _chat_ids(account_id, chat_user, chat_server)
    direction = "outbound" if from_me else "inbound"
    fields: dict[str, Any] = {
        "accountId": account_id,
        "clientJid": chat,
        "isLid": chat_server == "lid",
        "lastMessageAt": Timestamp(ts_ms),
        "lastMessageAtMs": ts_ms,
        "lastMessageDirection": direction,
        "updatedAt": SERVER_TIME,
    }
    if chat_server == PHONE_SERVER and not is_group:
        fields["phoneE164"] = f"+{chat_user}"
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
