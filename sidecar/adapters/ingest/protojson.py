"""A WhatsApp message as a gateway's JSON carries it, back into neonize's protobuf
(``waE2E.Message``), so the classifier reads it as it reads a live event (docs/ingest.md).

Gateways built on Baileys serialise the same protobuf two ways: protobufjs's
``toJSON`` (int64 as strings, bytes as base64, enums as names) and plain
``JSON.stringify`` of decoded objects (Buffers as ``{"type": "Buffer", "data":
[...]}``, typed arrays as index maps ``{"0": 1, ...}``, ``Long`` as ``{"low", "high",
"unsigned"}``, enums as numbers); Evolution API mixes them by version. Baileys names
fields in lower camel case where whatsmeow (neonize) spells acronyms in capitals
(``fileSha256`` / ``fileSHA256``, ``remoteJid`` / ``remoteJID``): no two fields of one
message differ only in case, so names are matched without it.

The walk follows neonize's descriptor: a key it does not know, or a value of the
wrong kind, is left out (never fatal: gateways add keys of their own, such as
Evolution's ``base64``). An enum number neonize does not know is kept as the wire
keeps it (an unknown field), exactly as a live event with that number would be.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message as ProtoMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

#: Deeper than any real message (a quoted message in a quoted message ...); past it the
#: rest is left out rather than recursing without end on a hostile body.
MAX_DEPTH = 32
#: Baileys' names that are not neonize's in more than case.
_RENAMED = {"oldestmessagetimestamp": "oldestMessageTimestampInWindow"}
_INT64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_INT32 = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
    }
)
_UNSIGNED = frozenset(
    {
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    }
)
_FLOATS = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})


class NotAMessage(ValueError):
    """The value is not a JSON object: nothing to convert."""


def message_from_json(data: Any) -> WAMessage:
    """``data`` (a decoded JSON object) as a ``waE2E.Message``."""
    if not isinstance(data, Mapping):
        raise NotAMessage("a message must be a JSON object")
    message = WAMessage()
    fill(message, data)
    return message


def fill(target: ProtoMessage, data: Mapping[str, Any], depth: int = 0) -> None:
    """Set on ``target`` what ``data`` holds that its descriptor knows."""
    fields = _fields(target.DESCRIPTOR)
    for key, value in data.items():
        if value is None or not isinstance(key, str):
            continue
        field = fields.get(_RENAMED.get(key.lower(), key).lower())
        if field is None:
            continue
        if field.is_repeated:
            _fill_repeated(target, field, value, depth)
        elif field.message_type is not None:
            if isinstance(value, Mapping) and depth < MAX_DEPTH:
                child = getattr(target, field.name)
                child.SetInParent()  # an empty object still says the field is there
                fill(child, value, depth + 1)
        else:
            _set_scalar(target, field, value)


def _fill_repeated(target: ProtoMessage, field: FieldDescriptor, value: Any, depth: int) -> None:
    items = _sequence(value)
    if items is None:
        return
    container = getattr(target, field.name)
    for item in items:
        if field.message_type is not None:
            if isinstance(item, Mapping) and depth < MAX_DEPTH:
                fill(container.add(), item, depth + 1)
        else:
            converted = _scalar(field, item)
            if converted is not None:
                container.append(converted)


def _set_scalar(target: ProtoMessage, field: FieldDescriptor, value: Any) -> None:
    if field.enum_type is not None:
        number = _enum(field, value)
        if number is None:
            return
        if field.enum_type.values_by_number.get(number) is None:
            # as the wire would: a closed enum keeps an unknown number as an unknown field
            target.MergeFromString(_varint_field(field.number, number))
            return
        setattr(target, field.name, number)
        return
    converted = _scalar(field, value)
    if converted is not None:
        setattr(target, field.name, converted)


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    """``value`` as the field's Python type, or None when it is not one."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return value if isinstance(value, str) else None
    if kind == FieldDescriptor.TYPE_BYTES:
        return _bytes(value)
    if kind == FieldDescriptor.TYPE_BOOL:
        if isinstance(value, bool):
            return value
        return bool(value) if isinstance(value, int) and value in (0, 1) else None
    if kind in _INT64 or kind in _INT32:
        number = integer(value)
        if number is None:
            return None
        bits = 64 if kind in _INT64 else 32
        low, high = (
            (0, 2**bits - 1) if kind in _UNSIGNED else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        )
        return number if low <= number <= high else None
    if kind in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        try:
            return float(value)  # protobufjs writes NaN and Infinity as strings
        except ValueError:
            return None
    if kind == FieldDescriptor.TYPE_ENUM:  # a repeated enum: unknown numbers are left out
        number = _enum(field, value)
        known = number is not None and field.enum_type.values_by_number.get(number) is not None
        return number if known else None
    return None


def integer(value: Any) -> int | None:
    """An int64 as protobufjs writes it (a decimal string), as a JSON number, or as a
    ``Long`` object ``{"low", "high", "unsigned"}``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 24:  # never int() of thousands of digits
            return None
        try:
            return int(text, 10)
        except ValueError:
            return None
    if isinstance(value, Mapping) and "low" in value and "high" in value:
        low, high = value.get("low"), value.get("high")
        if not isinstance(low, int) or not isinstance(high, int) or isinstance(low, bool):
            return None
        combined = ((high & 0xFFFFFFFF) << 32) | (low & 0xFFFFFFFF)
        if value.get("unsigned") is True or combined < 2**63:
            return combined
        return combined - 2**64
    return None


def _bytes(value: Any) -> bytes | None:
    """Bytes as any Baileys-based gateway writes them: base64 (standard or URL-safe),
    a Node Buffer ``{"type": "Buffer", "data": [...] or "<base64>"}``, a typed array's
    index map ``{"0": 1, ...}``, or a list of byte values."""
    if isinstance(value, str):
        return _base64(value)
    if isinstance(value, Mapping):
        if value.get("type") == "Buffer" and "data" in value:
            return _bytes(value["data"])
        return _octets(_index_map(value))
    if isinstance(value, list):
        return _octets(value)
    return None


def _base64(text: str) -> bytes | None:
    padded = text.strip() + "=" * (-len(text.strip()) % 4)
    altchars = b"-_" if ("-" in padded or "_" in padded) else None
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


def _index_map(value: Mapping[str, Any]) -> list[Any] | None:
    """A typed array as ``JSON.stringify`` writes it: ``{"0": 51, "1": 8}``."""
    if not all(isinstance(k, str) and k.isdigit() for k in value):
        return None
    try:
        return [value[str(n)] for n in range(len(value))]
    except KeyError:
        return None


def _octets(values: list[Any] | None) -> bytes | None:
    if values is None or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values
    ):
        return None
    return bytes(values)


def _sequence(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):  # a repeated field a gateway wrote as an index map
        return _index_map(value)
    return None


def _enum(field: FieldDescriptor, value: Any) -> int | None:
    """An enum as a number (any: known or not) or by a name the field's enum knows."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    known = field.enum_type.values_by_name.get(value) if isinstance(value, str) else None
    return None if known is None else int(known.number)


def _varint_field(number: int, value: int) -> bytes:
    """One varint field on the wire (negative enums take ten bytes, as on the wire)."""
    out = bytearray()
    for part in (number << 3, value & 0xFFFFFFFFFFFFFFFF):
        while True:
            byte = part & 0x7F
            part >>= 7
            if part:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                break
    return bytes(out)


@functools.cache
def _fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields by lower-case name."""
    return {field.name.lower(): field for field in descriptor.fields}
