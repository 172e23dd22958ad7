from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.adapters.sqlite_state import SqliteStateStore
from sidecar.clock import ReplayClock
from sidecar.config import LoadedConfig, load_config
from sidecar.service import Sidecar

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


@pytest.fixture
def make_sidecar(clock: ReplayClock) -> Iterator[Callable[[LoadedConfig], Sidecar]]:
    made: list[Sidecar] = []

    def factory(loaded: LoadedConfig) -> Sidecar:
        sidecar = Sidecar(loaded, clock, SqliteStateStore(loaded.config.state_dir))
        made.append(sidecar)
        return sidecar

    yield factory
    for sidecar in made:
        sidecar.close()
