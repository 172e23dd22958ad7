"""What a send request becomes, and how a sent message's status moves (docs/sending.md).

Pure rules, shared by the send endpoint, the outbox worker and the receipt handler:
the recipient and thread a request names, the text WhatsApp takes, the outbox id a
``clientMessageId`` gives (the existing backend's), and the one-way status of an
outbound message as WhatsApp's receipts move it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sidecar.domain.records import document_id

#: WhatsApp's longest text, in characters (its own clients stop there).
MAX_TEXT_CHARS = 65_536
#: A phone number as E.164 has it: up to 15 digits, the country code first.
_PHONE = re.compile(r"\+?[0-9]{7,15}")
#: The JIDs a message can be sent to, by server: a user by phone number, a group,
#: a user by LID. Group ids are digits, or (older groups) creator-digits '-' time.
_JID = {
    "s.whatsapp.net": re.compile(r"[0-9]{7,15}"),
    "g.us": re.compile(r"[0-9]{5,30}(-[0-9]{5,20})?"),
    "lid": re.compile(r"[0-9]{5,30}"),
}
#: The existing backend's outbox ids: a clientMessageId, anything outside these as '_'.
_OUTBOX_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_CLIENT_MESSAGE_ID = 200


class BadSendRequest(ValueError):
    """A send request that cannot be sent; the message names the field, never its value."""


class TextTooLong(BadSendRequest):
    """Longer than WhatsApp's limit (the HTTP side answers 413)."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """Whom a message goes to: ``user@server``, as WhatsApp addresses it."""

    user: str
    server: str

    @property
    def jid(self) -> str:
        return f"{self.user}@{self.server}"

    @property
    def is_group(self) -> bool:
        return self.server == "g.us"


def recipient(to: object) -> Recipient:
    """A phone number (digits, an optional ``+``, spaces and dashes allowed) or a JID
    (``@s.whatsapp.net``, ``@g.us``, ``@lid``, without a device part)."""
    if not isinstance(to, str) or not to.strip():
        raise BadSendRequest("'to' must be a phone number or a WhatsApp JID")
    value = to.strip()
    if "@" in value:
        user, _, server = value.rpartition("@")
        shape = _JID.get(server)
        if shape is None or not shape.fullmatch(user):
            raise BadSendRequest(
                "'to' is not a JID this sidecar sends to (@s.whatsapp.net, @g.us or @lid,"
                " digits before the @, no device part)"
            )
        return Recipient(user, server)
    digits = re.sub(r"[\s-]", "", value)
    if not _PHONE.fullmatch(digits):
        raise BadSendRequest(
            "'to' is not a phone number: 7 to 15 digits with the country code, an optional +"
        )
    return Recipient(digits.removeprefix("+"), "s.whatsapp.net")


def text(message: object) -> str:
    """The text to send: a non-empty string WhatsApp takes."""
    if not isinstance(message, str) or not message.strip():
        raise BadSendRequest("'message' must be a non-empty string")
    if len(message) > MAX_TEXT_CHARS:
        raise TextTooLong(f"'message' is longer than WhatsApp takes ({MAX_TEXT_CHARS} characters)")
    return message


def thread_of(account_id: str, to: Recipient, given: object = None) -> str:
    """The thread a sent message belongs to: the caller's, when it is one of this
    account's (``{accountId}__...``), else the account's thread with the recipient."""
    if isinstance(given, str) and given.strip().startswith(f"{account_id}__"):
        return document_id(given.strip())
    return document_id(f"{account_id}__{to.jid}")


def client_message_id(given: object, fallback: str) -> str:
    """The caller's idempotency key, or ``fallback`` (a fresh id) when it gave none."""
    if given is None:
        return fallback
    if not isinstance(given, str) or not given.strip():
        raise BadSendRequest("'clientMessageId' must be a non-empty string")
    if len(given.strip()) > MAX_CLIENT_MESSAGE_ID:
        raise BadSendRequest(f"'clientMessageId' is longer than {MAX_CLIENT_MESSAGE_ID} characters")
    return given.strip()


def outbox_id(client_id: str) -> str:
    """The outbox document id of a clientMessageId, as the existing backend makes it."""
    return document_id(_OUTBOX_UNSAFE.sub("_", client_id))


# -- the status of an outbound message ---------------------------------------------------

QUEUED, SENT, DELIVERED, READ, FAILED = "queued", "sent", "delivered", "read", "failed"
#: Each status is a step along one way; a receipt never moves a message back.
_ORDER = {QUEUED: 0, FAILED: 0, SENT: 1, DELIVERED: 2, READ: 3}


def advanced(current: str | None, new: str) -> bool:
    """Whether ``new`` moves a message whose status is ``current`` forward: a late
    delivered receipt never turns a read message back, and a message that reached
    WhatsApp is never marked failed afterwards."""
    if current is None or current not in _ORDER:
        return True
    if new == FAILED:
        return current == QUEUED
    return _ORDER[new] > _ORDER[current]
