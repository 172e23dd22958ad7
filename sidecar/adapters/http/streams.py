"""The pair page's event streams: how many may be open, and what they send.

Every stream of an account sends the same events, so :class:`PairFeed` builds an
account's event at most once per poll interval, whatever the number of streams, and
draws its QR code (~20 ms of pure Python) only when the code changes: a stream's own
tick costs a dictionary lookup on the event loop. Nothing here reads the store.
:class:`StreamSlots` caps the streams open at once, per principal and in all.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import segno
from aiohttp import web

from sidecar.adapters.http.common import json_dumps
from sidecar.core.service import Sidecar
from sidecar.domain.health import PairingView


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Event streams open at once (``http.event_streams``); one more is refused with 429."""

    total: int = 32
    per_principal: int = 4


class StreamSlots:
    """Who holds how many of the open streams (used on the event loop only)."""

    def __init__(self, limits: StreamLimits) -> None:
        self.limits = limits
        self._held: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return self._held.total()

    def take(self, principal: str) -> bool:
        """One slot for ``principal``, if it and the whole server are under their caps."""
        if self._held[principal] >= self.limits.per_principal:
            return False
        if self._held.total() >= self.limits.total:
            return False
        self._held[principal] += 1
        return True

    def give_back(self, principal: str) -> None:
        self._held[principal] -= 1
        if self._held[principal] <= 0:
            del self._held[principal]


def qr_svg(code: str | None) -> str | None:
    return None if code is None else segno.make_qr(code).svg_inline(scale=8)


def view_json(view: PairingView, svg: str | None) -> dict[str, Any]:
    """What the pair page shows: state, the QR as SVG while one waits, the paired device."""
    return {
        "status": view.status,
        "qrSvg": svg,
        "paired": view.platform is not None,
        "platform": view.platform,
        "pairedAtMs": view.paired_at_ms,
        "lastRealMessageMs": view.last_real_message_ms,
        "isDegraded": view.degraded,
        "source": view.source,
        "nextAttemptMs": view.next_attempt_ms,
    }


@dataclass(slots=True)
class _Latest:
    at: float
    view: PairingView
    svg: str | None
    event: bytes


class PairFeed:
    """Each account's latest event, shared by all its streams. The same bytes object
    is handed out until the view changes, so a stream compares by identity."""

    def __init__(
        self, sidecar: Sidecar, poll_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.poll_s = poll_s
        self._sidecar = sidecar
        self._clock = clock
        self._latest: dict[str, _Latest] = {}

    def event(self, account_id: str) -> bytes:
        """The account's server-sent event now (at most ``poll_s`` old)."""
        now = self._clock()
        latest = self._latest.get(account_id)
        if latest is not None and now - latest.at < self.poll_s:
            return latest.event
        view = self._sidecar.pairing_view(account_id)
        if latest is not None and latest.view == view:
            latest.at = now
            return latest.event
        same_code = latest is not None and latest.view.qr_code == view.qr_code
        svg = latest.svg if latest is not None and same_code else qr_svg(view.qr_code)
        event = f"data: {json_dumps(view_json(view, svg))}\n\n".encode()
        self._latest[account_id] = _Latest(now, view, svg, event)
        return event


STREAMS = web.AppKey("streams", StreamSlots)
FEED = web.AppKey("pair_feed", PairFeed)
