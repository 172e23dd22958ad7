"""The send path's pure rules: recipients, texts, threads, outbox ids, and the one-way
status of an outbound message (docs/sending.md)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sidecar.domain import outbox, sending
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


# -- the outbox's steps ---------------------------------------------------------------------

POLICY = outbox.SendPolicy(max_attempts=3, lease_s=60.0, backoff_base_s=2.0, backoff_cap_s=5.0)
ITEM = outbox.OutboxItem("o1", "sales", "12025550123@s.whatsapp.net", "sales__x", "hi")


def test_who_may_claim_a_message() -> None:
    assert outbox.claimable(ITEM, now=0.0)
    later = replace(ITEM, next_attempt_at=100.0)
    assert not outbox.claimable(later, now=99.0)
    assert outbox.claimable(later, now=100.0)
    held = outbox.claimed(ITEM, now=10.0, worker="replica-a", policy=POLICY)
    assert (held.status, held.claimed_by, held.lease_until, held.attempt_count) == (
        outbox.PROCESSING,
        "replica-a",
        70.0,
        1,
    )
    assert not outbox.claimable(held, now=69.9)  # another replica must not send it too
    assert outbox.claimable(held, now=70.0)  # its holder died: tried again
    assert not outbox.claimable(replace(held, provider_message_id="3EB0"), now=1000.0)
    for done in (outbox.SENT, outbox.FAILED):
        assert not outbox.claimable(replace(ITEM, status=done), now=1000.0)


def test_attempts_back_off_then_fail_and_an_offline_account_costs_none() -> None:
    item, now = ITEM, 0.0
    waits = []
    for _ in range(POLICY.max_attempts):
        item = outbox.claimed(item, now, "a", POLICY)
        item = outbox.attempt_failed(item, now, "timeout", POLICY)
        if item.status == outbox.QUEUED:
            waits.append(item.next_attempt_at - now)
            now = item.next_attempt_at
    assert waits == [2.0, 4.0]
    assert (item.status, item.attempt_count, item.last_error, item.failed_at) == (
        outbox.FAILED,
        3,
        "timeout",
        now,
    )
    assert item.lease_until is None

    offline = ITEM
    for _ in range(10):  # an outage of any length
        offline = outbox.not_connected(outbox.claimed(offline, 0.0, "a", POLICY), 0.0, POLICY)
    assert (offline.status, offline.attempt_count, offline.next_attempt_at) == (
        outbox.QUEUED,
        0,
        POLICY.offline_retry_s,
    )
    assert POLICY.backoff(10) == 5.0  # capped


def test_a_recorded_send_is_sent_and_released() -> None:
    held = outbox.claimed(ITEM, 0.0, "a", POLICY)
    sent = outbox.recorded(replace(held, last_error="timeout"), "3EB0ABC", now=5.0)
    assert (sent.status, sent.provider_message_id, sent.sent_at, sent.lease_until) == (
        outbox.SENT,
        "3EB0ABC",
        5.0,
        None,
    )
    assert sent.last_error is None
