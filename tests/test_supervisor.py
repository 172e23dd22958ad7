"""The account supervisor, driven with neonize event objects.

WhatsApp cannot be reached here, so each connection is a ScriptedSession: a
fake session (named as such) that delivers a script of real neonize event
objects through the real pipeline, as neonize's callbacks would, then either
ends or stays up until the supervisor stops it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from neonize.proto.Neonize_pb2 import ConnectFailureReason as Reason

from sidecar import testing as build
from sidecar.adapters.health_json import health_json
from sidecar.adapters.session_store import FileAccountLock as AccountLock
from sidecar.compose import Assembly
from sidecar.core.clock import ReplayClock
from sidecar.core.control import LiveControl
from sidecar.core.ports import SendRefused
from sidecar.core.service import Sidecar
from sidecar.core.supervisor import AccountSupervisor
from sidecar.domain.account import Status
from sidecar.domain.supervision import BAN_MARGIN_S, Backoff, Decision, ban_wait_s, decide

from .support.config import AssemblyFactory, ConfigFactory

T0 = 1_764_068_400.0


class ScriptedSession:
    """Fake session: plays neonize events into the pipeline; ``hold`` keeps it up until stopped."""

    def __init__(self, sidecar: Sidecar, events: list[Any], hold: bool) -> None:
        self._sidecar = sidecar
        self._events = events
        self._hold = hold
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        for event in self._events:
            self._sidecar.handle("sales", event, self._sidecar.clock.now())
            await asyncio.sleep(0)
        if self._hold:
            await self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()

    connected = False

    def send_message(self, to_jid: str, text: str) -> str:
        raise SendRefused("not_connected")  # a scripted session sends nothing

    def logout(self) -> None:
        """Nothing to log out: the script plays no device."""

    def pair_phone(self, phone: str) -> str:
        raise RuntimeError("a scripted session pairs nothing")


class Harness:
    def __init__(self, assembly: Assembly, scripts: list[tuple[list[Any], bool]]) -> None:
        self.sidecar = sidecar = assembly.sidecar
        self.registry = assembly.metrics.registry
        self.scripts = list(scripts)
        self.started = 0
        self.device: str | None = "device-1"
        self.supervisor = AccountSupervisor(
            "sales",
            sidecar,
            self.next_session,
            backoff=Backoff(base_s=0.01, cap_s=0.04, rng=random.Random(7)),
            device_id=lambda: self.device,
            poll_s=0.01,
        )
        sidecar.add_status_listener(self.supervisor.on_status_change)
        self.stopping = asyncio.Event()

    def next_session(self) -> ScriptedSession:
        self.started += 1
        events, hold = self.scripts.pop(0) if self.scripts else ([], True)
        return ScriptedSession(self.sidecar, events, hold)

    async def run_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        task = asyncio.create_task(self.supervisor.run(self.stopping))
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    await asyncio.sleep(0.005)
        finally:
            self.stopping.set()
            self.supervisor.stop_session()
            await asyncio.wait_for(task, 2)

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"account": "sales", **labels})


@pytest.fixture
def accounts() -> list[dict[str, Any]]:
    return [{"id": "sales"}]


async def test_transient_dial_failures_reconnect_with_growing_backoff(assembly: Assembly) -> None:
    failure = ([build.connect_failure(Reason.GENERIC, "dial failed")], False)
    harness = Harness(assembly, [failure] * 4)
    await harness.run_until(lambda: harness.started >= 5)
    assert harness.supervisor.decisions[:4] == [Decision.RECONNECT] * 4
    assert harness.value("whatsapp_reconnects_total") == 3.0
    assert harness.value("whatsapp_events_total", event="ConnectFailureEv") == 4.0
    assert harness.value("whatsapp_connection_state", state="disconnected") == 1.0
    assert harness.supervisor.backoff.attempt == 4


@pytest.mark.parametrize(
    "reason",
    [Reason.GENERIC, Reason.SERVICE_UNAVAILABLE, Reason.INTERNAL_SERVER_ERROR, Reason.EXPERIMENTAL],
)
async def test_transient_connect_failure_reasons_reconnect(assembly: Assembly, reason: int) -> None:
    sidecar = assembly.sidecar
    harness = Harness(assembly, [([build.connect_failure(reason)], False)])
    await harness.run_until(lambda: harness.started >= 2)
    assert harness.supervisor.decisions[0] is Decision.RECONNECT
    assert sidecar.snapshot("sales").status is Status.DISCONNECTED


async def test_disconnect_while_connected_ends_the_session_and_reconnects(
    assembly: Assembly,
) -> None:
    sidecar = assembly.sidecar
    harness = Harness(assembly, [([build.connected()], True)])
    task = asyncio.create_task(harness.supervisor.run(harness.stopping))
    async with asyncio.timeout(5):
        while sidecar.snapshot("sales").status is not Status.CONNECTED:
            await asyncio.sleep(0.005)
    assert harness.started == 1
    # whatsmeow reports the drop on its own thread; the supervisor takes over from there
    await asyncio.to_thread(sidecar.handle, "sales", build.disconnected(), T0 + 1)
    async with asyncio.timeout(5):
        while harness.started < 2:
            await asyncio.sleep(0.005)
    harness.stopping.set()
    harness.supervisor.stop_session()
    await asyncio.wait_for(task, 2)
    assert harness.supervisor.decisions[0] is Decision.RECONNECT
    assert (
        harness.value("whatsapp_reconnects_total") == 0.0
    )  # one Connected so far: no reconnect counted
    assert harness.value("whatsapp_events_total", event="DisconnectedEv") == 1.0


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (build.stream_replaced(), Status.REPLACED),
        # a ban WhatsApp gave no length for: nobody can tell when trying again is safe
        (build.temporary_ban(expire_s=0), Status.BANNED),
        (build.client_outdated(), Status.OUTDATED),
        (build.connect_failure(Reason.TEMP_BANNED), Status.BANNED),
        (build.connect_failure(Reason.CLIENT_OUTDATED), Status.OUTDATED),
        (build.connect_failure(Reason.BAD_USER_AGENT), Status.OUTDATED),
    ],
    ids=lambda v: getattr(v, "value", type(v).__name__),
)
async def test_terminal_states_park_without_reconnecting(
    assembly: Assembly, event: Any, status: Status
) -> None:
    harness = Harness(assembly, [([build.connected(), event], True)])
    await harness.run_until(lambda: bool(harness.supervisor.decisions))
    await asyncio.sleep(0.1)  # several backoff periods: still no new session
    assert harness.supervisor.decisions == [Decision.PARK]
    assert harness.started == 1
    assert harness.value("whatsapp_connection_state", state=status.value) == 1.0
    assert harness.value("whatsapp_connection_state", state="connected") == 0.0


@pytest.mark.parametrize(
    ("event", "reconnects"),
    [
        (build.logged_out(), 1.0),
        # a refused connection is an attempt of its own
        (build.connect_failure(Reason.LOGGED_OUT), 2.0),
        (build.connect_failure(Reason.MAIN_DEVICE_GONE), 2.0),
    ],
    ids=["LoggedOutEv", "ConnectFailure-LOGGED_OUT", "ConnectFailure-MAIN_DEVICE_GONE"],
)
async def test_logout_waits_for_a_new_device_then_connects(
    assembly: Assembly, event: Any, reconnects: float
) -> None:
    sidecar = assembly.sidecar
    harness = Harness(assembly, [([build.connected(), event], True), ([build.connected()], True)])
    task = asyncio.create_task(harness.supervisor.run(harness.stopping))
    async with asyncio.timeout(5):
        while not harness.supervisor.decisions:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)
    assert harness.supervisor.decisions == [Decision.AWAIT_PAIRING]
    assert harness.started == 1
    assert harness.value("whatsapp_connection_state", state="logged_out") == 1.0
    harness.device = "device-2"  # `wa-sidecar pair` linked a new device
    async with asyncio.timeout(5):
        while sidecar.snapshot("sales").status is not Status.CONNECTED:
            await asyncio.sleep(0.005)
    harness.stopping.set()
    harness.supervisor.stop_session()
    await asyncio.wait_for(task, 2)
    assert harness.started == 2
    assert harness.value("whatsapp_reconnects_total") == reconnects


async def test_unscanned_qr_waits_for_pairing_instead_of_looping(assembly: Assembly) -> None:
    harness = Harness(assembly, [([build.qr()], True)])
    harness.device = None
    await harness.run_until(lambda: bool(harness.supervisor.decisions))
    await asyncio.sleep(0.1)
    assert harness.supervisor.decisions == [Decision.AWAIT_PAIRING]
    assert harness.started == 1
    assert harness.value("whatsapp_connection_state", state="qr_pending") == 1.0


async def test_stop_ends_a_held_session_and_makes_no_new_one(assembly: Assembly) -> None:
    sidecar = assembly.sidecar
    harness = Harness(assembly, [([build.connected()], True)])
    await harness.run_until(lambda: sidecar.snapshot("sales").status is Status.CONNECTED)
    assert harness.supervisor.decisions == [Decision.STOP]
    assert harness.started == 1


async def test_busy_account_lock_waits_and_does_not_connect(
    assembly: Assembly, tmp_path: Path
) -> None:
    holder = AccountLock(tmp_path, "sales")
    assert holder.acquire()
    harness = Harness(assembly, [([build.connected()], True)])
    harness.supervisor._lock = AccountLock(tmp_path, "sales")
    harness.supervisor._poll_s = 0.01
    task = asyncio.create_task(harness.supervisor.run(harness.stopping))
    await asyncio.sleep(0.1)
    assert harness.started == 0
    holder.release()
    async with asyncio.timeout(5):
        while harness.started == 0:
            await asyncio.sleep(0.005)
    harness.stopping.set()
    harness.supervisor.stop_session()
    await asyncio.wait_for(task, 2)


class LockOnAFullDisk:
    """An account lock whose file cannot be made while the disk is full (twice)."""

    def __init__(self) -> None:
        self.tries = 0

    def acquire(self) -> bool:
        self.tries += 1
        if self.tries <= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return True

    def holder(self) -> str:
        return "unknown"

    def release(self) -> None:
        """Nothing is held."""


async def test_a_lock_a_full_disk_keeps_from_being_made_is_tried_again(
    assembly: Assembly, caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor died of the OSError: the account never connected, even once there
    was space again."""
    harness = Harness(assembly, [([build.connected()], True)])
    lock = harness.supervisor._lock = LockOnAFullDisk()
    caplog.set_level("WARNING", logger="sidecar.core.supervisor")
    await harness.run_until(lambda: harness.sidecar.snapshot("sales").status is Status.CONNECTED)
    assert (lock.tries, harness.started) == (3, 1)
    assert [r.getMessage() for r in caplog.records] == [
        "account=sales taking the account lock failed: OSError (ENOSPC); it is tried again",
        "account=sales taking the account lock works again, after 2 failures",
    ]


@pytest.mark.parametrize("status", list(Status))
def test_decision_table(status: Status) -> None:
    expected = {
        Status.LOGGED_OUT: Decision.AWAIT_PAIRING,
        Status.QR_PENDING: Decision.AWAIT_PAIRING,
        Status.REPLACED: Decision.PARK,
        Status.BANNED: Decision.PARK,
        Status.OUTDATED: Decision.PARK,
        Status.STOPPED: Decision.PARK,
    }.get(status, Decision.RECONNECT)
    assert decide(status, stopping=False) is expected
    assert decide(status, stopping=True) is Decision.STOP


def test_backoff_is_capped_exponential_with_jitter() -> None:
    backoff = Backoff(base_s=2.0, cap_s=300.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(12)]
    for attempt, delay in enumerate(delays):
        ceiling = min(300.0, 2.0 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 300.0
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, not a fixed ladder
    backoff.reset()
    assert 1.0 <= backoff.next_delay() <= 2.0


class FakeSendingSession(ScriptedSession):
    """Fake session that records what the prober sends (WhatsApp cannot be reached here)."""

    def __init__(self, sidecar: Sidecar, connected: bool, fail: bool = False) -> None:
        super().__init__(sidecar, [], hold=True)
        self.connected = connected
        self.fail = fail
        self.sent: list[tuple[str, str]] = []

    def send_message(self, to_jid: str, text: str) -> str:
        if self.fail:
            raise ConnectionError("socket closed")
        self.sent.append((to_jid, text))
        return f"3EB0{len(self.sent):08X}"


async def test_prober_sends_to_the_peer_phone_and_reports_each_try(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    from sidecar.core.prober import Prober
    from sidecar.domain.probes import probe_text

    loaded = make_config(
        [{"id": "a", "probe": {"peer": "b", "interval": "5m", "timeout": "2m"}}, {"id": "b"}]
    )
    assembly = make_assembly(loaded)
    sidecar = assembly.sidecar
    session = FakeSendingSession(sidecar, connected=True)
    supervisor = AccountSupervisor("a", sidecar, lambda: session)
    supervisor._session = session  # as while the supervisor holds a live session
    delivered: list[Any] = []
    peer_device: list[str | None] = ["12025550199:7@s.whatsapp.net"]

    def deliver(event: Any) -> None:
        delivered.append(event)
        sidecar.handle("a", event, T0)

    settings = sidecar.settings("a").probe
    assert settings is not None
    prober = Prober("a", settings, supervisor, lambda: peer_device[0], deliver)
    sent = await prober.send_one()
    assert sent.ok is True
    assert session.sent == [("12025550199@s.whatsapp.net", probe_text(sent.probe_id))]
    assert [r.probe_id for r in sidecar.snapshot("b").probes_received] == [sent.probe_id]
    session.fail = True
    assert (await prober.send_one()).reason == "send_failed"
    session.connected = False
    assert (await prober.send_one()).reason == "not_connected"
    peer_device[0] = None
    assert (await prober.send_one()).reason == "peer_unpaired"
    snap = sidecar.snapshot("a")
    assert (snap.probes_sent, snap.probe_send_failures_in_a_row, snap.probe_failures) == (
        4,
        3,
        {"send_failed": 3},
    )
    assert (
        assembly.metrics.registry.get_sample_value("whatsapp_probes_sent_total", {"account": "a"})
        == 4.0
    )
    assert (
        assembly.metrics.registry.get_sample_value(
            "whatsapp_probe_failures_total", {"account": "a", "reason": "send_failed"}
        )
        == 3.0
    )


async def test_live_control_re_pairing_keeps_the_qr_session_up_until_paired(
    assembly: Assembly, tmp_path: Any
) -> None:
    sidecar = assembly.sidecar
    """start_pairing: the old session is stopped and its store dropped, a new one connects at
    once, its QR codes do not end it (as they would outside a re-pair), and pairing ends the mode."""
    from sidecar.adapters.session_store import SessionStore
    from sidecar.core.control import LiveControl

    harness = Harness(
        assembly,
        [([build.connected()], True), ([build.qr_with_code("2@code-one,x")], True)],
    )
    store = SessionStore.for_account(tmp_path, "sales", None)
    store.prepare()
    assert store.sqlite_path is not None
    store.sqlite_path.write_bytes(b"old device keys")
    control = LiveControl()
    control.add(harness.supervisor, store)
    task = asyncio.create_task(harness.supervisor.run(harness.stopping))
    async with asyncio.timeout(5):
        while sidecar.snapshot("sales").status is not Status.CONNECTED:
            await asyncio.sleep(0.005)
    await control.start_pairing("sales")
    async with asyncio.timeout(5):
        while harness.started < 2 or sidecar.snapshot("sales").status is not Status.QR_PENDING:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)
    assert harness.started == 2  # the QR session stays up: no hang-up, no new session
    assert store.sqlite_path.read_bytes() == b""  # the old device's keys are gone
    assert store.sqlite_path.stat().st_mode & 0o777 == 0o600
    assert sidecar.pairing_view("sales").qr_code == "2@code-one,x"
    assert harness.supervisor.pairing is True
    await asyncio.to_thread(sidecar.handle, "sales", build.pair_status(success=True), T0 + 5)
    assert harness.supervisor.pairing is False
    harness.stopping.set()
    harness.supervisor.stop_session()
    await asyncio.wait_for(task, 2)
    await control.reconnect("sales")  # on a stopped supervisor: harmless


# -- temporary bans and parked accounts ------------------------------------------------

BANNED_FOR_S = 3600
BAN_END = "whatsapp_temporary_ban_expiry_timestamp_seconds"


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def stop(harness: Harness, task: asyncio.Task[None]) -> None:
    harness.stopping.set()
    harness.supervisor.stop_session()
    await asyncio.wait_for(task, 2)


def ban_view(assembly: Assembly) -> tuple[str, int | None, str | None]:
    health = health_json(assembly.sidecar.health("sales"))
    return health["status"], health["banExpiresMs"], health["banReason"]


async def test_a_temporary_ban_is_waited_out_then_the_account_reconnects_by_itself(
    assembly: Assembly, clock: ReplayClock
) -> None:
    """Before: a banned account stayed parked until someone restarted the sidecar."""
    blocked = build.temporary_ban(code=2, expire_s=BANNED_FOR_S)  # BLOCKED_BY_USERS
    harness = Harness(assembly, [([build.connected(), blocked], True), ([build.connected()], True)])
    end = T0 + BANNED_FOR_S
    task = asyncio.create_task(harness.supervisor.run(harness.stopping))
    try:
        await until(lambda: bool(harness.supervisor.decisions))
        await asyncio.sleep(0.1)  # many poll periods, and the clock stands: nothing connects
        assert harness.supervisor.decisions == [Decision.AWAIT_BAN_EXPIRY]
        assert harness.started == 1
        assert harness.value(BAN_END) == end
        assert ban_view(assembly) == ("banned", round(end * 1000), "blocked_by_users")
        clock.advance_to(end + BAN_MARGIN_S / 2)  # the ban is over, the margin is not
        await asyncio.sleep(0.1)
        assert harness.started == 1
        clock.advance_to(end + BAN_MARGIN_S + 1)
        await until(lambda: assembly.sidecar.status("sales") is Status.CONNECTED)
    finally:
        await stop(harness, task)
    assert harness.started == 2
    assert harness.value(BAN_END) is None
    assert ban_view(assembly) == ("connected", None, None)
    assert harness.value("whatsapp_connect_failures_total", reason="temp_banned") == 1.0
    # connected, refused with the ban, connected: two attempts after the first
    assert harness.value("whatsapp_reconnects_total") == 2.0


async def test_a_ban_met_again_after_its_end_is_waited_out_again_with_growing_backoff(
    assembly: Assembly, clock: ReplayClock
) -> None:
    again = ([build.temporary_ban(expire_s=60)], False)
    harness = Harness(
        assembly,
        [
            ([build.connected(), build.temporary_ban(expire_s=60)], True),
            again,
            ([build.connected()], True),
        ],
    )
    task = asyncio.create_task(harness.supervisor.run(harness.stopping))
    try:
        await until(lambda: bool(harness.supervisor.decisions))
        clock.advance_to(T0 + 60 + BAN_MARGIN_S + 1)
        await until(lambda: len(harness.supervisor.decisions) == 2)
        await asyncio.sleep(0.1)
        # refused again at connect: a new end, counted from the second refusal
        assert harness.started == 2
        second_end = T0 + 60 + BAN_MARGIN_S + 1 + 60
        assert harness.value(BAN_END) == second_end
        assert harness.supervisor.backoff.attempt == 2  # each ban also spends a backoff step
        clock.advance_to(second_end + BAN_MARGIN_S + 1)
        await until(lambda: assembly.sidecar.status("sales") is Status.CONNECTED)
    finally:
        await stop(harness, task)
    assert harness.supervisor.decisions == [Decision.AWAIT_BAN_EXPIRY] * 2 + [Decision.STOP]
    assert harness.value("whatsapp_connect_failures_total", reason="temp_banned") == 2.0


async def test_a_restart_during_a_ban_waits_for_its_end_instead_of_connecting(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, clock: ReplayClock
) -> None:
    """Before: a restart forgot the ban and connected at once, which WhatsApp may answer
    with a longer ban."""
    from sidecar.core.live import LiveAccounts

    loaded = make_config([{"id": "sales"}])
    before = make_assembly(loaded)
    banned = build.temporary_ban(code=1, expire_s=BANNED_FOR_S)
    first = Harness(before, [([build.connected(), banned], True)])
    stop_running = asyncio.Event()
    live = asyncio.create_task(LiveAccounts(before.sidecar, [first.supervisor]).run(stop_running))
    await until(lambda: bool(first.supervisor.decisions))
    stop_running.set()  # the shutdown stops every account, then the state is saved
    await asyncio.wait_for(live, 10)
    assert ban_view(before) == ("stopped", None, None)  # kept, but not shown
    assert before.metrics.registry.get_sample_value(BAN_END, {"account": "sales"}) is None
    assert before.sidecar.flush_state() == 1
    end = T0 + BANNED_FOR_S
    clock.advance_to(T0 + 600)  # restarted ten minutes into the ban
    after = make_assembly(loaded)
    assert ban_view(after) == ("banned", round(end * 1000), "send_to_too_many_people")
    registry = after.metrics.registry
    assert registry.get_sample_value(BAN_END, {"account": "sales"}) == end
    harness = Harness(after, [([build.connected()], True)])
    task = asyncio.create_task(harness.supervisor.run(harness.stopping))
    try:
        await asyncio.sleep(0.1)
        assert harness.started == 0
        clock.advance_to(end + BAN_MARGIN_S + 1)
        await until(lambda: after.sidecar.status("sales") is Status.CONNECTED)
    finally:
        await stop(harness, task)
    assert harness.started == 1
    assert registry.get_sample_value(BAN_END, {"account": "sales"}) is None
    # connecting ended the ban for good: the next restart does not wait for it
    after.sidecar.flush_state()
    assert ban_view(make_assembly(loaded)) == ("connecting", None, None)


async def test_a_restart_after_a_ban_ended_connects_at_once(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, clock: ReplayClock
) -> None:
    loaded = make_config([{"id": "sales"}])
    before = make_assembly(loaded)
    before.sidecar.handle("sales", build.temporary_ban(expire_s=600), T0)
    before.sidecar.flush_state()
    clock.advance_to(T0 + 601)
    after = make_assembly(loaded)
    assert ban_view(after) == ("connecting", None, None)
    harness = Harness(after, [([build.connected()], True)])
    await harness.run_until(lambda: after.sidecar.status("sales") is Status.CONNECTED)
    assert harness.started == 1


async def test_a_parked_account_connects_again_when_a_re_pair_is_asked_for(
    assembly: Assembly, tmp_path: Path
) -> None:
    """Before: a parked account (replaced, banned for an unknown time, outdated) waited
    only for the sidecar to stop, so the re-pair page the alert links to did nothing."""
    from sidecar.adapters.session_store import SessionStore

    harness = Harness(
        assembly,
        [
            ([build.connected(), build.stream_replaced()], True),
            ([build.qr_with_code("2@code-one,x")], True),
            ([build.temporary_ban(expire_s=BANNED_FOR_S)], True),
        ],
    )
    store = SessionStore.for_account(tmp_path, "sales", None)
    store.prepare()
    control = LiveControl()
    control.add(harness.supervisor, store)
    task = asyncio.create_task(harness.supervisor.run(harness.stopping))
    try:
        await until(lambda: bool(harness.supervisor.decisions))
        await asyncio.sleep(0.1)
        assert (harness.supervisor.decisions, harness.started) == ([Decision.PARK], 1)
        await control.start_pairing("sales")
        await until(lambda: assembly.sidecar.status("sales") is Status.QR_PENDING)
        assert harness.started == 2
        # the pairing meets a ban: it is waited out, not retried in a loop
        harness.supervisor.stop_session()
        await until(lambda: len(harness.supervisor.decisions) == 3)
        await asyncio.sleep(0.1)
    finally:
        await stop(harness, task)
    assert harness.supervisor.decisions[1:] == [Decision.AWAIT_PAIRING, Decision.AWAIT_BAN_EXPIRY]
    assert harness.started == 3
    assert harness.supervisor.pairing is False


def test_decision_for_a_ban_whose_end_is_known() -> None:
    assert decide(Status.BANNED, stopping=False, ban_expires_at=T0) is Decision.AWAIT_BAN_EXPIRY
    assert decide(Status.BANNED, stopping=True, ban_expires_at=T0) is Decision.STOP
    # only a banned account waits for a ban's end
    assert decide(Status.DISCONNECTED, stopping=False, ban_expires_at=T0) is Decision.RECONNECT
    assert ban_wait_s(T0, T0 - 100) == 100 + BAN_MARGIN_S
    assert ban_wait_s(T0, T0 + BAN_MARGIN_S + 1) == 0.0


async def test_a_re_pair_while_whatsapp_is_unreachable_backs_off_and_says_when(
    assembly: Assembly, tmp_path: Any
) -> None:
    """Re-pairing from the page with WhatsApp out of reach: each failed dial waits the
    capped backoff (it used to try again at once, forever), and the pair page's view
    says when the next try is."""
    from sidecar.adapters.session_store import SessionStore

    sidecar = assembly.sidecar
    dial_failed = ([build.connect_failure(Reason.GENERIC, "dial failed")], False)
    harness = Harness(assembly, [([build.connected()], True)] + [dial_failed] * 200)
    harness.supervisor.backoff = Backoff(base_s=0.2, cap_s=0.4, rng=random.Random(7))
    store = SessionStore.for_account(tmp_path, "sales", None)
    store.prepare()
    control = LiveControl()
    control.add(harness.supervisor, store)
    task = asyncio.create_task(harness.supervisor.run(harness.stopping))
    await until(lambda: sidecar.snapshot("sales").status is Status.CONNECTED)
    await control.start_pairing("sales")
    await until(lambda: sidecar.pairing_view("sales").next_attempt_ms is not None)
    view = sidecar.pairing_view("sales")
    assert view.status == "disconnected"
    assert view.next_attempt_ms is not None
    # the first wait of the backoff: between half and all of its 0.2 s base
    assert 100 <= view.next_attempt_ms - round(sidecar.clock.now() * 1000) <= 200
    await asyncio.sleep(0.6)
    assert 2 <= harness.started <= 5  # the old session, then a try every 0.1-0.4 s
    assert harness.supervisor.pairing is True  # still re-pairing: QR codes are wanted
    await stop(harness, task)
    assert sidecar.pairing_view("sales").next_attempt_ms is None


async def test_a_never_paired_account_says_so_while_whatsapp_is_out_of_reach(
    assembly: Assembly, caplog: pytest.LogCaptureFixture
) -> None:
    """Its store has no device: it shows "not paired", not only "disconnected", though
    WhatsApp never answered with a QR code; said once in the log, not at every try."""
    dial_failed = ([build.connect_failure(Reason.GENERIC, "dial failed")], False)
    harness = Harness(assembly, [dial_failed] * 3)
    harness.device = None
    with caplog.at_level(logging.WARNING, logger="sidecar.core.service"):
        await harness.run_until(lambda: harness.started >= 3)
    health = health_json(assembly.sidecar.health("sales"))
    assert health["status"] == "disconnected"
    assert health["nextStep"] == (
        "not paired: pair it on the page /accounts/sales/pair or with `wa-sidecar pair sales --config CONFIG`"
    )
    said = [r.getMessage() for r in caplog.records if "no paired device" in r.getMessage()]
    assert said == [
        "account=sales has no paired device: not paired: pair it on the page /accounts/sales/pair"
        " or with `wa-sidecar pair sales --config CONFIG`"
    ]


async def test_a_paired_account_out_of_reach_is_not_called_unpaired(assembly: Assembly) -> None:
    dial_failed = ([build.connect_failure(Reason.GENERIC, "dial failed")], False)
    harness = Harness(assembly, [dial_failed] * 2)  # its store holds "device-1"
    await harness.run_until(lambda: harness.started >= 2)
    assert health_json(assembly.sidecar.health("sales"))["nextStep"] is None
