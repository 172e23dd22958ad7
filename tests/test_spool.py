"""The spool: durable before the handler returns, coalesced per thread, acked with care."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sidecar import testing as build
from sidecar.adapters.spool import FLUSH_EVERY, Spool
from sidecar.domain.classify import classify
from sidecar.domain.records import (
    SERVER_TIME,
    Timestamp,
    build_records,
    merge_thread_fields,
    preview,
)

from .support.clock import SettableClock


def records(body: str, message_id: str, ts_ms: int, *, from_me: bool = False):  # type: ignore[no-untyped-def]
    event = build.message_event(
        build.text(body), message_id=message_id, timestamp_ms=ts_ms, from_me=from_me
    )
    built = build_records("sales", event, classify(event.Message))
    assert built is not None
    return built


def test_thread_updates_coalesce_and_newest_wins(tmp_path: Path) -> None:
    clock = SettableClock()
    spool = Spool(tmp_path, now=clock)
    for doc, patch in (
        records("first", "A", 2000),
        records("late backlog", "B", 1000),
        records("reply", "C", 3000, from_me=True),
    ):
        spool.enqueue(doc, patch)
    batch = spool.take()
    assert [d.message_id for _, d in batch.messages] == ["A", "B", "C"]
    [thread] = batch.threads
    fields = thread.patch.fields
    assert fields["lastMessageAtMs"] == 3000
    assert fields["lastMessageDirection"] == "outbound"
    assert fields["lastInboundAtMs"] == 2000  # the late backlog message did not rewind it
    assert fields["lastMessageText"] == "first"


def test_a_thread_written_recently_waits_its_turn(tmp_path: Path) -> None:
    clock = SettableClock()
    spool = Spool(tmp_path, thread_interval_s=1.0, now=clock)
    spool.enqueue(*records("one", "A", 1))
    spool.ack(spool.take())
    clock.now += 0.25
    spool.enqueue(*records("two", "B", 2))
    batch = spool.take()
    assert [d.message_id for _, d in batch.messages] == ["B"]
    assert batch.threads == []
    assert batch.next_due_s == 0.75
    assert not spool.is_empty()
    clock.now += 0.75
    assert [t.patch.fields["lastMessageText"] for t in spool.take().threads] == ["two"]


def test_ack_keeps_a_thread_update_that_arrived_meanwhile(tmp_path: Path) -> None:
    clock = SettableClock()
    spool = Spool(tmp_path, thread_interval_s=0.0, now=clock)
    spool.enqueue(*records("one", "A", 1))
    batch = spool.take()
    spool.enqueue(*records("two", "B", 2))  # while the batch is being written
    spool.ack(batch)
    nxt = spool.take()
    assert [d.message_id for _, d in nxt.messages] == ["B"]
    assert [t.patch.fields["lastMessageText"] for t in nxt.threads] == ["two"]
    spool.ack(nxt)
    assert spool.is_empty()


def test_spool_survives_reopening_and_reports_backlog(tmp_path: Path) -> None:
    clock = SettableClock()
    spool = Spool(tmp_path, now=clock)
    spool.enqueue(*records("kept", "A", 1))
    clock.now += 5
    spool.enqueue(*records("kept too", "B", 2))
    spool.close()
    reopened = Spool(tmp_path, now=clock)
    backlog = reopened.backlog()["sales"]
    assert (backlog.messages, backlog.oldest_enqueued_at) == (2, 1000.0)
    assert (tmp_path / "spool.sqlite3").stat().st_mode & 0o777 == 0o600


def test_a_killed_process_loses_nothing_the_journal_holds(tmp_path: Path) -> None:
    clock = SettableClock()
    killed = Spool(tmp_path, now=clock)
    killed.enqueue(*records("one", "A", 1))
    killed.enqueue(*records("two", "B", 2))
    assert not killed.is_empty()
    # never flushed, never closed: what a SIGKILL leaves behind is the journal
    assert (tmp_path / "spool.journal").stat().st_mode & 0o777 == 0o600
    restarted = Spool(tmp_path, now=clock)
    batch = restarted.take()
    assert [d.message_id for _, d in batch.messages] == ["A", "B"]
    assert [d.fields["body"] for _, d in batch.messages] == ["one", "two"]
    assert [t.patch.fields["lastMessageText"] for t in batch.threads] == ["two"]
    assert batch.messages[0][1].fields["tsClient"] == Timestamp(1)
    assert restarted.backlog()["sales"].oldest_enqueued_at == 1000.0


def test_a_journal_already_moved_into_sqlite_is_not_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, now=SettableClock())
    spool.enqueue(*records("once", "A", 1))
    journal = (tmp_path / "spool.journal").read_bytes()
    spool.flush()
    spool.close()
    # killed after the move committed but before the journal started over
    (tmp_path / "spool.journal").write_bytes(journal)
    reopened = Spool(tmp_path, now=SettableClock())
    assert [d.message_id for _, d in reopened.take().messages] == ["A"]


def test_a_torn_last_journal_line_is_skipped_and_the_rest_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    killed = Spool(tmp_path, now=SettableClock())
    killed.enqueue(*records("whole", "A", 1))
    killed.enqueue(*records("torn", "B", 2))
    journal = tmp_path / "spool.journal"
    journal.write_bytes(journal.read_bytes()[:-20])
    restarted = Spool(tmp_path, now=SettableClock())
    assert [d.message_id for _, d in restarted.take().messages] == ["A"]
    assert "1 unreadable journal entries skipped" in caplog.text
    assert "torn" not in caplog.text


def test_the_handler_moves_a_full_journal_into_sqlite_itself(tmp_path: Path) -> None:
    spool = Spool(tmp_path, now=SettableClock())
    for i in range(FLUSH_EVERY):
        spool.enqueue(*records(f"m{i}", f"M{i}", i))
    journal = (tmp_path / "spool.journal").read_bytes()
    assert journal.count(b"\n") == 1  # only the new generation's header is left
    assert spool.backlog()["sales"].messages == FLUSH_EVERY


def test_the_batch_behind_one_in_flight_skips_its_messages_and_threads(tmp_path: Path) -> None:
    clock = SettableClock()
    spool = Spool(tmp_path, thread_interval_s=0.0, now=clock)
    for i in range(5):
        spool.enqueue(*records(f"m{i}", f"M{i}", i))
    in_flight = spool.take(limit=3)  # one thread update and the two oldest messages
    assert [d.message_id for _, d in in_flight.messages] == ["M0", "M1"]
    behind = spool.take(after=in_flight)
    assert [d.message_id for _, d in behind.messages] == ["M2", "M3", "M4"]
    assert behind.threads == []  # its thread is being written already
    assert [d.message_id for _, d in spool.take().messages][:2] == ["M0", "M1"]  # nothing acked


def test_merge_is_by_message_time_per_group_of_fields() -> None:
    older = {
        "lastMessageAtMs": 5,
        "lastMessageDirection": "inbound",
        "lastInboundAtMs": 5,
        "lastMessageText": "x",
        "lastInboundAt": Timestamp(5),
        "lastMessagePreview": "x",
    }
    newer_out = {"lastMessageAtMs": 9, "lastMessageDirection": "outbound", "updatedAt": SERVER_TIME}
    merged = merge_thread_fields(older, newer_out)
    assert (
        merged["lastMessageAtMs"],
        merged["lastMessageDirection"],
        merged["lastMessageText"],
    ) == (9, "outbound", "x")
    assert (
        merge_thread_fields(newer_out | {"lastMessageAtMs": 9}, older)["lastMessageDirection"]
        == "outbound"
    )


def test_preview_collapses_whitespace_and_stops_at_100() -> None:
    assert preview("  a\n\tb   c ") == "a b c"
    assert preview("x" * 150) == "x" * 100


def test_a_written_thread_update_leaves_no_trace_of_its_text_or_number(tmp_path: Path) -> None:
    """Once the store confirmed a thread update (and no newer one waits), the spool keeps
    neither its last text nor the chat's number: not in a row, not in free pages, not in
    the WAL, not in memory; pacing still holds the thread's next update back."""
    clock = SettableClock()
    spool = Spool(tmp_path, thread_interval_s=60.0, now=clock)
    chat = build.jid("40721555123")

    def enqueue(body: str, message_id: str, ts_ms: int) -> None:
        event = build.message_event(
            build.text(body), chat=chat, message_id=message_id, timestamp_ms=ts_ms
        )
        built = build_records("sales", event, classify(event.Message))
        assert built is not None
        spool.enqueue(*built)

    enqueue("meet me at the clinic at 7pm", "A", 1)
    first = spool.take()
    assert [t.patch.fields["lastMessageText"] for t in first.threads] == [
        "meet me at the clinic at 7pm"
    ]
    spool.ack(first)
    clock.now += 1
    enqueue("bring the passport scan", "B", 2)
    held = spool.take()
    assert (held.threads, held.next_due_s) == ([], 59.0)  # pacing still knows the thread
    spool.ack(held)
    clock.now += 59
    due = spool.take()
    assert [t.patch.fields["lastMessageText"] for t in due.threads] == ["bring the passport scan"]
    spool.ack(due)
    assert spool.is_empty()

    secrets = [b"meet me at the clinic", b"passport scan", b"40721555123"]

    def on_disk() -> bytes:
        return b"".join(path.read_bytes() for path in sorted(tmp_path.glob("spool.*")))

    assert spool._queue.db.execute("SELECT COUNT(*) FROM spool_threads").fetchone() == (0,)
    assert [secret for secret in secrets if secret in on_disk()] == []
    # set, whatever SQLite's build defaults to (Debian's overwrites deleted content anyway)
    assert spool._queue.db.execute("PRAGMA secure_delete").fetchone() == (1,)
    assert all(thread.fields == {} for thread in spool._pacing.threads.values())
    clock.now += 60
    spool.take()
    assert spool._pacing.threads == {}  # its pacing is over: nothing is kept at all
    spool.close()
    assert [secret for secret in secrets if secret in on_disk()] == []


def test_thread_rows_an_earlier_version_kept_after_writing_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, now=SettableClock())
    spool.enqueue(*records("written long ago", "A", 1))
    spool.flush()
    spool._queue.db.execute("UPDATE spool_threads SET pending = 0, last_written_at = 1.0")
    spool._queue.db.execute("DELETE FROM spool_messages")
    spool.close()
    reopened = Spool(tmp_path, now=SettableClock())
    assert reopened._queue.db.execute("SELECT COUNT(*) FROM spool_threads").fetchone() == (0,)
    reopened.close()
    assert b"written long ago" not in (tmp_path / "spool.sqlite3").read_bytes()


def test_the_backlog_is_kept_as_rows_come_and_go_not_counted_at_each_read(
    tmp_path: Path,
) -> None:
    """The backlog is read at every scrape and health request, which anyone who reaches
    the port can make; counting the rows each time took tens of ms under the spool's lock
    with a large backlog (issue 15, finding 4). It must equal a count of the rows after
    any mix of moves, takes, acks and set-asides, and read no row to say so."""
    clock = SettableClock()
    spool = Spool(tmp_path, thread_interval_s=0.0, now=clock)
    db = spool._queue.db

    def counted() -> dict[str, tuple[int, float]]:
        rows = db.execute(
            "SELECT account_id, COUNT(*), MIN(enqueued_at) FROM spool_messages GROUP BY account_id"
        )
        return {account: (count, oldest) for account, count, oldest in rows}

    for n in range(2_000):
        clock.now = 1000.0 + n
        doc, patch = records(f"m{n}", f"ID{n}", 1000 + n)
        spool.enqueue(replace(doc, account_id=f"acct{n % 7}"), patch)
    spool.flush()
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    for step in range(6):
        batch = spool.take(limit=150)
        if step % 3 == 2:
            spool.discard(batch, "test")
        else:
            spool.ack(batch)
        expected = counted()
        statements.clear()
        backlog = spool.backlog()
        assert {a: (b.messages, b.oldest_enqueued_at) for a, b in backlog.items()} == expected
        # at most one indexed lookup per account whose oldest row just left; no count
        assert len(statements) <= len(expected)
        assert not any("COUNT" in s or "GROUP BY" in s for s in statements)
        statements.clear()
        spool.backlog()
        assert statements == []  # known now: nothing read
    db.set_trace_callback(None)
    spool.close()

    reopened = Spool(tmp_path, thread_interval_s=0.0, now=clock)  # counted once on opening
    assert {a: (b.messages, b.oldest_enqueued_at) for a, b in reopened.backlog().items()} == (
        expected
    )
    assert 0 < sum(count for count, _ in expected.values()) < 2_000 - 5 * 140
    reopened.close()
