"""What the sidecar knows about one account, and how events change it.

Events arrive on neonize's Go threads in live mode and on the event loop in
replay, while scrapes and the health API read from other threads: every
change and every read goes through the account's lock, and readers get an
immutable :class:`AccountSnapshot`.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from sidecar.domain.classify import Classification, MessageClass


class Status(StrEnum):
    CONNECTING = "connecting"
    QR_PENDING = "qr_pending"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    LOGGED_OUT = "logged_out"
    REPLACED = "replaced"
    BANNED = "banned"
    OUTDATED = "outdated"
    STOPPED = "stopped"


#: States that whatsmeow does not leave by itself: a person has to act.
TERMINAL_STATUSES = frozenset(
    {Status.LOGGED_OUT, Status.REPLACED, Status.BANNED, Status.OUTDATED, Status.STOPPED}
)


class OfflineSync(StrEnum):
    """Whether the backlog queued while the device was away has been delivered."""

    UNKNOWN = "unknown"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class AccountSettings:
    account_id: str
    silence_threshold_s: float
    timezone: str


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    account_id: str
    status: Status
    status_since: float | None
    last_real_at: float | None
    last_protocol_at: float | None
    message_counts: dict[tuple[MessageClass, str], int]
    event_counts: dict[str, int]
    event_errors: dict[str, int]
    connect_attempts: int
    keepalive_failing_since: float | None
    offline_sync: OfflineSync

    def class_total(self, message_class: MessageClass) -> int:
        return sum(n for (cls, _), n in self.message_counts.items() if cls is message_class)

    @property
    def reconnects(self) -> int:
        """Connection attempts after the first."""
        return max(0, self.connect_attempts - 1)


@dataclass(frozen=True, slots=True)
class StatusChange:
    account_id: str
    old: Status
    new: Status


@dataclass
class LatestQr:
    """The newest pairing QR code of an account, held for a person to scan.

    Never logged, never recorded, never in metrics.
    """

    code: str | None = None
    at: float | None = None


@dataclass(frozen=True, slots=True)
class PersistedState:
    """The part of an account's state that survives a restart."""

    last_real_at: float | None
    last_protocol_at: float | None


@dataclass
class AccountState:
    settings: AccountSettings
    status: Status = Status.CONNECTING
    status_since: float | None = None
    last_real_at: float | None = None
    last_protocol_at: float | None = None
    message_counts: Counter[tuple[MessageClass, str]] = field(default_factory=Counter)
    event_counts: Counter[str] = field(default_factory=Counter)
    event_errors: Counter[str] = field(default_factory=Counter)
    connect_attempts: int = 0
    keepalive_failing_since: float | None = None
    offline_sync: OfflineSync = OfflineSync.UNKNOWN
    dirty: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def account_id(self) -> str:
        return self.settings.account_id

    def restore(self, persisted: PersistedState) -> None:
        with self.lock:
            self.last_real_at = persisted.last_real_at
            self.last_protocol_at = persisted.last_protocol_at

    def record_event(self, event_name: str) -> None:
        with self.lock:
            self.event_counts[event_name] += 1

    def record_event_error(self, event_name: str) -> None:
        with self.lock:
            self.event_errors[event_name] += 1

    def record_message(self, classification: Classification, received_at: float) -> None:
        with self.lock:
            self.message_counts[(classification.message_class, classification.kind)] += 1
            if classification.message_class is MessageClass.REAL:
                self.last_real_at = _later(self.last_real_at, received_at)
                self.dirty = True
            elif classification.message_class is MessageClass.PROTOCOL:
                self.last_protocol_at = _later(self.last_protocol_at, received_at)
                self.dirty = True

    def record_connect_attempt(self) -> None:
        with self.lock:
            self.connect_attempts += 1

    def set_status(self, status: Status, at: float) -> StatusChange | None:
        """Move to ``status``; returns the change, or None when nothing changed."""
        with self.lock:
            old = self.status
            if status is not Status.CONNECTED:
                self.keepalive_failing_since = None
            if old is status:
                return None
            self.status = status
            self.status_since = at
            if status is not Status.CONNECTED:
                self.offline_sync = OfflineSync.UNKNOWN
            return StatusChange(self.account_id, old, status)

    def set_keepalive_failing(self, failing: bool, at: float) -> None:
        with self.lock:
            if not failing:
                self.keepalive_failing_since = None
            elif self.keepalive_failing_since is None:
                self.keepalive_failing_since = at

    def set_offline_sync(self, sync: OfflineSync) -> None:
        with self.lock:
            self.offline_sync = sync

    def take_persisted(self) -> PersistedState | None:
        """The state to write, if it changed since the last call."""
        with self.lock:
            if not self.dirty:
                return None
            self.dirty = False
            return PersistedState(self.last_real_at, self.last_protocol_at)

    def snapshot(self) -> AccountSnapshot:
        with self.lock:
            return AccountSnapshot(
                account_id=self.account_id,
                status=self.status,
                status_since=self.status_since,
                last_real_at=self.last_real_at,
                last_protocol_at=self.last_protocol_at,
                message_counts=dict(self.message_counts),
                event_counts=dict(self.event_counts),
                event_errors=dict(self.event_errors),
                connect_attempts=self.connect_attempts,
                keepalive_failing_since=self.keepalive_failing_since,
                offline_sync=self.offline_sync,
            )


def _later(current: float | None, candidate: float) -> float:
    """Times only move forward: a late-processed event never rewinds them."""
    return candidate if current is None or candidate > current else current
