"""The capture format, version 1: JSON Lines of events (docs/reference.md, "Capture format").

Reading never stops at a bad line: each one becomes a :class:`CaptureError`
with its line number, and the caller counts it and goes on. A line longer than
:data:`MAX_LINE_BYTES` is one: it is skipped without ever being held whole in
memory (and the writer never writes one).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from neonize.events import MessageEv

from sidecar.core.pipeline import EVENT_CLASSES, event_name
from sidecar.core.replay import RecordDecodeError, Unreadable
from sidecar.domain.own_events import OWN_EVENTS, OwnEvent

TICK = "tick"
#: ``t`` is Unix seconds from 1970 up to 2100: the clock, the learned hourly rates and
#: the health JSON all turn it into dates, and a date past year 9999 does not exist.
MIN_T, MAX_T = 0.0, 4_102_444_800.0
#: The longest line read as a record (without its newline): far more than any real event
#: (a message with its thumbnail is tens of KB; history syncs come in chunks of a few MB).
MAX_LINE_BYTES = 16 * 1024 * 1024
#: How much of an overlong line is read at a time while it is skipped.
_SKIP_CHUNK = 1 << 16


class RecordTooLongError(ValueError):
    """An event whose capture line would be longer than :data:`MAX_LINE_BYTES`."""


@dataclass(slots=True)  # not frozen: one is made per line, and never changed
class CaptureRecord:
    line: int
    t: float
    event: str
    account: str | None
    payload: bytes

    @property
    def is_tick(self) -> bool:
        return self.event == TICK

    def decode(self) -> ProtoMessage | OwnEvent:
        """The neonize event object, decoded with the neonize class's ``FromString``
        (or one of the sidecar's own events: a probe or a message sent)."""
        own = OWN_EVENTS.get(self.event)
        if own is not None:
            try:
                return own.from_json(json.loads(self.payload))
            except (ValueError, RecursionError) as exc:
                raise CaptureDecodeError(self.line, f"not a valid {self.event}: {exc}") from None
        try:
            decoded: ProtoMessage = EVENT_CLASSES[self.event].FromString(self.payload)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise CaptureDecodeError(
                self.line, f"payload is not a valid {self.event}: {exc}"
            ) from None
        return decoded


#: A line that is not a record; the replayer counts it and goes on.
CaptureError = Unreadable
#: A record whose payload does not decode as its event.
CaptureDecodeError = RecordDecodeError


def read_capture(stream: IO[bytes]) -> Iterator[CaptureRecord | CaptureError]:
    number = 0
    while raw := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raw = b""  # not kept while the rest of the line goes by
            while (chunk := stream.readline(_SKIP_CHUNK)) and not chunk.endswith(b"\n"):
                pass
            yield CaptureError(number, f"longer than {MAX_LINE_BYTES} bytes")
        elif raw.strip():
            yield parse_line(raw, number)


def capture_records(path: Path) -> Iterator[CaptureRecord | CaptureError]:
    """Every record of the capture file at ``path``; the file is closed at the end."""
    with path.open("rb") as stream:
        yield from read_capture(stream)


def parse_line(raw: bytes, line: int) -> CaptureRecord | CaptureError:
    try:
        data: Any = _loads(raw)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError, UnicodeDecodeError, an integer of more than 4,300 digits (all
        # ValueErrors) and nesting deeper than the interpreter's stack (RecursionError)
        return CaptureError(line, f"not JSON: {exc.__class__.__name__}")
    if not isinstance(data, dict):
        return CaptureError(line, "a record must be a JSON object")
    t = data.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float):
        return CaptureError(line, "'t' must be a number (Unix seconds)")
    if not MIN_T <= t <= MAX_T:  # also NaN and infinities; never float() of a huge int
        return CaptureError(line, "'t' is not a Unix time between 1970 and 2100")
    event = data.get("event")
    if event == TICK:
        return CaptureRecord(line, float(t), TICK, None, b"")
    own = OWN_EVENTS.get(event) if isinstance(event, str) else None
    if own is not None:
        data = json.loads(raw)  # its values as the standard library reads them (_loads)
        account = data.get("account")
        if not isinstance(account, str) or not account:
            return CaptureError(line, "'account' is missing")
        try:
            parsed = own.from_json(data.get(own.KEY))
        except ValueError as exc:
            return CaptureError(line, f"not a valid {own.EVENT}: {exc}")
        # only what the event keeps is passed on: a flat object, whatever the line held
        return CaptureRecord(
            line, float(t), own.EVENT, account, json.dumps(parsed.to_json()).encode()
        )
    if not isinstance(event, str) or event not in EVENT_CLASSES:
        return CaptureError(line, "'event' is not a neonize event class name or 'tick'")
    account = data.get("account")
    if not isinstance(account, str) or not account:
        return CaptureError(line, "'account' is missing")
    payload = data.get("payload", "")
    if not isinstance(payload, str):
        return CaptureError(line, "'payload' must be base64 text")
    try:
        decoded = binascii.a2b_base64(payload, strict_mode=True)  # b64decode(validate=True)
    except (binascii.Error, ValueError):
        return CaptureError(line, "'payload' is not valid base64")
    return CaptureRecord(line, float(t), event, account, decoded)


def _loads(raw: bytes) -> Any:
    """``json.loads``, read by orjson where orjson reads it (8x faster: every record of a
    capture goes through here). What orjson refuses (NaN, integers past 64 bits, lone
    surrogates, other encodings, deep nesting) is read by ``json.loads`` as before, which
    also raises the same errors. orjson reads an integer past 64 bits as a float: only
    ``t`` is read from a neonize event's record, and such a ``t`` is out of range
    either way; an own event's record is read again by ``json.loads``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def encode_record(t: float, account: str | None, event: ProtoMessage | OwnEvent | None) -> str:
    """One capture line (without the newline); ``event=None`` writes a tick."""
    if event is None:
        return json.dumps({"t": t, "event": TICK})
    if not isinstance(event, ProtoMessage):
        return json.dumps(
            {"t": t, "account": account, "event": event.EVENT, event.KEY: event.to_json()}
        )
    payload = base64.b64encode(event.SerializeToString()).decode("ascii")
    return json.dumps({"t": t, "account": account, "event": event_name(event), "payload": payload})


def blank_text(event: Any) -> Any:
    """A copy of a ``MessageEv`` with every string and byte string of its message
    emptied (text, captions, names, media keys) and the sender's push name gone.

    Presence is kept, so the copy classifies exactly as the original did.
    Other events are returned as they are.
    """
    if not isinstance(event, MessageEv):
        return event
    copy = MessageEv()
    copy.CopyFrom(event)
    for name in ("Message", "Raw"):
        if copy.HasField(name):
            _blank(getattr(copy, name))
    if copy.Info.HasField("Pushname"):
        copy.Info.Pushname = ""
    return copy


def _blank(message: ProtoMessage) -> None:
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if field.is_repeated else (value,):
                _blank(item)
        elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            empty: str | bytes = "" if field.type == FieldDescriptor.TYPE_STRING else b""
            if field.is_repeated:
                count = len(value)
                del value[:]
                value.extend([empty] * count)
            else:
                setattr(message, field.name, empty)


class CaptureWriter:
    """Appends records in the capture format. A new capture is created owner-only
    (0600): it holds message texts, JIDs and phone numbers."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, t: float, account: str | None, event: ProtoMessage | OwnEvent | None) -> None:
        """Append one record; raises :class:`RecordTooLongError` (nothing written) for an
        event whose line replay would refuse."""
        line = encode_record(t, account, event)
        if len(line) > MAX_LINE_BYTES:  # ASCII: characters are bytes
            raise RecordTooLongError(f"a record of {len(line)} bytes")
        self._file.write(line + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
