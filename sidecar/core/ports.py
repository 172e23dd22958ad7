"""The ports: what the core needs from the outside, as protocols adapters implement.

The core never imports an adapter; the composition root (:mod:`sidecar.compose`)
hands it objects that fit these shapes. Each port names the adapter that
implements it in production and, where one exists, the stand-in tests use.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol

from sidecar.core.spooling import Backlog, Batch, Conflict, Prepared
from sidecar.domain.account import PersistedState
from sidecar.domain.outbox import OutboxItem, SendPolicy
from sidecar.domain.records import MessageDoc, ThreadPatch


class StateStore(Protocol):
    """The account state that survives a restart (:class:`SqliteStateStore`)."""

    def load(self) -> dict[str, PersistedState] | None:
        """The saved state; None when it cannot be read yet (a full disk at start-up:
        :class:`DeferredStateStore`), and the core asks again before it saves."""
        ...

    def save(self, states: Iterable[tuple[str, PersistedState]]) -> int: ...

    def close(self) -> None: ...


class SpoolPort(Protocol):
    """The local, durable queue between the event path and the store (:class:`Spool`).

    ``enqueue`` is called on the event path and must be durable when it returns;
    it raises :class:`~sidecar.core.spooling.SpoolError` when it cannot be."""

    @property
    def dropped(self) -> dict[str, int]:
        """Real messages per account the spool lost to damaged rows."""
        ...

    def enqueue(self, doc: MessageDoc, patch: ThreadPatch | None) -> None: ...

    def take(self, limit: int = ..., *, after: Batch | None = None) -> Batch: ...

    def discard(self, batch: Batch, error: str) -> None: ...

    def ack(self, batch: Batch) -> None: ...

    def backlog(self) -> dict[str, Backlog]: ...

    def is_empty(self) -> bool:
        """Nothing spooled: no message and no thread update waits."""
        ...

    def error(self) -> tuple[str, float] | None: ...

    def now(self) -> float: ...

    def close(self) -> None: ...


class MessageStore(Protocol):
    """Writes spool batches (:class:`FirestoreStore`, :class:`SqliteMessageStore`).

    ``prepare`` (encoding; runs on a worker thread) is apart from ``commit`` so the
    writer can encode the next batch while this one commits. ``prepare`` takes as much
    of a batch as one request may hold; ``commit`` applies message operations by the
    rules of :mod:`sidecar.domain.authorship` and returns those it did not apply as asked."""

    backend: str

    def prepare(self, batch: Batch) -> Prepared: ...

    async def commit(self, prepared: Prepared) -> list[Conflict]: ...

    def refuses(self, exc: BaseException) -> bool:
        """``exc`` says the store refuses what the operations hold: retrying the same
        operations can never succeed (a transient error says False)."""
        ...

    async def close(self) -> None: ...


class OutboxStore(Protocol):
    """The queue of messages to send, in the existing backend's ``outbox`` layout
    (:class:`FirestoreOutbox`, :class:`SqliteOutbox`). Each method is one atomic step;
    the rules of each step are :mod:`sidecar.domain.outbox`'s. Times are Unix seconds."""

    backend: str

    async def add(self, item: OutboxItem) -> OutboxItem | None:
        """Queue ``item`` under ``item.id`` unless that id is there already: then
        nothing changes and the item there is returned (a duplicate)."""
        ...

    async def get(self, item_id: str) -> OutboxItem | None: ...

    async def claim(
        self,
        accounts: Collection[str],
        now: float,
        worker: str,
        policy: SendPolicy,
        limit: int,
    ) -> list[OutboxItem]:
        """Claim up to ``limit`` items of ``accounts`` that are claimable at ``now``,
        the earliest due first, each in a step of its own, so that two workers never
        hold one item. Items written by others (the app) are claimed the same way."""
        ...

    async def settle(self, claim: OutboxItem, after: OutboxItem) -> bool:
        """Write ``after`` if the stored item is still held by ``claim`` (same holder
        and lease); False, and nothing written, when someone else holds it now."""
        ...

    async def counts(self) -> list[tuple[str, str, int]]:
        """``(account, status, items)`` for every account and status that has items."""
        ...

    async def oldest_queued(self) -> dict[str, float]:
        """Per account, when its oldest queued item was created."""
        ...

    async def close(self) -> None: ...


class Session(Protocol):
    """One connection attempt and, if it succeeds, the session that follows
    (:class:`NeonizeSession`). The blocking methods run on a worker thread."""

    async def run(self) -> None:
        """Return when the connection is over, for whatever reason."""
        ...

    def stop(self) -> None:
        """End the connection; safe from any thread, and more than once."""
        ...

    @property
    def connected(self) -> bool: ...

    def send_text(self, user: str, text: str) -> None:
        """Send ``text`` to the phone number ``user`` (blocking)."""
        ...

    def logout(self) -> None:
        """Log the device out on WhatsApp's side (best effort; blocking)."""
        ...

    def pair_phone(self, phone: str) -> str:
        """A phone pairing code for this unpaired session (blocking)."""
        ...


SessionFactory = Callable[[], Session]


class SessionKeys(Protocol):
    """Where one account's linked-device keys live (:class:`SessionStore`)."""

    def device_id(self) -> str | None:
        """The paired device's JID, or None when unpaired or unknown (blocking)."""
        ...

    def forget(self) -> None:
        """Drop the keys, so the next connection pairs a new device."""
        ...


class AccountLock(Protocol):
    """One process at a time per account (:class:`FileAccountLock`)."""

    def acquire(self) -> bool: ...

    def holder(self) -> str: ...

    def release(self) -> None: ...


class Leases(Protocol):
    """Time-limited account leases shared by replicas (:class:`FirestoreLeases`)."""

    replica_id: str
    ttl_ms: int

    async def heartbeat(self) -> None: ...

    async def live_replicas(self) -> int: ...

    async def try_hold(self, account_id: str) -> bool: ...

    async def release(self, account_id: str) -> None: ...

    async def leave(self) -> None: ...

    async def close(self) -> None: ...


class Audit(Protocol):
    """Who asked for what (:class:`AuditLog`, a file under state_dir)."""

    def record(self, who: str, action: str, account: str, outcome: str, **details: Any) -> None:
        """Write one record, or raise (:class:`OSError`) if it could not be written."""
        ...


class AccountControl(Protocol):
    """What can be done to a live account (:class:`LiveControl`; in replay,
    :class:`~sidecar.core.repair.RecordingControl`)."""

    async def start_pairing(self, account_id: str) -> None:
        """Log the old device out where possible, drop its session, connect for pairing."""
        ...

    async def reconnect(self, account_id: str) -> None: ...

    async def pair_code(self, account_id: str, phone: str) -> str:
        """A phone pairing code for the account's pairing session."""
        ...
