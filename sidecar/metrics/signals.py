"""The series of early signs of trouble (:mod:`sidecar.domain.signals`): refused
connections by reason, and the end of a temporary ban while one is in force."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sidecar.core.service import Sidecar
from sidecar.metrics.exposition import AccountRow, RowCollector, Sample
from sidecar.metrics.families import CONNECT_FAILURES, TEMPORARY_BAN_EXPIRY

_NONE: tuple[Sample, ...] = ()


class SignalsCollector(RowCollector):
    """Only accounts that have something to say get a row: most never see a refused
    connection, and ten thousand empty rows would cost every scrape."""

    families = (CONNECT_FAILURES, TEMPORARY_BAN_EXPIRY)

    def __init__(self, sidecar: Sidecar) -> None:
        self._accounts = sidecar.accounts()
        #: per account: the version its samples were read at, and the samples
        self._known: dict[str, tuple[int, Sequence[Sequence[Sample]]]] = {}

    def rows(self) -> Iterator[AccountRow]:
        known = self._known
        for settings, state in self._accounts:
            account = settings.account_id
            entry = known.get(account)
            if entry is None or entry[0] != state.version:
                version, failures, ban = state.signals_view()
                entry = known[account] = (
                    version,
                    (
                        tuple(((r,), float(n)) for r, n in sorted(failures.items())),
                        _NONE if ban is None else (((), ban.expires_at),),
                    ),
                )
            if entry[1][0] or entry[1][1]:
                yield account, entry[1]
