"""Waiting for an event with a timeout, without swallowing a cancellation.

Python 3.11's ``asyncio.wait_for`` returns the awaited result, instead of raising
``CancelledError``, when its task is cancelled in the same turn of the loop as the
awaited event is set (the race CPython 3.12 fixed by rebuilding ``wait_for`` on
``asyncio.timeout``). A loop that waits that way never ends once the race hits it:
the spool writer did, and shutting down waited for it forever (found by
bench/replay_real.py). ``asyncio.timeout`` tells its own timeout from a cancellation.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set (True) or ``timeout`` seconds have passed (False);
    a cancellation is raised, whatever happened at the same time."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
