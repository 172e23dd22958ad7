"""A TCP proxy in front of the Firestore emulator that counts what crosses it.

The emulator speaks gRPC over cleartext HTTP/2. Every gRPC call a client makes opens
one stream with one HEADERS frame (type 0x1), so counting the HEADERS frames a
client sends counts its calls, streaming ones included; bytes are counted both ways.
Nothing is parsed beyond the 9-byte frame headers.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS = 0x1


@dataclass
class Counts:
    calls: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    @property
    def total_bytes(self) -> int:
        return self.bytes_up + self.bytes_down

    def minus(self, before: Counts) -> Counts:
        return Counts(
            self.calls - before.calls,
            self.bytes_up - before.bytes_up,
            self.bytes_down - before.bytes_down,
        )


class _Frames:
    """Counts HEADERS frames in one client-to-server byte stream."""

    def __init__(self) -> None:
        self._buffer = b""
        self._preface_seen = False

    def feed(self, data: bytes) -> int:
        self._buffer += data
        if not self._preface_seen:
            if len(self._buffer) < len(PREFACE):
                return 0
            if self._buffer.startswith(PREFACE):
                self._buffer = self._buffer[len(PREFACE) :]
            self._preface_seen = True
        found = 0
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                break
            if self._buffer[3] == HEADERS:
                found += 1
            self._buffer = self._buffer[9 + length :]
        return found


class CountingProxy:
    """Forwards ``127.0.0.1:port`` to ``target``, on a thread of its own."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._counts = Counts()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def counts(self) -> Counts:
        with self._lock:
            return Counts(self._counts.calls, self._counts.bytes_up, self._counts.bytes_down)

    def close(self) -> None:
        async def stop() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), self._loop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0)
        )
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        frames = _Frames()
        await asyncio.gather(
            self._pump(reader, up_writer, frames), self._pump(up_reader, writer, None)
        )

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, frames: _Frames | None
    ) -> None:
        try:
            while data := await source.read(65536):
                with self._lock:
                    if frames is None:
                        self._counts.bytes_down += len(data)
                    else:
                        self._counts.bytes_up += len(data)
                        self._counts.calls += frames.feed(data)
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sink.close()
