"""Counting the outbox for the metrics (issue 20): what a count costs in Firestore
queries for many accounts, and that the counts and the oldest queued message stay
right across the ``in`` filter's chunks of 30 accounts, on both stores."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from sidecar.adapters.outbox_sqlite import SqliteOutbox
from sidecar.adapters.send_journal import SqliteSendJournal
from sidecar.core.outbox_counting import SETTLED_REFRESH_S
from sidecar.core.ports import OpenItems, OutboxStore
from sidecar.core.sender import OutboxWorker
from sidecar.domain import outbox
from sidecar.domain.outbox import OutboxItem, SendPolicy

from .support.backends import Backend, make_outbox
from .support.sending import ScriptedWhatsApp

POLICY = SendPolicy(max_attempts=3, lease_s=60.0)
T0 = 1_764_068_400.0


class StillClock:
    """Stands at ``at`` until a test moves it."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


def make_worker(
    store: OutboxStore, state_dir: Path, accounts: list[str], clock: StillClock
) -> OutboxWorker:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return OutboxWorker(
        store,
        SqliteSendJournal(state_dir),
        clock,
        worker_id="replica-a",
        sessions=lambda _account: None,
        held=lambda: accounts,
        deliver=lambda _account, _event: None,
        policy=POLICY,
        rate=(6000.0, 1000),
        poll_interval_s=0.05,
    )


def account_names(n: int, prefix: str = "acct") -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


@dataclass
class Calls:
    """Firestore RPCs made, by method, and the documents the queries returned."""

    made: Counter[str]
    documents: int = 0

    @property
    def queries(self) -> int:
        return self.made["run_query"] + self.made["run_aggregation_query"]

    def reset(self) -> None:
        self.made.clear()
        self.documents = 0


@pytest.fixture
def firestore_calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every query and aggregation query the Firestore client sends, counted at the
    RPC (the client's generated API), however the adapter builds them."""
    from google.cloud.firestore_v1.services.firestore.async_client import FirestoreAsyncClient

    calls = Calls(Counter())

    def counting(name: str, documents: bool) -> Callable[..., Any]:
        original = getattr(FirestoreAsyncClient, name)

        async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.made[name] += 1
            responses = await original(self, *args, **kwargs)
            if not documents:
                return responses

            async def counted() -> Any:
                async for response in responses:
                    if response.document and response.document.name:
                        calls.documents += 1
                    yield response

            return counted()

        return call

    monkeypatch.setattr(FirestoreAsyncClient, "run_query", counting("run_query", True))
    monkeypatch.setattr(
        FirestoreAsyncClient, "run_aggregation_query", counting("run_aggregation_query", False)
    )
    return calls


def queued(account: str, n: int, **fields: Any) -> OutboxItem:
    base = OutboxItem(
        id=f"{account}-{n:03d}",
        account_id=account,
        to_jid="12025550123@s.whatsapp.net",
        thread_id=f"{account}__12025550123@s.whatsapp.net",
        text=f"message {n}",
        client_message_id=f"{account}-{n:03d}",
        next_attempt_at=T0 + 10_000,  # not due: stays queued through the claims below
        created_at=T0 + n,
    )
    return replace(base, **fields)


@pytest.mark.parametrize("backend", ["firestore"], indirect=True)
async def test_a_count_queries_per_30_accounts_not_per_account_and_status(
    backend: Backend, tmp_path: Path, firestore_calls: Calls
) -> None:
    """Before: 4 aggregations and 1 query per account at every count (5 x accounts:
    325 for 65). Now: 2 queries per 30 accounts (queued, processing) at every count; the
    sent and failed aggregations only when an account's were not counted yet (the first
    count). The figures in docs/deploy.md, "Outbox counting", are these."""
    for n in (65, 1000):
        accounts = account_names(n, prefix=f"of{n}")  # one project: apart from the last round's
        store = make_outbox(backend)
        worker = make_worker(store, tmp_path / f"state-{n}", accounts, StillClock(T0))
        await store.add(queued(accounts[0], 1))
        await store.add(queued(accounts[-1], 2))
        firestore_calls.reset()
        await worker.count()
        chunks = math.ceil(n / 30)
        assert firestore_calls.queries == 2 * chunks + 2 * n  # the first count: settled too
        assert worker.counted.counts[accounts[0]] == {outbox.QUEUED: 1}
        firestore_calls.reset()
        await worker.count()
        assert firestore_calls.made == {"run_query": 2 * chunks}  # not 5 x accounts
        assert firestore_calls.documents == 2  # the two queued items, nothing else read
        assert worker.counted.counts[accounts[-1]] == {outbox.QUEUED: 1}
        assert worker.counted.oldest_queued == {accounts[0]: T0 + 1, accounts[-1]: T0 + 2}
        await worker.close()


async def fill(
    store: OutboxStore, accounts: list[str]
) -> tuple[dict[str, dict[str, int]], dict[str, float]]:
    """Items of every status for ``accounts`` (the first 30 with more queued ones than
    one query reads: a backlog); returns the counts and oldest queued expected."""
    expected: dict[str, dict[str, int]] = {a: {} for a in accounts}
    oldest: dict[str, float] = {}
    due: dict[str, str] = {}  # id -> the status it is to end in
    for i, account in enumerate(accounts):
        waiting = (i % 5) + 1 if i < 30 else i % 3
        for k in reversed(range(waiting)):  # the oldest added last
            await store.add(queued(account, k, created_at=T0 + 10 * i + k))
        if waiting:
            expected[account][outbox.QUEUED] = waiting
            oldest[account] = T0 + 10 * i
        for status, every in ((outbox.PROCESSING, 4), (outbox.SENT, 6), (outbox.FAILED, 7)):
            if i % every == 0:
                item_id = f"{account}-{status}"
                await store.add(queued(account, 99, id=item_id, next_attempt_at=T0))
                due[item_id] = status
                expected[account][status] = 1
    claimed = await store.claim(accounts, T0 + 10, "replica-x", POLICY, limit=100)
    assert sorted(c.id for c in claimed) == sorted(due)
    for c in claimed:
        if due[c.id] == outbox.SENT:
            assert await store.settle(c, outbox.recorded(c, f"3EB0{c.id}", T0 + 11))
        elif due[c.id] == outbox.FAILED:
            last = replace(c, attempt_count=POLICY.max_attempts)
            assert await store.settle(c, outbox.attempt_failed(last, T0 + 11, "x", POLICY))
    return expected, oldest


async def test_counts_and_the_oldest_queued_are_right_across_chunks_of_accounts(
    backend: Backend, tmp_path: Path, firestore_calls: Calls
) -> None:
    """65 accounts: three chunks of the ``in`` filter, the first with a backlog (read
    per account), the last short; every status, the oldest queued added last."""
    accounts = account_names(65)
    store = make_outbox(backend)
    expected, oldest = await fill(store, accounts)
    worker = make_worker(store, tmp_path / "state", accounts, StillClock(T0 + 20))
    await worker.count()
    assert worker.counted.counts == expected
    assert worker.counted.oldest_queued == oldest
    found = await store.open_items(accounts)
    assert found.oldest_queued == oldest
    every = sorted(await store.counts(accounts))  # counted per account: the oracle
    assert sorted(found.counts) == [row for row in every if row[1] in outbox.OPEN]
    firestore_calls.reset()
    await worker.count()  # nothing settled since: the open items only
    assert worker.counted.counts == expected
    assert worker.counted.oldest_queued == oldest
    if backend.name == "firestore":
        # 3 chunks x (queued, processing) = 6 queries; the backlog chunk's queued items
        # counted per account instead of read: 30 counts and 30 oldest-queued queries
        assert firestore_calls.made == {"run_query": 6 + 30, "run_aggregation_query": 30}
        # the backlog's read stops at 61 and each oldest-queued query reads one; then
        # the other chunks' queued (30 + 4) and the processing ones (17), one read each
        assert firestore_calls.documents == 61 + 30 + 30 + 4 + 17
    await worker.close()


class RecordingOutbox(SqliteOutbox):
    """The SQLite outbox, noting which accounts' settled items each count recounts;
    ``fail_next`` makes the next open read fail as a store that is down would."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.recounted: list[list[str]] = []
        self.fail_next = False

    async def counts(
        self, accounts: Collection[str], statuses: Collection[str] = outbox.STATUSES
    ) -> list[tuple[str, str, int]]:
        assert tuple(statuses) == outbox.SETTLED
        self.recounted.append(sorted(accounts))
        return await super().counts(accounts, statuses)

    async def open_items(self, accounts: Collection[str]) -> OpenItems:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("the store is down")
        return await super().open_items(accounts)

    def recounts(self) -> list[list[str]]:
        taken, self.recounted = self.recounted, []
        return taken


async def test_settled_items_are_recounted_only_when_they_may_have_moved(
    tmp_path: Path,
) -> None:
    """Sent and failed counts are kept between counts and recounted for an account not
    counted yet, one this replica settled an item of, one whose open items fell (another
    writer settled one), and every account once they are SETTLED_REFRESH_S old."""
    clock = StillClock(T0)
    store = RecordingOutbox(tmp_path / "state")
    whatsapp = ScriptedWhatsApp()
    held = ["a", "b", "c"]
    worker = OutboxWorker(
        store,
        SqliteSendJournal(tmp_path / "state"),
        clock,
        worker_id="replica-a",
        sessions=lambda account: whatsapp if account == "a" else None,  # only a sends here
        held=lambda: held,
        deliver=lambda _account, _event: None,
        policy=POLICY,
        rate=(6000.0, 1000),
        poll_interval_s=0.05,
    )
    await store.add(queued("a", 1, next_attempt_at=T0))
    await store.add(queued("b", 1, next_attempt_at=T0))
    await worker.count()
    assert store.recounts() == [["a", "b", "c"]]  # none counted yet
    await worker.count()
    assert store.recounts() == []
    assert worker.counted.counts == {"a": {"queued": 1}, "b": {"queued": 1}, "c": {}}

    assert await worker.claim_once() == 1  # a's item, sent by this replica
    await worker.senders_done()
    await worker.count()
    assert store.recounts() == [["a"]]
    assert worker.counted.counts["a"] == {"sent": 1}

    [other] = await store.claim(["b"], T0, "replica-b", POLICY, limit=1)  # another writer
    await store.settle(other, outbox.recorded(other, "3EB0B", T0))
    await worker.count()
    assert store.recounts() == [["b"]]  # b's open items fell
    assert worker.counted.counts["b"] == {"sent": 1}

    await store.add(queued("a", 2, next_attempt_at=T0))
    await worker.claim_once()
    await worker.senders_done()
    store.fail_next = True
    await worker.count()  # fails: the last counts stay, and a is still to recount
    assert worker.counted.counts["a"] == {"sent": 1}
    await worker.count()
    assert store.recounts() == [["a"]]
    assert worker.counted.counts["a"] == {"sent": 2}

    clock.at = T0 + SETTLED_REFRESH_S - 1
    await worker.count()
    assert store.recounts() == []
    clock.at = T0 + SETTLED_REFRESH_S
    held.append("d")
    await worker.count()
    assert store.recounts() == [["a", "b", "c", "d"]]  # due, and d not counted yet
    held.remove("b")
    await worker.count()
    assert store.recounts() == []
    assert set(worker.counted.counts) == {"a", "c", "d"}
    held.append("b")  # held again: counted anew
    await worker.count()
    assert store.recounts() == [["b"]]
    await worker.close()
