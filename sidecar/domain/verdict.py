"""The degraded verdict: is a connected session deaf?

Every reader (health API, ``whatsapp_session_degraded``, logs) asks the one
rule that :mod:`sidecar.app` wires in, so a better rule replaces this one there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sidecar.domain.account import AccountSettings, AccountSnapshot, Status


@dataclass(frozen=True, slots=True)
class Verdict:
    degraded: bool
    reasons: tuple[str, ...] = ()
    warning: str | None = None


HEALTHY = Verdict(degraded=False)

VerdictRule = Callable[[AccountSnapshot, AccountSettings, float], Verdict]


def legacy_verdict(snapshot: AccountSnapshot, settings: AccountSettings, now: float) -> Verdict:
    """The existing backend's rule, kept so that nothing regresses.

    Connected, has had a real message, and none for ``silence_threshold``.
    """
    if snapshot.status is not Status.CONNECTED or snapshot.last_real_at is None:
        return HEALTHY
    if now - snapshot.last_real_at <= settings.silence_threshold_s:
        return HEALTHY
    return Verdict(
        degraded=True,
        reasons=("silence_over_threshold",),
        warning=(
            f"No real messages received in last {describe_duration(settings.silence_threshold_s)}"
            " - session may be degraded"
        ),
    )


def describe_duration(seconds: float) -> str:
    """``300`` -> ``5 minutes``, as the existing backend words its warning."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}" + ("" if count == 1 else "s")
    return f"{seconds:g} seconds"
