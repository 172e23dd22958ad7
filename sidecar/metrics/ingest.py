"""The ingest endpoint's series: what each ingest account's gateway posted, what was
refused, and when it last posted (docs/ingest.md, "Watching the watcher")."""

from __future__ import annotations

from collections.abc import Iterator

from sidecar.core.ingest import OUTCOMES, REFUSALS, Ingest
from sidecar.metrics.exposition import AccountRow, RowCollector
from sidecar.metrics.families import (
    INGEST_EVENTS,
    INGEST_LAST_REQUEST,
    INGEST_REQUESTS_REFUSED,
)


class IngestCollector(RowCollector):
    """Per ingest account; every outcome and reason from the start (at 0), so a rate or
    an increase never misses the first one."""

    families = (INGEST_EVENTS, INGEST_REQUESTS_REFUSED, INGEST_LAST_REQUEST)

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest

    def rows(self) -> Iterator[AccountRow]:
        for account in sorted(self._ingest.accounts):
            stats = self._ingest.stats[account]
            yield (
                account,
                (
                    tuple(((outcome,), stats.events[outcome]) for outcome in OUTCOMES),
                    tuple(((reason,), stats.refused[reason]) for reason in REFUSALS),
                    (((), stats.last_request_at),),
                ),
            )
