"""The spool keeps the facts a real message's documents are built from (issue 20): the
writer builds from them exactly the documents and thread updates that building on the
event path gave, through the journal, SQLite and restarts; and the spool holds no more
of the message than its documents need."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from neonize.events import MessageEv
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e

from sidecar import testing as build
from sidecar.adapters.spool import Batch, Spool
from sidecar.domain.classify import MessageClass, classify
from sidecar.domain.facts import MessageFacts, message_facts
from sidecar.domain.records import ThreadPatch, build_records

from .support.cases import CASES
from .support.clock import SettableClock

CHATS = {
    "phone": (build.jid("12025550123"), False),
    "group": (build.jid("120363000000000001", "g.us"), True),
    "lid": (build.jid("190000000000042", "lid"), False),
    "phone-said-group": (build.jid("12025550123"), True),  # a client may say anything
}


def event_of(content: e2e.Message | None, **info: Any) -> Any:
    """As replay and live events reach the pipeline: serialised and decoded again."""
    made = build.message_event(content, **info)
    return MessageEv.FromString(made.SerializeToString())


def facts_of(event: Any, account: str = "sales") -> MessageFacts:
    facts = message_facts(account, event, classify(event.Message))
    assert facts is not None
    return facts


def shaped(case: tuple[str, e2e.Message | None, dict[str, object], Any, str]) -> list[Any]:
    """A classifier shape that is real, as each kind of chat receives and sends it."""
    _, content, info, _, _ = case
    events = []
    for chat, is_group in CHATS.values():
        for from_me in (False, True):
            where: dict[str, object] = {"chat": chat, "is_group": is_group, "from_me": from_me}
            if is_group and not from_me:
                where["sender"] = build.jid("12025550147")
            events.append(event_of(content, **{**where, **info}))
    return events


REAL_CASES = [case for case in CASES if case[3] is MessageClass.REAL]


def ordered(batch: Batch) -> tuple[list[Any], list[Any]]:
    """A batch's documents and thread updates, with the order of every field."""
    messages = [
        (seq, d.account_id, d.thread_id, d.message_id, d.merge, list(d.fields.items()))
        for seq, d in batch.messages
    ]
    threads = [(t.patch.thread_id, list(t.patch.fields.items()), t.version) for t in batch.threads]
    return messages, threads


@pytest.mark.parametrize("case", REAL_CASES, ids=[case[0] for case in REAL_CASES])
def test_documents_built_from_spooled_facts_are_those_built_from_the_event(
    tmp_path: Path, case: Any
) -> None:
    events = shaped(case)
    unstored = [e for e in events if build_records("sales", e, classify(e.Message)) is None]
    assert [message_facts("sales", e, classify(e.Message)) for e in unstored] == [None] * len(
        unstored
    )  # a status post is no chat, either way
    events = [e for e in events if e not in unstored]
    spool = Spool(tmp_path, thread_interval_s=0.0, now=SettableClock())
    spool.enqueue_facts([facts_of(event) for event in events[:3]])
    spool.close()  # the first three from the journal, through a restart
    spool = Spool(tmp_path, thread_interval_s=0.0, now=SettableClock())
    spool.enqueue_facts([facts_of(event) for event in events[3:]])
    batch = spool.take()
    expected = []
    for event in events:
        built = build_records("sales", event, classify(event.Message))
        assert built is not None
        expected.append(built[0])
    assert [d for _, d in batch.messages] == expected
    assert [list(d.fields.items()) for _, d in batch.messages] == [
        list(doc.fields.items()) for doc in expected
    ]
    spool.close()


def test_an_edit_is_spooled_as_the_edit_of_its_message(tmp_path: Path) -> None:
    edit = event_of(build.edit("3EB0ORIGINAL", "12025550123@s.whatsapp.net", "new text"))
    facts = facts_of(edit)
    assert (facts.message_id, facts.body, facts.edit) == ("3EB0ORIGINAL", "new text", True)
    spool = Spool(tmp_path, now=SettableClock())
    spool.enqueue_facts([facts])
    batch = spool.take()
    doc, patch = build_records("sales", edit, classify(edit.Message)) or (None, None)
    assert [d for _, d in batch.messages] == [doc]
    assert patch is None
    assert batch.threads == []  # an edit moves no thread
    spool.close()


def drive(seed: int, folder: Path) -> None:
    """The same random story into two spools: one given the facts (the event path now),
    one given the documents (the event path before): every batch they hand out is the
    same, to the order of the fields."""
    rng = random.Random(seed)
    clock = SettableClock()
    interval = rng.choice((0.0, 1.0))
    for side in "ab":
        (folder / side).mkdir()
    spools = [Spool(folder / side, thread_interval_s=interval, now=clock) for side in "ab"]
    ids = iter(range(10**6))
    in_flight: list[Batch | None] = [None, None]
    for _ in range(60):
        step = rng.random()
        if step < 0.5:
            events = []
            for _ in range(rng.randint(1, 5)):
                chat, is_group = CHATS[rng.choice(list(CHATS))]
                from_me = rng.random() < 0.4
                events.append(
                    event_of(
                        build.text(f"body {rng.randint(0, 9)}  \n x"),
                        chat=chat,
                        is_group=is_group,
                        from_me=from_me,
                        message_id=f"M{next(ids)}",
                        timestamp_ms=rng.choice((-5, -1, 0, 7, 7, 50, 1_000)) + rng.randint(0, 3),
                        **(
                            {"sender": build.jid("12025550147")} if is_group and not from_me else {}
                        ),
                    )
                )
            spools[0].enqueue_facts([facts_of(event) for event in events])
            for event in events:
                built = build_records("sales", event, classify(event.Message))
                assert built is not None
                spools[1].enqueue(*built)
        elif step < 0.55:  # an update an earlier version spooled, with fields missing
            chat = rng.choice(list(CHATS.values()))[0]
            event = event_of(build.text("x"), chat=chat, message_id=f"L{next(ids)}")
            doc, patch = build_records("sales", event, classify(event.Message)) or (None, None)
            assert doc is not None
            assert patch is not None
            fields = rng.choice(
                (
                    {"accountId": "sales", "lastMessageAtMs": rng.choice((-3, 3, 100))},
                    {k: v for k, v in patch.fields.items() if k != "phoneE164"},
                )
            )
            for spool in spools:
                spool.enqueue(doc, ThreadPatch("sales", patch.thread_id, dict(fields)))
        elif step < 0.85:
            limit = rng.randint(2, 12)
            taken = [spool.take(limit, after=in_flight[n]) for n, spool in enumerate(spools)]
            assert ordered(taken[0]) == ordered(taken[1])
            if rng.random() < 0.7:
                for spool, batch in zip(spools, taken, strict=True):
                    spool.ack(batch)
                in_flight = [None, None]
            else:
                in_flight = [taken[0] or None, taken[1] or None]
        elif step < 0.95:
            clock.now += rng.choice((0.25, 1.0, 2.0))
        else:  # a restart: the journal is recovered, pending thread rows reloaded
            for spool in spools:
                spool.close()
            spools = [Spool(folder / side, thread_interval_s=interval, now=clock) for side in "ab"]
            in_flight = [None, None]
    clock.now += 10
    while True:
        taken = [spool.take() for spool in spools]
        assert ordered(taken[0]) == ordered(taken[1])
        if not taken[0] and not taken[1]:
            break
        for spool, batch in zip(spools, taken, strict=True):
            spool.ack(batch)
        clock.now += 2
    for spool in spools:
        assert spool.is_empty()
        spool.close()


@pytest.mark.parametrize("seed", range(40))
def test_thread_updates_built_from_facts_are_those_merged_from_documents(
    tmp_path: Path, seed: int
) -> None:
    drive(seed, tmp_path)


def test_the_spool_keeps_no_media_key_thumbnail_or_push_name(tmp_path: Path) -> None:
    """What a live event carries beside its documents' content never reaches the disk."""
    image = e2e.ImageMessage(
        mimetype="image/jpeg",
        caption="the receipt",
        mediaKey=b"MEDIAKEY-0123456789abcdef0123456789",
        fileEncSHA256=b"ENCSHA-0123456789abcdef0123456789ab",
        directPath="/v/t62.7118-24/SECRETPATH",
        URL="https://mmg.whatsapp.net/SECRETURL",
        JPEGThumbnail=b"THUMBNAIL-BYTES" * 20,
    )
    event = event_of(e2e.Message(imageMessage=image), push_name="Private Pushname")
    spool = Spool(tmp_path, now=SettableClock())
    spool.enqueue_facts([facts_of(event)])

    def on_disk() -> bytes:
        return b"".join(path.read_bytes() for path in sorted(tmp_path.glob("spool.*")))

    secrets = [b"MEDIAKEY", b"ENCSHA", b"SECRETPATH", b"SECRETURL", b"THUMBNAIL", b"Pushname"]
    assert b"the receipt" in on_disk()  # the caption is what the document needs
    spool.flush()  # moved into SQLite
    assert b"the receipt" in on_disk()
    assert [s for s in secrets if s in on_disk()] == []
    [(_, doc)] = spool.take().messages
    assert doc.fields["media"] == {
        "type": "image",
        "mimetype": "image/jpeg",
        "caption": "the receipt",
        "filename": None,
    }
    spool.close()


def test_damaged_facts_are_dropped_and_counted_not_stored(tmp_path: Path) -> None:
    clock = SettableClock()
    spool = Spool(tmp_path, now=clock)
    good = [facts_of(event_of(build.text(f"m{i}"), message_id=f"G{i}")) for i in range(3)]
    spool.enqueue_facts(good)
    spool.flush()
    db = spool._queue.db
    seqs = [seq for (seq,) in db.execute("SELECT seq FROM spool_messages ORDER BY seq")]
    damaged = list(good[1])
    damaged[7] = "not a time"
    db.execute(
        "UPDATE spool_messages SET doc = ? WHERE seq = ?", (orjson.dumps(damaged).decode(), seqs[1])
    )
    db.execute("UPDATE spool_messages SET doc = '[1, 2' WHERE seq = ?", (seqs[2],))
    batch = spool.take()
    assert [d.message_id for _, d in batch.messages] == ["G0"]
    assert spool.dropped == {"sales": 2}
    spool.close()
    # a torn facts line in the journal is skipped on recovery, the rest recovered
    spool = Spool(tmp_path, now=clock)
    spool.enqueue_facts([facts_of(event_of(build.text("kept"), message_id="K1"))])
    spool.enqueue_facts([facts_of(event_of(build.text("torn"), message_id="K2"))])
    journal = tmp_path / "spool.journal"
    journal.write_bytes(journal.read_bytes()[:-15])
    spool._journal.close()
    spool._queue.close()
    restarted = Spool(tmp_path, now=clock)
    assert [d.message_id for _, d in restarted.take().messages] == ["G0", "K1"]
    restarted.close()
