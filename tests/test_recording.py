"""Recording live events: QR codes never written; --record-blank-text keeps classes, drops text."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from neonize.events import MessageEv, QREv
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e

from sidecar import testing as build
from sidecar.adapters.capture import blank_text
from sidecar.adapters.recorder import Recorder
from sidecar.config import LoadedConfig
from sidecar.core.service import Sidecar
from sidecar.domain.classify import classify
from sidecar.domain.probes import ProbeSent, probe_text

from .support.cases import CASES
from .support.config import ConfigFactory


@pytest.mark.parametrize(("content", "info"), [pytest.param(c, i, id=n) for n, c, i, *_ in CASES])
def test_blanking_keeps_the_classification(
    content: e2e.Message | None, info: dict[str, object]
) -> None:
    event = build.message_event(content, **dict(info))
    blanked = MessageEv.FromString(blank_text(event).SerializeToString())
    original = event.Message if event.HasField("Message") else None
    copy = blanked.Message if blanked.HasField("Message") else None
    assert classify(copy) == classify(original)


def test_blanking_removes_text_captions_names_and_keys() -> None:
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ImageMessage
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

    secret_texts = ["meet me at 5", "passport scan", "Ana Popescu"]
    event = build.message_event(
        WAMessage(imageMessage=ImageMessage(caption=secret_texts[1], mediaKey=b"K" * 32)),
        push_name=secret_texts[2],
    )
    event.Raw.conversation = secret_texts[0]
    payload = blank_text(event).SerializeToString()
    for text in secret_texts:
        assert text.encode() not in payload
    assert b"K" * 32 not in payload
    assert event.Message.imageMessage.caption == secret_texts[1]  # the original is untouched


def test_recorder_never_writes_qr_codes_and_blanks_on_request(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(path, blank_text=True)
    recorder.write(1.0, "sales", QREv(Codes=["2@SECRET-QR-CODE,abc"]))
    recorder.write(2.0, "sales", build.message_event(build.text("top secret")))
    recorder.write(3.0, "sales", build.connected())
    recorder.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["event"] for r in lines] == ["QREv", "MessageEv", "ConnectedEv"]
    payloads = [base64.b64decode(r["payload"]) for r in lines]
    assert payloads[0] == b""
    assert b"SECRET-QR-CODE" not in path.read_bytes()
    assert b"top secret" not in payloads[1]
    assert classify(MessageEv.FromString(payloads[1]).Message).kind == "conversation"


def test_blanking_keeps_only_the_marker_of_a_probe_sent_to_the_account(
    tmp_path: Path, make_config: ConfigFactory, make_sidecar: Callable[[LoadedConfig], Sidecar]
) -> None:
    """A contact's text that starts with the probe marker is blanked like any other; only
    a probe that was sent to the account keeps its text, so that replay recognises it."""
    sidecar = make_sidecar(
        make_config([{"id": "sales", "probe": {"peer": "support"}}, {"id": "support"}])
    )
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(path, blank_text=True, is_probe=sidecar.is_sent_probe)
    forged = probe_text("0123456789abcdef") + " call me on +40 721 000 000"

    def deliver(t: float, account: str, event: Any) -> None:
        recorder.write(t, account, event)
        sidecar.handle(account, event, t)

    deliver(1.0, "support", build.message_event(build.text(forged)))
    deliver(2.0, "sales", ProbeSent("0123456789abcdef", "support", ok=True))
    deliver(3.0, "support", build.message_event(build.text(probe_text("0123456789abcdef"))))
    deliver(4.0, "sales", build.message_event(build.text(probe_text("0123456789abcdef"))))
    recorder.close()
    texts = [
        MessageEv.FromString(base64.b64decode(r["payload"])).Message.conversation
        for r in map(json.loads, path.read_text().splitlines())
        if r["event"] == "MessageEv"
    ]
    assert texts == ["", probe_text("0123456789abcdef"), ""]
    assert b"+40 721" not in path.read_bytes()
