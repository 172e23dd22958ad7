"""The outbox's Firestore documents: the one place an :class:`OutboxItem` (Unix seconds,
None) and the existing backend's fields (Timestamps, absent) are converted.

The item's text is two fields, ``payload.text`` (what the backend's worker sends) and
``body``. Reading raises :class:`UnreadableItem` for a field the send path needs; the
ones it only reports (``clientMessageId``, ``lastError``, the past times) read as None
when they hold something odd.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from sidecar.domain import outbox
from sidecar.domain.outbox import OutboxItem, UnreadableItem
from sidecar.domain.records import SERVER_TIME, Timestamp

#: The item's fields and the document's; ``text`` is two (``payload.text``, ``body``).
FIELDS = {
    "account_id": "accountId",
    "to_jid": "toJid",
    "thread_id": "threadId",
    "client_message_id": "clientMessageId",
    "status": "status",
    "attempt_count": "attemptCount",
    "next_attempt_at": "nextAttemptAt",
    "lease_until": "leaseUntil",
    "claimed_by": "claimedBy",
    "provider_message_id": "providerMessageId",
    "last_error": "lastError",
    "created_at": "createdAt",
    "sent_at": "sentAt",
    "failed_at": "failedAt",
}
_TIMES = frozenset({"next_attempt_at", "lease_until", "created_at", "sent_at", "failed_at"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def timestamp(unix_s: float) -> datetime:
    """Firestore keeps microseconds: Unix seconds rounded to them."""
    return _EPOCH + timedelta(microseconds=round(unix_s * 1_000_000))


def seconds(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MICROSECOND / 1_000_000


def lease_of(data: Mapping[str, Any]) -> tuple[Any, Any]:
    """Who holds a stored document and until when, to compare with :func:`held_by`."""
    lease = data.get("leaseUntil")
    return data.get("claimedBy"), seconds(lease) if isinstance(lease, datetime) else lease


def held_by(claim: OutboxItem) -> tuple[str | None, float | None]:
    until = claim.lease_until
    return claim.claimed_by, None if until is None else seconds(timestamp(until))


def _fields_of(item: OutboxItem, names: Iterable[str]) -> dict[str, Any]:
    """The document's fields (dotted paths, as ``update`` takes them) for ``names``."""
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(item, name)
        if name == "text":
            out["payload.text"] = out["body"] = value
        elif name in _TIMES:
            out[FIELDS[name]] = None if value is None else timestamp(value)
        else:
            out[FIELDS[name]] = value
    return out


def new_document(item: OutboxItem) -> dict[str, Any]:
    """A new document: the fields that have a value, ``createdAt`` server time if none."""
    doc = {k: v for k, v in _fields_of(item, FIELDS).items() if v is not None}
    doc.setdefault("createdAt", firestore.SERVER_TIMESTAMP)
    doc.update(payload={"text": item.text}, body=item.text, updatedAt=firestore.SERVER_TIMESTAMP)
    return doc


def update(before: OutboxItem, after: OutboxItem) -> dict[str, Any]:
    """What turns ``before`` into ``after``: the fields that differ, and ``updatedAt``."""
    names = [
        f.name for f in fields(OutboxItem) if getattr(before, f.name) != getattr(after, f.name)
    ]
    return {**_fields_of(after, names), "updatedAt": firestore.SERVER_TIMESTAMP}


def unreadable(exc: UnreadableItem, now: float) -> dict[str, Any]:
    """Out of the queue, with the reason where the app and an operator look."""
    return {
        "status": outbox.FAILED,
        "lastError": f"unreadable: {exc.field}",
        "failedAt": timestamp(now),
        "leaseUntil": None,
        "updatedAt": firestore.SERVER_TIMESTAMP,
    }


def read(doc_id: str, data: Mapping[str, Any]) -> OutboxItem:
    """The item a document holds (see the module's docstring for odd fields)."""

    def text(field: str) -> str:
        value = data.get(field)
        if not isinstance(value, str) or not value:
            raise UnreadableItem(doc_id, field)
        return value

    def optional(field: str, kind: type, *, strict: bool = True) -> Any:
        value = data.get(field)
        if value is None or isinstance(value, kind):
            return seconds(value) if isinstance(value, datetime) else value
        if strict:
            raise UnreadableItem(doc_id, field)
        return None

    payload = data.get("payload")
    body = payload.get("text") if isinstance(payload, Mapping) else None
    if not isinstance(body, str) or not body:
        body = text("body")
    count = data.get("attemptCount", 0)
    if isinstance(count, float) and count.is_integer():
        count = int(count)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise UnreadableItem(doc_id, "attemptCount")
    status = data.get("status")
    if status not in outbox.STATUSES:
        raise UnreadableItem(doc_id, "status")
    due = optional("nextAttemptAt", datetime)
    if due is None:
        raise UnreadableItem(doc_id, "nextAttemptAt")
    return OutboxItem(
        id=doc_id,
        account_id=text("accountId"),
        to_jid=text("toJid"),
        thread_id=text("threadId"),
        text=body,
        client_message_id=optional("clientMessageId", str, strict=False),
        status=status,
        attempt_count=count,
        next_attempt_at=due,
        lease_until=optional("leaseUntil", datetime),
        claimed_by=optional("claimedBy", str),
        provider_message_id=optional("providerMessageId", str),
        last_error=optional("lastError", str, strict=False),
        created_at=optional("createdAt", datetime, strict=False),
        sent_at=optional("sentAt", datetime, strict=False),
        failed_at=optional("failedAt", datetime, strict=False),
    )


def as_stored(item: OutboxItem) -> OutboxItem:
    """``item`` as it reads back (times rounded to microseconds)."""
    return read(item.id, new_document(item))


def native(value: Any) -> Any:
    """A backend-neutral document value (:mod:`sidecar.domain.records`) as the client
    writes it."""
    if isinstance(value, Timestamp):
        return _EPOCH + timedelta(milliseconds=value.ms)
    if value is SERVER_TIME:
        return firestore.SERVER_TIMESTAMP
    if isinstance(value, dict):
        return {k: native(v) for k, v in value.items()}
    return value


def as_update(fields: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``fields`` as ``update`` takes them: a map's leaves by dotted path, so the
    document's other leaves stay (as a merge keeps them)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            out |= as_update(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = native(value)
    return out
