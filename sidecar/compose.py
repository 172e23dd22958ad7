"""The composition root: every part built from the loaded config, in one place.

Nothing else constructs adapters or registers collectors. :func:`assemble`
opens the state under ``state_dir`` and builds the core and its metrics;
:func:`build_app` the HTTP side; :func:`live_source` and :func:`replay_source`
the two event sources. ``app`` runs what this module builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from sidecar import __version__
from sidecar.adapters.audit import AuditLog
from sidecar.adapters.auth import Authenticator, FirebaseVerifier, StaticTokens
from sidecar.adapters.capture import capture_records
from sidecar.adapters.deferred import (
    DeferredSpool,
    DeferredStateStore,
    DeferredStore,
    is_disk_failure,
    open_or_defer,
)
from sidecar.adapters.firestore_leases import FirestoreLeases
from sidecar.adapters.http import HttpLimits, StreamLimits, create_app
from sidecar.adapters.neonize_session import Deliver, NeonizeSession
from sidecar.adapters.outbox_sqlite import SqliteOutbox
from sidecar.adapters.ratelimit import FailureLimiter
from sidecar.adapters.recorder import Recorder
from sidecar.adapters.send_journal import SqliteSendJournal
from sidecar.adapters.session_store import FileAccountLock, SessionStore
from sidecar.adapters.spool import Spool
from sidecar.adapters.sqlite_state import SqliteStateStore
from sidecar.adapters.store_sqlite import SqliteMessageStore
from sidecar.config import LoadedConfig, RateLimitConfig
from sidecar.core.clock import Clock, ReplayClock
from sidecar.core.control import LiveControl
from sidecar.core.failures import error_kind
from sidecar.core.live import Background, LiveAccounts
from sidecar.core.ports import (
    AccountControl,
    MessageStore,
    OutboxStore,
    Session,
    SpoolPort,
    StateStore,
)
from sidecar.core.prober import Prober
from sidecar.core.receipts import ReceiptMarker
from sidecar.core.repair import RecordingControl, Repairs
from sidecar.core.replay import Replayer, ReplayErrors
from sidecar.core.send_service import SendService
from sidecar.core.sender import OutboxWorker
from sidecar.core.service import Sidecar
from sidecar.core.storage import Storage
from sidecar.core.supervisor import AccountSupervisor
from sidecar.domain.outbox import SendPolicy
from sidecar.metrics.accounts import AccountCollector
from sidecar.metrics.collectors import (
    AuditCollector,
    ConflictCollector,
    LeaseCollector,
    LimiterCollector,
    ProcessCollector,
    RepairCollector,
    SpoolCollector,
    StoreCollector,
)
from sidecar.metrics.registry import Metrics
from sidecar.metrics.sending import SendCollector

log = logging.getLogger(__name__)

#: An event source runs until it is done or ``stop`` is set.
EventSource = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class Assembly:
    """What :func:`assemble` built: the core, its storage and its metrics (and, once
    :func:`live_source` built it, the send path)."""

    loaded: LoadedConfig
    sidecar: Sidecar
    metrics: Metrics
    replay_errors: ReplayErrors
    storage: Storage | None = None
    sending: SendService | None = None

    @property
    def state_dir(self) -> Path:
        return self.loaded.config.state_dir

    def close(self) -> None:
        """Close the state database (the storage closes on its own, asynchronously)."""
        self.sidecar.close()


def build_store(loaded: LoadedConfig) -> MessageStore:
    config = loaded.config
    if config.store.backend == "firestore":
        from sidecar.adapters.store_firestore import FirestoreStore

        assert config.store.firestore is not None  # the config refuses it otherwise
        firestore = config.store.firestore
        return FirestoreStore(
            firestore.project, database=firestore.database, timeout_s=firestore.write_timeout
        )
    open_store: Callable[[], MessageStore] = functools.partial(SqliteMessageStore, config.state_dir)
    store, later = open_or_defer(
        f"the message store {SqliteMessageStore.FILENAME}",
        open_store,
        "; messages wait in the spool (whatsapp_store_write_errors_total)",
    )
    if later is not None:
        return DeferredStore(later, SqliteMessageStore.backend)
    assert store is not None
    return store


def assemble(loaded: LoadedConfig, clock: Clock, *, storage: bool = True) -> Assembly:
    """Open the state under ``state_dir`` and build the core with its metrics.

    A corrupt spool or SQLite message store raises CorruptDatabaseError (the CLI
    says what to do); a corrupt account state is moved aside by SqliteStateStore,
    with a WARNING. ``storage=False`` leaves out the spool and the message store
    (tests and benchmarks of the event path alone)."""
    state_dir = loaded.config.state_dir
    spool = _spool(state_dir) if storage else None
    try:
        stored = None if spool is None else Storage(spool, build_store(loaded))
        sidecar = Sidecar(
            loaded.config.account_settings(), clock, _state_store(state_dir), storage=stored
        )
    except BaseException:
        if spool is not None:
            spool.close()
        raise
    replay_errors = ReplayErrors()
    metrics = Metrics([AccountCollector(sidecar), ProcessCollector(replay_errors, __version__)])
    if stored is not None:
        metrics.register(StoreCollector(stored))
        metrics.register(SpoolCollector(stored, sidecar.account_ids))
        metrics.register(ConflictCollector(stored, sidecar.account_ids))
    return Assembly(loaded, sidecar, metrics, replay_errors, stored)


def _spool(state_dir: Path) -> SpoolPort:
    """The spool; on a full or failing disk, one that opens when it can."""
    spool, later = open_or_defer(
        f"the spool {Spool.FILENAME}",
        functools.partial(Spool, state_dir),
        "; real messages are not stored until it opens (whatsapp_spool_write_errors_total)",
    )
    if later is not None:
        return DeferredSpool(later)
    assert spool is not None
    return spool


def _state_store(state_dir: Path) -> StateStore:
    """The account state; on a full or failing disk, one that opens when it can."""
    store, later = open_or_defer(
        f"the state database {SqliteStateStore.FILENAME}",
        functools.partial(SqliteStateStore, state_dir),
        "; account state is neither restored nor saved until it opens",
    )
    if later is not None:
        return DeferredStateStore(later)
    assert store is not None
    return store


def build_authenticator(loaded: LoadedConfig) -> Authenticator:
    firebase = loaded.config.auth.firebase if loaded.config.auth else None
    verifier = None
    if firebase is not None:
        claim = firebase.required_claim
        verifier = FirebaseVerifier(
            firebase.project_id,
            certs_url=firebase.certs_url,
            allowed_uids=firebase.allowed_uids,
            required_claim=None if claim is None else (claim.name, claim.value),
        )
    return Authenticator(StaticTokens(loaded.tokens), verifier)


def build_repairs(assembly: Assembly, control: AccountControl) -> Repairs:
    repair = assembly.loaded.config.repair
    repairs = Repairs(
        assembly.sidecar,
        AuditLog(assembly.state_dir),
        control,
        interval_s=repair.interval,
        grace_s=repair.grace,
    )
    assembly.metrics.register(RepairCollector(repairs, assembly.sidecar))
    assembly.metrics.register(AuditCollector(repairs))
    return repairs


def build_app(
    assembly: Assembly,
    *,
    auth: Authenticator | None = None,
    repairs: Repairs | None = None,
    limits: HttpLimits | None = None,
    limiter: FailureLimiter | None = None,
) -> web.Application:
    """The HTTP app. ``limiter`` defaults to one built from ``auth.rate_limit``;
    its counters are exported on /metrics. Without ``repairs``, only /metrics,
    the probes and the read-only account API are served."""
    config = assembly.loaded.config
    if limiter is None:
        rate = config.auth.rate_limit if config.auth else RateLimitConfig()
        limiter = FailureLimiter(rate.failures, rate.window, global_failures=rate.global_failures)
    assembly.metrics.register(LimiterCollector(limiter))
    return create_app(
        assembly.sidecar,
        auth or build_authenticator(assembly.loaded),
        repairs,
        render=assembly.metrics.render,
        limits=limits,
        limiter=limiter,
        streams=StreamLimits(
            config.http.event_streams.total, config.http.event_streams.per_principal
        ),
        sending=assembly.sending,
    )


# -- event sources -------------------------------------------------------------------


def replay_source(
    assembly: Assembly, capture: Path, clock: ReplayClock, linger: float
) -> EventSource:
    async def source(stop: asyncio.Event) -> None:
        replayer = Replayer(assembly.sidecar, clock, assembly.replay_errors)
        report = await replayer.run(capture_records(capture), stop)
        print(report.summary(capture.name), flush=True)
        assembly.sidecar.log_summaries()
        if linger > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=linger)

    return source


def live_source(
    assembly: Assembly, record: Path | None, *, blank_record_text: bool = False
) -> tuple[EventSource, LiveControl]:
    """Supervised neonize sessions for every account, and the control that acts on
    them for re-pairs. With ``record``, every event is also written as a capture."""
    sidecar, state_dir = assembly.sidecar, assembly.state_dir
    recorder = (
        Recorder(record, blank_text=blank_record_text, is_probe=sidecar.is_sent_probe)
        if record is not None
        else None
    )
    control = LiveControl()
    supervisors, delivers = [], {}
    for account_id in sidecar.account_ids:
        store = _session_store(assembly, account_id)
        try:
            store.prepare()
        except OSError as exc:
            if not is_disk_failure(exc):
                raise
            # each connection attempt makes it again, and connects once there is space
            log.error("account=%s session store: cannot make it: %s", account_id, error_kind(exc))
        deliver = _deliverer(sidecar, account_id, recorder)
        supervisor = AccountSupervisor(
            account_id,
            sidecar,
            functools.partial(NeonizeSession, account_id, store, deliver),
            lock=FileAccountLock(state_dir, account_id),
            device_id=store.device_id,
        )
        supervisors.append(supervisor)
        delivers[account_id] = deliver
        control.add(supervisor, store)
    by_id = {s.account_id: s for s in supervisors}
    probers = [
        Prober(
            account_id,
            settings.probe,
            by_id[account_id],
            _session_store(assembly, settings.probe.peer).device_id,
            delivers[account_id],
        )
        for account_id in sidecar.account_ids
        if (settings := sidecar.settings(account_id)).probe is not None
    ]
    leases = _leases(assembly)
    worker_id = f"{leases.replica_id if leases else os.uname().nodename}:{os.getpid()}"
    running: list[LiveAccounts] = []  # the worker asks it which accounts it runs
    background = build_send_path(
        assembly,
        worker_id=worker_id,
        held=lambda: running[0].held(),
        sessions=lambda account_id: by_id[account_id].session,
        deliver=lambda account_id, event: delivers[account_id](event),
    )
    accounts = LiveAccounts(
        sidecar,
        supervisors,
        probers,
        background=background,
        leases=leases,
        on_stopped=recorder.close if recorder is not None else lambda: None,
    )
    running.append(accounts)
    if accounts.keeper is not None:
        assembly.metrics.register(LeaseCollector(accounts.keeper, sidecar.account_ids))
    return accounts.run, control


def build_send_path(
    assembly: Assembly,
    *,
    worker_id: str,
    held: Callable[[], Collection[str]],
    sessions: Callable[[str], Session | None],
    deliver: Callable[[str, Any], None],
) -> list[Background]:
    """The outbox worker and the receipt marker when ``send.enabled`` (to run beside
    the accounts); the endpoint's service is left on the assembly for :func:`build_app`.
    ``sessions`` names each account's live session, ``deliver`` hands an event to the
    core as the account's sessions do (recorded in a capture, when recording)."""
    config, sidecar = assembly.loaded.config, assembly.sidecar
    send = config.send
    if not send.enabled:
        log.info(
            "sending is off (send.enabled: false): the send endpoint answers 403"
            " and the outbox is not drained"
        )
        return []
    store = _outbox_store(assembly)
    journal = SqliteSendJournal(assembly.state_dir)
    rate = (send.rate_per_minute, send.burst)
    worker = OutboxWorker(
        store,
        journal,
        sidecar.clock,
        worker_id=worker_id,
        sessions=sessions,
        held=held,
        deliver=deliver,
        policy=SendPolicy(max_attempts=send.max_attempts, lease_s=send.lease),
        rate=rate,
        poll_interval_s=send.poll_interval,
    )
    marker = ReceiptMarker(store, journal)
    sidecar.add_receipt_listener(marker.on_receipt)
    assembly.sending = SendService(worker, sidecar.clock, rate)
    assembly.metrics.register(SendCollector(worker, sidecar.account_ids, sidecar.clock))
    log.info("sending is on: the outbox is drained for the accounts this replica holds")
    return [worker, marker]


def _outbox_store(assembly: Assembly) -> OutboxStore:
    config = assembly.loaded.config
    if config.store.backend == "firestore":
        from sidecar.adapters.outbox_firestore import FirestoreOutbox

        assert config.store.firestore is not None  # the config refuses it otherwise
        firestore = config.store.firestore
        return FirestoreOutbox(
            firestore.project, database=firestore.database, timeout_s=firestore.write_timeout
        )
    return SqliteOutbox(assembly.state_dir)


def replay_control() -> RecordingControl:
    """Replay has no live session to act on: re-pair requests are only recorded."""
    return RecordingControl()


def _session_store(assembly: Assembly, account_id: str) -> SessionStore:
    url = assembly.loaded.postgres_urls.get(account_id)
    return SessionStore.for_account(
        assembly.state_dir, account_id, None if url is None else url.get_secret_value()
    )


def _leases(assembly: Assembly) -> FirestoreLeases | None:
    config = assembly.loaded.config
    if config.leases is None:
        return None
    assert config.store.firestore is not None  # the config refuses leases without it
    replica = os.environ.get(config.leases.replica_id_env) or os.uname().nodename
    log.info("replica %s shares accounts through leases (ttl %.0f s)", replica, config.leases.ttl)
    return FirestoreLeases(
        config.store.firestore.project,
        replica,
        config.leases.ttl,
        database=config.store.firestore.database,
    )


def _deliverer(sidecar: Sidecar, account_id: str, recorder: Recorder | None) -> Deliver:
    clock = sidecar.clock

    def deliver(event: Any) -> None:
        now = clock.now()
        if recorder is not None:
            try:
                recorder.write(now, account_id, event)
            except Exception as exc:  # its text may quote the event: the kind only
                log.error(
                    "account=%s cannot record an event (%s); handling it",
                    account_id,
                    type(exc).__name__,
                )
        sidecar.handle(account_id, event, now)

    return deliver
