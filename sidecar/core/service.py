"""The sidecar's core as one object: accounts, the event pipeline, verdicts, saved state.

Event sources (live sessions, capture replay) call :meth:`Sidecar.handle`; the
HTTP side, metrics, supervision and re-pairs ask it through its methods. Its
dictionaries stay inside: callers get snapshots and typed health objects.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager

from google.protobuf.message import Message as ProtoMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

from sidecar.core.clock import Clock
from sidecar.core.pipeline import (
    PROBE_KINDS,
    EventPipeline,
    MessageListener,
    ReceiptListener,
    StatusListener,
)
from sidecar.core.ports import StateStore
from sidecar.core.spooling import Backlog
from sidecar.core.storage import Storage
from sidecar.domain.account import AccountSettings, AccountSnapshot, AccountState, Status
from sidecar.domain.classify import MessageClass, classify
from sidecar.domain.health import AccountHealth, PairingView, VerdictChange, account_health, to_ms
from sidecar.domain.next_step import next_step
from sidecar.domain.own_events import OwnEvent
from sidecar.domain.probes import probe_id_of
from sidecar.domain.steady import CONFIRM_S, SteadyVerdict
from sidecar.domain.verdict import Verdict, VerdictRule, evidence_verdict

log = logging.getLogger(__name__)

#: The verdict every reader uses. Swap the rule here and nowhere else.
VERDICT_RULE: VerdictRule = evidence_verdict
#: Verdict changes remembered per account for the health object.
VERDICT_HISTORY = 20


class Sidecar:
    def __init__(
        self,
        settings: Iterable[AccountSettings],
        clock: Clock,
        state_store: StateStore,
        verdict: VerdictRule = VERDICT_RULE,
        storage: Storage | None = None,
        confirm_s: float = CONFIRM_S,
    ) -> None:
        self.clock = clock
        #: The rule, judging one moment; readers ask :meth:`verdict_of`.
        self.verdict = verdict
        #: How long evidence must hold before the verdict turns degraded.
        self.confirm_s = confirm_s
        self.storage = storage
        self._state_store = state_store
        self._settings: dict[str, AccountSettings] = {s.account_id: s for s in settings}
        self._states: dict[str, AccountState] = {
            account_id: AccountState(s) for account_id, s in self._settings.items()
        }
        self._restored = self._restore()
        self._pipeline = EventPipeline(self._states)
        if storage is not None:
            storage.listener.leave_out(
                {a for a, s in self._settings.items() if not s.store_messages}
            )
            self._pipeline.add_message_listener(storage.listener)
        #: When the supervisor connects an account again after a failed connection.
        self._next_attempt: dict[str, float] = {}
        #: Accounts whose session store holds no paired device (as the supervisor saw).
        self._unpaired: set[str] = set()
        self._history_lock = threading.Lock()
        self._history: dict[str, deque[VerdictChange]] = {
            account_id: deque(maxlen=VERDICT_HISTORY) for account_id in self._states
        }
        self._steady = {account_id: SteadyVerdict() for account_id in self._states}

    # -- accounts ---------------------------------------------------------------

    @property
    def account_ids(self) -> tuple[str, ...]:
        return tuple(self._states)

    def has_account(self, account_id: str) -> bool:
        return account_id in self._states

    def settings(self, account_id: str) -> AccountSettings:
        return self._settings[account_id]

    def accounts(self) -> Sequence[tuple[AccountSettings, AccountState]]:
        """Each account's settings and live state, for collectors that read them at
        every scrape (they check ``state.version`` to skip unchanged accounts)."""
        return [(self._settings[a], self._states[a]) for a in self._settings]

    def status(self, account_id: str) -> Status:
        """The account's connection status now (no copy of its state)."""
        return self._states[account_id].status

    def snapshot(self, account_id: str, now: float | None = None) -> AccountSnapshot:
        return self._states[account_id].snapshot(now)

    # -- events -----------------------------------------------------------------

    def handle(self, account_id: str, event: ProtoMessage | OwnEvent, received_at: float) -> None:
        """Apply one event (see :meth:`EventPipeline.handle`)."""
        self._pipeline.handle(account_id, event, received_at)

    def durable_together(self) -> AbstractContextManager[Callable[[], None]]:
        """Real messages handled on this thread inside the block are made durable in one
        write, when the function it yields is called and when the block ends
        (:meth:`StorageListener.together`; nothing to do without storage)."""
        if self.storage is None:
            return contextlib.nullcontext(_nothing)
        return self.storage.listener.together()

    def set_status(self, account_id: str, status: Status, at: float) -> None:
        self._pipeline.set_status(self._states[account_id], status, at)

    def add_status_listener(self, listener: StatusListener) -> None:
        self._pipeline.add_status_listener(listener)

    def add_receipt_listener(self, listener: ReceiptListener) -> None:
        self._pipeline.add_receipt_listener(listener)

    def add_message_listener(self, listener: MessageListener) -> None:
        """Told about every classified message (the storage listens this way)."""
        self._pipeline.add_message_listener(listener)

    def is_sent_probe(self, account_id: str, message: WAMessage | None) -> bool:
        """Whether ``message`` is a probe sent to this account, which the pipeline will
        recognise as one (a recording with blank text keeps only such markers)."""
        state = self._states.get(account_id)
        if state is None or classify(message).kind not in PROBE_KINDS:
            return False
        probe_id = probe_id_of(message)
        return probe_id is not None and state.was_sent_probe(probe_id)

    def clear_qr(self, account_id: str) -> None:
        """Forget the QR code shown for the account (a re-pair waits for a fresh one)."""
        self._states[account_id].set_qr(None, self.clock.now())

    def mark_needs_repair(self, account_id: str) -> None:
        self._states[account_id].set_needs_repair(True)

    def needs_repair(self, account_id: str) -> bool:
        return self._states[account_id].needs_repair

    # -- verdicts and health ------------------------------------------------------

    def verdict_of(
        self, snapshot: AccountSnapshot, settings: AccountSettings, now: float
    ) -> Verdict:
        """The account's verdict as every reader gets it: the rule's, confirmed and held
        (:mod:`sidecar.domain.steady`)."""
        return self._steady[snapshot.account_id].judge(
            self.verdict(snapshot, settings, now), snapshot, self.confirm_s, now
        )

    def judge(self, account_id: str, now: float) -> Verdict:
        """The account's verdict now; a change is added to its history."""
        return self._judge(account_id, now)[1]

    def _judge(self, account_id: str, now: float) -> tuple[AccountSnapshot, Verdict]:
        settings = self._settings[account_id]
        snapshot = self._states[account_id].snapshot(now)
        verdict = self.verdict_of(snapshot, settings, now)
        with self._history_lock:
            history = self._history[account_id]
            last = history[-1] if history else None
            changed = not VerdictChange.continues(last, verdict)
            if changed:
                history.append(VerdictChange.of(verdict, snapshot, settings, now))
        if changed:
            _log_verdict_change(account_id, verdict, last, now, snapshot.status)
        return snapshot, verdict

    def evaluate_verdicts(self) -> None:
        """Judge every account, so verdict changes are seen even when nobody asks."""
        now = self.clock.now()
        for account_id in self._states:
            self.judge(account_id, now)

    def health(self, account_id: str, backlog: dict[str, Backlog] | None = None) -> AccountHealth:
        """The account's health now. ``backlog``: the spool's, read once for many accounts."""
        now = self.clock.now()
        snapshot, verdict = self._judge(account_id, now)
        with self._history_lock:
            history = tuple(self._history[account_id])
        settings = self._settings[account_id]
        store = None  # also for an account whose messages are not stored here
        if self.storage is not None and settings.store_messages:
            store = self.storage.status(account_id, backlog)
        return account_health(
            snapshot, settings, verdict, now, history, store, account_id in self._unpaired
        )

    def all_health(self) -> list[AccountHealth]:
        """Every account's health; the spool's backlog is the one every health request
        shares (:meth:`Storage.recent_backlog`: at most a second old)."""
        backlog = self.recent_backlog()
        return [self.health(account_id, backlog) for account_id in self._states]

    def recent_backlog(self) -> dict[str, Backlog] | None:
        """The spool's backlog as the health API shares it (None: no storage)."""
        return None if self.storage is None else self.storage.recent_backlog()

    def set_unpaired(self, account_id: str, unpaired: bool) -> None:
        """Whether the account's store holds no paired device; said once when found."""
        if unpaired and account_id not in self._unpaired:
            step = next_step(account_id, Status.QR_PENDING, self._settings[account_id].source)
            log.warning("account=%s has no paired device: %s", account_id, step)
        (self._unpaired.add if unpaired else self._unpaired.discard)(account_id)

    def set_next_attempt(self, account_id: str, at: float | None) -> None:
        """When the account's next connection attempt is (None: connecting now), for the
        pair page: "cannot reach WhatsApp, trying again in 40 s"."""
        if at is None:
            self._next_attempt.pop(account_id, None)
        else:
            self._next_attempt[account_id] = at

    def pairing_view(self, account_id: str) -> PairingView:
        """What the pair page shows; judged like :meth:`health`, without reading the store."""
        status, code, _, platform, paired_at = self._states[account_id].pairing_view()
        snapshot, verdict = self._judge(account_id, self.clock.now())
        return PairingView(
            status=status,
            qr_code=code if status == Status.QR_PENDING.value else None,
            platform=platform,
            paired_at_ms=to_ms(paired_at),
            last_real_message_ms=to_ms(snapshot.last_real_at),
            degraded=verdict.degraded,
            source=self._settings[account_id].source,
            next_attempt_ms=to_ms(self._next_attempt.get(account_id)),
        )

    # -- saved state and logs -------------------------------------------------------

    def _restore(self) -> bool:
        """Take in the saved state; False while the state store cannot read it yet."""
        saved = self._state_store.load()
        if saved is None:
            return False
        now = self.clock.now()
        for account_id, persisted in saved.items():
            if account_id in self._states:
                self._states[account_id].restore(persisted, now)
        return True

    def flush_state(self) -> int:
        """Write the accounts whose saved state changed. Returns how many. Until the saved
        state could be read (a full disk at start-up), nothing is written over it."""
        if not self._restored:
            self._restored = self._restore()
            if not self._restored:
                return 0
        changed = []
        for account_id, state in self._states.items():
            persisted = state.take_persisted()
            if persisted is not None:
                changed.append((account_id, persisted))
        return self._state_store.save(changed)

    def log_summaries(self) -> None:
        """One INFO line per account: state, counts, last-real age, verdict."""
        now = self.clock.now()
        for account_id, state in self._states.items():
            snap = state.snapshot(now)
            verdict = self.verdict_of(snap, self._settings[account_id], now)
            age = (
                "never"
                if snap.last_real_at is None
                else f"{max(0.0, now - snap.last_real_at):.0f}s"
            )
            log.info(
                "account=%s status=%s real=%d protocol=%d other=%d reconnects=%d"
                " last_real_age=%s degraded=%s%s",
                account_id,
                snap.status,
                snap.class_total(MessageClass.REAL),
                snap.class_total(MessageClass.PROTOCOL),
                snap.class_total(MessageClass.OTHER),
                snap.reconnects,
                age,
                "yes" if verdict.degraded else "no",
                f" reasons={','.join(verdict.reasons)}" if verdict.reasons else "",
            )

    def close(self) -> None:
        self._state_store.close()


def _log_verdict_change(
    account_id: str, verdict: Verdict, last: VerdictChange | None, now: float, status: Status
) -> None:
    """Say a verdict change when it happens (the per-minute summary comes later): a
    WARNING with the evidence in words when degraded, an INFO line when it clears."""
    if verdict.degraded:
        log.warning(
            "account=%s verdict: degraded (%s): %s",
            account_id,
            ", ".join(verdict.reasons),
            verdict.warning,
        )
    elif last is not None and last.degraded and status is not Status.CONNECTED:
        log.info(  # not a recovery: a deaf account that comes back is degraded again at once
            "account=%s verdict: not judged while %s (degraded for %.0f s before)",
            account_id,
            status,
            max(0.0, now - last.at_ms / 1000),
        )
    elif last is not None and last.degraded:
        log.info(
            "account=%s verdict: no longer degraded, after %.0f s",
            account_id,
            max(0.0, now - last.at_ms / 1000),
        )


def _nothing() -> None:
    pass
