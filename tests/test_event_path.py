"""The event path of issue 20: a real message costs the handler a few values and a share
of one journal write; the writer builds its documents and stores a batch in a few
statements. What that must keep: durable before the handler returns (a replay's
batch before its next pause), and the same documents, to the byte."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sidecar import testing as build
from sidecar.adapters import capture as capture_module
from sidecar.adapters.capture import encode_record, parse_line
from sidecar.adapters.spool import Batch, Spool, SpooledThread
from sidecar.adapters.spool import facade as spool_facade
from sidecar.adapters.spool import pacing as spool_pacing
from sidecar.adapters.store_sqlite import SqliteMessageStore, plain
from sidecar.core.clock import ReplayClock
from sidecar.core.replay import YIELD_EVERY, Replayer
from sidecar.core.service import Sidecar
from sidecar.core.spool_writer import SpoolWriter, StoreStats
from sidecar.core.waits import wait_event
from sidecar.domain.classify import classify
from sidecar.domain.records import SERVER_TIME, MessageDoc, ThreadPatch, Timestamp, build_records

from .support.backends import Backend
from .support.config import ConfigFactory
from .support.storage import close, drain, make_sidecar

CHATS = [build.jid(f"1202555012{n}") for n in range(3)]


def texts(count: int, start_ms: int = 1_764_068_400_000) -> list[Any]:
    return [
        build.message_event(
            build.text(f"message {n}"),
            chat=CHATS[n % len(CHATS)],
            message_id=f"M{n:05d}",
            timestamp_ms=start_ms + n,
        )
        for n in range(count)
    ]


def backlog(sidecar: Sidecar) -> int:
    assert sidecar.storage is not None
    return sum(b.messages for b in sidecar.storage.spool.backlog().values())


def counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Count the calls of ``module.name`` (as that module calls it)."""
    calls: list[int] = []
    real = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


async def test_the_handler_builds_no_document_and_the_writer_builds_each_once(
    make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sidecar = make_sidecar(make_config, Backend("sqlite", tmp_path / "state", None))
    docs = counting(monkeypatch, spool_facade, "message_doc")
    thread_updates = counting(monkeypatch, spool_pacing, "thread_patch")
    events = texts(30)
    for event in events:
        sidecar.handle("sales", event, 1_764_068_400.0)
    assert backlog(sidecar) == 30  # each durable when the handler returned
    assert (len(docs), len(thread_updates)) == (0, 0)
    await drain(sidecar)
    assert len(docs) == 30
    assert len(thread_updates) == len(CHATS)  # one per chat written, not one per message
    stored = Backend("sqlite", tmp_path / "state", None).read()
    expected = [build_records("sales", event, classify(event.Message)) for event in events]
    for doc, _ in expected:  # type: ignore[misc]
        fields = stored[doc.thread_id][1][doc.message_id]
        assert fields["body"] == doc.fields["body"]
        assert fields["tsClient"] == doc.fields["tsClient"].ms
    await close(sidecar)


def test_a_live_callback_is_durable_when_it_returns_while_a_replay_holds_its_own(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    sidecar = make_sidecar(make_config, Backend("sqlite", tmp_path / "state", None))
    replayed, live = texts(2)
    with sidecar.durable_together() as durable:
        sidecar.handle("sales", replayed, 1.0)
        assert backlog(sidecar) == 0  # held until the replay's next pause
        callback = threading.Thread(target=sidecar.handle, args=("sales", live, 2.0))
        callback.start()
        callback.join()
        assert backlog(sidecar) == 1  # another thread's message is not held
        durable()
        assert backlog(sidecar) == 2
    asyncio.run(close(sidecar))


async def test_a_replay_writes_the_journal_once_per_pause_and_is_durable_at_each(
    make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sidecar = make_sidecar(make_config, Backend("sqlite", tmp_path / "state", None))
    assert sidecar.storage is not None
    spool = sidecar.storage.spool
    assert isinstance(spool, Spool)
    writes: list[int] = []
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if fd == spool._journal.fd and not bytes(data).startswith(b"{"):  # not a header
            writes.append(bytes(data).count(b"\n"))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    capture = tmp_path / "capture.jsonl"
    events = texts(1000)
    capture.write_text(
        "".join(encode_record(1_764_068_400.0 + n, "sales", e) + "\n" for n, e in enumerate(events))
    )
    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def watch() -> None:  # runs only when the replay pauses
        while not done.is_set():
            counted = sidecar.snapshot("sales").message_counts
            seen.append((sum(counted.values()), backlog(sidecar)))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    report = await Replayer(sidecar, ReplayClock(0)).run(capture_module.capture_records(capture))
    done.set()
    await watcher
    assert report.events == 1000
    assert sum(writes) == 1000
    assert len(writes) <= 1000 // YIELD_EVERY + 1
    assert len(seen) >= 1000 // YIELD_EVERY
    assert all(counted == durable for counted, durable in seen)  # nothing counted is pending
    assert backlog(sidecar) == 1000
    await close(sidecar)


class _IdleSpool:
    """A spool with nothing to take: the writer drains it in no time."""

    def __init__(self) -> None:
        self.takes = 0

    def take(self, limit: int = 500, *, after: Batch | None = None) -> Batch:
        self.takes += 1
        return Batch()


async def test_a_burst_of_wake_ups_from_other_threads_reaches_the_loop_once() -> None:
    spool = _IdleSpool()
    writer = SpoolWriter(spool, None, StoreStats())  # type: ignore[arg-type]  # never writes
    task = asyncio.create_task(writer.run())
    while spool.takes == 0:
        await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    sent: list[Any] = []  # the writer's wake-ups among what is handed to the loop
    real = loop.call_soon_threadsafe

    def call_soon_threadsafe(callback: Any, *args: Any) -> Any:
        if callback == writer._woken:
            sent.append(callback)
        return real(callback, *args)

    def burst_of_wake_ups() -> None:
        for _ in range(1000):
            writer.wake()

    loop.call_soon_threadsafe = call_soon_threadsafe  # type: ignore[method-assign,assignment]
    try:
        burst = threading.Thread(target=burst_of_wake_ups)
        burst.start()
        burst.join()  # the loop is blocked meanwhile: no wake-up has run yet
        assert len(sent) == 1
        takes = spool.takes
        while spool.takes == takes:  # the one wake-up makes the writer look again
            await asyncio.sleep(0)
        later = threading.Thread(target=writer.wake)
        later.start()
        later.join()
        assert len(sent) == 2  # once it ran, the next wake-up is sent again
    finally:
        del loop.call_soon_threadsafe
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_writer_cancelled_as_it_is_woken_stops() -> None:
    """Python 3.11's wait_for swallowed a cancellation that came with the wake-up: the
    writer went on forever, and so did the shutdown that waited for it."""
    spool = _IdleSpool()
    writer = SpoolWriter(spool, None, StoreStats())  # type: ignore[arg-type]  # never writes
    task = asyncio.create_task(writer.run())
    while spool.takes == 0:
        await asyncio.sleep(0)
    for _ in range(5):  # into its wait for a wake-up
        await asyncio.sleep(0)
    writer.wake()  # on the loop: the event is set now
    task.cancel()  # in the same turn
    done, _ = await asyncio.wait({task}, timeout=3)
    assert done == {task}
    assert task.cancelled()


async def test_waiting_for_an_event_tells_its_timeout_from_a_cancellation() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 10) is True
    event.clear()
    waiting = asyncio.create_task(wait_event(event, 10))
    await asyncio.sleep(0)
    event.set()
    waiting.cancel()  # in the same turn as the event
    with pytest.raises(asyncio.CancelledError):
        await waiting


def _doc(n: int, thread: str, **fields: Any) -> MessageDoc:
    return MessageDoc(
        "sales",
        thread,
        f"M{n}",
        {
            "body": f'é \u2028 "quoted" \\ {n}',
            "tsClient": Timestamp(n),
            "createdAt": SERVER_TIME,
            "key": {"id": f"M{n}", "fromMe": False, "participant": None, "nested": {"x": [1]}},
            **fields,
        },
    )


def test_the_sqlite_store_writes_a_batch_in_a_few_statements_and_by_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteMessageStore(tmp_path)
    monkeypatch.setattr(time, "time", lambda: 1_764_068_400.5)  # "now" of SERVER_TIME
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    threads = [f"sales__{n}@s.whatsapp.net" for n in range(120)]
    messages = [(n, _doc(n, threads[n % len(threads)])) for n in range(450)]
    patches = [ThreadPatch("sales", t, {"lastMessageAt": Timestamp(7), "x": "ü"}) for t in threads]
    batch = Batch(messages, [SpooledThread(p, 1) for p in patches])
    store._write(batch)
    assert 4 <= len(statements) <= 10  # BEGIN, a read, a few upserts, COMMIT
    db = store._db
    plan = db.execute(
        "EXPLAIN QUERY PLAN " + next(s for s in statements if s.startswith("SELECT"))
    ).fetchall()
    assert not any("SCAN m" in str(step) for step in plan)
    now_ms = 1_764_068_400_500
    for n, doc in messages[:20]:
        (text,) = db.execute(
            "SELECT doc FROM messages WHERE thread_id = ? AND message_id = ?",
            (doc.thread_id, doc.message_id),
        ).fetchone()
        assert text == json.dumps(plain(doc.fields, now_ms), ensure_ascii=False)
    (thread_text,) = db.execute(
        "SELECT doc FROM threads WHERE thread_id = ?", (threads[0],)
    ).fetchone()
    assert thread_text == json.dumps(plain(patches[0].fields, now_ms), ensure_ascii=False)
    asyncio.run(store.close())


@pytest.mark.parametrize(
    "raw",
    [
        b'{"t": 1764068400, "account": "sales", "event": "ConnectedEv", "payload": ""}\n',
        b'{"t": 123456789012345678901234567890, "event": "tick"}\n',
        b'{"t": NaN, "event": "tick"}\n',
        b'{"t": 1764068400, "account": "\\ud800", "event": "ConnectedEv"}\n',
        b'\xef\xbb\xbf{"t": 1764068400, "event": "tick"}\n',
        b'{"t": 1, "t": 1764068400.5, "event": "tick"}\n',
        b'{"t": 1764068400, "account": "s", "event": "ProbeSent",'
        b' "probe": {"id": "p", "peer": "x", "ok": 123456789012345678901234567890}}\n',
        b"[1, 2]\n",
        b"\xff\n",
        b"[" * 5000 + b"\n",
    ],
)
def test_capture_lines_are_read_as_the_standard_library_reads_them(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = parse_line(raw, 7)
    monkeypatch.setattr(capture_module, "_loads", json.loads)
    assert fast == parse_line(raw, 7)
