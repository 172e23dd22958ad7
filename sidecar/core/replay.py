"""Capture replay: recorded events as the event source instead of WhatsApp.

Each record is decoded (the capture adapter uses the neonize class's
``FromString``) and handed to :meth:`Sidecar.handle`, the same entry live
sessions feed. Bad records are counted and logged by line number, never quoted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message as ProtoMessage

from sidecar.core.clock import ReplayClock
from sidecar.core.pipeline import UnknownAccountError
from sidecar.core.service import Sidecar
from sidecar.core.waits import wait_event
from sidecar.domain.own_events import OwnEvent

log = logging.getLogger(__name__)

#: Hand the event loop back this often at ``--speed 0`` so HTTP keeps answering.
YIELD_EVERY = 256
#: Bad lines logged one by one before the rest are only counted.
MAX_LOGGED_ERRORS = 100


class RecordDecodeError(Exception):
    """A record that parsed but whose event does not decode."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class Record(Protocol):
    """One parsed record of a capture (:class:`~sidecar.adapters.capture.CaptureRecord`)."""

    @property
    def line(self) -> int: ...

    @property
    def t(self) -> float: ...

    @property
    def account(self) -> str | None: ...

    @property
    def is_tick(self) -> bool: ...

    def decode(self) -> ProtoMessage | OwnEvent:
        """The event; raises :class:`RecordDecodeError` when it does not decode."""
        ...


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line that is not a record at all, and why (never what it held)."""

    line: int
    reason: str


class ReplayErrors:
    """Capture records that could not be parsed or decoded (process-wide)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def inc(self) -> None:
        with self._lock:
            self.count += 1


@dataclass(frozen=True, slots=True)
class ReplayReport:
    events: int
    ticks: int
    errors: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def summary(self, name: str) -> str:
        return (
            f"replay: {self.events} events from {name} in {self.seconds:.2f} s"
            f" ({self.events_per_second:,.0f} events/s), {self.errors} bad records"
        )


class Replayer:
    def __init__(
        self, sidecar: Sidecar, clock: ReplayClock, errors: ReplayErrors | None = None
    ) -> None:
        self._sidecar = sidecar
        self._clock = clock
        self.errors = errors or ReplayErrors()
        self._errors = 0
        self._last_t: float | None = None
        self._stop = asyncio.Event()

    async def run(
        self, records: Iterable[Record | Unreadable], stop: asyncio.Event | None = None
    ) -> ReplayReport:
        """Replay ``records``; returns early, with what was done, once ``stop`` is set."""
        self._stop = stop or asyncio.Event()
        events = ticks = 0
        started = time.perf_counter()
        # Real messages become durable together, one journal write for those handled
        # between two pauses: nothing is acknowledged in between, and each pause (and
        # the end) comes after they are durable.
        with self._sidecar.durable_together() as durable:
            for seen, item in enumerate(records, start=1):
                if seen % YIELD_EVERY == 0:
                    durable()
                    await asyncio.sleep(0)
                if self._stop.is_set():
                    break
                if isinstance(item, Unreadable):
                    self._bad_record(item.line, item.reason)
                    continue
                delay = self._advance_clock(item)
                if delay > 0:  # at a speed: wait for this record's time
                    durable()
                    await wait_event(self._stop, delay)
                if item.is_tick:
                    ticks += 1
                    # replayed time jumps: judge at every tick, as the live sidecar does every 5 s
                    self._sidecar.evaluate_verdicts()
                elif self._handle(item):
                    events += 1
        self._sidecar.evaluate_verdicts()
        return ReplayReport(events, ticks, self._errors, time.perf_counter() - started)

    def _advance_clock(self, record: Record) -> float:
        """Move the clock to the record; returns how long to wait for it first (at a
        speed), in seconds."""
        if self._last_t is not None and record.t < self._last_t:
            log.warning(
                "capture line %d: 't' goes back in time; the clock stays where it is", record.line
            )
        self._last_t = record.t if self._last_t is None else max(self._last_t, record.t)
        if not self._clock.started:
            self._clock.start(record.t)
        elif self._clock.speed == 0:
            self._clock.advance_to(record.t)
        else:
            return (record.t - self._clock.now()) / self._clock.speed
        return 0.0

    def _handle(self, record: Record) -> bool:
        try:
            event = record.decode()
        except RecordDecodeError as exc:
            self._bad_record(exc.line, exc.reason)
            return False
        assert record.account is not None
        try:
            self._sidecar.handle(record.account, event, record.t)
        except UnknownAccountError:
            self._bad_record(record.line, "'account' is not configured")
            return False
        return True

    def _bad_record(self, line: int, reason: str) -> None:
        self._errors += 1
        self.errors.inc()
        if self._errors <= MAX_LOGGED_ERRORS:
            log.warning("capture line %d skipped: %s", line, reason)
        elif self._errors == MAX_LOGGED_ERRORS + 1:
            log.warning("more bad capture records: counting them without logging each")
