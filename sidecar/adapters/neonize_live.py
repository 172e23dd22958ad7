"""Live WhatsApp sessions through neonize: the event source of ``wa-sidecar run``.

One :class:`AccountSupervisor` (an asyncio task) per account decides when to
connect; each connection is a :class:`NeonizeSession`, which runs neonize's
blocking ``connect()`` on a thread of its own for as long as the session
lives. No shared thread pool is involved, so a thousand accounts cannot
starve each other, and an account that is backing off or parked holds no
thread at all.

Bound: a live session holds two Python threads (ours, waiting in neonize's
``connect()``, and neonize's worker inside the Go call); a backing-off or
parked account holds none. The Go runtime adds its own few threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from neonize.client import NewClient
from neonize.events import ConnectedEv, ConnectFailureEv, DisconnectedEv, MessageEv, QREv
from neonize.proto.Neonize_pb2 import ConnectFailureReason, Node
from neonize.utils.jid import build_jid

from sidecar.adapters.capture import CaptureWriter, blank_text
from sidecar.adapters.sqlite_files import private_dir
from sidecar.clock import Clock
from sidecar.domain.account import ProbeSettings, Status, StatusChange
from sidecar.domain.probes import ProbeSent, probe_id_of, probe_text
from sidecar.domain.supervision import Backoff, Decision, decide
from sidecar.pipeline import EVENT_CLASSES
from sidecar.service import Sidecar

log = logging.getLogger(__name__)

#: neonize raises instead of sending an event when the dial fails; this is that event.
DIAL_FAILED = ConnectFailureEv(
    Reason=ConnectFailureReason.GENERIC, Message="dial failed", Raw=Node(Tag="dial")
)
#: A session that stayed up this long earns a fresh backoff schedule.
STABLE_SESSION_S = 60.0
#: How often a parked account looks for a newly paired device, or a busy lock.
PAIRING_POLL_S = 5.0
#: Status changes after which the supervisor, not whatsmeow, decides what next.
_END_SESSION_ON = frozenset(
    {
        Status.DISCONNECTED,
        Status.LOGGED_OUT,
        Status.REPLACED,
        Status.BANNED,
        Status.OUTDATED,
        Status.QR_PENDING,
    }
)


# -- the session store ------------------------------------------------------


@dataclass(frozen=True)
class SessionStore:
    """Where one account's linked-device keys live: a SQLite file or a Postgres URL."""

    account_id: str
    location: str
    sqlite_path: Path | None

    @classmethod
    def for_account(
        cls, state_dir: Path, account_id: str, postgres_url: str | None
    ) -> SessionStore:
        if postgres_url:
            return cls(account_id, postgres_url, None)
        path = state_dir / "sessions" / f"{account_id}.sqlite3"
        return cls(account_id, str(path), path)

    def prepare(self) -> None:
        """Create the SQLite file owner-only before whatsmeow opens it."""
        if self.sqlite_path is None:
            return
        private_dir(self.sqlite_path.parent)
        fd = os.open(self.sqlite_path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(self.sqlite_path, 0o600)

    def device_id(self) -> str | None:
        """The paired device's JID (kept in memory only), or None when unpaired or unknown."""
        if self.sqlite_path is None or not self.sqlite_path.exists():
            return None
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=1)
            ) as db:
                row = db.execute("SELECT jid FROM whatsmeow_device LIMIT 1").fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else str(row[0])


class AccountLock:
    """One process at a time per account: two connections to the same device make
    WhatsApp answer StreamReplaced and both sessions suffer."""

    def __init__(self, state_dir: Path, account_id: str) -> None:
        self.path = state_dir / "sessions" / f"{account_id}.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# -- recording ----------------------------------------------------------------


class Recorder:
    """Writes live events in the capture format. QR codes are never written;
    with ``blank_text`` neither is anything a person wrote."""

    def __init__(self, path: Path, *, blank_text: bool = False) -> None:
        self._writer = CaptureWriter(path)
        self._blank = blank_text
        self._lock = threading.Lock()

    def write(self, t: float, account: str, event: Any) -> None:
        if isinstance(event, QREv):
            event = QREv()
        elif self._blank and not (isinstance(event, MessageEv) and probe_id_of(event.Message)):
            event = blank_text(event)  # probes keep their marker: replay must see them
        with self._lock:
            self._writer.write(t, account, event)
            self._writer.flush()

    def close(self) -> None:
        with self._lock:
            self._writer.close()


# -- one connection -------------------------------------------------------------


class Session(Protocol):
    """One connection attempt and, if it succeeds, the session that follows."""

    async def run(self) -> None:
        """Return when the connection is over, for whatever reason."""
        ...

    def stop(self) -> None:
        """End the connection; safe from any thread, and more than once."""
        ...


SessionFactory = Callable[[], Session]
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


# -- the supervisor -------------------------------------------------------------


class AccountSupervisor:
    """Connects one account, reconnects it with backoff, parks it where a person must act."""

    def __init__(
        self,
        account_id: str,
        sidecar: Sidecar,
        session_factory: SessionFactory,
        *,
        backoff: Backoff | None = None,
        lock: AccountLock | None = None,
        device_id: Callable[[], str | None] = lambda: None,
        poll_s: float = PAIRING_POLL_S,
    ) -> None:
        self.account_id = account_id
        self._sidecar = sidecar
        self._state = sidecar.states[account_id]
        self._factory = session_factory
        self.backoff = backoff or Backoff()
        self._lock = lock
        self._device_id = device_id
        self._poll_s = poll_s
        self._session: Session | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        #: A re-pair was asked for: QR codes are wanted, not a reason to hang up.
        self.pairing = False
        self.decisions: list[Decision] = []

    def on_status_change(self, change: StatusChange) -> None:
        """Called from whichever thread delivered the event: end the session where
        the supervisor, not whatsmeow, should decide what happens next."""
        if change.account_id != self.account_id:
            return
        if self.pairing and change.new is Status.CONNECTING:
            self.pairing = False  # paired: from here on, business as usual
        if change.new not in _END_SESSION_ON or (self.pairing and change.new is Status.QR_PENDING):
            return
        session, loop = self._session, self._loop
        if session is not None and loop is not None:
            loop.call_soon_threadsafe(session.stop)

    @property
    def session(self) -> Session | None:
        return self._session

    def stop_session(self) -> None:
        if self._session is not None:
            self._session.stop()

    def wake(self) -> None:
        """Cut short a backoff or a wait for pairing (loop thread only)."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        while not stopping.is_set():
            if self._lock is not None and not await self._take_lock(stopping):
                break
            started = time.monotonic()
            try:
                self._session = self._factory()
                await self._session.run()
            finally:
                self._session = None
                if self._lock is not None:
                    self._lock.release()
            if time.monotonic() - started >= STABLE_SESSION_S:
                self.backoff.reset()
            decision = decide(self._state.snapshot().status, stopping=stopping.is_set())
            self.decisions.append(decision)
            if decision is Decision.STOP:
                break
            if decision is Decision.PARK:
                log.warning(
                    "account=%s is %s: not reconnecting; a person has to act (see README)",
                    self.account_id,
                    self._state.snapshot().status,
                )
                await stopping.wait()
                break
            if self.pairing and not stopping.is_set():
                continue  # a re-pair: connect again at once, for a fresh QR
            if decision is Decision.AWAIT_PAIRING:
                if not await self._await_new_device(stopping):
                    break
                self.backoff.reset()
                continue
            if await self._pause(stopping, self.backoff.next_delay()):
                break

    async def _pause(self, stopping: asyncio.Event, seconds: float) -> bool:
        """Wait ``seconds``, or less when woken; True when stopping."""
        self._wake.clear()
        waits = {asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(self._wake.wait())}
        _, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return stopping.is_set()

    async def _take_lock(self, stopping: asyncio.Event) -> bool:
        assert self._lock is not None
        warned = False
        while not self._lock.acquire():
            if not warned:
                log.warning(
                    "account=%s is held by another wa-sidecar process (pid %s); waiting",
                    self.account_id,
                    self._lock.holder(),
                )
                warned = True
            if await _sleep_unless(stopping, self._poll_s):
                return False
        return True

    async def _await_new_device(self, stopping: asyncio.Event) -> bool:
        """Park until a device other than the one that just failed is paired."""
        loop = asyncio.get_running_loop()
        old = await loop.run_in_executor(None, self._device_id)
        log.info(
            "account=%s needs pairing: run `wa-sidecar pair %s --config FILE`",
            self.account_id,
            self.account_id,
        )
        while True:
            if await self._pause(stopping, self._poll_s):
                return False
            if self.pairing:
                return True
            current = await loop.run_in_executor(None, self._device_id)
            if current is not None and current != old:
                log.info("account=%s has a newly paired device; connecting", self.account_id)
                return True


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early on stop. True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    return stopping.is_set()


# -- control for the re-pair page and the webhook -----------------------------------


class LiveControl:
    """Acts on the live sessions for :class:`sidecar.repair.Repairs`."""

    def __init__(self) -> None:
        self.supervisors: dict[str, AccountSupervisor] = {}
        self.stores: dict[str, SessionStore] = {}

    async def reconnect(self, account_id: str) -> None:
        supervisor = self.supervisors[account_id]
        supervisor.backoff.reset()
        supervisor.stop_session()
        supervisor.wake()

    async def start_pairing(self, account_id: str) -> None:
        supervisor = self.supervisors[account_id]
        session = supervisor.session
        supervisor.pairing = True
        if session is not None:
            if hasattr(session, "logout"):
                await asyncio.to_thread(session.logout)
            supervisor.stop_session()
        store = self.stores[account_id]
        if store.sqlite_path is not None:
            for suffix in ("", "-wal", "-shm"):
                store.sqlite_path.with_name(store.sqlite_path.name + suffix).unlink(missing_ok=True)
            store.prepare()
        supervisor.backoff.reset()
        supervisor.wake()

    async def pair_code(self, account_id: str, phone: str) -> str:
        from sidecar.repair import RepairError

        session = self.supervisors[account_id].session
        if session is None or not hasattr(session, "pair_phone"):
            raise RepairError(409, "start a re-pair first, then ask for a phone code")
        try:
            code: str = await asyncio.to_thread(session.pair_phone, phone)
        except Exception as exc:
            log.info("account=%s phone pairing refused: %s", account_id, type(exc).__name__)
            raise RepairError(502, "WhatsApp refused the phone pairing request") from None
        return code


# -- canary probes -----------------------------------------------------------------


class Prober:
    """Sends this account's canary probe to its peer every interval.

    Each try becomes a :class:`ProbeSent` event (recorded, and replayable);
    the peer's sidecar recognises the probe when it arrives.
    """

    def __init__(
        self,
        account_id: str,
        probe: ProbeSettings,
        supervisor: AccountSupervisor,
        peer_device: Callable[[], str | None],
        deliver: Deliver,
    ) -> None:
        self.account_id = account_id
        self._probe = probe
        self._supervisor = supervisor
        self._peer_device = peer_device
        self._deliver = deliver

    async def run(self, stopping: asyncio.Event) -> None:
        while not await _sleep_unless(stopping, self._probe.interval_s):
            await self.send_one()

    async def send_one(self) -> ProbeSent:
        probe_id = uuid.uuid4().hex[:16]
        session = self._supervisor.session
        device = await asyncio.to_thread(self._peer_device)
        reason: str | None = None
        if device is None:
            reason = "peer_unpaired"
        elif session is None or not getattr(session, "connected", False):
            reason = "not_connected"
        else:
            user = device.split("@", 1)[0].split(":", 1)[0]
            try:
                await asyncio.to_thread(session.send_text, user, probe_text(probe_id))  # type: ignore[attr-defined]
            except Exception as exc:
                reason = "send_failed"
                log.info("account=%s probe not sent: %s", self.account_id, type(exc).__name__)
        event = ProbeSent(probe_id, self._probe.peer, ok=reason is None, reason=reason)
        self._deliver(event)
        return event


# -- all accounts ----------------------------------------------------------------

#: How long shutdown waits for neonize's Go calls to return.
SHUTDOWN_GRACE_S = 6.0


def live_source(
    clock: Clock,
    record: Path | None,
    *,
    blank_record_text: bool = False,
    control: LiveControl | None = None,
) -> Callable[[Sidecar, asyncio.Event], Any]:
    control = control or LiveControl()

    async def source(sidecar: Sidecar, stop: asyncio.Event) -> None:
        recorder = Recorder(record, blank_text=blank_record_text) if record is not None else None
        state_dir = sidecar.config.state_dir
        supervisors = []
        delivers: dict[str, Deliver] = {}
        for account in sidecar.config.accounts:
            store = SessionStore.for_account(
                state_dir, account.id, sidecar.postgres_url(account.id)
            )
            store.prepare()
            deliver = _deliverer(sidecar, account.id, clock, recorder)
            supervisor = AccountSupervisor(
                account.id,
                sidecar,
                functools.partial(NeonizeSession, account.id, store, deliver),
                lock=AccountLock(state_dir, account.id),
                device_id=store.device_id,
            )
            sidecar.pipeline.add_status_listener(supervisor.on_status_change)
            supervisors.append(supervisor)
            delivers[account.id] = deliver
            control.supervisors[account.id] = supervisor
            control.stores[account.id] = store
        stopping = asyncio.Event()
        running: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        by_id = {s.account_id: s for s in supervisors}

        async def start_account(account_id: str) -> None:
            if account_id not in running:
                halt = asyncio.Event()
                task = asyncio.create_task(
                    by_id[account_id].run(halt), name=f"supervise-{account_id}"
                )
                running[account_id] = (task, halt)

        async def stop_account(account_id: str) -> None:
            entry = running.pop(account_id, None)
            if entry is None:
                return
            task, halt = entry
            halt.set()
            by_id[account_id].stop_session()
            await asyncio.wait({task}, timeout=SHUTDOWN_GRACE_S)
            sidecar.pipeline.set_status(sidecar.states[account_id], Status.STOPPED, clock.now())

        tasks = [
            asyncio.create_task(prober.run(stopping), name=f"probe-{prober.account_id}")
            for prober in _probers(sidecar, supervisors, delivers)
        ]
        keeper = _lease_keeper(sidecar, start_account, stop_account)
        if keeper is None:
            for account_id in by_id:
                await start_account(account_id)
        else:
            tasks.append(asyncio.create_task(keeper.run(stopping), name="leases"))
        try:
            await stop.wait()
        finally:
            stopping.set()
            for supervisor in supervisors:
                supervisor.stop_session()
            for _, halt in running.values():
                halt.set()
            everything = tasks + [task for task, _ in running.values()]
            _, pending = (
                await asyncio.wait(everything, timeout=SHUTDOWN_GRACE_S)
                if everything
                else (set(), set())
            )
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d task(s) did not stop in time", len(pending))
            sidecar.log_summaries()  # the final state of each account, before it is stopped
            now = clock.now()
            for account_id in sidecar.states:
                sidecar.pipeline.set_status(sidecar.states[account_id], Status.STOPPED, now)
            if recorder is not None:
                recorder.close()

    return source


def _lease_keeper(
    sidecar: Sidecar,
    start: Callable[[str], Any],
    stop: Callable[[str], Any],
) -> Any:
    config = sidecar.config
    if config.leases is None:
        return None
    from sidecar.adapters.leases import FirestoreLeases, LeaseCollector, LeaseKeeper

    assert config.store.firestore is not None  # the config refuses leases without it
    replica = os.environ.get(config.leases.replica_id_env) or os.uname().nodename
    leases = FirestoreLeases(
        config.store.firestore.project,
        replica,
        config.leases.ttl,
        database=config.store.firestore.database,
    )
    keeper = LeaseKeeper(leases, list(sidecar.states), start, stop)
    sidecar.register_collector(LeaseCollector(keeper, list(sidecar.states)))
    log.info("replica %s shares accounts through leases (ttl %.0f s)", replica, config.leases.ttl)
    return keeper


def _probers(
    sidecar: Sidecar, supervisors: list[AccountSupervisor], delivers: dict[str, Deliver]
) -> list[Prober]:
    by_id = {s.account_id: s for s in supervisors}
    probers = []
    for settings in sidecar.settings.values():
        if settings.probe is None:
            continue
        peer = settings.probe.peer
        peer_store = SessionStore.for_account(
            sidecar.config.state_dir, peer, sidecar.postgres_url(peer)
        )
        probers.append(
            Prober(
                settings.account_id,
                settings.probe,
                by_id[settings.account_id],
                peer_store.device_id,
                delivers[settings.account_id],
            )
        )
    return probers


def _deliverer(
    sidecar: Sidecar, account_id: str, clock: Clock, recorder: Recorder | None
) -> Deliver:
    def deliver(event: Any) -> None:
        now = clock.now()
        if recorder is not None:
            try:
                recorder.write(now, account_id, event)
            except Exception as exc:  # its text may quote the event: the kind only
                log.error(
                    "account=%s cannot record an event (%s); handling it",
                    account_id,
                    type(exc).__name__,
                )
        sidecar.pipeline.handle(account_id, event, now)

    return deliver
