"""Decide whether a WhatsApp message is real content, protocol traffic or neither.

This is the measurement the whole sidecar exists for: a session that only
receives protocol traffic looks alive but is deaf. The rules follow the
contract's "Classes" section; the schema comes from neonize's own protobuf
classes, so a field WhatsApp adds later is seen as soon as neonize knows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from google.protobuf.unknown_fields import UnknownFieldSet
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import FutureProofMessage, ProtocolMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage


class MessageClass(StrEnum):
    REAL = "real"
    PROTOCOL = "protocol"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Classification:
    message_class: MessageClass
    kind: str

    @property
    def is_real(self) -> bool:
        return self.message_class is MessageClass.REAL


EMPTY = Classification(MessageClass.OTHER, "empty")
UNDECODABLE = Classification(MessageClass.OTHER, "undecodable")
UNKNOWN = Classification(MessageClass.OTHER, "unknown")

#: Containers whose only job is to carry another message: ephemeral, view-once
#: (all versions), document-with-caption, edited, lottie sticker, bot invoke,
#: ... (every ``FutureProofMessage`` field) and the device-sent copy of an
#: outbound message. They are unwrapped and the content inside decides.
WRAPPER_FIELDS: frozenset[str] = frozenset(
    {
        field.name
        for field in WAMessage.DESCRIPTOR.fields
        if field.message_type is FutureProofMessage.DESCRIPTOR
    }
    | {"deviceSentMessage"}
)

#: Fields that are traffic between devices and servers, or actions with no
#: content of their own. The number ranks them when several ride together:
#: a protocolMessage names the exchange better than the key material or the
#: context info that accompanies it.
PROTOCOL_FIELDS: dict[str, int] = {
    "protocolMessage": 0,
    "keepInChatMessage": 1,
    "pinInChatMessage": 1,
    "stickerSyncRmrMessage": 1,
    "groupRootKeyShare": 1,
    "rootSecretDistributeMessage": 1,
    "messageHistoryBundle": 1,
    "messageHistoryNotice": 1,
    "statusNotificationMessage": 1,
    "statusLinkPreviewMetadata": 1,
    "chat": 1,
    "senderKeyDistributionMessage": 2,
    "fastRatchetKeySenderKeyDistributionMessage": 2,
    "messageContextInfo": 3,
}

#: Content that exists but this linked device cannot read: the phone sends a
#: placeholder instead of the message.
UNREADABLE_FIELDS: frozenset[str] = frozenset({"placeholderMessage"})

#: protocolMessage types that carry content a person wrote: an edit replaces
#: the text of a message in the chat.
REAL_PROTOCOL_TYPES: frozenset[int] = frozenset({ProtocolMessage.MESSAGE_EDIT})

#: Protobuf allows ~100 levels; no real message nests wrappers more than a few.
MAX_WRAPPER_DEPTH = 8


#: A real message's classification, made once per field (one per message cost ~1 µs).
_REAL = {
    name: Classification(MessageClass.REAL, name) for name in WAMessage.DESCRIPTOR.fields_by_name
}


def classify(message: WAMessage | None) -> Classification:
    """Classify one ``waE2E.Message`` (the ``Message`` of a ``MessageEv``).

    Real content wins over anything riding beside it; then protocol traffic;
    a message with nothing in it is ``other``/``empty``.
    """
    if message is None:
        return EMPTY
    found = _classify(message, depth=0)
    return found if found is not None else EMPTY


def _classify(message: WAMessage, depth: int) -> Classification | None:
    protocol: Classification | None = None
    protocol_rank = len(PROTOCOL_FIELDS)
    unreadable: Classification | None = None
    for field, value in message.ListFields():
        name = field.name
        if name in WRAPPER_FIELDS:
            inner = _wrapped(value)
            if inner is None or depth >= MAX_WRAPPER_DEPTH:
                continue
            found = _classify(inner, depth + 1)
            if found is None:
                continue
            if found.message_class is MessageClass.REAL:
                return found
            if found.message_class is MessageClass.PROTOCOL and protocol is None:
                protocol, protocol_rank = found, len(PROTOCOL_FIELDS) - 1
            elif found.message_class is MessageClass.OTHER and unreadable is None:
                unreadable = found
            continue
        if name == "protocolMessage":
            kind = f"protocolMessage.{ProtocolMessage.Type.Name(value.type)}"
            if value.type in REAL_PROTOCOL_TYPES:
                return Classification(MessageClass.REAL, kind)
            if PROTOCOL_FIELDS[name] < protocol_rank:
                protocol, protocol_rank = Classification(MessageClass.PROTOCOL, kind), 0
            continue
        rank = PROTOCOL_FIELDS.get(name)
        if rank is not None:
            if rank < protocol_rank:
                protocol, protocol_rank = Classification(MessageClass.PROTOCOL, name), rank
            continue
        if name in UNREADABLE_FIELDS:
            unreadable = unreadable or Classification(MessageClass.OTHER, name)
            continue
        return _REAL.get(name) or Classification(MessageClass.REAL, name)
    if protocol is not None:
        return protocol
    if unreadable is not None:
        return unreadable
    if len(UnknownFieldSet(message)):
        # Fields newer than this neonize: we cannot tell what they are.
        return UNKNOWN
    return None


def _wrapped(value: Any) -> WAMessage | None:
    """The message inside a wrapper field, or None when it carries nothing."""
    if value.HasField("message"):
        inner: WAMessage = value.message
        return inner
    return None


def unwrap(message: WAMessage) -> WAMessage:
    """The message inside any wrappers (ephemeral, view-once, edited, device-sent, ...)."""
    for _ in range(MAX_WRAPPER_DEPTH):
        for field, value in message.ListFields():
            if field.name in WRAPPER_FIELDS:
                inner = _wrapped(value)
                if inner is not None:
                    message = inner
                    break
        else:
            return message
    return message
