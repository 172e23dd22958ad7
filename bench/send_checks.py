"""What the send-drain benchmark checks after each drain: every message landed once.

A fast drain that lost or doubled a message would be no result, so each drain is read
back from outside the send path: the fake session (each text sent once, to its chat),
the journal (each row holds the WhatsApp id and is settled), the store (each outbox
item ``sent`` after one attempt under the id the session gave, and its message
document ``sent`` with that id). Each function returns what it found wrong.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from google.cloud import firestore

from sidecar.adapters.outbox_firestore import MESSAGES, OUTBOX
from sidecar.adapters.send_journal import FILENAME as JOURNAL
from sidecar.adapters.store_sqlite import FILENAME as MESSAGE_FILE
from sidecar.domain import outbound, outbox
from sidecar.domain.outbox import OutboxItem
from tests.support.sending import ScriptedWhatsApp

#: At most this many problems of one kind are named; the rest are counted.
SHOWN = 3

#: What a store holds for one item: (status, attempts, provider id) of the outbox
#: item, and (status, provider id) of its message document, or None when missing.
Held = tuple[tuple[Any, Any, Any] | None, tuple[Any, Any] | None]


def _summary(kind: str, wrong: list[str]) -> list[str]:
    if not wrong:
        return []
    more = f" (and {len(wrong) - SHOWN} more)" if len(wrong) > SHOWN else ""
    return [f"{kind}: {len(wrong)} wrong: {'; '.join(wrong[:SHOWN])}{more}"]


def sent_ids(
    items: Iterable[OutboxItem], sessions: Mapping[str, ScriptedWhatsApp]
) -> tuple[dict[str, str], list[str]]:
    """The WhatsApp id the fake session gave each item, and the items it did not send
    exactly once, to their chat."""
    by_text = {(item.account_id, item.text): item for item in items}
    ids: dict[str, str] = {}
    times: Counter[str] = Counter()
    wrong = []
    for account, session in sessions.items():
        for to_jid, text, wa_id in session.sent:
            item = by_text.get((account, text))
            if item is None or item.to_jid != to_jid:
                wrong.append(f"{account} sent a message that was not queued, or to the wrong chat")
                continue
            times[item.id] += 1
            ids[item.id] = wa_id
    for item in by_text.values():
        if times[item.id] != 1:
            wrong.append(f"{item.id} sent {times[item.id]} times")
    return ids, _summary("fake session", wrong)


def journal(items: Iterable[OutboxItem], state_dir: Path, ids: Mapping[str, str]) -> list[str]:
    """Each item has one settled journal row with the id WhatsApp gave it."""
    db = sqlite3.connect(state_dir / JOURNAL)
    try:
        rows = {
            item_id: (wa_id, settled)
            for item_id, wa_id, settled in db.execute("SELECT item_id, wa_id, settled FROM sends")
        }
    finally:
        db.close()
    wrong = [
        f"{item.id}: {rows.get(item.id)}"
        for item in items
        if rows.get(item.id) != (ids.get(item.id), 1)
    ]
    return _summary("send journal", wrong)


def stored(
    items: Iterable[OutboxItem], held: Mapping[str, Held], ids: Mapping[str, str]
) -> list[str]:
    """Each outbox item ``sent`` after one attempt under its WhatsApp id, and its
    message document ``sent`` with that id."""
    wrong = []
    for item in items:
        wa_id = ids.get(item.id)
        expected: Held = ((outbox.SENT, 1, wa_id), (outbox.SENT, wa_id))
        if held.get(item.id) != expected:
            wrong.append(f"{item.id}: {held.get(item.id)}")
    return _summary("store", wrong)


async def firestore_held(project: str, items: Iterable[OutboxItem]) -> dict[str, Held]:
    """What the emulator holds for ``items`` (the whole project: one drain's)."""
    client = firestore.AsyncClient(project=project)
    try:
        items_by_doc = {(item.thread_id, outbound.message_id(item)): item.id for item in items}
        records: dict[str, tuple[Any, Any, Any]] = {}
        async for snapshot in client.collection(OUTBOX).stream():
            data = snapshot.to_dict() or {}
            records[snapshot.id] = (
                data.get("status"),
                data.get("attemptCount"),
                data.get("providerMessageId"),
            )
        messages: dict[str, tuple[Any, Any]] = {}
        async for snapshot in client.collection_group(MESSAGES).stream():
            item_id = items_by_doc.get((snapshot.reference.parent.parent.id, snapshot.id))
            if item_id is not None:
                data = snapshot.to_dict() or {}
                messages[item_id] = (data.get("status"), data.get("providerMessageId"))
    finally:
        client.close()  # type: ignore[no-untyped-call]
    return {item_id: (record, messages.get(item_id)) for item_id, record in records.items()}


def sqlite_held(state_dir: Path, items: Iterable[OutboxItem]) -> dict[str, Held]:
    """What ``messages.sqlite3`` holds for ``items``."""
    items_by_doc = {(item.thread_id, outbound.message_id(item)): item.id for item in items}
    db = sqlite3.connect(state_dir / MESSAGE_FILE)
    try:
        records = {
            item_id: (status, attempts, provider_id)
            for item_id, status, attempts, provider_id in db.execute(
                "SELECT id, status, attempt_count, provider_message_id FROM outbox"
            )
        }
        messages: dict[str, tuple[Any, Any]] = {}
        for thread_id, message_id, doc in db.execute(
            "SELECT thread_id, message_id, doc FROM messages"
        ):
            item_id = items_by_doc.get((thread_id, message_id))
            if item_id is not None:
                data = json.loads(doc)
                messages[item_id] = (data.get("status"), data.get("providerMessageId"))
    finally:
        db.close()
    return {item_id: (record, messages.get(item_id)) for item_id, record in records.items()}


async def count(query: Any) -> int:
    """Documents ``query`` matches, counted by the emulator (``Any``: the library's type
    hints for ``count()`` are wrong)."""
    results = await query.count().get()
    return int(results[0][0].value)
