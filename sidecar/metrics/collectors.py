"""The collectors of everything but the account series: the store writer, the spool,
re-pairs, leases, HTTP auth and the process itself.

Each builds fresh families from :mod:`sidecar.metrics.families` at every
scrape and describes them up front, so a name declared twice fails when the
collector is registered, not in Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from sidecar.core.leases import LeaseKeeper
from sidecar.core.repair import REMEDIATION_STEP_NAMES, Repairs
from sidecar.core.replay import ReplayErrors
from sidecar.core.service import Sidecar
from sidecar.core.spool_writer import LATENCY_BUCKETS
from sidecar.core.storage import Storage
from sidecar.domain.authorship import CONFLICT_OUTCOMES
from sidecar.metrics.buckets import cumulative_buckets
from sidecar.metrics.exposition import AccountRow, Family, RowCollector, Sample
from sidecar.metrics.families import (
    AUDIT_WRITE_ERRORS,
    BUILD_INFO,
    HTTP_AUTH_FAILURES,
    HTTP_AUTH_RATE_LIMITED,
    LEASE_HELD,
    LEASES_LOST,
    LINKS_INFO,
    MESSAGE_CONFLICTS,
    NEEDS_REPAIR,
    REMEDIATION_STEPS,
    REPLAY_ERRORS,
    SPOOL_MESSAGES,
    SPOOL_OLDEST,
    SPOOL_OLDEST_AGE,
    SPOOL_WRITE_ERRORS,
    STORE_WRITE_DURATION,
    STORE_WRITE_ERRORS,
    STORE_WRITES,
)


class FamiliesCollector(Collector):
    """A collector of plain (not per-account-row) families: ``describe`` comes from
    ``families``, ``collect`` from :meth:`samples`, one fresh family each scrape."""

    families: tuple[Family, ...] = ()

    def describe(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.metric()

    def samples(self) -> Iterator[tuple[Family, tuple[str, ...], Any]]:
        """``(family, label values, value)``; a histogram's value is (buckets, sum)."""
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        metrics: dict[str, Any] = {family.name: family.metric() for family in self.families}
        for family, labels, value in self.samples():
            if family.kind == "histogram":
                buckets, total = value
                metrics[family.name].add_metric(labels, buckets, total)
            else:
                metrics[family.name].add_metric(labels, value)
        yield from metrics.values()


class ProcessCollector(FamiliesCollector):
    """The sidecar's own series: capture records it could not read, its version, and the
    addresses alerts link to (the rules read them, so they need no regenerating)."""

    families = (REPLAY_ERRORS, BUILD_INFO, LINKS_INFO)

    def __init__(
        self, replay_errors: ReplayErrors, version: str, links: tuple[str, str] = ("", "")
    ) -> None:
        self._replay_errors = replay_errors
        self._version = version
        self._links = links

    def samples(self) -> Iterator[tuple[Family, tuple[str, ...], Any]]:
        yield REPLAY_ERRORS, (), self._replay_errors.count
        yield BUILD_INFO, (self._version,), 1.0
        yield LINKS_INFO, self._links, 1.0


class StoreCollector(FamiliesCollector):
    """What the writer did: documents written, failed batches, batch latency."""

    families = (STORE_WRITES, STORE_WRITE_ERRORS, STORE_WRITE_DURATION)

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def samples(self) -> Iterator[tuple[Family, tuple[str, ...], Any]]:
        backend = (self._storage.store.backend,)
        writes, errors, buckets, latency_sum = self._storage.stats.snapshot()
        yield STORE_WRITES, backend, writes
        yield STORE_WRITE_ERRORS, backend, errors
        yield (
            STORE_WRITE_DURATION,
            backend,
            (cumulative_buckets(LATENCY_BUCKETS, buckets), latency_sum),
        )


class AuthCounts(Protocol):
    """What the HTTP side's failed-token limiter counts (:class:`FailureLimiter`)."""

    @property
    def failed(self) -> int: ...

    @property
    def refused(self) -> Mapping[str, int]: ...


#: The budgets a token attempt can be refused by (``FailureLimiter``'s names).
AUTH_BUDGETS = ("address", "global")


class LimiterCollector(FamiliesCollector):
    """Process-wide counters; the address is never a label, only which budget refused."""

    families = (HTTP_AUTH_FAILURES, HTTP_AUTH_RATE_LIMITED)

    def __init__(self, limiter: AuthCounts) -> None:
        self._limiter = limiter

    def samples(self) -> Iterator[tuple[Family, tuple[str, ...], Any]]:
        yield HTTP_AUTH_FAILURES, (), self._limiter.failed
        for budget in AUTH_BUDGETS:
            yield HTTP_AUTH_RATE_LIMITED, (budget,), self._limiter.refused.get(budget, 0)


class LeaseCollector(FamiliesCollector):
    """Which accounts this replica holds, and the leases it lost."""

    families = (LEASE_HELD, LEASES_LOST)

    def __init__(self, keeper: LeaseKeeper, accounts: Sequence[str]) -> None:
        self._keeper = keeper
        self._accounts = accounts

    def samples(self) -> Iterator[tuple[Family, tuple[str, ...], Any]]:
        holding = self._keeper.holding()
        for account in self._accounts:
            yield LEASE_HELD, (account,), 1.0 if account in holding else 0.0
        yield LEASES_LOST, (), self._keeper.lost


_NO_ERRORS: tuple[Sample, ...] = (((), 0),)
_EMPTY_SPOOL: tuple[tuple[Sample, ...], ...] = ((((), 0),), (), (), _NO_ERRORS)


class SpoolCollector(RowCollector):
    """Each account's spool backlog, how old its oldest message is, and the messages
    the spool could not take."""

    families = (SPOOL_MESSAGES, SPOOL_OLDEST, SPOOL_OLDEST_AGE, SPOOL_WRITE_ERRORS)

    def __init__(self, storage: Storage, accounts: Sequence[str]) -> None:
        self._storage = storage
        self._accounts = accounts

    def rows(self) -> Iterator[AccountRow]:
        storage = self._storage
        backlog = storage.backlog()
        any_lost = bool(storage.stats.spool_rejected or storage.spool.dropped)
        now = storage.spool.now()
        for account in self._accounts:
            entry = backlog.get(account)
            lost = storage.write_errors(account) if any_lost else 0
            errors = (((), lost),) if lost else _NO_ERRORS
            if entry is None:
                yield account, (_EMPTY_SPOOL if lost == 0 else (*_EMPTY_SPOOL[:3], errors))
                continue
            oldest = entry.oldest_enqueued_at
            yield (
                account,
                (
                    (((), entry.messages),),
                    () if oldest is None else (((), oldest),),
                    () if oldest is None else (((), max(0.0, now - oldest)),),
                    errors,
                ),
            )


class ConflictCollector(RowCollector):
    """Message operations per account the store did not apply as asked, by outcome."""

    families = (MESSAGE_CONFLICTS,)

    def __init__(self, storage: Storage, accounts: Sequence[str]) -> None:
        self._storage = storage
        self._accounts = accounts

    def rows(self) -> Iterator[AccountRow]:
        counts = dict(self._storage.stats.conflicts)
        for account in self._accounts:
            yield (
                account,
                (
                    tuple(
                        ((outcome,), counts.get((account, outcome), 0))
                        for outcome in CONFLICT_OUTCOMES
                    ),
                ),
            )


class RepairCollector(RowCollector):
    """Re-pairs and remediation steps per account, and whether a person must re-pair."""

    families = (REMEDIATION_STEPS, NEEDS_REPAIR)

    def __init__(self, repairs: Repairs, sidecar: Sidecar) -> None:
        self._repairs = repairs
        self._sidecar = sidecar

    def rows(self) -> Iterator[AccountRow]:
        counts = dict(self._repairs.steps)
        for account_id in self._sidecar.account_ids:
            steps = tuple(
                ((step,), counts.get((account_id, step), 0)) for step in REMEDIATION_STEP_NAMES
            )
            needs = 1.0 if self._sidecar.needs_repair(account_id) else 0.0
            yield account_id, (steps, (((), needs),))


class AuditCollector(FamiliesCollector):
    """Audit records the re-pair side could not write."""

    families = (AUDIT_WRITE_ERRORS,)

    def __init__(self, repairs: Repairs) -> None:
        self._repairs = repairs

    def samples(self) -> Iterator[tuple[Family, tuple[str, ...], Any]]:
        yield AUDIT_WRITE_ERRORS, (), self._repairs.audit_errors
