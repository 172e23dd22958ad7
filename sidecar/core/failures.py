"""Failures of a repeated operation (a spool write, a state flush, a background task),
logged as operators want them: once when they start, at most once a minute while they
last, once when they end."""

from __future__ import annotations

import errno
import logging
import threading
import time


def error_kind(exc: BaseException) -> str:
    """An error's kind, never its text (which can quote paths or values):
    ``OperationalError (SQLITE_FULL)``, ``OSError (ENOSPC)``. A wrapper's cause is named
    (``SpoolError`` from ``OSError`` is ``OSError (ENOSPC)``)."""
    cause = exc.__cause__
    if cause is not None and type(exc).__module__.startswith("sidecar"):
        exc = cause
    name = getattr(exc, "sqlite_errorname", None)  # sqlite3.Error's result code
    if isinstance(name, str):
        return f"{type(exc).__name__} ({name})"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return type(exc).__name__


class Failures:
    """One operation's failures, logged on one line when they start, at most once per
    ``every_s`` while they last (with how many there were), and once when they end.
    Only error kinds are logged, never error texts (they can quote values)."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        consequence: str = "",
        *,
        level: int = logging.WARNING,
        every_s: float = 60.0,
    ) -> None:
        self._log = logger
        self._level = level
        self._what = what
        self._consequence = consequence
        self._every = every_s
        self._lock = threading.Lock()
        self.last: tuple[str, float] | None = None  # (kind, Unix time) while failing
        self._failures = 0  # since the operation last worked
        self._unlogged = 0
        self._logged_at = 0.0

    def failed(self, exc: BaseException, where: str = "") -> None:
        """Count one failure; ``where`` (e.g. ``function@file:line``) is logged with it."""
        kind = error_kind(exc)
        now = time.monotonic()
        with self._lock:
            changed = self.last is None or self.last[0] != kind
            self.last = (kind, time.time())
            self._failures += 1
            self._unlogged += 1
            if not changed and now - self._logged_at < self._every:
                return
            count, self._unlogged, self._logged_at = self._unlogged, 0, now
        times = "" if count == 1 else f" ({count} times since the last report)"
        at = f" at {where}" if where else ""
        self._log.log(
            self._level, "%s failed: %s%s%s%s", self._what, kind, at, times, self._consequence
        )

    def succeeded(self) -> None:
        if self.last is None:  # the common case: no lock
            return
        with self._lock:
            if self.last is None:
                return
            failures, self.last, self._failures, self._unlogged = self._failures, None, 0, 0
        self._log.warning("%s works again, after %d failures", self._what, failures)
