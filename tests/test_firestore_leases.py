"""Membership and fenced handover against the real Firestore emulator.

The adapter (take, release, fencing, older versions' records) and the keeper's
policy on top of it, in one process: two or three keepers share the accounts, move
them when a replica joins or leaves, and never run one account in two places.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from google.cloud import firestore

from sidecar.adapters.firestore_leases import (
    HELD_FOR_OLDER_VERSIONS_MS,
    LEASES,
    REPLICAS,
    FirestoreLeases,
)
from sidecar.core.leases import LeaseKeeper
from sidecar.domain.assignment import assign

from .support.polling import eventually

pytestmark = pytest.mark.services

#: Long enough that a loaded machine's slow first round trips (the client's channel
#: set-up) do not outlast the watchdog's 70 % of it.
KEEPER_TTL_S = 4.0


@pytest.fixture
def project(emulator_host: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator_host)
    return f"leases-{os.getpid()}-{time.monotonic_ns()}"


@pytest.fixture
async def replicas(project: str) -> AsyncIterator[dict[str, FirestoreLeases]]:
    made = {name: FirestoreLeases(project, name, ttl_s=1.5) for name in ("r1", "r2")}
    yield made
    for leases in made.values():
        await leases.close()


async def document(project: str, collection: str, name: str) -> dict[str, object] | None:
    client = firestore.AsyncClient(project=project)
    try:
        snapshot = await client.collection(collection).document(name).get()
        return snapshot.to_dict() if snapshot.exists else None
    finally:
        client.close()  # type: ignore[no-untyped-call]


async def test_an_account_moves_only_once_its_holder_releases_it(
    replicas: dict[str, FirestoreLeases], project: str
) -> None:
    r1, r2 = replicas["r1"], replicas["r2"]
    assert await r1.heartbeat() is True
    assert await r2.heartbeat() is True
    assert sorted(await r1.live_replicas()) == ["r1", "r2"]
    assert await r1.take("sales") is True
    assert await r2.take("sales") is False
    held = await document(project, LEASES, "sales")
    assert held is not None
    assert held["holder"] == "r1"
    assert held["generation"] == 1
    assert held["expiresAtMs"] == HELD_FOR_OLDER_VERSIONS_MS
    await r2.release("sales")  # not its own: changes nothing
    assert await r2.take("sales") is False
    await r1.release("sales")
    assert await r2.take("sales") is True
    moved = await document(project, LEASES, "sales")
    assert moved is not None
    assert (moved["holder"], moved["generation"]) == ("r2", 2)


async def test_a_replica_past_its_membership_cannot_keep_or_take_back(
    replicas: dict[str, FirestoreLeases], project: str
) -> None:
    r1, r2 = replicas["r1"], replicas["r2"]
    await r1.heartbeat()
    await r2.heartbeat()
    assert await r1.take("sales") is True
    await asyncio.sleep(1.0)
    await r2.heartbeat()  # r1 stops renewing, as if paused or cut off
    assert await r2.take("sales") is False  # not yet: r1 is still a member
    await asyncio.sleep(0.8)
    await r2.heartbeat()
    assert await r1.live_replicas() == ["r2"]
    assert await r2.take("sales") is True
    # r1 wakes up: its renewal says its membership lapsed, and what moved stays moved
    assert await r1.heartbeat() is False
    assert await r1.take("sales") is False
    assert await r1.heartbeat() is True  # a member again, under a new incarnation
    assert sorted(await r2.live_replicas()) == ["r1", "r2"]


async def test_an_older_versions_lease_is_respected_until_it_expires(
    replicas: dict[str, FirestoreLeases], project: str
) -> None:
    client = firestore.AsyncClient(project=project)
    old = client.collection(LEASES).document("support")
    await old.set({"holder": "old-pod", "expiresAtMs": int(time.time() * 1000) + 1200})
    r1 = replicas["r1"]
    await r1.heartbeat()
    assert await r1.take("support") is False
    await asyncio.sleep(1.3)
    assert await r1.take("support") is True
    client.close()  # type: ignore[no-untyped-call]


async def test_records_of_replicas_long_gone_are_forgotten(
    replicas: dict[str, FirestoreLeases], project: str
) -> None:
    client = firestore.AsyncClient(project=project)
    now = int(time.time() * 1000)
    await client.collection(REPLICAS).document("gone").set({"expiresAtMs": now - 60_000})
    await client.collection(REPLICAS).document("just-gone").set({"expiresAtMs": now - 1000})
    client.close()  # type: ignore[no-untyped-call]
    r1 = replicas["r1"]
    await r1.heartbeat()
    assert await r1.live_replicas() == ["r1"]
    assert await document(project, REPLICAS, "gone") is None
    assert await document(project, REPLICAS, "just-gone") is not None


@dataclass
class Runs:
    """When each replica started and stopped each account (monotonic)."""

    events: list[tuple[float, str, str, str]] = field(default_factory=list)
    running: dict[str, set[str]] = field(default_factory=dict)

    def callbacks(self, replica: str) -> tuple[object, object]:
        self.running[replica] = set()

        async def start(account: str) -> None:
            self.events.append((time.monotonic(), replica, "start", account))
            self.running[replica].add(account)

        async def stop(account: str) -> None:
            await asyncio.sleep(0.3)  # a session takes a moment to stop
            self.running[replica].discard(account)
            self.events.append((time.monotonic(), replica, "stop", account))

        return start, stop

    def never_twice(self) -> None:
        spans: dict[str, list[tuple[float, float, str]]] = {}
        opened: dict[tuple[str, str], float] = {}
        for at, replica, what, account in self.events:
            if what == "start":
                opened[(replica, account)] = at
            elif (replica, account) in opened:
                spans.setdefault(account, []).append((opened.pop((replica, account)), at, replica))
        for (replica, account), at in opened.items():
            spans.setdefault(account, []).append((at, float("inf"), replica))
        for account, held in spans.items():
            held.sort()
            for (_, end, first), (begin, _, second) in itertools.pairwise(held):
                assert begin >= end, f"{account} run by {first} and {second} at once"


async def test_keepers_share_the_accounts_and_hand_them_over_stopped(project: str) -> None:
    accounts = [f"acct-{i}" for i in range(12)]
    runs = Runs()
    stopping: dict[str, asyncio.Event] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    keepers: dict[str, LeaseKeeper] = {}

    def launch(name: str) -> None:
        start, stop = runs.callbacks(name)
        leases = FirestoreLeases(project, name, ttl_s=KEEPER_TTL_S)
        keepers[name] = LeaseKeeper(leases, accounts, start, stop)  # type: ignore[arg-type]
        stopping[name] = asyncio.Event()
        tasks[name] = asyncio.create_task(keepers[name].run(stopping[name]))

    def settled(names: list[str]) -> bool:
        expected = assign(accounts, names)
        return all(
            runs.running.get(n, set()) == {a for a, r in expected.items() if r == n} for n in names
        ) and all(not runs.running[n] for n in runs.running if n not in names)

    try:
        launch("r1")
        launch("r2")
        await eventually(lambda: settled(["r1", "r2"]), 30, "two replicas to share 12 accounts")
        assert sorted(len(runs.running[n]) for n in ("r1", "r2")) == [6, 6]
        launch("r3")
        await eventually(lambda: settled(["r1", "r2", "r3"]), 30, "the third replica's share")
        stopping["r2"].set()  # r2 shuts down in order: stops, then leaves
        await tasks["r2"]
        await eventually(lambda: settled(["r1", "r3"]), 30, "r2's accounts to move")
        assert all(keeper.lost == 0 for keeper in keepers.values())
    finally:
        for name in stopping:
            stopping[name].set()
        await asyncio.wait_for(asyncio.gather(*tasks.values()), 30)
    runs.never_twice()
    assert not any(runs.running.values())
