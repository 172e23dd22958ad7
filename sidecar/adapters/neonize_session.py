"""A live WhatsApp session through neonize: the session port of :mod:`sidecar.core.ports`.

Each connection is a :class:`NeonizeSession`, which runs neonize's blocking
``connect()`` on a thread of its own for as long as the session lives. No
shared thread pool is involved, so a thousand accounts cannot starve each
other. When to connect is the supervisor's business
(:mod:`sidecar.core.supervisor`), not this module's.

Bound: a live session holds two Python threads (ours, waiting in neonize's
``connect()``, and neonize's worker inside the Go call); a starting one also a
timer for at most ``NeonizeGate.START_HOLD_S``. Live sessions are stopped one
after another on one more thread (:class:`Stopper`). The Go runtime adds its
own few threads. How many sessions dial at once is :mod:`sidecar.core.dialing`'s
business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from neonize.client import NewClient
from neonize.events import ConnectedEv, ConnectFailureEv, DisconnectedEv, QREv
from neonize.exc import SendMessageError
from neonize.proto.Neonize_pb2 import ConnectFailureReason, Node
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from neonize.utils.jid import build_jid

from sidecar.adapters.session_store import SessionStore
from sidecar.core.pipeline import EVENT_CLASSES
from sidecar.core.ports import SendRefused
from sidecar.domain.records import text_of

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

    Calls that only *read* the tables (a send looks its client up) may run
    together: they share the gate (:meth:`shared`), so one account's slow send
    never holds up another's; a start or stop waits for the sends under way (a
    Go call cannot be left halfway), and new sends wait behind it.
    """

    #: Ample for the table writes at the start of ``Neonize()`` (~10 ms measured).
    START_HOLD_S = 0.2
    _state = threading.Condition()
    _writing = False
    _readers = 0
    _writers_waiting = 0

    @classmethod
    def hold(cls) -> Callable[[], None]:
        """Take the gate alone; returns a release that may be called many times, from
        any thread."""
        with cls._state:
            cls._writers_waiting += 1
            try:
                while cls._writing or cls._readers:
                    cls._state.wait()
            finally:
                cls._writers_waiting -= 1
            cls._writing = True
        once = threading.Lock()
        released = False

        def release() -> None:
            nonlocal released
            with once:
                if not released:
                    released = True
                    with cls._state:
                        cls._writing = False
                        cls._state.notify_all()

        return release

    @classmethod
    @contextlib.contextmanager
    def held(cls) -> Iterator[None]:
        """The gate alone, around a ``Stop()`` or another call that writes the tables."""
        release = cls.hold()
        try:
            yield
        finally:
            release()

    @classmethod
    @contextlib.contextmanager
    def shared(cls) -> Iterator[None]:
        """The gate beside other readers, around a call that only reads the tables."""
        with cls._state:
            # a waiting start or stop goes first: sends never keep a reconnect waiting
            # longer than the sends already under way
            while cls._writing or cls._writers_waiting:
                cls._state.wait()
            cls._readers += 1
        try:
            yield
        finally:
            with cls._state:
                cls._readers -= 1
                cls._state.notify_all()


class NeonizeSession:
    """One neonize client: connects on a thread of its own, delivers every event."""

    def __init__(self, account_id: str, store: SessionStore, deliver: Deliver) -> None:
        self._account_id = account_id
        self._store = store
        self._deliver = deliver
        self._client: NewClient | None = None
        self._stopped = threading.Event()
        self._connected = threading.Event()
        #: neonize's ``connect()`` has returned: this session's own thread stops the client.
        self._returned = threading.Event()
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
            try:
                client.connect()
            finally:
                self._returned.set()
        except Exception as exc:
            if not self._stopped.is_set():
                # neonize raises when the dial fails (its text may quote the server's)
                log.info(
                    "account=%s cannot reach WhatsApp (%s: dial failed)",
                    self._account_id,
                    type(exc).__name__,
                )
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

    def send_message(self, to_jid: str, text: str) -> str:
        """Send ``text`` as a plain text message (neonize would make a ``str`` an
        extended text and look up every ``@...`` in it); the server's id for it."""
        client = self._client
        if client is None or not self.connected:
            raise SendRefused("not_connected")
        user, _, server = to_jid.rpartition("@")
        try:
            with NeonizeGate.shared():
                response = client.send_message(
                    build_jid(user, server), WAMessage(conversation=text)
                )
        except Exception as exc:
            reason = refusal_reason(exc)
            log.info(
                "account=%s send refused: %s (%s)", self._account_id, reason, type(exc).__name__
            )
            raise SendRefused(reason) from None  # its text may quote the recipient
        message_id = text_of(response.ID)
        if not message_id:
            raise SendRefused("other")
        return message_id

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
        """Never blocks the caller: the stop waits for the gate on the stopper's thread,
        unless ``connect()`` has returned (a failed dial): the session's own thread is
        stopping the client then."""
        self._stopped.set()
        if self._client is not None and not self._returned.is_set():
            Stopper.submit(self._stop_client)


class Stopper:
    """Stops live clients one after another, on one thread. Each ``Stop()`` holds the gate
    alone, so a thread per stop would only have waited for it: SIGTERM with 16 dials
    under way started 16 threads. Started at the first stop; it lives on, waiting."""

    _queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    _thread: threading.Thread | None = None
    _lock = threading.Lock()

    @classmethod
    def submit(cls, stop: Callable[[], None]) -> None:
        cls._queue.put(stop)
        with cls._lock:
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(target=cls._run, name="wa-stopper", daemon=True)
                cls._thread.start()

    @classmethod
    def _run(cls) -> None:
        while True:
            stop = cls._queue.get()
            try:
                stop()
            except Exception as exc:  # one client's failure must not end the others' stops
                log.error("stopping a neonize client failed: %s", type(exc).__name__)


def refusal_reason(exc: BaseException) -> str:
    """The counted reason for an error whatsmeow gave a send (its text, looked at here
    only, names no reason in a field of its own)."""
    text = str(exc).lower()
    if "not connected" in text or "websocket" in text:
        return "not_connected"
    if "timed out" in text or "timeout" in text or "deadline" in text:
        return "timeout"
    if "429" in text or "rate" in text:
        return "rate_limited"
    return "rejected" if isinstance(exc, SendMessageError) else "other"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
