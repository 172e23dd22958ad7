"""The values an account is configured and read as: its status, its settings, the
immutable :class:`AccountSnapshot` readers get, and what survives a restart. Apart from
:mod:`sidecar.domain.account`, whose :class:`AccountState` makes them, so that readers
of an account (verdicts, health, metrics) depend on these values only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sidecar.domain.classify import MessageClass
from sidecar.domain.delivery import DeliverySnapshot
from sidecar.domain.signals import Ban

#: Probe deliveries remembered per account (more than any sensible ``misses``).
PROBE_MEMORY = 16
#: Probe delivery latency buckets, in seconds.
PROBE_LATENCY_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: The snapshot of an account that never sent through the send path (shared).
NO_DELIVERIES = DeliverySnapshot()


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
#: States after which a temporary ban still stands: the sidecar stopping ends no ban.
KEEPS_BAN = frozenset({Status.BANNED, Status.STOPPED})


class OfflineSync(StrEnum):
    """Whether the backlog queued while the device was away has been delivered."""

    UNKNOWN = "unknown"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """Canary probes between two accounts: every ``interval_s`` the sender sends one;
    ``misses`` in a row that do not arrive within ``timeout_s`` degrade the receiver."""

    peer: str
    interval_s: float
    timeout_s: float
    misses: int


@dataclass(frozen=True, slots=True)
class AccountSettings:
    account_id: str
    silence_threshold_s: float
    timezone: str
    #: Probes this account sends (to ``probe.peer``).
    probe: ProbeSettings | None = None
    #: Probes this account should receive (set from the sender's ``probe``).
    expects_probes: ProbeSettings | None = None
    #: A send the server accepted and no receipt proved delivered this long after is
    #: counted undelivered.
    delivery_timeout_s: float = 300.0
    #: ``neonize`` (the sidecar holds the session) or ``ingest`` (another gateway posts
    #: its events).
    source: str = "neonize"
    #: Whether its real messages are stored.
    store_messages: bool = True


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    probe_id: str
    sent_at: float
    received_at: float | None = None
    #: Already counted in the ``not_received`` failures.
    counted: bool = False


@dataclass(slots=True)  # not frozen: a frozen init costs 4x, and 10,000 are made per scrape
class AccountSnapshot:
    """A copy of an account's state at one moment; changing it changes nothing."""

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
    #: First moment the account was connected with its offline backlog delivered
    #: (not reset by reconnects: a reconnect does not wipe the evidence).
    first_listening_at: float | None = None
    first_connected_at: float | None = None
    #: When the current connection began (every ``ConnectedEv``, whatsmeow's own
    #: reconnects included).
    connected_at: float | None = None
    #: How long the current silence may last before the account's usual traffic makes it
    #: abnormal (None: not enough history yet).
    learned_gap_s: float | None = None
    probes_received: tuple[ProbeRecord, ...] = ()
    probe_send_failures_in_a_row: int = 0
    probes_sent: int = 0
    probe_failures: dict[str, int] = field(default_factory=dict)
    last_probe_success_at: float | None = None
    probe_latency_counts: tuple[int, ...] = ()
    probe_latency_sum: float = 0.0
    deliveries: DeliverySnapshot = NO_DELIVERIES
    #: When the account's own phone was last seen online (sidecar.domain.phone).
    phone_seen_at: float | None = None
    version: int = 0
    #: A temporary ban whose end WhatsApp told: kept while ``banned`` and through a stop
    #: (a shutdown, a lease given away), so that a restart remembers it.
    ban: Ban | None = None

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


@dataclass(frozen=True, slots=True)
class PersistedState:
    """The part of an account's state that survives a restart."""

    last_real_at: float | None
    last_protocol_at: float | None
    gaps: dict[int, bytes] = field(default_factory=dict)
    phone_seen_at: float | None = None
    #: Kept so that a restart during a ban waits for its end instead of reconnecting.
    ban: Ban | None = None
