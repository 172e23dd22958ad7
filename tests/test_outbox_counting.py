"""Counting the outbox for the metrics (issue 20): what a count costs in Firestore
queries for many accounts, and that the counts and the oldest queued message stay
right across the ``in`` filter's chunks of 30 accounts, on both stores."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from sidecar.adapters.send_journal import SqliteSendJournal
from sidecar.core.ports import OutboxStore
from sidecar.core.sender import OutboxWorker
from sidecar.domain import outbox
from sidecar.domain.outbox import OutboxItem, SendPolicy

from .support.backends import Backend, make_outbox

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
    """Before: 4 aggregations and 1 query per account at every count (5 x accounts).
    Now: 2 queries per 30 accounts (queued, processing) at every count; the sent and
    failed aggregations only when an account's were not counted yet (the first count)."""
    for n in (65, 130):
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
