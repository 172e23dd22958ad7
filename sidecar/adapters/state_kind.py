"""Whose state a ``state_dir`` holds: a live run's (``run``, ``pair``) or a replay's.

A replay into a live run's state would leave the capture's accounts and messages
there: the live accounts would show a last real message from the demo, the store its
messages. So the first run to use a ``state_dir`` marks it, and a run of the other
kind refuses it with a clear error (docs/reference.md, "state_dir").
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Literal

from sidecar.adapters.sqlite_files import private_dir
from sidecar.core.failures import error_kind

log = logging.getLogger(__name__)

Kind = Literal["live", "replay"]
#: The mark, in the state_dir.
MARKER = "RUN-KIND"
#: What to tell a run of one kind that finds the other's state (the kind it found).
_REFUSAL = {
    "live": "holds a live run's state (wa-sidecar run or pair): a replay there would mix"
    " the capture's accounts and messages into it. Give the replay a config with a"
    " state_dir of its own (the README's demo uses examples/demo.yaml)",
    "replay": "holds a replay's state: a live run there would start with the capture's"
    " accounts and messages. Use another state_dir, or delete this one if the replay's"
    " state is not needed",
}


class StateDirTaken(Exception):
    """The state_dir holds the other kind's state; the message says what to do."""


def claim(state_dir: Path, kind: Kind) -> None:
    """Mark ``state_dir`` as ``kind``'s, or refuse it when the other kind has it."""
    marker = private_dir(state_dir) / MARKER
    try:
        found = marker.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        _mark(marker, kind)
        return
    if found != kind and found in _REFUSAL:
        raise StateDirTaken(f"state_dir {state_dir} {_REFUSAL[found]}")


def _mark(marker: Path, kind: Kind) -> None:
    """Write the mark, owner-only like everything in the state_dir. A full disk does not
    stop the run (it serves and recovers, docs/runbook.md): it goes unmarked this time."""
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"{kind}\n")
    except FileExistsError:
        return  # another process marked it meanwhile: the next start checks it
    except OSError as exc:
        with contextlib.suppress(OSError):
            marker.unlink(missing_ok=True)  # half written
        log.warning("cannot mark %s as a %s run's: %s", marker.parent, kind, error_kind(exc))
