"""Proof of delivery: what the receipts for the messages an account sent say
(docs/sending.md, "Proof of delivery").

A send the server accepted is tracked by its WhatsApp id until a receipt from the
recipient says it was delivered (or read). From that come the delivery latency,
the sends still undelivered past a timeout, and evidence for the verdict: sends
not delivered to several *different* chats in a row, which one recipient whose
phone is off never makes.
"""

from __future__ import annotations

import bisect
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from neonize.proto.Neonize_pb2 import Receipt

from sidecar.domain.sending import DELIVERED, READ

#: Receipt types from the recipient and the status each proves; the others (from our
#: own devices, retries, server errors, history sync) prove nothing about delivery.
_PROVES = {
    Receipt.DELIVERED: DELIVERED,
    Receipt.INACTIVE: DELIVERED,
    Receipt.READ: READ,
    Receipt.PLAYED: READ,
}
#: Undelivered sends remembered per account at most; the oldest are forgotten first.
MAX_PENDING = 1_000
#: The latest sends a snapshot keeps in order, for the verdict's evidence.
RECENT = 64
#: Delivery-latency buckets, in seconds: a phone online gets a message in about a second.
DELIVERY_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: The capture/event name of a send through the send path (an addition to neonize's).
SEND_RESULT = "SendResult"
#: How a send the server accepted is counted in ``whatsapp_messages_sent_total``.
OK = "ok"
#: Why a send was not accepted, as counted; any other reason counts as ``other`` (a
#: capture may say anything: the label's values stay few).
FAILURE_REASONS = ("not_connected", "timeout", "rejected", "rate_limited", "other")


@dataclass(frozen=True, slots=True)
class SendResult:
    """An account sent ``message_id`` to ``chat`` through the send path; ``ok`` when the
    server accepted it, else ``reason``, a short word (never an error's text)."""

    #: Its capture record: ``{"event": EVENT, KEY: to_json()}``.
    EVENT: ClassVar[str] = SEND_RESULT
    KEY: ClassVar[str] = "send"

    message_id: str
    chat: str
    ok: bool
    reason: str | None = None

    @property
    def result(self) -> str:
        """The ``result`` label: ``ok``, or one of :data:`FAILURE_REASONS`."""
        if self.ok:
            return OK
        return self.reason if self.reason in FAILURE_REASONS else "other"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.message_id, "chat": self.chat, "ok": self.ok, "reason": self.reason}

    @classmethod
    def from_json(cls, data: Any) -> SendResult:
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("id"), str)
            or not isinstance(data.get("chat"), str)
        ):
            raise ValueError("'send' must hold 'id' and 'chat'")
        reason = data.get("reason")
        return cls(
            data["id"],
            data["chat"],
            data.get("ok") is True,
            reason if isinstance(reason, str) else None,
        )


def proven_status(receipt: Any) -> str | None:
    """The status a ``ReceiptEv`` proves for the messages it names, or None.

    Only receipts from the recipient count (``IsFromMe`` false). An unset ``Type``
    proves nothing: proto2 reads an unset enum as its first value, DELIVERED."""
    if receipt.MessageSource.IsFromMe or not receipt.HasField("Type"):
        return None
    return _PROVES.get(receipt.Type)


@dataclass(slots=True)
class _Send:
    chat: str
    sent_at: float


@dataclass
class Deliveries:
    """One account's sends and what their receipts proved (not thread-safe: the
    account's lock guards it). Memory is bounded: at most :data:`MAX_PENDING`
    undelivered sends and the :data:`RECENT` latest ones."""

    #: Sends not delivered to this many different chats in a row are evidence.
    chats_in_a_row: int = 3
    #: Sends per ``result`` (``ok`` or the reason), for ``whatsapp_messages_sent_total``.
    results: Counter[str] = field(default_factory=Counter)
    #: The first-delivery latencies, per bucket of :data:`DELIVERY_BUCKETS` (+Inf last).
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(DELIVERY_BUCKETS) + 1))
    latency_sum: float = 0.0
    _pending: OrderedDict[str, _Send] = field(default_factory=OrderedDict)
    _recent: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=RECENT))

    def record(self, result: SendResult, at: float) -> None:
        """A send through the send path; tracked when the server accepted it."""
        self.results[result.result] += 1
        if result.ok:
            self.sent(result.message_id, result.chat, at)

    def sent(self, wa_id: str, chat: str, at: float) -> None:
        """The server accepted ``wa_id`` for ``chat`` at ``at``."""
        self._pending[wa_id] = _Send(chat, at)
        self._pending.move_to_end(wa_id)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        self._recent.append((at, chat, wa_id))

    def receipt(self, wa_ids: list[str], status: str, at: float) -> list[float]:
        """A receipt proving ``status`` for ``wa_ids``; returns the delivery latencies
        (seconds from send) of the sends it delivered for the first time."""
        latencies = []
        for wa_id in wa_ids:
            send = self._pending.pop(wa_id, None)
            if send is None:
                continue  # not ours, delivered before, or forgotten
            latency = max(0.0, at - send.sent_at)
            latencies.append(latency)
            self.latency_counts[bisect.bisect_left(DELIVERY_BUCKETS, latency)] += 1
            self.latency_sum += latency
        return latencies

    def snapshot(self) -> DeliverySnapshot:
        """What the metrics and the verdict read, copied (the caller holds the lock)."""
        pending = self._pending
        return DeliverySnapshot(
            results=dict(self.results),
            latency_counts=tuple(self.latency_counts),
            latency_sum=self.latency_sum,
            undelivered_sent_at=tuple(sorted(send.sent_at for send in pending.values())),
            recent=tuple((at, chat, wa_id not in pending) for at, chat, wa_id in self._recent),
            chats_in_a_row=self.chats_in_a_row,
        )


@dataclass(frozen=True, slots=True)
class DeliverySnapshot:
    results: dict[str, int] = field(default_factory=dict)
    latency_counts: tuple[int, ...] = (0,) * (len(DELIVERY_BUCKETS) + 1)
    latency_sum: float = 0.0
    #: When each tracked send not yet delivered was sent, ascending.
    undelivered_sent_at: tuple[float, ...] = ()
    #: The latest sends, oldest first: (sent at, chat, delivered).
    recent: tuple[tuple[float, str, bool], ...] = ()
    chats_in_a_row: int = 3

    def undelivered(self, now: float, timeout_s: float) -> int:
        """Sends older than ``timeout_s`` with no delivery yet."""
        return bisect.bisect_left(self.undelivered_sent_at, now - timeout_s)

    def not_delivered_to_several_chats(self, now: float, timeout_s: float) -> bool:
        """Whether the latest sends past the timeout went undelivered to at least
        ``chats_in_a_row`` different chats, with no delivered send in between."""
        chats: set[str] = set()
        for sent_at, chat, delivered in reversed(self.recent):
            if now - sent_at <= timeout_s:
                continue  # too recent to judge
            if delivered:
                return False
            chats.add(chat)
            if len(chats) >= self.chats_in_a_row:
                return True
        return False
