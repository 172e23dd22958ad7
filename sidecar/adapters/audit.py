"""The audit log: every re-pair and pairing action, with who and when.

JSON Lines in ``state_dir/audit.log`` (owner-only). It names the acting
principal (a Firebase user id, or a static token's fingerprint) and the
account, never a token, QR code, pairing code or phone number.

A record that cannot be written (a full disk) raises :class:`OSError` and leaves
no torn line behind: the caller (:class:`~sidecar.core.repair.Repairs`) decides
whether the action may go on without it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from sidecar.adapters.sqlite_files import private_dir


class AuditLog:
    FILENAME = "audit.log"

    def __init__(self, state_dir: Path) -> None:
        private_dir(state_dir)
        self.path = state_dir / self.FILENAME
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600))
        self._lock = threading.Lock()

    def record(self, who: str, action: str, account: str, outcome: str, **details: Any) -> None:
        """Append one record in a single write; raise :class:`OSError` if it is not all there."""
        entry = {"at": round(time.time(), 3), "who": who, "action": action, "account": account}
        entry |= {"outcome": outcome, **details}
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
            try:
                size = os.fstat(fd).st_size
                try:
                    if os.write(fd, line) != len(line):
                        raise OSError(errno.ENOSPC, "short write")
                except OSError:
                    with contextlib.suppress(OSError):  # a part written: cut it off again
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
