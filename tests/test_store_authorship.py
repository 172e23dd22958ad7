"""Only a message's author changes it (issue 15, finding 2), in both stores: the
embedded SQLite store and the real Firestore emulator, through the spool and the writer
as live events reach them.

Every story runs twice: each event written in its own batch (the store reads what it
holds), and all events in one batch (the store resolves them among themselves).
"""

from __future__ import annotations

from typing import Any

import pytest

from sidecar import testing as build
from sidecar.core.service import Sidecar
from sidecar.domain.authorship import Stored, own_id, resolve
from sidecar.domain.records import MessageDoc, Timestamp

from .support.backends import Backend
from .support.config import ConfigFactory
from .support.storage import close, drain, make_sidecar, storage_registry

T0 = 1_764_068_400.0
CUSTOMER = build.jid("12025550123")
GROUP = build.jid("120363000000000001", "g.us")
ALICE = build.jid("12025550147")
BOB = build.jid("12025550148")
CUSTOMER_THREAD = "sales__12025550123@s.whatsapp.net"
GROUP_THREAD = "sales__120363000000000001@g.us"


def said(message_id: str, body: str, at: float, **who: Any) -> tuple[float, Any]:
    event = build.message_event(
        build.text(body), message_id=message_id, timestamp_ms=int(at * 1000), **who
    )
    return at, event


def edited(target: str, remote: str, body: str, at: float, /, **who: Any) -> tuple[float, Any]:
    event = build.message_event(
        build.edit(target, remote, body),
        message_id=f"EDIT-{target}-{at}",
        timestamp_ms=int(at * 1000),
        IsEdit=True,
        **who,
    )
    return at, event


async def run(
    make_config: ConfigFactory, backend: Backend, events: list[tuple[float, Any]], one_batch: bool
) -> tuple[dict[str, dict[str, Any]], Sidecar]:
    """The messages stored per thread after ``events``, and the sidecar (still open)."""
    sidecar = make_sidecar(make_config, backend)
    for at, event in events:
        sidecar.handle("sales", event, at)
        if not one_batch:
            await drain(sidecar)
    await drain(sidecar)
    return {thread: messages for thread, (_, messages) in backend.read().items()}, sidecar


def conflicts(sidecar: Sidecar, outcome: str) -> Any:
    return storage_registry(sidecar).get_sample_value(
        "whatsapp_message_conflicts_total", {"account": "sales", "outcome": outcome}
    )


batching = pytest.mark.parametrize("one_batch", [False, True], ids=["apart", "one-batch"])


@batching
async def test_a_customer_cannot_edit_the_business_message(
    make_config: ConfigFactory, backend: Backend, one_batch: bool
) -> None:
    stored, sidecar = await run(
        make_config,
        backend,
        [
            said("OUT1", "Your order ships today.", T0, chat=CUSTOMER, from_me=True),
            edited(
                "OUT1", "12025550123@s.whatsapp.net", "Your order is free.", T0 + 1, chat=CUSTOMER
            ),
        ],
        one_batch,
    )
    message = stored[CUSTOMER_THREAD]["OUT1"]
    assert message["body"] == "Your order ships today."
    assert "editedAt" not in message
    assert list(stored[CUSTOMER_THREAD]) == ["OUT1"]
    assert conflicts(sidecar, "edit_refused") == 1
    assert conflicts(sidecar, "id_reused") == 0
    await close(sidecar)


@batching
async def test_a_group_member_cannot_edit_another_members_message(
    make_config: ConfigFactory, backend: Backend, one_batch: bool
) -> None:
    group = {"chat": GROUP, "is_group": True}
    stored, sidecar = await run(
        make_config,
        backend,
        [
            said("G1", "Meeting at 10.", T0, sender=ALICE, **group),
            edited(
                "G1", "120363000000000001@g.us", "Meeting at 11.", T0 + 1, sender=ALICE, **group
            ),
            edited(
                "G1", "120363000000000001@g.us", "Meeting cancelled.", T0 + 2, sender=BOB, **group
            ),
        ],
        one_batch,
    )
    message = stored[GROUP_THREAD]["G1"]
    assert message["body"] == "Meeting at 11."  # Alice's own edit, not Bob's later one
    assert message["editedAt"] == int((T0 + 1) * 1000)
    assert message["key"]["participant"] == "12025550147@s.whatsapp.net"
    assert conflicts(sidecar, "edit_refused") == 1
    await close(sidecar)


@batching
async def test_a_reused_id_from_another_sender_is_kept_apart(
    make_config: ConfigFactory, backend: Backend, one_batch: bool
) -> None:
    stored, sidecar = await run(
        make_config,
        backend,
        [
            said("SAME", "Invoice attached.", T0, chat=CUSTOMER, from_me=True),
            said("SAME", "Pay to another account.", T0 + 1, chat=CUSTOMER),
            said("SAME", "Pay to another account.", T0 + 1, chat=CUSTOMER),  # delivered twice
        ],
        one_batch,
    )
    messages = stored[CUSTOMER_THREAD]
    apart = own_id("SAME", (False, None))
    assert sorted(messages) == sorted(["SAME", apart])
    assert messages["SAME"]["body"] == "Invoice attached."
    assert messages["SAME"]["direction"] == "outbound"
    assert messages[apart]["body"] == "Pay to another account."
    assert messages[apart]["direction"] == "inbound"
    assert messages[apart]["key"]["id"] == "SAME"
    assert conflicts(sidecar, "id_reused") == 2
    await close(sidecar)


@batching
async def test_an_edit_before_its_message_is_kept_and_the_message_fills_in(
    make_config: ConfigFactory, backend: Backend, one_batch: bool
) -> None:
    stored, sidecar = await run(
        make_config,
        backend,
        [
            edited(
                "IN1", "12025550123@s.whatsapp.net", "Two boxes, please.", T0 + 60, chat=CUSTOMER
            ),
            said("IN1", "One box, please.", T0, chat=CUSTOMER),
        ],
        one_batch,
    )
    message = stored[CUSTOMER_THREAD]["IN1"]
    assert message["body"] == "Two boxes, please."
    assert message["editedAt"] == int((T0 + 60) * 1000)
    assert message["tsClient"] == int(T0 * 1000)  # the message's own time, once it came
    assert isinstance(message["createdAt"], int)
    assert message["key"] == {
        "id": "IN1",
        "remoteJid": "12025550123@s.whatsapp.net",
        "fromMe": False,
        "participant": None,
    }
    assert message["messageType"] == "text"
    assert conflicts(sidecar, "edit_refused") == 0
    await close(sidecar)


@batching
async def test_an_edit_whose_message_never_comes_is_a_whole_message(
    make_config: ConfigFactory, backend: Backend, one_batch: bool
) -> None:
    stored, sidecar = await run(
        make_config,
        backend,
        [edited("OLD", "12025550123@s.whatsapp.net", "Corrected.", T0, chat=CUSTOMER)],
        one_batch,
    )
    message = stored[CUSTOMER_THREAD]["OLD"]
    assert {"createdAt", "updatedAt", "tsClient", "threadId", "accountId", "key"} <= set(message)
    assert message["body"] == "Corrected."
    assert message["direction"] == "inbound"
    await close(sidecar)


@batching
async def test_own_edits_apply_and_a_replay_or_an_older_edit_does_not_undo_them(
    make_config: ConfigFactory, backend: Backend, one_batch: bool
) -> None:
    chat = "12025550123@s.whatsapp.net"
    stored, sidecar = await run(
        make_config,
        backend,
        [
            said("OUT2", "See you at 5.", T0, chat=CUSTOMER, from_me=True),
            edited("OUT2", chat, "See you at 6.", T0 + 20, chat=CUSTOMER, from_me=True),
            edited("OUT2", chat, "See you at 4.", T0 + 10, chat=CUSTOMER, from_me=True),
            said("OUT2", "See you at 5.", T0, chat=CUSTOMER, from_me=True),  # replayed
        ],
        one_batch,
    )
    message = stored[CUSTOMER_THREAD]["OUT2"]
    assert message["body"] == "See you at 6."
    assert message["editedAt"] == int((T0 + 20) * 1000)
    assert list(stored[CUSTOMER_THREAD]) == ["OUT2"]
    assert conflicts(sidecar, "edit_refused") == 0
    await close(sidecar)


def test_rules_in_short() -> None:
    """The rules alone, on the values the stores hand them."""
    them, us = (False, None), (True, None)
    original = MessageDoc("a", "t", "m", {"key": {"fromMe": True}, "body": "x"})
    edit = MessageDoc(
        "a", "t", "m", {"key": {"fromMe": False}, "editedAt": Timestamp(5), "body": "y"}, True
    )
    assert resolve(original, None).outcome == "created"
    assert resolve(original, Stored(us)).outcome == "rewritten"
    assert resolve(original, Stored(them)).outcome == "id_reused"
    assert resolve(edit, Stored(us)).outcome == "edit_refused"
    assert resolve(edit, Stored(them)).outcome == "edited"
    assert resolve(edit, Stored(them, 9)).outcome == "stale_edit"
    assert resolve(edit, None).outcome == "edit_refused"  # no createdAt: spooled by an old version
    assert own_id("m", them) != own_id("m", us) == own_id("m", us)
