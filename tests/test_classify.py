"""The classifier on message shapes built with neonize's own protobuf classes.

Each case goes through a full ``MessageEv`` serialised and decoded again, as
replay and live events are, and through the pipeline's own handler.
"""

from __future__ import annotations

import pytest
from neonize.events import MessageEv
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e

from sidecar import testing as build
from sidecar.core.pipeline import EventPipeline
from sidecar.domain.account import AccountSettings, AccountState
from sidecar.domain.classify import WRAPPER_FIELDS, Classification, MessageClass, classify

from .support.cases import CASES, OTHER, REAL, TEXT, M, wrap


def _round_trip(content: e2e.Message | None, info: dict[str, object]) -> MessageEv:
    event = build.message_event(content, **dict(info))
    return MessageEv.FromString(event.SerializeToString())


@pytest.mark.parametrize(
    ("content", "info", "expected_class", "expected_kind"),
    [pytest.param(c, i, cls, kind, id=name) for name, c, i, cls, kind in CASES],
)
def test_shape(
    content: e2e.Message | None,
    info: dict[str, object],
    expected_class: MessageClass,
    expected_kind: str,
) -> None:
    event = _round_trip(content, info)
    message = event.Message if event.HasField("Message") else None
    assert classify(message) == Classification(expected_class, expected_kind)


def test_there_are_at_least_forty_shapes() -> None:
    assert len(CASES) >= 40
    assert len({name for name, *_ in CASES}) == len(CASES)


def test_pipeline_counts_what_the_classifier_says() -> None:
    state = AccountState(AccountSettings("sales", 300.0, "UTC"))
    pipeline = EventPipeline({"sales": state})
    for index, (_, content, info, _, _) in enumerate(CASES):
        pipeline.handle("sales", _round_trip(content, info), 1000.0 + index)
    counts = state.snapshot().message_counts
    for name, _, _, cls, kind in CASES:
        assert counts[(cls, kind)] >= 1, name
    assert sum(counts.values()) == len(CASES)
    last_real_index = max(i for i, case in enumerate(CASES) if case[3] is REAL)
    assert state.snapshot().last_real_at == 1000.0 + last_real_index


def test_message_in_raw_field_is_classified_when_message_is_absent() -> None:
    event = build.message_event(None)
    event.Raw.CopyFrom(TEXT)
    state = AccountState(AccountSettings("sales", 300.0, "UTC"))
    EventPipeline({"sales": state}).handle("sales", event, 5.0)
    assert state.snapshot().message_counts == {(REAL, "conversation"): 1}


def test_unknown_fields_alone_are_other_unknown() -> None:
    # field 500, varint 1: a content type newer than this neonize
    assert classify(M.FromString(b"\xa0\x1f\x01")) == Classification(OTHER, "unknown")


def test_wrappers_come_from_the_schema() -> None:
    expected = {
        "ephemeralMessage",
        "viewOnceMessage",
        "viewOnceMessageV2",
        "viewOnceMessageV2Extension",
        "documentWithCaptionMessage",
        "editedMessage",
        "deviceSentMessage",
    }
    assert expected <= WRAPPER_FIELDS
    assert "conversation" not in WRAPPER_FIELDS
    assert "protocolMessage" not in WRAPPER_FIELDS


def test_deeply_nested_wrappers_stop_without_recursing_forever() -> None:
    message = TEXT
    for _ in range(50):
        message = wrap("ephemeralMessage", message)
    assert classify(message) == Classification(OTHER, "empty")
