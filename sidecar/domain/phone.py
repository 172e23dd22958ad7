"""When an event proves that the account's own phone (its primary device) was online.

WhatsApp removes a linked device once the account's phone has not been online for
about 14 days (docs/phone.md). The sidecar cannot ask the phone (neonize sends no
peer messages), so it watches what the phone does anyway. Only device 0 of the
account's own number counts: another linked device (WhatsApp Web, Desktop) that
sends or reads proves nothing about the phone. whatsmeow sets ``IsFromMe`` only
when the sender is the account's own number, in phone-number or LID form, and a
sender's ``Device`` is 0 only for the phone.

What counts, and why (each one the phone did itself):

- a message whose sender is the phone: sent from the phone by the person, or pushed
  by it to this device (history-sync notifications, app-state key shares, other
  peer protocol messages), also when this device cannot decrypt it;
- a receipt the phone sent: chats read on the phone (``read-self``), the phone
  acknowledging the copies of what this device sent (``sender``), retries;
- a successful pairing: only the phone links a device.
"""

from __future__ import annotations

from typing import Any

from neonize.proto.Neonize_pb2 import Message, PairStatus, Receipt, UndecryptableMessage


def phone_seen_at(event: Any, received_at: float) -> float | None:
    """When ``event`` shows the phone online, or None when it does not show that.

    The event's own time (the server's, from when the phone acted) is used when it is
    earlier than its arrival: a backlog delivered after a reconnect proves the phone
    was online when it acted, not now. A missing or future time gives the arrival."""
    kind = type(event)
    if kind is Message or kind is UndecryptableMessage:
        info = event.Info
        if _from_phone(info.MessageSource):
            return _earlier(info.Timestamp / 1000, received_at)  # ms
    elif kind is Receipt:
        if _from_phone(event.MessageSource):
            return _earlier(float(event.Timestamp), received_at)  # s
    elif kind is PairStatus and event.Status == PairStatus.PStatus.SUCCESS:
        return received_at
    return None


def _from_phone(source: Any) -> bool:
    sender = source.Sender
    return bool(source.IsFromMe and sender.User and sender.Device == 0)


def _earlier(event_time: float, received_at: float) -> float:
    return event_time if 0 < event_time < received_at else received_at
