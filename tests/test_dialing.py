"""Dial slots: only so many accounts dial at once, each after a random wait, and every
slot comes back (WhatsApp answered, the dial failed, the account stopped).

WhatsApp cannot be reached here, and a storm of real dials is the benchmark's
business (bench/offline_accounts.py). So each connection is a DialingSession: a
fake session (named as such) that "dials" for a few milliseconds, then delivers
real neonize event objects through the real pipeline and tells its supervisor
of each, as the composition root wires neonize's sessions to do; a refused one
takes a few milliseconds more to end, as a real one stops its client.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from neonize.proto.Neonize_pb2 import ConnectFailureReason as Reason

from sidecar import testing as build
from sidecar.adapters.session_store import FileAccountLock
from sidecar.compose import Assembly, live_source
from sidecar.config import parse_config
from sidecar.core.dialing import DialSlot, DialSlots
from sidecar.core.ports import SendRefused
from sidecar.core.service import Sidecar
from sidecar.core.supervisor import AccountSupervisor
from sidecar.domain.account import Status
from sidecar.domain.supervision import Backoff
from sidecar.metrics.dials import DialCollector
from sidecar.metrics.registry import Metrics

from .support.config import AssemblyFactory, ConfigFactory

#: How long a fake dial takes before WhatsApp "answers".
DIAL_S = 0.003
#: No longest hold: a slot left behind stays behind (and the test fails in its 5 s).
FOREVER = float("inf")

Script = tuple[list[Any], bool]  # events after the dial, and whether the session stays up


class DialingSession:
    """Fake session: dials for ``DIAL_S``, then plays its events into the pipeline,
    telling the supervisor of each; ``hold`` keeps it up, else it takes ``DIAL_S`` more
    to end. ``world.dialing`` counts the sessions that are neither up nor over."""

    def __init__(self, world: World, account_id: str, script: Script) -> None:
        self._world = world
        self._account_id = account_id
        self._events, self._hold = script
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        world = self._world
        world.dialing += 1
        world.peak = max(world.peak, world.dialing)
        world.started[self._account_id] += 1
        world.order.append(self._account_id)
        up = False
        try:
            if not self._events:  # a dial that never answers: it ends only when stopped
                await self.stopped.wait()
                return
            await asyncio.sleep(DIAL_S)
            supervisor = world.supervisors[self._account_id]
            for event in self._events:
                if self.stopped.is_set():
                    return
                world.sidecar.handle(self._account_id, event, world.sidecar.clock.now())
                supervisor.on_session_event()
            if self._hold:
                up = True
                world.dialing -= 1
                await self.stopped.wait()
            else:  # refused: the session ends, its threads at work a little longer
                await asyncio.sleep(DIAL_S)
        finally:
            if not up:
                world.dialing -= 1

    def stop(self) -> None:
        self.stopped.set()

    connected = False

    def send_message(self, to_jid: str, text: str) -> str:
        raise SendRefused("not_connected")  # a fake dial sends nothing

    def logout(self) -> None:
        """Nothing to log out: no device."""

    def pair_phone(self, phone: str) -> str:
        raise RuntimeError("a fake dial pairs nothing")


FAILED: Script = ([build.connect_failure(Reason.GENERIC, "dial failed")], False)
CONNECTED: Script = ([build.connected()], True)
HANGS: Script = ([], True)


class World:
    """Supervisors of ``sidecar``'s accounts sharing ``dials``; ``script`` says what
    each account's n-th session does."""

    def __init__(
        self,
        sidecar: Sidecar,
        dials: DialSlots,
        script: Callable[[str, int], Script],
        locks: Callable[[str], FileAccountLock | None] = lambda _: None,
    ) -> None:
        self.sidecar = sidecar
        self.dials = dials
        self.script = script
        self.dialing = 0
        self.peak = 0
        self.started: Counter[str] = Counter()
        self.order: list[str] = []  # accounts, as their sessions started
        self.sessions: dict[str, DialingSession] = {}
        self.stopping = asyncio.Event()
        self.supervisors = {
            account: AccountSupervisor(
                account,
                sidecar,
                functools.partial(self.session, account),
                backoff=Backoff(base_s=0.01, cap_s=0.02, rng=random.Random(n)),
                lock=locks(account),
                poll_s=0.01,
                dials=dials,
            )
            for n, account in enumerate(sidecar.account_ids)
        }
        for supervisor in self.supervisors.values():
            sidecar.add_status_listener(supervisor.on_status_change)
        self.tasks: list[asyncio.Task[None]] = []

    def session(self, account: str) -> DialingSession:
        session = DialingSession(self, account, self.script(account, self.started[account]))
        self.sessions[account] = session
        return session

    def start(self) -> None:
        self.tasks = [asyncio.create_task(s.run(self.stopping)) for s in self.supervisors.values()]

    async def stop(self) -> None:
        self.stopping.set()
        for supervisor in self.supervisors.values():
            supervisor.stop_session()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 2)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


def account_list(count: int) -> list[dict[str, Any]]:
    return [{"id": f"acct-{n:03d}"} for n in range(count)]


# -- the cap ----------------------------------------------------------------------------


async def test_a_storm_of_failing_dials_never_dials_more_than_the_cap_at_once(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    sidecar = make_assembly(make_config(account_list(60))).sidecar
    world = World(sidecar, DialSlots(5), lambda _account, _n: FAILED)
    world.start()
    try:
        await until(lambda: min(world.started[a] for a in sidecar.account_ids) >= 3, timeout=20)
    finally:
        await world.stop()
    assert world.peak == 5  # the cap was reached, and never passed
    assert world.dials.in_progress == 0  # every failed dial gave its slot back
    assert world.dials.waiting == 0
    assert {sidecar.status(a) for a in sidecar.account_ids} == {Status.DISCONNECTED}


async def test_a_network_blip_reconnects_every_account_through_the_slots(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    """All connected, then all disconnected at once: the reconnect storm keeps the cap,
    and connected accounts hold no slot (else the cap would stop the others for good)."""
    sidecar = make_assembly(make_config(account_list(40))).sidecar
    world = World(sidecar, DialSlots(4, jitter_s=0.01), lambda _account, _n: CONNECTED)
    world.start()
    accounts = sidecar.account_ids
    try:
        await until(lambda: all(sidecar.status(a) is Status.CONNECTED for a in accounts))
        await until(lambda: world.dials.in_progress == 0)  # connected: no slot held
        now = sidecar.clock.now()
        for account in accounts:  # the blip
            sidecar.handle(account, build.disconnected(), now)
        await until(
            lambda: all(
                world.started[a] == 2 and sidecar.status(a) is Status.CONNECTED for a in accounts
            )
        )
    finally:
        await world.stop()
    assert world.peak == 4
    assert world.dials.in_progress == 0


async def test_a_slot_comes_back_when_a_dial_is_stopped_and_waiting_accounts_leave_on_stop(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, tmp_path: Path
) -> None:
    """Dials that never answer hold the slots; stopping (SIGTERM, a lease given up) ends
    them, and the accounts waiting their turn stop without dialing, their locks freed."""
    sidecar = make_assembly(make_config(account_list(10))).sidecar
    metrics = Metrics([])
    dials = DialSlots(2)
    metrics.register(DialCollector(dials))
    world = World(
        sidecar, dials, lambda _account, _n: HANGS, lambda a: FileAccountLock(tmp_path, a)
    )
    world.start()
    await until(lambda: dials.in_progress == 2 and dials.waiting == 8)
    assert metrics.registry.get_sample_value("whatsapp_dials_in_progress") == 2.0
    assert metrics.registry.get_sample_value("whatsapp_dials_waiting") == 8.0
    assert metrics.registry.get_sample_value("whatsapp_dial_slots") == 2.0
    await world.stop()
    assert (dials.in_progress, dials.waiting) == (0, 0)
    assert sum(world.started.values()) == 2  # nobody dialed on the way out
    for account in sidecar.account_ids:  # every lock given back, dialed or not
        lock = FileAccountLock(tmp_path, account)
        assert lock.acquire()
        lock.release()


async def test_a_re_pair_stopping_a_hung_dial_hands_its_slot_on(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    sidecar = make_assembly(make_config(account_list(2))).sidecar
    first, second = sidecar.account_ids
    world = World(
        sidecar,
        DialSlots(1),
        lambda account, n: HANGS if (account, n) == (first, 0) else CONNECTED,
    )
    world.start()
    try:
        await until(lambda: world.started[first] == 1 and world.dials.waiting == 1)
        assert world.started[second] == 0
        world.supervisors[first].stop_session()  # what a re-pair or a reconnect does
        await until(lambda: all(sidecar.status(a) is Status.CONNECTED for a in (first, second)))
    finally:
        await world.stop()


async def test_a_re_pair_dials_before_the_accounts_waiting_their_turn(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    """A person waits at the pair page for the QR code; the storm can wait a little."""
    sidecar = make_assembly(make_config(account_list(4))).sidecar
    hung, first, second, pairing = sidecar.account_ids
    world = World(
        sidecar,
        DialSlots(1, jitter_s=0.001, max_hold_s=FOREVER),
        lambda account, n: HANGS if (account, n) == (hung, 0) else CONNECTED,
    )
    supervisors = world.supervisors
    world.supervisors[pairing].pairing = True
    world.tasks = [asyncio.create_task(supervisors[hung].run(world.stopping))]
    try:
        await until(lambda: world.started[hung] == 1)
        for account in (first, second):
            world.tasks.append(asyncio.create_task(supervisors[account].run(world.stopping)))
            await until(lambda: world.dials.waiting == len(world.tasks) - 1)
        world.tasks.append(asyncio.create_task(supervisors[pairing].run(world.stopping)))
        await until(lambda: world.dials.waiting == 3)
        supervisors[hung].stop_session()
        await until(lambda: all(sidecar.status(a) is Status.CONNECTED for a in (first, second)))
    finally:
        await world.stop()
    assert world.order[:4] == [hung, pairing, first, second]


async def test_a_qr_code_ends_the_dial_of_a_re_pair_whose_session_stays_up(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    """A pairing session waits for a scan for minutes: it must not keep the slot."""
    sidecar = make_assembly(make_config(account_list(2))).sidecar
    pairing, other = sidecar.account_ids
    qr: Script = ([build.qr_with_code("2@code,x")], True)
    world = World(sidecar, DialSlots(1), lambda a, _n: qr if a == pairing else CONNECTED)
    world.supervisors[pairing].pairing = True
    world.tasks = [asyncio.create_task(world.supervisors[pairing].run(world.stopping))]
    try:
        await until(lambda: sidecar.status(pairing) is Status.QR_PENDING)
        world.tasks.append(asyncio.create_task(world.supervisors[other].run(world.stopping)))
        await until(lambda: sidecar.status(other) is Status.CONNECTED)
        assert world.started[pairing] == 1  # still the same QR session
        await until(lambda: world.dials.in_progress == 0)
    finally:
        await world.stop()


async def test_a_dial_without_an_answer_gives_its_slot_up_after_the_longest_hold(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    sidecar = make_assembly(make_config(account_list(2))).sidecar
    first, second = sidecar.account_ids
    world = World(
        sidecar,
        DialSlots(1, max_hold_s=0.05),
        lambda account, _n: HANGS if account == first else CONNECTED,
    )
    world.start()
    try:
        await until(lambda: sidecar.status(second) is Status.CONNECTED)
        assert world.started[first] == 1  # still dialing: its slot was given up, not its dial
        assert world.sessions[first].stopped.is_set() is False
    finally:
        await world.stop()


# -- the queue and the jitter --------------------------------------------------------


class Draws(random.Random):
    """A generator that hands out the given delays and remembers each range asked for."""

    def __init__(self, delays: list[float]) -> None:
        super().__init__(0)
        self.delays = list(delays)
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append((a, b))
        return self.delays.pop(0)


async def test_jitter_delays_each_dial_by_its_own_random_wait() -> None:
    draws = Draws([0.06, 0.0, 0.03])
    dials = DialSlots(10, jitter_s=0.5, rng=draws)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    begun = loop.time()
    granted: list[tuple[int, float]] = []

    async def dial(n: int) -> None:
        slot = await dials.acquire(stopping)
        assert slot is not None
        granted.append((n, loop.time() - begun))

    await asyncio.gather(*(dial(n) for n in range(3)))
    assert [n for n, _ in granted] == [1, 2, 0]  # in the order of their waits
    for n, after in granted:
        assert after >= [0.06, 0.0, 0.03][n] - 0.002
    assert draws.asked == [(0.0, 0.5)] * 3


async def test_a_re_pair_skips_the_jitter_and_the_queue() -> None:
    draws = Draws([])
    dials = DialSlots(1, jitter_s=30.0, rng=draws, max_hold_s=FOREVER)
    stopping = asyncio.Event()
    held = await dials.acquire(stopping, urgent=True)  # no draw: it would take 30 s
    assert held is not None
    order: list[str] = []

    async def dial(name: str, urgent: bool) -> None:
        slot = await dials.acquire(stopping, urgent=urgent)
        assert slot is not None
        order.append(name)
        slot.release()

    dials.jitter_s = 0.0
    queued = [asyncio.create_task(dial(f"account-{n}", False)) for n in range(3)]
    await until(lambda: dials.waiting == 3)
    repair = asyncio.create_task(dial("re-pair", True))
    await until(lambda: dials.waiting == 4)
    held.release()
    await asyncio.wait_for(asyncio.gather(*queued, repair), 5)
    assert order == ["re-pair", "account-0", "account-1", "account-2"]
    assert draws.asked == []
    assert (dials.in_progress, dials.waiting) == (0, 0)


async def test_a_wait_cancelled_or_stopped_leaves_no_slot_behind() -> None:
    dials = DialSlots(1, max_hold_s=FOREVER)
    running, stopping = asyncio.Event(), asyncio.Event()
    held = await dials.acquire(running)
    assert held is not None
    cancelled = asyncio.create_task(dials.acquire(running))
    stopped = asyncio.create_task(dials.acquire(stopping))
    last = asyncio.create_task(dials.acquire(running))
    await until(lambda: dials.waiting == 3)
    cancelled.cancel()
    stopping.set()
    assert await asyncio.wait_for(stopped, 5) is None
    await until(lambda: dials.waiting == 1)
    held.release()  # goes past the cancelled and the stopped wait, to the last
    slot = await asyncio.wait_for(last, 5)
    assert isinstance(slot, DialSlot)
    assert slot.held
    assert dials.in_progress == 1
    slot.release()
    slot.release()  # again: harmless
    assert dials.in_progress == 0
    assert cancelled.cancelled()


async def test_a_slot_handed_to_a_wait_that_is_stopping_goes_to_the_next() -> None:
    dials = DialSlots(1, max_hold_s=FOREVER)
    running, stopping = asyncio.Event(), asyncio.Event()
    held = await dials.acquire(running)
    assert held is not None
    leaving = asyncio.create_task(dials.acquire(stopping))
    staying = asyncio.create_task(dials.acquire(running))
    await until(lambda: dials.waiting == 2)
    held.release()  # handed to ``leaving``, which is stopping before it runs again
    stopping.set()
    assert await asyncio.wait_for(leaving, 5) is None
    slot = await asyncio.wait_for(staying, 5)
    assert slot is not None
    assert dials.in_progress == 1
    slot.release()


# -- configuration --------------------------------------------------------------------


def test_the_defaults_cap_dials_at_16_with_two_seconds_of_jitter() -> None:
    connections = parse_config({"accounts": [{"id": "sales"}]}).connections
    assert connections.max_concurrent_dials == 16
    assert connections.dial_jitter == 2.0
    configured = parse_config(
        {
            "connections": {"max_concurrent_dials": 3, "dial_jitter": "500ms"},
            "accounts": [{"id": "a"}],
        }
    ).connections
    assert (configured.max_concurrent_dials, configured.dial_jitter) == (3, 0.5)
    with pytest.raises(ValueError, match="at least 1"):
        DialSlots(0)


class WiredSession:
    """Fake neonize session, made as ``run`` makes NeonizeSession: ``deliver`` is the one
    the composition root hands it. Connects at once and stays up until stopped."""

    def __init__(self, account_id: str, _store: Any, deliver: Callable[[Any], None]) -> None:
        self._deliver = deliver
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        self._deliver(build.connected())
        await self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()


async def test_run_wires_the_cap_from_the_config_and_each_session_ends_its_dial(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot for three accounts: all connect only if a session that is up gives its
    slot back, through the deliver ``run`` gives neonize's sessions."""
    monkeypatch.setattr("sidecar.compose.sources.NeonizeSession", WiredSession)
    assembly: Assembly = make_assembly(
        make_config(account_list(3), connections={"max_concurrent_dials": 1, "dial_jitter": "1ms"})
    )
    source, _ = live_source(assembly, None)
    stop = asyncio.Event()
    running = asyncio.create_task(source(stop))
    sidecar, registry = assembly.sidecar, assembly.metrics.registry
    try:
        await until(lambda: all(sidecar.status(a) is Status.CONNECTED for a in sidecar.account_ids))
        assert registry.get_sample_value("whatsapp_dial_slots") == 1.0
        await until(lambda: registry.get_sample_value("whatsapp_dials_in_progress") == 0.0)
        assert registry.get_sample_value("whatsapp_dials_waiting") == 0.0
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
