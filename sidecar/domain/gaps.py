"""How busy an account usually is at each hour of the day, to tell quiet from deaf.

A dentist's number is silent every night; a shop's is busy all afternoon.
Each account counts its real messages per hour of the day (in its own time
zone) and how many times each hour has passed since it was first seen. A
silence is abnormal only when the account would normally have received
several real messages in it: with the hourly rates as a Poisson model, when
the expected count reaches ``EXPECTED_MESSAGES`` (no message at all then
has a probability under 2 %). Silence across the night, when the account
never gets messages, costs nothing.
"""

from __future__ import annotations

import math
import struct
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

HOURS = 24
#: Expected real messages in a silence before it counts as abnormal (P(none) = e^-4 < 2 %).
EXPECTED_MESSAGES = 4.0
#: History needed before the model speaks: this many messages over this many days.
MIN_MESSAGES = 30
MIN_DAYS = 3.0
#: The longest silence the model will ever call normal.
MAX_SILENCE_S = 7 * 86400.0
_PACK = struct.Struct(f"<d{HOURS}I")


class GapModel:
    """Hourly real-message rates of one account (persisted across restarts)."""

    __slots__ = ("_counts", "_dirty", "_first_seen", "_zone")

    def __init__(self, timezone: str) -> None:
        self._zone = ZoneInfo(timezone)
        self._counts = [0] * HOURS
        self._first_seen: float | None = None
        self._dirty = False

    def record(self, at: float) -> None:
        """A real message arrived at ``at``."""
        if self._first_seen is None or at < self._first_seen:
            self._first_seen = at
        self._counts[datetime.fromtimestamp(at, self._zone).hour] += 1
        self._dirty = True

    def ready(self, now: float) -> bool:
        return (
            self._first_seen is not None
            and sum(self._counts) >= MIN_MESSAGES
            and now - self._first_seen >= MIN_DAYS * 86400
        )

    def hourly_rate(self, hour: int, now: float) -> float:
        """Real messages per second usually received during ``hour``."""
        assert self._first_seen is not None
        days = max(1.0, (now - self._first_seen) / 86400)
        return self._counts[hour] / (days * 3600)

    def abnormal_after(self, start: float, now: float) -> float | None:
        """Seconds after ``start`` at which a silence becomes abnormal (None: no model yet)."""
        if not self.ready(now):
            return None
        expected = 0.0
        moment = datetime.fromtimestamp(start, self._zone)
        elapsed = 0.0
        while elapsed < MAX_SILENCE_S:
            next_hour = (moment + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
            span = (next_hour - moment).total_seconds()
            rate = self.hourly_rate(moment.hour, now)
            if rate > 0 and expected + rate * span >= EXPECTED_MESSAGES:
                return elapsed + (EXPECTED_MESSAGES - expected) / rate
            expected += rate * span
            elapsed += span
            moment = next_hour
        return MAX_SILENCE_S

    def expected_messages(self, start: float, end: float, now: float) -> float:
        """How many real messages the account would usually receive between two instants."""
        if not self.ready(now):
            return math.inf
        expected = 0.0
        moment = datetime.fromtimestamp(start, self._zone)
        stop = datetime.fromtimestamp(end, self._zone)
        while moment < stop:
            next_hour = min(
                stop, (moment + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
            )
            expected += self.hourly_rate(moment.hour, now) * (next_hour - moment).total_seconds()
            moment = next_hour
        return expected

    # -- persistence -------------------------------------------------------------

    def take_dirty(self) -> dict[int, bytes]:
        if not self._dirty:
            return {}
        self._dirty = False
        return {0: _PACK.pack(self._first_seen or 0.0, *self._counts)}

    def load(self, blobs: dict[int, bytes]) -> None:
        """Add what was saved to what was learned since start-up (nothing, unless the
        saved state could only be read late: a full disk at start-up)."""
        blob = blobs.get(0)
        if blob is None or len(blob) != _PACK.size:
            return
        first_seen, *counts = _PACK.unpack(blob)
        if any(self._counts):
            self._dirty = True  # the sum is new: it is saved next time
        if first_seen and (self._first_seen is None or first_seen < self._first_seen):
            self._first_seen = first_seen
        self._counts = [mine + saved for mine, saved in zip(self._counts, counts, strict=True)]
