"""What a piece of async work costs the event loop it runs on: wall time, the loop
thread's CPU, how late a ticker beside it wakes, and how long the loop thread waited
for a CPU the machine gave to something else.

The last figure tells the loop's own work from the machine's: on a 2-core machine a
busy Firestore emulator takes the loop's core too, and a ticker cannot tell that
from a callback that ran long. :func:`apart` keeps the emulator off the
benchmark's core for that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

#: The ticker's sleep: short enough to see a few-millisecond step, long enough that
#: the ticker itself costs the loop little (~200 wake-ups a second).
TICK_S = 0.005


class LagMeter:
    """Sleeps :data:`TICK_S` on the loop over and over; how late each wake-up came is
    what any other task on the loop waits behind the measured work."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            self.lags.append(time.perf_counter() - before - TICK_S)

    def start(self) -> None:
        self.lags = []
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> list[float]:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.lags or [0.0]


def cpu_wait_s() -> float:
    """Seconds this thread has been ready to run with no CPU to run on (Linux's
    schedstat; 0 where there is none)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass(frozen=True)
class Timed:
    """One timed piece of work: wall seconds, the loop thread's CPU seconds, the whole
    process's CPU seconds, the loop thread's seconds waiting for a CPU, the ticker's
    lags (empty when none ran) and what the checks afterwards found wrong."""

    seconds: float
    loop_cpu_s: float
    process_cpu_s: float
    cpu_wait_s: float
    lags: list[float]
    problems: list[str] = field(default_factory=list)

    def rate(self, count: int) -> float:
        return count / self.seconds


async def timed(work: Callable[[], Awaitable[None]], *, lag: bool) -> Timed:
    """``work()`` timed on this loop (call it on the loop), with the lag ticker beside
    it when ``lag``."""
    meter = LagMeter()
    if lag:
        meter.start()
    cpu, process, waited = time.thread_time(), time.process_time(), cpu_wait_s()
    started = time.perf_counter()
    await work()
    seconds = time.perf_counter() - started
    loop_cpu, process_cpu = time.thread_time() - cpu, time.process_time() - process
    waited = cpu_wait_s() - waited
    lags = await meter.stop() if lag else []
    return Timed(seconds, loop_cpu, process_cpu, waited, lags)


@contextlib.contextmanager
def apart(server: contextlib.AbstractContextManager[T], share: bool) -> Iterator[tuple[T, str]]:
    """Enter ``server`` (which starts a server process) on CPUs of its own, and keep
    this process (and every thread it starts afterwards) on another, so that the
    server's work never takes the measured loop's CPU. With ``share``, or fewer than
    two CPUs, everything shares them as usual. Yields the server's value and a line
    saying which."""
    cpus = sorted(os.sched_getaffinity(0))
    with contextlib.ExitStack() as stack:
        if share or len(cpus) < 2:
            yield stack.enter_context(server), f"CPUs: {len(cpus)}, shared"
            return
        ours, theirs = cpus[0], set(cpus[1:])
        os.sched_setaffinity(0, theirs)  # what the server process inherits
        try:
            value = stack.enter_context(server)
        finally:
            os.sched_setaffinity(0, {ours})
        yield value, f"CPUs: this process on {ours}, the emulator on {sorted(theirs)}"
