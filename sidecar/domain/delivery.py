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
import re
from collections import Counter, OrderedDict
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
#: Sends remembered per account at most; the oldest are forgotten first.
MAX_TRACKED = 10_000
#: Delivery-latency buckets, in seconds: a phone online gets a message in about a second.
DELIVERY_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: The capture/event name of a send through the send path (an addition to neonize's).
SEND_RESULT = "SendResult"
#: How a send the server accepted is counted in ``whatsapp_messages_sent_total``.
OK = "ok"
_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")


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
        """The ``result`` label: ``ok``, or the reason (``other`` when it is not a word)."""
        if self.ok:
            return OK
        return self.reason if self.reason and _REASON.fullmatch(self.reason) else "other"

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
    delivered_at: float | None = None


@dataclass
class Deliveries:
    """One account's sends and what their receipts proved (not thread-safe: the event
    path owns it)."""

    #: Sends not delivered to this many different chats in a row are evidence.
    chats_in_a_row: int = 3
    #: Sends per ``result`` (``ok`` or the reason), for ``whatsapp_messages_sent_total``.
    results: Counter[str] = field(default_factory=Counter)
    #: The first-delivery latencies, per bucket of :data:`DELIVERY_BUCKETS` (+Inf last).
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(DELIVERY_BUCKETS) + 1))
    latency_sum: float = 0.0
    _sends: OrderedDict[str, _Send] = field(default_factory=OrderedDict)

    def record(self, result: SendResult, at: float) -> None:
        """A send through the send path; tracked when the server accepted it."""
        self.results[result.result] += 1
        if result.ok:
            self.sent(result.message_id, result.chat, at)

    def sent(self, wa_id: str, chat: str, at: float) -> None:
        """The server accepted ``wa_id`` for ``chat`` at ``at``."""
        self._sends[wa_id] = _Send(chat, at)
        self._sends.move_to_end(wa_id)
        while len(self._sends) > MAX_TRACKED:
            self._sends.popitem(last=False)

    def receipt(self, wa_ids: list[str], status: str, at: float) -> list[float]:
        """A receipt proving ``status`` for ``wa_ids``; returns the delivery latencies
        (seconds from send) of the sends it delivered for the first time."""
        latencies = []
        for wa_id in wa_ids:
            send = self._sends.get(wa_id)
            if send is None or send.delivered_at is not None:
                continue
            send.delivered_at = at
            latency = max(0.0, at - send.sent_at)
            latencies.append(latency)
            self.latency_counts[bisect.bisect_left(DELIVERY_BUCKETS, latency)] += 1
            self.latency_sum += latency
        return latencies

    def undelivered(self, now: float, timeout_s: float) -> int:
        """Sends older than ``timeout_s`` with no delivery yet."""
        return sum(
            1
            for send in self._sends.values()
            if send.delivered_at is None and now - send.sent_at > timeout_s
        )

    def not_delivered_to_several_chats(self, now: float, timeout_s: float) -> bool:
        """Whether the latest sends past the timeout went undelivered to at least
        ``chats_in_a_row`` different chats, with no delivered send in between."""
        chats: list[str] = []
        for send in reversed(self._sends.values()):
            if now - send.sent_at <= timeout_s:
                continue  # too recent to judge
            if send.delivered_at is not None:
                break
            if send.chat not in chats:
                chats.append(send.chat)
            if len(chats) >= self.chats_in_a_row:
                return True
        return False
