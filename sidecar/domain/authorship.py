"""Who may change a stored message (docs/security.md, "Stored messages").

WhatsApp lets any peer send any message id and any edit, naming any message. A
message's author is its key's ``fromMe`` and, in groups, its ``participant``; the
stores read what they hold and apply :func:`resolve` to every message operation:

- a new message whose id the store already holds from another author is kept under an
  id of its own (:func:`own_id`), never over the first;
- an edit changes a message only when it comes from that message's author, and only
  if it is newer than the edit the message already carries;
- an edit whose message is not stored (it arrived first, or the message is older than
  the pairing) becomes the message, a whole document with ``createdAt``; when the
  message itself arrives, it fills in the rest and keeps the edited body.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sidecar.domain.records import MessageDoc, Timestamp, document_id

#: (fromMe, participant): participant is None outside groups.
Author = tuple[bool, str | None]

#: What an edit changes in a message that is stored.
EDIT_FIELDS = ("body", "editedAt", "updatedAt")
#: What a message that is stored already keeps when it is written again.
_KEPT_ON_REWRITE = ("createdAt",)
_KEPT_WHEN_EDITED = ("createdAt", "body", "editedAt")

#: The outcomes counted in ``whatsapp_message_conflicts_total``.
EDIT_REFUSED = "edit_refused"
ID_REUSED = "id_reused"
CONFLICT_OUTCOMES = (EDIT_REFUSED, ID_REUSED)


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store holds of a message document, as far as authorship goes."""

    author: Author | None
    edited_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Write:
    """One document write: the whole document (``merge`` False) or the fields named."""

    message_id: str
    fields: dict[str, Any]
    merge: bool


@dataclass(frozen=True, slots=True)
class Resolution:
    #: None: nothing is written.
    write: Write | None
    #: What the store holds under ``doc.message_id`` afterwards.
    stored: Stored | None
    #: ``created``, ``rewritten``, ``edited``, ``created_from_edit``, ``stale_edit``,
    #: or one of :data:`CONFLICT_OUTCOMES`.
    outcome: str


def author_of(fields: dict[str, Any]) -> Author | None:
    key = fields.get("key")
    if not isinstance(key, dict) or not isinstance(key.get("fromMe"), bool):
        return None
    participant = key.get("participant")
    return key["fromMe"], participant if isinstance(participant, str) else None


def edited_at_ms(fields: dict[str, Any]) -> int | None:
    value = fields.get("editedAt")
    return value.ms if isinstance(value, Timestamp) else None


def own_id(message_id: str, author: Author) -> str:
    """The id a message is kept under when another author's message holds its id: the
    same for every copy of it, so a replay leaves one document."""
    who = f"{int(author[0])}:{author[1] or ''}".encode("utf-8", "surrogatepass")
    return document_id(f"{message_id}~{hashlib.sha256(who).hexdigest()[:16]}")


def resolve(doc: MessageDoc, stored: Stored | None) -> Resolution:
    """What ``doc`` (a new message, or an edit when ``doc.merge``) does to the store,
    given what the store holds under its id (None: nothing)."""
    author = author_of(doc.fields)
    if doc.merge:
        return _edit(doc, author, stored)
    if stored is None:
        return Resolution(Write(doc.message_id, doc.fields, merge=False), Stored(author), "created")
    if author is None or author != stored.author:
        alone = own_id(doc.message_id, author or (False, None))
        return Resolution(Write(alone, doc.fields, merge=False), stored, ID_REUSED)
    kept = _KEPT_ON_REWRITE if stored.edited_at_ms is None else _KEPT_WHEN_EDITED
    fields = {k: v for k, v in doc.fields.items() if k not in kept}
    return Resolution(Write(doc.message_id, fields, merge=True), stored, "rewritten")


def _edit(doc: MessageDoc, author: Author | None, stored: Stored | None) -> Resolution:
    at = edited_at_ms(doc.fields)
    if stored is None:
        if author is None or "createdAt" not in doc.fields:  # spooled by an older version
            return Resolution(None, None, EDIT_REFUSED)
        write = Write(doc.message_id, doc.fields, merge=False)
        return Resolution(write, Stored(author, at), "created_from_edit")
    if author is None or author != stored.author:
        return Resolution(None, stored, EDIT_REFUSED)
    if stored.edited_at_ms is not None and (at is None or at < stored.edited_at_ms):
        return Resolution(None, stored, "stale_edit")
    fields = {k: doc.fields[k] for k in EDIT_FIELDS if k in doc.fields}
    return Resolution(Write(doc.message_id, fields, merge=True), Stored(author, at), "edited")
