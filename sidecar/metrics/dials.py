"""The dial slots' series: how many accounts dial now, how many wait, and the cap."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sidecar.core.dialing import DialSlots
from sidecar.metrics.collectors import FamiliesCollector
from sidecar.metrics.exposition import Family
from sidecar.metrics.families import DIAL_SLOTS, DIALS_IN_PROGRESS, DIALS_WAITING


class DialCollector(FamiliesCollector):
    """Read at each scrape; a queue that stays long says the cap is too low for the
    accounts (or WhatsApp answers slowly)."""

    families = (DIALS_IN_PROGRESS, DIALS_WAITING, DIAL_SLOTS)

    def __init__(self, dials: DialSlots) -> None:
        self._dials = dials

    def samples(self) -> Iterator[tuple[Family, tuple[str, ...], Any]]:
        yield DIALS_IN_PROGRESS, (), self._dials.in_progress
        yield DIALS_WAITING, (), self._dials.waiting
        yield DIAL_SLOTS, (), self._dials.limit
