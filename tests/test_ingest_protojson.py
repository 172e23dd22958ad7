"""A message as a Baileys-based gateway writes it in JSON comes back as the very protobuf
neonize would have delivered (issue 17): every classifier shape, in every JSON form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e

from sidecar.adapters.ingest.protojson import MAX_DEPTH, NotAMessage, message_from_json
from sidecar.domain.classify import classify

from .support.cases import CASES
from .support.gateway_json import baileys_name, protobufjs_json, raw_json


def _index_maps(message: e2e.Message) -> dict[str, Any]:
    return raw_json(message, index_maps=True)


FORMS: dict[str, Callable[[e2e.Message], dict[str, Any]]] = {
    "protobufjs": protobufjs_json,
    "raw-buffers": raw_json,
    "raw-index-maps": _index_maps,
}
SHAPES = [(name, content) for name, content, _, _, _ in CASES if content is not None]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("name", "content"), SHAPES, ids=[name for name, _ in SHAPES])
def test_every_classifier_shape_comes_back_byte_for_byte(
    name: str, content: e2e.Message, form: str
) -> None:
    converted = message_from_json(FORMS[form](content))
    assert converted.SerializeToString(deterministic=True) == content.SerializeToString(
        deterministic=True
    ), name
    assert classify(converted) == classify(content)


def test_baileys_names_are_what_its_proto_spells() -> None:
    assert [
        baileys_name(n)
        for n in ("fileSHA256", "remoteJID", "URL", "ID", "JPEGThumbnail", "senderTimestampMS")
    ] == ["fileSha256", "remoteJid", "url", "id", "jpegThumbnail", "senderTimestampMs"]


def test_evolution_2_3_6_image_with_its_extra_keys() -> None:
    """Evolution API 2.3.6's shape (research note: its deserializeMessageBuffers): typed
    arrays as index maps, Long objects, empty repeated fields, and keys of its own."""
    data = {
        "senderKeyDistributionMessage": {
            "groupId": "120363000000000000@g.us",
            "axolotlSenderKeyDistributionMessage": {"0": 51, "1": 8, "2": 1, "3": 2},
        },
        "imageMessage": {
            "interactiveAnnotations": [],
            "url": "https://mmg.whatsapp.net/x",
            "mimetype": "image/jpeg",
            "fileSha256": {"0": 9, "1": 9},
            "fileLength": {"low": 12345, "high": 0, "unsigned": True},
            "mediaKey": {"0": 1, "1": 2, "2": 3, "3": 250},
            "mediaKeyTimestamp": {"low": 1700000000, "high": 0, "unsigned": False},
        },
        "messageContextInfo": {"threadId": [], "deviceListMetadataVersion": 2},
        "base64": "data:image/jpeg;base64,AAAA",  # Evolution's own key: left out
        "mediaUrl": "https://s3.example/x.jpg",
    }
    message = message_from_json(data)
    assert message.imageMessage.URL == "https://mmg.whatsapp.net/x"
    assert message.imageMessage.fileSHA256 == b"\x09\x09"
    assert message.imageMessage.fileLength == 12345
    assert message.imageMessage.mediaKey == bytes([1, 2, 3, 250])
    assert message.imageMessage.mediaKeyTimestamp == 1700000000
    assert message.senderKeyDistributionMessage.groupID == "120363000000000000@g.us"
    assert message.messageContextInfo.deviceListMetadataVersion == 2
    assert classify(message).kind == "imageMessage"


def test_an_enum_number_neonize_does_not_know_is_kept_as_the_wire_keeps_it() -> None:
    wire = e2e.Message(protocolMessage=e2e.ProtocolMessage(type=5))
    as_sent = bytearray(wire.SerializeToString())
    as_sent[-1] = 99  # the same message, with a type number neonize has no name for
    live = e2e.Message.FromString(bytes(as_sent))
    converted = message_from_json({"protocolMessage": {"type": 99}})
    assert converted.SerializeToString() == live.SerializeToString()
    assert classify(converted) == classify(live)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"conversation": 5}, e2e.Message()),  # wrong kind: left out
        ({"imageMessage": {"fileLength": "12abc"}}, e2e.Message(imageMessage={})),
        ({"imageMessage": {"mediaKey": "%%%"}}, e2e.Message(imageMessage={})),
        ({"imageMessage": {"mediaKey": [1, 256]}}, e2e.Message(imageMessage={})),
        ({"imageMessage": {"height": 2**40}}, e2e.Message(imageMessage={})),
        ({"imageMessage": {"fileLength": "9" * 400}}, e2e.Message(imageMessage={})),
        ({"protocolMessage": {"type": "NO_SUCH_TYPE"}}, e2e.Message(protocolMessage={})),
        ({"noSuchField": {"x": 1}, "conversation": "hi"}, e2e.Message(conversation="hi")),
        ({"conversation": None}, e2e.Message()),
        (
            {"imageMessage": {"mediaKey": "AQID-_8"}},
            e2e.Message(imageMessage={"mediaKey": b"\x01\x02\x03\xfb\xff"}),
        ),
    ],
)
def test_what_does_not_fit_is_left_out_never_fatal(
    data: dict[str, Any], expected: e2e.Message
) -> None:
    assert message_from_json(data) == expected


def test_a_hostile_nesting_stops_at_the_depth_limit() -> None:
    data: dict[str, Any] = {"conversation": "bottom"}
    for _ in range(MAX_DEPTH + 50):
        data = {"ephemeralMessage": {"message": data}}
    message = message_from_json(data)  # no RecursionError
    depth, cursor = 0, message
    while cursor.HasField("ephemeralMessage"):
        cursor = cursor.ephemeralMessage.message
        depth += 1
    assert depth <= MAX_DEPTH


@pytest.mark.parametrize("data", [[], "text", 5, None])
def test_a_value_that_is_not_an_object_is_refused(data: Any) -> None:
    with pytest.raises(NotAMessage):
        message_from_json(data)
