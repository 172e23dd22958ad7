"""The message-store backends the storage tests run against: what to configure for
each, and what each holds afterwards, read back the same way for both."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sidecar.core.ports import OutboxStore

Docs = dict[str, tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]]


def _ms(value: Any) -> Any:
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: _ms(v) for k, v in value.items()}
    return value


class Backend:
    """One store backend as the tests see it: what to configure, and what it holds."""

    def __init__(self, name: str, state_dir: Path, emulator: str | None) -> None:
        self.name = name
        self.state_dir = state_dir
        self.emulator = emulator
        self.project = f"wa-test-{uuid.uuid4().hex[:10]}"

    def store_config(self, write_timeout: str = "10s") -> dict[str, Any]:
        if self.name == "sqlite":
            return {"backend": "sqlite"}
        return {
            "backend": "firestore",
            "firestore": {"project": self.project, "write_timeout": write_timeout},
        }

    def read(self) -> Docs:
        if self.name == "sqlite":
            db = sqlite3.connect(self.state_dir / "messages.sqlite3")
            out: Docs = {}
            for thread_id, doc in db.execute("SELECT thread_id, doc FROM threads"):
                out[thread_id] = (json.loads(doc), {})
            for thread_id, message_id, doc in db.execute(
                "SELECT thread_id, message_id, doc FROM messages"
            ):
                out.setdefault(thread_id, (None, {}))[1][message_id] = json.loads(doc)
            db.close()
            return out
        from google.cloud import firestore

        assert self.emulator is not None
        previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
        os.environ["FIRESTORE_EMULATOR_HOST"] = self.emulator
        try:
            client = firestore.Client(project=self.project)
            out = {}
            for ref in client.collection("threads").list_documents():
                snap = ref.get()
                messages = {m.id: _ms(m.to_dict()) for m in ref.collection("messages").stream()}
                out[ref.id] = (_ms(snap.to_dict()) if snap.exists else None, messages)
            client.close()  # type: ignore[no-untyped-call]
            return out
        finally:
            if previous is None:
                os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
            else:
                os.environ["FIRESTORE_EMULATOR_HOST"] = previous


def make_outbox(backend: Backend) -> OutboxStore:
    """The outbox store of ``backend``, on its state dir or project."""
    if backend.name == "sqlite":
        from sidecar.adapters.outbox_sqlite import SqliteOutbox

        backend.state_dir.mkdir(parents=True, exist_ok=True)
        return SqliteOutbox(backend.state_dir)
    from sidecar.adapters.outbox_firestore import FirestoreOutbox

    return FirestoreOutbox(backend.project)
