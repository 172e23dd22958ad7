"""What the sidecar knows about one account, and how events change it.

Events arrive on neonize's Go threads in live mode and on the event loop in
replay, while scrapes and the health API read from other threads: every
change and every read goes through the account's lock, and readers get an
immutable :class:`AccountSnapshot`.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter, deque
from dataclasses import dataclass, field

from sidecar.domain.account_values import (
    KEEPS_BAN,
    NO_DELIVERIES,
    PROBE_LATENCY_BUCKETS,
    PROBE_MEMORY,
    TERMINAL_STATUSES,
    AccountSettings,
    AccountSnapshot,
    OfflineSync,
    PersistedState,
    ProbeRecord,
    ProbeSettings,
    Status,
    StatusChange,
)
from sidecar.domain.classify import Classification, MessageClass
from sidecar.domain.delivery import Deliveries, SendResult
from sidecar.domain.gaps import GapModel
from sidecar.domain.signals import Ban

# the values are read through this module too (sidecar.domain.account.Status, ...)
__all__ = [
    "NO_DELIVERIES",
    "PROBE_LATENCY_BUCKETS",
    "PROBE_MEMORY",
    "TERMINAL_STATUSES",
    "AccountSettings",
    "AccountSnapshot",
    "AccountState",
    "OfflineSync",
    "PersistedState",
    "ProbeRecord",
    "ProbeSettings",
    "Status",
    "StatusChange",
]


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
    first_listening_at: float | None = None
    first_connected_at: float | None = None
    connected_at: float | None = None
    gaps: GapModel | None = None
    _learned_cache: tuple[float, float, float | None] | None = None
    probes_received: deque[ProbeRecord] = field(default_factory=lambda: deque(maxlen=PROBE_MEMORY))
    probe_send_failures_in_a_row: int = 0
    probes_sent: int = 0
    probe_failures: Counter[str] = field(default_factory=Counter)
    probe_latency_counts: list[int] = field(
        default_factory=lambda: [0] * (len(PROBE_LATENCY_BUCKETS) + 1)
    )
    probe_latency_sum: float = 0.0
    last_probe_success_at: float | None = None
    phone_seen_at: float | None = None
    qr_code: str | None = None
    qr_at: float | None = None
    paired_platform: str | None = None
    paired_at: float | None = None
    needs_repair: bool = False
    #: What the account sent through the send path, and what receipts proved of it.
    deliveries: Deliveries = field(default_factory=Deliveries)
    ban: Ban | None = None
    #: Refused connections by reason (:data:`sidecar.domain.signals.CONNECT_FAILURE_REASONS`).
    connect_failures: Counter[str] = field(default_factory=Counter)
    dirty: bool = False
    #: Bumped by every change, so a reader can tell its last snapshot is still current.
    version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def account_id(self) -> str:
        return self.settings.account_id

    def restore(self, persisted: PersistedState, now: float | None = None) -> None:
        """Take in the saved state; what happened since start-up (when the saved state
        could only be read late) is kept: times only move forward, counts add up. A ban
        still in force at ``now`` makes an account nothing happened to yet ``banned``."""
        with self.lock:
            self.version += 1
            ban = persisted.ban
            in_force = ban is not None and now is not None and ban.expires_at > now
            if in_force and self.status_since is None:  # nothing happened since start-up
                self.ban, self.status, self.status_since = ban, Status.BANNED, now
            if persisted.last_real_at is not None:
                self.last_real_at = _later(self.last_real_at, persisted.last_real_at)
            if persisted.last_protocol_at is not None:
                self.last_protocol_at = _later(self.last_protocol_at, persisted.last_protocol_at)
            if persisted.gaps:
                self._gap_model().load(persisted.gaps)
            if persisted.phone_seen_at is not None:
                self.phone_seen_at = _later(self.phone_seen_at, persisted.phone_seen_at)

    def _gap_model(self) -> GapModel:
        if self.gaps is None:
            self.gaps = GapModel(self.settings.timezone)
        return self.gaps

    def record_send(self, result: SendResult, at: float) -> None:
        with self.lock:
            self.version += 1
            self.deliveries.record(result, at)

    def record_receipt(self, message_ids: list[str], status: str, at: float) -> None:
        with self.lock:
            self.version += 1
            self.deliveries.receipt(message_ids, status, at)

    def record_event(self, event_name: str) -> None:
        with self.lock:
            self.version += 1
            self.event_counts[event_name] += 1

    def record_event_error(self, event_name: str) -> None:
        with self.lock:
            self.version += 1
            self.event_errors[event_name] += 1

    def record_message(self, classification: Classification, received_at: float) -> None:
        with self.lock:
            self.version += 1
            self.message_counts[(classification.message_class, classification.kind)] += 1
            if classification.message_class is MessageClass.REAL:
                self._gap_model().record(received_at)
                self.last_real_at = _later(self.last_real_at, received_at)
                self.dirty = True
            elif (
                classification.message_class is MessageClass.PROTOCOL
                and classification.kind != "probe"
            ):
                # a probe that arrives proves the session hears; it is no sign of deafness
                self.last_protocol_at = _later(self.last_protocol_at, received_at)
                self.dirty = True

    def record_phone_seen(self, at: float) -> None:
        """The account's own phone was online at ``at``."""
        with self.lock:
            self.version += 1
            if self.phone_seen_at is None or at > self.phone_seen_at:
                self.phone_seen_at = at
                self.dirty = True

    def record_connect_attempt(self) -> None:
        with self.lock:
            self.version += 1
            self.connect_attempts += 1

    def record_connect_failure(self, reason: str) -> None:
        with self.lock:
            self.version += 1
            self.connect_failures[reason] += 1

    def set_ban(self, ban: Ban | None) -> None:
        """The ban WhatsApp announced (None: one of unknown length); kept while ``banned``."""
        with self.lock:
            self.version += 1
            self.ban = ban
            self.dirty = True

    def set_status(self, status: Status, at: float) -> StatusChange | None:
        """Move to ``status``; returns the change, or None when nothing changed."""
        with self.lock:
            self.version += 1
            old = self.status
            if status is not Status.CONNECTED:
                self.keepalive_failing_since = None
            if old is status:
                return None
            if status not in KEEPS_BAN and self.ban is not None:
                self.ban, self.dirty = None, True  # over: connected, or gone another way
            if status is not Status.QR_PENDING:
                # a QR code is valid only while it waits to be scanned: once the account
                # connects (or leaves qr_pending otherwise) it is never shown again
                self.qr_code = self.qr_at = None
            self.status = status
            self.status_since = at
            if status is Status.CONNECTED:
                self.first_connected_at = self.first_connected_at or at
            else:
                self.offline_sync = OfflineSync.UNKNOWN
            return StatusChange(self.account_id, old, status)

    def record_connected(self, at: float) -> None:
        """A connection began. whatsmeow also reconnects by itself, without a
        ``DisconnectedEv`` (after keepalives failed for 3 minutes): what the old
        connection's keepalives and offline backlog said no longer holds."""
        with self.lock:
            self.version += 1
            self.connected_at = at
            self.keepalive_failing_since = None
            if self.status is Status.CONNECTED:
                self.offline_sync = OfflineSync.UNKNOWN

    def set_keepalive_failing(self, failing: bool, at: float) -> None:
        with self.lock:
            self.version += 1
            if not failing:
                self.keepalive_failing_since = None
            elif self.keepalive_failing_since is None:
                self.keepalive_failing_since = at

    def set_offline_sync(self, sync: OfflineSync, at: float) -> None:
        with self.lock:
            self.version += 1
            self.offline_sync = sync
            if (
                sync is OfflineSync.COMPLETED
                and self.status is Status.CONNECTED
                and self.first_listening_at is None
            ):
                self.first_listening_at = at

    def record_probe_sent(self, ok: bool, reason: str | None) -> None:
        """This account tried to send a probe to its peer (``reason`` is for the log)."""
        with self.lock:
            self.version += 1
            self.probes_sent += 1
            if ok:
                self.probe_send_failures_in_a_row = 0
            else:
                self.probe_send_failures_in_a_row += 1
                self.probe_failures["send_failed"] += 1

    def expect_probe(self, probe_id: str, sent_at: float) -> None:
        """The peer sent a probe to this account. Earlier ones still missing past
        their timeout are counted as not received."""
        with self.lock:
            self.version += 1
            expected = self.settings.expects_probes
            for index, record in enumerate(self.probes_received):
                overdue = expected is not None and sent_at - record.sent_at > expected.timeout_s
                if record.received_at is None and overdue and not record.counted:
                    self.probe_failures["not_received"] += 1
                    self.probes_received[index] = ProbeRecord(
                        record.probe_id, record.sent_at, None, counted=True
                    )
            self.probes_received.append(ProbeRecord(probe_id, sent_at))

    def record_probe_delivery(self, probe_id: str, received_at: float) -> bool:
        """A text with the probe marker and ``probe_id`` arrived. True when it is a probe
        sent to this account (its delivery is recorded; a second copy of one already
        received counts as ``unexpected``). False when it is none: anyone can type the
        marker, and such a text is an ordinary message, stored and counted as real."""
        with self.lock:
            self.version += 1
            if self.settings.expects_probes is None:
                return False
            for index, record in enumerate(self.probes_received):
                if record.probe_id != probe_id:
                    continue
                if record.received_at is not None:
                    self.probe_failures["unexpected"] += 1
                    return True
                self.probes_received[index] = ProbeRecord(probe_id, record.sent_at, received_at)
                latency = max(0.0, received_at - record.sent_at)
                self.probe_latency_counts[bisect.bisect_left(PROBE_LATENCY_BUCKETS, latency)] += 1
                self.probe_latency_sum += latency
                self.last_probe_success_at = _later(self.last_probe_success_at, received_at)
                return True
            return False

    def was_sent_probe(self, probe_id: str) -> bool:
        """Whether ``probe_id`` is one of the probes sent to this account that it remembers."""
        with self.lock:
            return self.settings.expects_probes is not None and any(
                record.probe_id == probe_id for record in self.probes_received
            )

    def set_qr(self, code: str | None, at: float) -> None:
        """The newest pairing QR code (held for the re-pair page; never logged)."""
        with self.lock:
            self.version += 1
            self.qr_code = code
            self.qr_at = at

    def set_paired(self, platform: str, at: float) -> None:
        with self.lock:
            self.version += 1
            self.qr_code = None
            self.paired_platform = platform
            self.paired_at = at
            self.needs_repair = False  # a person paired a new device: the re-pair is done

    def set_needs_repair(self, value: bool) -> None:
        with self.lock:
            self.version += 1
            self.needs_repair = value

    def pairing_view(self) -> tuple[str, str | None, float | None, str | None, float | None]:
        """(status, QR code, QR time, paired platform, paired time) for the pair page."""
        with self.lock:
            return (
                self.status.value,
                self.qr_code,
                self.qr_at,
                self.paired_platform,
                self.paired_at,
            )

    def take_persisted(self) -> PersistedState | None:
        """The state to write, if it changed since the last call."""
        with self.lock:
            gaps = self.gaps.take_dirty() if self.gaps is not None else {}
            if not self.dirty and not gaps:
                return None
            self.dirty = False
            return PersistedState(
                self.last_real_at, self.last_protocol_at, gaps, self.phone_seen_at, ban=self.ban
            )

    def snapshot(self, now: float | None = None) -> AccountSnapshot:
        """``now`` lets the snapshot include the learned threshold of the current silence."""
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
                first_listening_at=self.first_listening_at,
                first_connected_at=self.first_connected_at,
                connected_at=self.connected_at,
                learned_gap_s=self._learned_gap(now),
                probes_received=tuple(self.probes_received),
                probe_send_failures_in_a_row=self.probe_send_failures_in_a_row,
                probes_sent=self.probes_sent,
                probe_failures=dict(self.probe_failures),
                last_probe_success_at=self.last_probe_success_at,
                probe_latency_counts=tuple(self.probe_latency_counts),
                probe_latency_sum=self.probe_latency_sum,
                deliveries=self.deliveries.snapshot() if self.deliveries.results else NO_DELIVERIES,
                phone_seen_at=self.phone_seen_at,
                version=self.version,
                ban=self.ban,
            )

    def signals_view(self) -> tuple[int, dict[str, int], Ban | None]:
        """(version, refused connections by reason, the ban while ``banned``), without a
        whole snapshot."""
        with self.lock:
            ban = self.ban if self.status is Status.BANNED else None
            return self.version, dict(self.connect_failures), ban

    def _learned_gap(self, now: float | None) -> float | None:
        """How long a silence that began when the current one began may normally last."""
        start = self.last_real_at if self.last_real_at is not None else self.first_listening_at
        if self.gaps is None or start is None or now is None:
            return None
        cached = self._learned_cache
        if cached is not None and cached[0] == start and now - cached[1] < 3600:
            return cached[2]
        value = self.gaps.abnormal_after(start, now)
        self._learned_cache = (start, now, value)
        return value


def _later(current: float | None, candidate: float) -> float:
    """Times only move forward: a late-processed event never rewinds them."""
    return candidate if current is None or candidate > current else current
