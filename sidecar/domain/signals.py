"""Early signs of trouble that are not the deaf verdict: a temporary ban and when it
ends, and why connections fail.

whatsmeow reports a refused connection as one of four events: ``TemporaryBanEv``
(reason 402), ``LoggedOutEv`` with ``OnConnect`` (401, 403, 406), ``ClientOutdatedEv``
(405) and ``ConnectFailureEv`` for the rest; 503 is retried without an event. Their
reasons become one bounded label: neonize's ``ConnectFailureReason`` names in lower
snake case, ``other`` for a number neonize has no name for (it leaves the field unset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neonize.proto.Neonize_pb2 import ConnectFailureReason, TemporaryBan

OTHER = "other"
#: Every value of the ``reason`` label of ``whatsapp_connect_failures_total``.
CONNECT_FAILURE_REASONS: tuple[str, ...] = (
    *(value.name.lower() for value in ConnectFailureReason.DESCRIPTOR.values),
    OTHER,
)
TEMP_BANNED = ConnectFailureReason.Name(ConnectFailureReason.TEMP_BANNED).lower()
CLIENT_OUTDATED = ConnectFailureReason.Name(ConnectFailureReason.CLIENT_OUTDATED).lower()
#: Why WhatsApp banned a number, as whatsmeow reads the ban's code (``other``: unknown).
BAN_REASONS: tuple[str, ...] = (
    *(value.name.lower() for value in TemporaryBan.TempBanReason.DESCRIPTOR.values),
    OTHER,
)


def connect_failure_reason(event: Any) -> str:
    """The ``reason`` label of a ``ConnectFailureEv`` or ``LoggedOutEv``."""
    if not event.HasField("Reason"):
        return OTHER
    return str(ConnectFailureReason.Name(event.Reason)).lower()


@dataclass(frozen=True, slots=True)
class Ban:
    """A temporary ban whose end WhatsApp told: the account may connect after ``expires_at``."""

    expires_at: float
    reason: str


def ban_of(event: Any, received_at: float) -> Ban | None:
    """The ban a ``TemporaryBanEv`` announces; None when it gives no duration (the
    account then stays parked, as a ban of unknown length must)."""
    if event.Expire <= 0:
        return None
    reason = (
        str(TemporaryBan.TempBanReason.Name(event.Code)).lower()
        if event.HasField("Code")
        else OTHER
    )
    return Ban(received_at + float(event.Expire), reason)
