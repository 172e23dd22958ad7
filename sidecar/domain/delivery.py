"""Proof of delivery: what the receipts for the messages an account sent say
(docs/sending.md, "Proof of delivery").

A send the server accepted is tracked by its WhatsApp id until a receipt from the
recipient says it was delivered (or read). From that come the delivery latency,
the sends still undelivered past a timeout, and evidence for the verdict: sends
not delivered to several *different* chats in a row, which one recipient whose
phone is off never makes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

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
    _sends: OrderedDict[str, _Send] = field(default_factory=OrderedDict)

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
            latencies.append(max(0.0, at - send.sent_at))
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
