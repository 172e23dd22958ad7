"""Storage drain: messages per second from the spool to the Firestore emulator.

Fills the spool with N real messages (neonize events, classified and spooled by
the storage listener as the pipeline does), then times the real SpoolWriter and
FirestoreStore draining it into the emulator until the spool is empty. The
baseline, in the same run against the same emulator (its own project id), is
the existing backend's way: one awaited ``set()`` per message document and one
per thread update, in sequence. The two alternate for a few rounds, after a
warm-up; the median round of each side counts. Afterwards every round's
documents are counted in the emulator; a missing one fails the run, ``--smoke``
included.

    .venv/bin/python -m bench.storage_drain [--messages 3000 --chats 50 --rounds 3]
    .venv/bin/python -m bench.storage_drain --smoke

Run from the repository root; it starts the emulator itself. Exits 1 when the
drain is under 10x the baseline (not checked with ``--smoke``) or when any
document did not land.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.cloud import firestore

from sidecar import testing as build
from sidecar.adapters.spool import Spool
from sidecar.adapters.store_firestore import FirestoreStore
from sidecar.core.storage import Storage
from sidecar.domain.classify import classify
from sidecar.domain.records import MessageDoc, ThreadPatch, build_records
from sidecar.testing import firestore_library_values
from tests.support.firestore import firestore_emulator

from .common import Result, median, report

ACCOUNT = "sales"
TARGET_RATIO = 10.0
SMOKE_MESSAGES = 200
SMOKE_CHATS = 10
WARM_UP_MESSAGES = 2000
FIRST_TIMESTAMP_MS = 1_764_068_400_000

Records = list[tuple[MessageDoc, ThreadPatch | None]]


@dataclass(frozen=True)
class Side:
    """One way of writing the messages, timed, and what the emulator holds afterwards."""

    seconds: float
    messages_landed: int
    threads_landed: int

    def rate(self, messages: int) -> float:
        return messages / self.seconds


def message_events(messages: int, chats: int, tag: str) -> list[Any]:
    """Text messages spread round-robin over ``chats`` one-to-one chats; every
    fourth one outbound, as a customer conversation goes."""
    return [
        build.message_event(
            build.text(f"message {i} about order {i % 97}"),
            chat=build.jid(f"1202555{i % chats:04d}"),
            from_me=i % 4 == 3,
            message_id=f"{tag}{i:08d}",
            timestamp_ms=FIRST_TIMESTAMP_MS + i * 10,
        )
        for i in range(messages)
    ]


def records_of(events: Sequence[Any]) -> Records:
    records = []
    for event in events:
        built = build_records(ACCOUNT, event, classify(event.Message))
        assert built is not None, "every benchmark message is a real one"
        records.append(built)
    return records


async def count(query: Any) -> int:
    """Documents ``query`` matches, counted by the emulator (``Any``: the library's type
    hints for ``count()`` are wrong)."""
    results = await query.count().get()
    return int(results[0][0].value)


async def count_documents(client: firestore.AsyncClient) -> tuple[int, int]:
    """Message documents and thread documents the emulator holds for ``client``'s project."""
    messages = await count(client.collection_group("messages"))
    threads = await count(client.collection("threads"))
    return messages, threads


async def spool_drain(project: str, events: Sequence[Any], spool_dir: Path) -> Side:
    """Spool ``events`` through the storage listener, then time the writer emptying the spool."""
    storage = Storage(Spool(spool_dir), FirestoreStore(project))
    received_at = time.time()
    for event in events:
        storage.listener.on_message(ACCOUNT, event, classify(event.Message), received_at)
    started = time.perf_counter()
    next_due = await storage.writer.drain()  # returns once no message is left to write
    seconds = time.perf_counter() - started
    if storage.spool.backlog():
        raise RuntimeError("the spool writer stopped with messages still spooled")
    while not storage.spool.is_empty():  # thread updates paced at one per second, untimed
        await asyncio.sleep(next_due or 0.05)
        next_due = await storage.writer.drain()
    await storage.close()
    client = firestore.AsyncClient(project=project)
    messages_landed, threads_landed = await count_documents(client)
    client.close()  # type: ignore[no-untyped-call]
    return Side(seconds, messages_landed, threads_landed)


async def one_write_per_message(project: str, records: Records) -> Side:
    """The existing backend: await each message document, then its thread update."""
    client = firestore.AsyncClient(project=project)
    threads = client.collection("threads")
    started = time.perf_counter()
    for doc, patch in records:
        message = threads.document(doc.thread_id).collection("messages").document(doc.message_id)
        await message.set(firestore_library_values(doc.fields), merge=doc.merge)
        if patch is not None:
            await threads.document(patch.thread_id).set(
                firestore_library_values(patch.fields), merge=True
            )
    seconds = time.perf_counter() - started
    messages_landed, threads_landed = await count_documents(client)
    client.close()  # type: ignore[no-untyped-call]
    return Side(seconds, messages_landed, threads_landed)


async def measure(
    messages: int, chats: int, rounds: int, work_dir: Path
) -> tuple[list[Side], list[Side]]:
    """Warm the emulator up with both ways, then time the drain and the baseline in
    alternating rounds, each round into fresh projects."""
    warm_up = message_events(min(messages, WARM_UP_MESSAGES), chats, "WARM")
    await spool_drain("bench-warm-up-drain", warm_up, work_dir / "warm-up-spool")
    await one_write_per_message("bench-warm-up-baseline", records_of(warm_up))
    drains, baselines = [], []
    for round_ in range(rounds):
        events = message_events(messages, chats, f"R{round_}M")
        drains.append(
            await spool_drain(f"bench-drain-{round_}", events, work_dir / f"spool-{round_}")
        )
        baselines.append(
            await one_write_per_message(f"bench-baseline-{round_}", records_of(events))
        )
    return drains, baselines


def missing_documents(name: str, side: Side, messages: int, chats: int) -> list[str]:
    problems = []
    if side.messages_landed != messages:
        problems.append(f"{name}: {side.messages_landed} of {messages} message documents landed")
    if side.threads_landed != chats:
        problems.append(f"{name}: {side.threads_landed} of {chats} thread documents landed")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="per round and side")
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="the median round counts")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"one round of {SMOKE_MESSAGES} messages in {SMOKE_CHATS} chats;"
        " never fails on timing",
    )
    args = parser.parse_args()
    messages, chats, rounds = (
        (SMOKE_MESSAGES, SMOKE_CHATS, 1) if args.smoke else (args.messages, args.chats, args.rounds)
    )
    if not 0 < chats <= messages or rounds < 1:
        parser.error("need a round, a chat, and at least as many messages as chats")
    logging.basicConfig(level=logging.WARNING, force=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(tmp)
        with firestore_emulator(work_dir / "emulator.log") as host:
            os.environ["FIRESTORE_EMULATOR_HOST"] = host
            drains, baselines = asyncio.run(measure(messages, chats, rounds, work_dir))
    wall = time.perf_counter() - started
    print(f"messages={messages} chats={chats} rounds={rounds} wall={wall:.1f}s")
    problems = []
    for round_, (drain, baseline) in enumerate(zip(drains, baselines, strict=True)):
        print(
            f"round {round_}: drain {drain.seconds:.2f}s ({drain.rate(messages):,.0f}/s),"
            f" baseline {baseline.seconds:.2f}s ({baseline.rate(messages):,.0f}/s)"
        )
        problems += missing_documents(f"round {round_} drain", drain, messages, chats)
        problems += missing_documents(f"round {round_} baseline", baseline, messages, chats)
    drain_rate = median([side.rate(messages) for side in drains])
    baseline_rate = median([side.rate(messages) for side in baselines])
    status = report(
        [
            Result(
                name="spool drain to Firestore, messages/s",
                measured=drain_rate,
                baseline=baseline_rate,
                unit="/s",
                target=f">= {TARGET_RATIO:g}x baseline",
                met=drain_rate >= TARGET_RATIO * baseline_rate,
            )
        ],
        check=not args.smoke,
    )
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if not problems:
        print(f"all {messages * rounds} message documents of each side landed")
    return 1 if problems else status


if __name__ == "__main__":
    sys.exit(main())
