"""The send path's pure rules: recipients, texts, threads, outbox ids, and the one-way
status of an outbound message (docs/sending.md)."""

from __future__ import annotations

import pytest

from sidecar.domain import sending
from sidecar.domain.sending import (
    DELIVERED,
    FAILED,
    QUEUED,
    READ,
    SENT,
    BadSendRequest,
    Recipient,
    TextTooLong,
    advanced,
)


@pytest.mark.parametrize(
    ("to", "jid"),
    [
        ("12025550123", "12025550123@s.whatsapp.net"),
        ("+12025550123", "12025550123@s.whatsapp.net"),
        (" +1 202-555-0123 ", "12025550123@s.whatsapp.net"),
        ("12025550123@s.whatsapp.net", "12025550123@s.whatsapp.net"),
        ("120363000000000001@g.us", "120363000000000001@g.us"),
        ("12025550123-1600000000@g.us", "12025550123-1600000000@g.us"),
        ("123456789012345@lid", "123456789012345@lid"),
        ("12025550123@s.whatsapp.net\n", "12025550123@s.whatsapp.net"),  # trimmed
    ],
)
def test_recipients_a_request_may_name(to: str, jid: str) -> None:
    assert sending.recipient(to).jid == jid


@pytest.mark.parametrize(
    "to",
    [
        None,
        12025550123,
        "",
        "   ",
        "12345",  # too short for a number with its country code
        "1234567890123456",  # longer than E.164
        "0712-abc",
        "12025550123:5@s.whatsapp.net",  # a device, not a chat
        "12025550123@broadcast",
        "status@broadcast",
        "abc@g.us",
        "@s.whatsapp.net",
        "12025550123@",
    ],
)
def test_recipients_refused_without_echoing_them(to: object) -> None:
    with pytest.raises(BadSendRequest) as refused:
        sending.recipient(to)
    assert "'to'" in str(refused.value)
    digits = "".join(c for c in str(to) if c.isdigit())
    if len(digits) >= 5:
        assert digits not in str(refused.value)


def test_texts() -> None:
    assert sending.text("hello") == "hello"
    longest = "x" * sending.MAX_TEXT_CHARS
    assert sending.text(longest) == longest
    with pytest.raises(TextTooLong):
        sending.text(longest + "x")
    for bad in (None, "", "  \n", 5, ["hi"]):
        with pytest.raises(BadSendRequest, match="'message'"):
            sending.text(bad)


def test_the_thread_is_the_callers_only_when_it_is_this_accounts() -> None:
    to = Recipient("12025550123", "s.whatsapp.net")
    assert sending.thread_of("sales", to) == "sales__12025550123@s.whatsapp.net"
    assert sending.thread_of("sales", to, "sales__other") == "sales__other"
    assert sending.thread_of("sales", to, "support__x") == "sales__12025550123@s.whatsapp.net"
    assert sending.thread_of("sales", to, 42) == "sales__12025550123@s.whatsapp.net"
    assert sending.thread_of("sales", to, "sales__a/b").startswith("~")  # never a path


def test_client_message_ids_and_the_outbox_ids_they_give() -> None:
    assert sending.client_message_id(None, "fresh") == "fresh"
    assert sending.client_message_id(" c-1 ", "fresh") == "c-1"
    for bad in ("", " ", 7, "x" * 201):
        with pytest.raises(BadSendRequest, match="'clientMessageId'"):
            sending.client_message_id(bad, "fresh")
    assert sending.outbox_id("c-1_OK") == "c-1_OK"
    assert sending.outbox_id("a/b c.d") == "a_b_c_d"  # as the existing backend makes it


@pytest.mark.parametrize(
    ("current", "new", "moves"),
    [
        (None, QUEUED, True),
        (QUEUED, SENT, True),
        (SENT, DELIVERED, True),
        (DELIVERED, READ, True),
        (SENT, READ, True),  # a read receipt can come first
        (READ, DELIVERED, False),  # late: never back
        (DELIVERED, SENT, False),
        (QUEUED, FAILED, True),
        (SENT, FAILED, False),  # it reached WhatsApp: not failed
        (FAILED, SENT, True),  # a retry that went through
        ("something-else", SENT, True),
    ],
)
def test_a_status_only_moves_forward(current: str | None, new: str, moves: bool) -> None:
    assert advanced(current, new) is moves
