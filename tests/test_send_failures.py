"""The send path when things go wrong (issue 16): refusals and retries until
``failed``, an outcome left unknown, a session lost mid-send, the send rate, and
bad requests on every field. WhatsApp's side is a scripted (fake) session."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sidecar.domain.outbox import OutboxItem

from .support.config import TOKEN, ConfigFactory
from .support.sending import TEST_JID, SendRig, queued_item, send_rig

T0 = 1_764_068_400.0
JID = TEST_JID


class ManualClock:
    """Time a test moves by hand (backoffs and leases without waiting for them)."""

    def __init__(self) -> None:
        self.t = T0

    def now(self) -> float:
        return self.t


def queued(n: int) -> OutboxItem:
    return queued_item(f"f-{n}", T0, text=f"text {n}")


async def attempt_all(rig: SendRig) -> int:
    claimed = await rig.worker.claim_once()
    await rig.worker.senders_done()
    return claimed


def journal_rows(rig: SendRig) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(rig.assembly.state_dir / "sends.sqlite3")
    try:
        return db.execute("SELECT item_id, wa_id, settled FROM sends ORDER BY item_id").fetchall()
    finally:
        db.close()


@pytest.fixture
def loaded(make_config: ConfigFactory) -> Any:
    return make_config(
        [{"id": "sales"}],
        send={"enabled": True, "max_attempts": 3, "rate_per_minute": 600, "burst": 100},
    )


async def test_refusals_back_off_and_end_failed_with_the_reason(loaded: Any) -> None:
    clock = ManualClock()
    async with send_rig(loaded, clock, run_worker=False) as rig:
        session = rig.sessions["sales"]
        session.refuse = ["rejected"] * 3
        await rig.worker.store.add(queued(1))
        assert await attempt_all(rig) == 1
        item = await rig.worker.store.get("f-1")
        assert item is not None
        assert (item.status, item.attempt_count, item.last_error) == ("queued", 1, "rejected")
        assert item.next_attempt_at == T0 + 2  # the first backoff
        assert await attempt_all(rig) == 0  # not due yet
        clock.t += 2
        assert await attempt_all(rig) == 1
        clock.t += 4
        assert await attempt_all(rig) == 1
        item = await rig.worker.store.get("f-1")
        assert item is not None
        assert (item.status, item.attempt_count, item.last_error) == ("failed", 3, "rejected")
        assert item.failed_at == clock.t
        assert await attempt_all(rig) == 0  # failed stays failed
        assert session.sent == []
        assert rig.metric("whatsapp_messages_sent_total", account="sales", result="rejected") == 3
        assert journal_rows(rig) == []  # a refusal surely sent nothing
        _, messages = _read(rig)
        assert messages["f-1"]["status"] == "failed"
        assert messages["f-1"]["lastError"] == "rejected"


def _read(rig: SendRig) -> tuple[Any, dict[str, Any]]:
    import json

    db = sqlite3.connect(rig.assembly.state_dir / "messages.sqlite3")
    try:
        rows = db.execute("SELECT message_id, doc FROM messages").fetchall()
    finally:
        db.close()
    return None, {message_id: json.loads(doc) for message_id, doc in rows}


async def test_a_timeout_may_have_reached_whatsapp_so_its_resend_is_counted(loaded: Any) -> None:
    clock = ManualClock()
    async with send_rig(loaded, clock, run_worker=False) as rig:
        rig.sessions["sales"].refuse = ["timeout"]
        await rig.worker.store.add(queued(1))
        await attempt_all(rig)
        assert journal_rows(rig) == [("f-1", None, 0)]  # started, outcome unknown
        clock.t += 2
        await attempt_all(rig)
        [(_, _, wa_id)] = rig.sessions["sales"].sent
        assert journal_rows(rig) == [("f-1", wa_id, 1)]
        assert rig.metric("whatsapp_send_outcome_unknown_total", account="sales") == 1
        assert rig.metric("whatsapp_messages_sent_total", account="sales", result="timeout") == 1
        assert rig.metric("whatsapp_messages_sent_total", account="sales", result="ok") == 1


async def test_a_session_lost_during_the_send_spends_no_attempt(loaded: Any) -> None:
    clock = ManualClock()
    async with send_rig(loaded, clock, run_worker=False) as rig:
        rig.sessions["sales"].refuse = ["not_connected"] * 5
        await rig.worker.store.add(queued(1))
        for _ in range(5):
            await attempt_all(rig)
            clock.t += 5
        item = await rig.worker.store.get("f-1")
        assert item is not None
        assert (item.status, item.attempt_count) == ("queued", 0)
        assert item.last_error == "account not connected"
        rig.sessions["sales"].connected = False  # a re-pair: nothing is claimed at all
        clock.t += 60
        assert await attempt_all(rig) == 0
        rig.sessions["sales"].connected = True
        assert await attempt_all(rig) == 1
        item = await rig.worker.store.get("f-1")
        assert item is not None
        assert (item.status, item.attempt_count) == ("sent", 1)


async def test_the_worker_sends_at_the_accounts_rate_and_gives_back_the_rest(
    make_config: ConfigFactory,
) -> None:
    loaded = make_config(
        [{"id": "sales"}], send={"enabled": True, "rate_per_minute": 1, "burst": 2}
    )
    clock = ManualClock()
    async with send_rig(loaded, clock, run_worker=False) as rig:
        for n in range(3):
            await rig.worker.store.add(queued(n))
        assert await attempt_all(rig) == 3
        assert len(rig.sessions["sales"].sent) == 2
        third = await rig.worker.store.get("f-2")
        assert third is not None
        # a minute to wait would outlast its claim: back in the queue, no attempt spent
        assert (third.status, third.attempt_count) == ("queued", 0)
        assert third.next_attempt_at == pytest.approx(T0 + 60)
        clock.t += 60
        assert await attempt_all(rig) == 1
        assert len(rig.sessions["sales"].sent) == 3


async def test_the_endpoint_refuses_past_the_accounts_rate(make_config: ConfigFactory) -> None:
    loaded = make_config(
        [{"id": "sales"}], send={"enabled": True, "rate_per_minute": 1, "burst": 2}
    )
    clock = ManualClock()
    async with send_rig(loaded, clock, connected=False) as rig:
        for n in range(2):
            status, _ = await rig.send({"accountId": "sales", "to": JID, "message": f"{n}"})
            assert status == 200
        again = {"accountId": "sales", "to": JID, "message": "x", "clientMessageId": "dup"}
        async with rig.client.post(
            "/api/whatsapp/send-message",
            json=again,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as reply:
            assert reply.status == 429
            assert reply.headers["Retry-After"] == "60"
            body = await reply.json()
        assert body["success"] is False
        assert body["error"] == "rate_limited"
        assert await rig.worker.store.get("dup") is None


BAD_REQUESTS = [
    ({"to": JID, "message": "m"}, 400, "invalid_request", "accountId"),
    ({"accountId": 7, "to": JID, "message": "m"}, 400, "invalid_request", "accountId"),
    ({"accountId": "nobody", "to": JID, "message": "m"}, 404, "account_not_found", "not found"),
    ({"accountId": "sales", "message": "m"}, 400, "invalid_request", "'to'"),
    ({"accountId": "sales", "to": "+1 202 555 012345678", "message": "m"}, 400, "", "'to'"),
    ({"accountId": "sales", "to": "hello@evil.example", "message": "m"}, 400, "", "'to'"),
    ({"accountId": "sales", "to": "12025550123:3@s.whatsapp.net", "message": "m"}, 400, "", "'to'"),
    ({"accountId": "sales", "to": ["12025550123"], "message": "m"}, 400, "", "'to'"),
    ({"accountId": "sales", "to": JID}, 400, "invalid_request", "'message'"),
    ({"accountId": "sales", "to": JID, "message": ""}, 400, "invalid_request", "'message'"),
    ({"accountId": "sales", "to": JID, "message": {"text": "m"}}, 400, "", "'message'"),
    ({"accountId": "sales", "to": JID, "message": "m" * 65_537}, 413, "message_too_long", ""),
    ({"accountId": "sales", "to": JID, "message": "m", "clientMessageId": 5}, 400, "", "client"),
    ({"accountId": "sales", "to": JID, "message": "m", "clientMessageId": ""}, 400, "", "client"),
    (
        {"accountId": "sales", "to": JID, "message": "m", "clientMessageId": "c" * 201},
        400,
        "",
        "clientMessageId",
    ),
]


@pytest.mark.parametrize(("body", "status", "error", "names"), BAD_REQUESTS)
async def test_a_bad_request_is_refused_naming_the_field_never_its_value(
    loaded: Any, body: dict[str, Any], status: int, error: str, names: str
) -> None:
    async with send_rig(loaded, ManualClock(), connected=False) as rig:
        got, answer = await rig.send(body)
        assert got == status, answer
        assert answer["success"] is False
        assert answer["error"] == (error or "invalid_request")
        assert names.lower() in answer["message"].lower()
        text = str(answer)
        for value in ("12025550123", "012345678", "evil", "nobody", "m" * 20, "c" * 20):
            assert value not in text
        assert rig.sessions["sales"].sent == []
        assert await rig.worker.store.counts(["sales"]) == []


async def test_no_token_is_401_before_anything_and_sending_off_is_403(
    make_config: ConfigFactory, loaded: Any
) -> None:
    async with send_rig(loaded, ManualClock()) as rig:
        status, answer = await rig.send({"accountId": "nobody"}, token=None)
        assert (status, answer) == (401, {"error": "unauthorized"})
    off = make_config([{"id": "sales"}])
    from aiohttp.test_utils import TestClient, TestServer

    from sidecar.compose import assemble, build_app

    assembly = assemble(off, ManualClock(), storage=False)
    async with TestClient(TestServer(build_app(assembly))) as client:
        reply = await client.post(
            "/api/whatsapp/send-message",
            json={"accountId": "sales", "to": JID, "message": "m"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert reply.status == 403
        assert (await reply.json())["error"] == "sending_disabled"
    assembly.close()


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("websocket not connected", "not_connected"),
        ("failed to send: info query timed out", "timeout"),
        ("context deadline exceeded", "timeout"),
        ("server returned error 429", "rate_limited"),
        ("server returned error 479", "rejected"),
    ],
)
def test_whatsmeows_send_errors_are_counted_by_a_few_words(error: str, reason: str) -> None:
    from neonize.exc import SendMessageError

    from sidecar.adapters.neonize_session import refusal_reason

    assert refusal_reason(SendMessageError(error)) == reason
    if reason == "rejected":
        assert refusal_reason(ValueError(error)) == "other"


def test_the_journal_forgets_settled_sends_after_two_weeks_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    from sidecar.adapters.send_journal import KEEP_S, SqliteSendJournal

    journal = SqliteSendJournal(tmp_path)
    old, unsettled = queued(1), queued(2)
    journal.started(old, T0)
    journal.accepted(old.id, "3EB0OLD", T0)
    journal.settled(old.id)
    journal.started(unsettled, T0)  # its outcome is unknown: kept, whatever its age
    assert journal.prune(T0 + KEEP_S - 1) == 0
    assert [s.message_id for s in journal.sent("sales", ["3EB0OLD"])] == ["f-1"]
    assert journal.prune(T0 + KEEP_S + 1) == 1
    assert journal.sent("sales", ["3EB0OLD"]) == []
    past = journal.past(unsettled.id)
    assert past is not None
    assert past.wa_id is None
    journal.close()
