"""The core, its storage, its metrics and the HTTP app, built from the loaded config:
what ``run`` and ``replay`` share (the event sources are :mod:`.sources`')."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from sidecar import __version__
from sidecar.adapters.audit import AuditLog
from sidecar.adapters.auth import Authenticator, FirebaseVerifier, StaticTokens
from sidecar.adapters.deferred import (
    DeferredSpool,
    DeferredStateStore,
    DeferredStore,
    open_or_defer,
)
from sidecar.adapters.http import HttpLimits, StreamLimits, create_app
from sidecar.adapters.ratelimit import FailureLimiter
from sidecar.adapters.spool import Spool
from sidecar.adapters.sqlite_state import SqliteStateStore
from sidecar.adapters.store_sqlite import SqliteMessageStore
from sidecar.config import LoadedConfig, RateLimitConfig
from sidecar.core.clock import Clock
from sidecar.core.ingest import Ingest
from sidecar.core.ports import (
    AccountControl,
    MessageStore,
    SpoolPort,
    StateStore,
)
from sidecar.core.repair import Repairs
from sidecar.core.replay import ReplayErrors
from sidecar.core.send_service import SendService
from sidecar.core.service import Sidecar
from sidecar.core.spooling import MAX_BATCH_OPS
from sidecar.core.storage import Storage
from sidecar.metrics.accounts import AccountCollector
from sidecar.metrics.collectors import (
    AuditCollector,
    ConflictCollector,
    LimiterCollector,
    ProcessCollector,
    RepairCollector,
    SpoolCollector,
    StoreCollector,
)
from sidecar.metrics.registry import Metrics
from sidecar.metrics.signals import SignalsCollector

log = logging.getLogger(__name__)


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
    ingest: Ingest | None = None

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
        stored = (
            None
            if spool is None
            else Storage(spool, build_store(loaded), batch_ops=_batch_ops(loaded))
        )
        sidecar = Sidecar(
            loaded.config.account_settings(),
            clock,
            _state_store(state_dir),
            storage=stored,
            confirm_s=loaded.config.verdict.confirm,
        )
    except BaseException:
        if spool is not None:
            spool.close()
        raise
    replay_errors = ReplayErrors()
    metrics = Metrics(
        [
            AccountCollector(sidecar),
            SignalsCollector(sidecar),
            ProcessCollector(replay_errors, __version__, loaded.config.http.links),
        ]
    )
    if stored is not None:
        metrics.register(StoreCollector(stored))
        metrics.register(SpoolCollector(stored, sidecar.account_ids))
        metrics.register(ConflictCollector(stored, sidecar.account_ids))
    return Assembly(loaded, sidecar, metrics, replay_errors, stored)


def _batch_ops(loaded: LoadedConfig) -> int:
    """Operations the writer hands the store at a time."""
    if loaded.config.store.backend == "sqlite":
        return SqliteMessageStore.BATCH_OPS
    return MAX_BATCH_OPS


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
        ingest_events=assembly.ingest,
    )
