"""The audit log: every re-pair and pairing action, with who and when.

JSON Lines in ``state_dir/audit.log`` (owner-only). It names the acting
principal (a Firebase user id, or a static token's fingerprint) and the
account, never a token, QR code, pairing code or phone number.
"""

from __future__ import annotations

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
        entry = {"at": round(time.time(), 3), "who": who, "action": action, "account": account}
        entry |= {"outcome": outcome, **details}
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")
