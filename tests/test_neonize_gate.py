"""The gate around neonize's process-wide client tables: sends (readers) run together,
a start or stop (a writer) runs alone, and a waiting writer goes before new sends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sidecar.adapters.neonize_session import NeonizeGate

WAIT_S = 5.0


def test_sends_share_the_gate_and_a_start_waits_for_them_then_goes_first() -> None:
    order: list[str] = []
    inside = threading.Barrier(2, timeout=WAIT_S)
    release_sends = threading.Event()

    def send(name: str) -> None:
        with NeonizeGate.shared():
            order.append(f"{name} in")
            inside.wait()  # both sends are inside at once, or this times out
            release_sends.wait(WAIT_S)
            order.append(f"{name} out")

    sends = [threading.Thread(target=send, args=(n,)) for n in ("send-1", "send-2")]
    for thread in sends:
        thread.start()
    _until(lambda: order.count("send-1 in") + order.count("send-2 in") == 2)

    def start() -> None:
        release = NeonizeGate.hold()
        order.append("start")
        time.sleep(0.05)  # a late send must not slip in meanwhile
        release()

    starter = threading.Thread(target=start)
    starter.start()
    _until(lambda: NeonizeGate._writers_waiting == 1)

    def late_send() -> None:
        with NeonizeGate.shared():
            order.append("late send")

    late = threading.Thread(target=late_send)
    late.start()
    time.sleep(0.05)
    # both wait for the sends under way
    assert "start" not in order
    assert "late send" not in order
    release_sends.set()
    for thread in (*sends, starter, late):
        thread.join(WAIT_S)
    assert order.index("start") > max(order.index("send-1 out"), order.index("send-2 out"))
    assert order.index("late send") > order.index("start")  # the waiting start went first
    assert NeonizeGate._readers == 0
    assert not NeonizeGate._writing


def test_a_release_called_twice_releases_once() -> None:
    release = NeonizeGate.hold()
    release()
    release()
    taken = NeonizeGate.hold()  # would block forever had the gate been left half-released
    assert NeonizeGate._writing
    taken()
    assert not NeonizeGate._writing


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)
