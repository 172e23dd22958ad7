"""Running the wa-sidecar CLI as a subprocess, the way an operator runs it.

Ports: the sidecar is configured to listen on ``127.0.0.1:0`` (see
:func:`support.config.cli_config`) and the port the kernel gave it is read back from
its ``listening on http://127.0.0.1:PORT`` log line, so no test hands it a port that
another process could take first. When it runs with ``--log-level`` above INFO that
line is not logged; then the port is the one its listening socket is bound to, read
from /proc.

Output: stdout and stderr are read on threads from the start, so a full pipe never
blocks the sidecar, and kept: ``communicate()`` returns all of both, as
:meth:`subprocess.Popen.communicate` would, for the assertions tests make on them.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from .http import get
from .paths import REPO

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
QUIET_LEVELS = {"WARNING", "ERROR", "CRITICAL"}


class SidecarProcess(subprocess.Popen[str]):
    """A running ``python -m sidecar``; its output collected, its port found out."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path = REPO) -> None:
        super().__init__(
            argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._quiet = any(
            a == "--log-level" and b in QUIET_LEVELS for a, b in itertools.pairwise(argv)
        )
        self._out: list[str] = []
        self._err: list[str] = []
        self._port: int | None = None
        assert self.stdout is not None
        assert self.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(self.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            if self._port is None and (match := LISTENING.search(line)):
                self._port = int(match.group(1))

    def output(self) -> tuple[str, str]:
        """stdout and stderr so far."""
        return "".join(self._out), "".join(self._err)

    def communicate(
        self, input: str | None = None, timeout: float | None = None
    ) -> tuple[str, str]:
        """Wait for the exit and the end of both streams; all of stdout and stderr."""
        assert input is None, "the sidecar's stdin is not a pipe"
        deadline = None if timeout is None else time.monotonic() + timeout
        self.wait(timeout)
        for reader in self._readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self.output()

    def listening_port(self, timeout: float) -> int:
        """The port the sidecar listens on, once it does; fail if it exits first."""
        deadline = time.monotonic() + timeout
        while True:
            port = _bound_port(self.pid) if self._quiet else self._port
            if port is not None:
                return port
            if self.poll() is not None:
                out, err = self.communicate()
                raise AssertionError(
                    f"wa-sidecar exited early ({self.returncode}): {out[-3000:]}{err[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("wa-sidecar did not start listening")
            time.sleep(0.05)


def _bound_port(pid: int) -> int | None:
    """The port of a TCP socket of ``pid`` that is listening on 127.0.0.1, from /proc."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
        table = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:  # it exited
        return None
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    for line in table.splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and inode in inodes and local.startswith("0100007F:"):
            return int(local.split(":")[1], 16)
    return None


def sidecar_cli(*args: str, env: dict[str, str] | None = None) -> SidecarProcess:
    """``python -m sidecar ARGS`` from the repository root (or a script, when args[0] ends
    in .py), with ``env`` added to this process's environment."""
    program = [args[0]] if args[0].endswith(".py") else ["-m", "sidecar"]
    rest = args[1:] if args[0].endswith(".py") else args
    return SidecarProcess(
        [sys.executable, *program, *rest],
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **(env or {})},
    )


def wait_ready(process: SidecarProcess, timeout: float = 30.0) -> int:
    """Wait until the sidecar answers /readyz; the port it listens on."""
    deadline = time.monotonic() + timeout
    port = process.listening_port(timeout)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(
                f"wa-sidecar exited early ({process.returncode}): {out[-3000:]}{err[-3000:]}"
            )
        try:
            get(f"http://127.0.0.1:{port}/readyz")
            return port
        except OSError:
            time.sleep(0.05)
    raise AssertionError("wa-sidecar did not become ready")
