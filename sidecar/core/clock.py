"""The sidecar's sense of "now": wall time live, the capture's time in replay.

Ages, verdicts and the health JSON all read the same clock, so a replayed
capture gives the answers the live run gave at that moment.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ReplayClock:
    """Capture time. ``speed == 0``: the ``t`` of the last record, standing still
    after it. ``speed > 0``: runs ``speed`` times real time from the first record.
    """

    def __init__(self, speed: float, start: float | None = None) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.speed = speed
        self._current = time.time() if start is None else start
        self._anchor_capture = self._current
        self._anchor_mono = time.monotonic()
        self._started = False

    def start(self, capture_time: float) -> None:
        """Anchor the clock at the first record's time."""
        self._current = self._anchor_capture = capture_time
        self._anchor_mono = time.monotonic()
        self._started = True

    @property
    def started(self) -> bool:
        return self._started

    def advance_to(self, capture_time: float) -> None:
        """At speed 0, make ``capture_time`` the present (time never runs backwards)."""
        if not self._started:
            self.start(capture_time)
        elif capture_time > self._current:
            self._current = capture_time

    def now(self) -> float:
        if self.speed == 0 or not self._started:
            return self._current
        return self._anchor_capture + (time.monotonic() - self._anchor_mono) * self.speed
