"""The threads a neonize session starts: a failed dial's own thread stops its client, so
the supervisor's stop (it always follows a failed dial) starts no thread; live sessions
are stopped from one thread, since their own are held inside neonize's call."""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.adapters import neonize_session
from sidecar.adapters.session_store import SessionStore

WAIT_S = 5.0


class Events:
    """What ``client.event`` is: called with an event class, it returns a decorator."""

    def __call__(self, _cls: Any) -> Callable[[Any], Any]:
        return lambda fn: fn

    def qr(self, fn: Any) -> Any:
        return fn


class FakeClient:
    """Fake neonize client: ``connect()`` fails at once, or blocks until ``stop()``."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.stops = 0
        self.event = Events()
        self.connecting = threading.Event()
        self._stopped = threading.Event()
        self._stop_finalizer = types.SimpleNamespace(detach=lambda: None)

    def connect(self) -> None:
        self.connecting.set()
        if self.fails:
            raise RuntimeError("dial failed")
        self._stopped.wait(WAIT_S)

    def stop(self) -> None:
        self.stops += 1
        self._stopped.set()


def fake_clients(monkeypatch: pytest.MonkeyPatch, *, fails: bool) -> list[FakeClient]:
    """Every client the sessions make from here on."""
    made: list[FakeClient] = []

    def new_client(_location: str) -> FakeClient:
        made.append(FakeClient(fails))
        return made[-1]

    monkeypatch.setattr(neonize_session, "NewClient", new_client)
    return made


def threads_started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads neonize_session starts from here on (they still run)."""
    started: list[str] = []

    class Recorded(threading.Thread):
        def start(self) -> None:
            started.append(self.name)
            super().start()

    patched = types.SimpleNamespace(**vars(threading))
    patched.Thread = Recorded
    monkeypatch.setattr(neonize_session, "threading", patched)
    return started


def test_a_stop_after_a_failed_dial_starts_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = fake_clients(monkeypatch, fails=True)
    store = SessionStore.for_account(tmp_path, "sales", None)
    delivered: list[Any] = []
    session = neonize_session.NeonizeSession("sales", store, delivered.append)
    session._connect()  # what the session's own thread runs: the dial fails
    assert delivered == [neonize_session.DIAL_FAILED]
    assert [client.stops for client in made] == [1]  # stopped by the session's own thread
    started = threads_started(monkeypatch)
    session.stop()  # what the supervisor does next
    assert started == []
    assert [client.stops for client in made] == [1]  # and once only


def test_stops_of_live_sessions_share_one_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """connect() is blocked in neonize: only another thread can stop it. One thread does
    it for all (each stop holds the gate alone), not a thread per stop."""
    made = fake_clients(monkeypatch, fails=False)
    sessions = [
        neonize_session.NeonizeSession(
            account, SessionStore.for_account(tmp_path, account, None), lambda _event: None
        )
        for account in ("sales", "support")
    ]
    connecting = [threading.Thread(target=session._connect) for session in sessions]
    for n, thread in enumerate(connecting):
        thread.start()
        deadline = time.monotonic() + WAIT_S
        while not (len(made) > n and made[n].connecting.is_set()):
            assert time.monotonic() < deadline
            time.sleep(0.001)
    started = threads_started(monkeypatch)
    for session in sessions:
        session.stop()
    for thread in connecting:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    assert [client.stops for client in made] == [1, 1]
    assert started in ([], ["wa-stopper"])  # started by an earlier test, or now, once


def test_a_stop_that_fails_does_not_end_the_stops_after_it() -> None:
    done = threading.Event()

    def failing() -> None:
        raise RuntimeError("Go said no")

    neonize_session.Stopper.submit(failing)
    neonize_session.Stopper.submit(done.set)
    assert done.wait(WAIT_S)
