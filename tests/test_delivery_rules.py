"""Proof of delivery from receipts (issue 16): which receipts prove what, latencies,
sends undelivered past the timeout, and the verdict's evidence that needs several
different chats, never one recipient whose phone is off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from neonize.proto.Neonize_pb2 import Receipt

from sidecar import testing as build
from sidecar.adapters.capture import capture_records, encode_record
from sidecar.compose import assemble
from sidecar.core.clock import ReplayClock
from sidecar.core.replay import Replayer
from sidecar.domain.delivery import MAX_PENDING, Deliveries, SendResult, proven_status
from sidecar.domain.sending import DELIVERED, READ

from .support.config import ConfigFactory

TIMEOUT = 300.0


def receipt(kind: int | None, *, from_me: bool = False) -> Receipt:
    made: Receipt = build.receipt(["A"], build.jid("12025550123"), kind, from_me=from_me)
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
    assert sends.snapshot().undelivered(now=1000.0, timeout_s=TIMEOUT) == 0


def test_undelivered_counts_only_sends_past_the_timeout() -> None:
    sends = Deliveries()
    sends.sent("A", "chat-1", at=0.0)
    sends.sent("B", "chat-1", at=250.0)
    assert sends.snapshot().undelivered(now=301.0, timeout_s=TIMEOUT) == 1
    assert sends.snapshot().undelivered(now=551.0, timeout_s=TIMEOUT) == 2


def test_one_recipient_whose_phone_is_off_is_no_evidence() -> None:
    sends = Deliveries(chats_in_a_row=3)
    for n in range(10):
        sends.sent(f"M{n}", "chat-offline", at=float(n))
    assert sends.snapshot().undelivered(now=1000.0, timeout_s=TIMEOUT) == 10
    assert not sends.snapshot().not_delivered_to_several_chats(now=1000.0, timeout_s=TIMEOUT)


def test_several_different_chats_in_a_row_are_evidence_until_one_delivers() -> None:
    sends = Deliveries(chats_in_a_row=3)
    sends.sent("OK", "chat-0", at=0.0)
    sends.receipt(["OK"], DELIVERED, at=1.0)
    for n, chat in enumerate(("chat-1", "chat-2", "chat-2", "chat-3"), start=1):
        sends.sent(f"M{n}", chat, at=float(n))
    assert not sends.snapshot().not_delivered_to_several_chats(
        now=200.0, timeout_s=TIMEOUT
    )  # too soon
    assert sends.snapshot().not_delivered_to_several_chats(now=400.0, timeout_s=TIMEOUT)
    sends.receipt(["M4"], DELIVERED, at=401.0)  # the newest went through after all
    assert not sends.snapshot().not_delivered_to_several_chats(now=402.0, timeout_s=TIMEOUT)


def test_the_tracked_sends_are_bounded() -> None:
    sends = Deliveries()
    for n in range(MAX_PENDING + 5):
        sends.sent(f"M{n}", "chat", at=0.0)
    assert sends.snapshot().undelivered(now=1000.0, timeout_s=TIMEOUT) == MAX_PENDING
    assert sends.receipt(["M0"], DELIVERED, at=1.0) == []  # forgotten: the oldest went first
    assert sends.receipt(["M5"], DELIVERED, at=1.0) == [1.0]


# -- through a capture, as live sends and receipts will reach the sidecar -----------------


def delivered(ids: list[str], chat: Any, kind: int = Receipt.DELIVERED) -> Receipt:
    made: Receipt = build.receipt(ids, chat, kind)
    return made


async def test_a_replayed_capture_of_sends_and_receipts_proves_what_was_delivered(
    tmp_path: Path, make_config: ConfigFactory
) -> None:
    """Sends to five chats: two delivered (one read later), one to a phone that is off,
    two never delivered; a failed send; and a bad send record, counted and skipped."""
    chats = [build.jid(f"120255501{n:02d}") for n in range(5)]
    t0 = 1_764_068_400.0
    records = [
        encode_record(
            t0 + n, "sales", SendResult(f"M{n}", f"120255501{n:02d}@s.whatsapp.net", True)
        )
        for n in range(5)
    ]
    records.append(
        encode_record(t0 + 5, "sales", SendResult("", "x@s.whatsapp.net", False, "timeout"))
    )
    records.append(json.dumps({"t": t0 + 6, "account": "sales", "event": "SendResult", "send": {}}))
    records.append(encode_record(t0 - 1, "sales", build.connected()))
    records += [
        encode_record(t0 + 2.5, "sales", delivered(["M0"], chats[0])),
        encode_record(t0 + 4, "sales", delivered(["M1", "M9"], chats[1])),
        encode_record(t0 + 8, "sales", delivered(["M1"], chats[1], Receipt.READ)),
        encode_record(t0 + 9, "sales", delivered(["M2"], chats[2], Receipt.SENDER)),  # ours
    ]
    records.append(encode_record(t0 + 10 + TIMEOUT, None, None))  # a tick: time goes on
    # another, once the evidence has held for verdict.confirm (30 s)
    records.append(encode_record(t0 + 40 + TIMEOUT, None, None))
    records.sort(key=lambda line: json.loads(line)["t"])
    capture = tmp_path / "sends.jsonl"
    capture.write_text("\n".join(records) + "\n")
    clock = ReplayClock(speed=0)
    assembly = assemble(make_config([{"id": "sales"}]), clock, storage=False)
    report = await Replayer(assembly.sidecar, clock, assembly.replay_errors).run(
        capture_records(capture)
    )
    assert report.errors == 1

    [(_, state)] = assembly.sidecar.accounts()
    sends = state.deliveries
    assert dict(sends.results) == {"ok": 5, "timeout": 1}
    assert sends.latency_sum == 2.5 + 3.0  # M0 after 2.5 s, M1 after 3 s; the read adds none
    assert sum(sends.latency_counts) == 2
    now = t0 + 10 + TIMEOUT
    assert sends.snapshot().undelivered(now, TIMEOUT) == 3  # M2 (our own device's receipt), M3, M4
    assert sends.snapshot().not_delivered_to_several_chats(now, TIMEOUT)

    def value(name: str, **labels: str) -> float | None:
        return assembly.metrics.registry.get_sample_value(name, {"account": "sales", **labels})

    assert value("whatsapp_messages_sent_total", result="ok") == 5
    assert value("whatsapp_messages_sent_total", result="timeout") == 1
    assert value("whatsapp_message_delivery_seconds_count") == 2
    assert value("whatsapp_message_delivery_seconds_sum") == 5.5
    assert value("whatsapp_message_delivery_seconds_bucket", le="2.5") == 1
    assert value("whatsapp_message_delivery_seconds_bucket", le="5.0") == 2
    assert value("whatsapp_sent_messages_undelivered") == 3

    # M2, M3 and M4 went to three different chats and none arrived: evidence
    verdict = assembly.sidecar.judge("sales", now + 30)
    assert verdict.degraded
    assert "sends_not_delivered" in verdict.reasons
    assert verdict.warning is not None
    assert "3 different chats" in verdict.warning
    assert value("whatsapp_session_degraded_reason", reason="sends_not_delivered") == 1


def test_one_recipient_whose_phone_is_off_does_not_make_a_session_degraded(
    tmp_path: Path, make_config: ConfigFactory
) -> None:
    sidecar_config = make_config([{"id": "sales"}])
    clock = ReplayClock(speed=0)
    assembly = assemble(sidecar_config, clock, storage=False)
    t0 = 1_764_068_400.0
    assembly.sidecar.handle("sales", build.connected(), t0)
    for n in range(20):
        assembly.sidecar.handle(
            "sales", SendResult(f"M{n}", "12025550199@s.whatsapp.net", True), t0 + n
        )
    now = t0 + 20 + TIMEOUT + 1
    verdict = assembly.sidecar.judge("sales", now)
    assert "sends_not_delivered" not in verdict.reasons
    [(_, state)] = assembly.sidecar.accounts()
    assert state.deliveries.snapshot().undelivered(now, TIMEOUT) == 20


def test_an_account_that_never_sent_has_its_series_at_zero(make_config: ConfigFactory) -> None:
    assembly = assemble(make_config([{"id": "sales"}]), ReplayClock(speed=0), storage=False)
    registry = assembly.metrics.registry
    labels = {"account": "sales"}
    assert registry.get_sample_value("whatsapp_messages_sent_total", labels | {"result": "ok"}) == 0
    assert registry.get_sample_value("whatsapp_message_delivery_seconds_count", labels) == 0
    assert registry.get_sample_value("whatsapp_sent_messages_undelivered", labels) == 0


def test_the_delivery_timeout_comes_from_the_config(make_config: ConfigFactory) -> None:
    loaded = make_config([{"id": "sales"}], send={"delivery_timeout": "2m"})
    [settings] = loaded.config.account_settings()
    assert settings.delivery_timeout_s == 120.0
    [default] = make_config([{"id": "sales"}]).config.account_settings()
    assert default.delivery_timeout_s == 300.0
