"""The ports: what the core needs from the outside, as protocols adapters implement.

The core never imports an adapter; the composition root (:mod:`sidecar.compose`)
hands it objects that fit these shapes. Each port names the adapter that
implements it in production and, where one exists, the stand-in tests use.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.core.spooling import Backlog, Batch, Conflict, Prepared
from sidecar.domain.account import PersistedState
from sidecar.domain.facts import MessageFacts
from sidecar.domain.outbox import STATUSES, OutboxItem, SendPolicy
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

    ``enqueue_facts`` is called on the event path (``enqueue`` takes documents already
    built) and must be durable when it returns; it raises
    :class:`~sidecar.core.spooling.SpoolError` when it cannot be. ``take`` hands out
    documents: those of spooled facts are built there, by the writer."""

    @property
    def dropped(self) -> dict[str, int]:
        """Real messages per account the spool lost to damaged rows."""
        ...

    def enqueue(self, doc: MessageDoc, patch: ThreadPatch | None) -> None: ...

    def enqueue_facts(self, facts: Sequence[MessageFacts]) -> None:
        """All of them durable, or none (then it raises)."""
        ...

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


@dataclass(frozen=True, slots=True)
class OpenItems:
    """The queued and processing items of some accounts, as one read found them."""

    #: ``(account, status, items)`` for each account and open status with items.
    counts: list[tuple[str, str, int]]
    #: Per account with queued items, when its oldest was created.
    oldest_queued: dict[str, float]


class OutboxStore(Protocol):
    """The queue of messages to send, in the existing backend's ``outbox`` layout
    (:class:`FirestoreOutbox`, :class:`SqliteOutbox`). Each method is one atomic step;
    the rules of each step are :mod:`sidecar.domain.outbox`'s. Times are Unix seconds."""

    backend: str

    async def add(self, item: OutboxItem) -> OutboxItem | None:
        """Queue ``item`` under ``item.id`` unless that id is there already: then
        nothing changes and the item there is returned (a duplicate). A new item's
        message document (:mod:`sidecar.domain.outbound`) is written with it, unless
        one is there, and its thread marked outbound."""
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
        and lease); False, and nothing written, when someone else holds it now. A sent
        or failed item's message document moves with it, in the same step."""
        ...

    async def mark(self, thread_id: str, message_id: str, status: str, at: float) -> bool:
        """Move an outbound message document to ``status`` (delivered, read) if that is
        forward; False when it is not there or already further."""
        ...

    async def counts(
        self, accounts: Collection[str], statuses: Collection[str] = STATUSES
    ) -> list[tuple[str, str, int]]:
        """``(account, status, items)`` for each of ``accounts`` and ``statuses`` with
        items, counted by the store (Firestore: an aggregation per account and status)."""
        ...

    async def open_items(self, accounts: Collection[str]) -> OpenItems:
        """The queued and processing items of ``accounts``, read together (Firestore: a
        query per 30 accounts and status), so that counting them costs little more than
        there are items."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PastAttempt:
    """What an earlier attempt at an item left: the WhatsApp id if the server accepted
    it, else None (the outcome is unknown: the process stopped during the send)."""

    wa_id: str | None
    accepted_at: float | None


@dataclass(frozen=True, slots=True)
class SentMessage:
    """Where the outbound message a WhatsApp id names is documented."""

    wa_id: str
    thread_id: str
    message_id: str


class SendJournal(Protocol):
    """This replica's durable record of its send attempts (:class:`SqliteSendJournal`):
    each step is on disk before the send goes on. Blocking: called from a thread."""

    def past(self, item_id: str) -> PastAttempt | None: ...

    def started(self, item: OutboxItem, at: float) -> None: ...

    def accepted(self, item_id: str, wa_id: str, at: float) -> None: ...

    def refused(self, item_id: str) -> None: ...

    def settled(self, item_id: str) -> None: ...

    def sent(self, account_id: str, wa_ids: Iterable[str]) -> list[SentMessage]: ...

    def prune(self, now: float | None = None) -> int: ...

    def close(self) -> None: ...


class SendRefused(Exception):
    """A send WhatsApp did not accept; ``reason`` is one of
    :data:`~sidecar.domain.delivery.FAILURE_REASONS` (never the error's text: it may
    quote the recipient)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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

    def send_message(self, to_jid: str, text: str) -> str:
        """Send ``text`` to ``to_jid`` (``user@server``) and return the WhatsApp id the
        server accepted it under; raise :class:`SendRefused` (blocking)."""
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
    """Replica membership and account holds shared by replicas (:class:`FirestoreLeases`).

    Only membership is renewed, once per cycle per replica; an account's record is
    written when it changes hands (docs/deploy.md, "Several replicas")."""

    replica_id: str
    ttl_ms: int

    async def heartbeat(self) -> bool:
        """Renew this replica's membership (joining the first time). False when it had
        been fenced (another replica found it dead and took its accounts): whatever it
        ran may be run elsewhere now."""
        ...

    async def live_replicas(self) -> list[str]:
        """The replicas whose membership has not expired, this one included."""
        ...

    async def take(self, account_id: str) -> bool:
        """Hold the account when it is free, this replica's, or held by a replica that is
        no longer a member (which is then fenced); False when a live replica holds it."""
        ...

    async def release(self, account_id: str) -> None:
        """Give up an account this replica held (after stopping it)."""
        ...

    async def leave(self) -> None:
        """End this replica's membership: what it held becomes free to take."""
        ...

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
