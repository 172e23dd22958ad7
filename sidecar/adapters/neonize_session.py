"""A live WhatsApp session through neonize: the session port of :mod:`sidecar.core.ports`.

Each connection is a :class:`NeonizeSession`, which runs neonize's blocking
``connect()`` on a thread of its own for as long as the session lives. No
shared thread pool is involved, so a thousand accounts cannot starve each
other. When to connect is the supervisor's business
(:mod:`sidecar.core.supervisor`), not this module's.

Bound: a live session holds two Python threads (ours, waiting in neonize's
``connect()``, and neonize's worker inside the Go call). The Go runtime adds
its own few threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from neonize.client import NewClient
from neonize.events import ConnectedEv, ConnectFailureEv, DisconnectedEv, QREv
from neonize.proto.Neonize_pb2 import ConnectFailureReason, Node
from neonize.utils.jid import build_jid

from sidecar.adapters.session_store import SessionStore
from sidecar.core.pipeline import EVENT_CLASSES

log = logging.getLogger(__name__)

#: neonize raises instead of sending an event when the dial fails; this is that event.
DIAL_FAILED = ConnectFailureEv(
    Reason=ConnectFailureReason.GENERIC, Message="dial failed", Raw=Node(Tag="dial")
)

#: Hands one event to the core, from whichever thread neonize calls back on.
Deliver = Callable[[Any], None]


class NeonizeGate:
    """Serialises what neonize 0.5.2 does to its process-wide client tables.

    neonize's Go side keeps every client in plain Go maps (clients, event
    channels, stop functions) with no lock: two ``Neonize()`` calls starting at
    the same moment, or a ``Stop()`` beside a start, kill the whole process
    with "fatal error: concurrent map writes" (seen here with three accounts
    started at once). A start writes its three entries in its first few
    milliseconds (a whole offline start, fresh database included, took ~10 ms
    here), before it dials; so each start holds the gate until its first
    callback, its return, or ``START_HOLD_S``, whichever comes first. Every
    ``Stop()`` holds it too (:meth:`NeonizeSession._stop_client`). Dials
    themselves still run in parallel.
    """

    #: Ample for the table writes at the start of ``Neonize()`` (~10 ms measured).
    START_HOLD_S = 0.2
    _lock = threading.Lock()

    @classmethod
    def hold(cls) -> Callable[[], None]:
        """Take the gate; returns a release that may be called many times, from any thread."""
        cls._lock.acquire()
        once = threading.Lock()
        released = False

        def release() -> None:
            nonlocal released
            with once:
                if not released:
                    released = True
                    cls._lock.release()

        return release

    @classmethod
    def held(cls) -> threading.Lock:
        """The gate itself, for a ``with`` around a ``Stop()``."""
        return cls._lock


class NeonizeSession:
    """One neonize client: connects on a thread of its own, delivers every event."""

    def __init__(self, account_id: str, store: SessionStore, deliver: Deliver) -> None:
        self._account_id = account_id
        self._store = store
        self._deliver = deliver
        self._client: NewClient | None = None
        self._stopped = threading.Event()
        self._connected = threading.Event()
        self._client_stopped = False
        self._released: Callable[[], None] = lambda: None

    def _on_event(self, _client: Any, event: Any) -> None:
        self._released()
        if isinstance(event, ConnectedEv):
            self._connected.set()
        elif isinstance(event, DisconnectedEv):
            self._connected.clear()
        self._deliver(event)

    def _on_qr(self, _client: Any, data: bytes) -> None:
        self._released()
        # the pipeline holds the code for the re-pair page; the recorder writes it without
        self._deliver(QREv(Codes=[data.decode("utf-8", "replace")]))

    def _connect(self) -> None:
        """Runs on this session's own thread; returns when neonize's Go call returns."""
        release = NeonizeGate.hold()
        self._released = release
        watchdog = threading.Timer(NeonizeGate.START_HOLD_S, release)
        watchdog.daemon = True
        watchdog.start()
        client: NewClient | None = None
        try:
            if self._stopped.is_set():
                return
            # made (owner-only) at every try: a full disk at start-up may have kept it from
            # being made, and whatsmeow would make it open to all
            self._store.prepare()
            client = NewClient(self._store.location)
            for cls in EVENT_CLASSES.values():
                client.event(cls)(self._on_event)
            client.event.qr(self._on_qr)
            self._client = client
            client.connect()
        except Exception as exc:
            if not self._stopped.is_set():
                log.info("account=%s connect failed: %s", self._account_id, type(exc).__name__)
                self._deliver(DIAL_FAILED)
        finally:
            watchdog.cancel()
            release()
            self._stop_client()

    def _stop_client(self) -> None:
        """Stop this session's client once, with neonize's tables to ourselves.

        Once is what matters: neonize names clients by store, so a late second
        ``Stop()`` would hit the account's next session.
        """
        with NeonizeGate.held():
            client = self._client
            if client is None or self._client_stopped:
                return
            self._client_stopped = True
            with contextlib.suppress(Exception):
                client.stop()
            # neonize would otherwise call Stop() again, unserialised, whenever
            # the object is garbage-collected.
            client._stop_finalizer.detach()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def target() -> None:
            try:
                self._connect()
            finally:
                loop.call_soon_threadsafe(_resolve, done)

        threading.Thread(target=target, name=f"wa-{self._account_id}", daemon=True).start()
        await asyncio.shield(done)

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._stopped.is_set() and self._connected.is_set()

    def send_text(self, user: str, text: str) -> None:
        """Send ``text`` to the phone number ``user`` (blocking; call from a worker thread)."""
        client = self._client
        if client is None:
            raise RuntimeError("no client")
        with NeonizeGate.held():  # SendMessage reads neonize's client table
            client.send_message(build_jid(user), text)

    def logout(self) -> None:
        """Log the device out on WhatsApp's side (best effort; blocking)."""
        client = self._client
        if client is not None and self.connected:
            with NeonizeGate.held(), contextlib.suppress(Exception):
                client.logout()

    def pair_phone(self, phone: str) -> str:
        """A phone pairing code for this (unpaired) session (blocking)."""
        client = self._client
        if client is None:
            raise RuntimeError("no client")
        with NeonizeGate.held():
            code: str = client.PairPhone(phone.lstrip("+"), True)
        return code

    def stop(self) -> None:
        """Never blocks the caller: the stop waits for the gate on a thread of its own."""
        self._stopped.set()
        if self._client is not None:
            threading.Thread(
                target=self._stop_client, name=f"wa-stop-{self._account_id}", daemon=True
            ).start()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
