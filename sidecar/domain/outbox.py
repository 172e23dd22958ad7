"""The outbox's rules: when a queued message may be claimed, and what each outcome of
a send attempt makes of it (docs/sending.md, "The outbox").

The stores (Firestore, SQLite) hold the documents and make each step atomic; these
functions decide the steps, the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

QUEUED, PROCESSING, SENT, FAILED = "queued", "processing", "sent", "failed"
STATUSES = (QUEUED, PROCESSING, SENT, FAILED)
#: Items still to send: few at a time, read one by one. Settled items only ever grow,
#: so they are counted (docs/sending.md, "Counting").
OPEN, SETTLED = (QUEUED, PROCESSING), (SENT, FAILED)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One ``outbox/{id}`` document, in the existing backend's fields; times in Unix
    seconds (the stores convert)."""

    id: str
    account_id: str
    to_jid: str
    thread_id: str
    text: str
    client_message_id: str | None = None
    status: str = QUEUED
    attempt_count: int = 0
    next_attempt_at: float = 0.0
    lease_until: float | None = None
    claimed_by: str | None = None
    provider_message_id: str | None = None
    last_error: str | None = None
    created_at: float | None = None
    sent_at: float | None = None
    failed_at: float | None = None


class UnreadableItem(ValueError):
    """A stored document that is not an outbox item (written by someone else: a field
    missing or of the wrong kind). Names the field, never its value (a JID, a text)."""

    def __init__(self, item_id: str, field: str) -> None:
        super().__init__(f"outbox item {item_id!r} is unreadable: {field}")
        self.item_id = item_id
        self.field = field


@dataclass(frozen=True, slots=True)
class SendPolicy:
    """``send.*`` in the config: how many attempts, how long a claim lasts, the backoff."""

    max_attempts: int = 5
    lease_s: float = 60.0
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 60.0
    #: How soon a message whose account is not connected is looked at again.
    offline_retry_s: float = 5.0

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones: 2, 4, 8, ...
        up to the cap."""
        return min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** max(0, attempts - 1))


def claimable(item: OutboxItem, now: float) -> bool:
    """A queued message whose time has come and that nobody holds, or one whose holder
    let its claim run out while sending (a replica that died): it is tried again."""
    if item.provider_message_id:
        return False  # WhatsApp took it: only its record is missing (see recorded)
    if item.status == QUEUED:
        return item.next_attempt_at <= now and not _held(item, now)
    if item.status == PROCESSING:
        return not _held(item, now)
    return False


def already_sent(item: OutboxItem) -> bool:
    """Queued or held, yet WhatsApp took it already (its holder died after recording the
    id, or another worker left it so): it is recorded as sent, never sent again, and so
    it leaves the queue instead of taking a claim's place at every look."""
    return item.status in (QUEUED, PROCESSING) and bool(item.provider_message_id)


def sent_already(item: OutboxItem, now: float) -> OutboxItem:
    """:func:`already_sent`'s item, recorded."""
    assert item.provider_message_id
    return recorded(item, item.provider_message_id, item.sent_at or now)


def claimed(item: OutboxItem, now: float, worker: str, policy: SendPolicy) -> OutboxItem:
    """Held by ``worker`` for one attempt, until ``now + lease``."""
    return replace(
        item,
        status=PROCESSING,
        claimed_by=worker,
        lease_until=now + policy.lease_s,
        attempt_count=item.attempt_count + 1,
    )


def recorded(item: OutboxItem, provider_message_id: str, now: float) -> OutboxItem:
    """WhatsApp accepted it under ``provider_message_id``."""
    return replace(
        item,
        status=SENT,
        provider_message_id=provider_message_id,
        sent_at=now,
        lease_until=None,
        last_error=None,
    )


def not_connected(item: OutboxItem, now: float, policy: SendPolicy) -> OutboxItem:
    """The account is not connected: back in the queue, and the claim does not count
    as an attempt (a re-pair or an outage never fails a queued message)."""
    return replace(
        item,
        status=QUEUED,
        attempt_count=max(0, item.attempt_count - 1),
        next_attempt_at=now + policy.offline_retry_s,
        lease_until=None,
        last_error="account not connected",
    )


def released(item: OutboxItem, at: float) -> OutboxItem:
    """Given back unsent (the account's send rate would keep it past its claim, or the
    worker is stopping): queued again from ``at``, and the claim was no attempt."""
    return replace(
        item,
        status=QUEUED,
        attempt_count=max(0, item.attempt_count - 1),
        next_attempt_at=at,
        lease_until=None,
    )


def attempt_failed(item: OutboxItem, now: float, error: str, policy: SendPolicy) -> OutboxItem:
    """The send failed with ``error`` (a short word): tried again after a backoff, or
    ``failed`` once ``max_attempts`` were made."""
    if item.attempt_count >= policy.max_attempts:
        return replace(item, status=FAILED, failed_at=now, lease_until=None, last_error=error)
    return replace(
        item,
        status=QUEUED,
        next_attempt_at=now + policy.backoff(item.attempt_count),
        lease_until=None,
        last_error=error,
    )


def _held(item: OutboxItem, now: float) -> bool:
    return item.lease_until is not None and item.lease_until > now


@dataclass(slots=True)
class SendRate:
    """One account's send rate: ``burst`` messages at once, then ``per_minute``
    (a token bucket). Bursts from one number get it banned."""

    per_minute: float
    burst: int
    _tokens: float | None = None
    _at: float = 0.0

    def wait(self, now: float) -> float:
        """Seconds until the next message may go (0: now)."""
        tokens = self._refill(now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) * 60.0 / self.per_minute

    def take(self, now: float) -> None:
        self._tokens = self._refill(now) - 1.0

    def _refill(self, now: float) -> float:
        if self._tokens is None:
            tokens = float(self.burst)
        else:
            gained = max(0.0, now - self._at) * self.per_minute / 60.0
            tokens = min(float(self.burst), self._tokens + gained)
        self._tokens, self._at = tokens, now
        return tokens
