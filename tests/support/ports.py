"""A port found free, for a server that cannot bind port 0 and say which port it got.

Racy by nature: another process may bind the port between the asking and the server's
start. Use it only with a retry on 'address in use' (the Firestore emulator does), or
where the benchmark must write servers' addresses into each other's configs first.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port of 127.0.0.1 that was free when asked."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
