"""The send path's series: how long sends take, attempts a crash left unknown, and the
outbox as last counted (docs/sending.md)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sidecar.core.clock import Clock
from sidecar.core.sender import SEND_BUCKETS, OutboxWorker
from sidecar.domain import outbox
from sidecar.metrics.buckets import cumulative_buckets
from sidecar.metrics.exposition import AccountRow, RowCollector, Sample
from sidecar.metrics.families import (
    OUTBOX_MESSAGES,
    OUTBOX_OLDEST_QUEUED_AGE,
    SEND_DURATION,
    SEND_OUTCOME_UNKNOWN,
)

_NO_SENDS: tuple[Sample, ...] = (
    ((), (tuple(cumulative_buckets(SEND_BUCKETS, [0] * (len(SEND_BUCKETS) + 1))), 0.0)),
)


class SendCollector(RowCollector):
    """Per account. The outbox series come from the worker's last count (a store query
    every :data:`~sidecar.core.sender.COUNT_INTERVAL_S`, never at scrape time), and
    only for accounts this replica holds: two replicas never both report one."""

    families = (SEND_DURATION, SEND_OUTCOME_UNKNOWN, OUTBOX_MESSAGES, OUTBOX_OLDEST_QUEUED_AGE)

    def __init__(self, worker: OutboxWorker, accounts: Sequence[str], clock: Clock) -> None:
        self._worker = worker
        self._accounts = accounts
        self._clock = clock

    def rows(self) -> Iterator[AccountRow]:
        stats, counted = self._worker.stats, self._worker.counted
        now = self._clock.now()
        for account in self._accounts:
            durations = stats.durations.get(account)
            sends = (
                _NO_SENDS
                if durations is None
                else (((), (tuple(cumulative_buckets(SEND_BUCKETS, durations[0])), durations[1])),)
            )
            counts = counted.counts.get(account)
            oldest = counted.oldest_queued.get(account)
            yield (
                account,
                (
                    sends,
                    (((), stats.unknown.get(account, 0)),),
                    ()
                    if counts is None
                    else tuple(((status,), counts.get(status, 0)) for status in outbox.STATUSES),
                    () if oldest is None else (((), max(0.0, now - oldest)),),
                ),
            )
