"""The two event sources, live neonize sessions and a replayed capture, and what
runs beside the live accounts (the send path)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Callable, Collection, Coroutine
from pathlib import Path
from typing import Any

from sidecar.adapters.capture import capture_records
from sidecar.adapters.deferred import (
    is_disk_failure,
)
from sidecar.adapters.firestore_leases import FirestoreLeases
from sidecar.adapters.neonize_session import Deliver, NeonizeSession
from sidecar.adapters.outbox_sqlite import SqliteOutbox
from sidecar.adapters.recorder import Recorder
from sidecar.adapters.send_journal import SqliteSendJournal
from sidecar.adapters.session_store import FileAccountLock, SessionStore
from sidecar.compose.assembly import Assembly
from sidecar.core.clock import ReplayClock
from sidecar.core.control import LiveControl
from sidecar.core.dialing import DialSlots
from sidecar.core.failures import error_kind
from sidecar.core.ingest import Ingest
from sidecar.core.live import Background, LiveAccounts
from sidecar.core.ports import (
    OutboxStore,
    Session,
)
from sidecar.core.prober import Prober
from sidecar.core.receipts import ReceiptMarker
from sidecar.core.repair import RecordingControl
from sidecar.core.replay import Replayer
from sidecar.core.send_service import SendService
from sidecar.core.sender import OutboxWorker
from sidecar.core.service import Sidecar
from sidecar.core.supervisor import AccountSupervisor
from sidecar.domain.account import Status
from sidecar.domain.outbox import SendPolicy
from sidecar.metrics.collectors import (
    LeaseCollector,
)
from sidecar.metrics.dials import DialCollector
from sidecar.metrics.ingest import IngestCollector
from sidecar.metrics.sending import SendCollector

log = logging.getLogger(__name__)

#: An event source runs until it is done or ``stop`` is set.
EventSource = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


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
    sidecar = assembly.sidecar
    recorder = (
        Recorder(record, blank_text=blank_record_text, is_probe=sidecar.is_sent_probe)
        if record is not None
        else None
    )
    control = LiveControl()
    connections = assembly.loaded.config.connections
    dials = DialSlots(connections.max_concurrent_dials, connections.dial_jitter)
    assembly.metrics.register(DialCollector(dials))
    supervisors, delivers = [], {}
    ingest_accounts = {a for a in sidecar.account_ids if sidecar.settings(a).source == "ingest"}
    for account_id in ingest_accounts:  # their sessions live in another gateway
        delivers[account_id] = _deliverer(sidecar, account_id, recorder)
    if ingest_accounts:
        assembly.ingest = Ingest(
            ingest_accounts,
            lambda a, event: delivers[a](event),
            connected=lambda a: sidecar.status(a) == Status.CONNECTED,
            now=sidecar.clock.now,
        )
        assembly.metrics.register(IngestCollector(assembly.ingest))
    for account_id in sidecar.account_ids:
        if account_id in ingest_accounts:
            continue
        store = _session_store(assembly, account_id)
        try:
            store.prepare()
        except OSError as exc:
            if not is_disk_failure(exc):
                raise
            # each connection attempt makes it again, and connects once there is space
            log.error("account=%s session store: cannot make it: %s", account_id, error_kind(exc))
        deliver = _deliverer(sidecar, account_id, recorder)
        supervisor = _supervisor(assembly, account_id, store, deliver, dials)
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
        sessions=lambda account_id: s.session if (s := by_id.get(account_id)) else None,
        deliver=lambda account_id, event: delivers[account_id](event),
    )
    accounts = LiveAccounts(
        sidecar,
        supervisors,
        background=[*probers, *background],
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


def _supervisor(
    assembly: Assembly, account_id: str, store: SessionStore, deliver: Deliver, dials: DialSlots
) -> AccountSupervisor:
    """The account's supervisor; its sessions tell it of each event they delivered, so
    it gives its dial slot back once the session is up (connected, or a QR code)."""

    def session_deliver(event: Any) -> None:
        deliver(event)
        supervisor.on_session_event()

    supervisor = AccountSupervisor(
        account_id,
        assembly.sidecar,
        functools.partial(NeonizeSession, account_id, store, session_deliver),
        lock=FileAccountLock(assembly.state_dir, account_id),
        device_id=store.device_id,
        dials=dials,
    )
    return supervisor


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
