"""Builders for neonize events as the Go side sends them (every required field set).

Used by the tests, the example captures and the benchmarks, so that all of
them exercise the same shapes that live events have. Phone numbers here are
in the +1 555 01xx range reserved for fiction.
"""

from __future__ import annotations

import itertools
from typing import Any

from neonize.events import (
    ClientOutdatedEv,
    ConnectedEv,
    ConnectFailureEv,
    DisconnectedEv,
    KeepAliveRestoredEv,
    KeepAliveTimeoutEv,
    LoggedOutEv,
    MessageEv,
    OfflineSyncCompletedEv,
    OfflineSyncPreviewEv,
    PairStatusEv,
    QREv,
    StreamReplacedEv,
    TemporaryBanEv,
    UndecryptableMessageEv,
)
from neonize.proto.Neonize_pb2 import JID, MessageInfo, MessageSource, Node
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ProtocolMessage

from sidecar.adapters.ingest import events as ingest_events

FICTIONAL_PHONE = "12025550100"
OWN_PHONE = "12025550199"
#: The account's own number in its LID form (a made-up LID).
OWN_LID = "190000000000199"
_ids = itertools.count(1)


def jid(user: str, server: str = "s.whatsapp.net", device: int = 0) -> JID:
    return JID(User=user, RawAgent=0, Device=device, Integrator=0, Server=server, IsEmpty=False)


def own(device: int = 0, *, lid: bool = False) -> JID:
    """The account's own number on ``device`` (0: its phone; another: a linked device such
    as WhatsApp Web), in phone-number or LID form, as whatsmeow names a sender."""
    return jid(OWN_LID, "lid", device) if lid else jid(OWN_PHONE, device=device)


def empty_jid() -> JID:
    return JID(User="", RawAgent=0, Device=0, Integrator=0, Server="", IsEmpty=True)


def message_source(
    chat: JID, sender: JID, *, from_me: bool = False, is_group: bool = False
) -> MessageSource:
    """Who a message or receipt is from and in which chat, every required field set."""
    return MessageSource(
        Chat=chat,
        Sender=sender,
        IsFromMe=from_me,
        IsGroup=is_group,
        SenderAlt=empty_jid(),
        RecipientAlt=empty_jid(),
        BroadcastListOwner=empty_jid(),
    )


def message_info(
    *,
    chat: JID | None = None,
    sender: JID | None = None,
    from_me: bool = False,
    is_group: bool = False,
    message_id: str | None = None,
    timestamp_ms: int = 1_764_068_400_000,
    push_name: str = "Test Person",
) -> MessageInfo:
    chat = chat or jid(FICTIONAL_PHONE)
    sender = sender or (jid(OWN_PHONE) if from_me else chat)
    return ingest_events.info(
        message_id or f"3EB0{next(_ids):016X}",
        message_source(chat, sender, from_me=from_me, is_group=is_group),
        timestamp_ms,
        push_name,
    )


def message_event(content: WAMessage | None = None, **info: Any) -> Any:
    """A ``MessageEv`` as neonize delivers it; ``flags`` like ``IsEphemeral`` may be passed."""
    flags = {
        name: info.pop(name, False)
        for name in (
            "IsEphemeral",
            "IsViewOnce",
            "IsViewOnceV2",
            "IsViewOnceV2Extension",
            "IsDocumentWithCaption",
            "IsLottieSticker",
            "IsEdit",
        )
    }
    event = MessageEv(Info=message_info(**info), UnavailableRequestID="", RetryCount=0, **flags)
    if content is not None:
        event.Message.CopyFrom(content)
    return event


def receipt(
    message_ids: list[str],
    chat: JID,
    kind: int | None = 1,
    *,
    from_me: bool = False,
    sender: JID | None = None,
    timestamp_s: int = 1_764_068_400,
) -> Any:
    """A ``ReceiptEv`` as neonize delivers it for ``message_ids`` in ``chat``; ``kind`` is
    a ``Receipt.ReceiptType`` (1: delivered), None to leave it unset. ``sender``: the
    device that sent it (the chat's by default; :func:`own` for the account's own)."""
    from neonize.events import ReceiptEv

    made = ReceiptEv(
        MessageSource=message_source(chat, sender or chat, from_me=from_me),
        MessageIDs=message_ids,
        Timestamp=timestamp_s,
    )
    if kind is not None:
        made.Type = kind
    return made


def text(body: str) -> WAMessage:
    return WAMessage(conversation=body)


def edit(message_id: str, chat_jid: str, new_text: str) -> WAMessage:
    """The edit of message ``message_id`` in chat ``chat_jid`` (``user@server``)."""
    return WAMessage(
        protocolMessage=ProtocolMessage(
            type=ProtocolMessage.MESSAGE_EDIT,
            key=MessageKey(ID=message_id, remoteJID=chat_jid),
            editedMessage=WAMessage(conversation=new_text),
        )
    )


def protocol(kind: int) -> WAMessage:
    return WAMessage(protocolMessage=ProtocolMessage(type=kind))


def history_sync_notification() -> WAMessage:
    return protocol(ProtocolMessage.HISTORY_SYNC_NOTIFICATION)


def app_state_key_share() -> WAMessage:
    return protocol(ProtocolMessage.APP_STATE_SYNC_KEY_SHARE)


def connected() -> Any:
    return ConnectedEv(status=True)


def disconnected() -> Any:
    return DisconnectedEv(status=True)


def logged_out(reason: int = 2, *, on_connect: bool = False) -> Any:
    """``on_connect``: WhatsApp refused a connection (whatsmeow's 401/403/406 connect
    failures); otherwise the device was removed while connected."""
    return LoggedOutEv(OnConnect=on_connect, Reason=reason)


def connect_failure(reason: int, message: str = "") -> Any:
    return ConnectFailureEv(Reason=reason, Message=message, Raw=Node(Tag="failure"))


def stream_replaced() -> Any:
    return StreamReplacedEv()


def temporary_ban(code: int = 1, expire_s: int = 3600) -> Any:
    """whatsmeow's answer to a connection while the number is banned: ``code`` is a
    ``TemporaryBan.TempBanReason``, ``expire_s`` the ban's remaining seconds (0: unknown)."""
    return TemporaryBanEv(Code=code, Expire=expire_s)


def client_outdated() -> Any:
    return ClientOutdatedEv()


def qr() -> Any:
    """A QR event without codes: real codes never belong in a capture."""
    return QREv()


def qr_with_code(code: str) -> Any:
    """A QR event with a (made-up) code, for tests of the re-pair page."""
    return QREv(Codes=[code])


def pair_status(success: bool) -> Any:
    return PairStatusEv(
        ID=jid(OWN_PHONE),
        BusinessName="",
        Platform="android",
        Status=PairStatusEv.PStatus.SUCCESS if success else PairStatusEv.PStatus.ERROR,
    )


def offline_sync_preview(total: int = 0) -> Any:
    return OfflineSyncPreviewEv(
        Total=total, AppDataChanges=0, Message=total, Notifications=0, Receipts=0
    )


def offline_sync_completed(count: int = 0) -> Any:
    return OfflineSyncCompletedEv(Count=count)


def keepalive_timeout(errors: int = 1, last_success: int = 0) -> Any:
    return KeepAliveTimeoutEv(ErrorCount=errors, LastSuccess=last_success)


def keepalive_restored() -> Any:
    return KeepAliveRestoredEv()


def undecryptable(**info: Any) -> Any:
    return UndecryptableMessageEv(Info=message_info(**info), IsUnavailable=False, DecryptFailMode=1)


def firestore_library_values(value: Any) -> Any:
    """A record's fields in the Firestore client library's own types, for its ``set()``:
    the oracle the raw-protobuf store is checked against, and the drain benchmark's
    baseline."""
    from datetime import UTC, datetime

    from google.cloud import firestore

    from sidecar.domain.records import SERVER_TIME, Timestamp

    if isinstance(value, Timestamp):
        return datetime.fromtimestamp(value.ms / 1000, tz=UTC)
    if value is SERVER_TIME:
        return firestore.SERVER_TIMESTAMP
    if isinstance(value, dict):
        return {k: firestore_library_values(v) for k, v in value.items()}
    return value
