"""What the store's documents of one real message are built from, read off its event.

The event path reads these few values (a few µs) and spools them; the storage
writer builds the documents from them (:mod:`sidecar.domain.records`), off the
event path. They are the minimum the documents need: no media keys, thumbnails
or push names reach the spool. Plain values in a tuple, so that they go into the
spool's journal and database as a JSON array and come back equal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ProtocolMessage

from sidecar.domain.classify import MAX_WRAPPER_DEPTH, WRAPPER_FIELDS, Classification, unwrap

#: Chats that are not conversations: nothing is stored for them.
NOT_A_CHAT_SERVERS = frozenset({"broadcast"})
EDIT_KIND = "protocolMessage.MESSAGE_EDIT"
#: The instants Firestore can hold, 0001-01-01 to 9999-12-31, in Unix milliseconds.
MIN_MS, MAX_MS = -62_135_596_800_000, 253_402_300_799_999

MESSAGE_TYPES = {
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


#: Kinds that are a field of the message itself (not a protocol message's type).
_PLAIN_FIELDS = frozenset(WAMessage.DESCRIPTOR.fields_by_name) - {"protocolMessage"}


class MessageFacts(NamedTuple):
    """One real message, as far as its documents need it."""

    account_id: str
    chat_user: str
    chat_server: str
    is_group: bool
    from_me: bool
    #: The sender's ``user@server`` in a group (None elsewhere).
    sender: str | None
    #: The id of the message the documents are about (for an edit: the edited one's).
    message_id: str
    ts_ms: int
    #: The content's kind (for an edit: the new content's).
    kind: str
    body: str
    media: dict[str, str | None] | None
    #: An edit: it updates the fields it names in an existing document.
    edit: bool

    @property
    def chat(self) -> str:
        """``user@server`` of the chat (without the device part)."""
        return f"{self.chat_user}@{self.chat_server}" if self.chat_user else self.chat_server


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


def timestamp_ms(value: int) -> int:
    """A message's own timestamp (from the sender's side), held to what a store can keep."""
    return min(MAX_MS, max(MIN_MS, int(value)))


def message_facts(
    account_id: str, event: Any, classification: Classification
) -> MessageFacts | None:
    """What the documents of a real message are built from, or None when nothing is
    stored: only real messages are, and status posts are not a chat."""
    if not classification.is_real:
        return None
    info = event.Info
    source = info.MessageSource
    chat = source.Chat
    if chat.Server in NOT_A_CHAT_SERVERS:
        return None
    message = event.Message if event.HasField("Message") else event.Raw
    kind = classification.kind
    content = _content(message, kind)
    message_id = text_of(info.ID)
    is_group = bool(source.IsGroup)
    edit = kind == EDIT_KIND
    if edit:
        # The edit names its message; the store applies it only for the message's own
        # author (sidecar.domain.authorship), and keeps it whole if the message is not there.
        edited = content.protocolMessage
        content = edited.editedMessage
        kind = _first_kind(content)
        message_id = text_of(edited.key.ID) or message_id
    return MessageFacts(
        account_id,
        text_of(chat.User),
        text_of(chat.Server),
        is_group,
        bool(source.IsFromMe),
        jid_string(source.Sender) if is_group else None,
        message_id,
        timestamp_ms(info.Timestamp),
        kind,
        _body(content, kind),
        _media(content, kind),
        edit,
    )


def _content(message: WAMessage, kind: str) -> WAMessage:
    """The (possibly wrapped) message that holds the content ``kind`` names, looked for
    in the order :func:`~sidecar.domain.classify.classify` looks: a text beside a wrapped
    image is the text, not the image's missing caption."""
    if kind in _PLAIN_FIELDS and message.HasField(kind):
        return message  # the content is the message itself (what _find looks at first)
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


def _media(content: WAMessage, kind: str) -> dict[str, str | None] | None:
    if kind not in _MEDIA_KINDS:
        return None
    media = getattr(content, kind)
    return {
        "type": MESSAGE_TYPES[kind],
        "mimetype": text_of(media.mimetype) or None,
        "caption": (text_of(media.caption) or None) if hasattr(media, "caption") else None,
        "filename": (text_of(media.fileName) or None) if kind == "documentMessage" else None,
    }
