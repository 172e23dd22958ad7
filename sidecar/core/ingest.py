"""Events of accounts whose session lives in another gateway: each request's events,
less the ones already taken (gateways retry), handed to the core as a live session's
are (docs/ingest.md).

A message or a receipt from the gateway proves its session is open: an account not
connected then is connected first. A gateway whose socket stayed open while the
sidecar restarted never says ``open`` again, and an account that is not connected is
never judged.

What the gateway posted is counted per account (:class:`IngestStats`): events by
outcome, requests refused by reason, and when it last posted, so a forwarder that
stopped or a webhook set up wrong is seen (docs/ingest.md, "Watching the watcher").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from neonize.events import ConnectedEv, MessageEv, ReceiptEv, UndecryptableMessageEv

log = logging.getLogger(__name__)

#: Seconds between two log lines about one account's refused requests of one reason.
REFUSED_LOG_EVERY_S = 60.0
#: Events only an open session delivers.
_PROOF_OF_OPEN = (MessageEv, UndecryptableMessageEv, ReceiptEv)

#: Message keys remembered per account, for the gateways' retries; the oldest go first.
DEDUPE_KEYS = 20_000


#: What became of an event the gateway posted.
Outcome = Literal["accepted", "duplicate", "ignored", "unreadable"]
OUTCOMES: tuple[Outcome, ...] = ("accepted", "duplicate", "ignored", "unreadable")
#: Why a request was refused whole (none of its events was taken).
Refusal = Literal["bad_body", "unknown_event", "too_large"]
REFUSALS: tuple[Refusal, ...] = ("bad_body", "unknown_event", "too_large")


@dataclass(slots=True)
class IngestStats:
    """One account's ingest counts; ``last_request_at`` is when a request was last
    taken, or when the sidecar began listening until one has been."""

    last_request_at: float
    events: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    refused: dict[Refusal, int] = field(default_factory=lambda: dict.fromkeys(REFUSALS, 0))


@dataclass(frozen=True, slots=True)
class Taken:
    """What a request's events came to."""

    accepted: int
    duplicates: int


class Ingest:
    """Hands ingest accounts' events to the core (through ``deliver``, which records
    them when recording), each message once."""

    def __init__(
        self,
        accounts: Iterable[str],
        deliver: Callable[[str, Any], None],
        connected: Callable[[str], bool],
        now: Callable[[], float],
    ) -> None:
        self.accounts = frozenset(accounts)
        self._deliver = deliver
        self._connected = connected
        self._now = now
        started = now()
        self.stats = {a: IngestStats(started) for a in self.accounts}
        self._refusals_logged: dict[tuple[str, Refusal], tuple[float, int]] = {}
        self._seen: dict[str, OrderedDict[Hashable, None]] = {
            a: OrderedDict() for a in self.accounts
        }
        self._lock = threading.Lock()

    def take(
        self,
        account_id: str,
        events: Iterable[tuple[Any, Hashable | None]],
        ignored: int = 0,
        unreadable: int = 0,
    ) -> Taken:
        """Deliver ``events`` in order; one whose key was taken before is skipped.
        ``ignored`` and ``unreadable``: what the request held besides, for the counts."""
        accepted = duplicates = 0
        seen = self._seen[account_id]
        for event, key in events:
            if key is not None:
                with self._lock:
                    if key in seen:
                        seen.move_to_end(key)
                        duplicates += 1
                        continue
                    seen[key] = None
                    while len(seen) > DEDUPE_KEYS:
                        seen.popitem(last=False)
            if isinstance(event, _PROOF_OF_OPEN) and not self._connected(account_id):
                self._deliver(account_id, ConnectedEv(status=True))
            self._deliver(account_id, event)
            accepted += 1
        with self._lock:
            stats = self.stats[account_id]
            stats.last_request_at = self._now()
            counts = (accepted, duplicates, ignored, unreadable)
            for outcome, n in zip(OUTCOMES, counts, strict=True):
                stats.events[outcome] += n
        return Taken(accepted, duplicates)

    def refused(self, account_id: str, why: Refusal, detail: str = "") -> None:
        """Count a request refused whole, and say so in the log at most once a minute per
        account and reason (``detail``: the answer's error, which never quotes the body).
        Not a sign of life: a gateway posting what cannot be read is as blind to the
        sidecar as one that posts nothing."""
        now = time.monotonic()
        with self._lock:
            self.stats[account_id].refused[why] += 1
            logged_at, unlogged = self._refusals_logged.get((account_id, why), (-1e18, 0))
            if now - logged_at < REFUSED_LOG_EVERY_S:
                self._refusals_logged[account_id, why] = (logged_at, unlogged + 1)
                return
            self._refusals_logged[account_id, why] = (now, 0)
        times = f"; {unlogged + 1} since the last report" if unlogged else ""
        log.warning(
            "account=%s ingest request refused (%s%s): its events are not measured%s",
            account_id,
            why,
            f": {detail}" if detail else "",
            times,
        )
