"""Proof of delivery from receipts (issue 16): which receipts prove what, latencies,
sends undelivered past the timeout, and the verdict's evidence that needs several
different chats, never one recipient whose phone is off."""

from __future__ import annotations

from neonize.proto.Neonize_pb2 import Receipt

from sidecar import testing as build
from sidecar.domain.delivery import MAX_TRACKED, Deliveries, proven_status
from sidecar.domain.sending import DELIVERED, READ

TIMEOUT = 300.0


def receipt(kind: int | None, *, from_me: bool = False) -> Receipt:
    made = Receipt(MessageIDs=["A"], Timestamp=1)
    made.MessageSource.Chat.CopyFrom(build.jid("12025550123"))
    made.MessageSource.IsFromMe = from_me
    if kind is not None:
        made.Type = kind
    return made


def test_only_the_recipients_receipts_prove_anything() -> None:
    assert proven_status(receipt(Receipt.DELIVERED)) == DELIVERED
    assert proven_status(receipt(Receipt.INACTIVE)) == DELIVERED
    assert proven_status(receipt(Receipt.READ)) == READ
    assert proven_status(receipt(Receipt.PLAYED)) == READ
    assert proven_status(receipt(None)) is None  # unset: proto2 would read DELIVERED
    assert proven_status(receipt(Receipt.DELIVERED, from_me=True)) is None
    for kind in (Receipt.SENDER, Receipt.RETRY, Receipt.READ_SELF, Receipt.SERVER_ERROR):
        assert proven_status(receipt(kind)) is None


def test_latency_is_counted_once_per_send() -> None:
    sends = Deliveries()
    sends.sent("A", "chat-1", at=100.0)
    sends.sent("B", "chat-2", at=110.0)
    assert sends.receipt(["A", "B", "unknown"], DELIVERED, at=112.5) == [12.5, 2.5]
    assert sends.receipt(["A"], READ, at=200.0) == []  # delivered already
    assert sends.undelivered(now=1000.0, timeout_s=TIMEOUT) == 0


def test_undelivered_counts_only_sends_past_the_timeout() -> None:
    sends = Deliveries()
    sends.sent("A", "chat-1", at=0.0)
    sends.sent("B", "chat-1", at=250.0)
    assert sends.undelivered(now=301.0, timeout_s=TIMEOUT) == 1
    assert sends.undelivered(now=551.0, timeout_s=TIMEOUT) == 2


def test_one_recipient_whose_phone_is_off_is_no_evidence() -> None:
    sends = Deliveries(chats_in_a_row=3)
    for n in range(10):
        sends.sent(f"M{n}", "chat-offline", at=float(n))
    assert sends.undelivered(now=1000.0, timeout_s=TIMEOUT) == 10
    assert not sends.not_delivered_to_several_chats(now=1000.0, timeout_s=TIMEOUT)


def test_several_different_chats_in_a_row_are_evidence_until_one_delivers() -> None:
    sends = Deliveries(chats_in_a_row=3)
    sends.sent("OK", "chat-0", at=0.0)
    sends.receipt(["OK"], DELIVERED, at=1.0)
    for n, chat in enumerate(("chat-1", "chat-2", "chat-2", "chat-3"), start=1):
        sends.sent(f"M{n}", chat, at=float(n))
    assert not sends.not_delivered_to_several_chats(now=200.0, timeout_s=TIMEOUT)  # too soon
    assert sends.not_delivered_to_several_chats(now=400.0, timeout_s=TIMEOUT)
    sends.receipt(["M4"], DELIVERED, at=401.0)  # the newest went through after all
    assert not sends.not_delivered_to_several_chats(now=402.0, timeout_s=TIMEOUT)


def test_the_tracked_sends_are_bounded() -> None:
    sends = Deliveries()
    for n in range(MAX_TRACKED + 5):
        sends.sent(f"M{n}", "chat", at=0.0)
    assert sends.undelivered(now=1000.0, timeout_s=TIMEOUT) == MAX_TRACKED
    assert sends.receipt(["M0"], DELIVERED, at=1.0) == []  # forgotten: the oldest went first
