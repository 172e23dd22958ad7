"""A neonize message written as the gateways write it, for the ingest tests: the two
JSON forms a Baileys-based gateway produces (docs/ingest.md). Built here from the
descriptor, never by the code under test."""

from __future__ import annotations

import base64
import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_CAPITALS = re.compile(r"[A-Z]{2,}[0-9]*(?=[A-Z][a-z]|$|[^A-Z0-9])|[A-Z]{2,}[0-9]*")


def baileys_name(name: str) -> str:
    """neonize's (whatsmeow's) field name as Baileys' WAProto spells it: acronyms in lower
    camel case (``fileSHA256`` -> ``fileSha256``, ``remoteJID`` -> ``remoteJid``,
    ``URL`` -> ``url``, ``JPEGThumbnail`` -> ``jpegThumbnail``)."""

    def fold(match: re.Match[str]) -> str:
        run = match.group(0)
        if match.start() == 0:
            return run.lower()
        return run[0] + run[1:].lower()

    if name.isupper():
        return name.lower()
    head = re.match(r"^[A-Z]+(?=[A-Z][a-z])", name)
    if head:  # JPEGThumbnail -> jpegThumbnail
        name = head.group(0).lower() + name[head.end() :]
    return _CAPITALS.sub(fold, name)


def protobufjs_json(message: Message) -> dict[str, Any]:
    """protobufjs ``toJSON``: Baileys' names, int64 as strings, bytes as base64, enums as
    names (a number neonize does not name stays a number)."""
    return _walk(message, _protobufjs_value)


def raw_json(message: Message, *, index_maps: bool = False) -> dict[str, Any]:
    """``JSON.stringify`` of decoded objects: Buffers (or, with ``index_maps``, typed
    arrays as ``{"0": ...}``), ``Long`` objects for int64, enums as numbers."""
    return _walk(message, lambda field, value: _raw_value(field, value, index_maps))


def _walk(message: Message, leaf: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        name = baileys_name(field.name)
        if field.message_type is not None:
            out[name] = (
                [_walk(item, leaf) for item in value] if field.is_repeated else _walk(value, leaf)
            )
        elif field.is_repeated:
            out[name] = [leaf(field, item) for item in value]
        else:
            out[name] = leaf(field, value)
    return out


def _protobufjs_value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    if field.type in _INT64:
        return str(value)
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return value if known is None else known.name
    return value


def _raw_value(field: FieldDescriptor, value: Any, index_maps: bool) -> Any:
    if field.type == FieldDescriptor.TYPE_BYTES:
        if index_maps:
            return {str(n): b for n, b in enumerate(value)}
        return {"type": "Buffer", "data": list(value)}
    if field.type in _INT64:
        unsigned = field.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
        bits = value & 0xFFFFFFFFFFFFFFFF
        low, high = bits & 0xFFFFFFFF, bits >> 32
        if not unsigned:  # a signed Long keeps its halves as signed 32-bit numbers
            low = low - 2**32 if low >= 2**31 else low
            high = high - 2**32 if high >= 2**31 else high
        return {"low": low, "high": high, "unsigned": unsigned}
    return value


def waha_envelope(event: str, payload: Any, *, engine: str = "NOWEB") -> dict[str, Any]:
    """A body as WAHA posts its webhooks (src/structures/webhooks.dto.ts, WAHAWebhook):
    ``engine.event``'s payload is a Baileys event, ``{"event", "data"}``."""
    return {
        "id": "evt_01kb0c00000000000000000000",
        "timestamp": 1_764_068_400_000,
        "event": event,
        "session": "default",
        "metadata": {},
        "me": None,
        "payload": payload,
        "engine": engine,
        "environment": {"version": "2025.12.1", "engine": engine, "tier": "CORE"},
    }
