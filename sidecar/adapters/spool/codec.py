"""The spool's JSON: document fields (which keep :class:`Timestamp` and
:data:`SERVER_TIME`), and the facts documents are built from."""

from __future__ import annotations

import json
from typing import Any

import orjson

from sidecar.domain.facts import MAX_MS, MIN_MS, MessageFacts
from sidecar.domain.records import SERVER_TIME, Timestamp


def encode_fields(fields: dict[str, Any]) -> str:
    """JSON that keeps :class:`Timestamp` and :data:`SERVER_TIME` (see :func:`decode_fields`).

    orjson: on the event path, where the standard library's encoder cost 4x more."""
    return orjson.dumps(fields, default=_encode, option=orjson.OPT_PASSTHROUGH_DATACLASS).decode()


def decode_fields(text: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(text, object_hook=_decode)
    return decoded


def _encode(value: Any) -> Any:
    if isinstance(value, Timestamp):
        return {"$ts": value.ms}
    if value is SERVER_TIME:
        return {"$server": True}
    raise TypeError(f"cannot store {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    if obj.keys() == {"$ts"}:
        return Timestamp(obj["$ts"])
    if obj.keys() == {"$server"}:
        return SERVER_TIME
    return obj


def encode_facts(facts: MessageFacts) -> str:
    """A message's facts as the JSON array the spool keeps (:func:`decode_facts`)."""
    return orjson.dumps(tuple(facts)).decode()


def decode_facts(values: Any) -> MessageFacts | None:
    """Facts read back from the spool, or None when they are not what :func:`encode_facts`
    writes (a damaged row or a torn line): no store could take them. (Exact types: JSON
    gives nothing else, and these checks run once per spooled message.)"""
    if type(values) is not list or len(values) != _FACTS_LENGTH:
        return None
    account, user, server, group, from_me, sender, message, ts, kind, body, media, edit = values
    if not (
        type(account) is str
        and account
        and type(user) is str
        and type(server) is str
        and type(group) is bool
        and type(from_me) is bool
        and (sender is None or type(sender) is str)
        and type(message) is str
        and type(ts) is int
        and MIN_MS <= ts <= MAX_MS
        and type(kind) is str
        and type(body) is str
        and type(edit) is bool
        and (
            media is None
            or (type(media) is dict and all(v is None or type(v) is str for v in media.values()))
        )
    ):
        return None
    return MessageFacts._make(values)


_FACTS_LENGTH = len(MessageFacts._fields)


def encode_thread(fields: dict[str, Any], unfolded: list[MessageFacts]) -> str:
    """A pending thread update: its fields (as :func:`encode_fields`) when every message's
    update is merged in, else ``[fields, [facts, ...]]`` (:func:`decode_thread`)."""
    if not unfolded:
        return encode_fields(fields)
    return orjson.dumps(
        [fields, [tuple(facts) for facts in unfolded]],
        default=_encode,
        option=orjson.OPT_PASSTHROUGH_DATACLASS,
    ).decode()


def decode_thread(text: str) -> tuple[dict[str, Any], list[MessageFacts]] | None:
    """What :func:`encode_thread` wrote, or None when it is not that (a damaged row)."""
    value: Any = json.loads(text, object_hook=_decode)
    if isinstance(value, dict):
        return value, []
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], dict)):
        return None
    unfolded = [decode_facts(item) for item in value[1]] if isinstance(value[1], list) else [None]
    if any(facts is None for facts in unfolded):
        return None
    return value[0], unfolded  # type: ignore[return-value]
