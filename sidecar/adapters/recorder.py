"""``wa-sidecar run --record``: live events written in the capture format."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neonize.events import MessageEv, QREv

from sidecar.adapters.capture import CaptureWriter, blank_text


class Recorder:
    """Writes live events in the capture format. QR codes are never written;
    with ``blank_text`` neither is anything a person wrote.

    ``is_probe(account, message)`` tells a probe sent to the account (written whole:
    replay must see its marker) from a text that only looks like one (blanked)."""

    def __init__(
        self,
        path: Path,
        *,
        blank_text: bool = False,
        is_probe: Callable[[str, Any], bool] = lambda _account, _message: False,
    ) -> None:
        self._writer = CaptureWriter(path)
        self._blank = blank_text
        self._is_probe = is_probe
        self._lock = threading.Lock()

    def write(self, t: float, account: str, event: Any) -> None:
        if isinstance(event, QREv):
            event = QREv()
        elif self._blank and not (
            isinstance(event, MessageEv) and self._is_probe(account, event.Message)
        ):
            event = blank_text(event)
        with self._lock:
            self._writer.write(t, account, event)
            self._writer.flush()

    def close(self) -> None:
        with self._lock:
            self._writer.close()
