"""Hostile input on the event path: random bytes, truncated payloads, garbage capture
lines and random but valid neonize protobufs of every event class.

Whatever arrives, nothing raises out of the pipeline or the replayer, every rejected
capture record is counted once in ``whatsapp_replay_errors_total``, every handler fault
once in ``whatsapp_event_errors_total``, classification always names a known class and
kind, and memory stays flat over thousands of events with attacker-chosen strings.

Random protobufs are built from the descriptors (:class:`ProtoBuilder`), with random
choices from hypothesis (shrinkable, derandomized) or from a seeded ``random.Random``
(for the long runs).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import random
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from neonize.events import MessageEv, UndecryptableMessageEv
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ProtocolMessage
from prometheus_client.parser import text_string_to_metric_families

from sidecar import testing as build
from sidecar.adapters.capture import CaptureError, capture_records, encode_record, parse_line
from sidecar.adapters.health_json import health_json
from sidecar.adapters.http.pages import pairing_view
from sidecar.adapters.spool.codec import encode_fields
from sidecar.compose import assemble
from sidecar.config import LoadedConfig
from sidecar.core.clock import ReplayClock
from sidecar.core.pipeline import EVENT_CLASSES
from sidecar.core.replay import Replayer
from sidecar.domain.account import AccountSnapshot, Status
from sidecar.domain.classify import (
    MAX_WRAPPER_DEPTH,
    PROTOCOL_FIELDS,
    UNREADABLE_FIELDS,
    WRAPPER_FIELDS,
    Classification,
    MessageClass,
    classify,
)
from sidecar.domain.delivery import FAILURE_REASONS, OK, SEND_RESULT, SendResult
from sidecar.domain.own_events import OWN_EVENTS
from sidecar.domain.probes import PROBE_PREFIX, PROBE_SENT, ProbeSent
from sidecar.domain.records import build_records

from .support.config import ConfigFactory

T0 = 1_764_068_400.0
ACCOUNTS = ("sales", "support")
EVENT_NAMES = tuple(sorted(EVENT_CLASSES))
MESSAGE_EVENTS = (MessageEv, UndecryptableMessageEv)

#: Every kind classification may name: the label's whole range (bounded by the schema).
KNOWN_KINDS = frozenset(
    {field.name for field in WAMessage.DESCRIPTOR.fields}
    | {f"protocolMessage.{name}" for name, _ in ProtocolMessage.Type.items()}
    | {"empty", "undecodable", "unknown", "probe"}
)

#: Bounded runs: the whole file stays well under a minute, and CI sees the same examples.
FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- random protobufs from their descriptors ------------------------------------------

T = TypeVar("T")


class Chooser(Protocol):
    """Where the random choices come from."""

    def integer(self, low: int, high: int) -> int: ...
    def real(self, width: int) -> float: ...
    def text(self) -> str: ...
    def blob(self) -> bytes: ...


class DrawChooser:
    """Choices drawn by hypothesis (shrinkable, reproducible with ``derandomize``)."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self._draw = draw

    def integer(self, low: int, high: int) -> int:
        value: int = self._draw(st.integers(low, high))
        return value

    def real(self, width: int) -> float:
        value: float = self._draw(st.floats(width=width))  # type: ignore[arg-type]
        return value

    def text(self) -> str:
        value: str = self._draw(st.text(max_size=24))
        return value

    def blob(self) -> bytes:
        value: bytes = self._draw(st.binary(max_size=24))
        return value


class RandomChooser:
    """Choices from a seeded ``random.Random``: cheap enough for thousands of events."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)

    def real(self, width: int) -> float:
        return self._rng.choice((0.0, -1.5, float("nan"), float("inf"), self._rng.random()))

    def text(self) -> str:
        size = self._rng.randint(0, 24)
        # unique-looking strings: what would blow up a dict keyed by attacker text
        return "".join(
            chr(self._rng.choice((self._rng.randint(32, 126), 0x1F600))) for _ in range(size)
        )

    def blob(self) -> bytes:
        return self._rng.randbytes(self._rng.randint(0, 24))


#: Strings with a meaning somewhere on the path: servers, probe markers, odd text.
INTERESTING_TEXT = (
    "",
    "s.whatsapp.net",
    "g.us",
    "lid",
    "broadcast",
    "status",
    "newsletter",
    PROBE_PREFIX,
    PROBE_PREFIX + "p-1",
    PROBE_PREFIX + "  ",
    "android",
    "\u0000",
    "\ud7ff\ue000\U0010ffff",
    "x" * 300,
)

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_PROTOCOL_TYPES = tuple(ProtocolMessage.Type.values())
_WRAPPERS = tuple(sorted(WRAPPER_FIELDS))


class ProtoBuilder:
    """Fills a protobuf message with random values, field by field from its descriptor.

    Required fields are always set (the Go side always sets them); a few optional and
    repeated ones at random; message fields recursively down to ``max_depth``, after
    which only required fields are filled. Every ``waE2E.Message`` met on the way,
    the content of a ``MessageEv`` or a quoted message alike, gets :meth:`wa_message`:
    wrappers nested in wrappers, protocol messages of every type, edits, probes.
    """

    def __init__(self, chooser: Chooser, *, max_depth: int = 5, budget: int = 80) -> None:
        self.c = chooser
        self.max_depth = max_depth
        self.budget = budget  # fields left to set: keeps one example small

    def choice(self, options: Sequence[T]) -> T:
        return options[self.c.integer(0, len(options) - 1)]

    def event(self, name: str) -> ProtoMessage:
        message = EVENT_CLASSES[name]()
        self.fill(message, 0)
        return message

    def fill(self, message: ProtoMessage, depth: int) -> None:
        if message.DESCRIPTOR is WAMessage.DESCRIPTOR:
            self.wa_message(message, depth)
            return
        fields = message.DESCRIPTOR.fields
        chosen = [f for f in fields if f.is_required]
        optional = [f for f in fields if not f.is_required]
        if optional and self.budget > 0:
            for _ in range(self.c.integer(0, min(4, len(optional)))):
                chosen.append(self.choice(optional))
        for field in chosen:
            self.set_field(message, field, depth)

    def wa_message(self, message: WAMessage, depth: int) -> None:
        """Random message content, with the shapes the classifier has to see through."""
        shape = self.c.integer(0, 9) if depth < self.max_depth and self.budget > 0 else 9
        if shape <= 2:  # a wrapper (ephemeral, view-once, edited, device-sent, ...)
            inner = getattr(message, self.choice(_WRAPPERS)).message
            self.wa_message(inner, depth + 1)
            if self.c.integer(0, 3) == 0:
                self.wa_message(message, depth + 1)  # and something beside it
        elif shape == 3:  # protocol traffic of any type, or an edit with new content
            protocol = message.protocolMessage
            protocol.type = self.choice(_PROTOCOL_TYPES)
            if self.c.integer(0, 1):
                protocol.key.ID = self.string()
                self.wa_message(protocol.editedMessage, depth + 1)
        elif shape == 4:  # a probe, or text that only looks like one
            text = PROBE_PREFIX + self.string()
            if self.c.integer(0, 1):
                message.conversation = text
            else:
                message.extendedTextMessage.text = text
        elif shape == 5:  # empty
            pass
        else:  # any fields at all
            self.budget -= 1
            fields = WAMessage.DESCRIPTOR.fields
            for _ in range(self.c.integer(1, 3)):
                self.set_field(message, self.choice(fields), depth)

    def set_field(self, message: ProtoMessage, field: FieldDescriptor, depth: int) -> None:
        self.budget -= 1
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            self._fill_map(message, field, depth)
            return
        if field.is_repeated:
            container = getattr(message, field.name)
            for _ in range(self.c.integer(0, 3) if self.budget > 0 else 0):
                if field.message_type is not None:
                    self.fill(container.add(), depth + 1)
                else:
                    container.append(self.scalar(field))
            return
        if field.message_type is not None:
            if depth >= self.max_depth and not field.is_required:
                return
            child = getattr(message, field.name)
            child.SetInParent()
            if depth < self.max_depth + 3:  # required chains end somewhere
                self.fill(child, depth + 1)
            return
        setattr(message, field.name, self.scalar(field))

    def _fill_map(self, message: ProtoMessage, field: FieldDescriptor, depth: int) -> None:
        entry: Descriptor = field.message_type
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        container = getattr(message, field.name)
        for _ in range(self.c.integer(0, 2)):
            key = self.scalar(key_field)
            if value_field.message_type is not None:
                self.fill(container[key], depth + 1)
            else:
                container[key] = self.scalar(value_field)

    def string(self) -> str:
        return self.choice(INTERESTING_TEXT) if self.c.integer(0, 3) == 0 else self.c.text()

    def scalar(self, field: FieldDescriptor) -> Any:
        kind = field.type
        if kind == FieldDescriptor.TYPE_BOOL:
            return bool(self.c.integer(0, 1))
        if kind == FieldDescriptor.TYPE_STRING:
            return self.string()
        if kind == FieldDescriptor.TYPE_BYTES:
            return self.c.blob()
        if kind == FieldDescriptor.TYPE_ENUM:
            return self.choice([v.number for v in field.enum_type.values])
        if kind == FieldDescriptor.TYPE_DOUBLE:
            return self.c.real(64)
        if kind == FieldDescriptor.TYPE_FLOAT:
            return self.c.real(32)
        low, high = _INT_RANGES[kind]
        edge = (low, high, 0, 1, -1, 1_764_068_400_000)
        if self.c.integer(0, 2) == 0:
            return max(low, min(high, self.choice(edge)))
        return self.c.integer(low, high)


@st.composite
def neonize_events(draw: Any, names: Sequence[str] = EVENT_NAMES) -> tuple[str, ProtoMessage]:
    """(event name, a random valid event of that class); MessageEv half of the time."""
    name = draw(st.one_of(st.just("MessageEv"), st.sampled_from(names)))
    return name, ProtoBuilder(DrawChooser(draw)).event(name)


@st.composite
def wa_messages(draw: Any) -> WAMessage:
    message = WAMessage()
    ProtoBuilder(DrawChooser(draw)).wa_message(message, 0)
    return message


# -- a sidecar to feed -------------------------------------------------------------------


class Fed:
    """A sidecar with the SQLite store and its spool, as ``wa-sidecar replay`` builds it."""

    def __init__(self, loaded: LoadedConfig, *, storage: bool = True) -> None:
        self.clock = ReplayClock(speed=0)
        self.clock.start(T0)
        self.assembly = assemble(loaded, self.clock, storage=storage)
        self.sidecar = self.assembly.sidecar
        self.storage = self.assembly.storage

    def state(self, account: str) -> AccountSnapshot:
        return self.sidecar.snapshot(account)

    def states(self) -> list[AccountSnapshot]:
        return [self.sidecar.snapshot(account) for account in self.sidecar.account_ids]

    def total(self, counts: str) -> int:
        """Sum of one of the per-account counters over every account."""
        return sum(sum(getattr(state, counts).values()) for state in self.states())

    def value(self, name: str, **labels: str) -> float:
        found = self.assembly.metrics.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def close(self) -> None:
        if self.storage is not None:
            asyncio.run(self.storage.close())
        self.assembly.close()


@pytest.fixture
def fed(make_config: ConfigFactory) -> Any:
    made = Fed(make_config([{"id": account} for account in ACCOUNTS]))
    yield made
    made.close()


def assert_valid(classification: Classification) -> None:
    assert isinstance(classification.message_class, MessageClass)
    assert classification.kind in KNOWN_KINDS, classification.kind


def assert_document_id(value: str) -> None:
    """What Firestore accepts as a document id (the SQLite store keeps the same ids)."""
    assert isinstance(value, str)
    assert value
    assert "/" not in value
    assert value not in (".", "..")
    assert not (len(value) >= 4 and value.startswith("__") and value.endswith("__"))
    assert len(value.encode()) <= 1500


def message_of(event: Any) -> WAMessage | None:
    if event.HasField("Message"):
        return event.Message
    return event.Raw if event.HasField("Raw") else None


def feed_one(fed: Fed, account: str, event: Any, name: str) -> None:
    """Hand one event to the pipeline; every invariant of a decodable event holds after it."""
    events, errors, messages = (
        fed.total("event_counts"),
        fed.total("event_errors"),
        fed.total("message_counts"),
    )
    fed.sidecar.handle(account, event, fed.clock.now())  # raises nothing
    assert fed.total("event_counts") == events + 1
    assert fed.state(account).event_counts[name] >= 1
    # a decodable event is never a handler fault: the store took it, whatever it held
    assert fed.total("event_errors") == errors
    if isinstance(event, MESSAGE_EVENTS):
        assert fed.total("message_counts") == messages + 1  # classified and counted
    else:
        assert fed.total("message_counts") == messages
    if isinstance(event, MessageEv):
        classification = classify(message_of(event))
        assert_valid(classification)
        records = build_records(account, event, classification)
        if records is not None:
            doc, patch = records
            assert_document_id(doc.message_id)
            assert_document_id(doc.thread_id)
            encode_fields(doc.fields)  # the spool's JSON takes it
            if patch is not None:
                assert patch.thread_id == doc.thread_id
                encode_fields(patch.fields)


# -- random valid events of every class ---------------------------------------------------


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_every_event_class_random_valid_instances_are_handled(fed: Fed, name: str) -> None:
    for seed in range(20):
        event = ProtoBuilder(RandomChooser(EVENT_NAMES.index(name) * 1000 + seed)).event(name)
        feed_one(fed, ACCOUNTS[seed % 2], event, name)
    assert sum(state.event_counts.get(name, 0) for state in fed.states()) == 20
    assert fed.value("whatsapp_events_total", account="sales", event=name) == 10.0
    assert fed.total("event_errors") == 0


def test_random_valid_events_go_through_the_pipeline(fed: Fed) -> None:
    seen: set[str] = set()

    @FAST
    @given(neonize_events(), st.sampled_from(ACCOUNTS))
    def check(item: tuple[str, ProtoMessage], account: str) -> None:
        name, event = item
        seen.add(name)
        feed_one(fed, account, event, name)

    check()
    assert "MessageEv" in seen
    assert len(seen) >= 8  # every class, deterministically: the parametrized test above
    assert fed.value("whatsapp_event_errors_total", account="sales", event="MessageEv") == 0.0


@FAST
@given(wa_messages())
def test_classification_of_random_messages_is_a_known_class_and_kind(message: WAMessage) -> None:
    classification = classify(message)
    assert_valid(classification)
    assert classify(WAMessage.FromString(message.SerializeToString())) == classification
    content = {
        field.name
        for field, _ in message.ListFields()
        if field.name not in PROTOCOL_FIELDS
        and field.name not in WRAPPER_FIELDS
        and field.name not in UNREADABLE_FIELDS
    }
    names = {field.name for field, _ in message.ListFields()}
    if content:  # real content wins over anything riding beside it
        assert classification.message_class is MessageClass.REAL
    elif not names:
        assert classification == Classification(MessageClass.OTHER, "empty")
    elif names <= PROTOCOL_FIELDS.keys() and message.protocolMessage.type != (
        ProtocolMessage.MESSAGE_EDIT
    ):
        assert classification.message_class is MessageClass.PROTOCOL
        assert classification.kind.split(".")[0] in names


@FAST
@given(wa_messages(), st.lists(st.sampled_from(sorted(WRAPPER_FIELDS)), max_size=MAX_WRAPPER_DEPTH))
def test_wrappers_do_not_change_the_class(message: WAMessage, wrappers: list[str]) -> None:
    for field in WRAPPER_FIELDS:  # a flat message: its own wrappers are not the point here
        message.ClearField(field)
    wrapped = WAMessage()
    wrapped.CopyFrom(message)
    for field in wrappers:
        outer = WAMessage()
        getattr(outer, field).message.CopyFrom(wrapped)
        wrapped = outer
    assert classify(wrapped) == classify(message)


# -- random and damaged bytes ---------------------------------------------------------------


@st.composite
def damaged_payloads(draw: Any) -> tuple[str, bytes]:
    """(event name, bytes): random, or a valid event's bytes truncated, flipped or spliced."""
    name = draw(st.one_of(st.just("MessageEv"), st.sampled_from(EVENT_NAMES)))
    how = draw(st.sampled_from(("random", "truncate", "flip", "splice")))
    if how == "random":
        return name, draw(st.binary(max_size=300))
    data = bytearray(ProtoBuilder(DrawChooser(draw)).event(name).SerializePartialToString())
    if how == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif how == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    else:
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return name, bytes(data)


def invalid_utf8_message_event() -> bytes:
    """A MessageEv whose id, chat, push name and text are not valid UTF-8, as Go may send
    them (proto2 strings are not checked): placeholders swapped for bad bytes."""
    event = build.message_event(
        build.text("@@TEXT@@"),
        chat=build.jid("@@CHAT@@"),
        message_id="@@IDID@@",
        push_name="@@PUSH@@",
    )
    data: bytes = event.SerializeToString()
    for placeholder in (b"@@TEXT@@", b"@@CHAT@@", b"@@IDID@@", b"@@PUSH@@"):
        data = data.replace(placeholder, b"\xff\xfe/" + placeholder[3:])
    return data


def test_random_bytes_that_decode_are_handled_like_any_event(fed: Fed) -> None:
    decoded: list[str] = []

    @settings(FAST, max_examples=300)
    @example(("MessageEv", invalid_utf8_message_event()))
    @given(damaged_payloads())
    def check(item: tuple[str, bytes]) -> None:
        name, data = item
        try:
            event = EVENT_CLASSES[name].FromString(data)
        except DecodeError:
            return  # replay counts it as a bad record: see the capture tests
        decoded.append(name)
        feed_one(fed, "sales", event, name)

    check()
    # protobuf is lenient: much damage still decodes (about 50 of 300 tries here; how many
    # depends on what hypothesis draws, so the bound leaves room)
    assert len(decoded) > 20


def with_bad_utf8(event: ProtoMessage, *placeholders: bytes) -> bytes:
    """``event``'s bytes with each 8-byte placeholder swapped for invalid UTF-8."""
    data: bytes = event.SerializeToString()
    for placeholder in placeholders:
        assert len(placeholder) == 8
        data = data.replace(placeholder, b"\xff\xfe" + placeholder[2:])
    return data


def test_text_that_is_not_utf8_is_counted_stored_and_shown_as_text(fed: Fed) -> None:
    """Go does not check proto2 strings; Python hands them over as bytes."""
    from neonize.events import PairStatusEv, QREv

    data = invalid_utf8_message_event()
    event = MessageEv.FromString(data)
    assert isinstance(event.Message.conversation, bytes)  # what the binding does
    fed.sidecar.handle("sales", event, T0)
    state = fed.state("sales")
    assert state.message_counts[(MessageClass.REAL, "conversation")] == 1
    assert state.last_real_at == T0
    assert sum(state.event_errors.values()) == 0
    doc, patch = records(event)
    assert doc.fields["body"] == "\ufffd\ufffd/EXT@@"
    assert doc.fields["clientJid"] == "\ufffd\ufffd/HAT@@@s.whatsapp.net"
    assert doc.fields["key"]["id"] == "\ufffd\ufffd/DID@@"
    assert doc.message_id.startswith("~")  # the '/' would make it a path
    assert_document_id(doc.thread_id)
    assert patch is not None
    assert patch.fields["phoneE164"] == "+\ufffd\ufffd/HAT@@"
    assert fed.storage is not None
    assert fed.storage.spool.backlog()["sales"].messages == 1

    qr = QREv.FromString(with_bad_utf8(QREv(Codes=["@@QRQR@@"]), b"@@QRQR@@"))
    paired = PairStatusEv.FromString(
        with_bad_utf8(
            PairStatusEv(
                ID=build.jid("1"),
                BusinessName="",
                Platform="@@PLAT@@",
                Status=PairStatusEv.PStatus.SUCCESS,
            ),
            b"@@PLAT@@",
        )
    )
    fed.sidecar.handle("support", qr, T0)
    assert fed.sidecar.pairing_view("sales").qr_code is None  # the other account's
    assert fed.sidecar.pairing_view("support").qr_code == "\ufffd\ufffdQRQR@@"
    fed.sidecar.handle("support", paired, T0 + 1)
    view = fed.sidecar.pairing_view("support")
    assert view.platform == "\ufffd\ufffdPLAT@@"
    json.dumps(pairing_view(fed.sidecar, "support"))  # what the pair page sends
    assert fed.total("event_errors") == 0


def records(event: Any, classification: Classification | None = None) -> tuple[Any, Any]:
    """A real message's (document, thread update)."""
    built = build_records("sales", event, classification or classify(event.Message))
    assert built is not None
    return built


def test_records_of_hostile_messages_can_be_stored() -> None:
    """Ids a sender chose and timestamps from the wire: every record is one a store takes."""
    for message_id in ("", ".", "..", "a/b", "__id__", "x" * 1501, "\u00e9" * 800):
        event = build.message_event(build.text("hi"), message_id=message_id)
        event.Info.ID = message_id
        doc, _ = records(event)
        assert_document_id(doc.message_id)
        assert doc.fields["key"]["id"] == message_id  # the field keeps what was sent
    ok = build.message_event(build.text("hi"), message_id="3EB0ABCDEF")
    assert records(ok)[0].message_id == "3EB0ABCDEF"
    # two different bad ids stay two documents
    ids = set()
    for message_id in ("a/b", "a/c"):
        event = build.message_event(build.text("hi"), message_id=message_id)
        ids.add(records(event)[0].message_id)
    assert len(ids) == 2
    for ts, expected in ((-(2**63), -62_135_596_800_000), (2**63 - 1, 253_402_300_799_999)):
        event = build.message_event(build.text("hi"), timestamp_ms=ts)
        doc, patch = records(event)
        assert doc.fields["tsClient"].ms == expected
        assert patch is not None
        assert patch.fields["lastMessageAtMs"] == expected
    # the text beside a wrapped image is the message, not the image's missing caption
    both = WAMessage(conversation="the text")
    both.ephemeralMessage.message.imageMessage.mimetype = "image/jpeg"
    event = build.message_event(both)
    classification = classify(both)
    assert classification.kind == "conversation"
    doc, _ = records(event, classification)
    assert doc.fields["body"] == "the text"
    assert doc.fields["media"] is None
    # an edit inside a wrapper, beside protocol traffic of another type
    edit = WAMessage(protocolMessage=ProtocolMessage(type=ProtocolMessage.REVOKE))
    inner = edit.deviceSentMessage.message.protocolMessage
    inner.type = ProtocolMessage.MESSAGE_EDIT
    inner.key.ID = "3EB0EDITED"
    inner.editedMessage.conversation = "new text"
    event = build.message_event(edit)
    doc, _ = records(event)
    assert (doc.message_id, doc.fields["body"], doc.merge) == ("3EB0EDITED", "new text", True)


# -- hostile capture files -------------------------------------------------------------------

EVENT, ERROR, TICK, SKIP = "event", "error", "tick", "skip"
Line = tuple[bytes, str]  # a capture line (no newline) and what replay must make of it


def _record(t: Any, account: Any, event: Any, payload: Any) -> bytes:
    return json.dumps({"t": t, "account": account, "event": event, "payload": payload}).encode()


def _decodes(name: str, data: bytes) -> bool:
    """The oracle for damaged payloads: protobuf itself."""
    try:
        EVENT_CLASSES[name].FromString(data)
    except DecodeError:
        return False
    return True


@st.composite
def capture_lines(draw: Any) -> Line:
    t = draw(st.floats(T0, T0 + 86400))
    account = draw(st.sampled_from(ACCOUNTS))
    how = draw(
        st.sampled_from(
            ("valid", "probe", "damaged", "bad-field", "bad-probe", "garbage", "deep", "tick")
        )
    )
    if how == "tick":
        return json.dumps({"t": t, "event": "tick"}).encode(), TICK
    if how == "valid":
        name, event = draw(neonize_events())
        return encode_record(t, account, event).encode(), EVENT
    if how == "probe":
        probe = ProbeSent(
            draw(st.text(max_size=8)), draw(st.sampled_from(ACCOUNTS)), draw(st.booleans())
        )
        return encode_record(t, account, probe).encode(), EVENT
    if how == "damaged":
        name, data = draw(damaged_payloads())
        payload = base64.b64encode(data).decode()
        return _record(t, account, name, payload), EVENT if _decodes(name, data) else ERROR
    if how == "bad-field":
        good = {"t": t, "account": account, "event": "ConnectedEv", "payload": "CAE="}
        key, value = draw(
            st.sampled_from(
                (
                    ("t", None),
                    ("t", "1764068400"),
                    ("t", True),
                    ("t", float("nan")),
                    ("t", float("inf")),
                    ("t", -1.0),
                    ("t", 1e300),
                    ("t", 10**400),  # no float holds it
                    ("t", 253402300800),  # after year 9999
                    ("event", None),
                    ("event", "NoSuchEv"),
                    ("event", "Device"),
                    ("event", ["MessageEv"]),
                    ("account", None),
                    ("account", ""),
                    ("account", 7),
                    ("account", "stranger"),
                    ("account", "+12025550123"),
                    ("payload", 5),
                    ("payload", "!!not base64!!"),
                    ("payload", "CAE"),
                )
            )
        )
        if value is None:
            del good[key]
        else:
            good[key] = value
        return json.dumps(good).encode(), ERROR
    if how == "bad-probe":
        probe = draw(
            st.sampled_from(
                (None, [], "p", {"id": 1, "peer": "sales"}, {"peer": "sales"}, {"id": "x"})
            )
        )
        line = {"t": t, "account": account, "event": PROBE_SENT, "probe": probe}
        return json.dumps(line).encode(), ERROR
    if how == "deep":
        depth = draw(st.sampled_from((50, 2000, 200_000)))
        probe = "[" * depth + "]" * depth
        raw = f'{{"t": {t}, "account": "{account}", "event": "{PROBE_SENT}", "probe": {probe}}}'
        return raw.encode(), ERROR
    raw = draw(st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode)))
    raw = raw.replace(b"\n", b" ")
    if not raw.strip():
        return raw, SKIP
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return raw, ERROR
    if isinstance(data, dict) and "event" in data:
        # hypothesis wrote a record by chance: what it is, is not this test's question
        return encode_record(t, account, None).encode(), TICK
    return raw, ERROR


#: Lines that once stopped replay: each must be one bad record.
HOSTILE_LINES = (
    b"[" * 100_000,  # RecursionError from json
    b'{"t": ' + b"1" * 5000 + b"}",  # ValueError: an int of more than 4,300 digits
    b'{"t": ' + b"1" * 400 + b', "event": "tick"}',  # OverflowError: no float holds it
    b'{"t": 1e308, "event": "tick"}',  # no date: the clock, verdicts and health broke
    b'{"t": -1e12, "event": "tick"}',
    b'{"t": NaN, "event": "tick"}',
    b'{"t": Infinity, "event": "tick"}',
    b'{"t": 1764068400, "account": "sales", "event": "ProbeSent", "probe": '
    + b"[" * 900
    + b"]" * 900
    + b"}",  # deep enough to pass one JSON parser and not the next
)


async def replay_lines(fed: Fed, path: Path, lines: Sequence[bytes]) -> Any:
    path.write_bytes(b"\n".join(lines) + b"\n")
    replayer = Replayer(fed.sidecar, fed.clock, fed.assembly.replay_errors)
    return await replayer.run(capture_records(path))


def test_hostile_capture_lines_are_counted_once_each(fed: Fed, tmp_path: Path) -> None:
    checked = [0]

    @settings(FAST, max_examples=80)
    @given(st.lists(capture_lines(), min_size=1, max_size=25))
    def check(lines: list[Line]) -> None:
        expected = {kind: sum(1 for _, k in lines if k == kind) for kind in (EVENT, ERROR, TICK)}
        errors_before = fed.value("whatsapp_replay_errors_total")
        events_before, faults_before = fed.total("event_counts"), fed.total("event_errors")
        report = asyncio.run(replay_lines(fed, tmp_path / "hostile.jsonl", [r for r, _ in lines]))
        assert (report.events, report.errors, report.ticks) == (
            expected[EVENT],
            expected[ERROR],
            expected[TICK],
        )
        assert fed.value("whatsapp_replay_errors_total") == errors_before + expected[ERROR]
        assert fed.total("event_counts") == events_before + expected[EVENT]
        assert fed.total("event_errors") == faults_before
        checked[0] += 1

    check()
    assert checked[0] >= 80
    assert fed.value("whatsapp_replay_errors_total") > 0


async def test_lines_that_stopped_replay_are_bad_records(fed: Fed, tmp_path: Path) -> None:
    good = encode_record(T0 + 5, "sales", build.message_event(build.text("after"))).encode()
    report = await replay_lines(fed, tmp_path / "c.jsonl", [*HOSTILE_LINES, good])
    assert (report.events, report.errors) == (1, len(HOSTILE_LINES))
    assert fed.value("whatsapp_replay_errors_total") == len(HOSTILE_LINES)
    assert (
        fed.value(
            "whatsapp_messages_received_total",
            account="sales",
            **{"class": "real", "kind": "conversation"},
        )
        == 1.0
    )
    # the clock went nowhere strange, and everything that turns it into dates still works
    assert fed.clock.now() == T0 + 5
    assert fed.sidecar.health("sales").last_real_message_ms == round((T0 + 5) * 1000)
    assert b"whatsapp_session_degraded" in fed.assembly.metrics.render()
    for raw in HOSTILE_LINES:
        assert isinstance(parse_line(raw, 1), CaptureError)


# -- handler faults ---------------------------------------------------------------------------

SECRET_TEXT = "fuzz-secret-kumquat-0142"
SECRET_JID = "12025550142@s.whatsapp.net"


class FailingListener:
    """A listener whose errors quote message content, as a store error may."""

    def on_message(self, account_id: str, event: Any, classification: Any, at: float) -> None:
        raise ValueError(f"cannot store {SECRET_TEXT!r} from {SECRET_JID}")


def failing_status_listener(change: Any) -> None:
    raise RuntimeError(f"status of {SECRET_JID}: {SECRET_TEXT}")


def test_handler_faults_are_counted_once_and_logged_without_content(
    fed: Fed, caplog: pytest.LogCaptureFixture
) -> None:
    fed.sidecar.add_message_listener(FailingListener())
    fed.sidecar.add_status_listener(failing_status_listener)
    caplog.set_level(logging.INFO)
    faults = 0
    for seed in range(400):
        name = EVENT_NAMES[seed % len(EVENT_NAMES)] if seed % 3 else "MessageEv"
        event: Any = ProtoBuilder(RandomChooser(seed)).event(name)
        if isinstance(event, MessageEv):
            event.Info.Pushname = SECRET_TEXT
        before = fed.state("sales")
        fed.sidecar.handle("sales", event, T0 + seed)  # raises nothing
        after = fed.state("sales")
        # the message listener always fails; the status listener when the status moved
        fault = isinstance(event, MESSAGE_EVENTS) or after.status is not before.status
        faults += fault
        assert after.event_errors.get(name, 0) == before.event_errors.get(name, 0) + fault
        assert fed.value("whatsapp_event_errors_total", account="sales", event=name) == (
            after.event_errors.get(name, 0)
        )
        if isinstance(event, MESSAGE_EVENTS):  # counted before the listeners ran
            assert sum(after.message_counts.values()) == sum(before.message_counts.values()) + 1
    assert faults > 100
    assert sum(fed.state("sales").event_errors.values()) == faults
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failures) == faults
    assert all(r.levelno == logging.ERROR for r in failures)
    assert "ValueError at on_message@test_fuzz_events.py" in failures[0].getMessage() or any(
        "ValueError at on_message@test_fuzz_events.py" in r.getMessage() for r in failures
    )
    for secret in (SECRET_TEXT, SECRET_JID, "12025550142"):
        assert secret not in caplog.text


# -- memory and label cardinality over a long run -------------------------------------------------

#: Every value a label of /metrics may take, whatever the events held.
STATUS_VALUES = frozenset(s.value for s in Status)


def label_values_outside_the_schema(exposition: bytes, accounts: set[str]) -> set[tuple[str, str]]:
    allowed: dict[str, Callable[[str], bool]] = {
        "account": accounts.__contains__,
        "class": {c.value for c in MessageClass}.__contains__,
        "kind": KNOWN_KINDS.__contains__,
        "event": (set(EVENT_CLASSES) | set(OWN_EVENTS)).__contains__,
        "result": {OK, *FAILURE_REASONS}.__contains__,
        "state": STATUS_VALUES.__contains__,
        "le": lambda v: v == "+Inf" or float(v) > 0,
        "reason": lambda v: v.isidentifier(),  # fixed snake_case reasons
        "backend": {"sqlite", "firestore"}.__contains__,
        "step": {"repair", "reconnect", "recovered", "needs_repair"}.__contains__,
        "version": lambda v: v[:1].isdigit(),
        # the configured links (never from an event): the test config's
        "external_url": "http://127.0.0.1:9464".__eq__,
        "runbook_url": "http://127.0.0.1:9464/runbook".__eq__,
    }
    outside = set()
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            for label, value in sample.labels.items():
                check = allowed.get(label)
                if check is None or not check(value):
                    outside.add((label, value))
    return outside


def hostile_event(seed: int) -> tuple[str, Any]:
    """Mostly messages full of random strings; probes with random ids; every class."""
    chooser = RandomChooser(seed)
    if seed % 10 == 0:
        return PROBE_SENT, ProbeSent(chooser.text(), "support", bool(seed % 20))
    if seed % 10 == 5:  # the sidecar's own, refused: a capture may hold any reason
        return SEND_RESULT, SendResult(chooser.text(), chooser.text(), False, chooser.text())
    name = "MessageEv" if seed % 2 else EVENT_NAMES[seed % len(EVENT_NAMES)]
    return name, ProtoBuilder(chooser).event(name)


def test_memory_stays_flat_over_thousands_of_hostile_events(
    make_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="sidecar")  # captured records would be kept
    fed = Fed(make_config([{"id": a} for a in ACCOUNTS]), storage=False)
    accounts = set(ACCOUNTS)

    # built before tracing: what is measured is what handling them keeps (protobuf hands out
    # a new str for every field read, so strings the pipeline kept would count)
    events = [hostile_event(seed)[1] for seed in range(8000)]

    def run(seeds: range) -> None:
        for seed in seeds:
            fed.sidecar.handle(ACCOUNTS[seed % 2], events[seed], T0 + seed)
            if seed % 500 == 0:
                fed.assembly.metrics.render(openmetrics=bool(seed % 1000))
                fed.sidecar.evaluate_verdicts()
                [health_json(h) for h in fed.sidecar.all_health()]

    try:
        tracemalloc.start(8)
        run(range(2000))  # every kind, event name and cache there is to meet
        gc.collect()
        before = tracemalloc.take_snapshot()
        run(range(2000, 8000))
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    changes = after.compare_to(before, "traceback")
    grown = sum(change.size_diff for change in changes)
    # What may grow is bounded by the schema: a series (and its cached text) per kind
    # met for the first time, ~20 KiB here. 6,000 events of fresh random strings: a dict
    # keyed by any of them, or a record kept per event, would hold hundreds of KiB.
    assert grown < 64 * 1024, f"{grown} bytes kept after 6,000 more events; " + "; ".join(
        f"{change.size_diff} B at {change.traceback.format()[-4:]}" for change in changes[:3]
    )
    for state in fed.states():
        assert {kind for _, kind in state.message_counts} <= KNOWN_KINDS
        assert set(state.event_counts) <= set(EVENT_CLASSES) | set(OWN_EVENTS)
        assert set(state.probe_failures) <= {"send_failed", "not_received", "unexpected"}
        assert len(state.probes_received) <= 16
    assert sum(fed.total(c) for c in ("event_counts",)) == 8000
    assert fed.total("event_errors") == 0
    for openmetrics in (False, True):
        exposition = fed.assembly.metrics.render(openmetrics=openmetrics)
        assert label_values_outside_the_schema(exposition, accounts) == set()
    fed.close()
