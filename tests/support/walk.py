"""A newcomer's checkout: the README's commands run as written, on a fresh ``./data``.

The walk runs in a copy of the files a newcomer's commands touch (``scripts/``,
``examples/``, ``pyproject.toml``, ``README.md``) so that its ``./data`` starts empty
and never meets the developer's own. Its ``.venv`` is a link to the one running the
tests: ``scripts/setup`` finds it installed for this ``pyproject.toml`` and leaves it
alone, which the walk checks first, since a fresh ``pip install -e`` from the copy
would point the shared environment at a directory about to be deleted.

One change from what a newcomer runs: port 9464 becomes a free port in the copied
configs and in the commands, so the walk never meets a sidecar someone runs here.
"""

from __future__ import annotations

import hashlib
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .cli import SidecarProcess
from .paths import REPO
from .ports import free_port

README_PORT = "9464"


def readme_commands() -> list[str]:
    """Every ``./scripts/run`` command of the README, in the order a reader meets them:
    the lines of its ``sh`` blocks and the inline code of its prose."""
    text = (REPO / "README.md").read_text()
    found: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        found += [line.split("#")[0].strip() for line in block.splitlines()]
    found += re.findall(r"`(\./scripts/run [^`]+)`", text)
    return [command for command in found if command.startswith("./scripts/run")]


def readme_command(*words: str) -> str:
    """The README's one ``./scripts/run`` command with these words, as written."""
    matches = {c for c in readme_commands() if all(word in c.split() for word in words)}
    assert len(matches) == 1, f"the README has {sorted(matches)} for {words}"
    return matches.pop()


@dataclass(frozen=True)
class Checkout:
    """The newcomer's directory and the port its sidecars listen on."""

    root: Path
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self) -> str:
        return (self.root / "data" / "api-token").read_text().strip()

    def argv(self, command: str) -> list[str]:
        """A README command as the shell would split it, on this checkout's port."""
        assert re.fullmatch(r"[\w./ -]+", command), f"not a plain command: {command}"
        return command.replace(README_PORT, str(self.port)).split()

    def start(self, command: str) -> SidecarProcess:
        """Start a README command in the background, as in a second terminal."""
        return SidecarProcess(self.argv(command), env=self.env(), cwd=self.root)

    def run(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a README command to its end; its exit code and output."""
        return subprocess.run(
            self.argv(command),
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_in_terminal(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run a README command with a terminal for its stdin and output (``pair`` draws
        its QR code only on one); its exit code and everything it wrote."""
        controller, terminal = pty.openpty()
        process = subprocess.Popen(
            self.argv(command),
            cwd=self.root,
            env=self.env(),
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
        )
        os.close(terminal)
        output = b""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([controller], [], [], 0.5)
                if not ready:
                    continue
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed: every writer exited
                    break
                if not chunk:
                    break
                output += chunk
            code = process.wait(max(0.1, deadline - time.monotonic()))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            os.close(controller)
        return code, output.decode(errors="replace")

    def env(self) -> dict[str, str]:
        """A newcomer's environment: no token of ours (the script makes one)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("WA_SIDECAR")}
        return {**env, "PYTHONUNBUFFERED": "1"}


def installed_for_this_pyproject(venv: Path) -> bool:
    """``scripts/setup`` would skip pip for this environment (its stamp matches)."""
    want = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    stamp = venv / ".wa-sidecar-installed"
    return stamp.exists() and stamp.read_text().strip() in (want, f"{want}[test]")


def checkout(where: Path) -> Checkout:
    """A newcomer's copy of the repository at ``where``, on a free port."""
    venv = Path(sys.prefix)
    assert installed_for_this_pyproject(venv), (
        f"{venv} was not set up by scripts/setup for this pyproject.toml: run"
        " scripts/setup --test (the walk must not reinstall the shared environment)"
    )
    root = where / "wa-sidecar"
    root.mkdir()
    for name in ("scripts", "examples"):
        shutil.copytree(REPO / name, root / name)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, root / name)
    (root / ".venv").symlink_to(venv)
    port = free_port()
    for config in (root / "examples").glob("*.yaml"):
        config.write_text(config.read_text().replace(f":{README_PORT}", f":{port}"))
    return Checkout(root, port)
