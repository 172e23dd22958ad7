"""The Firestore emulator the storage tests run, and a TCP proxy in front of it that a
test can cut to make an outage without losing what the emulator holds.

Ports: the emulator cannot listen on a port the kernel picks and say which (given
``--port=0`` it reports ``127.0.0.1:0``), so it is started on a port that was free a
moment before, and if another process took that port in between, the emulator exits
with ``java.net.BindException: Address already in use`` and is started again on
another one. The proxy binds port 0 and reads back the port it got.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .ports import free_port

EMULATOR_CANDIDATES = (
    "cloud_firestore_emulator",
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud_firestore_emulator",
    "/usr/share/google-cloud-sdk/platform/cloud-firestore-emulator/cloud_firestore_emulator",
)
START_ATTEMPTS = 5
ADDRESS_IN_USE = ("java.net.BindException", "Address already in use")


def find_emulator() -> str:
    for candidate in EMULATOR_CANDIDATES:
        found = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    gcloud = shutil.which("gcloud")
    if gcloud:
        sdk = Path(gcloud).resolve().parent.parent
        bundled = sdk / "platform" / "cloud-firestore-emulator" / "cloud_firestore_emulator"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    raise RuntimeError(
        "the Firestore emulator is not installed (looked for cloud_firestore_emulator on PATH and"
        " under the Cloud SDK); the storage tests need it"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait(15)


def _answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=2) as response:
            return bool(response.read().strip() == b"Ok")
    except OSError:
        return False


@contextlib.contextmanager
def firestore_emulator(log_path: Path) -> Iterator[str]:
    """Start the emulator; yield its host:port once it answers. Its output, of every
    start attempt, goes to ``log_path``."""
    with log_path.open("wb") as log:
        for _ in range(START_ATTEMPTS):
            begun = log_path.stat().st_size
            port = free_port()
            process = subprocess.Popen(
                [find_emulator(), "start", "--host=127.0.0.1", f"--port={port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            host = f"127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 90
                while not _answers(host):
                    if process.poll() is not None:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the Firestore emulator did not start: {log_path.read_text()[-2000:]}"
                        )
                    time.sleep(0.25)
                else:
                    yield host
                    return
            finally:
                _stop(process)
            with log_path.open("rb") as written:
                written.seek(begun)
                output = written.read().decode(errors="replace")
            if not all(sign in output for sign in ADDRESS_IN_USE):
                raise RuntimeError(f"the Firestore emulator exited: {output[-2000:]}")
    raise RuntimeError(f"the Firestore emulator found its port taken {START_ATTEMPTS} times")


class TcpProxy:
    """Forwards a local port to ``target``. ``cut()`` closes the listener and every
    connection (clients then get 'connection refused'); ``restore()`` listens again, on
    the same port, which clients were configured with."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self.port = 0  # the first restore() binds port 0 and keeps the one it got
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def restore(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = int(listener.getsockname()[1])
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
