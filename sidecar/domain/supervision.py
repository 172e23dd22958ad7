"""When to reconnect an account, and how long to wait first.

whatsmeow's own reconnect waits 2 s x attempt with no cap and no jitter, and
stops after a logout, a replaced stream, a ban or an outdated client. The
supervisor owns reconnection instead: capped exponential backoff with full
jitter for transient failures, a wait until the end of a temporary ban whose
length WhatsApp told, and a stop (park) on terminal ones, where only a person
can help.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

from sidecar.domain.account import TERMINAL_STATUSES, Status


class Decision(StrEnum):
    RECONNECT = "reconnect"  # transient: try again after the backoff delay
    AWAIT_PAIRING = "await_pairing"  # no usable device: wait until a new one is paired
    AWAIT_BAN_EXPIRY = "await_ban_expiry"  # banned until a known time: reconnect after it
    PARK = "park"  # terminal: a person has to act (re-pair, upgrade, a ban of unknown length)
    STOP = "stop"  # the sidecar is shutting down


#: How long after a ban's end the account reconnects: never a second early, since
#: WhatsApp may lengthen a ban for connections during it.
BAN_MARGIN_S = 60.0


def decide(status: Status, *, stopping: bool, ban_expires_at: float | None = None) -> Decision:
    """What to do after a session ended with the account in ``status`` (and, when
    ``banned``, the ban's end if WhatsApp told it)."""
    if stopping:
        return Decision.STOP
    if status is Status.BANNED and ban_expires_at is not None:
        return Decision.AWAIT_BAN_EXPIRY
    if status in (Status.LOGGED_OUT, Status.QR_PENDING):
        # No usable device in the store (whatsmeow deletes it on logout):
        # reconnecting would only show QR codes nobody is looking at.
        return Decision.AWAIT_PAIRING
    if status in TERMINAL_STATUSES:
        return Decision.PARK
    return Decision.RECONNECT


def ban_wait_s(ban_expires_at: float, now: float) -> float:
    """How long to wait before connecting an account banned until ``ban_expires_at``."""
    return max(0.0, ban_expires_at + BAN_MARGIN_S - now)


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter over the upper half.

    Attempt n waits a uniform time in [ceiling/2, ceiling], where
    ceiling = min(cap, base * 2**n): retries of many accounts spread apart,
    and none waits longer than ``cap``.
    """

    base_s: float = 2.0
    cap_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random)  # jitter, not cryptography
    attempt: int = 0

    def ceiling(self, attempt: int) -> float:
        return float(min(self.cap_s, self.base_s * 2.0 ** min(attempt, 32)))

    def next_delay(self) -> float:
        ceiling = self.ceiling(self.attempt)
        self.attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
