"""``wa-sidecar run --record``: live events written in the capture format."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from neonize.events import MessageEv, QREv

from sidecar.adapters.capture import CaptureWriter, blank_text
from sidecar.domain.probes import probe_id_of


class Recorder:
    """Writes live events in the capture format. QR codes are never written;
    with ``blank_text`` neither is anything a person wrote."""

    def __init__(self, path: Path, *, blank_text: bool = False) -> None:
        self._writer = CaptureWriter(path)
        self._blank = blank_text
        self._lock = threading.Lock()

    def write(self, t: float, account: str, event: Any) -> None:
        if isinstance(event, QREv):
            event = QREv()
        elif self._blank and not (isinstance(event, MessageEv) and probe_id_of(event.Message)):
            event = blank_text(event)  # probes keep their marker: replay must see them
        with self._lock:
            self._writer.write(t, account, event)
            self._writer.flush()

    def close(self) -> None:
        with self._lock:
            self._writer.close()
