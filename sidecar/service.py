"""The sidecar's core, assembled: accounts, pipeline, verdict, metrics, saved state.

Event sources (live neonize clients, capture replay) feed ``pipeline``; the
HTTP adapter reads ``registry`` and :meth:`health`; nothing here does network
I/O.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client.registry import Collector

from sidecar import __version__
from sidecar.adapters.spool import Backlog
from sidecar.clock import Clock
from sidecar.config import LoadedConfig
from sidecar.domain.account import AccountSettings, AccountSnapshot, AccountState, PersistedState
from sidecar.domain.classify import MessageClass
from sidecar.domain.health import health_object, to_ms
from sidecar.domain.verdict import (
    Verdict,
    VerdictRule,
    effective_threshold,
    evidence_verdict,
    gather_evidence,
)
from sidecar.exposition import Exposition
from sidecar.metrics import ProcessCollector, ReplayErrors, SidecarCollector, build_registry
from sidecar.pipeline import EventPipeline
from sidecar.storage import Storage

log = logging.getLogger(__name__)


class StateStore(Protocol):
    """Where the state that survives a restart is kept (SQLite under state_dir)."""

    def load(self) -> dict[str, PersistedState]: ...

    def save(self, states: Iterable[tuple[str, PersistedState]]) -> int: ...

    def close(self) -> None: ...


#: The verdict every reader uses. Swap the rule here and nowhere else.
VERDICT_RULE: VerdictRule = evidence_verdict
#: Verdict changes remembered per account for the health object.
VERDICT_HISTORY = 20


class Sidecar:
    def __init__(
        self,
        loaded: LoadedConfig,
        clock: Clock,
        state_store: StateStore,
        verdict: VerdictRule = VERDICT_RULE,
        storage: Storage | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.clock = clock
        self.verdict = verdict
        self.state_store = state_store
        self.settings: dict[str, AccountSettings] = {
            s.account_id: s for s in self.config.account_settings()
        }
        self.states: dict[str, AccountState] = {
            account_id: AccountState(settings) for account_id, settings in self.settings.items()
        }
        for account_id, persisted in state_store.load().items():
            if account_id in self.states:
                self.states[account_id].restore(persisted)
        self.storage = storage
        self.pipeline = EventPipeline(self.states)
        if storage is not None:
            self.pipeline.add_message_listener(storage.listener)
        self._history_lock = threading.Lock()
        self.verdict_history: dict[str, deque[dict[str, Any]]] = {
            account_id: deque(maxlen=VERDICT_HISTORY) for account_id in self.states
        }
        self.replay_errors = ReplayErrors()
        collectors: list[Collector] = [
            SidecarCollector(
                [(self.settings[a], self.states[a]) for a in self.settings], clock, verdict
            ),
            ProcessCollector(self.replay_errors, __version__),
        ]
        if storage is not None:
            collectors.extend(storage.collectors(list(self.settings)))
        self.registry = build_registry(collectors)
        self.exposition = Exposition(collectors)

    def register_collector(self, collector: Collector) -> None:
        """Add a part's metrics to both the registry and the /metrics exposition."""
        self.registry.register(collector)
        self.exposition.register(collector)

    def postgres_url(self, account_id: str) -> str | None:
        url = self.loaded.postgres_urls.get(account_id)
        return None if url is None else url.get_secret_value()

    def has_account(self, account_id: str) -> bool:
        return account_id in self.states

    def judge(self, account_id: str, now: float) -> Verdict:
        """The account's verdict now; a change is added to its history."""
        return self._judge(account_id, now)[1]

    def _judge(self, account_id: str, now: float) -> tuple[AccountSnapshot, Verdict]:
        settings = self.settings[account_id]
        snapshot = self.states[account_id].snapshot(now)
        verdict = self.verdict(snapshot, settings, now)
        with self._history_lock:
            history = self.verdict_history[account_id]
            current = (verdict.degraded, list(verdict.reasons))
            previous = (
                (history[-1]["isDegraded"], history[-1]["reasons"]) if history else (False, [])
            )
            if current != previous:
                history.append(
                    {
                        "atMs": round(now * 1000),
                        "isDegraded": current[0],
                        "reasons": current[1],
                        "thresholdSeconds": effective_threshold(snapshot, settings),
                    }
                )
        return snapshot, verdict

    def evaluate_verdicts(self) -> None:
        """Judge every account, so verdict changes are seen even when nobody asks."""
        now = self.clock.now()
        for account_id in self.states:
            self.judge(account_id, now)

    def health(
        self, account_id: str, spool_backlog: dict[str, Backlog] | None = None
    ) -> dict[str, Any]:
        now = self.clock.now()
        settings = self.settings[account_id]
        snapshot, verdict = self._judge(account_id, now)
        health = health_object(snapshot, settings, verdict, now)
        evidence = verdict.evidence or gather_evidence(snapshot, settings, now)
        health["quiet"] = (
            snapshot.status.value == "connected" and not verdict.degraded and evidence.quiet
        )
        health["evidence"] = {
            "listeningSinceMs": to_ms(evidence.listening_since),
            "silenceSeconds": evidence.silence_s,
            "thresholdSeconds": evidence.threshold_s,
            "learnedGapSeconds": evidence.learned_gap_s,
            "protocolDuringSilence": evidence.protocol_during_silence,
            "probeMisses": evidence.probe_misses,
            "lastProbeSuccessMs": to_ms(snapshot.last_probe_success_at),
        }
        with self._history_lock:
            health["verdictHistory"] = list(self.verdict_history[account_id])
        if self.storage is not None:
            health["store"] = self.storage.health(account_id, spool_backlog)
        return health

    def all_health(self) -> list[dict[str, Any]]:
        """Every account's health; the spool's backlog is read once for all of them."""
        backlog = self.storage.spool.backlog() if self.storage is not None else None
        return [self.health(account_id, backlog) for account_id in self.states]

    def flush_state(self) -> int:
        """Write the accounts whose saved state changed. Returns how many."""
        changed = []
        for account_id, state in self.states.items():
            persisted = state.take_persisted()
            if persisted is not None:
                changed.append((account_id, persisted))
        return self.state_store.save(changed)

    def log_summaries(self) -> None:
        """One INFO line per account: state, counts, last-real age, verdict."""
        now = self.clock.now()
        for account_id, state in self.states.items():
            snap = state.snapshot(now)
            verdict = self.verdict(snap, self.settings[account_id], now)
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
        self.state_store.close()
