"""Message shapes built with neonize's own protobuf classes, each with the class and kind
the classifier must give it: the classifier's tests and the recorder's run them all."""

from __future__ import annotations

from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e

from sidecar import testing as build
from sidecar.domain.classify import MessageClass

M = e2e.Message
PM = e2e.ProtocolMessage
REAL, PROTOCOL, OTHER = MessageClass.REAL, MessageClass.PROTOCOL, MessageClass.OTHER
KEY = MessageKey(remoteJID="12025550123@s.whatsapp.net", fromMe=False, ID="3EB0AAAA")
CTX = e2e.MessageContextInfo(messageSecret=b"\x01" * 32)
SKD = e2e.SenderKeyDistributionMessage(groupID="120363000000000001@g.us")


def wrap(field: str, inner: e2e.Message) -> e2e.Message:
    message = M()
    getattr(message, field).message.CopyFrom(inner)
    return message


def device_sent(inner: e2e.Message) -> e2e.Message:
    return M(
        deviceSentMessage=e2e.DeviceSentMessage(
            destinationJID="12025550123@s.whatsapp.net", message=inner
        )
    )


def edit(new_text: str) -> e2e.Message:
    return M(
        protocolMessage=PM(key=KEY, type=PM.MESSAGE_EDIT, editedMessage=M(conversation=new_text))
    )


TEXT = M(conversation="hello")

# (id, message content, extra MessageEv info, expected class, expected kind)
CASES: list[tuple[str, e2e.Message | None, dict[str, object], MessageClass, str]] = [
    # real content, inbound one-to-one
    ("text", TEXT, {}, REAL, "conversation"),
    (
        "extended-text",
        M(extendedTextMessage=e2e.ExtendedTextMessage(text="see https://x.test")),
        {},
        REAL,
        "extendedTextMessage",
    ),
    (
        "image",
        M(imageMessage=e2e.ImageMessage(mimetype="image/jpeg", caption="c")),
        {},
        REAL,
        "imageMessage",
    ),
    ("video", M(videoMessage=e2e.VideoMessage(mimetype="video/mp4")), {}, REAL, "videoMessage"),
    ("ptv", M(ptvMessage=e2e.VideoMessage(mimetype="video/mp4")), {}, REAL, "ptvMessage"),
    (
        "audio-voice-note",
        M(audioMessage=e2e.AudioMessage(PTT=True, seconds=3)),
        {},
        REAL,
        "audioMessage",
    ),
    (
        "document",
        M(documentMessage=e2e.DocumentMessage(fileName="a.pdf")),
        {},
        REAL,
        "documentMessage",
    ),
    (
        "sticker",
        M(stickerMessage=e2e.StickerMessage(mimetype="image/webp")),
        {},
        REAL,
        "stickerMessage",
    ),
    (
        "location",
        M(locationMessage=e2e.LocationMessage(degreesLatitude=44.4, degreesLongitude=26.1)),
        {},
        REAL,
        "locationMessage",
    ),
    (
        "live-location",
        M(liveLocationMessage=e2e.LiveLocationMessage(degreesLatitude=1.0)),
        {},
        REAL,
        "liveLocationMessage",
    ),
    (
        "contact",
        M(contactMessage=e2e.ContactMessage(displayName="A", vcard="BEGIN:VCARD")),
        {},
        REAL,
        "contactMessage",
    ),
    (
        "contacts-array",
        M(contactsArrayMessage=e2e.ContactsArrayMessage(displayName="2 contacts")),
        {},
        REAL,
        "contactsArrayMessage",
    ),
    (
        "poll",
        M(pollCreationMessage=e2e.PollCreationMessage(name="Lunch?")),
        {},
        REAL,
        "pollCreationMessage",
    ),
    (
        "poll-v3",
        M(pollCreationMessageV3=e2e.PollCreationMessage(name="Lunch?")),
        {},
        REAL,
        "pollCreationMessageV3",
    ),
    (
        "poll-vote",
        M(pollUpdateMessage=e2e.PollUpdateMessage(pollCreationMessageKey=KEY)),
        {},
        REAL,
        "pollUpdateMessage",
    ),
    (
        "reaction",
        M(reactionMessage=e2e.ReactionMessage(key=KEY, text="👍")),
        {},
        REAL,
        "reactionMessage",
    ),
    (
        "reaction-removed",
        M(reactionMessage=e2e.ReactionMessage(key=KEY, text="")),
        {},
        REAL,
        "reactionMessage",
    ),
    ("edit", edit("hello again"), {"IsEdit": True}, REAL, "protocolMessage.MESSAGE_EDIT"),
    (
        "group-invite",
        M(groupInviteMessage=e2e.GroupInviteMessage(groupName="Team")),
        {},
        REAL,
        "groupInviteMessage",
    ),
    (
        "buttons-response",
        M(buttonsResponseMessage=e2e.ButtonsResponseMessage(selectedButtonID="1")),
        {},
        REAL,
        "buttonsResponseMessage",
    ),
    (
        "list-response",
        M(listResponseMessage=e2e.ListResponseMessage(title="Option")),
        {},
        REAL,
        "listResponseMessage",
    ),
    ("event", M(eventMessage=e2e.EventMessage(name="Meeting")), {}, REAL, "eventMessage"),
    # who sent it and where does not change the class
    ("from-me", TEXT, {"from_me": True}, REAL, "conversation"),
    (
        "group",
        TEXT,
        {
            "chat": build.jid("120363000000000001", "g.us"),
            "sender": build.jid("12025550147"),
            "is_group": True,
        },
        REAL,
        "conversation",
    ),
    ("lid-chat", TEXT, {"chat": build.jid("123456789012345", "lid")}, REAL, "conversation"),
    (
        "status-broadcast",
        M(imageMessage=e2e.ImageMessage(caption="my day")),
        {"chat": build.jid("status", "broadcast"), "sender": build.jid("12025550147")},
        REAL,
        "imageMessage",
    ),
    (
        "newsletter",
        TEXT,
        {"chat": build.jid("120363000000000009", "newsletter")},
        REAL,
        "conversation",
    ),
    # wrappers are unwrapped first
    ("ephemeral", wrap("ephemeralMessage", TEXT), {"IsEphemeral": True}, REAL, "conversation"),
    (
        "view-once",
        wrap("viewOnceMessage", M(imageMessage=e2e.ImageMessage(viewOnce=True))),
        {"IsViewOnce": True},
        REAL,
        "imageMessage",
    ),
    (
        "view-once-v2",
        wrap("viewOnceMessageV2", M(videoMessage=e2e.VideoMessage(viewOnce=True))),
        {"IsViewOnceV2": True},
        REAL,
        "videoMessage",
    ),
    (
        "view-once-v2-extension",
        wrap("viewOnceMessageV2Extension", M(audioMessage=e2e.AudioMessage(viewOnce=True))),
        {"IsViewOnceV2Extension": True},
        REAL,
        "audioMessage",
    ),
    (
        "document-with-caption",
        wrap(
            "documentWithCaptionMessage", M(documentMessage=e2e.DocumentMessage(caption="invoice"))
        ),
        {"IsDocumentWithCaption": True},
        REAL,
        "documentMessage",
    ),
    (
        "edited-wrapper",
        wrap("editedMessage", edit("fixed typo")),
        {"IsEdit": True},
        REAL,
        "protocolMessage.MESSAGE_EDIT",
    ),
    ("device-sent", device_sent(TEXT), {"from_me": True}, REAL, "conversation"),
    (
        "device-sent-ephemeral",
        device_sent(
            wrap("ephemeralMessage", M(extendedTextMessage=e2e.ExtendedTextMessage(text="x")))
        ),
        {"from_me": True},
        REAL,
        "extendedTextMessage",
    ),
    (
        "lottie-sticker",
        wrap("lottieStickerMessage", M(stickerMessage=e2e.StickerMessage(isLottie=True))),
        {},
        REAL,
        "stickerMessage",
    ),
    (
        "ephemeral-view-once",
        wrap("ephemeralMessage", wrap("viewOnceMessageV2", M(imageMessage=e2e.ImageMessage()))),
        {},
        REAL,
        "imageMessage",
    ),
    # a protocol message riding next to real content is real
    (
        "text-with-context-info",
        M(conversation="hi", messageContextInfo=CTX),
        {},
        REAL,
        "conversation",
    ),
    (
        "text-with-sender-key",
        M(conversation="hi", senderKeyDistributionMessage=SKD),
        {"is_group": True},
        REAL,
        "conversation",
    ),
    (
        "image-with-history-sync",
        M(imageMessage=e2e.ImageMessage(), protocolMessage=PM(type=PM.HISTORY_SYNC_NOTIFICATION)),
        {},
        REAL,
        "imageMessage",
    ),
    (
        "wrapped-text-with-outer-context",
        M(ephemeralMessage=e2e.FutureProofMessage(message=TEXT), messageContextInfo=CTX),
        {},
        REAL,
        "conversation",
    ),
    # protocol traffic
    (
        "history-sync",
        build.history_sync_notification(),
        {"from_me": True},
        PROTOCOL,
        "protocolMessage.HISTORY_SYNC_NOTIFICATION",
    ),
    (
        "app-state-key-share",
        build.app_state_key_share(),
        {"from_me": True},
        PROTOCOL,
        "protocolMessage.APP_STATE_SYNC_KEY_SHARE",
    ),
    (
        "app-state-key-request",
        build.protocol(PM.APP_STATE_SYNC_KEY_REQUEST),
        {"from_me": True},
        PROTOCOL,
        "protocolMessage.APP_STATE_SYNC_KEY_REQUEST",
    ),
    (
        "peer-data-operation",
        build.protocol(PM.PEER_DATA_OPERATION_REQUEST_RESPONSE_MESSAGE),
        {},
        PROTOCOL,
        "protocolMessage.PEER_DATA_OPERATION_REQUEST_RESPONSE_MESSAGE",
    ),
    (
        "revoke",
        M(protocolMessage=PM(key=KEY, type=PM.REVOKE)),
        {},
        PROTOCOL,
        "protocolMessage.REVOKE",
    ),
    (
        "ephemeral-setting",
        M(protocolMessage=PM(type=PM.EPHEMERAL_SETTING, ephemeralExpiration=86400)),
        {},
        PROTOCOL,
        "protocolMessage.EPHEMERAL_SETTING",
    ),
    ("protocol-type-unset", M(protocolMessage=PM(key=KEY)), {}, PROTOCOL, "protocolMessage.REVOKE"),
    (
        "sender-key-alone",
        M(senderKeyDistributionMessage=SKD),
        {"is_group": True},
        PROTOCOL,
        "senderKeyDistributionMessage",
    ),
    (
        "fast-ratchet-sender-key",
        M(fastRatchetKeySenderKeyDistributionMessage=SKD),
        {},
        PROTOCOL,
        "fastRatchetKeySenderKeyDistributionMessage",
    ),
    ("context-info-alone", M(messageContextInfo=CTX), {}, PROTOCOL, "messageContextInfo"),
    (
        "sender-key-and-context",
        M(senderKeyDistributionMessage=SKD, messageContextInfo=CTX),
        {},
        PROTOCOL,
        "senderKeyDistributionMessage",
    ),
    (
        "history-sync-and-context",
        M(protocolMessage=PM(type=PM.HISTORY_SYNC_NOTIFICATION), messageContextInfo=CTX),
        {},
        PROTOCOL,
        "protocolMessage.HISTORY_SYNC_NOTIFICATION",
    ),
    (
        "keep-in-chat",
        M(keepInChatMessage=e2e.KeepInChatMessage(key=KEY)),
        {},
        PROTOCOL,
        "keepInChatMessage",
    ),
    (
        "pin-in-chat",
        M(pinInChatMessage=e2e.PinInChatMessage(key=KEY)),
        {},
        PROTOCOL,
        "pinInChatMessage",
    ),
    (
        "ephemeral-wrapped-revoke",
        wrap("ephemeralMessage", M(protocolMessage=PM(key=KEY, type=PM.REVOKE))),
        {"IsEphemeral": True},
        PROTOCOL,
        "protocolMessage.REVOKE",
    ),
    (
        "device-sent-key-share",
        device_sent(build.app_state_key_share()),
        {"from_me": True},
        PROTOCOL,
        "protocolMessage.APP_STATE_SYNC_KEY_SHARE",
    ),
    (
        "status-sender-key",
        M(senderKeyDistributionMessage=SKD),
        {"chat": build.jid("status", "broadcast")},
        PROTOCOL,
        "senderKeyDistributionMessage",
    ),
    # nothing to read
    ("no-message", None, {}, OTHER, "empty"),
    ("empty-message", M(), {}, OTHER, "empty"),
    ("empty-lid", M(), {"chat": build.jid("123456789012345", "lid")}, OTHER, "empty"),
    ("empty-wrapper", M(ephemeralMessage=e2e.FutureProofMessage()), {}, OTHER, "empty"),
    (
        "placeholder",
        M(
            placeholderMessage=e2e.PlaceholderMessage(
                type=e2e.PlaceholderMessage.MASK_LINKED_DEVICES
            )
        ),
        {},
        OTHER,
        "placeholderMessage",
    ),
]
