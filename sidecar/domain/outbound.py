"""The message document of a message the account sends, in the thread the app reads
(docs/sending.md, "Outbound message documents").

``threads/{threadId}/messages/{outboxId}``: the outbox item's id, as the existing
backend keys it, so the app finds the document it wrote when it queued the message.
Its ``status`` moves queued -> sent -> delivered -> read (or failed), one way only
(:func:`~sidecar.domain.sending.advanced`); the stores apply these fields only when
the status they carry moves the stored one forward. Values are backend-neutral, as in
:mod:`sidecar.domain.records`.
"""

from __future__ import annotations

from typing import Any

from sidecar.domain.outbox import OutboxItem
from sidecar.domain.records import SERVER_TIME, Timestamp, document_id
from sidecar.domain.sending import DELIVERED, FAILED, READ, SENT

#: Where a receipt's time goes, by the status it proves.
_RECEIPT_TIME_FIELD = {DELIVERED: "deliveredAt", READ: "readAt"}


def message_id(item: OutboxItem) -> str:
    """The message document's id: the outbox item's (a safe document id already)."""
    return document_id(item.id)


def message_document(item: OutboxItem, status: str) -> dict[str, Any]:
    """The whole document, for a message whose document is not there yet: queued by the
    endpoint, or queued by someone who wrote none (it would never appear in the thread)."""
    created_ms = round((item.created_at or 0.0) * 1000)
    doc: dict[str, Any] = {
        "accountId": item.account_id,
        "clientJid": item.to_jid,
        "threadId": item.thread_id,
        "direction": "outbound",
        "body": item.text,
        "messageType": "text",
        "media": None,
        "status": status,
        "tsClient": SERVER_TIME if item.created_at is None else Timestamp(created_ms),
        "createdAt": SERVER_TIME,
        "updatedAt": SERVER_TIME,
        "clientMessageId": item.client_message_id,
        "key": {
            "id": item.provider_message_id,
            "remoteJid": item.to_jid,
            "fromMe": True,
            "participant": None,
        },
    }
    return doc | status_fields(item, status)


def status_fields(item: OutboxItem, status: str) -> dict[str, Any]:
    """What a settled attempt changes: sent (with the WhatsApp id, under the names the
    app's duplicate check reads) or failed (with the reason)."""
    fields: dict[str, Any] = {"status": status, "updatedAt": SERVER_TIME}
    if status == SENT and item.provider_message_id:
        fields |= {
            "providerMessageId": item.provider_message_id,
            "waMessageId": item.provider_message_id,
            "key": {"id": item.provider_message_id},
        }
        if item.sent_at is not None:
            fields["sentAt"] = Timestamp(round(item.sent_at * 1000))
    elif status == FAILED:
        fields["lastError"] = item.last_error
        if item.failed_at is not None:
            fields["failedAt"] = Timestamp(round(item.failed_at * 1000))
    return fields


def receipt_fields(status: str, at: float) -> dict[str, Any]:
    """What a receipt proving ``status`` (delivered or read) changes, ``at`` its time."""
    fields: dict[str, Any] = {"status": status, "updatedAt": SERVER_TIME}
    field = _RECEIPT_TIME_FIELD.get(status)
    if field is not None:
        fields[field] = Timestamp(round(at * 1000))
    return fields


def thread_fields(item: OutboxItem) -> dict[str, Any]:
    """The thread's update when a message is queued: the existing backend marks the
    thread's last message outbound and keeps the last *received* text."""
    at_ms = round((item.created_at or 0.0) * 1000)
    user, _, server = item.to_jid.rpartition("@")
    fields: dict[str, Any] = {
        "accountId": item.account_id,
        "clientJid": item.to_jid,
        "isLid": server == "lid",
        "lastMessageAt": Timestamp(at_ms),
        "lastMessageAtMs": at_ms,
        "lastMessageDirection": "outbound",
        "updatedAt": SERVER_TIME,
    }
    if server == "s.whatsapp.net":  # as the receive side writes a one-to-one phone chat
        fields["phoneE164"] = f"+{user}"
    return fields
