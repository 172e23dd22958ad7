"""Fixtures every test module may ask for, and the ``services`` marker put on the tests
that need a real server (see ``pytest_collection_modifyitems``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.compose import Assembly, assemble
from sidecar.config import LoadedConfig, load_config
from sidecar.core.clock import ReplayClock
from sidecar.core.service import Sidecar

from .support.backends import Backend
from .support.config import TOKEN, AssemblyFactory, ConfigFactory
from .support.firestore import firestore_emulator


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``services`` every test that runs the Firestore emulator: those asking for
    ``emulator_host`` and the firestore side of the ``backend`` fixture. Tests running
    other servers carry the marker themselves."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        callspec = getattr(item, "callspec", None)
        on_firestore = callspec is not None and callspec.params.get("backend") == "firestore"
        if "emulator_host" in fixtures or on_firestore:
            item.add_marker(pytest.mark.services)


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
            # reached where the shipped rules' fallback links point (monitoring/config.py)
            "http": {"listen": "127.0.0.1:0", "external_url": "http://127.0.0.1:9464"},
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


@pytest.fixture
def accounts() -> list[dict[str, Any]]:
    """The accounts of the ``assembly`` fixture; a module overrides this to change them."""
    return [{"id": "sales"}, {"id": "support"}]


@pytest.fixture
def assembly(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, accounts: list[dict[str, Any]]
) -> Assembly:
    """The composed sidecar with ``accounts``, without spool or store."""
    return make_assembly(make_config(accounts))


@pytest.fixture
def sidecar(assembly: Assembly) -> Sidecar:
    """The core of ``assembly``."""
    return assembly.sidecar


# -- storage backends under test ---------------------------------------------------


@pytest.fixture(scope="session")
def emulator_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real Firestore emulator, started once for the session."""
    with firestore_emulator(tmp_path_factory.mktemp("emulator") / "emulator.log") as host:
        yield host


@pytest.fixture(params=["sqlite", "firestore"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    emulator = request.getfixturevalue("emulator_host") if request.param == "firestore" else None
    if emulator is not None:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator)
    return Backend(request.param, tmp_path / "state", emulator)
