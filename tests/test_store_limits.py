"""Batches to Firestore respect its byte limits, and what Firestore refuses never holds
up the rest (issue 15, finding 1). Against the real emulator, which refuses gRPC
messages over 4 MiB and property values over about 1 MiB, as production does at 10 MiB
and 1 MiB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar import testing as build
from sidecar.adapters import store_firestore
from sidecar.core.service import Sidecar

from .support.backends import Backend
from .support.config import ConfigFactory
from .support.storage import close, drain, make_sidecar, storage_registry

T0 = 1_764_068_400.0
#: WhatsApp's longest text, in characters; an emoji is 4 bytes in UTF-8.
LONGEST_TEXT = 65_536
EMOJI = "\U0001f600"


@pytest.fixture
def firestore_backend(
    tmp_path: Path, emulator_host: str, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator_host)
    return Backend("firestore", tmp_path / "state", emulator_host)


def receive(sidecar: Sidecar, message_id: str, body: str, chat: int, at: float) -> None:
    event = build.message_event(
        build.text(body),
        chat=build.jid(f"1202555{chat:04d}"),
        message_id=message_id,
        timestamp_ms=int(at * 1000),
    )
    sidecar.handle("sales", event, at)


def sample(sidecar: Sidecar, name: str, labels: dict[str, str] | None = None) -> Any:
    return storage_registry(sidecar).get_sample_value(name, labels or {})


async def test_long_texts_spooled_together_go_in_requests_firestore_takes(
    make_config: ConfigFactory, firestore_backend: Backend
) -> None:
    """Twelve of WhatsApp's longest texts, each with its thread update, are about 6 MB:
    more than one request may hold. They must all land, in several requests."""
    sidecar = make_sidecar(make_config, firestore_backend)
    for n in range(12):
        receive(sidecar, f"LONG{n}", EMOJI * LONGEST_TEXT, chat=n, at=T0 + n)

    await drain(sidecar, batches=12)

    stored = firestore_backend.read()
    bodies = {mid: m["body"] for _, messages in stored.values() for mid, m in messages.items()}
    assert sorted(bodies) == sorted(f"LONG{n}" for n in range(12))
    assert all(body == EMOJI * LONGEST_TEXT for body in bodies.values())
    assert all(thread is not None and thread["lastMessageText"] for thread, _ in stored.values())
    assert sample(sidecar, "whatsapp_store_writes_total", {"backend": "firestore"}) == 24
    assert sample(sidecar, "whatsapp_store_write_errors_total", {"backend": "firestore"}) == 0
    assert sample(sidecar, "whatsapp_spool_write_errors_total", {"account": "sales"}) == 0
    await close(sidecar)


async def test_a_message_larger_than_a_document_is_set_aside_and_counted(
    make_config: ConfigFactory, firestore_backend: Backend
) -> None:
    """A text over 1 MiB (longer than WhatsApp's own clients send, but a peer may)
    can never be stored: it is set aside at once, counted, and the others land."""
    sidecar = make_sidecar(make_config, firestore_backend)
    receive(sidecar, "BEFORE", "first", chat=1, at=T0)
    receive(sidecar, "HUGE", EMOJI * 300_000, chat=2, at=T0 + 1)
    receive(sidecar, "AFTER", "last", chat=1, at=T0 + 2)

    await drain(sidecar, batches=3)

    stored = firestore_backend.read()
    ids = sorted(mid for _, messages in stored.values() for mid in messages)
    assert ids == ["AFTER", "BEFORE"]
    assert sample(sidecar, "whatsapp_spool_write_errors_total", {"account": "sales"}) == 1
    assert sample(sidecar, "whatsapp_store_write_errors_total", {"backend": "firestore"}) == 0
    await close(sidecar)


async def test_an_operation_firestore_refuses_is_found_and_set_aside_alone(
    make_config: ConfigFactory, firestore_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When Firestore refuses a batch for what one operation holds (here: the store's
    own size limit set above Firestore's, so the emulator refuses a 1.2 MB value), the
    writer splits the batch until that operation is alone, sets it aside, and writes
    every other operation, in order."""
    # raising=False: without the constant (older code) the test must still run and fail
    monkeypatch.setattr(store_firestore, "MAX_WRITE_BYTES", 2_000_000, raising=False)
    sidecar = make_sidecar(make_config, firestore_backend)
    for n in range(6):
        receive(sidecar, f"OK{n}", f"fine {n}", chat=n % 3, at=T0 + n)
    receive(sidecar, "REFUSED", EMOJI * 300_000, chat=7, at=T0 + 6)
    for n in range(6, 9):
        receive(sidecar, f"OK{n}", f"fine {n}", chat=n % 3, at=T0 + n)

    await drain(sidecar, batches=3)

    stored = firestore_backend.read()
    ids = sorted(mid for _, messages in stored.values() for mid in messages)
    assert ids == sorted(f"OK{n}" for n in range(9))
    assert sample(sidecar, "whatsapp_spool_write_errors_total", {"account": "sales"}) == 1
    # The message and its thread update are refused: 14 operations, halved down to
    # each refused one alone, fail at most once per halving on the way (4 each).
    errors = sample(sidecar, "whatsapp_store_write_errors_total", {"backend": "firestore"})
    assert 2 < errors <= 1 + 2 * 4
    await close(sidecar)
