"""The neonize events a gateway's JSON stands for, built with neonize's own classes and
every required field set, so the pipeline, the recorder and replay take them as they
take live ones (docs/ingest.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neonize.events import (
    ConnectedEv,
    ConnectFailureEv,
    DisconnectedEv,
    LoggedOutEv,
    MessageEv,
    OfflineSyncCompletedEv,
    QREv,
    ReceiptEv,
    StreamReplacedEv,
    UndecryptableMessageEv,
)
from neonize.proto.Neonize_pb2 import JID, ConnectFailureReason, MessageInfo, MessageSource, Node
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

#: WhatsApp's servers, as JIDs carry them after the ``@``.
GROUP_SERVER = "g.us"


def jid(value: Any) -> JID:
    """``user[:device]@server`` (Baileys writes JIDs as strings) as neonize's JID; an
    empty one for anything else."""
    if not isinstance(value, str) or "@" not in value:
        return JID(User="", RawAgent=0, Device=0, Integrator=0, Server="", IsEmpty=True)
    user, _, server = value.rpartition("@")
    user, _, device = user.partition(":")
    user = user.partition("_")[0]  # Baileys' agent suffix (user_agent:device)
    return JID(
        User=user,
        RawAgent=0,
        Device=int(device) if device.isdigit() and len(device) < 6 else 0,
        Integrator=0,
        Server=server,
        IsEmpty=False,
    )


def source(chat: Any, sender: Any, *, from_me: bool) -> MessageSource:
    chat_jid = jid(chat)
    return MessageSource(
        Chat=chat_jid,
        Sender=jid(sender) if sender else chat_jid,
        IsFromMe=from_me,
        IsGroup=chat_jid.Server == GROUP_SERVER,
        SenderAlt=jid(None),
        RecipientAlt=jid(None),
        BroadcastListOwner=jid(None),
    )


def info(message_id: str, where: MessageSource, timestamp_ms: int, push_name: str) -> MessageInfo:
    return MessageInfo(
        MessageSource=where,
        ID=message_id,
        ServerID=0,
        Type="text",
        Pushname=push_name,
        Timestamp=timestamp_ms,
        Category="",
        Multicast=False,
        MediaType="",
        Edit="",
    )


def message_event(about: MessageInfo, content: WAMessage) -> Any:
    event = MessageEv(
        Info=about,
        UnavailableRequestID="",
        RetryCount=0,
        IsEphemeral=False,
        IsViewOnce=False,
        IsViewOnceV2=False,
        IsViewOnceV2Extension=False,
        IsDocumentWithCaption=False,
        IsLottieSticker=False,
        IsEdit=False,
    )
    event.Message.CopyFrom(content)
    return event


def undecryptable(about: MessageInfo) -> Any:
    return UndecryptableMessageEv(Info=about, IsUnavailable=False, DecryptFailMode=1)


def receipt(message_ids: list[str], chat: Any, kind: int, timestamp_s: int) -> Any:
    """A receipt from the recipient (not from our own devices) for ``message_ids``."""
    return ReceiptEv(
        MessageSource=source(chat, chat, from_me=False),
        MessageIDs=message_ids,
        Timestamp=timestamp_s,
        Type=kind,
    )


def connected() -> Any:
    return ConnectedEv(status=True)


def disconnected() -> Any:
    return DisconnectedEv(status=True)


def logged_out() -> Any:
    return LoggedOutEv(OnConnect=False, Reason=ConnectFailureReason.LOGGED_OUT)


def refused(reason: int) -> Any:
    """The server refused the connection (``reason``: neonize's ConnectFailureReason)."""
    return ConnectFailureEv(Reason=reason, Message="", Raw=Node(Tag="failure"))


def stream_replaced() -> Any:
    return StreamReplacedEv()


def offline_sync_completed() -> Any:
    """The messages that waited while the device was away have all arrived."""
    return OfflineSyncCompletedEv(Count=0)


def qr(code: str) -> Any:
    return QREv(Codes=[code])


def qr_waiting() -> Any:
    """Waiting for a QR scan, the code not given (the recorder writes QR events so too)."""
    return QREv()


def text_of(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""
