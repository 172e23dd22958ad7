from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.compose import Assembly, assemble
from sidecar.config import LoadedConfig, load_config
from sidecar.core.clock import ReplayClock
from sidecar.core.service import Sidecar

from .services import firestore_emulator

TOKEN = "test-token-0123456789"

ConfigFactory = Callable[..., LoadedConfig]


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# tokens for tests\n{TOKEN}\nsecond-token\n")
    return path


@pytest.fixture
def make_config(tmp_path: Path, tokens_file: Path) -> ConfigFactory:
    """Write a YAML config under tmp_path and load it as the CLI would."""

    def factory(accounts: list[dict[str, Any]] | None = None, **top: Any) -> LoadedConfig:
        data: dict[str, Any] = {
            "state_dir": str(tmp_path / "state"),
            "http": {"listen": "127.0.0.1:0"},
            "auth": {"tokens_file": str(tokens_file)},
            "accounts": accounts or [{"id": "sales"}],
        }
        data.update(top)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        return load_config(path)

    return factory


@pytest.fixture
def clock() -> ReplayClock:
    clock = ReplayClock(speed=0)
    clock.start(1_764_068_400.0)
    return clock


AssemblyFactory = Callable[[LoadedConfig], Assembly]


@pytest.fixture
def make_assembly(clock: ReplayClock) -> Iterator[AssemblyFactory]:
    """The composed sidecar (core, metrics) without spool or store, on the test clock."""
    made: list[Assembly] = []

    def factory(loaded: LoadedConfig) -> Assembly:
        assembly = assemble(loaded, clock, storage=False)
        made.append(assembly)
        return assembly

    yield factory
    for assembly in made:
        assembly.close()


@pytest.fixture
def make_sidecar(make_assembly: AssemblyFactory) -> Callable[[LoadedConfig], Sidecar]:
    """Just the core of :func:`make_assembly`, for tests that need no metrics or HTTP."""
    return lambda loaded: make_assembly(loaded).sidecar


# -- storage backends under test ---------------------------------------------------

Docs = dict[str, tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]]


@pytest.fixture(scope="session")
def emulator_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real Firestore emulator, started once for the session."""
    with firestore_emulator(tmp_path_factory.mktemp("emulator") / "emulator.log") as host:
        yield host


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
            client.close()
            return out
        finally:
            if previous is None:
                os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
            else:
                os.environ["FIRESTORE_EMULATOR_HOST"] = previous


@pytest.fixture(params=["sqlite", "firestore"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    emulator = request.getfixturevalue("emulator_host") if request.param == "firestore" else None
    if emulator is not None:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator)
    return Backend(request.param, tmp_path / "state", emulator)
