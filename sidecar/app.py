"""Lifecycle: serve what :mod:`sidecar.compose` built, until a signal or the end of
the event source, then close every part in order.

``run`` and ``replay`` differ only in their event source; everything else
(HTTP, metrics, saved state, periodic summaries) is the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from sidecar.adapters.http import READY, HardenedAppRunner
from sidecar.compose import (
    Assembly,
    EventSource,
    assemble,
    build_app,
    build_authenticator,
    build_repairs,
    live_source,
    replay_control,
    replay_source,
)
from sidecar.config import LoadedConfig
from sidecar.core.clock import ReplayClock, SystemClock
from sidecar.core.failures import Failures
from sidecar.core.ports import AccountControl

log = logging.getLogger(__name__)

#: How often changed account state is written to SQLite.
STATE_FLUSH_INTERVAL_S = 1.0
#: How often every account is judged, so verdict changes land in its history on time.
VERDICT_INTERVAL_S = 5.0
#: How often each account's one-line summary is logged.
SUMMARY_INTERVAL_S = 60.0

#: How long a source may take to wind down after ``stop`` is set.
SOURCE_STOP_GRACE_S = 8.0


def freeze_startup_objects() -> None:
    """Move everything alive after start-up out of the garbage collector's sight.

    neonize loads hundreds of thousands of long-lived protobuf objects; a full
    collection that walks them all during a scrape stalls the event loop for
    tens of milliseconds (bench/scrape.py: 65 ms -> 15 ms at 1,000
    accounts). New objects are still collected as usual.
    """
    gc.collect()
    gc.freeze()


def periodic(
    name: str, interval: float, action: Callable[[], object], *, in_thread: bool = False
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A background task for ``cleanup_ctx``: started with the app, cancelled and
    awaited at cleanup."""

    # one line when it starts failing (the error's kind: texts can quote values), at most
    # one a minute while it goes on (a full disk fails the state flush every second)
    failures = Failures(log, f"background task {name!r}", "; it runs again", level=logging.ERROR)

    async def loop_forever() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if in_thread:
                    await asyncio.get_running_loop().run_in_executor(None, action)
                else:
                    action()
            except Exception as exc:
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                failures.failed(exc, f"{frame.name}@{Path(frame.filename).name}:{frame.lineno}")
                log.debug("background task %r failure detail", name, exc_info=exc)
            else:
                failures.succeeded()

    async def context(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(loop_forever(), name=name)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


async def serve(
    assembly: Assembly,
    source: EventSource,
    control: AccountControl,
    *,
    access_log: bool = False,
) -> None:
    """Serve HTTP while ``source`` feeds events; stop on SIGTERM/SIGINT or when it ends."""
    sidecar = assembly.sidecar
    auth = build_authenticator(assembly.loaded)
    repairs = build_repairs(assembly, control)
    app = build_app(assembly, auth=auth, repairs=repairs)
    app.cleanup_ctx.append(
        periodic("state-flush", STATE_FLUSH_INTERVAL_S, sidecar.flush_state, in_thread=True)
    )
    app.cleanup_ctx.append(periodic("summary", SUMMARY_INTERVAL_S, sidecar.log_summaries))
    app.cleanup_ctx.append(periodic("verdicts", VERDICT_INTERVAL_S, sidecar.evaluate_verdicts))
    if assembly.storage is not None:
        writer = assembly.storage.running

        async def writer_context(_app: web.Application) -> AsyncIterator[None]:
            async with writer():
                yield

        app.cleanup_ctx.append(writer_context)
    runner = HardenedAppRunner(
        app,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        shutdown_timeout=5.0,  # an open pair-event stream ends within one poll
    )
    await runner.setup()
    freeze_startup_objects()
    listen = assembly.loaded.config.http.listen
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, listen.host, listen.port)
        await site.start()
        app[READY].set()
        for address in runner.addresses:
            log.info("listening on %s", _format_address(address))
        if not auth.configured:
            log.warning("no auth configured: the /api/ endpoints refuse every request")
        for weakness in auth.weaknesses():
            log.warning("auth: %s", weakness)
        source_task = asyncio.create_task(source(stop), name="event-source")
        stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
        await asyncio.wait({source_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        stop_task.cancel()
        # Sources watch `stop` and wind down by themselves (stopping clients,
        # logging final state); only one that overstays is cancelled.
        done, _ = await asyncio.wait({source_task}, timeout=SOURCE_STOP_GRACE_S)
        if not done:
            log.warning(
                "the event source did not stop within %.0f s; cancelling it", SOURCE_STOP_GRACE_S
            )
            source_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await source_task
        else:
            source_task.result()  # re-raises what made the source fail
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        app[READY].clear()
        await repairs.close()
        await runner.cleanup()
        await _close(assembly)


async def _close(assembly: Assembly) -> None:
    """Save state and close every part; a step that fails (a full disk) does not keep
    the others from running. The first failure is raised at the end (exit code 1)."""
    failed: BaseException | None = None
    steps: list[tuple[str, Callable[[], object]]] = [
        ("saving account state", assembly.sidecar.flush_state)
    ]
    if assembly.sending is not None:
        steps.append(("closing the outbox and the send journal", assembly.sending.worker.close))
    if assembly.storage is not None:
        steps.append(("closing the store and the spool", assembly.storage.close))
    steps.append(("closing the state database", assembly.close))
    for what, step in steps:
        try:
            result = step()
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:
            log.error("on the way out, %s failed: %s", what, exc)
            failed = failed or exc
    if failed is not None:
        raise failed


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"
    return str(address)


async def replay(loaded: LoadedConfig, capture: Path, speed: float, linger: float) -> None:
    clock = ReplayClock(speed)
    assembly = assemble(loaded, clock)
    await serve(assembly, replay_source(assembly, capture, clock, linger), replay_control())


async def run(
    loaded: LoadedConfig, record: Path | None = None, *, blank_record_text: bool = False
) -> None:
    assembly = assemble(loaded, SystemClock())
    try:
        source, control = live_source(assembly, record, blank_record_text=blank_record_text)
    except BaseException:
        await _close(assembly)
        raise
    await serve(assembly, source, control)
