"""The token and config files the tests give the sidecar, in-process or as the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from sidecar.compose import Assembly
from sidecar.config import LoadedConfig

#: The first token of the ``tokens_file`` fixture: the one tests send.
TOKEN = "test-token-0123456789"

#: What the ``make_config`` fixture returns: accounts and top-level keys in, a loaded config out.
ConfigFactory = Callable[..., LoadedConfig]
#: What the ``make_assembly`` fixture returns: a loaded config in, the composed sidecar out.
AssemblyFactory = Callable[[LoadedConfig], Assembly]


def cli_config(
    tmp_path: Path, tokens_file: Path, accounts: list[str], listen: str = "127.0.0.1:0"
) -> Path:
    """A config file for the wa-sidecar CLI. It listens on a port the kernel picks unless
    told otherwise; :func:`support.cli.wait_ready` reads back which."""
    path = tmp_path / "cli.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "http": {"listen": listen},
                "state_dir": str(tmp_path / "state"),
                "auth": {"tokens_file": str(tokens_file)},
                "accounts": [{"id": a} for a in accounts],
            }
        )
    )
    return path
